/*
 * socketio-lite.js: a small socket.io client over WebSocket that speaks both
 * Engine.IO 3 (socket.io 2.x servers) and Engine.IO 4 (socket.io 3.x/4.x
 * servers, socketioxide).
 *
 * Why our own client: the official socket.io-client v4 cannot talk to
 * socket.io 2.x servers, and v2 cannot talk to 3.x/4.x servers. roomcam's
 * viewer has to join rooms on both (classic rooms are still on 2.x; newer
 * ones and roomcam's own server are on 4.x). Bundling two official clients
 * and picking one at run time would cost more than this one file, which does
 * only what the room protocol needs: named events with JSON arguments over
 * a single WebSocket.
 * Not supported, because nothing here needs it: long-polling, binary
 * packets, acks, namespaces other than "/".
 *
 * Protocol differences handled here:
 *   EIO 3: the client pings ("2") every pingInterval, the server answers "3";
 *          the server sends the namespace connect "40" by itself.
 *   EIO 4: the server pings ("2"), the client answers "3"; the client sends
 *          "40" (or 40{auth}), the server answers 40{"sid":...} or 44{...}.
 * Both: a connection that hears nothing for pingInterval + pingTimeout is
 * treated as dead and replaced.
 *
 * Version detection (eio: 'auto', the default) tries EIO=4 first. Measured:
 *   - socket.io 2.5 (engine.io 3.6) does NOT refuse EIO=4: it accepts the
 *     WebSocket and runs an Engine.IO 3 session on it (open packet, then a
 *     bare "40" of its own, and it waits for client pings). A bare "40" with
 *     no sid is therefore the sign of a 2.x server: we drop that connection
 *     and reconnect at once with EIO=3.
 *   - socket.io 4.8 refuses EIO=3 (unless allowEIO3): the WebSocket upgrade
 *     succeeds, then the server writes "HTTP/1.1 400 Unsupported protocol
 *     version" into the upgraded socket, so the browser sees the WebSocket
 *     open and then close (1006) before any Engine.IO open packet.
 *     Servers that answer the upgrade with a plain HTTP 400 end the same way.
 *   In auto mode, a connection that ends before the Engine.IO open packet
 *   makes the next attempt use the other version (the first switch is
 *   immediate, later ones follow the backoff). The version that worked is
 *   kept for reconnects.
 *
 * Usage:
 *   const s = new SocketIoLite('https://host:port', { eio: 'auto' });
 *   s.on('connect', () => s.emit('join', 'room'));
 *   s.on('joined', (room, id) => ...);
 * Reserved events: connect, disconnect(reason), connect_error(error).
 * emit() while disconnected queues the packet until the next connect.
 */
