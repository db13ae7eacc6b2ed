//! The configuration file (TOML, kebab-case keys, unknown keys rejected).
//!
//! Every field has a default that works on a fresh board, so an empty file is
//! a valid config. Errors carry the line and column of the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::media::convert::PixelFormat;
use crate::signaling::limits;

/// `sysexits.h` EX_CONFIG: systemd is told not to restart on it.
pub const EXIT_CONFIG: i32 = 78;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub signaling: SignalingConfig,
    pub camera: CameraConfig,
    pub audio: AudioConfig,
    pub webrtc: WebRtcConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub alerts: AlertsConfig,
    pub metrics: MetricsConfig,
    /// A board profile (`board/profiles/NAME.toml`): its camera settings
    /// apply wherever this file sets none.
    pub board: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolChoice {
    /// Engine.IO 4 first, Engine.IO 3 when the server turns out to be socket.io 2.x.
    #[default]
    Auto,
    Eio3,
    Eio4,
}

/// A secret from the config (coturn's shared secret): compared and used,
/// never shown by `Debug`, which errors and debug logs print.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `Some("<redacted>")` / `None`, for hand-written `Debug`s of config
/// sections that hold a token as a plain string.
fn redacted_option(secret: &Option<String>) -> Option<Secret> {
    secret.as_ref().map(|_| Secret(String::new()))
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SignalingConfig {
    /// http(s):// or ws(s):// URL of the socket.io server.
    pub server: String,
    pub room: String,
    pub token: Option<String>,
    pub protocol: ProtocolChoice,
    /// Extra CA certificate (PEM) trusted for wss:// besides the system roots.
    pub extra_ca: Option<PathBuf>,
}

impl std::fmt::Debug for SignalingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalingConfig")
            .field("server", &self.server)
            .field("room", &self.room)
            .field("token", &redacted_option(&self.token))
            .field("protocol", &self.protocol)
            .field("extra_ca", &self.extra_ca)
            .finish()
    }
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            server: "http://127.0.0.1:8080".into(),
            room: "roomcam".into(),
            token: None,
            protocol: ProtocolChoice::Auto,
            extra_ca: None,
        }
    }
}

/// Width x height, written `"640x480"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

impl std::str::FromStr for FrameSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a size like \"640x480\"");
        let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        if !(16..=3840).contains(&width) || !(16..=2160).contains(&height) {
            return Err(format!("{text:?}: width must be 16..3840 and height 16..2160"));
        }
        if width % 2 != 0 || height % 2 != 0 {
            return Err(format!("{text:?}: width and height must be even (I420)"));
        }
        Ok(FrameSize { width, height })
    }
}

impl<'de> Deserialize<'de> for FrameSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CameraConfig {
    /// `auto` (the first camera that gives pictures: V4L2 nodes, then
    /// libcamera), a V4L2 device path, `libcamera` / `libcamera:<id>`,
    /// `test` (moving test pattern), `test-busy` (the same with motion and
    /// noise on every pixel: it fills the configured bitrate) or `test-h264`
    /// (the test pattern from a simulated camera that encodes H.264 itself).
    #[serde(deserialize_with = "camera_device")]
    pub device: String,
    /// Which of the camera's formats to use; `auto` picks the cheapest for
    /// the board among those with the wanted size and rate.
    pub format: CameraFormat,
    pub size: FrameSize,
    pub fps: u32,
    /// H.264 bitrate in kbit/s: the ceiling; with congestion control the
    /// stream goes lower when a viewer's path needs it.
    pub bitrate: u32,
    /// The lowest H.264 bitrate in kbit/s congestion control may go to (above
    /// `bitrate` it is `bitrate`).
    pub min_bitrate: u32,
    /// OpenH264 threads; above 1 the picture is cut into slices they share.
    pub encoder_threads: u16,
    /// How hard OpenH264 searches: `medium` (its default) or `low`, about
    /// 30 % less encode time for 0.1 dB less luma PSNR at the same bitrate
    /// on a busy picture (`benches/encode.rs` prints both); the Pi Zero 2 W,
    /// 3 and 4 profiles say `low`.
    pub encoder_complexity: EncoderComplexity,
    /// 2: every other picture is one no other refers to, so that a viewer
    /// on a much weaker path than the others can be sent only the rest
    /// (half the frame rate) instead of lowering everyone's bitrate; 1:
    /// slightly better pictures at the same bitrate, the weakest viewer
    /// sets the rate for all. The hardware encoder makes one layer.
    pub temporal_layers: u8,
    /// Who encodes H.264: `auto` (the board's hardware encoder when it has
    /// one, else OpenH264), `openh264` or `v4l2m2m` (the hardware one, or
    /// an error).
    pub encoder: EncoderChoice,
    /// The V4L2 memory-to-memory encoder node; default: the first that
    /// encodes H.264 (bcm2835-codec's /dev/video11 on a Pi).
    pub encoder_device: Option<PathBuf>,
    /// Night mode (a NoIR camera under infrared light): `off`, `on`
    /// (greyscale pictures), or `auto` (greyscale while the room is dark).
    pub night: NightChoice,
}

