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
//   --talk SECONDS      first a second with the button released: the page must send no
//                       audio packet at all (not even silence); then hold the talk button
//                       that long: outbound audio packets must grow and the mic must carry
//                       energy; then released again: no packet sent over a second
//   --touch-talk S      the same as --talk, pressing with touch events (touchStart/touchEnd
//                       through the DevTools protocol; use with --phone); also checks that
//                       the long press selected no text and that the button cancels the
//                       context menu
//   --expect-phone-layout  no horizontal scroll; the video, "Hold to talk" and the fullscreen
//                       button inside the viewport without scrolling; a screenshot of the
//                       viewport (--phone-screenshot FILE) shows a picture (not black) where
//                       the video is
//   --fullscreen        tap the fullscreen button: the video's stage goes fullscreen; then leave it
//   --expect-tap-for-sound  (with --refuse-autoplay-sound) the page plays muted and shows one "Tap for
//                       sound" button; tapping it unmutes the video and hides the button
//   --rejoin            Leave, Join, then video (and audio, if asked) again on a NEW peer connection
//   --data-saver        the link indicator shows "N kbit/s · F fps" (or Mbit/s); then tick
//                       "Data saver", reload the page: it is still ticked (localStorage), video
//                       comes again on a new connection, the indicator says "data saver";
//                       then 3 s to settle (use --measure-fps after it for the rate)
//   --token-hidden      (a URL with ?token=) the address bar no longer has the token, the page
//                       has a no-referrer policy and kept the token for the room (localStorage);
//                       then reload the token-less address: the page still joins, video again
//   --expect-level      the room's sound meter shows (the camera's level over the roomcam channel)
//   --expect-alert      the camera's sound alert arrives over the roomcam channel: the banner
//                       "Sound in ROOM at HH:MM:SS" shows; with --notifications, a system
//                       notification "roomcam — ROOM" was shown through the service worker
//   --alert-screenshot FILE  PNG of the page while the banner shows
//   --listen-only S     tap "Listen only": the camera confirms; over S seconds no video arrives
//                       (packets and frames do not grow) while audio packets do; tap "Video":
//                       frames again, starting at a new keyframe
//   --video-file FILE   write FILE once the video step passed (a cue for the test to start a fault)
//   --expect-frozen     then (the test stops the device meanwhile) the page must say the picture
//                       is frozen ("Picture frozen since HH:MM:SS", status dot not green), and
//                       clear that once frames come back
//   --frozen-screenshot FILE  PNG of the page while it says so
//   --expect-offline    then (the test kills the device meanwhile) the page must say "camera offline
//                       since HH:MM" over the picture (roomcam's server's device-offline), and
//                       clear that once the device is back (device-online, or pictures again)
//   --offline-screenshot FILE  PNG of the page while it says so
//   --wait-file FILE    then wait until FILE exists (the test's cue: e.g. the device has adapted)
//   --measure-fps S     then count decoded frames over S seconds (fps over that window, the
//                       longest stall in it) and, with --expect-bars, check the bars again after
//   --measured-file FILE write FILE (that measurement) once it is done
//   --trace S           then, for S seconds, read the test pattern's stamp off every presented
//                       frame (requestVideoFrameCallback): glass-to-glass latency (stamp's capture
//                       time to expected display time) p50/p95/max, fps, longest gap, Chrome's
//                       jitter buffer delay per frame and concealed audio over the window
//   --trace-file FILE   write FILE (that trace's summary) once it is done
//   --keep-watching S   then watch the video for S seconds, sampling every 200 ms: new peer
//                       connections, decoded-frame counter resets, the longest stall; at the
//                       end video must be flowing (waited for up to --timeout more)
//   --watch-end-file FILE  end --keep-watching early once FILE exists (the test's cue that its
//                       faults are over); the report's watch.endedBy says which ended it
//   --done-file FILE    write FILE (the results so far) when the steps above have passed
//   --stay SECONDS      keep the page open that long (SIGTERM/SIGINT ends it early, successfully)
//   --screenshot FILE   PNG of the page at the end
//   --expect-insecure   the page is not a secure context: "Hold to talk" disabled, the
//                       notice says talk-back needs a secure page and gives the https URL
//   --expect-no-mic     the page never called getUserMedia (checked at the end)
//   --expect-mic-refused  press "Hold to talk" once: the page asks for the microphone, is
//                       refused (run with --deny-mic), disables the button, says so, and the
//                       video and sound go on
// Other options:
//   --chromium-arg ARG  one more Chromium flag (repeatable), e.g. --host-resolver-rules=...
//                       or --ignore-certificate-errors-spki-list=... for an HTTPS test
//   --expect-secure-context  after loading, window.isSecureContext must be true
//                       (the report always carries secureContext)
//   --no-permission     a browser with its default behaviour: no camera/microphone
//                       permission granted, no fake permission prompt (so its ICE hides
//                       host addresses behind mDNS names); fake devices still exist
//   --refuse-autoplay-sound  a phone browser's autoplay policy: the page's play() of a video
//                       with sound before any user gesture rejects with NotAllowedError
//                       (emulated in the page: Chromium plays a MediaStream's sound anyway)
//   --deny-mic          the microphone permission is denied for the page's origin
//                       (Browser.setPermission), as a person who said no
//   --secure-origin O   Chromium treats origin O (http://HOST:PORT) as secure, as it does an
//                       https page: stands in for HTTPS where the server has none
//   --host-rules RULES  Chromium's --host-resolver-rules (e.g. "MAP roomcam.test 127.0.0.1")
//   --notifications     notifications allowed for the page, and the tab in the background
//                       (document.visibilityState "hidden", as when another app is in front)
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
import { sampleBars, barsMatch } from './test-pattern.mjs';

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
  expectOffline: false, offlineScreenshot: null,
  waitFile: null, measureFps: 0, measuredFile: null, trace: 0, traceFile: null, watchEndFile: null,
  chromiumArgs: [], expectSecureContext: false,
  expectInsecure: false, expectNoMic: false, noPermission: false, hostRules: null,
  touchTalk: 0, expectPhoneLayout: false, phoneScreenshot: null, fullscreen: false, expectTapForSound: false,
  expectLevel: false, expectAlert: false, alertScreenshot: null, listenOnly: 0, notifications: false,
  refuseAutoplaySound: false, dataSaver: false, tokenHidden: false, expectMicRefused: false, denyMic: false, secureOrigin: null,
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
      case '--expect-offline': opts.expectOffline = true; break;
      case '--offline-screenshot': opts.offlineScreenshot = str(i); i++; break;
      case '--phone': opts.phone = true; break;
      case '--expect-insecure': opts.expectInsecure = true; break;
      case '--expect-no-mic': opts.expectNoMic = true; break;
      case '--no-permission': opts.noPermission = true; break;
      case '--host-rules': opts.hostRules = str(i); i++; break;
      case '--touch-talk': opts.touchTalk = num(i); i++; break;
      case '--expect-phone-layout': opts.expectPhoneLayout = true; break;
      case '--phone-screenshot': opts.phoneScreenshot = str(i); i++; break;
      case '--fullscreen': opts.fullscreen = true; break;
      case '--expect-tap-for-sound': opts.expectTapForSound = true; break;
      case '--refuse-autoplay-sound': opts.refuseAutoplaySound = true; break;
      case '--data-saver': opts.dataSaver = true; break;
      case '--expect-level': opts.expectLevel = true; break;
      case '--expect-alert': opts.expectAlert = true; break;
      case '--alert-screenshot': opts.alertScreenshot = str(i); i++; break;
      case '--listen-only': opts.listenOnly = num(i); i++; break;
      case '--notifications': opts.notifications = true; break;
      case '--token-hidden': opts.tokenHidden = true; break;
      case '--expect-mic-refused': opts.expectMicRefused = true; break;
      case '--deny-mic': opts.denyMic = true; break;
      case '--secure-origin': opts.secureOrigin = str(i); i++; break;
      case '--frozen-screenshot': opts.frozenScreenshot = str(i); i++; break;
      case '--wait-file': opts.waitFile = str(i); i++; break;
      case '--measure-fps': opts.measureFps = num(i); i++; break;
      case '--measured-file': opts.measuredFile = str(i); i++; break;
      case '--trace': opts.trace = num(i); i++; break;
      case '--watch-end-file': opts.watchEndFile = str(i); i++; break;
      case '--trace-file': opts.traceFile = str(i); i++; break;
      case '--screenshot': opts.screenshot = str(i); i++; break;
      case '--timeout': opts.timeout = num(i); i++; break;
      case '--chromium': opts.chromium = str(i); i++; break;
      case '--chromium-arg': opts.chromiumArgs.push(str(i)); i++; break;
      case '--expect-secure-context': opts.expectSecureContext = true; break;
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
          // Repairs that arrived on the RTX stream (Chrome counts only those).
          retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
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

