//! The picture viewers see while the camera is away: dark grey with
//! "CAMERA UNAVAILABLE" in large light letters, so nobody mistakes it for a
//! frozen stream or a dark room.

use std::time::SystemTime;

use crate::media::I420Frame;

/// Background luma; tests look for it
/// ([`looks_like_placeholder`](crate::media::fixtures::looks_like_placeholder)).
pub const PLACEHOLDER_BACKGROUND_Y: u8 = 48;
pub const PLACEHOLDER_TEXT_Y: u8 = 220;
const TEXT: &str = "CAMERA UNAVAILABLE";

/// 5x7 glyphs, one byte per row, low 5 bits, MSB = leftmost.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        _ => [0; 7],
    }
}

/// The placeholder at `width`x`height` (even sizes; `None` otherwise).
pub fn camera_unavailable(width: u32, height: u32, captured_at: SystemTime) -> Option<I420Frame> {
    let mut frame = I420Frame::black(width, height, captured_at)?;
    let (w, h) = (width as usize, height as usize);
    frame.data[..w * h].fill(PLACEHOLDER_BACKGROUND_Y);
    // Each glyph cell is 6 columns (5 + gap); fit the text in 80 % of the width.
    let cells = TEXT.chars().count() * 6;
    let scale = ((w * 8 / 10) / cells).max(1);
    let (tw, th) = (cells * scale, 7 * scale);
    if tw > w || th > h {
        return Some(frame);
    }
    let (x0, y0) = ((w - tw) / 2, (h - th) / 2);
    for (i, c) in TEXT.chars().enumerate() {
        let g = glyph(c);
        for (gy, bits) in g.iter().enumerate() {
            for gx in 0..5 {
                if bits & (0x10 >> gx) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    let row = y0 + gy * scale + dy;
                    let col = x0 + (i * 6 + gx) * scale;
                    frame.data[row * w + col..row * w + col + scale].fill(PLACEHOLDER_TEXT_Y);
                }
            }
        }
    }
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fixtures::looks_like_placeholder;

    #[test]
    fn placeholder_at_common_sizes() {
        for (w, h) in [(320, 240), (640, 480), (1280, 720), (160, 120)] {
            let f = camera_unavailable(w, h, SystemTime::now()).unwrap();
            assert!(looks_like_placeholder(&f), "{w}x{h}");
        }
        let black = I420Frame::black(320, 240, SystemTime::now()).unwrap();
        assert!(!looks_like_placeholder(&black));
        assert!(camera_unavailable(3, 3, SystemTime::now()).is_none());
    }
}
