//! The device's socket.io client: WebSocket transport (tokio-tungstenite),
//! Engine.IO 3 and 4, pings both ways, reconnect with capped backoff.
//!
//! It turns frames into `RoomEvent`s for the session and carries the
//! session's requests out. No socket.io client crate speaks Engine.IO 3, and
//! the classic servers that the device must join do.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use log::{debug, info, warn};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::{self, Message};

use super::codec::{self, EngineIoVersion, OpenInfo, Packet};
use super::protocol::RoomEvent;
use super::turn_credentials::TurnCredentials;
use crate::config::ProtocolChoice;
use crate::util::Backoff;

/// The backoff between reconnects never exceeds this. Short, because a
/// server back after a restart should see its devices within about two
/// seconds (the viewers' media never stopped, but their rooms did); the
/// jitter spreads a fleet's reconnects over the second half of it.
pub const RECONNECT_CAP: Duration = Duration::from_millis(1500);
const RECONNECT_BASE: Duration = Duration::from_millis(250);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub server: String,
    pub protocol: ProtocolChoice,
    pub extra_ca: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// Connected to the default namespace: the room may be joined.
    Connected {
        version: EngineIoVersion,
    },
    Disconnected {
        reason: String,
    },
    Room(RoomEvent),
    /// roomcam's server minted TURN credentials for us (the `turn` event).
    Turn {
        room: String,
        credentials: TurnCredentials,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClientCommand {
    /// Sent if connected, dropped otherwise (the room is rebuilt on reconnect).
    Emit { name: String, args: Vec<Value> },
    /// Send what is queued, close the socket and stop.
    Close,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL {0:?}")]
    BadUrl(String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tungstenite::Error),
    #[error("the server refused Engine.IO {0:?} (HTTP {1})")]
    VersionRefused(EngineIoVersion, u16),
    #[error("no handshake from the server within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("bad handshake: {0}")]
    BadHandshake(String),
    #[error("the server refused the namespace: {0}")]
    NamespaceRefused(Value),
    #[error("no ping from the server for {0:?}: connection presumed dead")]
    PingTimeout(Duration),
    #[error("the server closed the connection")]
    ClosedByServer,
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Builds `ws[s]://host[:port]/socket.io/?EIO=N&transport=websocket` from
/// the configured http(s):// or ws(s):// URL (a path prefix is kept).
pub fn websocket_url(server: &str, version: EngineIoVersion) -> Result<String, ClientError> {
    let mut url = url::Url::parse(server).map_err(|_| ClientError::BadUrl(server.to_owned()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(ClientError::BadUrl(server.to_owned())),
    };
    url.set_scheme(scheme).map_err(|_| ClientError::BadUrl(server.to_owned()))?;
    let mut path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/socket.io") {
        path.push_str("/socket.io");
    }
    url.set_path(&format!("{path}/"));
    url.set_query(Some(&format!("EIO={}&transport=websocket", version.query_value())));
    Ok(url.to_string())
}

/// The pacing of reconnects: exponential from 250 ms with jitter, capped
/// at [`RECONNECT_CAP`].
pub fn reconnect_backoff() -> Backoff {
    Backoff::new(RECONNECT_BASE, RECONNECT_CAP).with_jitter()
}

/// Runs until `ClientCommand::Close` or until the command sender is dropped.
pub async fn run(
    settings: ClientSettings,
    events: mpsc::UnboundedSender<ClientEvent>,
    mut commands: mpsc::UnboundedReceiver<ClientCommand>,
) {
    let tls = match tls_connector(&settings) {
        Ok(tls) => tls,
        Err(e) => {
            warn!("signaling: {e}; using the default TLS setup");
            None
        }
    };
    let mut backoff = reconnect_backoff();
    let mut version = initial_version(settings.protocol);
    loop {
        let outcome = connect_and_serve(&settings, version, tls.clone(), &events, &mut commands).await;
        match outcome {
            Ok(Ending::Closed) => return,
            Ok(Ending::Lost(reason)) => {
                // It worked until now: start the backoff from the bottom.
                backoff.reset();
                let _ = events.send(ClientEvent::Disconnected { reason: reason.clone() });
                warn!("signaling: connection to {} lost: {reason}", settings.server);
            }
            Err(ClientError::VersionRefused(EngineIoVersion::V4, status))
                if settings.protocol == ProtocolChoice::Auto =>
            {
                info!("signaling: server refused Engine.IO 4 (HTTP {status}), trying Engine.IO 3 (socket.io 2.x)");
                version = EngineIoVersion::V3;
                continue;
            }
            Err(e) => warn!("signaling: {}: {e}", settings.server),
        }
        version = initial_version(settings.protocol);
        let delay = backoff.next_delay();
        info!("signaling: reconnecting in {} ms", delay.as_millis());
        let wake = Instant::now() + delay;
        // Keep draining commands while waiting, so Close is honoured promptly.
        loop {
            tokio::select! {
                _ = sleep_until(wake) => break,
                command = commands.recv() => match command {
                    None | Some(ClientCommand::Close) => return,
                    Some(ClientCommand::Emit { name, .. }) => {
                        debug!("signaling: not connected, dropping {name:?}");
                    }
                },
            }
        }
    }
}

fn initial_version(choice: ProtocolChoice) -> EngineIoVersion {
    match choice {
        ProtocolChoice::Eio3 => EngineIoVersion::V3,
        ProtocolChoice::Auto | ProtocolChoice::Eio4 => EngineIoVersion::V4,
    }
}

enum Ending {
    Closed,
    Lost(String),
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_and_serve(
    settings: &ClientSettings,
    requested: EngineIoVersion,
    tls: Option<tokio_tungstenite::Connector>,
    events: &mpsc::UnboundedSender<ClientEvent>,
    commands: &mut mpsc::UnboundedReceiver<ClientCommand>,
) -> Result<Ending, ClientError> {
    let url = websocket_url(&settings.server, requested)?;
    debug!("signaling: connecting to {url}");
    // Nagle off (`true`): over TLS each message goes out as records that
    // would otherwise wait for the server's delayed ACK (40 ms on Linux).
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, tls);
    let (mut socket, _) = match timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Err(_) => return Err(ClientError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
        Ok(Err(tungstenite::Error::Http(response))) if response.status().as_u16() == 400 => {
            return Err(ClientError::VersionRefused(requested, 400));
        }
        Ok(result) => result?,
    };

    let open = read_open(&mut socket).await?;
    // An Engine.IO 3 server may accept EIO=4 and then speak 3: it announces
    // no maxPayload and sends the namespace CONNECT unasked.
    let version = if requested == EngineIoVersion::V4 && open.max_payload.is_none() {
        info!("signaling: server speaks Engine.IO 3 (socket.io 2.x)");
        EngineIoVersion::V3
    } else {
        requested
    };
    let mut link = Link::new(version, &open);
    if version == EngineIoVersion::V4 {
        socket.send(Message::text(codec::CONNECT)).await?;
    }
    let mut connected = false;
    match serve(settings, version, &mut socket, &mut link, &mut connected, events, commands).await {
        // Once the room could be joined, any failure is a lost connection the
        // session must hear about; before that it is just a failed attempt.
        Err(e) if connected => Ok(Ending::Lost(e.to_string())),
        other => other,
    }
}

async fn serve(
    settings: &ClientSettings,
    version: EngineIoVersion,
    socket: &mut Socket,
    link: &mut Link,
    connected: &mut bool,
    events: &mpsc::UnboundedSender<ClientEvent>,
    commands: &mut mpsc::UnboundedReceiver<ClientCommand>,
) -> Result<Ending, ClientError> {
    let connect_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let deadline = if *connected { link.deadline() } else { connect_deadline.min(link.deadline()) };
        tokio::select! {
            frame = socket.next() => {
                let text = match frame {
                    None => return Ok(Ending::Lost("connection closed".into())),
                    Some(Err(e)) => return Ok(Ending::Lost(e.to_string())),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) => return Ok(Ending::Lost("closed by the server".into())),
                    Some(Ok(_)) => continue,
                };
                let packet = match codec::decode(&text) {
                    Ok(packet) => packet,
                    Err(e) => {
                        warn!("signaling: dropping a frame that does not parse ({e}): {}", preview(&text));
                        continue;
                    }
                };
                match packet {
                    Packet::Ping(payload) => {
                        link.heard_from_server();
                        socket.send(Message::text(format!("{}{payload}", codec::PONG))).await?;
                    }
                    Packet::Pong(_) => link.heard_from_server(),
                    Packet::Connect { .. } => {
                        if !*connected {
                            *connected = true;
                            link.heard_from_server();
                            info!("signaling: connected to {} (Engine.IO {:?})", settings.server, version);
                            let _ = events.send(ClientEvent::Connected { version });
                        }
                    }
                    Packet::ConnectError(reason) => return Err(ClientError::NamespaceRefused(reason)),
                    Packet::Disconnect | Packet::Close => {
                        return Ok(Ending::Lost("the server ended the session".into()));
                    }
                    Packet::Event { name, args } => {
                        link.heard_from_server();
                        if name == "turn" {
                            // Not a room event: the session core never sees it, the peers' settings do.
                            match TurnCredentials::from_event_args(&args) {
                                Ok((room, credentials)) => { let _ = events.send(ClientEvent::Turn { room, credentials }); }
                                Err(e) => warn!("signaling: dropping event \"turn\": {e}"),
                            }
                            continue;
                        }
                        match RoomEvent::from_socket_event(&name, &args) {
                            Ok(event) => { let _ = events.send(ClientEvent::Room(event)); }
                            Err(e) => warn!("signaling: dropping event {name:?}: {e}"),
                        }
                    }
                    Packet::Open(_) | Packet::Noop | Packet::Upgrade | Packet::Ignored => {}
                }
            }
            command = commands.recv() => match command {
                Some(ClientCommand::Emit { name, args }) => {
                    if *connected {
                        socket.send(Message::text(codec::encode_event(&name, &args))).await?;
                    } else {
                        debug!("signaling: not connected yet, dropping {name:?}");
                    }
                }
                None | Some(ClientCommand::Close) => {
                    let _ = socket.close(None).await;
                    return Ok(Ending::Closed);
                }
            },
            _ = sleep_until(deadline) => {
                if !*connected && Instant::now() >= connect_deadline {
                    return Err(ClientError::BadHandshake("no namespace CONNECT from the server".into()));
                }
                match link.on_timer() {
                    LinkAction::SendPing => socket.send(Message::text(codec::PING)).await?,
                    LinkAction::Dead(silence) => return Err(ClientError::PingTimeout(silence)),
                    LinkAction::Nothing => {}
                }
            }
        }
    }
}

