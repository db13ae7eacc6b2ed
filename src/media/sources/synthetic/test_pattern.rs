//! The test pattern (`--camera test`): colour bars, a moving square and a
//! machine-readable stamp (frame number + capture time, CRC-checked) in big
//! macroblock-aligned black/white blocks that survive lossy H.264, so that
//! an end-to-end test can tell from the far side what it received
//! ([`read_stamp`] and [`looks_like_test_pattern`] read a decoded picture
//! back).
//!
//! [`TestPattern::busy`] (`--camera test-busy`) adds what a real camera's
//! picture has and the bare pattern lacks: motion over a whole band and
//! fresh sensor-like noise on every pixel of every frame, so that the encoder
//! needs all the bits it is allowed (the bare pattern compresses to almost
//! nothing, and a rate that follows the network cannot be seen on it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Pacer;
use crate::media::{CameraFrame, I420Frame, MediaError, VideoSource};

#[cfg(doc)]
use crate::media::fixtures::{looks_like_test_pattern, read_stamp};

/// What the test pattern stamps into every picture (and
/// [`read_stamp`](crate::media::fixtures::read_stamp) recovers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub frame_number: u32,
    /// Capture wall-clock time, ms since the UNIX epoch (48 bits are
    /// stamped, which holds any date up to the year 10889 untruncated).
    pub captured_unix_ms: u64,
}

pub(crate) const STAMP_BITS: usize = 32 + 48 + 16;
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const STRIP_Y: u8 = 40;

/// 100 % colour bars, BT.601 video range (Y, U, V): white, yellow, cyan,
/// green, magenta, red, blue, black.
pub(crate) const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
];

/// Geometry shared by the writer and the readers; a pure function of the
/// picture size so a reader needs nothing but the decoded frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) width: usize,
    height: usize,
    /// Stamp block edge: a multiple of 16 so every block is whole macroblocks
    /// and the encoder never mixes black and white inside one.
    pub(crate) block: usize,
    cols: usize,
    rows: usize,
    pub(crate) bars_top: usize,
    pub(crate) bars_bottom: usize,
}

impl Layout {
    pub(crate) fn new(width: u32, height: u32) -> Option<Self> {
        I420Frame::expected_len(width, height)?;
        let (width, height) = (width as usize, height as usize);
        // Bigger blocks on bigger pictures, so the stamp survives scaling and
        // a coarser quantizer; 16 px is the floor (one macroblock).
        let block = 16 * (width / 640).max(1);
        let cols = width / block;
        if cols == 0 {
            return None;
        }
        let rows = STAMP_BITS.div_ceil(cols);
        let bars_top = rows * block;
        let rest = height.checked_sub(bars_top)?;
        if rest < 64 {
            return None;
        }
        let bars_bottom = (bars_top + rest * 3 / 4) & !1;
        Some(Self { width, height, block, cols, rows, bars_top, bars_bottom })
    }

    /// Top-left corner of stamp slot `i` (bits first, then filler).
    pub(crate) fn slot(&self, i: usize) -> (usize, usize) {
        ((i % self.cols) * self.block, (i / self.cols) * self.block)
    }

    pub(crate) fn bar_x_range(&self, i: usize) -> (usize, usize) {
        (i * self.width / 8, (i + 1) * self.width / 8)
    }
}

/// CRC-16/CCITT-FALSE. The non-zero initial value matters: an all-black or
/// all-white band must not pass as a valid stamp.
pub(crate) fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

fn stamp_bits(stamp: Stamp) -> [bool; STAMP_BITS] {
    let mut payload = [0u8; 12];
    payload[..4].copy_from_slice(&stamp.frame_number.to_be_bytes());
    payload[4..10].copy_from_slice(&(stamp.captured_unix_ms & 0xFFFF_FFFF_FFFF).to_be_bytes()[2..]);
    let crc = crc16(&payload[..10]);
    payload[10..].copy_from_slice(&crc.to_be_bytes());
    let mut bits = [false; STAMP_BITS];
    for (i, bit) in bits.iter_mut().enumerate() {
        *bit = payload[i / 8] & (0x80 >> (i % 8)) != 0;
    }
    bits
}

