//! roomcam's own signaling server (`roomcam serve`): the room protocol of
//! `PROTOCOL.md` with roomcam's extensions (tokens, several viewers, `bye` on
//! disconnect, stable member ids), over socketioxide with Engine.IO 3 enabled
//! so socket.io 2.x and 4.x clients both connect. It also serves the viewer page.
//!
//! A member that joins with `{member: ID}` is known in its room by that id
//! rather than by its socket id. When its socket drops, its place is held
//! for [`REJOIN_GRACE`]: rejoining with the same id within it is not a
//! departure (no `bye`), so a device and a page whose connections to the
//! server blipped, or a restarted server, do not tear down a call whose
//! media never needed the server.
//!
//! The member whose id is a device's (`device-…`, see
//! [`protocol::is_device_member`]) is the room's device. When its socket
//! drops (closed, or no pong within [`PING_INTERVAL`] + [`PING_TIMEOUT`])
//! or it leaves, the room's other members get `device-offline` (`room`,
//! `{since}`) at once, as does a member that joins while it is gone, and
//! `device-online` (`room`) when it is back; `[server] webhook` is told both.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use log::{info, warn};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use tokio::net::TcpListener;

use crate::alerts::webhook::{Webhook, WebhookEvent, WebhookFormat, redacted};
use crate::config::{IceServerConfig, RoomConfig, ServerConfig};
use crate::metrics::server::{Occupancy, Refused, ServerMetrics};
use crate::signaling::limits::{Limits, PeerAddr, tokens_match};
use crate::signaling::protocol;
use crate::signaling::tls::{ServerTls, TlsListener};
use crate::signaling::turn_credentials::{self, TurnCredentials};
use crate::util::{LogLimit, lock_ignoring_poison, warn_limited};

mod whep;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server stopped: {0}")]
    Serve(std::io::Error),
}

/// All the arguments of an event, however many the client sent.
///
/// socketioxide hands a handler only the first argument unless the target
/// type deserializes as a tuple; this one does, of any length.
#[derive(Debug, Default)]
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut args = Vec::new();
                while let Some(value) = seq.next_element::<Value>()? {
                    args.push(value);
                }
                Ok(Args(args))
            }
        }
        d.deserialize_tuple(usize::MAX, Visitor)
    }
}

/// How long the place of a member with a stable id is held after its socket drops.
pub const REJOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

struct Member {
    /// Its member id, or its socket id when it gave none.
    id: String,
    /// `None` while a member with a stable id is away (its socket dropped).
    socket: Option<SocketRef>,
    /// Counts rejoins, so that an expired hold does not remove a member
    /// that came back meanwhile.
    epoch: u64,
    /// A WHEP viewer: the server holds its place and its HTTP side.
    whep: Option<Arc<whep::WhepSession>>,
}

impl Member {
    fn emit(&self, event: &str, args: &impl serde::Serialize) {
        if let Some(socket) = &self.socket {
            let _ = socket.emit(event, args);
        }
    }
}

/// Engine.IO's ping interval and timeout on roomcam's server (socketioxide's
/// defaults are 25 s and 20 s). The server finds a client gone (its network
/// vanished: no FIN) at most interval + timeout = 17 s after its last pong;
/// a client drops a server that is silent for interval + timeout, so a
/// server that stalls for less than the timeout (12 s) loses nobody. Clients
/// take these values from the open packet (socket.io 2 clients ping every
/// interval and wait the timeout for the pong; socket.io 4 clients answer
/// the server's pings and wait the sum).
/// The WebSocket read buffer socketioxide keeps per connection, used or
/// not (its default is 4 KiB). Signaling messages are small and few, and a
/// larger one only takes more reads (`benches/idle_members.rs` measures it).
const WS_READ_BUFFER: usize = 1024;

pub const PING_INTERVAL: Duration = Duration::from_secs(5);
pub const PING_TIMEOUT: Duration = Duration::from_secs(12);

/// Rooms whose device the server remembers (to tell a viewer that joins
/// that it is gone); past it, those without members are forgotten.
const MAX_REMEMBERED_DEVICES: usize = 4096;

/// A room's device: its member id, and since when it is gone.
struct RoomDevice {
    id: String,
    offline_since: Option<SystemTime>,
}

#[derive(Default)]
struct Rooms {
    members: HashMap<String, Vec<Member>>,
    /// socket id → the room it is in and its id there (one room per socket).
    room_of: HashMap<String, (String, String)>,
    /// room → its device, as last seen.
    devices: HashMap<String, RoomDevice>,
    next_epoch: u64,
}

impl Rooms {
    fn connected(&self, room: &str, id: &str) -> bool {
        self.members.get(room).is_some_and(|ms| ms.iter().any(|m| m.id == id && m.socket.is_some()))
    }

