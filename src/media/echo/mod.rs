//! Echo cancellation for talk-back (issue 12 point 5): the board's
//! microphone hears its own speaker, so a viewer talking back would hear
//! their own voice come back, and the parent's voice would raise a sound
//! alert. The speaker thread hands what it played to a [`Reference`]; the
//! microphone thread's [`EchoRemoval`] takes it, one microphone frame's
//! worth at a time, and cancels it from the frame before the sound
//! detector and the Opus encoder see it.
//!
//! [`EchoCanceller`] is the seam; [`Aec3`] (the crate `sonora`, a
//! pure-Rust port of WebRTC's AEC3) is what is behind it. It was chosen
//! over `aec-rs` (speexdsp, 200 ms filter) by measurement on the room of
//! this module's tests (examples/echo_comparison runs both): echo 30/80/120 ms
//! late at −6/−9/−12 dB with a reverb tail, AEC3 removes 35–50 dB of it
//! on far-end-only stretches after 2 s, speexdsp 20–24 dB (31–43 dB with
//! its preprocessor); with a talker in the room as loud as the echo, AEC3
//! keeps the talker within 2.1–2.7 dB, speexdsp loses 9.5–9.7 dB (15–23 dB
//! with the preprocessor); and AEC3 takes about 85 µs per 10 ms on the
//! host against speexdsp's 180–240 µs.

use thiserror::Error;

use crate::media::AUDIO_FRAME_SAMPLES;

mod aec3;
mod reference;
#[cfg(test)]
mod tests;

pub use aec3::Aec3;
pub use reference::Reference;

/// The cancellers work on 10 ms chunks (48 kHz mono); roomcam's frames are
/// 20 ms, two chunks.
pub const CHUNK_SAMPLES: usize = 480;

#[derive(Debug, Error)]
pub enum EchoError {
    #[error("echo canceller: {samples} samples is not a whole number of 10 ms chunks ({CHUNK_SAMPLES})")]
    FrameLength { samples: usize },
    #[error("echo canceller: {0}")]
    Canceller(String),
}

/// Removes from the microphone's signal what the speaker played. Both
/// sides take whole 10 ms chunks ([`CHUNK_SAMPLES`], 48 kHz mono), far end
/// first: `played` the speaker's chunk, then `cancel` the microphone's
/// chunk captured at the same time.
pub trait EchoCanceller: Send {
    /// What the speaker played (the far end, the reference).
    fn played(&mut self, far: &[i16]) -> Result<(), EchoError>;
    /// The microphone's signal, with the echo of what was played removed
    /// in place.
    fn cancel(&mut self, mic: &mut [i16]) -> Result<(), EchoError>;
}

/// After this long with nothing but silence from the speaker (20 ms
/// frames: 2 s), the echo has died away and the canceller rests: a
/// microphone frame then costs a look at the reference and nothing more.
const REST_AFTER_FRAMES: u32 = 100;

/// A speaker frame quieter than this peak is silence (a browser sends
/// digital silence while push-to-talk is released; Opus decodes it to
/// near zero).
const SILENT_PEAK: i16 = 8;

/// The microphone thread's side: takes from the [`Reference`] what the
/// speaker played during each microphone frame and cancels it.
pub struct EchoRemoval {
    canceller: Box<dyn EchoCanceller>,
    reference: std::sync::Arc<Reference>,
    far: [i16; AUDIO_FRAME_SAMPLES],
    /// Speaker frames in a row that were silence (saturates).
    silent_frames: u32,
}

impl EchoRemoval {
    pub fn new(canceller: Box<dyn EchoCanceller>, reference: std::sync::Arc<Reference>) -> Self {
        Self { canceller, reference, far: [0; AUDIO_FRAME_SAMPLES], silent_frames: REST_AFTER_FRAMES }
    }

    /// Whether the canceller is resting (nothing played for a while).
    pub fn resting(&self) -> bool {
        self.silent_frames >= REST_AFTER_FRAMES
    }

    /// One microphone frame: takes the speaker's frame of the same time
    /// (silence if it played nothing) and, unless resting, removes its
    /// echo from `mic`. An error leaves `mic` as it was heard.
    pub fn process(&mut self, mic: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), EchoError> {
        self.reference.take(&mut self.far);
        if self.far.iter().any(|s| s.unsigned_abs() > SILENT_PEAK as u16) {
            self.silent_frames = 0;
        } else {
            self.silent_frames = self.silent_frames.saturating_add(1);
        }
        if self.resting() {
            return Ok(());
        }
        // Chunk by chunk, far end first, as the two were in the room.
        for (far, near) in self.far.chunks_exact(CHUNK_SAMPLES).zip(mic.chunks_exact_mut(CHUNK_SAMPLES)) {
            self.canceller.played(far)?;
            self.canceller.cancel(near)?;
        }
        Ok(())
    }
}