fn fill_luma(y: &mut [u8], stride: usize, x0: usize, y0: usize, w: usize, h: usize, value: u8) {
    for row in y0..y0 + h {
        y[row * stride + x0..row * stride + x0 + w].fill(value);
    }
}

/// Paints the stamp band into the Y plane (chroma there stays neutral).
fn draw_stamp(layout: &Layout, luma: &mut [u8], stamp: Stamp) {
    let bits = stamp_bits(stamp);
    for i in 0..layout.rows * layout.cols {
        let (x, y) = layout.slot(i);
        // Unused slots get a checkerboard so the band reads as a barcode,
        // not as data; readers never look at them.
        let white = bits.get(i).copied().unwrap_or((i / layout.cols + i % layout.cols).is_multiple_of(2));
        fill_luma(luma, layout.width, x, y, layout.block, layout.block, if white { WHITE } else { BLACK });
    }
}

/// Peak of the luma noise [`TestPattern::busy`] adds (±), and of the chroma
/// noise (half of it). Enough that a 640x480 picture at 25 fps fills 1.5
/// Mbit/s, small enough that the stamp blocks (read by their mean, black 16
/// and white 235 against thresholds 80 and 170) and the bars stay readable.
const BUSY_NOISE_PEAK: i16 = 8;
/// How far the busy band's stripes move per frame, in pixels: faster than the
/// square, across the whole strip, so every frame has real motion to code.
const BUSY_STRIPE_STEP: usize = 6;

/// The busy variant's state: its own noise generator (xorshift64, the same
/// sequence on every machine).
#[derive(Debug)]
struct Busy {
    rng: u64,
}

impl Busy {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Adds uniform noise in `-peak..peak` to every sample of `plane`.
    fn add_noise(&mut self, plane: &mut [u8], peak: i16) {
        let span = (2 * peak) as u64;
        for chunk in plane.chunks_mut(8) {
            let mut bits = self.next();
            for p in chunk {
                let n = ((bits & 0xFF) % span) as i16 - peak;
                bits >>= 8;
                *p = (i16::from(*p) + n).clamp(0, 255) as u8;
            }
        }
    }
}

/// A synthetic camera: colour bars, a square sliding along a strip under
/// them (so consecutive frames differ), and a stamp band on top.
pub struct TestPattern {
    layout: Layout,
    fps: u32,
    background: Vec<u8>,
    frame_number: u32,
    pacer: Pacer,
    /// `Some` for [`TestPattern::busy`].
    busy: Option<Busy>,
}