    /// Tells every connected member of `room` but `except`.
    fn tell_others(&self, room: &str, except: &str, event: &str, args: &impl serde::Serialize) -> usize {
        let others = self.members.get(room).map(Vec::as_slice).unwrap_or_default();
        others.iter().filter(|m| m.id != except && m.socket.is_some()).inspect(|m| m.emit(event, args)).count()
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct RoomPolicy {
    default_capacity: usize,
    rooms: HashMap<String, RoomConfig>,
}

impl RoomPolicy {
    fn capacity(&self, room: &str) -> usize {
        self.rooms.get(room).and_then(|r| r.capacity).unwrap_or(self.default_capacity)
    }
    fn token(&self, room: &str) -> Option<&str> {
        self.rooms.get(room).and_then(|r| r.token.as_deref())
    }
}

/// What the server mints TURN credentials with (`turn-secret` set).
struct TurnMint {
    secret: String,
    urls: Vec<String>,
    ttl: Duration,
}

impl TurnMint {
    fn from_config(config: &ServerConfig) -> Option<TurnMint> {
        let secret = config.turn_secret.clone().filter(|_| !config.turn_urls.is_empty())?;
        Some(TurnMint { secret: secret.expose().to_owned(), urls: config.turn_urls.clone(), ttl: config.turn_ttl() })
    }

    fn mint(&self, room: &str, member: &str) -> TurnCredentials {
        turn_credentials::mint(&self.secret, &self.urls, self.ttl, room, member, SystemTime::now())
    }
}

struct Hub {
    rooms: Mutex<Rooms>,
    policy: RoomPolicy,
    turn: Option<TurnMint>,
    limits: Limits,
    refusals: RefusalLogs,
    /// `[server] webhook`, and its sender once started (it needs the runtime).
    webhook: Option<(url::Url, WebhookFormat)>,
    webhook_sender: std::sync::OnceLock<Option<Webhook>>,
    /// `[metrics] listen` is set.
    metrics: Option<Arc<ServerMetrics>>,
}

/// The rooms' occupancy for a scrape; weak, so the metrics do not keep a
/// stopped server's rooms alive.
struct HubOccupancy(std::sync::Weak<Hub>);

impl Occupancy for HubOccupancy {
    fn occupancy(&self) -> (usize, usize) {
        let Some(hub) = self.0.upgrade() else { return (0, 0) };
        let rooms = lock_ignoring_poison(&hub.rooms);
        (rooms.members.len(), rooms.members.values().map(Vec::len).sum())
    }
}

/// Refusals a hostile client can repeat many times a second: at most one
/// line a second of each kind, so that they cannot flood the journal.
struct RefusalLogs {
    crowded: LogLimit,
    foreign: LogLimit,
    flooding: LogLimit,
    garbage: LogLimit,
    bad_joins: LogLimit,
    stray: LogLimit,
    second_device: LogLimit,
}

impl Default for RefusalLogs {
    fn default() -> Self {
        let second = || LogLimit::once_per(std::time::Duration::from_secs(1));
        RefusalLogs {
            crowded: second(),
            foreign: second(),
            flooding: second(),
            garbage: second(),
            bad_joins: second(),
            stray: second(),
            second_device: second(),
        }
    }
}

/// A member the server admitted: its room and its id there.
struct Admitted {
    room: String,
    id: String,
}

impl Hub {
    fn count(&self, what: impl FnOnce(&ServerMetrics)) {
        if let Some(metrics) = &self.metrics {
            what(metrics);
        }
    }

    fn webhook(&self) -> Option<&Webhook> {
        self.webhook_sender
            .get_or_init(|| {
                let (url, format) = self.webhook.clone()?;
                Webhook::spawn(url.clone(), format)
                    .inspect_err(|e| {
                        log::error!("server: webhook {}: {e}; devices going offline are not told", redacted(&url))
                    })
                    .ok()
                    .map(|(webhook, _task)| webhook)
            })
            .as_ref()
    }

    /// `id`, just admitted to `room`: the room's device if it says it is one
    /// and no other device of the room is connected; told to the others if it
    /// was gone. A member that joins while the device is gone is told so.
    fn device_joined(&self, rooms: &mut Rooms, socket: &SocketRef, room: &str, id: &str) {
        if protocol::is_device_member(id) {
            let current = rooms.devices.get(room);
            if let Some(device) = current.filter(|d| d.id != id && rooms.connected(room, &d.id)) {
                warn_limited!(
                    self.refusals.second_device,
                    "server: room {room}: {id} says it is a device, but the room's device {} is connected; \
                     taken as an ordinary member",
                    device.id
                );
            } else {
                let was_gone = current.and_then(|d| d.offline_since);
                let another_process = current.is_some_and(|d| d.id != id);
                if current.is_none() && rooms.devices.len() >= MAX_REMEMBERED_DEVICES {
                    let Rooms { devices, members, .. } = rooms;
                    devices.retain(|r, _| members.contains_key(r));
                }
                // Another process (a restarted board) has none of the old
                // one's calls: its WHEP viewers' sessions are over.
                if another_process {
                    for whep_id in whep::members_of(&rooms.members, room) {
                        remove_member(rooms, room, &whep_id, "its camera restarted");
                    }
                }
                rooms.devices.insert(room.to_owned(), RoomDevice { id: id.to_owned(), offline_since: None });
                if let Some(since) = was_gone {
                    let told = rooms.tell_others(room, id, "device-online", &(room,));
                    let offline_for = since.elapsed().unwrap_or_default();
                    info!(
                        "server: room {room}: device {id} is back after {:.1}s offline ({told} member(s) told)",
                        offline_for.as_secs_f64()
                    );
                    if let Some(webhook) = self.webhook() {
                        webhook.tell(room, WebhookEvent::DeviceOnline { offline_for });
                    }
                }
                return;
            }
        }
        if let Some(since) = rooms.devices.get(room).and_then(|d| d.offline_since) {
            let _ = socket.emit("device-offline", &(room, json!({ "since": unix_ms(since) })));
        }
    }

    /// `id` lost its connection to `room` or left it: if it is the room's
    /// device, it is gone, and the room's members are told at once.
    fn device_gone(&self, rooms: &mut Rooms, room: &str, id: &str, why: &str) {
        let Some(device) = rooms.devices.get_mut(room).filter(|d| d.id == id && d.offline_since.is_none()) else {
            return;
        };
        // Another device of the room, still connected (a restarted board
        // whose old connection had not yet timed out): the room's device now.
        let successor = rooms.members.get(room).and_then(|ms| {
            ms.iter()
                .find(|m| m.id != id && m.socket.is_some() && protocol::is_device_member(&m.id))
                .map(|m| m.id.clone())
        });
        if let Some(successor) = successor {
            info!("server: room {room}: device {id} {why}; {successor} is the room's device now");
            device.id = successor;
            return;
        }
        let since = SystemTime::now();
        device.offline_since = Some(since);
        let told = rooms.tell_others(room, id, "device-offline", &(room, json!({ "since": unix_ms(since) })));
        info!("server: room {room}: device {id} {why}: offline ({told} member(s) told)");
        self.count(ServerMetrics::device_offline);
        if let Some(webhook) = self.webhook() {
            webhook.tell_at(room, WebhookEvent::DeviceOffline, since);
        }
    }

    /// Sends `socket`, admitted to `room` as `id`, TURN credentials of its
    /// own; returns when to send fresh ones (None without `turn-secret`).
    fn send_turn(&self, socket: &SocketRef, room: &str, id: &str, why: &str) -> Option<tokio::time::Instant> {
        let turn = self.turn.as_ref()?;
        let credentials = turn.mint(room, id);
        let _ = socket.emit("turn", &(room, credentials.to_json()));
        info!("server: room {room}: {id}: TURN credentials {why} (valid {}s)", credentials.ttl);
        Some(tokio::time::Instant::now() + turn_credentials::refresh_after(turn.ttl))
    }

    /// Still the member it was admitted as (not left, not replaced by a newer socket)?
    fn still_member(&self, socket: &SocketRef, admitted: &Admitted) -> bool {
        lock_ignoring_poison(&self.rooms)
            .room_of
            .get(&socket.id.to_string())
            .is_some_and(|(room, id)| *room == admitted.room && *id == admitted.id)
    }

    /// The credentials `/config.json?room=R` hands out: only for a room that
    /// has a token, to whoever presents it as a Bearer token.
    fn config_turn(
        &self,
        room: Option<&str>,
        bearer: Option<&str>,
        member: Option<&str>,
        address: IpAddr,
    ) -> Option<TurnCredentials> {
        let turn = self.turn.as_ref()?;
        let room = room.filter(|r| self.limits.room_names.check(r).is_ok())?;
        let secret = self.policy.token(room)?;
        // No token is a page that relies on the `turn` event: nothing to say.
        if !tokens_match(Some(bearer?), secret) {
            // A second way to try tokens: counted and slowed like a join.
            let failures = self.limits.token_failed(address);
            warn!(
                "server: room {room}: /config.json from {address} with a wrong token ({failures} lately from there); \
                 static ICE servers only"
            );
            return None;
        }
        let member = member.filter(|m| crate::signaling::protocol::valid_member_id(m)).unwrap_or("page");
        info!("server: room {room}: {member}: TURN credentials sent in /config.json (valid {}s)", turn.ttl.as_secs());
        Some(turn.mint(room, member))
    }

    fn join(&self, socket: &SocketRef, args: &[Value], address: IpAddr) -> Option<Admitted> {
        let sid = socket.id.to_string();
        let Some(room) = args.first().and_then(Value::as_str) else {
            warn_limited!(self.refusals.bad_joins, "server: {sid} from {address}: join without a room name; ignored");
            self.count(|m| m.refused(Refused::BadJoin));
            return None;
        };
        if let Err(why) = self.limits.room_names.check(room) {
            warn_limited!(self.refusals.bad_joins, "server: {sid} from {address}: join refused: {why}");
            self.count(|m| m.refused(Refused::BadJoin));
            return None;
        }
        let options = args.get(1);
        let token = options.and_then(|a| a.get("token")).and_then(Value::as_str);
        let member = options.and_then(|a| a.get("member")).and_then(Value::as_str);
        if member.is_some_and(|m| !crate::signaling::protocol::valid_member_id(m)) {
            warn!("server: {sid}: join with an invalid member id; using the socket id");
        }
        // A WHEP viewer's id is the server's to give: nobody takes its place.
        let id = member
            .filter(|m| crate::signaling::protocol::valid_member_id(m) && !protocol::is_whep_member(m))
            .unwrap_or(&sid)
            .to_owned();
        if let Some(secret) = self.policy.token(room)
            && !tokens_match(token, secret)
        {
            let failures = self.limits.token_failed(address);
            warn!(
                "server: room {room}: {id} from {address} refused (bad or missing token, {failures} lately from there)"
            );
            let _ = socket.emit("unauthorized", &(room,));
            self.count(|m| m.refused(Refused::Token));
            return None;
        }
        if lock_ignoring_poison(&self.rooms).room_of.get(&sid).is_some_and(|(r, m)| r != room || *m != id) {
            self.leave(socket, "joins another room");
        }
        let mut rooms = lock_ignoring_poison(&self.rooms);
        rooms.next_epoch += 1;
        let epoch = rooms.next_epoch;
        let capacity = self.policy.capacity(room);
        let members = rooms.members.entry(room.to_owned()).or_default();
        let back = members.iter().position(|m| m.id == id);
        if back.is_none() && members.len() >= capacity {
            info!("server: room {room}: full, {id} refused");
            let _ = socket.emit("full", &(room, id.as_str()));
            self.count(|m| m.refused(Refused::Full));
            return None;
        }
        let _ = socket.emit("joined", &(room, id.as_str()));
        for other in members.iter().filter(|m| m.id != id) {
            other.emit("otherjoin", &(room, id.as_str()));
        }
        let replaced = match back {
            // Its old socket, if still there, is a connection that died
            // unnoticed: the member now lives on this one.
            Some(i) => std::mem::replace(
                &mut members[i],
                Member { id: id.clone(), socket: Some(socket.clone()), epoch, whep: None },
            )
            .socket
            .map(|old| old.id.to_string()),
            None => {
                members.push(Member { id: id.clone(), socket: Some(socket.clone()), epoch, whep: None });
                None
            }
        };
        let count = members.len();
        if let Some(old) = replaced.filter(|old| *old != sid) {
            rooms.room_of.remove(&old);
        }
        rooms.room_of.insert(sid, (room.to_owned(), id.clone()));
        match back {
            Some(_) => info!("server: room {room}: {id} is back ({count} member(s))"),
            None => info!("server: room {room}: {id} joined ({count} member(s))"),
        }
        self.device_joined(&mut rooms, socket, room, &id);
        self.count(ServerMetrics::joined);
        Some(Admitted { room: room.to_owned(), id })
    }

    fn relay(&self, socket: &SocketRef, args: &[Value]) {
        let sid = socket.id.to_string();
        let (Some(room), Some(data)) = (args.first().and_then(Value::as_str), args.get(1)) else {
            warn_limited!(self.refusals.stray, "server: {sid}: message without room and data; ignored");
            return;
        };
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let Some((_, id)) = rooms.room_of.get(&sid).filter(|(r, _)| r == room).cloned() else {
            // The name is the client's: a short prefix is enough to recognise it.
            let room: String = room.chars().take(64).collect();
            warn_limited!(self.refusals.stray, "server: {sid}: message for room {room:?} it is not in; ignored");
            return;
        };
        let to = args.get(2).and_then(Value::as_str);
        self.count(ServerMetrics::relayed);
        let members = rooms.members.get(room).map(Vec::as_slice).unwrap_or_default();
        let mut ended = Vec::new();
        for member in members.iter().filter(|m| m.id != *id && to.is_none_or(|to| to == m.id)) {
            match &member.whep {
                Some(session) => {
                    if let whep::Delivered::Ended = session.deliver(data) {
                        ended.push(member.id.clone());
                    }
                }
                None => member.emit("message", &(room, data, id.as_str())),
            }
        }
        for whep_id in ended {
            remove_member(&mut rooms, room, &whep_id, "the camera ended its WHEP session");
        }
    }

    /// Removes the socket from its room and tells the others (`bye`);
    /// returns the room and the id it had there.
    fn leave(&self, socket: &SocketRef, why: &str) -> Option<(String, String)> {
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let (room, id) = rooms.room_of.remove(&socket.id.to_string())?;
        remove_member(&mut rooms, &room, &id, why);
        self.device_gone(&mut rooms, &room, &id, "left");
        Some((room, id))
    }

    /// A dropped socket: a member with a stable id keeps its place for
    /// [`REJOIN_GRACE`], anyone else leaves at once.
    fn disconnect(self: &Arc<Self>, socket: &SocketRef) {
        let sid = socket.id.to_string();
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let Some((room, id)) = rooms.room_of.remove(&sid) else { return };
        // Before the member's place is held or given up, so that the others
        // hear it at once either way.
        if let Some(member) = rooms.members.get_mut(&room).and_then(|ms| ms.iter_mut().find(|m| m.id == id)) {
            member.socket = None;
        }
        self.device_gone(&mut rooms, &room, &id, "lost its connection");
        let held = rooms.members.get_mut(&room).and_then(|members| members.iter_mut().find(|m| m.id == id));
        match held {
            Some(member) if id != sid => {
                member.socket = None;
                let epoch = member.epoch;
                info!("server: room {room}: {id} disconnected; holding its place for {}s", REJOIN_GRACE.as_secs());
                let hub = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(REJOIN_GRACE).await;
                    let mut rooms = lock_ignoring_poison(&hub.rooms);
                    let still_away = rooms
                        .members
                        .get(&room)
                        .and_then(|members| members.iter().find(|m| m.id == id))
                        .is_some_and(|m| m.socket.is_none() && m.epoch == epoch);
                    if still_away {
                        remove_member(&mut rooms, &room, &id, "did not come back");
                    }
                });
            }
            _ => remove_member(&mut rooms, &room, &id, "disconnected"),
        }
    }
}