// sampleBars and barsMatch: test-pattern.mjs.

// The ICE pair the page's connection uses: candidate types and addresses
// as the page's stats show them.
function selectedPair() {
  const pc = window.roomcamViewer && window.roomcamViewer.pc;
  if (!pc) return Promise.resolve(null);
  return pc.getStats().then((report) => {
    const byId = {};
    report.forEach((s) => { byId[s.id] = s; });
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId[s.selectedCandidatePairId];
    });
    if (!pair) report.forEach((s) => { if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    if (!pair) return null;
    const cand = (c) => c && { type: c.candidateType, address: c.address || c.ip || null, port: c.port, protocol: c.protocol };
    return { local: cand(byId[pair.localCandidateId]), remote: cand(byId[pair.remoteCandidateId]) };
  });
}

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
  let endedBy = 'time';
  while (Date.now() - start < opts.keepWatching * 1000 && !stopRequested) {
    await sample();
    if (opts.watchEndFile && existsSync(opts.watchEndFile)) {
      endedBy = 'file';
      break;
    }
    await sleep(200);
  }
  // Flowing at the end: frames within the last second, waited for if need be.
  const endedAt = Date.now();
  await waitFor('keep-watching', async () => (await sample()) < 1000 && last > 0,
    () => `video not flowing at the end of the watch (pc changes ${pcChanges}, resets ${counterResets})`, 200);
  return {
    seconds: Math.round((endedAt - start) / 100) / 10, endedBy, pcChanges, counterResets, longestStallMs,
    framesDecoded: last, resumedAfterMs: Date.now() - endedAt,
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

// The device is gone (the test killed it): the page must say so over the
// picture, then clear it once the device is back.
async function expectOffline(page) {
  const look = () => page.evaluate(() => {
    const banner = document.querySelector('#offline');
    const stage = document.querySelector('#stage').getBoundingClientRect();
    const box = banner ? banner.getBoundingClientRect() : null;
    return { text: window.roomcamViewer.deviceOffline, shown: !!banner && !banner.hidden, banner: banner ? banner.textContent : '',
      overPicture: !!box && box.width > 0 && box.top >= stage.top && box.bottom <= stage.bottom,
      state: window.roomcamViewer.state, status: document.querySelector('#status').textContent,
      dot: getComputedStyle(document.querySelector('#status'), '::before').backgroundColor };
  });
  const before = await look();
  if (before.shown) throw new Failure(`expect-offline: the page says offline while the device is there: ${JSON.stringify(before)}`);
  const started = Date.now();
  const offline = await waitFor('expect-offline', async () => {
    const l = await look();
    return l.shown && /^camera offline since \d\d:\d\d$/.test(l.banner) ? l : null;
  }, async () => `the page never said the camera is offline: ${JSON.stringify(await look())}`, 50);
  const toldAfterMs = Date.now() - started;
  if (!offline.overPicture) throw new Failure(`expect-offline: the banner is not over the picture: ${JSON.stringify(offline)}`);
  // The status line does not say "Live" next to it, nor shows the live dot.
  if (offline.status === 'Live' || offline.dot === before.dot) {
    throw new Failure(`expect-offline: the status still looks live: ${JSON.stringify({ before, offline })}`);
  }
  if (opts.offlineScreenshot) await page.screenshot({ path: opts.offlineScreenshot });
  const back = await waitFor('expect-offline (back)', async () => {
    const l = await look();
    return !l.shown && !l.text ? l : null;
  }, async () => `the page still says offline: ${JSON.stringify(await look())}`, 100);
  return { banner: offline.banner, status: offline.status, toldAfterMs, backState: back.state };
}

// Decoded frames over --measure-fps seconds, sampled every 200 ms: the frame
// rate over the window, the longest stretch without a new frame, and (with
// --expect-bars) whether the picture still shows the test pattern after it.
// In the page: for `seconds`, the stamp of every presented frame (the test
// pattern's black/white blocks along the top: frame number, capture time in
// ms since the epoch, CRC-16/CCITT-FALSE; src/media/fixtures.rs reads the
// same) against the frame's expected display time.
async function traceInPage(seconds) {
  const video = document.querySelector('#remote');
  const STAMP_BITS = 96;
  const crc16 = (bytes) => {
    let crc = 0xffff;
    for (const b of bytes) {
      crc ^= b << 8;
      for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  };
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const readStamp = () => {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) return null;
    const block = 16 * Math.max(1, Math.floor(w / 640));
    const cols = Math.floor(w / block);
    const rows = Math.ceil(STAMP_BITS / cols);
    canvas.width = w; canvas.height = rows * block;
    ctx.drawImage(video, 0, 0, w, rows * block, 0, 0, w, rows * block);
    const img = ctx.getImageData(0, 0, w, rows * block).data;
    const bytes = new Array(12).fill(0);
    const q = block / 4;
    for (let i = 0; i < STAMP_BITS; i++) {
      const x0 = (i % cols) * block + q, y0 = Math.floor(i / cols) * block + q;
      let sum = 0, n = 0;
      for (let y = y0; y < y0 + 2 * q; y += 2) {
        for (let x = x0; x < x0 + 2 * q; x += 2) { sum += img[(y * w + x) * 4 + 1]; n++; }
      }
      const m = sum / n;
      if (m >= 170) bytes[i >> 3] |= 0x80 >> (i & 7);
      else if (m > 80) return null;
    }
    if (crc16(bytes.slice(0, 10)) !== ((bytes[10] << 8) | bytes[11])) return null;
    let ms = 0;
    for (let i = 4; i < 10; i++) ms = ms * 256 + bytes[i];
    return { frame: ((bytes[0] << 24) >>> 0) + (bytes[1] << 16) + (bytes[2] << 8) + bytes[3], ms };
  };
  return new Promise((resolve) => {
    const latencies = [];
    const frames = [];
    let presented = 0, unreadable = 0, lastAt = null, longestGap = 0;
    const start = performance.now();
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (lastAt !== null) longestGap = Math.max(longestGap, performance.now() - lastAt);
      resolve({ presented, unreadable, latencies, frames, longestGap, seconds: (performance.now() - start) / 1000 });
    };
    // A picture that froze for good still ends the trace on time.
    setTimeout(finish, seconds * 1000 + 1000);
    const onFrame = (now, meta) => {
      if (finished) return;
      const shownAt = performance.timeOrigin + (meta.expectedDisplayTime || now);
      presented++;
      if (lastAt !== null) longestGap = Math.max(longestGap, now - lastAt);
      lastAt = now;
      const stamp = readStamp();
      if (stamp) latencies.push(shownAt - stamp.ms); else unreadable++;
      frames.push([Math.round(shownAt), stamp ? Math.round(shownAt - stamp.ms) : null]);
      if (now - start < seconds * 1000) video.requestVideoFrameCallback(onFrame);
      else finish();
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

async function traceLatency(page) {
  const jitter = async () => {
    const pc = await page.evaluate(() => window.roomcamViewer.pc.getStats().then((r) => {
      const out = { jitterBufferDelay: 0, jitterBufferEmittedCount: 0, concealedSamples: 0, totalSamplesReceived: 0 };
      r.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          out.jitterBufferDelay = s.jitterBufferDelay || 0; out.jitterBufferEmittedCount = s.jitterBufferEmittedCount || 0;
        } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.concealedSamples = s.concealedSamples || 0; out.totalSamplesReceived = s.totalSamplesReceived || 0;
        }
      });
      return out;
    }));
    return pc;
  };
  const before = await jitter();
  // Audio concealment over time, for a caller that splits the trace in phases.
  const audio = [];
  let tracing = true;
  const sampler = (async () => {
    while (tracing) {
      const j = await jitter().catch(() => null);
      if (j) audio.push([Date.now(), j.concealedSamples, j.totalSamplesReceived]);
      await sleep(500);
    }
  })();
  const t = await page.evaluate(traceInPage, opts.trace);
  tracing = false;
  await sampler;
  const after = await jitter();
  const sorted = [...t.latencies].sort((a, b) => a - b);
  const pct = (p) => (sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]) : null);
  const emitted = after.jitterBufferEmittedCount - before.jitterBufferEmittedCount;
  return {
    seconds: Math.round(t.seconds * 10) / 10, presented: t.presented, unreadable: t.unreadable,
    fps: Math.round((t.presented / t.seconds) * 10) / 10,
    latencyMs: { p50: pct(0.5), p95: pct(0.95), max: pct(1) },
    longestGapMs: Math.round(t.longestGap),
    jitterBufferMsPerFrame: emitted > 0 ? Math.round(((after.jitterBufferDelay - before.jitterBufferDelay) / emitted) * 10000) / 10 : null,
    concealedAudioMs: Math.round(((after.concealedSamples - before.concealedSamples) / 48000) * 1000),
    // [wall-clock ms shown, latency ms or null] per presented frame; [ms, concealed, received] samples.
    frames: t.frames, audio,
  };
}

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
    retransmitted: delta('retransmittedPacketsReceived'), retransmittedSinceStart: after.retransmittedPacketsReceived || 0,
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

