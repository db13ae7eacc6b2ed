//! Echo cancellation for talk-back: while a viewer talks through the board's
//! speaker, its microphone hears that voice again; without cancelling it the
//! viewer hears themself back a moment later, and the sound detector hears
//! a "cry". WebRTC's AEC3 (the `sonora` port) with what the speaker played
//! as the reference: it finds the delay between the two itself (the ALSA
//! buffers on both sides, the room), so nothing here needs to know it.
//!
//! One thread owns it (the microphone's): the speaker hands over what it
//! played through a bounded queue, drained before each capture frame, so
//! neither thread waits on the other.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use sonora::config::EchoCanceller as Aec3;
use sonora::{AudioProcessing, Config, StreamConfig};

use super::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE};

/// AEC3 works on 10 ms frames.
const HALF: usize = AUDIO_FRAME_SAMPLES / 2;
/// Played frames waiting for the microphone thread: 1 s of 20 ms frames. The
/// microphone reads a frame every 20 ms, so this fills only if it stalls;
/// then the oldest reference is lost, not the speaker's time.
const PLAYED_QUEUE: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("echo canceller: {0:?}")]
    Processing(sonora::Error),
}

/// What the speaker played, for the echo canceller.
#[derive(Clone)]
pub struct PlayedAudio {
    tx: SyncSender<Box<[i16; AUDIO_FRAME_SAMPLES]>>,
}

impl PlayedAudio {
    /// A 20 ms frame as it went to the speaker. Never blocks.
    pub fn played(&self, pcm: &[i16; AUDIO_FRAME_SAMPLES]) {
        match self.tx.try_send(Box::new(*pcm)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            // The microphone thread is behind: this reference is lost, and
            // AEC3 re-converges on the next ones.
            Err(TrySendError::Full(_)) => {}
        }
    }
}

pub struct EchoCanceller {
    apm: AudioProcessing,
    played: Receiver<Box<[i16; AUDIO_FRAME_SAMPLES]>>,
    scratch: [i16; HALF],
}

impl EchoCanceller {
    /// The canceller, and where the speaker tells it what it played.
    pub fn new() -> (EchoCanceller, PlayedAudio) {
        let config = Config { echo_canceller: Some(Aec3::default()), ..Default::default() };
        let stream = StreamConfig::new(AUDIO_SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder().config(config).capture_config(stream).render_config(stream).build();
        let (tx, played) = sync_channel(PLAYED_QUEUE);
        (EchoCanceller { apm, played, scratch: [0; HALF] }, PlayedAudio { tx })
    }

    /// Removes the echo of what was played from a 20 ms microphone frame,
    /// in place.
    pub fn cancel(&mut self, mic: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), EchoError> {
        while let Ok(frame) = self.played.try_recv() {
            self.render(&frame)?;
        }
        for half in mic.chunks_exact_mut(HALF) {
            self.scratch.copy_from_slice(half);
            self.apm.process_capture_i16(&self.scratch, half).map_err(EchoError::Processing)?;
        }
        Ok(())
    }

    /// Nothing played lately: what waits is stale, and would misalign the
    /// next talk-back's first frames.
    pub fn idle(&mut self) {
        while self.played.try_recv().is_ok() {}
    }

    /// Feeds a played frame directly (the caller owns both sides: tests,
    /// benchmarks).
    pub fn render(&mut self, played: &[i16; AUDIO_FRAME_SAMPLES]) -> Result<(), EchoError> {
        for half in played.chunks_exact(HALF) {
            let mut unused = [0i16; HALF];
            self.apm.process_render_i16(half, &mut unused).map_err(EchoError::Processing)?;
        }
        Ok(())
    }

    /// AEC3's own estimate of its echo return loss enhancement, dB.
    pub fn erle_db(&self) -> Option<f64> {
        self.apm.statistics().echo_return_loss_enhancement
    }
}

#[cfg(test)]
mod tests {
    use crate::media::fixtures::EchoRoom;

    #[test]
    fn the_speakers_echo_is_removed_after_two_seconds() {
        // 40 and 120 ms in the room and the buffers, 10 dB softer.
        for delay_ms in [40, 120] {
            let room = EchoRoom { delay_ms, echo_gain: 0.316, near_from_s: f32::INFINITY, judged_from_s: 2.0 };
            let erle = room.run(8.0).erle_db();
            assert!(erle >= 25.0, "ERLE {erle:.1} dB with {delay_ms} ms of delay");
        }
    }
}
