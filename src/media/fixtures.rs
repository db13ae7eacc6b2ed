//! What tests, benchmarks and examples use to look at what came out of
//! roomcam, and nothing the daemon itself runs: reading the test pattern's
//! stamp and colour bars back from a decoded picture, recognising the
//! "camera unavailable" picture, a camera-like noise for encode benchmarks,
//! and sine waves. (The synthetic sources the CLI offers are in
//! [`sources::synthetic`](super::sources::synthetic); these are their far
//! side.)

use super::sources::placeholder::PLACEHOLDER_BACKGROUND_Y;
use super::sources::synthetic::test_pattern::{BARS, Layout, STAMP_BITS, Stamp, crc16};
use super::{AUDIO_SAMPLE_RATE, I420Frame};

#[cfg(doc)]
use super::sources::placeholder::camera_unavailable;

/// Mean of a `w`×`h` window of one plane, `None` if it falls outside.
fn mean(plane: &[u8], stride: usize, x0: usize, y0: usize, w: usize, h: usize) -> Option<f32> {
    let mut sum = 0u32;
    for row in y0..y0 + h {
        let start = row.checked_mul(stride)?.checked_add(x0)?;
        sum += plane.get(start..start + w)?.iter().map(|&v| u32::from(v)).sum::<u32>();
    }
    Some(sum as f32 / (w * h) as f32)
}

/// Reads the stamp back from a (possibly decoded, lossy) test-pattern frame.
/// Samples the middle of each block and insists every block be clearly black
/// or clearly white and the CRC match, so a damaged or foreign picture gives
/// `None` rather than a wrong number.
pub fn read_stamp(frame: &I420Frame) -> Option<Stamp> {
    let layout = Layout::new(frame.width, frame.height)?;
    let (luma, _, _) = frame.planes()?;
    let q = layout.block / 4;
    let mut payload = [0u8; 12];
    for i in 0..STAMP_BITS {
        let (x, y) = layout.slot(i);
        let m = mean(luma, layout.width, x + q, y + q, 2 * q, 2 * q)?;
        let bit = if m >= 170.0 {
            true
        } else if m <= 80.0 {
            false
        } else {
            return None;
        };
        if bit {
            payload[i / 8] |= 0x80 >> (i % 8);
        }
    }
    if crc16(&payload[..10]) != u16::from_be_bytes([payload[10], payload[11]]) {
        return None;
    }
    let frame_number = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&payload[4..10]);
    Some(Stamp { frame_number, captured_unix_ms: u64::from_be_bytes(ms) })
}

/// True if the colour bars are where the test pattern puts them, with the
/// right luma and chroma (tolerant enough for lossy coding at modest rates).
pub fn looks_like_test_pattern(frame: &I420Frame) -> bool {
    let Some(layout) = Layout::new(frame.width, frame.height) else { return false };
    let Some((luma, u, v)) = frame.planes() else { return false };
    let cy = (layout.bars_top + layout.bars_bottom) / 2;
    let cstride = layout.width / 2;
    BARS.iter().enumerate().all(|(i, &(ey, eu, ev))| {
        let (x0, x1) = layout.bar_x_range(i);
        let cx = (x0 + x1) / 2;
        let close = |got: Option<f32>, want: u8| got.is_some_and(|g| (g - f32::from(want)).abs() <= 24.0);
        close(mean(luma, layout.width, cx - 4, cy - 4, 8, 8), ey)
            && close(mean(u, cstride, cx / 2 - 2, cy / 2 - 2, 4, 4), eu)
            && close(mean(v, cstride, cx / 2 - 2, cy / 2 - 2, 4, 4), ev)
    })
}

/// True when `frame` looks like [`camera_unavailable`]: the corners are the
/// placeholder grey and the middle band has text-bright pixels.
pub fn looks_like_placeholder(frame: &I420Frame) -> bool {
    let Some((y, _, _)) = frame.planes() else { return false };
    let (w, h) = (frame.width as usize, frame.height as usize);
    let near = |v: u8, want: u8| (i32::from(v) - i32::from(want)).abs() <= 12;
    let corners = [y[w * 2 + 2], y[w * 2 + w - 3], y[(h - 3) * w + 2], y[(h - 3) * w + w - 3]];
    if !corners.iter().all(|&v| near(v, PLACEHOLDER_BACKGROUND_Y)) {
        return false;
    }
    let band = &y[(h / 2 - 2) * w..(h / 2 + 2) * w];
    let bright = band.iter().filter(|&&v| v > 150).count();
    bright > band.len() / 20
}