/// `camera.night`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NightChoice {
    #[default]
    Off,
    On,
    Auto,
}

/// `camera.encoder-complexity`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderComplexity {
    Low,
    #[default]
    Medium,
}

/// `camera.encoder`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderChoice {
    #[default]
    Auto,
    #[serde(rename = "openh264")]
    OpenH264,
    #[serde(rename = "v4l2m2m")]
    V4l2M2m,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            device: "auto".into(),
            format: CameraFormat::Auto,
            size: FrameSize { width: 640, height: 480 },
            fps: 25,
            bitrate: 1000,
            min_bitrate: 150,
            encoder_threads: 1,
            encoder_complexity: EncoderComplexity::Medium,
            temporal_layers: 2,
            encoder: EncoderChoice::Auto,
            encoder_device: None,
            night: NightChoice::Off,
        }
    }
}

/// `camera.format`: `auto` or a V4L2 fourcc roomcam reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CameraFormat {
    #[default]
    Auto,
    Only(PixelFormat),
}

impl std::str::FromStr for CameraFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(CameraFormat::Auto);
        }
        let fourcc: Option<[u8; 4]> = text.to_ascii_uppercase().as_bytes().try_into().ok();
        fourcc.and_then(|f| PixelFormat::from_fourcc(&f)).map(CameraFormat::Only).ok_or_else(|| {
            format!("{text:?} is not a camera format roomcam reads: auto, YUYV, NV12, YU12, RGB3, BGR3, MJPG or H264")
        })
    }
}

impl<'de> Deserialize<'de> for CameraFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl CameraFormat {
    pub fn only(self) -> Option<PixelFormat> {
        match self {
            CameraFormat::Auto => None,
            CameraFormat::Only(format) => Some(format),
        }
    }
}

/// `[alerts]`: sound alerts (see `crate::alerts`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertsConfig {
    pub enabled: bool,
    /// dB above the room's noise floor that counts as sound.
    pub threshold: f32,
    /// Seconds the sound must last.
    pub hold: f32,
    /// Seconds from one alert's start before another may start.
    pub cooldown: f32,
    /// An MQTT broker (Home Assistant): `mqtt://[user:pass@]host[:port]` or `mqtts://`.
    #[serde(deserialize_with = "mqtt_broker")]
    pub mqtt: Option<crate::alerts::mqtt::MqttBroker>,
    /// A CA (PEM) the mqtts:// broker's certificate is signed by, besides
    /// the system's roots (a Home Assistant broker with its own CA).
    pub mqtt_ca: Option<PathBuf>,
    /// An http(s):// URL that gets one POST per alert start and end.
    #[serde(deserialize_with = "webhook_url")]
    pub webhook: Option<url::Url>,
    pub webhook_format: crate::alerts::webhook::WebhookFormat,
}

impl AlertsConfig {
    /// A key that contradicts another: (the key to point at, why).
    fn conflict(&self) -> Option<(&'static str, String)> {
        (self.mqtt_ca.is_some() && !self.mqtt.as_ref().is_some_and(|b| b.tls))
            .then(|| ("mqtt-ca", "alerts.mqtt-ca is for an mqtts:// broker: set alerts.mqtt = \"mqtts://…\"".into()))
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let d = crate::alerts::DetectorSettings::default();
        AlertsConfig {
            enabled: true,
            threshold: d.threshold_db,
            hold: d.hold_s,
            cooldown: d.cooldown_s,
            mqtt: None,
            mqtt_ca: None,
            webhook: None,
            webhook_format: Default::default(),
        }
    }
}

// Checked while parsing, so that a bad name is reported at its line and column.
fn camera_device<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    crate::media::sources::CameraSpec::parse(&text)
        .map(|_| text.clone())
        .map_err(|e| serde::de::Error::custom(format!("camera.device {text:?} {e}")))
}

// Checked while parsing, so that a bad URL is reported at its line and column.
fn mqtt_broker<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::alerts::mqtt::MqttBroker>, D::Error> {
    let text = String::deserialize(d)?;
    crate::alerts::mqtt::MqttBroker::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("alerts.mqtt: {e}")))
}

fn webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    http_url(d, "alerts.webhook")
}

fn server_webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    http_url(d, "server.webhook")
}

fn http_url<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Option<url::Url>, D::Error> {
    let text = String::deserialize(d)?;
    match url::Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(Some(url)),
        // The URL itself is not repeated: an ntfy token may be in it.
        Ok(_) | Err(_) => Err(serde::de::Error::custom(format!("{key} must be an http:// or https:// URL"))),
    }
}

