// A third-party WHEP player in headless Chromium: the npm `whip-whep`
// client (Medooze's WHEPClient, as players embed it) on a page of its own
// origin (`http://player.test:PORT/`, served by this script on loopback,
// the name mapped to 127.0.0.1), watching `--url` (roomcam serve's
// POST /whep/ROOM) across origins, so CORS is exercised as a real player
// meets it. Passes when the video decodes (>= 30 frames, H.264, the test
// pattern's colour bars on the picture) and audio is received with energy;
// then `--delete` stops the client (its DELETE) and waits for that request
// to succeed.
//
//   node whep-viewer.mjs --url http://127.0.0.1:PORT/whep/ROOM [--token T] [--delete]
//                        [--timeout S] [--chromium PATH] [--verbose]
// Prints one JSON line of results; exit 0 on success, 1 on failure.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sampleBars, barsMatch } from './test-pattern.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '../classic/package.json'));
const { chromium } = require('playwright-core');
const whepJs = readFileSync(join(dirname(require.resolve('whip-whep/package.json')), 'whep.js'), 'utf8');

const opts = { timeout: 30, chromium: '/usr/bin/chromium', token: null, del: false, verbose: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  switch (argv[i]) {
    case '--url': opts.url = argv[++i]; break;
    case '--token': opts.token = argv[++i]; break;
    case '--delete': opts.del = true; break;
    case '--timeout': opts.timeout = Number(argv[++i]); break;
    case '--chromium': opts.chromium = argv[++i]; break;
    case '--verbose': opts.verbose = true; break;
    default: console.error(`unknown argument ${argv[i]}`); process.exit(2);
  }
}
if (!opts.url) { console.error('--url is required'); process.exit(2); }

const PAGE = `<!doctype html><meta charset="utf-8"><title>WHEP player</title>
<video id="remote" autoplay playsinline width="640" height="480"></video>
<script type="module">
import { WHEPClient } from './whep.js';
window.player = { state: 'starting', errors: [] };
const pc = new RTCPeerConnection();
pc.addTransceiver('video', { direction: 'recvonly' });
pc.addTransceiver('audio', { direction: 'recvonly' });
const stream = new MediaStream();
pc.ontrack = (event) => { stream.addTrack(event.track); document.querySelector('#remote').srcObject = stream; };
const client = new WHEPClient();
window.player.pc = pc;
window.player.stop = async () => {
  const deletes = [];
  const realFetch = window.fetch;
  window.fetch = (url, init) => { const p = realFetch(url, init); if (init && init.method === 'DELETE') deletes.push(p); return p; };
  await client.stop();
  const response = await deletes[0];
  return response ? response.status : 'no DELETE sent';
};
client.view(pc, ${JSON.stringify(opts.url)}, ${JSON.stringify(opts.token)})
  .then(() => { window.player.state = 'viewing'; })
  .catch((e) => { window.player.state = 'refused'; window.player.errors.push(String(e)); });
</script>`;

async function inbound(page) {
  return page.evaluate(async () => {
    const out = {};
    const stats = await window.player.pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        const codec = s.codecId && stats.get(s.codecId);
        out[s.kind] = { ...s, mimeType: codec ? codec.mimeType : null };
      }
    });
    return { state: window.player.state, errors: window.player.errors, connection: window.player.pc.connectionState, ...out };
  });
}

// The player's own origin. A real server on loopback rather than pages
// fulfilled by Playwright: Chromium takes a page with no address for a
// public one, and Private Network Access then refuses its fetch to a
// loopback server outright (from a non-secure context) whatever CORS says.
const site = createServer((req, res) => {
  const path = new URL(req.url, 'http://player.test').pathname;
  if (path === '/whep.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(whepJs);
  } else {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  }
});
await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
const sitePort = site.address().port;

const result = { ok: false };
let context;
try {
  context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'whep-chromium-')), {
    executablePath: opts.chromium,
    headless: false, // --headless=new below
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
      '--host-resolver-rules=MAP player.test 127.0.0.1',
      // Media permission, so that Chromium gathers raw host candidates: in
      // a namespace with nothing but loopback (no default route) a page
      // without it gathers none at all (tests/remote_viewer.rs covers the
      // page without permission over a real veth link).
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    ],
    permissions: ['camera', 'microphone'],
    ignoreDefaultArgs: ['--mute-audio'],
    timeout: opts.timeout * 1000,
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (opts.verbose) console.error(`[page] ${m.text()}`); });
  page.on('pageerror', (e) => console.error(`[page error] ${e}`));
  await page.goto(`http://player.test:${sitePort}/`);
  const deadline = Date.now() + opts.timeout * 1000;
  let last;
  for (;;) {
    last = await inbound(page);
    if (last.state === 'refused') throw new Error(`the WHEP client was refused: ${last.errors.join('; ')}`);
    const bars = last.video && last.video.framesDecoded >= 30 ? await page.evaluate(sampleBars) : null;
    const audioOk = last.audio && last.audio.totalSamplesReceived > 0 && last.audio.totalAudioEnergy > 0;
    if (barsMatch(bars) && audioOk) {
      result.video = { framesDecoded: last.video.framesDecoded, mimeType: last.video.mimeType, frameWidth: last.video.frameWidth, bars };
      result.audio = { packetsReceived: last.audio.packetsReceived, totalAudioEnergy: last.audio.totalAudioEnergy };
      break;
    }
    if (Date.now() > deadline) {
      throw new Error(`no decoded video with the test pattern and audio within ${opts.timeout} s: ${JSON.stringify({
        state: last.state, connection: last.connection, errors: last.errors,
        framesDecoded: last.video && last.video.framesDecoded, audioSamples: last.audio && last.audio.totalSamplesReceived, bars,
      })}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (result.video.mimeType !== 'video/H264') throw new Error(`video codec ${result.video.mimeType}`);
  if (opts.del) {
    result.deleteStatus = await page.evaluate(() => window.player.stop());
    if (result.deleteStatus !== 200) throw new Error(`DELETE answered ${result.deleteStatus}`);
  }
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message ? e.message : e);
} finally {
  if (context) await context.close().catch(() => {});
  site.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