/// Adds ±4 of xorshift noise to every luma sample, `rng` being the state:
/// the fine detail of a real camera's picture that a flat test pattern
/// lacks, for encode benchmarks (the same sequence on every machine).
pub fn add_luma_noise(frame: &mut I420Frame, rng: &mut u32) {
    let luma = frame.width as usize * frame.height as usize;
    for p in &mut frame.data[..luma] {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 17;
        *rng ^= *rng << 5;
        *p = p.saturating_add((*rng & 7) as u8).saturating_sub(4);
    }
}

/// `samples` of a sine at `freq_hz` with the given peak level, from sample
/// `start` on (48 kHz).
pub fn sine(freq_hz: f32, peak: f32, samples: usize, start: usize) -> Vec<i16> {
    (start..start + samples)
        .map(|i| {
            let t = i as f64 / f64::from(AUDIO_SAMPLE_RATE);
            (f64::from(peak) * (2.0 * std::f64::consts::PI * f64::from(freq_hz) * t).sin()) as i16
        })
        .collect()
}

/// A small deterministic noise source (xorshift), values in [-1, 1).
#[derive(Clone, Debug)]
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn sample(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `samples` (48 kHz) of something like speech, for echo tests: syllables
/// of 120–320 ms, each a harmonic tone (up to 7 kHz, falling 1/n) at a
/// pitch within ±25 % of `pitch_hz` with a slow vibrato, under a
/// half-sine envelope, a little breath noise, and one syllable in five a
/// pause. `peak` is the loudest a syllable gets (of 32767).
pub fn speech_like(samples: usize, pitch_hz: f32, peak: f32, seed: u64) -> Vec<i16> {
    let rate = AUDIO_SAMPLE_RATE as f32;
    let mut noise = Noise::new(seed);
    let mut out = Vec::with_capacity(samples);
    let (mut left, mut len, mut pause, mut pitch, mut loudness) = (0usize, 1usize, false, pitch_hz, 0.0f32);
    let mut phase = 0.0f32;
    // Harmonics 1/n sum to about 2.3 at their peak alignment.
    let scale = peak / 2.3;
    for i in 0..samples {
        if left == 0 {
            pause = noise.sample() < -0.6;
            len = (rate * (0.22 + 0.1 * noise.sample())) as usize;
            left = len;
            pitch = pitch_hz * (1.0 + 0.25 * noise.sample());
            loudness = 0.75 + 0.25 * noise.sample();
        }
        let t = 1.0 - left as f32 / len as f32;
        let envelope = if pause { 0.0 } else { loudness * (std::f32::consts::PI * t).sin() };
        let f = pitch * (1.0 + 0.08 * (2.0 * std::f32::consts::PI * 3.0 * i as f32 / rate).sin());
        phase = (phase + 2.0 * std::f32::consts::PI * f / rate) % (2.0 * std::f32::consts::PI * 64.0);
        let mut s = 0.0;
        let mut h = 1;
        while h <= 12 && pitch * h as f32 <= 7_000.0 {
            s += (phase * h as f32).sin() / h as f32;
            h += 1;
        }
        let v = envelope * (s + 0.1 * noise.sample()) * scale;
        out.push(v.clamp(-32_768.0, 32_767.0) as i16);
        left -= 1;
    }
    out
}

/// A speaker's sound coming back into the microphone: `delay_ms`, then
/// the direct sound at `gain_db` and a reverb tail (a reflection every
/// millisecond for 30 ms, random signs, decaying by 8 ms). Streaming: what
/// goes in comes out `delay_ms` later.
#[derive(Clone, Debug)]
pub struct EchoPath {
    taps: Vec<(usize, f32)>,
    history: std::collections::VecDeque<f32>,
}

impl EchoPath {
    pub fn new(delay_ms: u32, gain_db: f32, seed: u64) -> Self {
        let per_ms = AUDIO_SAMPLE_RATE as usize / 1000;
        let delay = delay_ms as usize * per_ms;
        let gain = 10f32.powf(gain_db / 20.0);
        let mut noise = Noise::new(seed);
        let mut taps = vec![(delay, gain)];
        for ms in 1..=30 {
            let k = ms * per_ms + (noise.sample().abs() * per_ms as f32) as usize / 2;
            taps.push((delay + k, gain * 0.4 * noise.sample() * (-(k as f32) / (8.0 * per_ms as f32)).exp()));
        }
        let longest = taps.iter().map(|&(k, _)| k).max().unwrap_or(0);
        Self { taps, history: std::iter::repeat_n(0.0, longest + 1).collect() }
    }

    /// The echo of `played` (as long as it), `delay_ms` late.
    pub fn process(&mut self, played: &[i16]) -> Vec<i16> {
        played
            .iter()
            .map(|&x| {
                self.history.pop_back();
                self.history.push_front(f32::from(x));
                let y: f32 = self.taps.iter().map(|&(k, g)| g * self.history[k]).sum();
                y.clamp(-32_768.0, 32_767.0) as i16
            })
            .collect()
    }
}

/// Energy ratio of `a` to `b` in dB (`b` silent: +inf).
pub fn energy_ratio_db(a: &[i16], b: &[i16]) -> f64 {
    let e = |x: &[i16]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
    10.0 * (e(a) / e(b)).log10()
}

/// What [`echo_room`] measured.
#[derive(Clone, Copy, Debug)]
pub struct EchoRoom {
    /// Echo removed on far-end-only stretches after 2 s: 2–7 s and 10–14 s.
    pub erle_db: [f64; 2],
    /// The output against the clean near-end talker while both talk (7–10 s).
    pub double_talk_db: f64,
    /// The near-end talker against the echo, 7–10 s, for the record.
    pub near_to_echo_db: f64,
    /// Wall time per 10 ms chunk, `played` and `cancel` together.
    pub us_per_chunk: f64,
}

/// The echo tests' room, through `canceller`: 14 s in which the speaker
/// plays a speech-like voice throughout and it comes back through an
/// [`EchoPath`] (`delay_ms`, `gain_db`) with a little noise; a talker in
/// the room joins from 7 to 10 s, `near_db` louder than the echo (energy
/// over those 3 s).
pub fn echo_room(
    canceller: &mut dyn super::echo::EchoCanceller,
    delay_ms: u32,
    gain_db: f32,
    near_db: f64,
) -> EchoRoom {
    use super::echo::CHUNK_SAMPLES;
    let second = AUDIO_SAMPLE_RATE as usize;
    let n = 14 * second;
    let far = speech_like(n, 140.0, 16_000.0, 1);
    let echo = EchoPath::new(delay_ms, gain_db, 2).process(&far);
    let mut near = vec![0i16; n];
    let (dt0, dt1) = (7 * second, 10 * second);
    let talker = speech_like(dt1 - dt0, 230.0, 16_000.0 * 10f32.powf(gain_db / 20.0), 3);
    let scale = 10f64.powf((near_db - energy_ratio_db(&talker, &echo[dt0..dt1])) / 20.0);
    for (n, t) in near[dt0..dt1].iter_mut().zip(&talker) {
        *n = (f64::from(*t) * scale) as i16;
    }
    let mut noise = Noise::new(4);
    let mic: Vec<i16> = (0..n).map(|i| echo[i] + near[i] + (20.0 * noise.sample()) as i16).collect();
    let mut out = mic.clone();
    let started = std::time::Instant::now();
    for (far, mic) in far.chunks_exact(CHUNK_SAMPLES).zip(out.chunks_exact_mut(CHUNK_SAMPLES)) {
        canceller.played(far).expect("played");
        canceller.cancel(mic).expect("cancel");
    }
    let us_per_chunk = started.elapsed().as_secs_f64() * 1e6 / (n / CHUNK_SAMPLES) as f64;
    let erle = |a: usize, b: usize| energy_ratio_db(&mic[a..b], &out[a..b]);
    EchoRoom {
        erle_db: [erle(2 * second, dt0), erle(dt1, n)],
        double_talk_db: energy_ratio_db(&out[dt0..dt1], &near[dt0..dt1]),
        near_to_echo_db: energy_ratio_db(&near[dt0..dt1], &echo[dt0..dt1]),
        us_per_chunk,
    }
}
