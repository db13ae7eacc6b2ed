#!/usr/bin/env node
// Drives roomcam's viewer page in headless Chromium and checks what it gets.
//
//   node tests/browser/check-viewer.mjs URL [options]
//
// Scenario steps, run in this order (each wait is limited by --timeout):
//   --ready-file FILE   write FILE once the page is in the room (or refused)
//   --expect-state S    wait until roomcamViewer.state is S (e.g. full, unauthorized)
//   --expect-role R     after the first peer connection, require role R (offerer|answerer)
//   --expect-video      inbound video with framesDecoded > 0, codec video/H264
//   --expect-bars       ... and the picture on the page shows the test pattern's colour bars
//   --any-codec         accept any video codec (Chromium-to-Chromium selftests)
//   --expect-audio      inbound audio with totalSamplesReceived > 0 and audible level/energy
//   --talk SECONDS      hold the talk button that long; outbound audio packets must grow
//                       and the mic must carry energy then (and not before)
//   --rejoin            Leave, Join, then video (and audio, if asked) again on a NEW peer connection
//   --video-file FILE   write FILE once the video step passed (a cue for the test to start a fault)
//   --expect-frozen     then (the test stops the device meanwhile) the page must say the picture
//                       is frozen ("Picture frozen since HH:MM:SS", status dot not green), and
//                       clear that once frames come back
//   --frozen-screenshot FILE  PNG of the page while it says so
//   --wait-file FILE    then wait until FILE exists (the test's cue: e.g. the device has adapted)
//   --measure-fps S     then count decoded frames over S seconds (fps over that window, the
//                       longest stall in it) and, with --expect-bars, check the bars again after
//   --measured-file FILE write FILE (that measurement) once it is done
//   --keep-watching S   then watch the video for S seconds, sampling every 200 ms: new peer
//                       connections, decoded-frame counter resets, the longest stall; at the
//                       end video must be flowing (waited for up to --timeout more)
//   --done-file FILE    write FILE (the results so far) when the steps above have passed
//   --stay SECONDS      keep the page open that long (SIGTERM/SIGINT ends it early, successfully)
//   --screenshot FILE   PNG of the page at the end
// Other options:
//   --phone             a phone's screen: 390x844 viewport, touch, 3x pixels (default 1000x900 desktop)
//   --timeout S         limit for each wait step (default 30)
//   --chromium PATH     browser binary (default /usr/bin/chromium)
//   --verbose           page console on stderr
//
// Prints one JSON line ({"ok":true,...}) on stdout. On failure prints the
// JSON line with ok:false and error, the reason and the page's last log lines
// on stderr, and exits 1 (2 for bad usage).
//
// playwright-core comes from tests/classic/node_modules (one `npm ci` there).

import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../classic/package.json', import.meta.url));
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (err) {
  console.error('check-viewer: playwright-core missing: run `npm ci` in tests/classic');
  process.exit(2);
}

// ---- arguments -------------------------------------------------------------

function usage(msg) {
  console.error(`check-viewer: ${msg}`);
  console.error('usage: node check-viewer.mjs URL [--expect-video] [--any-codec] [--expect-audio] ' +
    '[--talk S] [--rejoin] [--expect-state STATE] [--expect-role offerer|answerer] [--stay S] ' +
    '[--ready-file FILE] [--done-file FILE] [--screenshot FILE] [--timeout S] [--chromium PATH] [--verbose]');
  process.exit(2);
}