impl AlertsConfig {
    /// The detector's settings, or `None` with alerts off.
    pub fn detector(&self) -> Option<crate::alerts::DetectorSettings> {
        self.enabled.then_some(crate::alerts::DetectorSettings {
            threshold_db: self.threshold,
            hold_s: self.hold,
            cooldown_s: self.cooldown,
        })
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AudioConfig {
    /// `test` (440 Hz tone), `none`, or an ALSA PCM name.
    pub microphone: String,
    /// `null` (discard, measure) or an ALSA PCM name.
    pub speaker: String,
    /// Opus bitrate in kbit/s.
    pub bitrate: u32,
    /// 10 ms periods in each ALSA buffer (microphone and speaker). 4 suits
    /// a board; more survive a slow or loaded machine at the price of delay.
    pub periods: u32,
    /// Cancel the speaker's echo (a viewer's talk-back voice) from the
    /// microphone, so the viewer does not hear themselves and the sound
    /// detector listens through talk-back. Off: the detector does not
    /// listen while a viewer's voice plays.
    pub echo_cancellation: bool,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            microphone: "test".into(),
            speaker: "null".into(),
            bitrate: 32,
            periods: 4,
            echo_cancellation: true,
        }
    }
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IceServerConfig {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServerConfig")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &redacted_option(&self.credential))
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LoopbackChoice {
    /// Only when the machine has no other interface up.
    #[default]
    Auto,
    Always,
    Never,
}

/// `webrtc.congestion-control`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CongestionControlChoice {
    /// Per-viewer bandwidth estimation (GCC over transport-wide CC feedback,
    /// or the viewer's REMB).
    #[default]
    Gcc,
    /// No estimation and no transport-wide CC negotiated: the fixed `camera.bitrate`.
    Off,
}

/// `webrtc.playout-delay`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PlayoutDelayChoice {
    /// Ask the viewer to render video as soon as it can (min 0, max 100 ms).
    #[default]
    Low,
    /// Leave the viewer's jitter buffer to itself (no extension negotiated).
    Off,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebRtcConfig {
    pub ice_servers: Vec<IceServerConfig>,
    pub loopback_candidates: LoopbackChoice,
    /// Seconds a viewer may stay disconnected before its peer is closed.
    pub disconnect_timeout: u64,
    pub congestion_control: CongestionControlChoice,
    pub playout_delay: PlayoutDelayChoice,
    pub ice_transport_policy: IceTransportPolicyChoice,
}

/// `webrtc.ice-transport-policy`, as RTCConfiguration's `iceTransportPolicy`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IceTransportPolicyChoice {
    /// Host, server-reflexive and relayed candidates.
    #[default]
    All,
    /// Only candidates relayed by a TURN server: the device's address stays
    /// hidden, and a path that works only through TURN is tested as such.
    Relay,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            ice_servers: Vec::new(),
            loopback_candidates: LoopbackChoice::Auto,
            disconnect_timeout: 10,
            congestion_control: CongestionControlChoice::Gcc,
            playout_delay: PlayoutDelayChoice::Low,
            ice_transport_policy: IceTransportPolicyChoice::All,
        }
    }
}

impl WebRtcConfig {
    pub fn disconnect_timeout(&self) -> Duration {
        Duration::from_secs(self.disconnect_timeout)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Members per room when the room has no entry of its own (2 = classic).
    pub capacity: usize,
    /// ICE servers handed to viewer pages (`/config.json`): static STUN.
    pub viewer_ice_servers: Vec<IceServerConfig>,
    /// coturn's `static-auth-secret`: with it, every admitted member gets
    /// short-lived credentials of its own for `turn-urls` (the `turn` event).
    pub turn_secret: Option<Secret>,
    /// The turn:/turns: URLs the minted credentials are for.
    pub turn_urls: Vec<String>,
    /// Seconds the minted credentials are valid; fresh ones are sent at 80 %.
    pub turn_ttl: u64,
    pub rooms: Vec<RoomConfig>,
    /// PEM certificate chain (leaf first) for HTTPS/WSS on `listen`; needs `tls-key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// Seconds between checks of the certificate files' modification times
    /// (a renewed certificate is used without a restart; SIGHUP checks at once).
    pub tls_reload_interval: u64,
    /// Serve HTTPS with a certificate of roomcam's own local CA, made once
    /// in `tls-dir` (instead of `tls-cert`/`tls-key`).
    pub self_signed: bool,
    /// Where `self-signed` keeps its CA and server certificate.
    pub tls_dir: PathBuf,
    /// More names (DNS or IP) for the `self-signed` certificate, besides the
    /// host's own name, `NAME.local`, localhost and its addresses.
    pub tls_names: Vec<String>,
    // What one client may do (src/signaling/limits.rs has the defaults and rules).
    /// Largest socket.io message (a WebSocket message or a polling body), bytes.
    pub max_message_bytes: usize,
    /// Events one connection may send a second (a burst of 4 s' worth); past it, disconnected.
    pub max_messages_per_second: u32,
    /// Connected sockets from one client address (loopback included).
    pub max_connections_per_address: usize,
    /// Distinct rooms one connection may join or try over its life.
    pub max_rooms_per_connection: usize,
    pub max_room_name_length: usize,
    /// Characters a room name may have besides letters and digits.
    pub room_name_characters: String,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Origins of pages that may connect (`None`: any); the server's own always may.
    pub allowed_origins: Option<Vec<String>>,
    /// An http(s):// URL that gets one POST when a room's device goes offline
    /// (its connection to this server ended) and one when it is back.
    #[serde(deserialize_with = "server_webhook_url")]
    pub webhook: Option<url::Url>,
    pub webhook_format: crate::alerts::webhook::WebhookFormat,
}

/// A month: longer-lived credentials are static ones in all but name.
const MAX_TURN_TTL: u64 = 30 * 86_400;

/// `turn-ttl` unless set: a day, as coturn's REST API document suggests.
pub const DEFAULT_TURN_TTL: u64 = 86_400;

/// Where `self-signed` keeps its files unless `tls-dir` says otherwise.
pub const DEFAULT_TLS_DIR: &str = "/var/lib/roomcam/tls";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            capacity: 2,
            viewer_ice_servers: Vec::new(),
            turn_secret: None,
            turn_urls: Vec::new(),
            turn_ttl: DEFAULT_TURN_TTL,
            rooms: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_reload_interval: 5,
            self_signed: false,
            tls_dir: PathBuf::from(DEFAULT_TLS_DIR),
            tls_names: Vec::new(),
            max_message_bytes: limits::DEFAULT_MAX_MESSAGE_BYTES,
            max_messages_per_second: limits::DEFAULT_MAX_MESSAGES_PER_SECOND,
            max_connections_per_address: limits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_rooms_per_connection: limits::DEFAULT_MAX_ROOMS_PER_CONNECTION,
            max_room_name_length: limits::DEFAULT_MAX_ROOM_NAME_LENGTH,
            room_name_characters: limits::DEFAULT_ROOM_NAME_CHARACTERS.into(),
            trusted_proxies: Vec::new(),
            allowed_origins: None,
            webhook: None,
            webhook_format: Default::default(),
        }
    }
}

