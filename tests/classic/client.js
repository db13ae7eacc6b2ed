#!/usr/bin/env node
// A room member on the real socket.io client of version 2.x or 4.x (npm
// socket.io-client 2.5.0 / 4.8.1), as a classic web or Node client would be.
//
//   node client.js --version 2|4 --url URL --room NAME [--ca FILE] [--token T]
//                  [--websocket-only]
//
// --ca FILE trusts that PEM CA for https/wss (Node's TLS otherwise trusts
// the system roots only). The client starts on HTTP long-polling and
// upgrades to WebSocket, as browsers do, unless --websocket-only.
//
// Prints one JSON line per event on stdout and stays until SIGTERM:
//   {"event":"connect","transport":"polling"}   {"event":"upgrade","transport":"websocket"}
//   {"event":"joined","room":R,"id":ID}   {"event":"otherjoin","room":R,"id":ID}
//   {"event":"message","room":R,"data":D,"from":ID}   {"event":"bye","room":R,"id":ID}
//   {"event":"full"|"unauthorized",...}   {"event":"connect_error","message":M}
//   {"event":"disconnect","reason":REASON}
'use strict';

const fs = require('fs');

function usage(msg) {
  console.error(`client.js: ${msg}`);
  console.error('usage: node client.js --version 2|4 --url URL --room NAME [--ca FILE] [--token T] [--websocket-only]');
  process.exit(2);
}

const opts = { version: null, url: null, room: null, ca: null, token: null, websocketOnly: false };
{
  const a = process.argv.slice(2);
  const need = (i) => (a[i + 1] === undefined ? usage(`missing value for ${a[i]}`) : a[i + 1]);
  for (let i = 0; i < a.length; i++) {
    switch (a[i]) {
      case '--version': opts.version = need(i); i++; break;
      case '--url': opts.url = need(i); i++; break;
      case '--room': opts.room = need(i); i++; break;
      case '--ca': opts.ca = need(i); i++; break;
      case '--token': opts.token = need(i); i++; break;
      case '--websocket-only': opts.websocketOnly = true; break;
      default: usage(`unknown argument ${a[i]}`);
    }
  }
  if (opts.version !== '2' && opts.version !== '4') usage('--version must be 2 or 4');
  if (!opts.url || !opts.room) usage('--url and --room are required');
}

const io = require(opts.version === '2' ? 'socketio-client2' : 'socketio-client4');
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const options = {
  reconnection: false,
  transports: opts.websocketOnly ? ['websocket'] : ['polling', 'websocket'],
};
// Both clients hand these to Node's TLS for polling (xmlhttprequest-ssl /
// http) and for the WebSocket (ws).
if (opts.ca) options.ca = fs.readFileSync(opts.ca);

const socket = io(opts.url, options);
const engine = socket.io.engine;

socket.on('connect', () => {
  say({ event: 'connect', transport: socket.io.engine.transport.name });
  const extra = opts.token ? [{ token: opts.token }] : [];
  socket.emit('join', opts.room, ...extra);
});
engine.on('upgrade', (transport) => say({ event: 'upgrade', transport: transport.name || String(transport) }));
socket.on('connect_error', (err) => say({ event: 'connect_error', message: String((err && (err.description && err.description.message)) || (err && err.message) || err) }));
socket.on('error', (err) => say({ event: 'error', message: String((err && err.message) || err) }));
socket.on('disconnect', (reason) => say({ event: 'disconnect', reason }));
for (const name of ['joined', 'otherjoin', 'full', 'unauthorized', 'leaved']) {
  socket.on(name, (room, id) => say({ event: name, room, id }));
}
socket.on('bye', (room, id) => say({ event: 'bye', room, id }));
socket.on('message', (room, data, from) => say({ event: 'message', room, data, from }));

const stop = () => {
  socket.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setInterval(() => {}, 1 << 30); // stay
