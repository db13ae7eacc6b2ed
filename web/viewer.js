/*
 * roomcam viewer: joins a socket.io room (the classic "1-to-1 room" protocol,
 * see PROTOCOL.md), shows the camera's video with sound, and talks back with
 * push-to-talk.
 *
 * URL parameters:
 *   room=NAME    the room to join (without it, a form asks for one)
 *   token=SECRET sent with join as {token} (roomcam's access control); read
 *                once, then taken out of the address bar (history.replaceState)
 *                and kept in localStorage for that room, so a reload or a
 *                home-screen icon still gets in and the token is not left in
 *                the history, a screenshot or a shared link (index.html's
 *                no-referrer policy keeps it out of the Referer too)
 *   eio=3|4      force an Engine.IO version (default: auto)
 *   camera=1     testing aid: also send this browser's camera, and its mic
 *                open all the time, as a device would
 *   relay=1      iceTransportPolicy "relay": only TURN-relayed candidates
 *                (diagnosis: does the TURN path work on its own?)
 *
 * TURN: roomcam's server sends each admitted member short-lived TURN
 * credentials of its own (the `turn` event, right after `joined`, and fresh
 * ones at 80 % of their lifetime); they are used with /config.json's STUN
 * servers for every new connection, and a live connection this page offered
 * restarts ICE with them before the old ones expire. Classic servers send
 * none.
 *
 * Roles: the member already in the room receives `otherjoin` and offers; the
 * newcomer answers. The viewer does either. Its offer has a recvonly video
 * m-line and a sendrecv audio m-line (the mic); when the device offers a
 * sendrecv audio m-line, the page answers sendrecv on that transceiver.
 *
 * Watching needs no permission: the microphone is asked for on the first
 * press of "Hold to talk", never at load. The audio m-line is negotiated
 * sendrecv from the start but carries no track: the mic track is put on the
 * sender (replaceTrack) while the button is held and taken off (null) when
 * it is released, so nothing at all, not even silence, goes upstream then,
 * and no renegotiation is needed. Talk-back needs a secure context (https
 * or localhost); elsewhere the button is disabled and the page says why.
 *
 * Keeping a call alive: media flows peer to peer and never needs the
 * signaling server, so a server restart or a blip of this page's or the
 * device's connection to it does not end a live peer connection. On
 * roomcam's server both sides join with a stable member id (this page's is
 * made at load), so they know each other again by it; on a classic server,
 * where ids are socket ids, the member already in the room asks the newcomer
 * with a new offer on the live connection, and the DTLS fingerprint of
 * the reply tells whether it is the same browser connection. A connection
 * that fails is offered again (backing off) while we are in the room; when
 * the device offers at the same time, the device gives way.
 *
 * The link: a small indicator over the video shows what this viewer
 * receives (video bitrate and decoded frames per second, from getStats once
 * a second). "Data saver" (remembered in localStorage) caps what it receives
 * at 300 kbit/s: the SDP this page sends carries b=AS:300 and b=TIAS:300000
 * on its video m-section, which any sender honours as its ceiling there (so
 * it needs nothing from the server, classic ones included); roomcam's
 * device then sets its encoder no higher. Toggling it starts a new
 * connection with the new SDP.
 *
 * For tests: window.roomcamViewer = { state, pc, join(), leave(), talk(on) }.
 */
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  const TOKEN_KEY = `roomcam.token.${room}`;
  const token = takeToken();
  const eio = params.get('eio') || 'auto';
  const sendCamera = params.get('camera') === '1';
  const relayOnly = params.get('relay') === '1';

  const $ = (id) => document.getElementById(id);
  const ui = {
    room: $('room'), status: $('status'), pick: $('pick'), viewer: $('viewer'),
    video: $('remote'), placeholder: $('placeholder'), unmute: $('unmute'), notice: $('notice'),
    stalled: $('stalled'), offline: $('offline'), secure: $('secure'), stage: $('stage'), fullscreen: $('fullscreen'),
    link: $('link'), saver: $('saver'), audio: $('listen-audio'),
    alert: $('alert'), alertText: $('alert-text'), alertDismiss: $('alert-dismiss'),
    level: $('level'), levelBar: $('level-bar'), listen: $('listen'), notify: $('notify'),
    join: $('join'), leave: $('leave'), talk: $('talk'), log: $('log'),
  };

  const STATES = {
    idle: 'Not in the room',
    connecting: 'Connecting to the server…',
    joining: 'Joining the room…',
    waiting: 'Waiting for the camera…',
    negotiating: 'Connecting to the camera…',
    connected: 'Live',
    full: 'The room is full',
    unauthorized: 'Access denied: wrong or missing token',
    left: 'You left the room',
    disconnected: 'Lost the server, reconnecting…',
  };

  let state = 'idle';
  let socket = null;
  let wantJoined = false;
  let pc = null;
  let peerId = null;            // the other member, when known
  let role = null;              // 'offerer' | 'answerer'
  let extendedServer = false;   // roomcam's own server (relays `from`, sends bye on disconnect)
  let remoteCandidates = [];    // received before the remote description
  let iceServers = [];
  let turnServer = null;         // { urls, username, credential } from the `turn` event
  let turnExpiry = 0;            // ms: when the credentials a live connection may use expire
  let mic = null;               // MediaStreamTrack, or null
  let micState = 'unknown';     // 'unknown' | 'pending' | 'ok' | 'none'
  let micPromise = null;
  let localStream = null;
  let camera = null;
  let talking = false;          // the mic is on the sender
  let pressed = false;          // the talk button is held
  let senderChain = Promise.resolve(); // replaceTrack calls, in order
  // Browsers give the microphone to secure pages only (https, localhost).
  const canAskMic = !!(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  let chain = Promise.resolve(); // signaling events are handled one at a time, in order
  // roomcam's extension: known by this in the room, across reconnections.
  const memberId = `viewer-${Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('')}`;
  let recovery = null;           // { timer, delay, since } while re-offering after a failure
  const SAVER_KEY = 'roomcam.dataSaver';
  const SAVER_KBPS = 300;
  let dataSaver = readSaver();
  let link = null;               // { kbps, fps, text } of the last second
  let linkLast = null;           // { at, bytes, frames } at the last sample
  let channel = null;            // the `roomcam` data channel of the live connection
  let listenOnly = false;        // asked for: audio only, no video
  let listenOnlyOn = false;      // what the camera confirmed
  let deviceOffline = null;      // since when roomcam's server says the camera is gone (a Date), or null
  let roomLevel = null;          // dBFS, the camera's last word on the room's sound
  const alerts = [];             // { state, at, level_db } as they came
  let swRegistration = null;

  // ---- small helpers ----------------------------------------------------

  function takeToken() {
    const given = params.get('token');
    if (given === null) {
      try {
        return room ? localStorage.getItem(TOKEN_KEY) : null;
      } catch (err) {
        return null;
      }
    }
    if (room) {
      try {
        localStorage.setItem(TOKEN_KEY, given);
      } catch (err) {
        // Storage refused (private mode): this visit still has the token.
      }
    }
    params.delete('token');
    const rest = params.toString();
    history.replaceState(history.state, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
    return given;
  }

  function forgetToken() {
    try {
      localStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      // Nothing was stored.
    }
  }

  function log(...args) {
    console.log('[roomcam]', ...args);
    const line = document.createElement('div');
    line.textContent = `${new Date().toLocaleTimeString()} ${args.join(' ')}`;
    ui.log.append(line);
    while (ui.log.childElementCount > 200) ui.log.firstElementChild.remove();
  }

  function setState(next, detail) {
    if (next !== state) log(`state: ${state} -> ${next}${detail ? ` (${detail})` : ''}`);
    state = next;
    document.body.dataset.state = next;
    // Pictures from the camera: it is there, whatever was said before.
    if (next === 'connected') clearDeviceOffline('connected');
    ui.status.textContent = next === 'connected' ? liveStatus() : STATES[next] + (detail ? ` (${detail})` : '');
    ui.join.disabled = wantJoined;
    ui.leave.disabled = !wantJoined;
    ui.join.classList.toggle('primary', !wantJoined);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function serial(fn) {
    return (...args) => {
      chain = chain.then(() => fn(...args)).catch((err) => log(`error: ${err && err.message || err}`));
    };
  }

  function send(data) {
    if (!socket.connected) return;
    // `to` is roomcam's extension; classic servers ignore the extra argument.
    if (peerId) socket.emit('message', room, data, peerId);
    else socket.emit('message', room, data);
  }

  // ---- configuration and local media -----------------------------------

  const configReady = fetch('config.json', { cache: 'no-store' })
    .then((r) => (r.ok ? r.json() : null))
    .then((c) => {
      if (c && Array.isArray(c.iceServers)) iceServers = c.iceServers;
      log(`ice servers: ${iceServers.length}`);
    })
    .catch(() => log('no config.json: no ice servers'));

  function rtcConfiguration() {
    const servers = turnServer ? [...iceServers, turnServer] : iceServers;
    return relayOnly ? { iceServers: servers, iceTransportPolicy: 'relay' } : { iceServers: servers };
  }

  function startMic() {
    if (micPromise) return micPromise;
    if (!canAskMic) {
      micState = 'none';
      micPromise = Promise.resolve();
      updateTalk('no microphone API (needs https or localhost)');
      return micPromise;
    }
    micState = 'pending';
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    micPromise = navigator.mediaDevices.getUserMedia({ audio, video: sendCamera })
      .then((stream) => {
        localStream = stream;
        mic = stream.getAudioTracks()[0] || null;
        camera = stream.getVideoTracks()[0] || null;
        micState = mic ? 'ok' : 'none';
        log(`microphone ${mic ? 'ready' : 'missing'}${camera ? ', camera ready' : ''}`);
        if (sendCamera) attachLateMedia();
        updateTalk(mic ? '' : 'no microphone');
        applyTalk();
      })
      .catch((err) => {
        micState = 'none';
        log(`microphone unavailable: ${err.name}`);
        updateTalk(`microphone unavailable (${err.name})`);
        explainMicRefused(err);
        applyTalk();
      });
    return micPromise;
  }

  // Only the camera=1 testing aid opens local media before a press; then a
  // pending permission prompt must not hold up the video for long.
  const mediaReady = () => (sendCamera ? Promise.race([startMic(), sleep(2000)]) : Promise.resolve());

  function updateTalk(why) {
    ui.talk.disabled = sendCamera || !canAskMic || micState === 'none';
    ui.talk.title = why || (canAskMic ? 'Hold to speak through the camera' : 'Talk-back needs a secure (https) page');
  }

  // The button's state: held or not. The first press asks for the
  // microphone (inside the gesture, as browsers want); what reaches the
  // sender follows the button from then on.
  function talk(on) {
    if (sendCamera) return false;
    pressed = !!on && !ui.talk.disabled;
    if (pressed && micState === 'unknown') startMic();
    applyTalk();
    return talking;
  }

  function applyTalk() {
    const next = pressed && micState === 'ok' && !sendCamera;
    if (next !== talking) log(next ? 'talking' : 'talk released');
    talking = next;
    ui.talk.classList.toggle('active', pressed);
    ui.talk.textContent = talking ? 'Talking…' : pressed && micState === 'pending' ? 'Allow the microphone…' : 'Hold to talk';
    if (!sendCamera) setTalkTrack(pc);
  }

  // The mic on every audio sender while talking, nothing otherwise. Queued,
  // and each call applies the state current when it runs: the last wins.
  function setTalkTrack(p) {
    if (!p) return;
    senderChain = senderChain.then(async () => {
      if (p.signalingState === 'closed') return;
      const track = talking && p === pc ? mic : null;
      for (const t of p.getTransceivers()) {
        if (t.stopped || t.receiver.track.kind !== 'audio' || t.sender.track === track) continue;
        await t.sender.replaceTrack(track);
        if (track && localStream && t.sender.setStreams) t.sender.setStreams(localStream);
      }
    }).catch((err) => log(`cannot switch the microphone: ${err.message}`));
  }

  // Audio can send from the start (no renegotiation when talking starts),
  // but carries the mic only while talking; in camera mode both tracks
  // go on at once, as a device would send them.
  async function attachMedia(p) {
    for (const t of p.getTransceivers()) {
      if (t.stopped) continue;
      const kind = t.receiver.track.kind;
      if (kind === 'audio' && (t.direction === 'recvonly' || t.direction === 'inactive')) t.direction = 'sendrecv';
      if (!sendCamera || t.sender.track) continue;
      const track = kind === 'audio' ? mic : camera;
      if (!track) continue;
      if (t.direction === 'recvonly' || t.direction === 'inactive') t.direction = 'sendrecv';
      await t.sender.replaceTrack(track);
      if (localStream && t.sender.setStreams) t.sender.setStreams(localStream);
    }
    if (!sendCamera) setTalkTrack(p);
  }

  function attachLateMedia() {
    if (pc && pc.signalingState !== 'closed') {
      attachMedia(pc).catch((err) => log(`cannot attach the microphone: ${err.message}`));
    }
  }

  // ---- a picture that stands still is not live --------------------------
  //
  // A still image of a sleeping baby looks just like a live one. While
  // connected, the page watches that new frames are presented and that
  // sound keeps arriving; after STALL_MS without, it says so over the
  // picture, with the time it stopped, and the status dot is no longer green.

  const STALL_MS = 3000;
  const watch = { lastFrameAt: 0, lastFrames: -1, lastAudioAt: 0, lastSamples: -1,
    videoSince: null, audioSince: null };

  const clock = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });

  function stalledText() {
    const parts = [];
    if (watch.videoSince) parts.push(`Picture frozen since ${clock(watch.videoSince)}`);
    if (watch.audioSince) parts.push(`${parts.length ? 'sound' : 'Sound'} stopped since ${clock(watch.audioSince)}`);
    return parts.join('; ');
  }

  // The status line of a live call: what is wrong with it, if anything.
  function liveStatus() {
    if (deviceOffline) return 'Camera offline';
    return stalledText() || STATES.connected;
  }

  function showStalled() {
    const text = stalledText();
    ui.stalled.hidden = !text;
    ui.stalled.textContent = text;
    if (text) document.body.dataset.stalled = '';
    else delete document.body.dataset.stalled;
    if (state === 'connected') ui.status.textContent = liveStatus();
  }

  function resetWatch() {
    Object.assign(watch, { lastFrameAt: 0, lastFrames: -1, lastAudioAt: 0, lastSamples: -1, videoSince: null, audioSince: null });
    showStalled();
  }

  // Frames as the page presents them (what a person sees), not as they arrive.
  function onPresented() {
    watch.lastFrameAt = Date.now();
    if (ui.video.requestVideoFrameCallback) ui.video.requestVideoFrameCallback(onPresented);
  }

  async function checkStalls() {
    const p = pc;
    const now = Date.now();
    if (!p || state !== 'connected') {
      if (watch.videoSince || watch.audioSince) resetWatch();
      watch.lastFrameAt = watch.lastAudioAt = now;
      return;
    }
    let frames = null;
    let samples = null;
    let videoBytes = null;
    try {
      (await p.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          frames = Math.max(frames || 0, s.framesDecoded || 0);
          videoBytes = (videoBytes || 0) + (s.bytesReceived || 0) + (s.headerBytesReceived || 0);
        }
        if (s.kind === 'audio') samples = Math.max(samples || 0, s.packetsReceived || 0);
      });
    } catch (err) {
      return;
    }
    if (p !== pc) return;
    updateLink(p, now, videoBytes, frames);
    // Where requestVideoFrameCallback is missing, decoded frames stand in.
    if (!ui.video.requestVideoFrameCallback && frames !== null && frames !== watch.lastFrames) watch.lastFrameAt = now;
    watch.lastFrames = frames === null ? watch.lastFrames : frames;
    // Packets, not samples: concealment keeps totalSamplesReceived growing
    // through a gap.
    if (samples !== null && samples !== watch.lastSamples) watch.lastAudioAt = now;
    watch.lastSamples = samples === null ? watch.lastSamples : samples;
    // Listening only, no picture is expected.
    if (listenOnlyOn) watch.lastFrameAt = now;
    const videoStalled = now - watch.lastFrameAt > STALL_MS;
    const audioStalled = samples !== null && now - watch.lastAudioAt > STALL_MS;
    const before = stalledText();
    watch.videoSince = videoStalled ? (watch.videoSince || watch.lastFrameAt) : null;
    watch.audioSince = audioStalled ? (watch.audioSince || watch.lastAudioAt) : null;
    const after = stalledText();
    if (after !== before) {
      log(after || 'picture and sound flowing again');
      showStalled();
    }
  }

  setInterval(checkStalls, 500);

  // ---- the link and the data saver ---------------------------------------

  function readSaver() {
    try {
      return localStorage.getItem(SAVER_KEY) === '1';
    } catch (err) {
      return false; // storage refused (private mode): off
    }
  }

  const formatRate = (kbps) => (kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`);

  // What arrived over the last second or so: video bytes (RTP headers
  // included) and frames decoded.
  function updateLink(p, now, bytes, frames) {
    if (bytes === null || frames === null) return;
    const last = linkLast;
    if (last && last.pc === p && now - last.at < 900) return;
    linkLast = { pc: p, at: now, bytes, frames };
    if (!last || last.pc !== p || bytes < last.bytes) return;
    const seconds = (now - last.at) / 1000;
    const kbps = ((bytes - last.bytes) * 8) / seconds / 1000;
    const fps = (frames - last.frames) / seconds;
    link = { kbps: Math.round(kbps), fps: Math.round(fps), text: `${formatRate(kbps)} · ${Math.round(fps)} fps` };
    ui.link.textContent = link.text + (dataSaver ? ' · data saver' : '');
    ui.link.hidden = false;
  }

  function resetLink() {
    link = null;
    linkLast = null;
    ui.link.hidden = true;
  }

  // b=AS (kbit/s) and b=TIAS (bit/s) on the video m-section, after its c=
  // line as RFC 4566 orders them, in place of any there.
  function withVideoCap(sdp) {
    if (!dataSaver) return sdp;
    const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
    const out = [];
    let video = false;
    for (const line of sdp.split(eol)) {
      if (line.startsWith('m=')) video = line.startsWith('m=video');
      if (video && /^b=(AS|TIAS):/.test(line)) continue;
      out.push(line);
      if (video && line.startsWith('c=')) out.push(`b=AS:${SAVER_KBPS}`, `b=TIAS:${SAVER_KBPS * 1000}`);
    }
    return out.join(eol);
  }

  function setDataSaver(on) {
    if (on === dataSaver) return;
    dataSaver = on;
    try {
      localStorage.setItem(SAVER_KEY, on ? '1' : '0');
    } catch (err) {
      log('cannot remember the data saver (storage refused)');
    }
    ui.saver.checked = on;
    log(`data saver ${on ? `on: at most ${SAVER_KBPS} kbit/s of video` : 'off'}`);
    // The cap travels in the SDP: a new connection carries the new one.
    if (pc && wantJoined) {
      chain = chain.then(async () => {
        if (!wantJoined || !socket.connected) return;
        closePc('data saver changed');
        await call();
      }).catch((err) => log(`error: ${err && err.message || err}`));
    }
  }


  // ---- the roomcam channel: alerts, the room's sound, listen-only --------
  //
  // A data channel beside the media (negotiated, id 0: both sides open it on
  // every connection, no handshake), so it works on classic servers too.
  // The camera tells: hello (the alert going on, if any), alert start/end,
  // the room's level four times a second; the page asks for listen-only.

  function openChannel(p) {
    const dc = p.createDataChannel('roomcam', { negotiated: true, id: 0 });
    dc.pc = p;
    dc.onopen = () => {
      if (p !== pc) return;
      channel = dc;
      log('roomcam channel open');
      if (listenOnly) sendRequest({ type: 'listen-only', on: true });
    };
    dc.onclose = () => { if (channel === dc) channel = null; };
    dc.onmessage = (e) => {
      if (p !== pc) return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (err) {
        return log('roomcam channel: not JSON, dropped');
      }
      onCameraMessage(m);
    };
  }

  function sendRequest(request) {
    if (!channel || channel.readyState !== 'open') return false;
    channel.send(JSON.stringify(request));
    return true;
  }

  function onCameraMessage(m) {
    if (!m || typeof m.type !== 'string') return log('roomcam channel: message without a type, dropped');
    switch (m.type) {
      case 'hello':
        if (m.alert && Number.isFinite(m.alert.since)) showAlert({ state: 'start', at: m.alert.since, level_db: m.alert.level_db }, false);
        setListenOnlyOn(!!m.listen_only);
        break;
      case 'alert':
        if (!Number.isFinite(m.at) || (m.state !== 'start' && m.state !== 'end')) return log('roomcam channel: bad alert, dropped');
        alerts.push({ state: m.state, at: m.at, level_db: m.level_db, over_floor_db: m.over_floor_db });
        if (m.state === 'start') {
          log(`sound alert: ${Math.round(m.level_db)} dBFS, ${Math.round(m.over_floor_db)} dB over the room's floor`);
          showAlert(m, true);
        } else {
          log('sound alert ended');
          endAlert(m);
        }
        break;
      case 'level':
        if (Number.isFinite(m.db)) showLevel(m.db);
        break;
      case 'listen-only':
        setListenOnlyOn(!!m.on);
        break;
      default:
        log(`roomcam channel: unknown ${m.type}, ignored`);
    }
  }

  // The meter spans the room's usual range: -70 dBFS (a quiet room) to -10 (a cry close by).
  function showLevel(db) {
    roomLevel = db;
    const fraction = Math.min(1, Math.max(0, (db + 70) / 60));
    ui.level.hidden = false;
    ui.levelBar.style.width = `${Math.round(fraction * 100)}%`;
    ui.level.title = `Room sound: ${Math.round(db)} dBFS`;
    ui.level.setAttribute('aria-valuenow', String(Math.round(db)));
  }

  function showAlert(m, fresh) {
    ui.alertText.textContent = `Sound in ${room} at ${clock(m.at)}`;
    ui.alert.hidden = false;
    document.body.dataset.alert = '';
    if (!fresh) return;
    chime();
    if (navigator.vibrate) navigator.vibrate([300, 150, 300]);
    notify(m);
  }

  function endAlert(m) {
    if (ui.alert.hidden) return;
    ui.alertText.textContent = `Sound in ${room} at ${clock(alerts.filter((a) => a.state === 'start').map((a) => a.at).pop() || m.at)}; quiet again at ${clock(m.at)}`;
    delete document.body.dataset.alert;
  }

  let audioContext = null;
  // Two soft notes; an AudioContext plays only once the page had a gesture.
  function chime() {
    try {
      audioContext = audioContext || new (window.AudioContext || window.webkitAudioContext)();
      const t = audioContext.currentTime;
      [[880, 0], [660, 0.25]].forEach(([f, dt]) => {
        const o = audioContext.createOscillator();
        const g = audioContext.createGain();
        o.frequency.value = f;
        g.gain.setValueAtTime(0.0001, t + dt);
        g.gain.exponentialRampToValueAtTime(0.3, t + dt + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, t + dt + 0.4);
        o.connect(g).connect(audioContext.destination);
        o.start(t + dt);
        o.stop(t + dt + 0.45);
      });
    } catch (err) {
      log(`chime: ${err.message}`);
    }
  }

  // A system notification when nobody looks at the page (another app, the
  // screen locked). Through the service worker: Android shows no other kind.
  async function notify(m) {
    if (document.visibilityState === 'visible') return;
    if (!('Notification' in window) || Notification.permission !== 'granted' || !swRegistration) return;
    try {
      await swRegistration.showNotification(`roomcam — ${room}`, {
        body: `Sound at ${clock(m.at)}`,
        tag: `roomcam-sound-${room}`,
        renotify: true,
        requireInteraction: true,
        data: { url: location.href },
      });
      log('notification shown');
    } catch (err) {
      log(`notification: ${err.message}`);
    }
  }

  function registerServiceWorker() {
    if (!window.isSecureContext || !('serviceWorker' in navigator)) return;
    navigator.serviceWorker.register('sw.js').then((r) => {
      swRegistration = r;
    }).catch((err) => log(`service worker: ${err.message}`));
  }

  function showNotifyButton() {
    const able = window.isSecureContext && 'Notification' in window && 'serviceWorker' in navigator;
    ui.notify.hidden = !able || Notification.permission === 'granted';
    if (able && Notification.permission === 'denied') {
      ui.notify.hidden = false;
      ui.notify.disabled = true;
      ui.notify.title = 'Notifications are blocked for this page in the browser settings';
    }
  }

  // Asked on a tap, never at load: browsers refuse (and remember) a prompt without one.
  async function askNotifications() {
    try {
      const answer = await Notification.requestPermission();
      log(`notifications: ${answer}`);
    } catch (err) {
      log(`notifications: ${err.message}`);
    }
    showNotifyButton();
  }

  // Listen-only: the camera sends no video to this page, the sound goes on
  // through an <audio> element, which phones keep playing with the screen
  // locked; the lock screen says what it is (Media Session).
  function setListenOnly(on) {
    listenOnly = on;
    ui.listen.setAttribute('aria-pressed', String(on));
    ui.listen.textContent = on ? 'Video' : 'Listen only';
    log(on ? 'listen-only asked' : 'video asked');
    if (!sendRequest({ type: 'listen-only', on })) log('listen-only: sent when the camera connects');
  }

  function setListenOnlyOn(on) {
    if (on === listenOnlyOn) return;
    listenOnlyOn = on;
    document.body.toggleAttribute('data-listen-only', on);
    ui.listen.setAttribute('aria-pressed', String(on));
    ui.listen.textContent = on ? 'Video' : 'Listen only';
    const stream = ui.video.srcObject || ui.audio.srcObject;
    if (on) {
      ui.audio.srcObject = stream;
      ui.video.srcObject = null;
      ui.audio.play().catch((err) => log(`listen-only audio: ${err.message}`));
      ui.placeholder.textContent = 'Listening only. Tap "Video" for the picture.';
      ui.placeholder.hidden = false;
      if ('mediaSession' in navigator && window.MediaMetadata) {
        navigator.mediaSession.metadata = new MediaMetadata({ title: `roomcam — ${room}`, artist: 'roomcam', album: 'Listening' });
      }
    } else {
      ui.video.srcObject = stream;
      ui.audio.srcObject = null;
      ui.placeholder.textContent = 'Waiting for the picture…';
      play();
    }
    log(on ? 'listening only: no video' : 'video again');
  }

  // ---- the peer connection ----------------------------------------------

  function live(p) {
    return p && !['failed', 'closed'].includes(p.connectionState || p.iceConnectionState);
  }

  // The DTLS fingerprint of a description: one per browser/device peer connection.
  function fingerprint(sdp) {
    const m = /^a=fingerprint:(.+)$/m.exec(sdp || '');
    return m ? m[1].trim().toLowerCase() : null;
  }

  // After a failure: offer a new connection, 1 s later, then backing off to
  // 8 s, for up to two minutes, as long as we are in the room and nothing
  // else (an offer from the device) has brought a connection meanwhile.
  function scheduleRecovery() {
    if (!wantJoined) return;
    const now = Date.now();
    if (!recovery) recovery = { timer: null, delay: 1000, since: now };
    if (recovery.timer) return;
    if (now - recovery.since > 120000) {
      log('connection not recovered in 2 minutes; waiting for the camera');
      recovery = null;
      return;
    }
    const delay = recovery.delay;
    recovery.delay = Math.min(recovery.delay * 2, 8000);
    recovery.timer = setTimeout(serial(async () => {
      if (recovery) recovery.timer = null;
      if (!wantJoined || !socket.connected || live(pc)) return;
      log('offering a new connection');
      await call();
    }), delay);
  }

  function recovered() {
    if (!recovery) return;
    clearTimeout(recovery.timer);
    recovery = null;
  }

  function closePc(why) {
    if (!pc) return;
    log(`closing peer connection${why ? `: ${why}` : ''}`);
    const p = pc;
    pc = null;
    p.onicecandidate = p.ontrack = p.onconnectionstatechange = p.oniceconnectionstatechange = null;
    if (channel && channel.pc === p) channel = null;
    // Listen-only is asked again of the next connection (the wish stays).
    if (listenOnlyOn) {
      listenOnlyOn = false;
      document.body.removeAttribute('data-listen-only');
      ui.audio.srcObject = null;
    }
    p.close();
    remoteCandidates = [];
    ui.video.srcObject = null;
    ui.placeholder.hidden = false;
    resetLink();
    talk(false);
  }

  function newPc() {
    closePc('replaced');
    const p = new RTCPeerConnection(rtcConfiguration());
    pc = p;
    const remote = new MediaStream();
    ui.video.srcObject = remote;
    let descriptionSent = false;
    const localCandidates = [];

    openChannel(p);
    const sendCandidate = (c) => send({ type: 'candidate', label: c.sdpMLineIndex, id: c.sdpMid, candidate: c.candidate });
    p.onicecandidate = (e) => {
      if (p !== pc || !e.candidate || !e.candidate.candidate) return;
      if (descriptionSent) sendCandidate(e.candidate);
      else localCandidates.push(e.candidate);
    };
    p.descriptionSent = () => {
      descriptionSent = true;
      localCandidates.splice(0).forEach(sendCandidate);
    };
    p.ontrack = (e) => {
      if (p !== pc) return;
      log(`remote ${e.track.kind} track`);
      remote.addTrack(e.track);
      play();
    };
    const onState = () => {
      if (p !== pc) return;
      const s = p.connectionState || p.iceConnectionState;
      log(`peer connection: ${s}`);
      if (s === 'connected' || s === 'completed') {
        recovered();
        setState('connected');
      } else if (s === 'failed') {
        closePc('connection failed');
        if (wantJoined) {
          setState('waiting', 'connection lost');
          scheduleRecovery();
        }
      } else if (s === 'disconnected') setState('negotiating', 'connection interrupted');
    };
    if ('connectionState' in p) p.onconnectionstatechange = onState;
    else p.oniceconnectionstatechange = onState;
    return p;
  }

  function play() {
    const v = ui.video;
    v.play().catch((err) => {
      if (err.name !== 'NotAllowedError') return;
      // Autoplay with sound refused (phones, a first visit): play muted
      // and offer one tap for the sound.
      if (!v.muted) log('autoplay with sound refused: playing muted');
      v.muted = true;
      ui.unmute.hidden = false;
      v.play().catch(() => {});
    });
  }

  async function flushRemoteCandidates(p) {
    for (const c of remoteCandidates.splice(0)) await addCandidate(p, c);
  }

  async function addCandidate(p, c) {
    try {
      await p.addIceCandidate(c);
    } catch (err) {
      // A peer whose sdpMid does not match ours: the m-line index still does.
      if (c.sdpMid != null && c.sdpMLineIndex != null) {
        await p.addIceCandidate({ candidate: c.candidate, sdpMLineIndex: c.sdpMLineIndex })
          .catch((e) => log(`bad candidate: ${e.message}`));
      } else {
        log(`bad candidate: ${err.message}`);
      }
    }
  }

  function preferH264(transceiver) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpSender || !RTCRtpSender.getCapabilities) return;
    const codecs = RTCRtpSender.getCapabilities('video').codecs;
    const h264 = codecs.filter((c) => c.mimeType === 'video/H264');
    if (h264.length) transceiver.setCodecPreferences([...h264, ...codecs.filter((c) => c.mimeType !== 'video/H264')]);
  }

  // We were in the room first: offer.
  async function call() {
    role = 'offerer';
    setState('negotiating');
    await configReady;
    await mediaReady();
    if (!wantJoined) return;
    const p = newPc();
    // H.264 first: what roomcam sends (and decoded in hardware on most phones).
    preferH264(p.addTransceiver('video', { direction: camera ? 'sendrecv' : 'recvonly' }));
    p.addTransceiver('audio', { direction: 'sendrecv' });
    await attachMedia(p);
    const offer = await p.createOffer();
    await p.setLocalDescription(offer);
    if (p !== pc) return;
    send({ type: 'offer', sdp: withVideoCap(p.localDescription.sdp) });
    p.descriptionSent();
    log('offer sent');
    // An offer nobody answers (the device restarted and lost it) must not
    // leave us waiting for ever.
    setTimeout(serial(() => {
      if (p !== pc || p.signalingState !== 'have-local-offer') return;
      closePc('offer not answered');
      scheduleRecovery();
    }), 10000);
  }

  // Classic server: the member that just joined may be the device back with
  // a new socket id. Ask it with a new offer on the live connection, with
  // the same ICE credentials: the same device answers on it and nothing on
  // the path changes (an ICE restart would make the device drop its working
  // candidate pair until the new checks pass: seconds of frozen picture);
  // another one gets a new connection when its answer shows another
  // fingerprint. Only the side that offered first asks, so the DTLS roles
  // of the live connection never swap (Chrome refuses that). New TURN
  // credentials do need an ICE restart: the relay must be allocated again.
  async function reoffer(p, { iceRestart }) {
    const offer = await p.createOffer({ iceRestart });
    await p.setLocalDescription(offer);
    if (p !== pc) return;
    send({ type: 'offer', sdp: withVideoCap(p.localDescription.sdp) });
    log(iceRestart ? 'ICE restart offer sent' : 'offer sent on the live connection');
  }

  async function onOffer(data, from) {
    let p = pc;
    const samePeer = !from || !peerId || from === peerId;
    if (p && live(p) && samePeer && p.signalingState === 'have-local-offer') {
      // Both sides offered at once: ours stands, the device gives way.
      return log('offer ignored: ours crossed it');
    }
    const sameConnection = !p || !p.remoteFp || p.remoteFp === fingerprint(data.sdp);
    if (!sameConnection) log('offer from a new connection of the camera');
    if (!p || !live(p) || !samePeer || !sameConnection) {
      role = 'answerer';
      await configReady;
      p = newPc();
    }
    if (from) peerId = from;
    if (state !== 'connected') setState('negotiating');
    recovered();
    await p.setRemoteDescription({ type: 'offer', sdp: data.sdp });
    p.remoteFp = fingerprint(data.sdp);
    await mediaReady();
    if (p !== pc) return;
    await attachMedia(p);
    const answer = await p.createAnswer();
    await p.setLocalDescription(answer);
    if (p !== pc) return;
    send({ type: 'answer', sdp: withVideoCap(p.localDescription.sdp) });
    p.descriptionSent();
    log('answer sent');
    await flushRemoteCandidates(p);
  }

  async function onAnswer(data) {
    if (!pc || pc.signalingState !== 'have-local-offer') {
      log('answer ignored: no offer pending');
      return;
    }
    if (pc.remoteFp && pc.remoteFp !== fingerprint(data.sdp)) {
      // Our ICE restart reached another connection (the device restarted).
      closePc('answered by a new connection of the camera');
      return call();
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: data.sdp });
    pc.remoteFp = fingerprint(data.sdp);
    await flushRemoteCandidates(pc);
  }

  async function onCandidate(data) {
    if (typeof data.candidate !== 'string') throw new Error('candidate without a candidate string');
    const label = Number(data.label);
    const c = {
      candidate: data.candidate,
      sdpMLineIndex: Number.isInteger(label) ? label : null,
      sdpMid: data.id == null ? null : String(data.id),
    };
    if (!pc) return log('candidate ignored: no peer connection');
    if (!pc.remoteDescription) remoteCandidates.push(c);
    else await addCandidate(pc, c);
  }

  // ---- room events ------------------------------------------------------

  const mine = (r) => r === room;

  // roomcam's server only (a classic one never says): the camera's
  // connection to the server ended, at `info.since` (Unix ms).
  function onDeviceOffline(r, info) {
    if (!mine(r)) return;
    const since = new Date(info && Number.isFinite(info.since) ? info.since : Date.now());
    deviceOffline = since;
    const hhmm = `${String(since.getHours()).padStart(2, '0')}:${String(since.getMinutes()).padStart(2, '0')}`;
    ui.offline.textContent = `camera offline since ${hhmm}`;
    ui.offline.hidden = false;
    document.body.dataset.offline = '';
    if (state === 'connected') ui.status.textContent = liveStatus();
    log(`server: the camera is offline since ${hhmm}`);
  }

  function clearDeviceOffline(why) {
    if (!deviceOffline) return;
    deviceOffline = null;
    ui.offline.hidden = true;
    delete document.body.dataset.offline;
    if (state === 'connected') ui.status.textContent = liveStatus();
    log(`the camera is back (${why})`);
  }

  const onJoined = serial((r, id) => {
    if (!mine(r)) return;
    log(`joined as ${id}`);
    if (pc && (pc.connectionState || pc.iceConnectionState) === 'connected') {
      // Back after a signaling outage: the call never needed the server.
      log('keeping the live connection');
      setState('connected');
      return;
    }
    closePc('new membership');
    peerId = null;
    setState('waiting');
  });

  // Never log the credential itself.
  const onTurn = serial(async (r, c) => {
    if (!mine(r) || !c || !Array.isArray(c.urls) || typeof c.username !== 'string' ||
        typeof c.credential !== 'string') return;
    turnServer = { urls: c.urls, username: c.username, credential: c.credential };
    const ttl = Number(c.ttl) > 0 ? Number(c.ttl) : 86400;
    log(`TURN credentials for ${c.urls.join(', ')} (valid ${ttl}s)`);
    const p = pc;
    if (!p) return;
    // The live connection's next gathering uses them.
    try { p.setConfiguration(rtcConfiguration()); } catch (err) { log(`TURN: ${err.message}`); }
    // A relayed path dies with its credentials: the offerer restarts ICE
    // before they expire (at the server's renewal, at 80 %), but not when a
    // reconnection to the server merely brought a fresh set.
    const due = turnExpiry && turnExpiry - Date.now() < (ttl * 1000) / 2;
    if (!turnExpiry || due) turnExpiry = Date.now() + ttl * 1000;
    if (due && role === 'offerer' && live(p) && p.signalingState === 'stable') {
      log('ICE restart with the new TURN credentials');
      await reoffer(p, { iceRestart: true });
    }
  });

  const onOtherJoin = serial(async (r, id) => {
    if (!mine(r) || !wantJoined) return;
    // On roomcam's server a live peer ends with a `bye` first, so a newcomer
    // while we have one is another viewer. Classic servers send no bye on
    // disconnect: there a newcomer means our old peer is gone.
    if (extendedServer && live(pc)) return log(`${id} joined; already have a peer`);
    if (!extendedServer && pc && (pc.connectionState || pc.iceConnectionState) === 'connected') {
      if (role !== 'offerer') return log(`${id} joined; the camera offered first, so it checks`);
      log(`${id} joined: checking whether it is the camera back`);
      return reoffer(pc, { iceRestart: false });
    }
    log(`${id} joined: calling`);
    peerId = id;
    await call();
  });

  const onMessage = serial(async (r, data, from) => {
    if (!mine(r)) return;
    if (from !== undefined) extendedServer = true;
    if (!data || typeof data !== 'object' || typeof data.type !== 'string') {
      return log(`invalid message dropped: ${JSON.stringify(data)}`);
    }
    if (from && peerId && from !== peerId && !(data.type === 'offer' && !live(pc))) {
      return log(`${data.type} from ${from} ignored (not our peer)`);
    }
    switch (data.type) {
      case 'offer':
        if (typeof data.sdp !== 'string') return log('offer without sdp dropped');
        return onOffer(data, from);
      case 'answer':
        if (typeof data.sdp !== 'string') return log('answer without sdp dropped');
        return onAnswer(data);
      case 'candidate':
        return onCandidate(data);
      default:
        return log(`unknown message type dropped: ${data.type}`);
    }
  });

  const onBye = serial((r, id) => {
    if (!mine(r) || (peerId && id !== peerId)) return;
    log(`${id} left`);
    recovered();
    closePc('bye');
    peerId = null;
    if (wantJoined) setState('waiting');
  });

  // A reload finds the room full while the server still holds this tab's
  // previous place (roomcam's server keeps a dropped member's place 10 s;
  // the leave sent on pagehide does not always get out): keep asking for
  // a while after the page loaded, then give up.
  const loadedAt = Date.now();
  const FULL_RETRY_MS = 15000;

  function onFull(r) {
    if (!mine(r)) return;
    if (wantJoined && Date.now() - loadedAt < FULL_RETRY_MS) {
      setState('full', 'trying again');
      setTimeout(() => { if (wantJoined && socket.connected && state === 'full') sendJoin(); }, 2000);
      return;
    }
    wantJoined = false;
    setState('full');
  }

  function onUnauthorized(r) {
    if (!mine(r)) return;
    wantJoined = false;
    // A remembered token that no longer opens the room would keep failing;
    // a new link with ?token= brings the right one.
    forgetToken();
    setState('unauthorized');
  }

  // ---- join / leave ------------------------------------------------------

  function sendJoin() {
    if (state !== 'connected') setState('joining');
    // Classic servers ignore the options.
    socket.emit('join', room, token ? { token, member: memberId } : { member: memberId });
  }

  function join() {
    if (wantJoined) return;
    wantJoined = true;
    if (sendCamera) startMic();
    if (socket.connected) sendJoin();
    else setState('connecting');
  }

  function leave() {
    if (!wantJoined) return;
    wantJoined = false;
    if (socket.connected) socket.emit('leave', room);
    chain = chain.then(() => {
      recovered();
      closePc('left');
      peerId = null;
    });
    // Out of the room, the server says no more of its camera.
    clearDeviceOffline('left the room');
    setState('left');
  }

  // ---- wiring ------------------------------------------------------------

  function bindTalkButton() {
    const b = ui.talk;
    const start = (e) => {
      if (b.disabled || (e.button !== undefined && e.button !== 0)) return;
      e.preventDefault();
      if (e.pointerId !== undefined) b.setPointerCapture(e.pointerId);
      talk(true);
    };
    const stop = () => { if (pressed) talk(false); };
    b.addEventListener('pointerdown', start);
    b.addEventListener('pointerup', stop);
    b.addEventListener('pointercancel', stop);
    b.addEventListener('lostpointercapture', stop);
    b.addEventListener('contextmenu', (e) => e.preventDefault());
    // Touch: pointer events already start and stop talking; touchstart's
    // default is cancelled too, so a long press selects nothing, opens no
    // callout and sends no emulated mouse events.
    b.addEventListener('touchstart', (e) => {
      if (b.disabled) return;
      e.preventDefault();
      if (!pressed) talk(true);
    }, { passive: false });
    b.addEventListener('touchend', stop);
    b.addEventListener('touchcancel', stop);
    b.addEventListener('keydown', (e) => {
      if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) start(e);
    });
    b.addEventListener('keyup', (e) => { if (e.key === ' ' || e.key === 'Enter') stop(); });
    window.addEventListener('blur', stop);
  }

  // Plain http from another machine: the video plays, the microphone is
  // refused by the browser. Say so, and where the page works fully.
  function explainNoTalk() {
    const n = ui.secure;
    n.textContent = '';
    if (!window.isSecureContext) {
      const https = `https://${location.host}${location.pathname}${location.search}`;
      const a = document.createElement('a');
      a.href = https;
      a.textContent = https;
      n.append('Talk-back needs a secure page: open ', a,
        ' (browsers give the microphone only to https pages and to localhost). Watching works here.');
      log('not a secure context: talk-back disabled');
    } else {
      n.textContent = 'Talk-back is not available: this browser gives no microphone to web pages. Watching works here.';
      log('no getUserMedia: talk-back disabled');
    }
    n.hidden = false;
  }

  // The browser (or the person) said no to the microphone: watching goes
  // on; say what to change.
  function explainMicRefused(err) {
    if (sendCamera) return;
    const n = ui.secure;
    n.textContent = err && (err.name === 'NotAllowedError' || err.name === 'SecurityError')
      ? 'Talk-back needs the microphone, and this browser refused it. Allow the microphone for this page ' +
        '(in the address bar or the site settings) and reload. Watching works without it.'
      : `Talk-back is not available: no usable microphone (${err ? err.name : 'unknown'}). Watching works without it.`;
    n.hidden = false;
  }

  // Fullscreen: the stage (video and its overlays) where the API exists;
  // iPhone Safari has only the video element's own.
  function toggleFullscreen() {
    const d = document;
    if (d.fullscreenElement || d.webkitFullscreenElement) {
      (d.exitFullscreen || d.webkitExitFullscreen).call(d);
      return;
    }
    const s = ui.stage;
    const enter = s.requestFullscreen || s.webkitRequestFullscreen;
    if (enter) {
      Promise.resolve(enter.call(s)).catch((err) => log(`fullscreen refused: ${err.message}`));
    } else if (ui.video.webkitEnterFullscreen) {
      ui.video.webkitEnterFullscreen();
    }
  }

  function main() {
    if (!room) {
      ui.pick.hidden = false;
      setState('idle', 'choose a room');
      return;
    }
    ui.viewer.hidden = false;
    ui.room.textContent = `room ${room}`;
    document.title = `roomcam: ${room}`;

    ui.join.onclick = () => join();
    ui.leave.onclick = () => leave();
    ui.unmute.onclick = () => {
      ui.video.muted = false;
      ui.unmute.hidden = true;
      ui.video.play().catch(() => {});
    };
    ui.video.addEventListener('loadeddata', () => { ui.placeholder.hidden = true; });
    ui.listen.addEventListener('click', () => setListenOnly(!listenOnly));
    ui.notify.addEventListener('click', askNotifications);
    ui.alertDismiss.addEventListener('click', () => { ui.alert.hidden = true; delete document.body.dataset.alert; });
    registerServiceWorker();
    showNotifyButton();
    ui.fullscreen.onclick = toggleFullscreen;
    ui.saver.checked = dataSaver;
    ui.saver.onchange = () => setDataSaver(ui.saver.checked);
    ui.stage.addEventListener('dblclick', (e) => { if (e.target === ui.video) toggleFullscreen(); });
    ui.stage.addEventListener('contextmenu', (e) => e.preventDefault());
    if (ui.video.requestVideoFrameCallback) ui.video.requestVideoFrameCallback(onPresented);
    ui.video.addEventListener('volumechange', () => { if (!ui.video.muted) ui.unmute.hidden = true; });
    bindTalkButton();
    updateTalk();
    if (!canAskMic && !sendCamera) explainNoTalk();
    // roomcam sends H.264 only. Firefox decodes it with the OpenH264 plugin,
    // which it downloads by itself; until then (or offline) it has none.
    if (window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities &&
        !RTCRtpReceiver.getCapabilities('video').codecs.some((c) => c.mimeType === 'video/H264')) {
      ui.notice.textContent = 'This browser cannot decode H.264 video, which the camera sends. ' +
        'In Firefox, enable the OpenH264 plugin (Add-ons and themes, Plugins) or use another browser.';
      ui.notice.hidden = false;
      log('no H.264 decoder in this browser');
    }

    socket = new SocketIoLite(location.origin, { eio });
    socket.on('connect', () => {
      log(`server connected (Engine.IO ${socket.eio}, id ${socket.id})`);
      if (wantJoined) sendJoin();
    });
    socket.on('disconnect', (reason) => {
      log(`server lost: ${reason}`);
      // A live call goes on without the server.
      if (wantJoined && state !== 'connected') setState('disconnected');
    });
    socket.on('connect_error', (err) => log(`server: ${err.message}`));
    socket.on('joined', onJoined);
    socket.on('otherjoin', onOtherJoin);
    socket.on('turn', onTurn);
    socket.on('message', onMessage);
    socket.on('bye', onBye);
    socket.on('full', onFull);
    socket.on('unauthorized', onUnauthorized);
    socket.on('device-offline', onDeviceOffline);
    socket.on('device-online', (r) => { if (mine(r)) clearDeviceOffline('server'); });
    socket.on('leaved', (r) => { if (mine(r) && !wantJoined) setState('left'); });

    // Tell the room we are going: classic servers send no bye on disconnect.
    window.addEventListener('pagehide', () => {
      if (wantJoined && socket.connected) socket.emit('leave', room);
    });
    window.addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });

    join();
  }

  window.roomcamViewer = {
    get state() { return state; },
    get pc() { return pc; },
    get role() { return role; },
    get peerId() { return peerId; },
    get talking() { return talking; },
    get pressed() { return pressed; },
    get micState() { return micState; },
    get socket() { return socket; },
    get memberId() { return memberId; },
    get stalled() { return stalledText(); },
    get link() { return link; },
    get dataSaver() { return dataSaver; },
    get listenOnly() { return listenOnlyOn; },
    get roomLevel() { return roomLevel; },
    get alerts() { return alerts.slice(); },
    get deviceOffline() { return deviceOffline ? ui.offline.textContent : null; },
    get alertBanner() { return ui.alert.hidden ? null : ui.alertText.textContent; },
    get channel() { return channel ? channel.readyState : null; },
    setListenOnly,
    setDataSaver,
    join,
    leave,
    talk,
  };

  main();
})();