impl ServerConfig {
    pub fn tls_reload_interval(&self) -> Duration {
        Duration::from_secs(self.tls_reload_interval)
    }

    pub fn turn_ttl(&self) -> Duration {
        Duration::from_secs(self.turn_ttl)
    }

    /// TURN settings that cannot work: the key to point at and why.
    fn turn_conflict(&self) -> Option<(&'static str, String)> {
        match (&self.turn_secret, self.turn_urls.is_empty()) {
            (Some(secret), _) if secret.is_empty() => {
                return Some(("turn-secret", "server.turn-secret must not be empty".into()));
            }
            (Some(_), true) => {
                return Some(("turn-secret", "server.turn-secret is set without server.turn-urls: set both".into()));
            }
            (None, false) => {
                return Some(("turn-urls", "server.turn-urls is set without server.turn-secret: set both".into()));
            }
            _ => {}
        }
        if let Some(bad) = self.turn_urls.iter().find(|u| !(u.starts_with("turn:") || u.starts_with("turns:"))) {
            return Some(("turn-urls", format!("server.turn-urls: {bad:?} must start with turn: or turns:")));
        }
        if !(2..=MAX_TURN_TTL).contains(&self.turn_ttl) {
            return Some(("turn-ttl", format!("server.turn-ttl {} must be 2..{MAX_TURN_TTL} seconds", self.turn_ttl)));
        }
        None
    }

    /// Settings that cannot work: the key to point at and why.
    fn conflict(&self) -> Option<(&'static str, String)> {
        self.tls_conflict().or_else(|| self.turn_conflict()).or_else(|| limits::config_conflict(self))
    }

    /// TLS settings that contradict each other: the key to point at and why.
    fn tls_conflict(&self) -> Option<(&'static str, String)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Some(("tls-cert", "server.tls-cert is set without server.tls-key: set both or neither".into()));
            }
            (None, Some(_)) => {
                return Some(("tls-key", "server.tls-key is set without server.tls-cert: set both or neither".into()));
            }
            _ => {}
        }
        if self.self_signed && self.tls_cert.is_some() {
            return Some((
                "self-signed",
                "server.self-signed and server.tls-cert/tls-key exclude each other: choose one".into(),
            ));
        }
        if let Some(bad) = self.tls_names.iter().find(|n| !valid_tls_name(n)) {
            return Some(("tls-names", format!("server.tls-names: {bad:?} is neither a DNS name nor an IP address")));
        }
        if !(1..=86_400).contains(&self.tls_reload_interval) {
            return Some((
                "tls-reload-interval",
                format!("server.tls-reload-interval {} must be 1..86400 seconds", self.tls_reload_interval),
            ));
        }
        None
    }
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoomConfig {
    pub name: String,
    pub token: Option<String>,
    pub capacity: Option<usize>,
}

impl std::fmt::Debug for RoomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomConfig")
            .field("name", &self.name)
            .field("token", &redacted_option(&self.token))
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// error, warn, info, debug or trace; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

