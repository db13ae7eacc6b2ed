//! The test microphone (`--microphone test`): a tone in real time.

use std::time::Duration;

use super::Pacer;
use crate::media::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioSource, MediaError};

#[cfg(doc)]
use crate::media::analysis::rms_dbfs;

/// A sine "microphone": peak at -12 dBFS (RMS ≈ -15 dBFS by [`rms_dbfs`]),
/// one 20 ms frame every 20 ms of wall time.
pub struct ToneSource {
    step: f64,
    phase: f64,
    amplitude: f64,
    pacer: Pacer,
}

impl ToneSource {
    pub fn new(freq_hz: f32) -> Self {
        let rate = AUDIO_SAMPLE_RATE / AUDIO_FRAME_SAMPLES as u32;
        Self {
            step: 2.0 * std::f64::consts::PI * f64::from(freq_hz) / f64::from(AUDIO_SAMPLE_RATE),
            phase: 0.0,
            amplitude: 32_767.0 * 10f64.powf(-12.0 / 20.0),
            // Frame n is complete at (n + 1) × 20 ms, as with a real capture
            // device; 200 ms of lateness is roughly where an ALSA buffer overruns.
            pacer: Pacer::new(rate, 1, Duration::from_millis(200)),
        }
    }

    pub fn without_pacing(mut self) -> Self {
        self.pacer.enabled = false;
        self
    }
}

impl AudioSource for ToneSource {
    fn read_frame(&mut self, pcm: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError> {
        self.pacer.wait();
        for s in pcm.iter_mut() {
            *s = (self.amplitude * self.phase.sin()).round() as i16;
            self.phase = (self.phase + self.step) % (2.0 * std::f64::consts::PI);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{dominant_frequency, rms_dbfs};

    #[test]
    fn tone_source_level_frequency_and_continuity() {
        let mut src = ToneSource::new(660.0).without_pacing();
        let mut all = Vec::new();
        let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
        for _ in 0..50 {
            src.read_frame(&mut frame).unwrap();
            all.extend_from_slice(&frame);
        }
        let f = dominant_frequency(&all, AUDIO_SAMPLE_RATE).unwrap();
        assert!((f - 660.0).abs() < 1.0, "{f}");
        assert!((rms_dbfs(&all) - -15.0).abs() < 0.2, "{}", rms_dbfs(&all));
        let peak = all.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((8_150..=8_240).contains(&peak), "peak {peak}");
        // No clicks at frame boundaries: sample-to-sample steps stay below
        // the sine's maximum slope.
        let max_step = all.windows(2).map(|w| (i32::from(w[1]) - i32::from(w[0])).abs()).max().unwrap();
        assert!(max_step < 750, "max step {max_step}");
    }

    #[test]
    fn tone_source_is_real_time() {
        let mut src = ToneSource::new(440.0);
        let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
        for _ in 0..10 {
            src.read_frame(&mut frame).unwrap();
        }
        // One pacer step per frame, frame n complete at (n + 1) × 20 ms: the
        // tenth not before 200 ms (the schedule itself is tested in
        // `synthetic`, on simulated time).
        assert_eq!(src.pacer.next, 11);
        let e = src.pacer.start.elapsed();
        assert!(e >= Duration::from_millis(200), "{e:?}");
    }
}