(function (root) {
  'use strict';

  // Engine.IO packet types
  const EIO_OPEN = '0', EIO_CLOSE = '1', EIO_PING = '2', EIO_PONG = '3', EIO_MESSAGE = '4';
  // socket.io packet types (inside an Engine.IO message)
  const SIO_CONNECT = '0', SIO_DISCONNECT = '1', SIO_EVENT = '2', SIO_ERROR = '4';
  const RESERVED = new Set(['connect', 'disconnect', 'connect_error']);

  class SocketIoLite {
    constructor(url, opts) {
      this.opts = Object.assign({
        path: '/socket.io/',
        eio: 'auto',            // 'auto' | 3 | 4
        auth: null,             // EIO 4 only: object sent with the namespace connect
        reconnectDelay: 500,    // ms, doubled per failed attempt ...
        reconnectDelayMax: 10000, // ... up to this
      }, opts || {});
      this.url = url || root.location.origin;
      this.connected = false;
      this.id = null;           // socket id on the server
      this.eio = null;          // Engine.IO version of the current connection
      this._auto = String(this.opts.eio) === 'auto';
      this._version = String(this.opts.eio) === '3' ? 3 : 4;
      this._handlers = new Map();
      this._queue = [];
      this._conn = null;        // { ws, version, opened }
      this._attempts = 0;
      this._switched = false;   // auto mode: already switched version this round
      this._stopped = false;
      this._timers = {};
      this.connect();
    }

    on(name, fn) {
      if (!this._handlers.has(name)) this._handlers.set(name, []);
      this._handlers.get(name).push(fn);
      return this;
    }

    off(name, fn) {
      const list = this._handlers.get(name);
      if (list) this._handlers.set(name, list.filter((f) => f !== fn));
      return this;
    }

    emit(name, ...args) {
      if (RESERVED.has(name)) throw new Error(`"${name}" is a reserved event`);
      const packet = EIO_MESSAGE + SIO_EVENT + JSON.stringify([name, ...args]);
      if (this.connected) this._conn.ws.send(packet);
      else this._queue.push(packet);
      return this;
    }

    connect() {
      this._stopped = false;
      if (!this._conn && !this._timers.reconnect) this._open();
      return this;
    }

    disconnect() {
      this._stopped = true;
      this._clear('reconnect');
      if (this._conn) {
        if (this.connected) this._conn.ws.send(EIO_MESSAGE + SIO_DISCONNECT);
        this._drop(this._conn, 'io client disconnect');
      }
      return this;
    }

    // ---- internals ------------------------------------------------------

    _fire(name, ...args) {
      for (const fn of this._handlers.get(name) || []) {
        try { fn(...args); } catch (err) { console.error(`socketio-lite: "${name}" handler:`, err); }
      }
    }

    _clear(name) {
      clearTimeout(this._timers[name]);
      clearInterval(this._timers[name]);
      delete this._timers[name];
    }

    _open() {
      const version = this._version;
      const u = new URL(this.opts.path, this.url);
      u.protocol = u.protocol === 'https:' || u.protocol === 'wss:' ? 'wss:' : 'ws:';
      u.searchParams.set('EIO', String(version));
      u.searchParams.set('transport', 'websocket');
      let ws;
      try {
        ws = new WebSocket(u.href);
      } catch (err) {
        this._fire('connect_error', err);
        this._scheduleReconnect(false);
        return;
      }
      const conn = { ws, version, opened: false };
      this._conn = conn;
      ws.onmessage = (e) => this._onFrame(conn, e.data);
      ws.onclose = (e) => this._drop(conn, `transport close (${e.code})`);
      ws.onerror = () => {}; // a close event always follows
      // A server that never sends the open packet is as dead as one that stops pinging.
      this._watchdog(conn, 20000);
    }

    _watchdog(conn, ms) {
      this._clear('dead');
      this._timers.dead = setTimeout(() => this._drop(conn, 'ping timeout'), ms);
    }

    _send(conn, text) {
      if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(text);
    }

    _onFrame(conn, data) {
      if (conn !== this._conn || typeof data !== 'string') return; // binary: unsupported
      if (conn.opened) this._watchdog(conn, conn.pingInterval + conn.pingTimeout);
      switch (data[0]) {
        case EIO_OPEN: {
          let hs;
          try { hs = JSON.parse(data.slice(1)); } catch (err) { return this._drop(conn, 'bad open packet'); }
          conn.opened = true;
          conn.sid = hs.sid || null; // socket.io 2.x: the socket id on "/" is the Engine.IO sid
          conn.pingInterval = Number(hs.pingInterval) || 25000;
          conn.pingTimeout = Number(hs.pingTimeout) || 20000;
          this._switched = false;
          this._watchdog(conn, conn.pingInterval + conn.pingTimeout);
          if (conn.version === 3) {
            this._timers.ping = setInterval(() => this._send(conn, EIO_PING), conn.pingInterval);
          } else {
            this._send(conn, EIO_MESSAGE + SIO_CONNECT + (this.opts.auth ? JSON.stringify(this.opts.auth) : ''));
          }
          break;
        }
        case EIO_PING:
          if (conn.version === 4) this._send(conn, EIO_PONG + data.slice(1));
          break;
        case EIO_CLOSE:
          this._drop(conn, 'transport close (server)');
          break;
        case EIO_MESSAGE:
          this._onPacket(conn, data.slice(1));
          break;
        default: // pong, upgrade, noop
          break;
      }
    }

    _onPacket(conn, p) {
      const type = p[0];
      let rest = p.slice(1);
      if (rest[0] === '/') { // a namespace: only "/" is ours
        const comma = rest.indexOf(',');
        const nsp = comma < 0 ? rest : rest.slice(0, comma);
        if (nsp !== '/') return;
        rest = comma < 0 ? '' : rest.slice(comma + 1);
      }
      switch (type) {
        case SIO_CONNECT: {
          let sid = null;
          try { sid = rest ? JSON.parse(rest).sid : null; } catch (err) { /* bare */ }
          if (conn.version === 4 && !sid) {
            // An Engine.IO 3 server (socket.io 2.x) that accepted our EIO=4.
            if (this._auto) {
              this._version = 3;
              this._switched = true;
              this._drop(conn, 'server speaks Engine.IO 3', true);
            } else {
              this._fire('connect_error', new Error('server speaks Engine.IO 3, not 4'));
              this._drop(conn, 'protocol mismatch');
            }
            return;
          }
          this.connected = true;
          this.id = sid || conn.sid;
          this.eio = conn.version;
          this._attempts = 0;
          const queued = this._queue;
          this._queue = [];
          for (const packet of queued) conn.ws.send(packet);
          this._fire('connect');
          break;
        }
        case SIO_EVENT: {
          const json = rest.replace(/^\d+/, ''); // drop an ack id (acks unsupported)
          let args;
          try { args = JSON.parse(json); } catch (err) { args = null; }
          if (!Array.isArray(args) || typeof args[0] !== 'string') {
            console.warn('socketio-lite: bad event packet', p);
            return;
          }
          this._fire(...args);
          break;
        }
        case SIO_DISCONNECT:
          this._drop(conn, 'io server disconnect');
          break;
        case SIO_ERROR: {
          let detail = rest;
          try { detail = JSON.parse(rest); } catch (err) { /* plain text */ }
          const msg = detail && detail.message ? detail.message : String(detail);
          this._fire('connect_error', new Error(`refused by server: ${msg}`));
          this._drop(conn, 'connect error');
          break;
        }
        default:
          break;
      }
    }

    // End a connection (whatever state it is in) and plan the next one.
    _drop(conn, reason, immediate) {
      if (conn !== this._conn) return;
      this._conn = null;
      this._clear('ping');
      this._clear('dead');
      conn.ws.onmessage = conn.ws.onclose = null;
      try { conn.ws.close(); } catch (err) { /* already closed */ }
      const wasConnected = this.connected;
      this.connected = false;
      if (wasConnected) {
        this._fire('disconnect', reason);
      } else if (!conn.opened && this._auto && !this._stopped) {
        // Refused before the Engine.IO handshake: maybe the other version.
        this._version = conn.version === 4 ? 3 : 4;
        immediate = !this._switched;
        this._switched = !this._switched;
        this._fire('connect_error', new Error(`${reason} (EIO=${conn.version})`));
      } else if (!wasConnected && !immediate) {
        this._fire('connect_error', new Error(reason));
      }
      if (!this._stopped) this._scheduleReconnect(immediate);
    }

    _scheduleReconnect(immediate) {
      this._clear('reconnect');
      let delay = 0;
      if (!immediate) {
        const base = Math.min(this.opts.reconnectDelayMax,
          this.opts.reconnectDelay * Math.pow(2, this._attempts));
        delay = Math.round(base * (0.5 + Math.random() * 0.5));
        this._attempts++;
      }
      this._timers.reconnect = setTimeout(() => {
        delete this._timers.reconnect;
        if (!this._stopped && !this._conn) this._open();
      }, delay);
    }
  }

  root.SocketIoLite = SocketIoLite;
})(typeof window !== 'undefined' ? window : globalThis);