impl TestPattern {
    /// `width`×`height` at `fps`, paced in real time. Needs even dimensions,
    /// at least 320×240 (for the stamp band), at most 3840×2160, 1–120 fps.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        let unsupported = || MediaError::Unsupported(format!("test pattern {width}x{height} at {fps} fps"));
        if !(320..=3840).contains(&width) || !(240..=2160).contains(&height) || !(1..=120).contains(&fps) {
            return Err(unsupported());
        }
        let layout = Layout::new(width, height).ok_or_else(unsupported)?;
        let mut background = I420Frame::black(width, height, UNIX_EPOCH).ok_or_else(unsupported)?.data;
        let (w, h) = (layout.width, layout.height);
        let (luma, chroma) = background.split_at_mut(w * h);
        let (u, v) = chroma.split_at_mut(w * h / 4);
        for (i, &(by, bu, bv)) in BARS.iter().enumerate() {
            let (x0, x1) = layout.bar_x_range(i);
            fill_luma(luma, w, x0, layout.bars_top, x1 - x0, layout.bars_bottom - layout.bars_top, by);
            for row in layout.bars_top / 2..layout.bars_bottom / 2 {
                u[row * w / 2 + x0 / 2..row * w / 2 + x1 / 2].fill(bu);
                v[row * w / 2 + x0 / 2..row * w / 2 + x1 / 2].fill(bv);
            }
        }
        fill_luma(luma, w, 0, layout.bars_bottom, w, h - layout.bars_bottom, STRIP_Y);
        // A late consumer skips frames like a real camera instead of getting a burst.
        let max_lag = Duration::from_nanos(2_000_000_000 / u64::from(fps));
        Ok(Self { layout, fps, background, frame_number: 0, pacer: Pacer::new(fps, 0, max_lag), busy: None })
    }

    /// The pattern with moving stripes under the bars and noise on every
    /// pixel (`--camera test-busy`): a picture that costs a real camera's bits.
    pub fn busy(width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        Ok(Self { busy: Some(Busy { rng: 0x9E37_79B9_7F4A_7C15 }), ..Self::new(width, height, fps)? })
    }

    /// Produce frames as fast as asked (benchmarks, tests).
    pub fn without_pacing(mut self) -> Self {
        self.pacer.enabled = false;
        self
    }

    fn render(&mut self, frame_number: u32, captured_at: SystemTime) -> I420Frame {
        let l = self.layout;
        let mut data = self.background.clone();
        let (luma, chroma) = data.split_at_mut(l.width * l.height);
        let ms = captured_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        draw_stamp(&l, luma, Stamp { frame_number, captured_unix_ms: ms });
        let strip_h = l.height - l.bars_bottom;
        if self.busy.is_some() {
            // Diagonal stripes sliding along the whole strip under the bars.
            let shift = (frame_number as usize).wrapping_mul(BUSY_STRIPE_STEP);
            for row in l.bars_bottom..l.height {
                for (x, p) in luma[row * l.width..(row + 1) * l.width].iter_mut().enumerate() {
                    *p = if ((x + row + shift) / 12) % 2 == 0 { 60 } else { 180 };
                }
            }
        }
        // The square crosses the picture in about four seconds.
        let size = (strip_h * 3 / 4).min(l.width / 4).max(2);
        let travel = l.width - size;
        let step = (l.width / (self.fps as usize * 4)).max(1);
        let x = (frame_number as usize).wrapping_mul(step) % travel.max(1);
        let y = l.bars_bottom + (strip_h - size) / 2;
        fill_luma(luma, l.width, x, y, size, size, WHITE);
        if let Some(busy) = self.busy.as_mut() {
            busy.add_noise(luma, BUSY_NOISE_PEAK);
            busy.add_noise(chroma, BUSY_NOISE_PEAK / 2);
        }
        I420Frame { width: l.width as u32, height: l.height as u32, data, captured_at }
    }
}

impl TestPattern {
    /// Waits until the next frame is due, then draws it.
    pub fn next_picture(&mut self) -> I420Frame {
        self.pacer.wait();
        let frame = self.render(self.frame_number, SystemTime::now());
        self.frame_number = self.frame_number.wrapping_add(1);
        frame
    }
}

