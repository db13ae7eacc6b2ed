//! A server that bad clients cannot hurt (issue 10 points 5 and 6): real
//! `roomcam serve` and `roomcam run` processes, a webrtc-rs viewer decoding
//! the device's H.264 in room "home", and hand-driven socket.io clients,
//! each from an address of its own (all of 127.0.0.0/8 is this host), that
//! send 10 MB frames, flood 1000 messages a second, open more connections
//! than `max-connections-per-address`, send random bytes, hop rooms, come
//! from a foreign page and guess the token of another room. Each is refused
//! or disconnected with a log line that names its address (never the token
//! tried); meanwhile the members of "home" keep their connections and ids
//! and a viewer that joins during the flood is admitted and gets video.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, free_port, roomcam_run, roomcam_serve};
use futures_util::{SinkExt, StreamExt};
use room_viewer::RoomViewer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use viewer::ViewerOptions;

const LIMIT_CONNECTIONS: usize = 4;
const LIMIT_RATE: u32 = 50;
const LIMIT_ROOMS: usize = 3;
const VAULT_TOKEN: &str = "vault-secret-token";

const BIG_FRAME_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const FLOOD_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const MANY_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const GARBAGE_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const GUESSER_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const HOPPER_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
const FOREIGN_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);

fn serve_config() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcam-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ncapacity = 4\nmax-connections-per-address = {LIMIT_CONNECTIONS}\n\
             max-messages-per-second = {LIMIT_RATE}\nmax-rooms-per-connection = {LIMIT_ROOMS}\n\
             allowed-origins = [\"https://cam.example.org\"]\n\
             [[server.rooms]]\nname = \"vault\"\ntoken = \"{VAULT_TOKEN}\"\n"
        ),
    )
    .unwrap();
    path
}

/// What a raw client saw next.
#[derive(Debug, PartialEq)]
enum Next {
    Text(String),
    /// The server ended the connection (close frame, EOF or reset).
    Closed,
    Timeout,
}

/// A socket.io 4 client over WebSocket, driven by hand.
struct Raw {
    ws: WebSocketStream<TcpStream>,
}

async fn tcp_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("tcp connect")
}

impl Raw {
    /// Opens a socket.io session from `from` and connects the namespace;
    /// `Err` says how the server refused.
    async fn connect(port: u16, from: Ipv4Addr, origin: Option<&str>) -> Result<Raw, String> {
        let mut request =
            format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket").into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        let tcp = tcp_from(from, port).await;
        let (ws, _) = tokio_tungstenite::client_async(request, tcp).await.map_err(|e| e.to_string())?;
        let mut raw = Raw { ws };
        match raw.next(Duration::from_secs(10)).await {
            Next::Text(open) if open.starts_with('0') => {}
            other => return Err(format!("no open packet: {other:?}")),
        }
        raw.send("40").await;
        match raw.next(Duration::from_secs(10)).await {
            Next::Text(t) if t.starts_with("40") => Ok(raw),
            other => Err(format!("namespace refused: {other:?}")),
        }
    }

    async fn send(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    async fn emit(&mut self, args: serde_json::Value) -> bool {
        self.send(&format!("42{args}")).await
    }

    /// The next text packet, answering pings on the way.
    async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Timeout,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Next::Closed,
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Ok(Some(Ok(Message::Text(t)))) => return Next::Text(t.as_str().to_owned()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Whether the server cut this client off within `within`: its
    /// namespace disconnected (`41`) or the connection closed.
    async fn cut_off_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.next(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                Next::Closed => return true,
                Next::Text(t) if t.starts_with("41") => return true,
                Next::Text(_) => {}
                Next::Timeout => return false,
            }
        }
    }

    /// Waits for a room event named `name`; `None` on timeout or close.
    async fn expect_event(&mut self, name: &str, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.next(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                Next::Text(t) if t.starts_with(&format!("42[\"{name}\"")) => return Some(t),
                Next::Text(_) => {}
                Next::Closed | Next::Timeout => return None,
            }
        }
    }
}

/// Deterministic noise (xorshift), so that a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Floods from FLOOD_FROM, connection after connection, until `stop`: each
/// connection joins a room of its own and sends a message every
/// millisecond; returns how many connections were cut off (each must be,
/// within 5 s).
async fn flood(port: u16, stop: Arc<AtomicBool>, cuts: Arc<AtomicU64>) {
    let candidate = serde_json::json!({"type": "candidate", "label": 0, "id": "0",
        "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host"});
    while !stop.load(Ordering::Relaxed) {
        let Ok(raw) = Raw::connect(port, FLOOD_FROM, None).await else {
            // The previous connection's count may not be released yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (mut sink, mut stream) = raw.ws.split();
        let _ = sink.send(Message::text(format!("42{}", serde_json::json!(["join", "flood"])))).await;
        let message = Message::text(format!("42{}", serde_json::json!(["message", "flood", candidate])));
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for _ in 0..10_000 {
                tick.tick().await;
                if sink.send(message.clone()).await.is_err() {
                    break;
                }
            }
        });
        let cut = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(t)) if t.as_str().starts_with("41") => return,
                    Ok(Message::Close(_)) | Err(_) => return,
                    _ => {}
                }
            }
        })
        .await;
        sender.abort();
        assert!(cut.is_ok(), "a client sending 1000 messages a second was not cut off within 5 s");
        cuts.fetch_add(1, Ordering::Relaxed);
    }
}

