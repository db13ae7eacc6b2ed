//! [`EchoCanceller`] on WebRTC's AEC3 (the crate `sonora`): linear
//! adaptive filters after its own echo-path delay estimator (so the
//! speaker's buffer and the room's delay need not be told), then a
//! suppressor for what is left. Echo canceller only: no noise
//! suppression, no gain control (the sound detector wants the room as it
//! is); AEC3's own high-pass filter stays on (below 80 Hz).

use sonora::config::EchoCanceller as Aec3Settings;
use sonora::{AudioProcessing, Config, StreamConfig};

use super::{CHUNK_SAMPLES, EchoCanceller, EchoError};
use crate::media::AUDIO_SAMPLE_RATE;

pub struct Aec3 {
    apm: AudioProcessing,
    scratch: [i16; CHUNK_SAMPLES],
}

impl Aec3 {
    pub fn new() -> Self {
        let config = Config { echo_canceller: Some(Aec3Settings::default()), ..Config::default() };
        let stream = StreamConfig::new(AUDIO_SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder().config(config).capture_config(stream).render_config(stream).build();
        Self { apm, scratch: [0; CHUNK_SAMPLES] }
    }
}

impl Default for Aec3 {
    fn default() -> Self {
        Self::new()
    }
}

fn chunks(samples: usize) -> Result<(), EchoError> {
    if samples.is_multiple_of(CHUNK_SAMPLES) { Ok(()) } else { Err(EchoError::FrameLength { samples }) }
}

impl EchoCanceller for Aec3 {
    fn played(&mut self, far: &[i16]) -> Result<(), EchoError> {
        chunks(far.len())?;
        for chunk in far.chunks_exact(CHUNK_SAMPLES) {
            self.apm
                .process_render_i16(chunk, &mut self.scratch)
                .map_err(|e| EchoError::Canceller(format!("{e:?}")))?;
        }
        Ok(())
    }

    fn cancel(&mut self, mic: &mut [i16]) -> Result<(), EchoError> {
        chunks(mic.len())?;
        for chunk in mic.chunks_exact_mut(CHUNK_SAMPLES) {
            self.scratch.copy_from_slice(chunk);
            // AEC3 finds the delay itself; the hint is only required to
            // have been given.
            let _ = self.apm.set_stream_delay_ms(0);
            self.apm.process_capture_i16(&self.scratch, chunk).map_err(|e| EchoError::Canceller(format!("{e:?}")))?;
        }
        Ok(())
    }
}
