#!/usr/bin/env node
// Records real signaling traffic for the fuzz corpus: roomcam's viewer page in
// headless Chromium and the classic socket.io 2.5 and 4.8 servers of
// tests/classic, with a raw WebSocket "device" in the room that writes down
// every text frame it receives (what roomcam's client decodes).
//
//   unshare -rn bash -c 'ip link set lo up; node fuzz/capture/record-signaling.mjs OUTDIR'
//
// Per server version it writes OUTDIR/sio<V>.frames: one frame a line (the
// frames are JSON or plain text, so they never hold a raw newline), and
// OUTDIR/sio<V>.offer.sdp: the page's offer (a real Chromium offer).
// Loopback only: run it inside a network namespace with just `lo`.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../tests/classic/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const WebSocket = require('ws');

const out = process.argv[2];
if (!out) {
  console.error('usage: record-signaling.mjs OUTDIR');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const serverJs = new URL('../../tests/classic/server.js', import.meta.url).pathname;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

// A raw Engine.IO/socket.io client over one WebSocket: what roomcam's device does.
function rawClient(port, eio, frames) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=${eio}&transport=websocket`);
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    frames.push(text);
    if (text === '2') ws.send('3'); // v4: the server pings
    if (text.startsWith('0') && eio === 4) ws.send('40');
  });
  return ws;
}

// A raw client past the socket.io handshake.
async function connected(port, eio, frames) {
  const ws = rawClient(port, eio, frames);
  await new Promise((r) => ws.on('open', r));
  await until('the handshake', () => frames.some((f) => f.startsWith('40')));
  return ws;
}

async function record(version, browser) {
  const port = 18000 + version;
  const server = spawn('node', [serverJs, '--version', String(version), '--port', String(port),
    '--ping-interval', '400', '--ping-timeout', '2000'], { stdio: 'inherit' });
  try {
    await sleep(500);
    const eio = version === 2 ? 3 : 4;
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/?room=fuzz&eio=${eio}`);
    await until('the page in the room', () => page.evaluate(() => window.roomcamViewer?.state === 'waiting'));

    const device = [];
    const ws = await connected(port, eio, device);
    ws.send('42["join","fuzz"]');
    await until('the offer', () => device.some((f) => f.includes('"offer"')));
    await sleep(1500); // candidates trickle in; v4 pings meanwhile
    if (eio === 3) {
      ws.send('2probe');
      ws.send('2');
      await sleep(200);
    }
    ws.send('42["message","fuzz",{"type":"candidate","label":0,"id":"0","candidate":""}]');

    // A third member: the room is full.
    const third = [];
    const other = await connected(port, eio, third);
    other.send('42["join","fuzz"]');
    await until('full', () => third.some((f) => f.includes('"full"')));
    other.close();

    ws.send('42["leave","fuzz"]');
    await until('leaved', () => device.some((f) => f.includes('"leaved"')));

    // Alone in another room: someone joins (otherjoin), then leaves (bye).
    ws.send('42["join","fuzz2"]');
    await until('joined fuzz2', () => device.some((f) => f.includes('"joined","fuzz2"')));
    const fourthFrames = [];
    const fourth = await connected(port, eio, fourthFrames);
    fourth.send('42["join","fuzz2"]');
    await until('otherjoin', () => device.some((f) => f.includes('"otherjoin"')));
    fourth.send('42["leave","fuzz2"]');
    await until('bye', () => device.some((f) => f.includes('"bye"')));
    fourth.close();

    // A namespace the server does not have: its CONNECT_ERROR / ERROR.
    ws.send(eio === 4 ? '40/admin,' : '40/admin');
    await sleep(300);
    ws.close();

    const offerFrame = device.find((f) => f.includes('"offer"'));
    const offer = JSON.parse(offerFrame.slice(offerFrame.indexOf('['))).find((a) => a && a.type === 'offer');
    const offerSdp = typeof offer.sdp === 'string' ? offer.sdp : '';
    writeFileSync(join(out, `sio${version}.frames`), [...device, ...third, ...fourthFrames].join('\n') + '\n');
    writeFileSync(join(out, `sio${version}.offer.sdp`), offerSdp);
    console.error(`sio${version}: ${device.length + third.length + fourthFrames.length} frames, offer ${offerSdp.length} bytes`);
    await page.close();
  } finally {
    server.kill();
  }
}

const userDataDir = mkdtempSync(join(tmpdir(), 'roomcam-capture-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: false, // --headless=new below
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection'],
  permissions: ['camera', 'microphone'],
});
try {
  for (const version of [2, 4]) await record(version, browser);
} finally {
  await browser.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
