//! Sound alerts (a baby monitor's reason to exist): the detector that
//! decides when the room is loud enough to tell someone.

pub mod detector;
pub mod mqtt;
pub mod webhook;

pub use detector::{DetectorSettings, SoundDetector, SoundEvent};

/// What the room's listener tells the rest of the daemon (viewer pages,
/// MQTT, webhooks), in the order it heard it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RoomSound {
    /// An alert started or ended.
    Alert(SoundEvent),
    /// The loudest band level (dBFS) of the last [`LEVEL_INTERVAL`], for a
    /// meter; none while the speaker plays a viewer's voice.
    Level { level_db: f32 },
}

/// How often the room's level is told: often enough for a meter that moves.
pub const LEVEL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
