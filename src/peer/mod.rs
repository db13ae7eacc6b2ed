//! One WebRTC peer connection per viewer (webrtc-rs 0.21).
//!
//! The peer knows nothing about rooms or signaling: the session core tells the
//! daemon what to do, the daemon calls these methods, and everything the peer
//! learns (local SDP, ICE candidates, connection state, keyframe requests)
//! comes back as `PeerEvent`s on a channel, to be fed into the session core.

use crate::media::pipeline::Talkback;
use crate::media::{EncodedAudio, EncodedVideo};

pub mod bandwidth;
// Visible to the crate for `crate::fuzzing`.
pub(crate) mod congestion;
pub(crate) mod connection;
mod repair_budget;
mod repair_flows;
pub mod room_channel;
pub(crate) mod rtcp;
pub(crate) mod send_meter;
mod setup;
mod video_packets;
mod wrapped_interceptor;

pub use congestion::CongestionSettings;
pub use connection::Peer;
/// The H.264 fmtp roomcam sends (constrained baseline 3.1, packetization-mode 1).
pub use setup::H264_FMTP;

pub type PeerId = String;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct PeerSettings {
    pub ice_servers: Vec<IceServer>,
    /// Gather 127.0.0.1/::1 candidates (needed when loopback is the only interface).
    pub include_loopback: bool,
    /// Per-viewer bandwidth estimation (GCC over transport-wide CC feedback,
    /// or REMB); `None`: none negotiated, the stream's rate is fixed.
    pub congestion: Option<CongestionSettings>,
    /// The playout delay asked of the viewer's jitter buffer on video;
    /// `None`: the extension is not negotiated, the viewer buffers as it likes.
    pub playout_delay: Option<PlayoutDelay>,
    /// ICE transport policy `relay`: only TURN-relayed candidates.
    pub relay_only: bool,
    /// How often to report [`PeerEvent::Measured`]; `None`: never (nobody
    /// scrapes metrics, and reading the stats takes the connection's lock).
    pub measure_every: Option<std::time::Duration>,
    /// Trickle local candidates (`LocalCandidate` events); `false` for a
    /// viewer that cannot take them (WHEP): the local description then goes
    /// out once gathering is complete, every candidate in it.
    pub trickle: bool,
}

/// A playout delay range, in milliseconds (sent in 10 ms units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayoutDelay {
    pub min_ms: u16,
    pub max_ms: u16,
}

impl PlayoutDelay {
    /// Render as soon as a frame is decodable, buffer at most 100 ms for
    /// jitter. Chrome's own adaptive target on a clean path is 30–60 ms of
    /// buffering that a live baby monitor does not need; (0, 0) would turn
    /// off its smoothing entirely, which stutters on a jittery phone link.
    pub const LOW: PlayoutDelay = PlayoutDelay { min_ms: 0, max_ms: 100 };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpKind {
    Offer,
    Answer,
}

/// A trickled ICE candidate; `sdp_mline_index` is the classic protocol's `label`,
/// `sdp_mid` its `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCandidate {
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: Option<u16>,
}

/// Combined ICE + DTLS state, as RTCPeerConnectionState reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    LocalDescription {
        peer: PeerId,
        kind: SdpKind,
        sdp: String,
    },
    LocalCandidate {
        peer: PeerId,
        candidate: IceCandidate,
    },
    ConnectionState {
        peer: PeerId,
        state: ConnectionState,
    },
    /// The viewer needs an IDR.
    KeyframeRequested {
        peer: PeerId,
        /// `true`: video just started flowing to it (it can decode nothing
        /// before an IDR); `false`: it sent PLI or FIR, or fell behind the
        /// stream. Told apart because only the former is honoured at once
        /// whatever the keyframe throttle says (`crate::rate::KeyframeThrottle`).
        new_viewer: bool,
    },
    /// The path to this viewer carries about this much (audio and video RTP,
    /// bit/s), as its congestion controller estimates it. Sent after the first
    /// feedback, then on changes of 5 % or more (drops at once, rises at most
    /// once a second); never with congestion control off.
    BandwidthEstimate {
        peer: PeerId,
        bitrate_bps: u64,
    },
    /// The viewer accepted no H.264: it gets audio only, and its path does
    /// not bound the video's rate.
    VideoRefused {
        peer: PeerId,
    },
    /// The video ceiling the viewer's SDP asks for (`b=TIAS`/`b=AS`, see
    /// [`bandwidth`]; a page's data saver), or `None`: sent with every
    /// remote description the peer applies.
    VideoCeiling {
        peer: PeerId,
        bitrate_bps: Option<u64>,
    },
    /// The viewer asked (over the `roomcam` channel) for audio only (`on`)
    /// or for video again: while on, its path does not bound the video.
    ListenOnly {
        peer: PeerId,
        on: bool,
    },
    /// What the path to the viewer measures, every
    /// [`PeerSettings::measure_every`] while connected.
    Measured {
        peer: PeerId,
        /// The selected ICE pair's last STUN round trip; `None` before one.
        round_trip: Option<std::time::Duration>,
        sent: SentTotals,
    },
}

/// Bytes sent to one viewer so far (RTP headers and payloads), by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentTotals {
    pub video: u64,
    /// Retransmissions of lost video packets (RTX).
    pub repairs: u64,
    pub audio: u64,
}

/// Where a peer takes its outgoing media from and gives incoming audio to.
#[derive(Clone)]
pub struct MediaTaps {
    pub video: tokio::sync::broadcast::Sender<EncodedVideo>,
    pub audio: tokio::sync::broadcast::Sender<EncodedAudio>,
    /// Called with every Opus payload the viewer sends (talk-back).
    pub talkback: Talkback,
    /// The room's sound alerts and level, told to the viewer's page over
    /// the `roomcam` data channel; `None`: alerts are off.
    pub sound: Option<crate::alerts::SoundTap>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("webrtc: {0}")]
    WebRtc(String),
    #[error("the remote SDP was rejected: {0}")]
    BadSdp(String),
    #[error("the remote ICE candidate was rejected: {0}")]
    BadCandidate(String),
}