/// 10 MB frames from BIG_FRAME_FROM until `stop`: each connection must be closed.
async fn big_frames(port: u16, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    let payload = format!("42[\"message\",\"home\",\"{}\"]", "A".repeat(10 * 1024 * 1024));
    while !stop.load(Ordering::Relaxed) && closed.load(Ordering::Relaxed) < 3 {
        let Ok(mut raw) = Raw::connect(port, BIG_FRAME_FROM, None).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), raw.ws.send(Message::text(payload.clone()))).await;
        assert!(raw.cut_off_within(Duration::from_secs(10)).await, "a 10 MB frame did not end its connection");
        closed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// More connections from MANY_FROM than the limit: the one over it is
/// refused; once one closes, a new one gets in.
async fn too_many_connections(port: u16) {
    let mut open = Vec::new();
    for n in 0..LIMIT_CONNECTIONS {
        open.push(Raw::connect(port, MANY_FROM, None).await.unwrap_or_else(|e| panic!("connection {n} refused: {e}")));
    }
    let over = Raw::connect(port, MANY_FROM, None).await;
    assert!(over.is_err(), "connection {} from one address was admitted", LIMIT_CONNECTIONS + 1);
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Raw::connect(port, MANY_FROM, None).await {
            Ok(raw) => {
                open.push(raw);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no connection admitted after one closed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Random bytes from GARBAGE_FROM: on the bare TCP port, as a WebSocket
/// binary frame and as a socket.io text packet; each connection is closed.
async fn garbage(port: u16) {
    let mut tcp = tcp_from(GARBAGE_FROM, port).await;
    let _ = tcp.write_all(&noise(7, 4096)).await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "random bytes on the HTTP port: the connection stayed open");

    let mut raw = Raw::connect(port, GARBAGE_FROM, None).await.expect("garbage client connects");
    let _ = raw.ws.send(Message::binary(noise(11, 512))).await;
    assert!(raw.cut_off_within(Duration::from_secs(10)).await, "a random binary frame did not end the connection");

    let mut raw = Raw::connect(port, GARBAGE_FROM, None).await.expect("garbage client connects");
    let text: String = noise(13, 256).iter().map(|b| char::from(b'!' + b % 90)).collect();
    let _ = raw.send(&format!("4{text}")).await;
    assert!(raw.cut_off_within(Duration::from_secs(10)).await, "a random socket.io packet did not end the connection");
}

/// A connection from HOPPER_FROM that tries room after room is disconnected
/// past the limit; a bad room name is refused.
async fn room_hopping(port: u16) {
    let mut raw = Raw::connect(port, HOPPER_FROM, None).await.expect("hopper connects");
    raw.emit(serde_json::json!(["join", "no/such room"])).await;
    for n in 1..LIMIT_ROOMS {
        raw.emit(serde_json::json!(["join", format!("hop{n}")])).await;
        assert!(raw.expect_event("joined", Duration::from_secs(10)).await.is_some(), "hop{n} not joined");
    }
    raw.emit(serde_json::json!(["join", "one-too-many"])).await;
    assert!(raw.cut_off_within(Duration::from_secs(10)).await, "a connection hopping rooms was not disconnected");
}

/// A page of another site (FOREIGN_FROM) is refused; one from an allowed origin is not.
async fn foreign_origin(port: u16) {
    let foreign = Raw::connect(port, FOREIGN_FROM, Some("https://evil.example")).await;
    assert!(foreign.is_err(), "a page from https://evil.example connected");
    Raw::connect(port, FOREIGN_FROM, Some("https://cam.example.org")).await.expect("an allowed origin connects");
}

/// Wrong tokens from GUESSER_FROM: the first three answered at once, then
/// each later one waits (1 s, 2 s, 4 s); returns how long each answer took.
async fn guess_tokens(port: u16) -> Vec<Duration> {
    let mut raw = Raw::connect(port, GUESSER_FROM, None).await.expect("guesser connects");
    let mut took = Vec::new();
    for n in 1..=6 {
        let started = Instant::now();
        raw.emit(serde_json::json!(["join", "vault", {"token": format!("guess-{n}")}])).await;
        let answer = raw.expect_event("unauthorized", Duration::from_secs(30)).await;
        assert!(answer.is_some(), "wrong token {n}: no `unauthorized` within 30 s");
        took.push(started.elapsed());
    }
    took
}

/// The longest time `viewer` decoded no new frame while `stop` was unset,
/// and how many frames it decoded meanwhile.
async fn watch_frames(viewer: Arc<viewer::Viewer>, stop: Arc<AtomicBool>) -> (Duration, u64) {
    let first = viewer.stats().frames_decoded;
    let (mut last, mut since, mut longest) = (first, Instant::now(), Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = viewer.stats().frames_decoded;
        if now != last {
            last = now;
            since = Instant::now();
        }
        longest = longest.max(since.elapsed());
    }
    (longest, last - first)
}

fn lines_with(server: &Proc, all: &[&str]) -> Vec<String> {
    server.lines().into_iter().filter(|l| all.iter().all(|part| l.contains(part))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_clients_are_cut_off_while_another_room_streams_on() {
    let port = free_port();
    let server = roomcam_serve(port, Some(&serve_config()));
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "home", &[]);
    device.wait_in_room();
    let watching = RoomViewer::join(&url, "home", ViewerOptions::default()).await;
    watching.wait_frames(25, Duration::from_secs(30)).await;

    let stop_watch = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn(watch_frames(watching.viewer.clone(), stop_watch.clone()));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let (cuts, big_closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooding = tokio::spawn(flood(port, stop_flood.clone(), cuts.clone()));
    let big = tokio::spawn(big_frames(port, stop_flood.clone(), big_closed.clone()));
    let guessing = tokio::spawn(guess_tokens(port));
    let others = tokio::spawn(async move {
        too_many_connections(port).await;
        garbage(port).await;
        room_hopping(port).await;
        foreign_origin(port).await;
    });

    // A new viewer, during the flood, is admitted and gets video.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cuts.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the flood never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newcomer = RoomViewer::join(&url, "home", ViewerOptions::default()).await;
    newcomer.wait_frames(10, Duration::from_secs(30)).await;
    assert!(!flooding.is_finished(), "the flood ended before the newcomer got video");

    others.await.expect("the other bad clients were handled");
    let took = guessing.await.expect("the token guesser was answered");
    stop_flood.store(true, Ordering::Relaxed);
    flooding.await.expect("every flooding connection was cut off");
    big.await.expect("every 10 MB frame ended its connection");
    stop_watch.store(true, Ordering::Relaxed);
    let (longest_gap, frames) = watch.await.unwrap();
    eprintln!(
        "abuse: {} flooding connections cut off, {} 10 MB frames refused; wrong-token answers took {:?}; \
         the other room's viewer decoded {frames} frames meanwhile, its longest time without a new frame {longest_gap:?}",
        cuts.load(Ordering::Relaxed),
        big_closed.load(Ordering::Relaxed),
        took
    );

    // Wrong tokens: later answers are slow; the log names room and address, never a token.
    assert!(took[4] >= Duration::from_millis(1500), "the 5th wrong token was answered at once: {took:?}");
    assert!(took[5] >= Duration::from_millis(3000), "the 6th wrong token was answered at once: {took:?}");
    let refusals = lines_with(&server, &["room vault", "127.0.0.6", "refused"]);
    assert_eq!(refusals.len(), 6, "{refusals:#?}");
    let leaked: Vec<String> =
        server.lines().into_iter().filter(|l| l.contains("guess-") || l.contains(VAULT_TOKEN)).collect();
    assert!(leaked.is_empty(), "a token in the server log: {leaked:#?}");

    // Each refusal or disconnection is logged with its address and its limit.
    for (what, parts) in [
        ("the flooder", &["127.0.0.3", "max-messages-per-second"][..]),
        ("the 10 MB frame", &["127.0.0.2", "max-message-bytes"]),
        ("the connection over the limit", &["127.0.0.4", "refused", "max-connections-per-address"]),
        ("the random bytes", &["127.0.0.5", "not socket.io"]),
        ("the bad room name", &["127.0.0.7", "join refused", "room name"]),
        ("the room hopper", &["127.0.0.7", "max-rooms-per-connection"]),
        ("the foreign page", &["127.0.0.8", "refused", "https://evil.example", "allowed-origins"]),
    ] {
        assert!(!lines_with(&server, parts).is_empty(), "no log line for {what} ({parts:?})");
    }

    // Room "home" never noticed: each member joined once, none left or came back.
    let home = lines_with(&server, &["room home:"]);
    assert_eq!(home.iter().filter(|l| l.contains(" joined (")).count(), 3, "{home:#?}");
    assert!(
        !home.iter().any(|l| l.contains("disconnected") || l.contains("is back") || l.contains(" left")),
        "a member of room home lost its connection: {home:#?}"
    );
    assert_eq!(device.count_lines(|l| l.contains("signaling: connection to")), 0, "the device reconnected");
    assert!(frames > 0, "the other room's viewer decoded nothing during the attacks");
    let before = watching.viewer.stats().frames_decoded;
    watching.wait_frames(before + 10, Duration::from_secs(10)).await;
}