const opts = {
  url: null, expectVideo: false, expectBars: false, anyCodec: false, expectAudio: false, talk: 0, rejoin: false,
  expectState: null, expectRole: null, stay: 0, readyFile: null, doneFile: null, screenshot: null, timeout: 30,
  videoFile: null, keepWatching: 0, expectFrozen: false, frozenScreenshot: null, phone: false,
  waitFile: null, measureFps: 0, measuredFile: null,
  chromium: '/usr/bin/chromium', verbose: false,
};
{
  const a = process.argv.slice(2);
  const num = (i) => {
    const v = Number(a[i + 1]);
    if (!(v >= 0)) usage(`${a[i]} needs a number of seconds`);
    return v;
  };
  const str = (i) => {
    if (a[i + 1] === undefined) usage(`${a[i]} needs a value`);
    return a[i + 1];
  };
  for (let i = 0; i < a.length; i++) {
    switch (a[i]) {
      case '--expect-video': opts.expectVideo = true; break;
      case '--expect-bars': opts.expectVideo = true; opts.expectBars = true; break;
      case '--any-codec': opts.anyCodec = true; break;
      case '--expect-audio': opts.expectAudio = true; break;
      case '--talk': opts.talk = num(i); i++; break;
      case '--rejoin': opts.rejoin = true; break;
      case '--expect-state': opts.expectState = str(i); i++; break;
      case '--expect-role': opts.expectRole = str(i); i++; break;
      case '--stay': opts.stay = num(i); i++; break;
      case '--ready-file': opts.readyFile = str(i); i++; break;
      case '--done-file': opts.doneFile = str(i); i++; break;
      case '--video-file': opts.videoFile = str(i); i++; break;
      case '--keep-watching': opts.keepWatching = num(i); i++; break;
      case '--expect-frozen': opts.expectFrozen = true; break;
      case '--phone': opts.phone = true; break;
      case '--frozen-screenshot': opts.frozenScreenshot = str(i); i++; break;
      case '--wait-file': opts.waitFile = str(i); i++; break;
      case '--measure-fps': opts.measureFps = num(i); i++; break;
      case '--measured-file': opts.measuredFile = str(i); i++; break;
      case '--screenshot': opts.screenshot = str(i); i++; break;
      case '--timeout': opts.timeout = num(i); i++; break;
      case '--chromium': opts.chromium = str(i); i++; break;
      case '--verbose': opts.verbose = true; break;
      case '--help': case '-h': usage('help'); break;
      default:
        if (a[i].startsWith('--') || opts.url) usage(`unexpected argument ${a[i]}`);
        opts.url = a[i];
    }
  }
  if (!opts.url) usage('a viewer URL is required');
  if (opts.expectRole && !['offerer', 'answerer'].includes(opts.expectRole)) usage('--expect-role offerer|answerer');
}

// ---- helpers ---------------------------------------------------------------

const t0 = Date.now();
const result = { ok: false, url: opts.url };
const pageLog = [];
let stopRequested = false;
let wakeStay = () => {};

class Failure extends Error {}

// "Audible": above about -60 dBFS now, or that much energy so far (the
// decoder's comfort noise on a silent stream stays below both).
const AUDIBLE_LEVEL = 0.001;
const AUDIBLE_ENERGY = 1e-5;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls fn() until it returns a truthy value; fails with what() after --timeout.
async function waitFor(step, fn, what, intervalMs = 250) {
  const deadline = Date.now() + opts.timeout * 1000;
  for (;;) {
    if (stopRequested) throw new Failure(`${step}: interrupted`);
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Failure(`${step}: ${await what()} after ${opts.timeout} s`);
    await sleep(intervalMs);
  }
}

// Everything the checks need from one getStats() call on the page's pc.
function collectStats() {
  const v = window.roomcamViewer;
  const pc = v && v.pc;
  if (!pc) return Promise.resolve(null);
  return pc.getStats().then((report) => {
    const out = { inVideo: null, inAudio: null, outAudio: null, audioSource: null, transport: null };
    const codecs = {};
    report.forEach((s) => {
      if (s.type === 'codec') codecs[s.id] = s.mimeType;
    });
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' &&
          (!out.inVideo || (s.framesDecoded || 0) > out.inVideo.framesDecoded)) {
        out.inVideo = {
          framesDecoded: s.framesDecoded || 0, framesPerSecond: s.framesPerSecond || 0,
          width: s.frameWidth || 0, height: s.frameHeight || 0, codec: codecs[s.codecId] || null,
          packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
          bytesReceived: s.bytesReceived || 0, keyFramesDecoded: s.keyFramesDecoded || 0,
          pliCount: s.pliCount || 0, nackCount: s.nackCount || 0, freezeCount: s.freezeCount || 0,
        };
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.inAudio = {
          totalSamplesReceived: s.totalSamplesReceived || 0, audioLevel: s.audioLevel || 0,
          totalAudioEnergy: s.totalAudioEnergy || 0, codec: codecs[s.codecId] || null,
          packetsReceived: s.packetsReceived || 0,
        };
      } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        out.outAudio = { packetsSent: s.packetsSent || 0, bytesSent: s.bytesSent || 0, codec: codecs[s.codecId] || null };
      } else if (s.type === 'transport') {
        out.transport = { transportBytesSent: s.bytesSent || 0, transportBytesReceived: s.bytesReceived || 0 };
      } else if (s.type === 'media-source' && s.kind === 'audio') {
        out.audioSource = { audioLevel: s.audioLevel || 0, totalAudioEnergy: s.totalAudioEnergy || 0 };
      }
    });
    return out;
  });
}

