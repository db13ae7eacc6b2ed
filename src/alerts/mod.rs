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
    /// meter (of the echo-cancelled signal; with echo cancellation off,
    /// none while the speaker plays a viewer's voice).
    Level { level_db: f32 },
}

/// How often the room's level is told: often enough for a meter that moves.
pub const LEVEL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// An alert going on now, for a viewer that joins during it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActiveAlert {
    pub since: std::time::SystemTime,
    pub level_db: f32,
}

/// Where the room's sound is told: a broadcast of what is heard, and the
/// alert going on now (a broadcast alone would leave a viewer that joins
/// mid-alert thinking the room is quiet).
#[derive(Clone, Debug)]
pub struct SoundTap {
    events: tokio::sync::broadcast::Sender<RoomSound>,
    active: std::sync::Arc<std::sync::Mutex<Option<ActiveAlert>>>,
}

impl Default for SoundTap {
    fn default() -> Self {
        // 64: a level every 250 ms leaves a slow subscriber 16 s.
        SoundTap { events: tokio::sync::broadcast::channel(64).0, active: Default::default() }
    }
}

impl SoundTap {
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RoomSound> {
        self.events.subscribe()
    }

    pub fn active(&self) -> Option<ActiveAlert> {
        *crate::util::lock_ignoring_poison(&self.active)
    }

    /// Tells every subscriber; nobody listening is fine (the log has it).
    pub fn tell(&self, sound: RoomSound) {
        if let RoomSound::Alert(event) = sound {
            *crate::util::lock_ignoring_poison(&self.active) = match event {
                SoundEvent::Started { level_db, .. } => {
                    Some(ActiveAlert { since: std::time::SystemTime::now(), level_db })
                }
                SoundEvent::Ended { .. } => None,
            };
        }
        let _ = self.events.send(sound);
    }
}