fn remove_member(rooms: &mut Rooms, room: &str, id: &str, why: &str) {
    if let Some(members) = rooms.members.get_mut(room) {
        members.retain(|m| m.id != id);
        for other in members.iter() {
            other.emit("bye", &(room, id));
        }
        let count = members.len();
        if members.is_empty() {
            rooms.members.remove(room);
        }
        info!("server: room {room}: {id} left, {why} ({count} member(s))");
    }
}

const VIEWER_HTML: &str = include_str!("../../web/index.html");
const VIEWER_JS: &str = include_str!("../../web/viewer.js");
const SOCKETIO_LITE_JS: &str = include_str!("../../web/socketio-lite.js");
const SERVICE_WORKER_JS: &str = include_str!("../../web/sw.js");
const MANIFEST: &str = include_str!("../../web/manifest.webmanifest");
const ICON_SVG: &str = include_str!("../../web/icon.svg");

fn ice_servers_json(servers: &[IceServerConfig]) -> Value {
    let list: Vec<Value> = servers
        .iter()
        .map(|s| {
            let mut entry = json!({ "urls": s.urls });
            if let (Some(user), Some(cred)) = (&s.username, &s.credential) {
                entry["username"] = json!(user);
                entry["credential"] = json!(cred);
            }
            entry
        })
        .collect();
    json!({ "iceServers": list })
}