/// Prometheus text at `/metrics` and `/healthz`, on the device (`run`), the
/// server (`serve`) or both on one listener (`demo`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Off unless set; the README's suggestion is 127.0.0.1:9733 (not
    /// Prometheus' own 9090). Anyone who reaches it reads the device's
    /// state, so the packaged config keeps it on loopback.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_board(text, path, None)
    }

    /// The file (or an empty one), then the board profile (`board_override`,
    /// else the file's `board`) for every key the file leaves out.
    pub fn load_with_board(path: Option<&Path>, board_override: Option<&str>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                Config::parse_with_board(&text, path, board_override)
            }
            None => Config::parse_with_board("", Path::new("command line"), board_override),
        }
    }

    pub fn parse_with_board(text: &str, path: &Path, board_override: Option<&str>) -> Result<Config, ConfigError> {
        let mut config = Config::parse_file_only(text, path)?;
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        if let Some(board) = board_override.map(str::to_owned).or(config.board.clone()) {
            // The file parsed, so it is a table; the profile goes under it.
            let file: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
            let mut merged = crate::board::profile(&board).map_err(invalid)?;
            crate::board::merge(&mut merged, &file);
            merged.insert("board".into(), toml::Value::String(board.clone()));
            config = merged.try_into().map_err(|e: toml::de::Error| invalid(format!("board {board}: {e}")))?;
            config.validate().map_err(invalid)?;
        }
        Ok(config)
    }

    fn parse_file_only(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_and_column(text, span.start)).unwrap_or((1, 1));
            ConfigError::Syntax { path: path.to_owned(), line, column, message: e.message().trim().to_owned() }
        })?;
        // Cross-field errors that one key causes are reported at that key.
        let conflicts = [
            config.server.conflict().map(|(key, message)| ("server", key, message)),
            config.alerts.conflict().map(|(key, message)| ("alerts", key, message)),
        ];
        if let Some((table, key, message)) = conflicts.into_iter().flatten().next() {
            let (line, column) = key_location(text, table, key).unwrap_or((1, 1));
            return Err(ConfigError::Syntax { path: path.to_owned(), line, column, message });
        }
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        Ok(config)
    }

    /// Checks that hold across fields, after overrides were applied too.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.signaling;
        let scheme_ok = ["http://", "https://", "ws://", "wss://"].iter().any(|scheme| s.server.starts_with(scheme));
        if !scheme_ok || url::Url::parse(&s.server).is_err() {
            return Err(format!("signaling.server {:?} must be an http://, https://, ws:// or wss:// URL", s.server));
        }
        if s.room.trim().is_empty() {
            return Err("signaling.room must not be empty".into());
        }
        if let Err(e) = crate::media::sources::CameraSpec::parse(&self.camera.device) {
            return Err(format!("camera.device {:?} {e}", self.camera.device));
        }
        if !(1..=60).contains(&self.camera.fps) {
            return Err(format!("camera.fps {} must be 1..60", self.camera.fps));
        }
        if !(50..=20_000).contains(&self.camera.bitrate) {
            return Err(format!("camera.bitrate {} kbit/s must be 50..20000", self.camera.bitrate));
        }
        if !(50..=20_000).contains(&self.camera.min_bitrate) {
            return Err(format!("camera.min-bitrate {} kbit/s must be 50..20000", self.camera.min_bitrate));
        }
        if !(1..=2).contains(&self.camera.temporal_layers) {
            return Err(format!("camera.temporal-layers {} must be 1 or 2", self.camera.temporal_layers));
        }
        if !(1..=16).contains(&self.camera.encoder_threads) {
            return Err(format!("camera.encoder-threads {} must be 1..16", self.camera.encoder_threads));
        }
        if !(6..=510).contains(&self.audio.bitrate) {
            return Err(format!("audio.bitrate {} kbit/s must be 6..510", self.audio.bitrate));
        }
        if !(2..=64).contains(&self.audio.periods) {
            return Err(format!("audio.periods {} must be 2..64", self.audio.periods));
        }
        let alerts = &self.alerts;
        if !(3.0..=60.0).contains(&alerts.threshold) {
            return Err(format!("alerts.threshold {} dB must be 3..60", alerts.threshold));
        }
        if !(0.1..=60.0).contains(&alerts.hold) {
            return Err(format!("alerts.hold {} s must be 0.1..60", alerts.hold));
        }
        if !(0.0..=86_400.0).contains(&alerts.cooldown) {
            return Err(format!("alerts.cooldown {} s must be 0..86400", alerts.cooldown));
        }
        if let Some((_, message)) = alerts.conflict() {
            return Err(message);
        }
        for server in self.webrtc.ice_servers.iter().chain(&self.server.viewer_ice_servers) {
            validate_ice_server(server)?;
        }
        if self.server.capacity < 2 {
            return Err("server.capacity must be at least 2".into());
        }
        for room in &self.server.rooms {
            if room.capacity.is_some_and(|c| c < 2) {
                return Err(format!("server.rooms {:?}: capacity must be at least 2", room.name));
            }
        }
        if let Some((_, message)) = self.server.conflict() {
            return Err(message);
        }
        Ok(())
    }
}

