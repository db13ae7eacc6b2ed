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

/// Speech-like sound: noise shaped into syllables (`syllables_hz` on/off),
/// so an echo canceller meets the pauses of a voice.
pub struct Voice {
    seed: u64,
    low: f32,
    n: u64,
    amplitude: f32,
    syllables_hz: f32,
}

impl Voice {
    pub fn new(seed: u64, amplitude: f32, syllables_hz: f32) -> Voice {
        Voice { seed, low: 0.0, n: 0, amplitude, syllables_hz }
    }

    pub fn frame(&mut self) -> [i16; super::AUDIO_FRAME_SAMPLES] {
        let mut out = [0i16; super::AUDIO_FRAME_SAMPLES];
        for s in out.iter_mut() {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let white = (self.seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            self.low += 0.3 * (white - self.low);
            let t = self.n as f32 / AUDIO_SAMPLE_RATE as f32;
            let syllable = (2.0 * std::f32::consts::PI * self.syllables_hz * t).sin().max(0.0).sqrt();
            *s = (self.low * syllable * self.amplitude) as i16;
            self.n += 1;
        }
        out
    }
}

/// A room for the echo canceller: a viewer's voice from the speaker comes
/// back into the microphone `delay_ms` later (rounded to 20 ms frames),
/// `echo_gain` softer; from `near_from_s` on someone in the room talks too.
/// Energies are summed from `judged_from_s` on.
#[derive(Clone, Copy, Debug)]
pub struct EchoRoom {
    pub delay_ms: u32,
    pub echo_gain: f32,
    pub near_from_s: f32,
    pub judged_from_s: f32,
}

/// What the microphone heard, what came out of the canceller, and what the
/// near-end talker said, summed over the frames judged.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoEnergies {
    pub mic: f64,
    pub out: f64,
    pub near: f64,
}

impl EchoEnergies {
    /// Echo return loss enhancement: what the canceller took away, dB.
    pub fn erle_db(&self) -> f64 {
        10.0 * (self.mic / self.out.max(1.0)).log10()
    }

    /// What came out against what the near-end talker said, dB (0: all of it).
    pub fn near_kept_db(&self) -> f64 {
        10.0 * (self.out / self.near.max(1.0)).log10()
    }
}

impl EchoRoom {
    pub fn run(&self, seconds: f32) -> EchoEnergies {
        use super::AUDIO_FRAME_SAMPLES;
        let energy = |pcm: &[i16]| pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>();
        let (mut canceller, played) = super::echo_canceller::EchoCanceller::new();
        let mut far = Voice::new(0x9e37_79b9_7f4a_7c15, 8000.0, 4.0);
        let mut near = Voice::new(0x1234_5678_9abc_def1, 6000.0, 3.0);
        let delay_frames = (self.delay_ms / 20) as usize;
        let mut in_flight = std::collections::VecDeque::new();
        let frame_s = AUDIO_FRAME_SAMPLES as f32 / AUDIO_SAMPLE_RATE as f32;
        let mut e = EchoEnergies::default();
        for i in 0..(seconds / frame_s) as usize {
            let t = i as f32 * frame_s;
            let speaker = far.frame();
            played.played(&speaker);
            in_flight.push_back(speaker);
            let echo = if in_flight.len() > delay_frames { in_flight.pop_front() } else { None };
            let talker = (t >= self.near_from_s).then(|| near.frame());
            let mut mic = [0i16; AUDIO_FRAME_SAMPLES];
            for (j, s) in mic.iter_mut().enumerate() {
                let echo = echo.map_or(0.0, |e| f32::from(e[j]) * self.echo_gain);
                let talker = talker.map_or(0.0, |t| f32::from(t[j]));
                *s = (echo + talker).clamp(-32_768.0, 32_767.0) as i16;
            }
            let heard = mic;
            canceller.cancel(&mut mic).expect("the canceller takes 20 ms frames");
            if t >= self.judged_from_s {
                e.mic += energy(&heard);
                e.out += energy(&mic);
                e.near += talker.map_or(0.0, |t| energy(&t));
            }
        }
        e
    }
}