async fn read_open(socket: &mut Socket) -> Result<OpenInfo, ClientError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let frame = timeout(deadline.saturating_duration_since(Instant::now()), socket.next())
            .await
            .map_err(|_| ClientError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?;
        match frame {
            None => return Err(ClientError::ClosedByServer),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => {
                return match codec::decode(&text) {
                    Ok(Packet::Open(open)) => Ok(open),
                    Ok(other) => Err(ClientError::BadHandshake(format!("expected open, got {other:?}"))),
                    Err(e) => Err(ClientError::BadHandshake(e.to_string())),
                };
            }
            Some(Ok(_)) => continue,
        }
    }
}

pub(crate) fn preview(text: &str) -> String {
    let mut cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// Liveness per Engine.IO version. v4: the server pings, we must hear from it
/// within pingInterval + pingTimeout. v3: we ping every pingInterval and must
/// hear a pong within pingTimeout (the protocol's own timeout).
struct Link {
    version: EngineIoVersion,
    interval: Duration,
    grace: Duration,
    last_heard: Instant,
    next_ping: Instant,
}

enum LinkAction {
    SendPing,
    Dead(Duration),
    Nothing,
}

impl Link {
    fn new(version: EngineIoVersion, open: &OpenInfo) -> Self {
        let interval = Duration::from_millis(open.ping_interval_ms.clamp(100, 600_000));
        let grace = interval + Duration::from_millis(open.ping_timeout_ms.clamp(100, 600_000));
        let now = Instant::now();
        Link { version, interval, grace, last_heard: now, next_ping: now + interval }
    }

    fn heard_from_server(&mut self) {
        self.last_heard = Instant::now();
    }

    fn deadline(&self) -> Instant {
        let dead_at = self.last_heard + self.grace;
        match self.version {
            EngineIoVersion::V3 => dead_at.min(self.next_ping),
            EngineIoVersion::V4 => dead_at,
        }
    }

    fn on_timer(&mut self) -> LinkAction {
        let now = Instant::now();
        let silence = now.saturating_duration_since(self.last_heard);
        if silence >= self.grace {
            return LinkAction::Dead(silence);
        }
        if self.version == EngineIoVersion::V3 && now >= self.next_ping {
            self.next_ping = now + self.interval;
            return LinkAction::SendPing;
        }
        LinkAction::Nothing
    }
}

fn tls_connector(settings: &ClientSettings) -> Result<Option<tokio_tungstenite::Connector>, ClientError> {
    let Some(extra_ca) = &settings.extra_ca else { return Ok(None) };
    let config = crate::util::client_config(Some(extra_ca)).map_err(ClientError::Tls)?;
    Ok(Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8080", EngineIoVersion::V4).unwrap(),
            "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("https://example.org/rooms/", EngineIoVersion::V3).unwrap(),
            "wss://example.org/rooms/socket.io/?EIO=3&transport=websocket"
        );
        assert_eq!(
            websocket_url("wss://example.org/socket.io", EngineIoVersion::V4).unwrap(),
            "wss://example.org/socket.io/?EIO=4&transport=websocket"
        );
        assert!(websocket_url("ftp://x", EngineIoVersion::V4).is_err());
        assert!(websocket_url("not a url", EngineIoVersion::V4).is_err());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut backoff = reconnect_backoff();
        for attempt in 0..40 {
            let d = backoff.next_delay();
            assert!(d <= RECONNECT_CAP, "attempt {attempt}: {d:?}");
            assert!(d >= RECONNECT_BASE / 2);
        }
        let late: Vec<_> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(late.iter().all(|d| *d >= RECONNECT_CAP / 2));
        assert!(late.iter().any(|d| *d != late[0]), "no jitter: {late:?}");
    }
}
