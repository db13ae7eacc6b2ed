// Tests of web/socketio-lite.js in Node, against the real socket.io 2.5 and
// 4.8 servers of server.js, and a fake Engine.IO 4 server that never pings.
//   cd tests/classic && npm ci && node --test
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const path = require('node:path');
const http = require('node:http');

// Node 20 has no WebSocket global: the ws package stands in (same event API).
// Every URL opened is recorded, to see which Engine.IO versions were tried.
const opened = [];
const BaseWebSocket = globalThis.WebSocket || require('ws');
globalThis.WebSocket = class extends BaseWebSocket {
  constructor(url, ...rest) {
    super(url, ...rest);
    opened.push(String(url));
  }
};
require('../../web/socketio-lite.js');
const { SocketIoLite } = globalThis;

const FAST = { reconnectDelay: 50, reconnectDelayMax: 200 };

function startServer(version, extra = [], port = 0) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--version', String(version),
      '--port', String(port), ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (\d+)/);
      if (m) resolve({ child, port: Number(m[1]), url: `http://127.0.0.1:${m[1]}` });
    });
    child.on('exit', (code) => reject(new Error(`server.js exited (${code})`)));
  });
}

function stop(server) {
  return new Promise((resolve) => {
    server.child.removeAllListeners('exit');
    server.child.on('exit', () => resolve());
    server.child.kill('SIGTERM');
  });
}

// Resolves with the arguments of the next `name` event of socket s.
function next(s, name, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no "${name}" within ${ms} ms`)), ms);
    const fn = (...args) => {
      clearTimeout(t);
      s.off(name, fn);
      resolve(args);
    };
    s.on(name, fn);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const [version, eio] of [[2, 3], [4, 4]]) {
  test(`auto mode talks to socket.io ${version} with Engine.IO ${eio}, room events round trip`, async () => {
    const server = await startServer(version);
    opened.length = 0;
    const a = new SocketIoLite(server.url, FAST);
    try {
      await next(a, 'connect');
      // socket.io 2.5 accepts EIO=4 but answers with a bare "40": one extra try.
      assert.deepStrictEqual(opened.map((u) => new URL(u).searchParams.get('EIO')), version === 2 ? ['4', '3'] : ['4']);
    } catch (err) {
      a.disconnect();
      await stop(server);
      throw err;
    }
    const b = new SocketIoLite(server.url, FAST);
    try {
      await next(b, 'connect');
      assert.strictEqual(a.eio, eio);
      assert.ok(a.id && b.id && a.id !== b.id);
      a.emit('join', 'r');
      assert.deepStrictEqual(await next(a, 'joined'), ['r', a.id]);
      const other = next(a, 'otherjoin');
      b.emit('join', 'r');
      assert.deepStrictEqual(await next(b, 'joined'), ['r', b.id]);
      assert.deepStrictEqual(await other, ['r', b.id]);
      const data = { type: 'candidate', label: 0, id: '0', candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host' };
      const msg = next(b, 'message');
      a.emit('message', 'r', data);
      assert.deepStrictEqual(await msg, ['r', data]);
      const bye = next(a, 'bye');
      const leaved = next(b, 'leaved');
      b.emit('leave', 'r');
      assert.deepStrictEqual(await bye, ['r', b.id]);
      assert.deepStrictEqual(await leaved, ['r', b.id]);
      const c = new SocketIoLite(server.url, FAST);
      b.emit('join', 'r');
      await next(b, 'joined');
      await next(c, 'connect');
      c.emit('join', 'r');
      assert.deepStrictEqual(await next(c, 'full'), ['r', c.id]);
      c.disconnect();
    } finally {
      a.disconnect();
      b.disconnect();
      await stop(server);
    }
  });
}

test('forced EIO=3 is refused by socket.io 4 (no connect)', async () => {
  const server = await startServer(4);
  const s = new SocketIoLite(server.url, { ...FAST, eio: 3 });
  try {
    const [err] = await next(s, 'connect_error');
    assert.match(err.message, /transport close/);
    assert.strictEqual(s.connected, false);
  } finally {
    s.disconnect();
    await stop(server);
  }
});

test('forced EIO=3 keeps a socket.io 2 connection alive by pinging', async () => {
  // Server drops a client that sends no ping within 300 + 300 ms.
  const server = await startServer(2, ['--ping-interval', '300', '--ping-timeout', '300']);
  const s = new SocketIoLite(server.url, { ...FAST, eio: 3 });
  let disconnects = 0;
  s.on('disconnect', () => disconnects++);
  try {
    await next(s, 'connect');
    await sleep(2000);
    assert.strictEqual(disconnects, 0);
    assert.strictEqual(s.connected, true);
  } finally {
    s.disconnect();
    await stop(server);
  }
});

test('answers socket.io 4 pings (EIO 4)', async () => {
  const server = await startServer(4, ['--ping-interval', '300', '--ping-timeout', '300']);
  const s = new SocketIoLite(server.url, FAST);
  let disconnects = 0;
  s.on('disconnect', () => disconnects++);
  try {
    await next(s, 'connect');
    await sleep(2000);
    assert.strictEqual(disconnects, 0);
    assert.strictEqual(s.eio, 4);
  } finally {
    s.disconnect();
    await stop(server);
  }
});

test('a server that stops pinging is detected (pingInterval + pingTimeout) and replaced', async () => {
  // A fake Engine.IO 4 server: handshake, namespace connect, then silence.
  const { WebSocketServer } = require('./node_modules/socketio4/node_modules/ws');
  const httpServer = http.createServer();
  const wss = new WebSocketServer({ server: httpServer });
  let connections = 0;
  wss.on('connection', (ws) => {
    connections++;
    ws.send(`0{"sid":"fake${connections}","upgrades":[],"pingInterval":200,"pingTimeout":200}`);
    ws.on('message', (m) => {
      if (String(m) === '40') ws.send(`40{"sid":"s${connections}"}`);
    });
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${httpServer.address().port}`;
  const s = new SocketIoLite(url, FAST);
  try {
    await next(s, 'connect');
    const t0 = Date.now();
    const [reason] = await next(s, 'disconnect', 3000);
    const took = Date.now() - t0;
    assert.strictEqual(reason, 'ping timeout');
    assert.ok(took >= 350 && took < 1500, `detected after ${took} ms`);
    await next(s, 'connect', 3000);
    assert.strictEqual(s.id, 's2');
  } finally {
    s.disconnect();
    wss.close();
    httpServer.close();
  }
});

for (const [first, then, eio] of [[4, 2, 3], [2, 4, 4]]) {
  test(`reconnects when socket.io ${first} is replaced by socket.io ${then}; queued emits go out on connect`, async () => {
    let server = await startServer(first);
    const port = server.port;
    const s = new SocketIoLite(server.url, FAST);
    try {
      await next(s, 'connect');
      const gone = next(s, 'disconnect');
      await stop(server);
      await gone;
      s.emit('join', 'queued'); // sent once connected again
      await sleep(300);
      server = await startServer(then, [], port);
      await next(s, 'connect', 5000);
      assert.strictEqual(s.eio, eio);
      assert.deepStrictEqual(await next(s, 'joined'), ['queued', s.id]);
    } finally {
      s.disconnect();
      await stop(server);
    }
  });
}
