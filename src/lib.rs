//! roomcam: a camera + microphone daemon that joins a socket.io signaling room
//! and streams H.264/Opus over WebRTC to whoever joins the room.
//!
//! - `alerts`: sound detection for alerts (pure)
//! - `session`: the room/peer state machine (no I/O; events in, actions out)
//! - `signaling`: socket.io codec, the device's client, roomcam's own server
//! - `peer`: one WebRTC peer connection per viewer
//! - `media`: camera/microphone sources, H.264/Opus encoders, speaker sinks
//! - `rate`: the rate policy: viewers' bandwidth estimates to one encoder target (pure)
//! - `daemon`: wires the edges to the session
//! - `config`: the TOML configuration file
//! - `fuzzing`: the fuzz targets' bodies for what peers, servers and operators
//!   hand roomcam (the camera paths' are in `media::fuzzing`)
//! - `util`: a mutex lock that survives a panicked holder, log rate limits,
//!   retry back-off

pub mod alerts;
pub mod board;
pub mod config;
pub mod daemon;
pub mod fuzzing;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod peer;
pub mod rate;
pub mod session;
pub mod signaling;
pub(crate) mod util;
