//! A recorded microphone (`--microphone wav:PATH`): a WAV file, looped, in
//! real time, for demos and for tests that need real sounds (a fan, a cry,
//! speech) rather than a tone. Any rate and channel count: the file is mixed
//! down to mono and resampled to 48 kHz once, when it is opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Pacer;
use crate::media::alsa_pcm::{RateConverter, to_i16};
use crate::media::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioSource, MediaError};

/// The prefix that names a WAV file as the microphone (`file:` is taken:
/// ALSA has a plugin by that name).
pub const WAV_PREFIX: &str = "wav:";

pub struct WavSource {
    samples: Vec<i16>,
    position: usize,
    pacer: Pacer,
}

impl WavSource {
    pub fn open(path: &Path) -> Result<WavSource, MediaError> {
        let error = |reason: String| MediaError::Device { device: format!("{WAV_PREFIX}{}", path.display()), reason };
        let mut reader = hound::WavReader::open(path).map_err(|e| error(e.to_string()))?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        // Every format as f32 on the i16 scale.
        let interleaved: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .samples::<f32>()
                .map(|s| s.map(|v| v * 32_768.0))
                .collect::<Result<_, _>>()
                .map_err(|e| error(e.to_string()))?,
            hound::SampleFormat::Int => {
                let scale = 2f32.powi(16 - i32::from(spec.bits_per_sample));
                reader
                    .samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
                    .map_err(|e| error(e.to_string()))?
            }
        };
        let mono: Vec<f32> =
            interleaved.chunks(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect();
        if mono.is_empty() {
            return Err(error("the file holds no samples".into()));
        }
        let samples = if spec.sample_rate == AUDIO_SAMPLE_RATE {
            mono.into_iter().map(to_i16).collect()
        } else {
            resample(&mono, spec.sample_rate).map_err(|e| error(e.to_string()))?
        };
        let rate = AUDIO_SAMPLE_RATE / AUDIO_FRAME_SAMPLES as u32;
        Ok(WavSource { samples, position: 0, pacer: Pacer::new(rate, 1, Duration::from_millis(200)) })
    }

    /// `wav:PATH` → PATH.
    pub fn path_of(name: &str) -> Option<PathBuf> {
        name.strip_prefix(WAV_PREFIX).filter(|p| !p.is_empty()).map(PathBuf::from)
    }

    pub fn without_pacing(mut self) -> Self {
        self.pacer.enabled = false;
        self
    }
}

fn resample(mono: &[f32], from: u32) -> Result<Vec<i16>, MediaError> {
    let mut converter = RateConverter::new(from, AUDIO_SAMPLE_RATE)?;
    converter.push(mono.iter().copied());
    // The resampler works in chunks and holds some back: flush it with silence.
    converter.push(std::iter::repeat_n(0.0, from as usize / 10));
    let wanted = (mono.len() as u64 * u64::from(AUDIO_SAMPLE_RATE) / u64::from(from)) as usize;
    Ok(std::iter::from_fn(|| converter.pop()).map(to_i16).take(wanted).collect())
}

impl AudioSource for WavSource {
    fn read_frame(&mut self, pcm: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError> {
        self.pacer.wait();
        for sample in pcm.iter_mut() {
            *sample = self.samples[self.position];
            self.position = (self.position + 1) % self.samples.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{dominant_frequency, rms_dbfs};

    fn write_wav(path: &Path, rate: u32, channels: u16, seconds: f32, hz: f32) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..(rate as f32 * seconds) as u32 {
            let v = (8000.0 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()) as i16;
            for _ in 0..channels {
                writer.write_sample(v).unwrap();
            }
        }
        writer.finalize().unwrap();
    }

    fn read(source: &mut WavSource, frames: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
        for _ in 0..frames {
            source.read_frame(&mut frame).unwrap();
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn a_stereo_44k1_file_plays_at_48k_mono_and_loops() {
        let dir = std::env::temp_dir().join(format!("roomcam-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        write_wav(&path, 44_100, 2, 0.5, 600.0);
        let mut source = WavSource::open(&path).unwrap().without_pacing();
        // 0.5 s of file, 2 s read: it loops, and stays the same tone at its level.
        let pcm = read(&mut source, 100);
        assert_eq!(source.samples.len(), 24_000, "0.5 s at 48 kHz");
        let hz = dominant_frequency(&pcm[4_800..28_800], 48_000).unwrap();
        assert!((hz - 600.0).abs() < 5.0, "{hz}");
        let level = rms_dbfs(&pcm[48_000..72_000]);
        assert!((level - rms_dbfs(&pcm[4_800..28_800])).abs() < 1.0, "the loop is as loud: {level}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_or_broken_file_is_a_clear_error() {
        let err = WavSource::open(Path::new("/nonexistent/cry.wav")).err().unwrap().to_string();
        assert!(err.contains("wav:/nonexistent/cry.wav"), "{err}");
        let path = std::env::temp_dir().join(format!("roomcam-not-a-wav-{}", std::process::id()));
        std::fs::write(&path, b"RIFF but not really").unwrap();
        assert!(WavSource::open(&path).is_err());
        std::fs::remove_file(&path).ok();
        assert_eq!(WavSource::path_of("wav:/a/b.wav"), Some(PathBuf::from("/a/b.wav")));
        assert_eq!(WavSource::path_of("wav:"), None);
        assert_eq!(WavSource::path_of("default"), None);
    }
}
