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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use log::{info, warn};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tokio::net::TcpListener;

use crate::config::{IceServerConfig, RoomConfig, ServerConfig};
use crate::util::lock_ignoring_poison;

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
}

impl Member {
    fn emit(&self, event: &str, args: &impl serde::Serialize) {
        if let Some(socket) = &self.socket {
            let _ = socket.emit(event, args);
        }
    }
}

#[derive(Default)]
struct Rooms {
    members: HashMap<String, Vec<Member>>,
    /// socket id → the room it is in and its id there (one room per socket).
    room_of: HashMap<String, (String, String)>,
    next_epoch: u64,
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

struct Hub {
    rooms: Mutex<Rooms>,
    policy: RoomPolicy,
}

impl Hub {
    fn join(&self, socket: &SocketRef, args: &[Value]) {
        let sid = socket.id.to_string();
        let Some(room) = args.first().and_then(Value::as_str).filter(|r| valid_room_name(r)) else {
            warn!("server: {sid}: join without a valid room name; ignored");
            return;
        };
        let options = args.get(1);
        let token = options.and_then(|a| a.get("token")).and_then(Value::as_str);
        let member = options.and_then(|a| a.get("member")).and_then(Value::as_str);
        if member.is_some_and(|m| !crate::signaling::protocol::valid_member_id(m)) {
            warn!("server: {sid}: join with an invalid member id; using the socket id");
        }
        let id = member.filter(|m| crate::signaling::protocol::valid_member_id(m)).unwrap_or(&sid).to_owned();
        if let Some(secret) = self.policy.token(room)
            && token != Some(secret)
        {
            warn!("server: room {room}: {id} refused (bad or missing token)");
            let _ = socket.emit("unauthorized", &(room,));
            return;
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
            return;
        }
        let _ = socket.emit("joined", &(room, id.as_str()));
        for other in members.iter().filter(|m| m.id != id) {
            other.emit("otherjoin", &(room, id.as_str()));
        }
        let replaced = match back {
            // Its old socket, if still there, is a connection that died
            // unnoticed: the member now lives on this one.
            Some(i) => {
                std::mem::replace(&mut members[i], Member { id: id.clone(), socket: Some(socket.clone()), epoch })
                    .socket
                    .map(|old| old.id.to_string())
            }
            None => {
                members.push(Member { id: id.clone(), socket: Some(socket.clone()), epoch });
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
    }

    fn relay(&self, socket: &SocketRef, args: &[Value]) {
        let sid = socket.id.to_string();
        let (Some(room), Some(data)) = (args.first().and_then(Value::as_str), args.get(1)) else {
            warn!("server: {sid}: message without room and data; ignored");
            return;
        };
        let rooms = lock_ignoring_poison(&self.rooms);
        let Some((_, id)) = rooms.room_of.get(&sid).filter(|(r, _)| r == room) else {
            warn!("server: {sid}: message for room {room:?} it is not in; ignored");
            return;
        };
        let to = args.get(2).and_then(Value::as_str);
        let members = rooms.members.get(room).map(Vec::as_slice).unwrap_or_default();
        for member in members.iter().filter(|m| m.id != *id && to.is_none_or(|to| to == m.id)) {
            member.emit("message", &(room, data, id.as_str()));
        }
    }

    /// Removes the socket from its room and tells the others (`bye`);
    /// returns the room and the id it had there.
    fn leave(&self, socket: &SocketRef, why: &str) -> Option<(String, String)> {
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let (room, id) = rooms.room_of.remove(&socket.id.to_string())?;
        remove_member(&mut rooms, &room, &id, why);
        Some((room, id))
    }

    /// A dropped socket: a member with a stable id keeps its place for
    /// [`REJOIN_GRACE`], anyone else leaves at once.
    fn disconnect(self: &Arc<Self>, socket: &SocketRef) {
        let sid = socket.id.to_string();
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let Some((room, id)) = rooms.room_of.remove(&sid) else { return };
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

fn valid_room_name(room: &str) -> bool {
    !room.is_empty() && room.len() <= 128 && !room.chars().any(char::is_control)
}

const VIEWER_HTML: &str = include_str!("../../web/index.html");
const VIEWER_JS: &str = include_str!("../../web/viewer.js");
const SOCKETIO_LITE_JS: &str = include_str!("../../web/socketio-lite.js");

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
    let hub = Arc::new(Hub {
        rooms: Mutex::new(Rooms::default()),
        policy: RoomPolicy {
            default_capacity: config.capacity,
            rooms: config.rooms.iter().map(|r| (r.name.clone(), r.clone())).collect(),
        },
    });
    let (layer, io) = SocketIo::new_layer();
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
        let on_join = hub.clone();
        socket.on("join", move |s: SocketRef, TryData::<Args>(args)| {
            let hub = on_join.clone();
            async move {
                if until_connected(&s).await {
                    hub.join(&s, &args.unwrap_or_default().0)
                }
            }
        });
        let on_message = hub.clone();
        socket.on("message", move |s: SocketRef, TryData::<Args>(args)| {
            let hub = on_message.clone();
            async move {
                if until_connected(&s).await {
                    hub.relay(&s, &args.unwrap_or_default().0)
                }
            }
        });
        let on_leave = hub.clone();
        socket.on("leave", move |s: SocketRef| {
            let hub = on_leave.clone();
            async move {
                if !until_connected(&s).await {
                    return;
                }
                if let Some((room, id)) = hub.leave(&s, "by request") {
                    let _ = s.emit("leaved", &(room.as_str(), id.as_str()));
                }
            }
        });
        let on_disconnect = hub.clone();
        socket.on_disconnect(move |s: SocketRef| {
            let hub = on_disconnect.clone();
            async move {
                hub.disconnect(&s);
            }
        });
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    io.ns("/", (async || {}).with(register_events));
    let config_json = ice_servers_json(&config.viewer_ice_servers).to_string();
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], VIEWER_HTML) }))
        .route("/viewer.js", get(|| async { javascript(VIEWER_JS) }))
        .route("/socketio-lite.js", get(|| async { javascript(SOCKETIO_LITE_JS) }))
        .route(
            "/config.json",
            get(move || {
                let body = config_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .layer(layer)
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

fn javascript(body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body)
}

/// Binds first, so the caller learns at once whether the address is usable.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

pub async fn serve(
    listener: TcpListener,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = app(config);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)
}