/// The HTTP app: socket.io at `/socket.io/`, the viewer page at `/`.
pub fn app(config: &ServerConfig) -> Router {
    app_with_ca(config, None)
}

/// [`app`], and with `ca_pem` (roomcam's own local CA, `--self-signed`)
/// served at `/roomcam-ca.crt` so that a phone can download and install it.
pub fn app_with_ca(config: &ServerConfig, ca_pem: Option<&[u8]>) -> Router {
    app_with(config, ca_pem, None)
}

/// [`app_with_ca`], counting into `metrics` (`[metrics] listen`).
pub fn app_with(config: &ServerConfig, ca_pem: Option<&[u8]>, metrics: Option<Arc<ServerMetrics>>) -> Router {
    let hub = Arc::new(Hub {
        rooms: Mutex::new(Rooms::default()),
        policy: RoomPolicy {
            default_capacity: config.capacity,
            rooms: config.rooms.iter().map(|r| (r.name.clone(), r.clone())).collect(),
        },
        turn: TurnMint::from_config(config),
        limits: Limits::new(config),
        refusals: RefusalLogs::default(),
        webhook: config.webhook.clone().map(|url| (url, config.webhook_format)),
        webhook_sender: Default::default(),
        metrics,
    });
    hub.count(|m| m.watch_rooms(Arc::new(HubOccupancy(Arc::downgrade(&hub)))));
    if let Some(url) = &config.webhook {
        info!("server: rooms' devices going offline and coming back are POSTed to {}", redacted(url));
    }
    let config_hub = hub.clone();
    let whep_hub = hub.clone();
    let max_bytes = config.max_message_bytes;
    let (layer, io) = SocketIo::builder()
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .max_payload(max_bytes as u64)
        .ws_max_message_size(max_bytes)
        .ws_max_frame_size(max_bytes)
        .ws_read_buffer_size(WS_READ_BUFFER)
        .build_layer();
    let guard_hub = hub.clone();
    // The handlers must be in place before the client hears the namespace
    // CONNECT, because every client emits `join` right on CONNECT. socketioxide
    // sends CONNECT from a spawned task *before* calling the connect handler,
    // so a handler that registers events could lose that race (seen as "no
    // joined within 10s" under load). Connect middleware runs before CONNECT
    // is sent: events are registered there, and the handler itself is empty.
    // The handlers then wait for the socket to count as connected, which
    // socketioxide marks only *after* sending CONNECT: an event handled in
    // between could not emit its answer (seen: a `join` admitted to the
    // room whose `joined` was silently dropped).
    let register_events = move |socket: SocketRef| {
        let address = client_address(&hub.limits, socket.req_parts());
        if !hub.limits.admit_connection(address) {
            warn_limited!(
                hub.refusals.crowded,
                "server: {} from {address}: refused, {} connections from {address} already (max-connections-per-address)",
                socket.id,
                hub.limits.max_connections_per_address
            );
            hub.count(|m| m.refused(Refused::TooManyConnections));
            return std::future::ready(Err(Refusal::TooManyConnections));
        }
        hub.count(ServerMetrics::connected);
        let slot = Arc::new(ConnectionSlot { hub: hub.clone(), address });
        // socketioxide runs every event handler as its own spawned task, so
        // two events of one socket can be handled in either order (seen: a
        // viewer's candidate relayed before its offer, and the device
        // dropping it as "for no peer"). Socket.io promises order per
        // socket, so the handlers only queue, synchronously and in arrival
        // order, and one task per socket handles the queue.
        let (inbox, queue) = tokio::sync::mpsc::unbounded_channel::<Inbound>();
        tokio::spawn(handle_in_order(hub.clone(), socket.clone(), queue, address));
        let budget = Arc::new(MessageBudget::new(hub.clone()));
        let with_args: [(&'static str, fn(Vec<Value>) -> Inbound); 2] =
            [("join", Inbound::Join), ("message", Inbound::Message)];
        for (event, inbound) in with_args {
            let (inbox, budget) = (inbox.clone(), budget.clone());
            socket.on(event, move |socket: SocketRef, TryData::<Args>(args)| {
                if budget.allows(&socket, address) {
                    let _ = inbox.send(inbound(args.unwrap_or_default().0));
                }
                std::future::ready(())
            });
        }
        let (on_leave, leave_budget) = (inbox.clone(), budget.clone());
        socket.on("leave", move |socket: SocketRef| {
            if leave_budget.allows(&socket, address) {
                let _ = on_leave.send(Inbound::Leave);
            }
            std::future::ready(())
        });
        // Events no handler takes cost the sender as much as any other.
        socket.on_fallback(move |socket: SocketRef| {
            budget.allows(&socket, address);
            std::future::ready(())
        });
        socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
            log_disconnect(&slot.hub, &socket, slot.address, reason);
            let _ = inbox.send(Inbound::Disconnect);
            std::future::ready(())
        });
        std::future::ready(Ok(()))
    };
    io.ns("/", (async || {}).with(register_events));
    let static_ice_servers = ice_servers_json(&config.viewer_ice_servers);
    let mut router = Router::new();
    if let Some(ca) = ca_pem {
        let ca = bytes::Bytes::copy_from_slice(ca);
        router = router.route(
            "/roomcam-ca.crt",
            get(move || {
                let body = ca.clone();
                async move { ([(header::CONTENT_TYPE, "application/x-x509-ca-cert")], body) }
            }),
        );
    }
    router
        .merge(whep::routes(whep_hub))
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], VIEWER_HTML) }))
        .route("/viewer.js", get(|| async { javascript(VIEWER_JS) }))
        .route("/socketio-lite.js", get(|| async { javascript(SOCKETIO_LITE_JS) }))
        // At the root: a service worker controls only the pages under its own path.
        .route("/sw.js", get(|| async { javascript(SERVICE_WORKER_JS) }))
        .route(
            "/manifest.webmanifest",
            get(|| async { ([(header::CONTENT_TYPE, "application/manifest+json")], MANIFEST) }),
        )
        .route("/icon.svg", get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], ICON_SVG) }))
        .route(
            "/config.json",
            get(move |request: axum::extract::Request| {
                let mut body = static_ice_servers.clone();
                let hub = config_hub.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    let query =
                        Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
                    // Never from the query string: URLs end up in logs and Referers.
                    let bearer = bearer(&parts.headers);
                    let room = query.get("room").map(String::as_str);
                    let address = client_address(&hub.limits, &parts);
                    if bearer.is_some() && hub.turn.is_some() && room.and_then(|r| hub.policy.token(r)).is_some() {
                        tokio::time::sleep(hub.limits.token_delay(address)).await;
                    }
                    let minted = hub.config_turn(room, bearer, query.get("member").map(String::as_str), address);
                    if let (Some(minted), Some(list)) = (minted, body["iceServers"].as_array_mut()) {
                        list.push(minted.to_json());
                    }
                    // Credentials must not sit in a cache.
                    (
                        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
                        body.to_string(),
                    )
                }
            }),
        )
        .layer(layer)
        .layer(axum::middleware::from_fn(move |request, next| guard_socketio(guard_hub.clone(), request, next)))
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("too many connections from this address")]
    TooManyConnections,
}

