//! Level and dominant tone of 48 kHz mono PCM: the talk-back floor judges
//! who is talking by level, and the null speaker (and the tests) say what
//! actually came out the other end.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Below this RMS level a signal counts as silence (no tone is reported).
pub const SILENCE_FLOOR_DBFS: f32 = -50.0;

/// What [`rms_dbfs`] returns for digital silence, so logs and JSON never
/// carry `-inf` (1 LSB of RMS is already about -90 dBFS).
pub const MIN_DBFS: f32 = -100.0;

/// RMS level in dBFS, where 0 dBFS is a full-scale square wave (a
/// full-scale sine is -3 dBFS). Silence and empty input give [`MIN_DBFS`].
pub fn rms_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return MIN_DBFS;
    }
    let sum_sq: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum_sq / pcm.len() as f64).sqrt() / 32_768.0;
    if rms <= 0.0 {
        return MIN_DBFS;
    }
    (20.0 * rms.log10()).max(f64::from(MIN_DBFS)) as f32
}

/// The strongest frequency in `pcm` (Hz), or `None` for silence (RMS below
/// [`SILENCE_FLOOR_DBFS`]) or too little input. With a 1 s window the
/// error is well under 1 Hz for a clean tone: Hann window, zero padding to
/// a power of two, then Gaussian interpolation between the peak bins.
pub fn dominant_frequency(pcm: &[i16], sample_rate: u32) -> Option<f32> {
    if pcm.len() < 64 || sample_rate == 0 || rms_dbfs(pcm) < SILENCE_FLOOR_DBFS {
        return None;
    }
    let n = pcm.len().next_power_of_two();
    let mean = pcm.iter().map(|&s| f64::from(s)).sum::<f64>() / pcm.len() as f64;
    let len = pcm.len() as f32;
    let mut buf: Vec<Complex<f32>> = pcm
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (len - 1.0)).cos();
            Complex::new((f64::from(s) - mean) as f32 * w, 0.0)
        })
        .collect();
    buf.resize(n, Complex::new(0.0, 0.0));
    FftPlanner::<f32>::new().plan_fft_forward(n).process(&mut buf);

    let bin_hz = sample_rate as f32 / n as f32;
    // Skip the lowest bins: what is left of DC and rumble is not a "tone".
    let first = ((20.0 / bin_hz).ceil() as usize).max(1);
    let last = n / 2 - 1;
    if first + 1 >= last {
        return None;
    }
    let mag = |k: usize| buf[k].norm_sqr().max(f32::MIN_POSITIVE).ln();
    let peak = (first..last).max_by(|&a, &b| buf[a].norm_sqr().total_cmp(&buf[b].norm_sqr()))?;
    let (a, b, c) = (mag(peak - 1), mag(peak), mag(peak + 1));
    let denom = a - 2.0 * b + c;
    let delta = if denom.abs() > f32::EPSILON { (0.5 * (a - c) / denom).clamp(-0.5, 0.5) } else { 0.0 };
    Some((peak as f32 + delta) * bin_hz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::AUDIO_SAMPLE_RATE;
    use crate::media::fixtures::sine;

    #[test]
    fn rms_of_known_signals() {
        assert_eq!(rms_dbfs(&[]), MIN_DBFS);
        assert_eq!(rms_dbfs(&[0; 480]), MIN_DBFS);
        let square: Vec<i16> = (0..4800).map(|i| if i % 2 == 0 { 16_384 } else { -16_384 }).collect();
        assert!((rms_dbfs(&square) - -6.02).abs() < 0.05, "{}", rms_dbfs(&square));
        let s = sine(1000.0, 32_767.0 * 0.251_188_6, 48_000, 0); // -12 dBFS peak
        assert!((rms_dbfs(&s) - -15.01).abs() < 0.1, "{}", rms_dbfs(&s));
    }

    #[test]
    fn dominant_frequency_is_accurate() {
        for &f in &[100.0f32, 440.0, 660.0, 1234.0, 3000.0, 7999.0] {
            let s = sine(f, 8_000.0, 48_000, 0);
            let got = dominant_frequency(&s, AUDIO_SAMPLE_RATE).expect("tone");
            assert!((got - f).abs() < 1.0, "want {f}, got {got}");
        }
        // Short windows are coarser but still close.
        let s = sine(660.0, 8_000.0, 9_600, 0);
        let got = dominant_frequency(&s, AUDIO_SAMPLE_RATE).expect("tone");
        assert!((got - 660.0).abs() < 5.0, "got {got}");
        // The louder of two tones wins.
        let a = sine(500.0, 2_000.0, 48_000, 0);
        let b = sine(2_500.0, 9_000.0, 48_000, 0);
        let mix: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let got = dominant_frequency(&mix, AUDIO_SAMPLE_RATE).expect("tone");
        assert!((got - 2_500.0).abs() < 1.0, "got {got}");
    }

    #[test]
    fn dominant_frequency_none_for_silence_or_tiny_input() {
        assert_eq!(dominant_frequency(&[0; 48_000], AUDIO_SAMPLE_RATE), None);
        // -60 dBFS-ish hum is "silence".
        assert_eq!(dominant_frequency(&sine(440.0, 40.0, 48_000, 0), AUDIO_SAMPLE_RATE), None);
        assert_eq!(dominant_frequency(&[1000; 10], AUDIO_SAMPLE_RATE), None);
        assert_eq!(dominant_frequency(&sine(440.0, 8000.0, 4800, 0), 0), None);
    }
}
