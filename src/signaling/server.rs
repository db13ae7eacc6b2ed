//! roomcam's own signaling server (`roomcam serve`): the room protocol of
//! `PROTOCOL.md` with roomcam's extensions (tokens, several viewers, `bye` on
//! disconnect), over socketioxide with Engine.IO 3 enabled so socket.io 2.x
//! and 4.x clients both connect. It also serves the viewer page.

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

struct Member {
    id: String,
    socket: SocketRef,
}

#[derive(Default)]
struct Rooms {
    members: HashMap<String, Vec<Member>>,
    /// socket id → the room it is in (one room per socket).
    room_of: HashMap<String, String>,
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
        let id = socket.id.to_string();
        let Some(room) = args.first().and_then(Value::as_str).filter(|r| valid_room_name(r)) else {
            warn!("server: {id}: join without a valid room name; ignored");
            return;
        };
        let token = args.get(1).and_then(|a| a.get("token")).and_then(Value::as_str);
        if let Some(secret) = self.policy.token(room)
            && token != Some(secret)
        {
            warn!("server: room {room}: {id} refused (bad or missing token)");
            let _ = socket.emit("unauthorized", &(room,));
            return;
        }
        self.leave(socket, "joins another room");
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let members = rooms.members.entry(room.to_owned()).or_default();
        if members.len() >= self.policy.capacity(room) {
            info!("server: room {room}: full, {id} refused");
            let _ = socket.emit("full", &(room, id.as_str()));
            return;
        }
        let _ = socket.emit("joined", &(room, id.as_str()));
        for other in members.iter() {
            let _ = other.socket.emit("otherjoin", &(room, id.as_str()));
        }
        members.push(Member { id: id.clone(), socket: socket.clone() });
        let count = members.len();
        rooms.room_of.insert(id.clone(), room.to_owned());
        info!("server: room {room}: {id} joined ({count} member(s))");
    }

    fn relay(&self, socket: &SocketRef, args: &[Value]) {
        let id = socket.id.to_string();
        let (Some(room), Some(data)) = (args.first().and_then(Value::as_str), args.get(1)) else {
            warn!("server: {id}: message without room and data; ignored");
            return;
        };
        let rooms = lock_ignoring_poison(&self.rooms);
        if rooms.room_of.get(&id).map(String::as_str) != Some(room) {
            warn!("server: {id}: message for room {room:?} it is not in; ignored");
            return;
        }
        let to = args.get(2).and_then(Value::as_str);
        let members = rooms.members.get(room).map(Vec::as_slice).unwrap_or_default();
        for member in members.iter().filter(|m| m.id != id && to.is_none_or(|to| to == m.id)) {
            let _ = member.socket.emit("message", &(room, data, id.as_str()));
        }
    }

    /// Removes the socket from its room and tells the others (`bye`).
    fn leave(&self, socket: &SocketRef, why: &str) -> Option<String> {
        let id = socket.id.to_string();
        let mut rooms = lock_ignoring_poison(&self.rooms);
        let room = rooms.room_of.remove(&id)?;
        if let Some(members) = rooms.members.get_mut(&room) {
            members.retain(|m| m.id != id);
            for other in members.iter() {
                let _ = other.socket.emit("bye", &(room.as_str(), id.as_str()));
            }
            let count = members.len();
            if members.is_empty() {
                rooms.members.remove(&room);
            }
            info!("server: room {room}: {id} left, {why} ({count} member(s))");
        }
        Some(room)
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
                if let Some(room) = hub.leave(&s, "by request") {
                    let _ = s.emit("leaved", &(room.as_str(), s.id.to_string().as_str()));
                }
            }
        });
        let on_disconnect = hub.clone();
        socket.on_disconnect(move |s: SocketRef| {
            let hub = on_disconnect.clone();
            async move {
                hub.leave(&s, "disconnected");
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
