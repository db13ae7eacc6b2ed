#!/usr/bin/env node
// A classic "1-to-1 room" WebRTC signaling server, as deployed for years on
// socket.io 2.x and (rewritten) on socket.io 4.x. roomcam must work against
// both unchanged; this file is the reference used by the tests.
//
//   node server.js --version 2|4 --port N [--host 127.0.0.1] [--capacity 2]
//                  [--ping-interval MS] [--ping-timeout MS] [--verbose]
//
// It also serves roomcam's viewer page (../../web) at /, /viewer.js and
// /socketio-lite.js. There is no /config.json (classic servers have none).
//
// Room protocol, exactly as the classic servers do it (see shared/PROTOCOL.md):
//   join(room)          0 members -> join, 'joined'(room, id) to the joiner
//                       1 member  -> join, 'joined' to the joiner,
//                                    'otherjoin'(room, id) to the other one
//                       full      -> 'full'(room, id) to the joiner only
//   message(room, data) -> 'message'(room, data) to the others (no `from`)
//   leave(room)         -> 'bye'(room, id) to the others, leave,
//                          'leaved'(room, id) to the leaver
//   disconnect          -> nothing (no 'bye': classic behaviour, on purpose)
'use strict';

const http = require('http');
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const opts = { version: null, port: null, host: '127.0.0.1', capacity: 2,
    pingInterval: null, pingTimeout: null, verbose: false };
  const need = (i) => {
    if (i + 1 >= argv.length) usage(`missing value for ${argv[i]}`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--version': opts.version = need(i); i++; break;
      case '--port': opts.port = Number(need(i)); i++; break;
      case '--host': opts.host = need(i); i++; break;
      case '--capacity': opts.capacity = Number(need(i)); i++; break;
      case '--ping-interval': opts.pingInterval = Number(need(i)); i++; break;
      case '--ping-timeout': opts.pingTimeout = Number(need(i)); i++; break;
      case '--verbose': case '-v': opts.verbose = true; break;
      case '--help': case '-h': usage(); break;
      default: usage(`unknown argument ${argv[i]}`);
    }
  }
  if (opts.version !== '2' && opts.version !== '4') usage('--version must be 2 or 4');
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('--port N is required');
  if (!Number.isInteger(opts.capacity) || opts.capacity < 1) usage('--capacity must be >= 1');
  return opts;
}

function usage(msg) {
  if (msg) console.error(`server.js: ${msg}`);
  console.error('usage: node server.js --version 2|4 --port N [--host H] [--capacity 2] ' +
    '[--ping-interval MS] [--ping-timeout MS] [--verbose]');
  process.exit(msg ? 2 : 0);
}

const opts = parseArgs(process.argv.slice(2));
const log = opts.verbose ? (...a) => console.error(`[sio${opts.version}]`, ...a) : () => {};

// ---- static files: the viewer page -------------------------------------
const WEB = path.resolve(__dirname, '..', '..', 'web');
const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/viewer.js': ['viewer.js', 'text/javascript; charset=utf-8'],
  '/socketio-lite.js': ['socketio-lite.js', 'text/javascript; charset=utf-8'],
};

const server = http.createServer((req, res) => {
  const pathname = new URL(req.url, 'http://x').pathname;
  const entry = STATIC[pathname];
  if (!entry || (req.method !== 'GET' && req.method !== 'HEAD')) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  fs.readFile(path.join(WEB, entry[0]), (err, body) => {
    if (err) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`cannot read ${entry[0]}: ${err.code}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
});

// ---- socket.io ---------------------------------------------------------
const ioOpts = {};
if (opts.pingInterval) ioOpts.pingInterval = opts.pingInterval;
if (opts.pingTimeout) ioOpts.pingTimeout = opts.pingTimeout;

let io;
let roomSize;
if (opts.version === '2') {
  // socket.io 2.x attaches its request handlers to the http server itself.
  ioOpts.serveClient = false;
  io = require('socketio2')(server, ioOpts);
  roomSize = (room) => {
    const r = io.sockets.adapter.rooms[room];
    return r ? Object.keys(r.sockets).length : 0;
  };
} else {
  const { Server } = require('socketio4');
  ioOpts.serveClient = false;
  io = new Server(server, ioOpts);
  roomSize = (room) => {
    const r = io.sockets.adapter.rooms.get(room);
    return r ? r.size : 0;
  };
}

io.on('connection', (socket) => {
  log('connect', socket.id);

  socket.on('join', (room) => {
    const n = roomSize(room);
    log('join', room, socket.id, `(${n} in room)`);
    if (n < opts.capacity) {
      socket.join(room);
      socket.emit('joined', room, socket.id);
      if (n >= 1) socket.to(room).emit('otherjoin', room, socket.id);
    } else {
      socket.emit('full', room, socket.id);
    }
  });

  socket.on('message', (room, data) => {
    log('message', room, socket.id, data && data.type);
    socket.to(room).emit('message', room, data);
  });

  socket.on('leave', (room) => {
    log('leave', room, socket.id);
    socket.to(room).emit('bye', room, socket.id);
    socket.leave(room);
    socket.emit('leaved', room, socket.id);
  });

  socket.on('disconnect', (reason) => log('disconnect', socket.id, reason));
});

server.on('error', (err) => {
  console.error(`server.js: ${err.message}`);
  process.exit(1);
});
server.listen(opts.port, opts.host, () => {
  console.log(`listening on ${server.address().port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    io.close();
    server.close();
    process.exit(0);
  });
}
