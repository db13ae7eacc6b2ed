//! Where talk-back goes: an ALSA speaker, or the null speaker that only
//! measures and logs what it is played (`--speaker null`).

pub mod alsa_speaker;
pub mod null_speaker;

pub use alsa_speaker::{AlsaSpeaker, JITTER_MAX, JITTER_TARGET, TalkbackDelay};
pub use null_speaker::{NullSpeaker, SpeakerReport, SpeakerStats};