impl VideoSource for TestPattern {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        Ok(CameraFrame::Picture(self.next_picture()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fixtures::{looks_like_test_pattern, read_stamp};

    fn unix_ms(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[test]
    fn crc16_matches_reference_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn stamp_roundtrips_at_common_sizes() {
        for &(w, h) in &[(320, 240), (640, 480), (1280, 720), (1920, 1080), (336, 256)] {
            let mut tp = TestPattern::new(w, h, 30).unwrap();
            let t = SystemTime::now();
            for &n in &[0u32, 1, 0xDEAD_BEEF, u32::MAX] {
                let f = tp.render(n, t);
                assert_eq!(f.data.len(), I420Frame::expected_len(w, h).unwrap());
                let s = read_stamp(&f).unwrap_or_else(|| panic!("no stamp at {w}x{h}"));
                assert_eq!(s, Stamp { frame_number: n, captured_unix_ms: unix_ms(t) }, "{w}x{h}");
                assert!(looks_like_test_pattern(&f), "{w}x{h}");
            }
        }
    }

    #[test]
    fn stamp_blocks_are_at_least_a_macroblock() {
        for &(w, h) in &[(320, 240), (640, 480), (1280, 720)] {
            let l = Layout::new(w, h).unwrap();
            assert!(l.block >= 16 && l.block.is_multiple_of(16));
            assert!(l.rows * l.cols >= STAMP_BITS);
            // The band leaves most of the picture to the bars and the strip.
            assert!(l.bars_top * 3 <= l.height, "{w}x{h}: band {}", l.bars_top);
        }
    }

    #[test]
    fn damaged_or_foreign_pictures_give_no_stamp() {
        let mut tp = TestPattern::new(640, 480, 30).unwrap();
        let good = tp.render(1234, SystemTime::now());
        let l = tp.layout;

        // Flip one block cleanly: every block still reads as black or white,
        // so only the CRC can catch it.
        for bit in [0usize, 40, 95] {
            let mut f = good.clone();
            let (x, y) = l.slot(bit);
            let was_white = f.data[(y + 8) * l.width + x + 8] == WHITE;
            fill_luma(&mut f.data, l.width, x, y, l.block, l.block, if was_white { BLACK } else { WHITE });
            assert_eq!(read_stamp(&f), None, "flipped bit {bit}");
        }
        // A grey (ambiguous) block.
        let mut f = good.clone();
        fill_luma(&mut f.data, l.width, 0, 0, l.block, l.block, 128);
        assert_eq!(read_stamp(&f), None);

        let black = I420Frame::black(640, 480, SystemTime::now()).unwrap();
        assert_eq!(read_stamp(&black), None);
        assert!(!looks_like_test_pattern(&black));
        let mut white = black.clone();
        white.data[..640 * 480].fill(WHITE);
        assert_eq!(read_stamp(&white), None);
        assert!(!looks_like_test_pattern(&white));

        // Wrong buffer size must not panic.
        let mut short = good.clone();
        short.data.truncate(1000);
        assert_eq!(read_stamp(&short), None);
        assert!(!looks_like_test_pattern(&short));
        let odd = I420Frame { width: 641, height: 480, data: vec![0; 10], captured_at: SystemTime::now() };
        assert_eq!(read_stamp(&odd), None);
    }

    #[test]
    fn bars_check_notices_wrong_colours() {
        let mut tp = TestPattern::new(640, 480, 30).unwrap();
        let mut f = tp.render(0, SystemTime::now());
        assert!(looks_like_test_pattern(&f));
        // Swap U and V: luma unchanged, colours wrong.
        let (_, chroma) = f.data.split_at_mut(640 * 480);
        let (u, v) = chroma.split_at_mut(640 * 480 / 4);
        u.swap_with_slice(v);
        assert!(!looks_like_test_pattern(&f));
    }

    #[test]
    fn frames_move_and_are_paced() {
        let mut tp = TestPattern::new(320, 240, 50).unwrap();
        let frames: Vec<I420Frame> = (0..11).map(|_| tp.next_picture()).collect();
        // 11 frames at 50 fps, one pacer step each: the first is immediate,
        // the last is not drawn before 200 ms (the schedule itself is
        // tested in `synthetic`, on simulated time).
        assert_eq!(tp.pacer.next, 11);
        let elapsed = tp.pacer.start.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(read_stamp(f).unwrap().frame_number, i as u32);
        }
        // The picture outside the stamp band changes (the moving square).
        let band = tp.layout.bars_top * 320;
        assert_ne!(frames[0].data[band..], frames[5].data[band..]);
        let stamp_ms = read_stamp(&frames[10]).unwrap().captured_unix_ms;
        assert_eq!(stamp_ms, unix_ms(frames[10].captured_at));
    }

    #[test]
    fn busy_pattern_keeps_its_stamp_and_bars_and_never_repeats() {
        let mut tp = TestPattern::busy(640, 480, 25).unwrap();
        let t = SystemTime::now();
        let a = tp.render(7, t);
        let b = tp.render(7, t);
        assert_eq!(read_stamp(&a), Some(Stamp { frame_number: 7, captured_unix_ms: unix_ms(t) }));
        assert!(looks_like_test_pattern(&a) && looks_like_test_pattern(&b));
        // Same frame number, same stamp: only the noise differs, and it is on
        // (nearly) every pixel.
        let differing = a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
        assert!(differing > a.data.len() * 3 / 4, "{differing} of {} samples differ", a.data.len());
    }

    #[test]
    fn rejects_unsupported_sizes() {
        for &(w, h, fps) in &[(321, 240, 30), (160, 120, 30), (640, 480, 0), (8000, 480, 30), (320, 100, 30)] {
            assert!(matches!(TestPattern::new(w, h, fps), Err(MediaError::Unsupported(_))), "{w}x{h}@{fps}");
        }
    }
}