// A phone's screen: everything a person needs fits, no sideways scroll, and
// the screenshot shows a picture where the video is.
async function phoneLayout(page) {
  const boxes = await page.evaluate(() => {
    const box = (sel) => {
      const el = document.querySelector(sel);
      if (!el || el.hidden) return null;
      const r = el.getBoundingClientRect();
      return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height };
    };
    return { viewport: { width: innerWidth, height: innerHeight }, scrollWidth: document.documentElement.scrollWidth,
      dpr: devicePixelRatio, video: box('#remote'), talk: box('#talk'), fullscreen: box('#fullscreen') };
  });
  const inside = (b) => b && b.width > 0 && b.height > 0 && b.left >= 0 && b.top >= 0 &&
    b.right <= boxes.viewport.width + 0.5 && b.bottom <= boxes.viewport.height + 0.5;
  if (boxes.scrollWidth > boxes.viewport.width) throw new Failure(`phone layout: horizontal scroll (${JSON.stringify(boxes)})`);
  for (const k of ['video', 'talk', 'fullscreen']) {
    if (!inside(boxes[k])) throw new Failure(`phone layout: ${k} is not on screen without scrolling: ${JSON.stringify(boxes)}`);
  }
  // The screenshot itself, decoded by the page: the share of non-black
  // pixels inside the video's box.
  const png = await page.screenshot(opts.phoneScreenshot ? { path: opts.phoneScreenshot } : {});
  const picture = await page.evaluate(async ({ data, box, dpr }) => {
    const img = new Image();
    img.src = `data:image/png;base64,${data}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(Math.round(box.left * dpr), Math.round(box.top * dpr),
      Math.round(box.width * dpr), Math.round(box.height * dpr)).data;
    let lit = 0;
    let n = 0;
    for (let i = 0; i < px.length; i += 4 * 7) {
      n++;
      if (px[i] + px[i + 1] + px[i + 2] > 60) lit++;
    }
    return { width: img.width, height: img.height, nonBlack: Math.round((lit / n) * 1000) / 1000 };
  }, { data: png.toString('base64'), box: boxes.video, dpr: boxes.dpr });
  if (!(picture.nonBlack > 0.3)) throw new Failure(`phone layout: the video area of the screenshot is black: ${JSON.stringify(picture)}`);
  return { ...boxes, picture, screenshot: opts.phoneScreenshot };
}

// Autoplay with sound refused: the video plays muted, one "Tap for sound"
// button; a tap unmutes it.
async function tapForSound(page) {
  const look = () => page.evaluate(() => {
    const v = document.querySelector('#remote');
    const soundButtons = [...document.querySelectorAll('button')].filter((b) => !b.hidden && /sound/i.test(b.textContent));
    return { muted: v.muted, paused: v.paused, buttons: soundButtons.map((b) => b.textContent.trim()) };
  });
  const before = await waitFor('tap-for-sound', async () => {
    const l = await look();
    return l.muted && !l.paused && l.buttons.length ? l : null;
  }, async () => `the page never offered "Tap for sound": ${JSON.stringify(await look())}`);
  if (before.buttons.length !== 1 || before.buttons[0] !== 'Tap for sound') {
    throw new Failure(`tap-for-sound: expected one "Tap for sound" button: ${JSON.stringify(before)}`);
  }
  if (opts.phone) await page.tap('#unmute');
  else await page.click('#unmute');
  const after = await waitFor('tap-for-sound (after)', async () => {
    const l = await look();
    return !l.muted && !l.paused && !l.buttons.length ? l : null;
  }, async () => `the tap did not bring the sound: ${JSON.stringify(await look())}`);
  return { before, after };
}

// The fullscreen button puts the stage (video and overlays) fullscreen.
async function fullscreen(page) {
  const which = () => page.evaluate(() => (document.fullscreenElement ? document.fullscreenElement.id || document.fullscreenElement.tagName : null));
  if (opts.phone) await page.tap('#fullscreen');
  else await page.click('#fullscreen');
  const entered = await waitFor('fullscreen', which, async () => 'the fullscreen button did nothing');
  if (entered !== 'stage') throw new Failure(`fullscreen: ${entered} went fullscreen, expected the stage`);
  const size = await page.evaluate(() => {
    const r = document.querySelector('#remote').getBoundingClientRect();
    return { width: r.width, height: r.height, screen: { width: innerWidth, height: innerHeight } };
  });
  if (opts.phone) await page.tap('#fullscreen');
  else await page.click('#fullscreen');
  await waitFor('fullscreen (exit)', async () => !(await which()), async () => 'the fullscreen button did not leave fullscreen');
  return { element: entered, video: size };
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
  result.secureContext = await page.evaluate(() => window.isSecureContext);
  if (opts.expectSecureContext && !result.secureContext) throw new Failure(`load: ${opts.url} is not a secure context`);

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
  if (opts.expectTapForSound) result.tapForSound = await tapForSound(page);
  if (opts.expectAudio) result.audio = await waitAudio('expect-audio');
  if (opts.expectRole) {
    const i = await info();
    if (i.role !== opts.expectRole) throw new Failure(`expect-role: the page was ${i.role}, expected ${opts.expectRole}`);
  }
  if (opts.expectMicRefused) {
    const look = () => page.evaluate(() => {
      const n = document.querySelector('#secure');
      return { secure: window.isSecureContext, micState: window.roomcamViewer.micState,
        talkDisabled: document.querySelector('#talk').disabled, notice: n && !n.hidden ? n.textContent : null,
        requests: window.__micRequests || 0 };
    });
    const before = await look();
    if (!before.secure || before.talkDisabled) throw new Failure(`expect-mic-refused: talk-back is not offered: ${JSON.stringify(before)}`);
    const b = page.locator('#talk');
    await b.hover();
    await page.mouse.down();
    const refused = await waitFor('expect-mic-refused', async () => {
      const l = await look();
      return l.micState === 'none' ? l : null;
    }, async () => `the microphone was not refused: ${JSON.stringify(await look())}`);
    await page.mouse.up();
    if (!refused.talkDisabled || !/refused/.test(refused.notice || '') || refused.requests !== 1) {
      throw new Failure(`expect-mic-refused: ${JSON.stringify(refused)}`);
    }
    const s = await stats();
    const f0 = s && s.inVideo ? s.inVideo.framesDecoded : 0;
    await sleep(1500);
    const s1 = await stats();
    const f1 = s1 && s1.inVideo ? s1.inVideo.framesDecoded : 0;
    if (!(f1 > f0)) throw new Failure(`expect-mic-refused: the video stopped after the refusal (${f0} -> ${f1} frames)`);
    result.micRefused = { ...refused, framesAfter: f1 - f0 };
  }
  if (opts.expectInsecure) {
    const look = () => page.evaluate(() => {
      const n = document.querySelector('#secure');
      return { secure: window.isSecureContext, talkDisabled: document.querySelector('#talk').disabled,
        notice: n && !n.hidden ? n.textContent : null,
        visible: !!n && !n.hidden && n.getBoundingClientRect().height > 0 };
    });
    const seen = await look();
    result.insecure = seen;
    if (seen.secure) throw new Failure(`expect-insecure: the page is a secure context (${opts.url})`);
    if (!seen.talkDisabled) throw new Failure('expect-insecure: "Hold to talk" is enabled on an insecure page');
    const https = new URL(opts.url);
    https.protocol = 'https:';
    if (!seen.visible || !/Talk-back needs a secure page/.test(seen.notice || '') || !(seen.notice || '').includes(https.host)) {
      throw new Failure(`expect-insecure: no plain notice with the https address: ${JSON.stringify(seen)}`);
    }
  }
  if (opts.expectPhoneLayout) result.layout = await phoneLayout(page);
  if (opts.fullscreen) result.fullscreen = await fullscreen(page);

  if (opts.expectLevel) {
    const look = () => page.evaluate(() => {
      const m = document.querySelector('#level');
      return { level: window.roomcamViewer.roomLevel, visible: !!m && !m.hidden && m.getBoundingClientRect().width > 0,
        bar: document.querySelector('#level-bar').style.width, channel: window.roomcamViewer.channel };
    });
    result.level = await waitFor('expect-level', async () => {
      const l = await look();
      return Number.isFinite(l.level) && l.visible ? l : null;
    }, async () => `no sound meter: ${JSON.stringify(await look())}`);
  }
  if (opts.expectAlert) {
    const room = new URL(opts.url).searchParams.get('room');
    const look = () => page.evaluate(async () => {
      const v = window.roomcamViewer;
      const banner = document.querySelector('#alert');
      let notifications = null;
      if (navigator.serviceWorker) {
        const r = await navigator.serviceWorker.getRegistration();
        if (r) notifications = (await r.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag }));
      }
      return { banner: v.alertBanner, visible: !!banner && !banner.hidden && banner.getBoundingClientRect().height > 0,
        alerts: v.alerts, notifications, permission: window.Notification ? Notification.permission : null,
        channel: v.channel };
    });
    const seen = await waitFor('expect-alert', async () => {
      const l = await look();
      const banner = l.visible && new RegExp(`^Sound in ${room} at \\d\\d:\\d\\d:\\d\\d`).test(l.banner || '');
      const started = l.alerts.some((a) => a.state === 'start');
      const notified = !opts.notifications || (l.notifications || []).some((n) => n.title === `roomcam — ${room}` && /^Sound at /.test(n.body));
      return banner && started && notified ? l : null;
    }, async () => `no alert on the page: ${JSON.stringify(await look())}`);
    if (opts.alertScreenshot) await page.screenshot({ path: opts.alertScreenshot, fullPage: true });
    result.alert = seen;
  }
  if (opts.listenOnly) {
    const tap = (sel) => (opts.phone ? page.tap(sel) : page.click(sel));
    const look = () => page.evaluate(() => ({ on: window.roomcamViewer.listenOnly,
      button: document.querySelector('#listen').textContent }));
    await tap('#listen');
    await waitFor('listen-only (confirmed)', async () => (await look()).on, async () => `the camera did not confirm: ${JSON.stringify(await look())}`);
    // Packets already on the way may still land.
    await sleep(1000);
    const before = await stats();
    await sleep(opts.listenOnly * 1000);
    const after = await stats();
    const during = {
      videoPackets: after.inVideo.packetsReceived - before.inVideo.packetsReceived,
      videoFrames: after.inVideo.framesDecoded - before.inVideo.framesDecoded,
      audioPackets: after.inAudio.packetsReceived - before.inAudio.packetsReceived,
    };
    if (during.videoPackets !== 0 || during.videoFrames !== 0) throw new Failure(`listen-only: video still arrives: ${JSON.stringify(during)}`);
    if (during.audioPackets < opts.listenOnly * 25) throw new Failure(`listen-only: the sound stopped too: ${JSON.stringify(during)}`);
    const placeholder = await page.evaluate(() => document.querySelector('#placeholder').textContent);
    await tap('#listen');
    await waitFor('listen-only (off)', async () => !(await look()).on, async () => `still listening only: ${JSON.stringify(await look())}`);
    const back = await waitFor('listen-only (video again)', async () => {
      const s = await stats();
      return s.inVideo.framesDecoded > after.inVideo.framesDecoded + 10 ? s : null;
    }, async () => `no video after listen-only: ${JSON.stringify((await stats()).inVideo)}`);
    if (back.inVideo.keyFramesDecoded <= after.inVideo.keyFramesDecoded) {
      throw new Failure(`listen-only: video came back without a keyframe: ${JSON.stringify({ before: after.inVideo, after: back.inVideo })}`);
    }
    result.listenOnly = { during, placeholder, keyFrames: back.inVideo.keyFramesDecoded - after.inVideo.keyFramesDecoded };
  }
  if (opts.dataSaver) {
    const LINK = /^\d+(\.\d)? (kbit|Mbit)\/s · \d+ fps/;
    const look = () => page.evaluate(() => {
      const l = document.querySelector('#link');
      const v = window.roomcamViewer;
      return { text: l && !l.hidden ? l.textContent : null, link: v ? v.link : null,
        checked: document.querySelector('#saver').checked, stored: localStorage.getItem('roomcam.dataSaver'),
        on: v ? v.dataSaver : null };
    });
    const before = await waitFor('data-saver (link)', async () => {
      const l = await look();
      return l.text && LINK.test(l.text) && l.link.fps > 0 ? l : null;
    }, async () => `no link indicator: ${JSON.stringify(await look())}`);
    if (opts.phone) await page.tap('#saver');
    else await page.click('#saver');
    await waitFor('data-saver (tick)', async () => {
      const l = await look();
      return l.checked && l.stored === '1' && l.on;
    }, async () => `ticking Data saver did not take: ${JSON.stringify(await look())}`);
    // Remembered across a reload (a home-screen icon at 3 a.m.).
    await page.reload({ waitUntil: 'load' });
    await waitFor('data-saver (reload)', () => page.evaluate(() => !!window.roomcamViewer), () => 'window.roomcamViewer missing');
    const reloaded = await look();
    if (!reloaded.checked || !reloaded.on) throw new Failure(`data-saver: not remembered across a reload: ${JSON.stringify(reloaded)}`);
    await waitFor('data-saver (peer)', async () => (await info()).pc, async () => `no peer connection (${await describe()})`);
    const video = await waitVideo('data-saver (video)');
    const after = await waitFor('data-saver (indicator)', async () => {
      const l = await look();
      return l.text && LINK.test(l.text) && / · data saver$/.test(l.text) ? l : null;
    }, async () => `the indicator does not say data saver: ${JSON.stringify(await look())}`);
    await sleep(3000);
    result.dataSaver = { before: before.text, after: after.text, video };
  }
  if (opts.tokenHidden) {
    const room = new URL(opts.url).searchParams.get('room');
    const look = () => page.evaluate((r) => ({
      href: location.href,
      referrer: (document.querySelector('meta[name="referrer"]') || {}).content || null,
      stored: localStorage.getItem(`roomcam.token.${r}`) !== null,
    }), room);
    const check = (l, when) => {
      if (/[?&]token=/.test(l.href)) throw new Failure(`token-hidden: ${when} the address bar still has the token: ${l.href}`);
      if (l.referrer !== 'no-referrer') throw new Failure(`token-hidden: referrer policy is ${l.referrer}`);
      if (!l.stored) throw new Failure(`token-hidden: ${when} the token is not kept for room ${room}`);
    };
    const loaded = await look();
    check(loaded, 'after loading');
    // The address a reload or a home-screen icon opens: the token-less one.
    await page.reload({ waitUntil: 'load' });
    await waitFor('token-hidden (reload)', () => page.evaluate(() => !!window.roomcamViewer), () => 'window.roomcamViewer missing');
    const reloaded = await look();
    check(reloaded, 'after the reload');
    await waitFor('token-hidden (peer)', async () => (await info()).pc, async () => `no peer connection after the reload (${await describe()})`);
    const video = await waitVideo('token-hidden (video)');
    result.tokenHidden = { href: reloaded.href, video };
  }
  if (opts.videoFile) writeFileSync(opts.videoFile, JSON.stringify(result.video || null) + '\n');
  if (opts.expectFrozen) result.frozen = await expectFrozen(page, stats);
  if (opts.expectOffline) result.offline = await expectOffline(page);
  if (opts.waitFile) {
    await waitFor('wait-file', () => existsSync(opts.waitFile), () => `${opts.waitFile} never appeared`);
  }
  if (opts.measureFps > 0) result.measured = await measureFps(page, stats);
  if (opts.measuredFile) writeFileSync(opts.measuredFile, JSON.stringify(result.measured || null) + '\n');
  if (opts.trace > 0) {
    const trace = await traceLatency(page);
    if (opts.traceFile) writeFileSync(opts.traceFile, JSON.stringify(trace) + '\n');
    const { frames, audio, ...summary } = trace;
    result.trace = summary;
  }
  if (opts.keepWatching > 0) result.watch = await keepWatching(page, stats);

  const talkTest = async (seconds, press, release) => {
    const talkButton = page.locator('#talk');
    await waitFor('talk', async () => !(await talkButton.isDisabled()),
      async () => `the talk button stays disabled (mic: ${(await info()).micState})`);
    const sent = (s) => ({
      packets: s && s.outAudio ? s.outAudio.packetsSent : 0,
      bytes: s && s.outAudio ? s.outAudio.bytesSent : 0,
      energy: s && s.audioSource ? s.audioSource.totalAudioEnergy : null,
    });
    const delta = (a, b) => ({
      packets: b.packets - a.packets,
      bytes: b.bytes - a.bytes,
      energy: a.energy !== null && b.energy !== null ? b.energy - a.energy : null,
    });
    const round = (x) => (x === null ? null : Math.round(x * 1e6) / 1e6);
    // Released: nothing upstream, not even the silence of a muted track.
    const s0 = sent(await stats());
    await sleep(1000);
    const s1 = sent(await stats());
    const idle = delta(s0, s1);
    const micBefore = (await info()).micState;
    await press(talkButton);
    // The first press asks for the microphone; talking starts once it is there.
    await waitFor('talk', async () => (await info()).talking,
      async () => `pressing the talk button did not start talking (mic: ${(await info()).micState})`, 50);
    const s2 = sent(await stats());
    await sleep(seconds * 1000);
    const s3 = sent(await stats());
    await release(talkButton);
    const released = !(await info()).talking;
    // Packets already in flight at the release still count; then silence.
    await sleep(500);
    const s4 = sent(await stats());
    await sleep(1000);
    const s5 = sent(await stats());
    const on = delta(s2, s3);
    const after = delta(s4, s5);
    const last = await stats();
    const out = {
      seconds, packetsSent: on.packets, bytesSent: on.bytes, micEnergy: round(on.energy),
      micBefore,
      idle: { seconds: 1, packetsSent: idle.packets, bytesSent: idle.bytes, totalPacketsSent: s1.packets },
      afterRelease: { seconds: 1, packetsSent: after.packets, bytesSent: after.bytes },
      codec: last && last.outAudio ? last.outAudio.codec : null,
    };
    if (idle.packets !== 0 || s1.packets !== 0) {
      throw new Failure(`talk: the page sent audio before the first press (${JSON.stringify(out)})`);
    }
    if (!released) throw new Failure('talk: releasing the talk button did not stop talking');
    if (!(on.packets > 0)) throw new Failure(`talk: outbound audio packetsSent did not grow while talking (${JSON.stringify(out)})`);
    if (on.energy !== null && !(on.energy > 1e-6)) {
      throw new Failure(`talk: no mic energy while talking (${JSON.stringify(out)})`);
    }
    if (after.packets !== 0) {
      throw new Failure(`talk: the page kept sending audio after the release (${JSON.stringify(out)})`);
    }
      return out;
  };
  if (opts.talk > 0) {
    result.talk = await talkTest(opts.talk, async (b) => { await b.hover(); await page.mouse.down(); },
      async () => { await page.mouse.up(); });
  }
  if (opts.touchTalk > 0) {
    const cdp = await page.context().newCDPSession(page);
    let point = null;
    const touch = (type) => cdp.send('Input.dispatchTouchEvent', { type, touchPoints: type === 'touchEnd' ? [] : [point] });
    await page.evaluate(() => { window.getSelection().removeAllRanges(); });
    result.touchTalk = await talkTest(opts.touchTalk, async (b) => {
      const box = await b.boundingBox();
      point = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
      await touch('touchStart');
    }, async () => { await touch('touchEnd'); });
    const after = await page.evaluate(() => {
      const b = document.querySelector('#talk');
      const menu = new MouseEvent('contextmenu', { bubbles: true, cancelable: true });
      const shown = b.dispatchEvent(menu);
      const css = getComputedStyle(b);
      return { selection: window.getSelection().toString(), contextMenuCancelled: !shown,
        userSelect: css.userSelect || css.webkitUserSelect, touchCallout: css.webkitTouchCallout || null };
    });
    Object.assign(result.touchTalk, after);
    if (after.selection) throw new Failure(`touch-talk: the long press selected text: ${JSON.stringify(after)}`);
    if (!after.contextMenuCancelled) throw new Failure('touch-talk: the talk button lets the context menu open');
    if (after.userSelect !== 'none') throw new Failure(`touch-talk: the talk button is selectable: ${JSON.stringify(after)}`);
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

  result.micRequests = await page.evaluate(() => window.__micRequests || 0);
  if (needPeer) result.ice = await page.evaluate(selectedPair);
  result.localCandidates = await page.evaluate(() => (window.__localCandidates || []).slice(0, 10));
  if (opts.expectNoMic && result.micRequests !== 0) {
    throw new Failure(`expect-no-mic: the page asked for the microphone ${result.micRequests} times`);
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
      ...(opts.noPermission ? [] : ['--use-fake-ui-for-media-stream']),
      '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection',
      ...(opts.hostRules ? [`--host-resolver-rules=${opts.hostRules}`] : []),
      ...(opts.secureOrigin ? [`--unsafely-treat-insecure-origin-as-secure=${opts.secureOrigin}`] : []),
      ...opts.chromiumArgs,
    ],
    ignoreDefaultArgs: ['--mute-audio'],
    permissions: [...(opts.noPermission ? [] : ['camera', 'microphone']), ...(opts.notifications ? ['notifications'] : [])],
    ...(opts.phone
      ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 3 }
      : { viewport: { width: 1000, height: 900 } }),
    timeout: opts.timeout * 1000,
    handleSIGTERM: false, // we end the scenario ourselves and still report
    handleSIGINT: false,
  });
  const page = context.pages()[0] || await context.newPage();
  if (opts.denyMic) {
    const cdp = await context.newCDPSession(page);
    await cdp.send('Browser.setPermission', {
      permission: { name: 'microphone' }, setting: 'denied', origin: new URL(opts.url).origin,
    });
  }
  if (opts.refuseAutoplaySound) {
    // navigator.userActivation is already set when the driver navigates, so
    // the page's own first gesture (a trusted tap, click or key) is what counts.
    await page.addInitScript(() => {
      let gesture = false;
      for (const type of ['pointerdown', 'touchstart', 'click', 'keydown']) {
        window.addEventListener(type, (e) => { if (e.isTrusted) gesture = true; }, true);
      }
      const play = HTMLMediaElement.prototype.play;
      HTMLMediaElement.prototype.play = function () {
        if (!this.muted && !gesture) {
          window.__autoplayRefused = (window.__autoplayRefused || 0) + 1;
          return Promise.reject(new DOMException('play() with sound needs a user gesture', 'NotAllowedError'));
        }
        return play.call(this);
      };
    });
  }
  if (opts.notifications) {
    // Another app in front: the page is hidden (headless Chromium's tab never is).
    await page.addInitScript(() => {
      Object.defineProperty(Document.prototype, 'visibilityState', { get: () => 'hidden', configurable: true });
      Object.defineProperty(Document.prototype, 'hidden', { get: () => true, configurable: true });
    });
  }
  // Counts the page's microphone requests (a page that watches asks for none).
  await page.addInitScript(() => {
    // And the candidates its peer connections gather (a page without
    // permission shows mDNS names instead of its addresses).
    const Native = window.RTCPeerConnection;
    window.__localCandidates = [];
    if (Native) {
      const Wrapped = function (...args) {
        const pc = new Native(...args);
        pc.addEventListener('icecandidate', (e) => {
          if (e.candidate && e.candidate.candidate) window.__localCandidates.push(e.candidate.candidate);
        });
        return pc;
      };
      Wrapped.prototype = Native.prototype;
      Object.setPrototypeOf(Wrapped, Native);
      window.RTCPeerConnection = Wrapped;
    }
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) return;
    const gum = md.getUserMedia.bind(md);
    window.__micRequests = 0;
    md.getUserMedia = (c) => { window.__micRequests++; return gum(c); };
  });
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
