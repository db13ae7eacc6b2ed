// roomcam's test pattern as a page shows it: shared by the browser drivers.

// The colour of each of the eight bars of roomcam's test pattern, read off
// the page's <video id="remote"> (through a canvas), halfway down the
// picture where the bars are. Runs in the page (`page.evaluate(sampleBars)`).
export function sampleBars() {
  const video = document.querySelector('#remote');
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0);
  const y = Math.round(canvas.height * 0.45);
  const bars = [];
  for (let i = 0; i < 8; i++) {
    const x = Math.round(((i + 0.5) * canvas.width) / 8);
    bars.push(Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
  }
  return bars;
}

// White, yellow, cyan, green, magenta, red, blue, black: each channel full or off.
const TEST_PATTERN_BARS = [[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]];

export const barsMatch = (bars) => !!bars && bars.every((rgb, i) =>
  rgb.every((v, c) => (TEST_PATTERN_BARS[i][c] ? v > 150 : v < 100)));
