//! Sound alerts (a baby monitor's reason to exist): the detector that
//! decides when the room is loud enough to tell someone.

pub mod detector;

pub use detector::{DetectorSettings, SoundDetector, SoundEvent};