// The colour of each of the eight bars of roomcam's test pattern, read off
// the <video> element as the page shows it (through a canvas), halfway
// down the picture where the bars are.
function sampleBars() {
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
const barsMatch = (bars) => !!bars && bars.every((rgb, i) =>
  rgb.every((v, c) => (TEST_PATTERN_BARS[i][c] ? v > 150 : v < 100)));

function pageInfo() {
  const v = window.roomcamViewer;
  if (!v) return null;
  const s = v.socket;
  return {
    state: v.state, role: v.role, talking: v.talking, micState: v.micState,
    pc: v.pc ? (v.pc.connectionState || v.pc.iceConnectionState) : null,
    eio: s ? s.eio : null, socketId: s ? s.id : null,
  };
}

// Watches the picture through faults the test makes meanwhile: is it the
// same call all along (one peer connection, a counter that never goes back)
// and how long did the picture stand still at most?
async function keepWatching(page, stats) {
  const samePc = () => page.evaluate(() => {
    const pc = window.roomcamViewer.pc;
    const same = !!pc && pc === window.__watchedPc;
    window.__watchedPc = pc;
    return same;
  });
  await samePc();
  const start = Date.now();
  let pcChanges = 0;
  let counterResets = 0;
  let last = null;           // framesDecoded at the last sample
  let lastIncrease = Date.now();
  let longestStallMs = 0;
  const sample = async () => {
    if (!(await samePc())) pcChanges++;
    const s = await stats();
    const frames = s && s.inVideo ? s.inVideo.framesDecoded : 0;
    const now = Date.now();
    if (last !== null && frames < last) counterResets++;
    if (last === null || frames !== last) {
      if (last !== null && frames > last) longestStallMs = Math.max(longestStallMs, now - lastIncrease);
      lastIncrease = now;
    }
    last = frames;
    return now - lastIncrease;
  };
  while (Date.now() - start < opts.keepWatching * 1000 && !stopRequested) {
    await sample();
    await sleep(200);
  }
  // Flowing at the end: frames within the last second, waited for if need be.
  const endedAt = Date.now();
  await waitFor('keep-watching', async () => (await sample()) < 1000 && last > 0,
    () => `video not flowing at the end of the watch (pc changes ${pcChanges}, resets ${counterResets})`, 200);
  return {
    seconds: opts.keepWatching, pcChanges, counterResets, longestStallMs, framesDecoded: last,
    resumedAfterMs: Date.now() - endedAt,
  };
}

// The picture stops (the test stopped the device): the page must say so
// over the video, as a person would see it, then clear it when it is back.
async function expectFrozen(page, stats) {
  const look = () => page.evaluate(() => {
    const banner = document.querySelector('#stalled');
    const dot = getComputedStyle(document.querySelector('#status'), '::before').backgroundColor;
    return { text: window.roomcamViewer.stalled, shown: !!banner && !banner.hidden, banner: banner ? banner.textContent : '',
      status: document.querySelector('#status').textContent, dot };
  });
  const live = await look();
  if (live.shown || live.text) throw new Failure(`expect-frozen: the page says frozen while live: ${JSON.stringify(live)}`);
  const frozen = await waitFor('expect-frozen', async () => {
    const l = await look();
    return l.shown && /^Picture frozen since \d\d:\d\d:\d\d/.test(l.banner) ? l : null;
  }, async () => `the page never said the picture froze: ${JSON.stringify(await look())}`, 100);
  if (frozen.dot === live.dot) throw new Failure(`expect-frozen: the status dot stayed ${live.dot}`);
  if (opts.frozenScreenshot) await page.screenshot({ path: opts.frozenScreenshot });
  const back = await waitFor('expect-frozen (back)', async () => {
    const l = await look();
    return !l.shown && !l.text && l.dot === live.dot ? l : null;
  }, async () => `the page still says frozen: ${JSON.stringify(await look())}`, 100);
  const s = await stats();
  return { banner: frozen.banner, status: frozen.status, liveDot: live.dot, frozenDot: frozen.dot, backStatus: back.status,
    framesDecoded: s && s.inVideo ? s.inVideo.framesDecoded : 0 };
}

// Decoded frames over --measure-fps seconds, sampled every 200 ms: the frame
// rate over the window, the longest stretch without a new frame, and (with
// --expect-bars) whether the picture still shows the test pattern after it.
async function measureFps(page, stats) {
  const video = async () => {
    const s = await stats();
    return { framesDecoded: 0, ...((s && s.inVideo) || {}), ...((s && s.transport) || {}) };
  };
  const frames = async () => (await video()).framesDecoded;
  const before = await video();
  const first = before.framesDecoded;
  const start = Date.now();
  let last = first;
  let lastIncrease = start;
  let longestStallMs = 0;
  while (Date.now() - start < opts.measureFps * 1000 && !stopRequested) {
    await sleep(200);
    const now = Date.now();
    const f = await frames();
    if (f > last) {
      longestStallMs = Math.max(longestStallMs, now - lastIncrease);
      lastIncrease = now;
    }
    last = f;
  }
  longestStallMs = Math.max(longestStallMs, Date.now() - lastIncrease);
  const seconds = (Date.now() - start) / 1000;
  const after = await video();
  // What else happened to the video over the window (loss, repairs, IDRs).
  const delta = (k) => (after[k] || 0) - (before[k] || 0);
  const out = {
    seconds, frames: last - first, fps: Math.round(((last - first) / seconds) * 10) / 10, longestStallMs,
    kbps: Math.round((delta('bytesReceived') * 8) / seconds / 1000), packetsLost: delta('packetsLost'),
    keyFrames: delta('keyFramesDecoded'), plis: delta('pliCount'), nacks: delta('nackCount'), freezes: delta('freezeCount'),
    // The whole transport each way (RTP and RTCP, audio and video, SRTP).
    transportInKbps: Math.round((delta('transportBytesReceived') * 8) / seconds / 1000),
    transportOutKbps: Math.round((delta('transportBytesSent') * 8) / seconds / 1000),
  };
  if (opts.expectBars) {
    let seen = null;
    out.bars = await waitFor('measure-fps (bars)', async () => {
      seen = await page.evaluate(sampleBars);
      return barsMatch(seen) ? seen : null;
    }, async () => `after the window the picture shows no test pattern bars: ${JSON.stringify(seen)}`);
  }
  return out;
}

// ---- the scenario ------------------------------------------------------------

async function run(page) {
  const info = () => page.evaluate(pageInfo);
  const stats = () => page.evaluate(collectStats);
  const describe = async () => {
    const i = await info();
    return i ? `state=${i.state}, pc=${i.pc || 'none'}` : 'viewer not loaded';
  };

  const response = await page.goto(opts.url, { waitUntil: 'load', timeout: opts.timeout * 1000 });
  if (!response || !response.ok()) throw new Failure(`load: HTTP ${response ? response.status() : 'no response'} for ${opts.url}`);
  await waitFor('load', () => page.evaluate(() => !!window.roomcamViewer), () => 'window.roomcamViewer missing');

  if (opts.readyFile) {
    await waitFor('ready', async () => {
      const i = await info();
      return i && !['idle', 'connecting', 'joining', 'disconnected'].includes(i.state);
    }, async () => `not in the room (${await describe()})`);
    writeFileSync(opts.readyFile, JSON.stringify(await info()) + '\n');
  }

  if (opts.expectState) {
    await waitFor('expect-state', async () => (await info()).state === opts.expectState,
      async () => `state never became ${opts.expectState} (${await describe()})`);
    result.expectedState = opts.expectState;
  }

  const waitVideo = async (step) => {
    const first = await waitFor(step, async () => {
      const s = await stats();
      return s && s.inVideo && s.inVideo.framesDecoded > 0 ? s.inVideo : null;
    }, async () => `no decoded video frame (${await describe()})`);
    if (!opts.anyCodec && first.codec !== 'video/H264') {
      throw new Failure(`${step}: video codec is ${first.codec}, expected video/H264 (use --any-codec to accept it)`);
    }
    await sleep(2000);
    const s = await stats();
    const later = (s && s.inVideo) || first;
    const fps = (later.framesDecoded - first.framesDecoded) / 2;
    if (!(later.framesDecoded > first.framesDecoded)) throw new Failure(`${step}: video stalled after ${first.framesDecoded} frames`);
    let bars;
    if (opts.expectBars) {
      let seen = null;
      bars = await waitFor(`${step} (bars)`, async () => {
        seen = await page.evaluate(sampleBars);
        return barsMatch(seen) ? seen : null;
      }, async () => `the picture shows no test pattern bars: ${JSON.stringify(seen)}`);
    }
    return {
      bars,
      framesDecoded: later.framesDecoded, fps: Math.round(fps * 10) / 10,
      statsFps: later.framesPerSecond, codec: later.codec, width: later.width, height: later.height,
    };
  };

  const waitAudio = async (step) => {
    const a = await waitFor(step, async () => {
      const s = await stats();
      const x = s && s.inAudio;
      return x && x.totalSamplesReceived > 0 && (x.audioLevel >= AUDIBLE_LEVEL || x.totalAudioEnergy >= AUDIBLE_ENERGY) ? x : null;
    }, async () => {
      const s = await stats();
      return `no audible inbound audio (${JSON.stringify(s && s.inAudio)}; ${await describe()})`;
    });
    return { totalSamplesReceived: a.totalSamplesReceived, audioLevel: a.audioLevel,
      totalAudioEnergy: Math.round(a.totalAudioEnergy * 1e6) / 1e6, codec: a.codec };
  };

  const needPeer = opts.expectFrozen || opts.keepWatching > 0 || opts.expectVideo || opts.expectAudio || opts.talk > 0 || opts.rejoin || opts.expectRole;
  if (needPeer) {
    await waitFor('peer', async () => (await info()).pc, async () => `no peer connection (${await describe()})`);
  }
  if (opts.expectVideo) result.video = await waitVideo('expect-video');
  if (opts.expectAudio) result.audio = await waitAudio('expect-audio');
  if (opts.expectRole) {
    const i = await info();
    if (i.role !== opts.expectRole) throw new Failure(`expect-role: the page was ${i.role}, expected ${opts.expectRole}`);
  }
  if (opts.videoFile) writeFileSync(opts.videoFile, JSON.stringify(result.video || null) + '\n');
  if (opts.expectFrozen) result.frozen = await expectFrozen(page, stats);
  if (opts.waitFile) {
    await waitFor('wait-file', () => existsSync(opts.waitFile), () => `${opts.waitFile} never appeared`);
  }
  if (opts.measureFps > 0) result.measured = await measureFps(page, stats);
  if (opts.measuredFile) writeFileSync(opts.measuredFile, JSON.stringify(result.measured || null) + '\n');
  if (opts.keepWatching > 0) result.watch = await keepWatching(page, stats);

  if (opts.talk > 0) {
    await waitFor('talk', async () => {
      const s = await stats();
      return s && s.outAudio;
    }, async () => `no outbound audio stream (mic: ${(await info()).micState})`);
    const talkButton = page.locator('#talk');
    if (await talkButton.isDisabled()) throw new Failure(`talk: the talk button is disabled (mic: ${(await info()).micState})`);
    // Idle second first: the disabled track sends silence, so packets flow even then.
    const s0 = await stats();
    await sleep(1000);
    const s1 = await stats();
    await talkButton.hover();
    await page.mouse.down();
    const held = (await info()).talking;
    await sleep(opts.talk * 1000);
    const s2 = await stats();
    await page.mouse.up();
    const released = !(await info()).talking;
    const delta = (a, b) => ({
      packets: b.outAudio.packetsSent - a.outAudio.packetsSent,
      bytes: b.outAudio.bytesSent - a.outAudio.bytesSent,
      energy: a.audioSource && b.audioSource ? b.audioSource.totalAudioEnergy - a.audioSource.totalAudioEnergy : null,
    });
    const idle = delta(s0, s1);
    const on = delta(s1, s2);
    const round = (x) => (x === null ? null : Math.round(x * 1e6) / 1e6);
    result.talk = {
      seconds: opts.talk, packetsSent: on.packets, bytesSent: on.bytes, micEnergy: round(on.energy),
      idle: { seconds: 1, packetsSent: idle.packets, bytesSent: idle.bytes, micEnergy: round(idle.energy) },
      codec: s2.outAudio.codec,
    };
    if (!held) throw new Failure('talk: pressing the talk button did not start talking');
    if (!released) throw new Failure('talk: releasing the talk button did not stop talking');
    if (!(on.packets > 0)) throw new Failure(`talk: outbound audio packetsSent did not grow while talking (${JSON.stringify(result.talk)})`);
    // The mic's own energy (media-source stats) tells talking from the idle
    // silence of the disabled track; packet counts alone do not.
    if (on.energy !== null && !(on.energy > 1e-6 && on.energy > 10 * idle.energy)) {
      throw new Failure(`talk: no mic energy while talking, or as much when idle (${JSON.stringify(result.talk)})`);
    }
  }

  if (opts.rejoin) {
    await page.evaluate(() => { window.__checkViewerOldPc = window.roomcamViewer.pc; });
    await page.click('#leave');
    await waitFor('rejoin', async () => {
      const i = await info();
      return i.state === 'left' && !i.pc;
    }, async () => `leave did not close the peer connection (${await describe()})`);
    await sleep(500);
    await page.click('#join');
    await waitFor('rejoin', () => page.evaluate(() => {
      const pc = window.roomcamViewer.pc;
      return !!pc && pc !== window.__checkViewerOldPc;
    }), async () => `no new peer connection after join (${await describe()})`);
    result.rejoin = { role: (await info()).role, video: await waitVideo('rejoin') };
    if (opts.expectAudio) result.rejoin.audio = await waitAudio('rejoin');
  }

  if (opts.doneFile) writeFileSync(opts.doneFile, JSON.stringify(result) + '\n');

  if (opts.stay > 0 && !stopRequested) {
    await new Promise((resolve) => {
      const t = setTimeout(resolve, opts.stay * 1000);
      wakeStay = () => { clearTimeout(t); resolve(); };
    });
  }
}

// ---- main ------------------------------------------------------------------

const userDataDir = mkdtempSync(join(tmpdir(), 'check-viewer-'));
let context = null;
let exitCode = 1;

const onSignal = () => {
  stopRequested = true;
  wakeStay();
};
process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: false, // we pass --headless=new ourselves
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
    ],
    ignoreDefaultArgs: ['--mute-audio'],
    permissions: ['camera', 'microphone'],
    ...(opts.phone
      ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 3 }
      : { viewport: { width: 1000, height: 900 } }),
    timeout: opts.timeout * 1000,
    handleSIGTERM: false, // we end the scenario ourselves and still report
    handleSIGINT: false,
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => {
    const line = `[page ${msg.type()}] ${msg.text()}`;
    pageLog.push(line);
    if (pageLog.length > 40) pageLog.shift();
    if (opts.verbose) console.error(line);
  });
  page.on('pageerror', (err) => {
    const line = `[page error] ${err.message}`;
    pageLog.push(line);
    console.error(line);
  });

  try {
    await run(page);
    result.ok = true;
    exitCode = 0;
  } catch (err) {
    result.error = err instanceof Failure ? err.message : `unexpected: ${err.stack || err}`;
  }
  try {
    Object.assign(result, await page.evaluate(pageInfo));
    if (opts.screenshot) {
      await page.screenshot({ path: opts.screenshot, fullPage: true });
      result.screenshot = opts.screenshot;
    }
  } catch (err) {
    if (result.ok) {
      result.ok = false;
      exitCode = 1;
      result.error = `final report: ${err.message}`;
    }
  }
} catch (err) {
  result.error = `cannot start ${opts.chromium}: ${err.message}`;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

result.elapsed = Math.round((Date.now() - t0) / 100) / 10;
if (stopRequested) result.stopped = 'signal';
console.log(JSON.stringify(result));
if (!result.ok) {
  console.error(`check-viewer: FAIL ${result.error}`);
  if (pageLog.length) console.error('last page log lines:\n  ' + pageLog.slice(-15).join('\n  '));
}
process.exit(exitCode);