pub fn validate_ice_server(server: &IceServerConfig) -> Result<(), String> {
    if server.urls.is_empty() {
        return Err("an ICE server needs at least one URL".into());
    }
    for url in &server.urls {
        let is_turn = url.starts_with("turn:") || url.starts_with("turns:");
        if !(is_turn || url.starts_with("stun:") || url.starts_with("stuns:")) {
            return Err(format!("ICE server URL {url:?} must start with stun:, stuns:, turn: or turns:"));
        }
        if is_turn && (server.username.is_none() || server.credential.is_none()) {
            return Err(format!("TURN server {url:?} needs a username and a credential"));
        }
    }
    Ok(())
}

fn valid_tls_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
            }))
}

/// Line and column of `key` in `[table]` (or a dotted/inline spelling of it).
fn key_location(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let section = doc.get_ref().iter().find(|(k, _)| k.get_ref() == table)?.1;
    let toml::de::DeValue::Table(section) = section.get_ref() else { return None };
    let (found, _) = section.iter().find(|(k, _)| k.get_ref() == key)?;
    Some(line_and_column(text, found.span().start))
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("roomcam.toml"))
    }

    #[test]
    fn empty_file_gives_working_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.camera.size, FrameSize { width: 640, height: 480 });
        assert_eq!(config.server.listen.port(), 8080);
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../roomcam.example.toml");
        let config = parse(text).unwrap();
        assert_eq!(config.signaling.room, "nursery");
        // Installed as /etc/roomcam/roomcam.toml: a real camera, never the
        // test pattern, unless the user says so.
        assert_eq!(config.camera.device, "auto");
    }

    #[test]
    fn kebab_case_keys_and_rooms() {
        let config = parse(
            r#"
[signaling]
server = "wss://example.org"
room = "door"
token = "t"
protocol = "eio3"
extra-ca = "/etc/ca.pem"

[webrtc]
loopback-candidates = "always"
ice-servers = [{ urls = ["turn:turn.example.org:3478"], username = "u", credential = "c" }]

[[server.rooms]]
name = "door"
token = "t"
capacity = 4
"#,
        )
        .unwrap();
        assert_eq!(config.signaling.protocol, ProtocolChoice::Eio3);
        assert_eq!(config.signaling.extra_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(config.webrtc.loopback_candidates, LoopbackChoice::Always);
        assert_eq!(config.server.rooms[0].capacity, Some(4));
    }

    fn syntax_error(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Syntax { line, column, message, .. }) => (line, column, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let (line, column, message) = syntax_error("[camera]\nfps = 25\n  colour = \"red\"\n");
        assert_eq!((line, column), (3, 3));
        assert!(message.contains("unknown field `colour`"), "{message}");
    }

    #[test]
    fn wrong_type_and_bad_size_are_located() {
        let (line, column, message) = syntax_error("[camera]\nfps = \"fast\"\n");
        assert_eq!((line, column), (2, 7));
        assert!(message.contains("invalid type"), "{message}");
        let (line, _, message) = syntax_error("[camera]\n\nsize = \"big\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("640x480"), "{message}");
        let (line, column, _) = syntax_error("[signaling\nroom = 1");
        assert_eq!((line, column), (1, 11));
    }

    #[test]
    fn camera_format_and_alsa_periods() {
        let config = parse("[camera]\nformat = \"h264\"\n[audio]\nperiods = 8\n").unwrap();
        assert_eq!(config.camera.format.only(), Some(PixelFormat::H264));
        assert_eq!(config.audio.periods, 8);
        assert!(config.audio.echo_cancellation, "on by default");
        let config = parse("[audio]\necho-cancellation = false\n").unwrap();
        assert!(!config.audio.echo_cancellation);
        assert_eq!(parse("").unwrap().camera.format, CameraFormat::Auto);
        let (line, column, message) = syntax_error("[camera]\nformat = \"RGBP\"\n");
        assert_eq!((line, column), (2, 10));
        assert!(message.contains("auto, YUYV, NV12, YU12, RGB3, BGR3, MJPG or H264"), "{message}");
        assert!(matches!(parse("[audio]\nperiods = 1\n"), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn encoder_choice() {
        let defaults = parse("").unwrap();
        assert_eq!((defaults.camera.encoder, defaults.camera.encoder_device), (EncoderChoice::Auto, None));
        let config = parse("[camera]\nencoder = \"v4l2m2m\"\nencoder-device = \"/dev/video11\"\n").unwrap();
        assert_eq!(config.camera.encoder, EncoderChoice::V4l2M2m);
        assert_eq!(config.camera.encoder_device.as_deref(), Some(std::path::Path::new("/dev/video11")));
        assert_eq!(parse("[camera]\nencoder = \"openh264\"\n").unwrap().camera.encoder, EncoderChoice::OpenH264);
        let (line, column, message) = syntax_error("[camera]\nencoder = \"x264\"\n");
        assert_eq!((line, column), (2, 11));
        assert!(message.contains("auto") && message.contains("openh264") && message.contains("v4l2m2m"), "{message}");
    }

    #[test]
    fn bitrate_floor_and_congestion_control() {
        let defaults = parse("").unwrap();
        assert_eq!(defaults.camera.min_bitrate, 150);
        assert_eq!(defaults.webrtc.congestion_control, CongestionControlChoice::Gcc);
        let config = parse("[camera]\nmin-bitrate = 200\n[webrtc]\ncongestion-control = \"off\"\n").unwrap();
        assert_eq!(config.camera.min_bitrate, 200);
        assert_eq!(config.webrtc.congestion_control, CongestionControlChoice::Off);
        let (line, column, message) = syntax_error("[webrtc]\n\ncongestion-control = \"bbr\"\n");
        assert_eq!((line, column), (3, 22));
        assert!(message.contains("gcc") && message.contains("off"), "{message}");
        assert!(matches!(parse("[camera]\nmin-bitrate = 10\n"), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn alerts_to_mqtt_and_a_webhook() {
        let defaults = parse("").unwrap().alerts;
        assert_eq!((defaults.mqtt, defaults.webhook), (None, None));
        assert_eq!(defaults.webhook_format, crate::alerts::webhook::WebhookFormat::Json);
        let alerts = parse(
            "[alerts]\nmqtt = \"mqtts://ha:pw@broker.lan\"\nwebhook = \"https://ntfy.sh/nursery\"\nwebhook-format = \"ntfy\"\n",
        )
        .unwrap()
        .alerts;
        let broker = alerts.mqtt.unwrap();
        assert_eq!((broker.tls, broker.host.as_str(), broker.port), (true, "broker.lan", 8883));
        assert_eq!(alerts.webhook.unwrap().as_str(), "https://ntfy.sh/nursery");
        assert_eq!(alerts.webhook_format, crate::alerts::webhook::WebhookFormat::Ntfy);
        let (line, column, message) = syntax_error("[alerts]\n\nmqtt = \"http://broker:1883\"\n");
        assert_eq!((line, column), (3, 8));
        assert!(message.contains("alerts.mqtt") && message.contains("mqtt://"), "{message}");
        let (line, _, message) = syntax_error("[alerts]\nwebhook = \"ftp://x\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("alerts.webhook"), "{message}");
        let (line, _, message) = syntax_error("[alerts]\nwebhook-format = \"xml\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("json") && message.contains("ntfy"), "{message}");
        let (line, _, message) = syntax_error("[alerts]\nmqtt = \"mqtt://b\"\n\nmqtt-ca = \"/etc/ca.pem\"\n");
        assert_eq!(line, 4, "at mqtt-ca");
        assert!(message.contains("mqtts://"), "{message}");
        let config = parse("[alerts]\nmqtt = \"mqtts://b\"\nmqtt-ca = \"/etc/ca.pem\"\n").unwrap();
        assert_eq!(config.alerts.mqtt_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
    }

    #[test]
    fn a_camera_device_that_cannot_be_is_reported_at_its_line() {
        let (line, column, message) = syntax_error("[camera]\nfps = 25\ndevice = \"libcamera:\"\n");
        assert_eq!((line, column), (3, 10));
        assert!(message.contains("camera id"), "{message}");
        assert_eq!(parse("[camera]\ndevice = \"libcamera:imx708\"\n").unwrap().camera.device, "libcamera:imx708");
    }

    #[test]
    fn the_server_s_webhook_for_an_absent_device() {
        let defaults = parse("").unwrap().server;
        assert_eq!((defaults.webhook, defaults.webhook_format), (None, crate::alerts::webhook::WebhookFormat::Json));
        let server =
            parse("[server]\nwebhook = \"https://ntfy.sh/cams?auth=tk\"\nwebhook-format = \"ntfy\"\n").unwrap().server;
        assert_eq!(server.webhook.unwrap().as_str(), "https://ntfy.sh/cams?auth=tk");
        assert_eq!(server.webhook_format, crate::alerts::webhook::WebhookFormat::Ntfy);
        let (line, _, message) = syntax_error("[server]\n\nwebhook = \"ftp://x?auth=tk\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("server.webhook") && !message.contains("tk"), "{message}");
    }

    #[test]
    fn error_display_is_path_line_column() {
        let err = parse("[audio]\nspeaker = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("roomcam.toml:2:11: "), "{text}");
    }

    #[test]
    fn cross_field_checks() {
        assert!(matches!(parse("[signaling]\nserver = \"ftp://x\"\n"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(parse("[camera]\nfps = 0\n"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(
            parse("[webrtc]\nice-servers = [{ urls = [\"turn:x\"] }]\n"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(parse("[server]\ncapacity = 1\n"), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn tls_keys_come_in_pairs_and_errors_point_at_the_key() {
        let config = parse("[server]\ntls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\ntls-reload-interval = 1\n").unwrap();
        assert_eq!(config.server.tls_cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(config.server.tls_reload_interval(), Duration::from_secs(1));
        let defaults = parse("").unwrap().server;
        assert_eq!((defaults.tls_cert, defaults.self_signed), (None, false));
        assert_eq!(defaults.tls_dir, Path::new(DEFAULT_TLS_DIR));
        assert_eq!(defaults.tls_reload_interval, 5);

        let (line, column, message) = syntax_error("[server]\nlisten = \"0.0.0.0:443\"\n  tls-cert = \"/c.pem\"\n");
        assert_eq!((line, column), (3, 3));
        assert!(message.contains("without server.tls-key"), "{message}");
        let (line, column, message) = syntax_error("[server]\n\ntls-key = \"/k.pem\"\n");
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("without server.tls-cert"), "{message}");
        let (line, _, message) = syntax_error("[server]\ntls-cert = \"/c\"\ntls-key = \"/k\"\nself-signed = true\n");
        assert_eq!(line, 4);
        assert!(message.contains("exclude each other"), "{message}");
        let (line, _, _) = syntax_error("[server]\ntls-reload-interval = 0\n");
        assert_eq!(line, 2);
        let config = parse("[server]\nself-signed = true\ntls-names = [\"nursery.home\", \"10.0.0.5\"]\n").unwrap();
        assert_eq!(config.server.tls_names, ["nursery.home", "10.0.0.5"]);
        let (line, column, message) = syntax_error("[server]\ntls-names = [\"bad name\"]\n");
        assert_eq!((line, column), (2, 1));
        assert!(message.contains("neither a DNS name nor an IP address"), "{message}");
        // Set from flags, the same rule holds (no location to give).
        let mut config = Config::default();
        config.server.tls_key = Some("/k".into());
        assert!(config.validate().unwrap_err().contains("without server.tls-cert"));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let config = parse(
            "[signaling]\ntoken = \"room-token-1\"\n[[webrtc.ice-servers]]\nurls = [\"turn:t.example:3478\"]\n\
             username = \"u\"\ncredential = \"turn-pass-2\"\n[server]\nturn-secret = \"coturn-secret-3\"\n\
             turn-urls = [\"turn:t.example:3478\"]\n[[server.rooms]]\nname = \"nursery\"\ntoken = \"room-token-4\"\n\
             [alerts]\nmqtt = \"mqtt://ha:mqtt-pass-5@broker.local\"\n",
        )
        .unwrap();
        let shown = format!("{config:?} {config:#?}");
        for secret in ["room-token-1", "turn-pass-2", "coturn-secret-3", "room-token-4", "mqtt-pass-5"] {
            assert!(!shown.contains(secret), "Debug shows {secret}: {shown}");
        }
        assert!(shown.contains("<redacted>") && shown.contains("nursery") && shown.contains("turn:t.example:3478"));
        assert_eq!(config.signaling.token.as_deref(), Some("room-token-1"), "the value itself is intact");
    }

    #[test]
    fn turn_secret_urls_and_ttl() {
        let config = parse(
            "[server]\nturn-secret = \"s\"\nturn-urls = [\"turn:t.example:3478\", \"turns:t.example:5349\"]\nturn-ttl = 600\n\n[webrtc]\nice-transport-policy = \"relay\"\n",
        )
        .unwrap();
        assert_eq!(config.server.turn_secret.as_ref().map(Secret::expose), Some("s"));
        assert_eq!(config.server.turn_urls.len(), 2);
        assert_eq!(config.server.turn_ttl(), Duration::from_secs(600));
        assert_eq!(config.webrtc.ice_transport_policy, IceTransportPolicyChoice::Relay);
        let defaults = parse("").unwrap();
        assert_eq!((defaults.server.turn_ttl, defaults.server.turn_secret), (86_400, None));
        assert_eq!(defaults.webrtc.ice_transport_policy, IceTransportPolicyChoice::All);

        let (line, column, message) = syntax_error("[server]\n  turn-secret = \"s\"\n");
        assert_eq!((line, column), (2, 3));
        assert!(message.contains("without server.turn-urls"), "{message}");
        let (line, _, message) = syntax_error("[server]\nlisten = \"0.0.0.0:80\"\nturn-urls = [\"turn:x\"]\n");
        assert_eq!(line, 3);
        assert!(message.contains("without server.turn-secret"), "{message}");
        let (line, _, message) = syntax_error("[server]\nturn-secret = \"s\"\nturn-urls = [\"stun:x\"]\n");
        assert_eq!(line, 3);
        assert!(message.contains("turn: or turns:"), "{message}");
        let (line, _, _) = syntax_error("[server]\nturn-secret = \"s\"\nturn-urls = [\"turn:x\"]\nturn-ttl = 0\n");
        assert_eq!(line, 4);
        let (line, column, message) = syntax_error("[webrtc]\nice-transport-policy = \"none\"\n");
        assert_eq!((line, column), (2, 24));
        assert!(message.contains("all") && message.contains("relay"), "{message}");
    }

    #[test]
    fn sizes() {
        assert_eq!("1280x720".parse::<FrameSize>().unwrap(), FrameSize { width: 1280, height: 720 });
        assert!("641x480".parse::<FrameSize>().is_err());
        assert!("0x0".parse::<FrameSize>().is_err());
        assert!("640".parse::<FrameSize>().is_err());
    }
}