/// One counted connection of an address, held by the socket's disconnect
/// handler: the count drops with the socket, however it ends.
struct ConnectionSlot {
    hub: Arc<Hub>,
    address: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.hub.limits.release_connection(self.address);
        self.hub.count(ServerMetrics::disconnected);
    }
}

/// A connection's `max-messages-per-second`: over it, it is disconnected.
struct MessageBudget {
    bucket: Mutex<crate::signaling::limits::TokenBucket>,
    hub: Arc<Hub>,
}

impl MessageBudget {
    fn new(hub: Arc<Hub>) -> MessageBudget {
        MessageBudget { bucket: Mutex::new(hub.limits.message_budget()), hub }
    }

    fn allows(&self, socket: &SocketRef, address: IpAddr) -> bool {
        if lock_ignoring_poison(&self.bucket).take() {
            return true;
        }
        // Only the first event over the budget gets here while connected.
        if socket.connected() {
            warn_limited!(
                self.hub.refusals.flooding,
                "server: {} from {address}: disconnected, over {} messages a second (max-messages-per-second)",
                socket.id,
                self.hub.limits.max_messages_per_second
            );
            self.hub.count(|m| m.refused(Refused::Flooding));
            let _ = socket.clone().disconnect();
        }
        false
    }
}

/// The client's address for `parts`; unknown when the app is served without
/// connect info (then all such clients share one address's limits).
fn client_address(limits: &Limits, parts: &axum::http::request::Parts) -> IpAddr {
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<PeerAddr>>().map(|info| info.0.0);
    limits.client_address(peer, &parts.headers).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Refuses socket.io requests from pages outside `allowed-origins`, and new
/// sessions from an address that has its `max-connections-per-address`,
/// before Engine.IO opens a session for them.
async fn guard_socketio(
    hub: Arc<Hub>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !request.uri().path().starts_with("/socket.io") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let address = client_address(&hub.limits, &parts);
    if let Some(why) = hub.limits.origin_refusal(&parts.headers) {
        warn_limited!(hub.refusals.foreign, "server: connection from {address} refused: {why}");
        hub.count(|m| m.refused(Refused::Origin));
        return (axum::http::StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let new_session = !parts.uri.query().unwrap_or_default().split('&').any(|p| p.starts_with("sid="));
    if new_session && hub.limits.connections_full(address) {
        warn_limited!(
            hub.refusals.crowded,
            "server: connection from {address} refused, {} connections from {address} already (max-connections-per-address)",
            hub.limits.max_connections_per_address
        );
        hub.count(|m| m.refused(Refused::TooManyConnections));
        return (axum::http::StatusCode::TOO_MANY_REQUESTS, "too many connections from this address\n").into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

/// A connection that ended other than by its own choice says why.
fn log_disconnect(hub: &Hub, socket: &SocketRef, address: IpAddr, reason: DisconnectReason) {
    match reason {
        DisconnectReason::PacketParsingError => warn_limited!(
            hub.refusals.garbage,
            "server: {} from {address}: disconnected, it sent what is not socket.io",
            socket.id
        ),
        // Each costs its client a whole handshake: not worth limiting, and
        // the line for one client must not hide another's.
        DisconnectReason::TransportError => info!(
            "server: {} from {address}: connection ended abruptly (lost, or it sent a message over \
             max-message-bytes {})",
            socket.id, hub.limits.max_message_bytes
        ),
        DisconnectReason::HeartbeatTimeout => info!("server: {} from {address}: no pong in time; closed", socket.id),
        _ => {}
    }
}

/// One socket's events, in the order they arrived.
enum Inbound {
    Join(Vec<Value>),
    Message(Vec<Value>),
    Leave,
    Disconnect,
}

async fn handle_in_order(
    hub: Arc<Hub>,
    socket: SocketRef,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Inbound>,
    address: IpAddr,
) {
    let mut connected = false;
    let mut rooms_tried = HashSet::new();
    // The member this socket was admitted as, and when its TURN credentials
    // are due for renewal: the renewal is one more event of this task, so it
    // never overtakes the socket's own events (a `leave` handled first
    // stops it).
    let mut turn_refresh: Option<(Admitted, tokio::time::Instant)> = None;
    loop {
        let refresh_due = turn_refresh.as_ref().map(|(_, due)| *due);
        let event = tokio::select! {
            event = queue.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = sleep_until_some(refresh_due) => {
                if let Some((admitted, _)) = turn_refresh.take()
                    && hub.still_member(&socket, &admitted)
                {
                    turn_refresh = hub
                        .send_turn(&socket, &admitted.room, &admitted.id, "renewed")
                        .map(|due| (admitted, due));
                }
                continue;
            }
        };
        if !connected && !matches!(event, Inbound::Disconnect) {
            connected = until_connected(&socket).await;
            if !connected {
                continue;
            }
        }
        match event {
            Inbound::Join(args) => {
                let room = args.first().and_then(Value::as_str).unwrap_or_default();
                if !rooms_tried.contains(room) && rooms_tried.len() >= hub.limits.max_rooms_per_connection {
                    warn!(
                        "server: {} from {address}: disconnected, tried more than {} rooms (max-rooms-per-connection)",
                        socket.id, hub.limits.max_rooms_per_connection
                    );
                    let _ = socket.clone().disconnect();
                    continue;
                }
                rooms_tried.insert(room.to_owned());
                if hub.policy.token(room).is_some() {
                    // Waiting here holds back this socket's events only.
                    tokio::time::sleep(hub.limits.token_delay(address)).await;
                }
                if let Some(admitted) = hub.join(&socket, &args, address) {
                    turn_refresh =
                        hub.send_turn(&socket, &admitted.room, &admitted.id, "sent").map(|due| (admitted, due));
                }
            }
            Inbound::Message(args) => hub.relay(&socket, &args),
            Inbound::Leave => {
                turn_refresh = None;
                if let Some((room, id)) = hub.leave(&socket, "by request") {
                    let _ = socket.emit("leaved", &(room.as_str(), id.as_str()));
                }
            }
            // Its task ends with the socket: it holds the socket, whose
            // handlers hold this queue.
            Inbound::Disconnect => {
                hub.disconnect(&socket);
                return;
            }
        }
    }
}

async fn sleep_until_some(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Waits (briefly: socketioxide sets the flag right after sending CONNECT)
/// until the socket may emit; false if it never does.
async fn until_connected(socket: &SocketRef) -> bool {
    for _ in 0..1000 {
        if socket.connected() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    warn!("server: {}: never finished connecting; event ignored", socket.id);
    false
}

/// A request's `Authorization: Bearer` token (a room's token: `/config.json`, WHEP).
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn javascript(body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body)
}

/// Binds first, so the caller learns at once whether the address is usable.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// Plain HTTP: [`serve_tls`] without TLS.
pub async fn serve(
    listener: TcpListener,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_tls(listener, config, None, shutdown).await
}

/// Serves the app on `listener`, over TLS when `tls` is given (HTTPS and WSS
/// on the same port, the certificate reloaded as [`ServerTls::watch`] says).
pub async fn serve_tls(
    listener: TcpListener,
    config: &ServerConfig,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = app_with_ca(config, tls.as_ref().and_then(|t| t.ca_pem()));
    serve_router(listener, app, tls, shutdown).await
}

/// Serves an [`app`] (several listeners may share one, and so its rooms).
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    match tls {
        None => axum::serve(listener, app.into_make_service_with_connect_info::<PeerAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServerError::Serve),
        Some(tls) => {
            let watcher = tokio::spawn(tls.clone().watch());
            let listener = TlsListener::new(listener, tls.rustls_config()).map_err(ServerError::Serve)?;
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<PeerAddr>())
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ServerError::Serve);
            watcher.abort();
            served
        }
    }
}
