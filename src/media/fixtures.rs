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
