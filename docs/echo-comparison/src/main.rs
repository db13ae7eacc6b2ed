//! Compares sonora (WebRTC AEC3) and aec-rs (speexdsp) on the simulated room
//! of roomcam's echo test (src/media/echo/tests.rs; the signals are copied
//! from src/media/fixtures.rs): ERLE on far-end-only stretches after 2 s
//! (2–7 s and 10–14 s), the output against a clean near-end talker during
//! double talk (7–10 s) at three talker levels, and time per 10 ms chunk.
//!
//! `cargo run --release` here (not part of roomcam's build: aec-rs builds
//! speexdsp; the results are in src/media/echo/mod.rs and its commit).
use std::time::Instant;

const CHUNK: usize = 480;
const SECOND: usize = 48_000;

trait Canceller {
    fn name(&self) -> String;
    fn step(&mut self, far: &[i16], mic: &mut [i16]);
}

struct Sonora(sonora::AudioProcessing, Vec<i16>);
impl Sonora {
    fn new() -> Self {
        let cfg =
            sonora::Config { echo_canceller: Some(sonora::config::EchoCanceller::default()), ..Default::default() };
        let sc = sonora::StreamConfig::new(48_000, 1);
        Sonora(
            sonora::AudioProcessing::builder().config(cfg).capture_config(sc).render_config(sc).build(),
            vec![0; CHUNK],
        )
    }
}
impl Canceller for Sonora {
    fn name(&self) -> String {
        "sonora 0.2.0 (AEC3)".into()
    }
    fn step(&mut self, far: &[i16], mic: &mut [i16]) {
        self.0.process_render_i16(far, &mut self.1).unwrap();
        let _ = self.0.set_stream_delay_ms(0);
        self.1.copy_from_slice(mic);
        self.0.process_capture_i16(&self.1, mic).unwrap();
    }
}

struct Speex(aec_rs::Aec, usize, bool, Vec<i16>);
impl Speex {
    fn new(tail_ms: usize, pre: bool) -> Self {
        let cfg = aec_rs::AecConfig {
            frame_size: CHUNK,
            filter_length: (tail_ms * SECOND / 1000) as i32,
            sample_rate: 48_000,
            enable_preprocess: pre,
        };
        Speex(aec_rs::Aec::new(&cfg), tail_ms, pre, vec![0; CHUNK])
    }
}
impl Canceller for Speex {
    fn name(&self) -> String {
        format!("aec-rs 1.0.0 (speexdsp), {} ms filter{}", self.1, if self.2 { ", preprocessor" } else { "" })
    }
    fn step(&mut self, far: &[i16], mic: &mut [i16]) {
        self.3.copy_from_slice(mic);
        self.0.cancel_echo(&self.3, far, mic);
    }
}

fn run(c: &mut dyn Canceller, delay_ms: u32, gain_db: f32, near_db: f64) -> String {
    let n = 14 * SECOND;
    let far = speech_like(n, 140.0, 16_000.0, 1);
    let echo = EchoPath::new(delay_ms, gain_db, 2).process(&far);
    let mut near = vec![0i16; n];
    let (dt0, dt1) = (7 * SECOND, 10 * SECOND);
    let talker = speech_like(dt1 - dt0, 230.0, 16_000.0 * 10f32.powf(gain_db / 20.0), 3);
    let scale = 10f64.powf((near_db - energy_ratio_db(&talker, &echo[dt0..dt1])) / 20.0);
    for (n, t) in near[dt0..dt1].iter_mut().zip(&talker) {
        *n = (f64::from(*t) * scale) as i16;
    }
    let mut noise = Noise::new(4);
    let mic: Vec<i16> = (0..n).map(|i| echo[i] + near[i] + (20.0 * noise.sample()) as i16).collect();
    let mut out = mic.clone();
    let t = Instant::now();
    for (f, m) in far.chunks_exact(CHUNK).zip(out.chunks_exact_mut(CHUNK)) {
        c.step(f, m);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / (n / CHUNK) as f64;
    let erle = |a: usize, b: usize| energy_ratio_db(&mic[a..b], &out[a..b]);
    format!(
        "ERLE {:5.1} / {:5.1} dB, double talk (talker {:+3.0} dB vs echo) {:+5.1} dB, {:5.1} us/10 ms",
        erle(2 * SECOND, dt0),
        erle(dt1, n),
        near_db,
        energy_ratio_db(&out[dt0..dt1], &near[dt0..dt1]),
        us
    )
}

fn main() {
    let makers: Vec<Box<dyn Fn() -> Box<dyn Canceller>>> = vec![
        Box::new(|| Box::new(Sonora::new())),
        Box::new(|| Box::new(Speex::new(200, false))),
        Box::new(|| Box::new(Speex::new(200, true))),
    ];
    for make in &makers {
        println!("{}", make().name());
        for (delay, gain) in [(30, -6.0), (80, -9.0), (120, -12.0)] {
            for near_db in [-6.0, 0.0, 6.0] {
                println!("  {delay:3} ms {gain:5.1} dB: {}", run(make().as_mut(), delay, gain, near_db));
            }
        }
    }
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
    let rate = 48_000u32 as f32;
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
        let per_ms = 48_000u32 as usize / 1000;
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
