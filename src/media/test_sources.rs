//! Stand-ins for the camera, microphone and speaker, built so that an
//! end-to-end test can tell from the far side what it received:
//!
//! * [`TestPattern`] draws colour bars, a moving square and a machine-readable
//!   stamp (frame number + capture time, CRC-checked) in big macroblock-aligned
//!   black/white blocks that survive lossy H.264; [`read_stamp`] and
//!   [`looks_like_test_pattern`] read a decoded picture back.
//! * [`ToneSource`] is a real-time sine; [`NullSpeaker`] measures what it is
//!   played (level and dominant tone) and logs it once per second of audio.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::audio::{SILENCE_FLOOR_DBFS, dominant_frequency, rms_dbfs};
use super::video::{H264Encoder, H264Settings, nal_units};
use super::{
    AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioSink, AudioSource, CameraFrame, I420Frame, KeyframeRequest,
    MediaError, VideoEncoder, VideoSource,
};

// ---------------------------------------------------------------------------
// Real-time pacing

/// Releases item `n` at `start + n / rate`, computed from the start each
/// time so rounding never accumulates into drift. If the consumer falls more
/// than `max_lag` behind (it paused, or the machine stalled) the schedule is
/// re-anchored instead of bursting out the backlog, as a real device would
/// drop rather than replay.
struct Pacer {
    rate: u64,
    start: Instant,
    next: u64,
    max_lag: Duration,
    enabled: bool,
}

impl Pacer {
    fn new(rate: u32, first: u64, max_lag: Duration) -> Self {
        Self { rate: u64::from(rate.max(1)), start: Instant::now(), next: first, max_lag, enabled: true }
    }

    fn due(&self, n: u64) -> Duration {
        Duration::from_nanos((u128::from(n) * 1_000_000_000 / u128::from(self.rate)) as u64)
    }

    fn wait(&mut self) {
        if !self.enabled {
            return;
        }
        let due = self.start + self.due(self.next);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now - due > self.max_lag {
            self.start = now.checked_sub(self.due(self.next)).unwrap_or(now);
        }
        self.next += 1;
    }
}

// ---------------------------------------------------------------------------
// Video: colour bars + moving square + stamp

/// What [`read_stamp`] recovers from a test-pattern picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub frame_number: u32,
    /// Capture wall-clock time, ms since the UNIX epoch (48 bits are
    /// stamped, which holds any date up to the year 10889 untruncated).
    pub captured_unix_ms: u64,
}

const STAMP_BITS: usize = 32 + 48 + 16;
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const STRIP_Y: u8 = 40;

/// 100 % colour bars, BT.601 video range (Y, U, V): white, yellow, cyan,
/// green, magenta, red, blue, black.
const BARS: [(u8, u8, u8); 8] = [
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
struct Layout {
    width: usize,
    height: usize,
    /// Stamp block edge: a multiple of 16 so every block is whole macroblocks
    /// and the encoder never mixes black and white inside one.
    block: usize,
    cols: usize,
    rows: usize,
    bars_top: usize,
    bars_bottom: usize,
}

impl Layout {
    fn new(width: u32, height: u32) -> Option<Self> {
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
    fn slot(&self, i: usize) -> (usize, usize) {
        ((i % self.cols) * self.block, (i / self.cols) * self.block)
    }

    fn bar_x_range(&self, i: usize) -> (usize, usize) {
        (i * self.width / 8, (i + 1) * self.width / 8)
    }
}

/// CRC-16/CCITT-FALSE. The non-zero initial value matters: an all-black or
/// all-white band must not pass as a valid stamp.
fn crc16(data: &[u8]) -> u16 {
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

/// A synthetic camera: colour bars, a square sliding along a strip under
/// them (so consecutive frames differ), and a stamp band on top.
pub struct TestPattern {
    layout: Layout,
    fps: u32,
    background: Vec<u8>,
    frame_number: u32,
    pacer: Pacer,
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
        Ok(Self { layout, fps, background, frame_number: 0, pacer: Pacer::new(fps, 0, max_lag) })
    }

    /// Produce frames as fast as asked (benchmarks, tests).
    pub fn without_pacing(mut self) -> Self {
        self.pacer.enabled = false;
        self
    }

    fn render(&self, frame_number: u32, captured_at: SystemTime) -> I420Frame {
        let l = &self.layout;
        let mut data = self.background.clone();
        let luma = &mut data[..l.width * l.height];
        let ms = captured_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        draw_stamp(l, luma, Stamp { frame_number, captured_unix_ms: ms });
        // The square crosses the picture in about four seconds.
        let strip_h = l.height - l.bars_bottom;
        let size = (strip_h * 3 / 4).min(l.width / 4).max(2);
        let travel = l.width - size;
        let step = (l.width / (self.fps as usize * 4)).max(1);
        let x = (frame_number as usize).wrapping_mul(step) % travel.max(1);
        let y = l.bars_bottom + (strip_h - size) / 2;
        fill_luma(luma, l.width, x, y, size, size, WHITE);
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

/// A camera with its own H.264 encoder (`--camera test-h264`), behaving the
/// way UVC H.264 cameras do: the stamped test pattern, an IDR every `gop`,
/// SPS/PPS only with the first one, and (unless `honours_keyframe_requests`)
/// no way to ask for an IDR. Exercises the passthrough path without one.
pub struct H264TestCamera {
    pattern: TestPattern,
    encoder: H264Encoder,
    honours_keyframe_requests: bool,
    keyframe_requested: bool,
    sent_parameter_sets: bool,
}

impl H264TestCamera {
    pub fn new(
        width: u32,
        height: u32,
        fps: u32,
        gop: Duration,
        honours_keyframe_requests: bool,
    ) -> Result<Self, MediaError> {
        let encoder = H264Encoder::new(H264Settings {
            width,
            height,
            fps,
            bitrate_kbps: 800,
            keyframe_interval: Some(gop),
            allow_frame_skip: false,
            ..H264Settings::default()
        })?;
        Ok(Self {
            pattern: TestPattern::new(width, height, fps)?,
            encoder,
            honours_keyframe_requests,
            keyframe_requested: false,
            sent_parameter_sets: false,
        })
    }

    pub fn without_pacing(mut self) -> Self {
        self.pattern = self.pattern.without_pacing();
        self
    }
}

impl VideoSource for H264TestCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        loop {
            let picture = self.pattern.next_picture();
            let force = std::mem::take(&mut self.keyframe_requested);
            let Some(mut au) = self.encoder.encode(&picture, force)? else { continue };
            if self.sent_parameter_sets {
                let without_sets: Vec<u8> = nal_units(&au.data)
                    .filter(|nal| !matches!(nal.first().map(|h| h & 0x1F), Some(7 | 8)))
                    .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
                    .collect();
                au.data = without_sets.into();
            }
            self.sent_parameter_sets |= au.keyframe;
            return Ok(CameraFrame::H264(au));
        }
    }

    fn request_keyframe(&mut self) -> KeyframeRequest {
        if self.honours_keyframe_requests {
            self.keyframe_requested = true;
            KeyframeRequest::Forced
        } else {
            KeyframeRequest::Unsupported
        }
    }
}

// ---------------------------------------------------------------------------
// Audio

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

/// One measurement of what the speaker was played.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeakerReport {
    /// Total audio received so far (not just this window).
    pub seconds_received: f64,
    pub rms_dbfs: f32,
    /// Dominant frequency of the window, `None` when it was silent.
    pub tone_hz: Option<f32>,
}

impl SpeakerReport {
    /// The exact log line format, which external tests parse.
    pub fn log_line(&self) -> String {
        let tone = match self.tone_hz {
            Some(hz) => format!("{hz:.0} Hz"),
            None => "none".to_owned(),
        };
        format!("speaker: {:.1}s received, rms {:.1} dBFS, tone {tone}", self.seconds_received, self.rms_dbfs)
    }

    /// Parses a line produced by [`SpeakerReport::log_line`] (it may be
    /// embedded in a longer log line).
    pub fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.find("speaker: ")? + "speaker: ".len()..];
        let (secs, rest) = rest.split_once("s received, rms ")?;
        let (rms, rest) = rest.split_once(" dBFS, tone ")?;
        let tone = rest.trim();
        let tone_hz = if tone == "none" { None } else { Some(tone.strip_suffix(" Hz")?.parse().ok()?) };
        Some(Self { seconds_received: secs.parse().ok()?, rms_dbfs: rms.parse().ok()?, tone_hz })
    }
}

#[derive(Clone, Debug, Default)]
pub struct SpeakerStats {
    pub samples_received: u64,
    pub writes: u64,
    pub reports: u64,
    pub last_report: Option<SpeakerReport>,
}

impl SpeakerStats {
    pub fn seconds_received(&self) -> f64 {
        self.samples_received as f64 / f64::from(AUDIO_SAMPLE_RATE)
    }
}

/// A speaker that plays nothing but measures everything: after each second
/// of received audio it logs one [`SpeakerReport::log_line`] at info level
/// and updates the shared [`SpeakerStats`].
pub struct NullSpeaker {
    window: Vec<i16>,
    stats: Arc<Mutex<SpeakerStats>>,
}

impl Default for NullSpeaker {
    fn default() -> Self {
        Self::new()
    }
}

impl NullSpeaker {
    const WINDOW: usize = AUDIO_SAMPLE_RATE as usize;

    pub fn new() -> Self {
        Self { window: Vec::with_capacity(Self::WINDOW * 2), stats: Arc::default() }
    }

    /// A handle on the live statistics, for in-process tests.
    pub fn stats(&self) -> Arc<Mutex<SpeakerStats>> {
        Arc::clone(&self.stats)
    }
}

impl AudioSink for NullSpeaker {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.window.extend_from_slice(pcm);
        let mut stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stats.samples_received += pcm.len() as u64;
        stats.writes += 1;
        while self.window.len() >= Self::WINDOW {
            let win = &self.window[..Self::WINDOW];
            let level = rms_dbfs(win);
            let tone_hz = if level < SILENCE_FLOOR_DBFS { None } else { dominant_frequency(win, AUDIO_SAMPLE_RATE) };
            // Report the total up to the end of this window, not including
            // samples still waiting in the next one.
            let pending = (self.window.len() - Self::WINDOW) as u64;
            let report = SpeakerReport {
                seconds_received: (stats.samples_received - pending) as f64 / f64::from(AUDIO_SAMPLE_RATE),
                rms_dbfs: level,
                tone_hz,
            };
            // Silence every second would bury the journal; sound is news.
            let level = if report.tone_hz.is_some() { log::Level::Info } else { log::Level::Debug };
            log::log!(level, "{}", report.log_line());
            stats.reports += 1;
            stats.last_report = Some(report);
            self.window.drain(..Self::WINDOW);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::sine;

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
            let tp = TestPattern::new(w, h, 30).unwrap();
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
        let tp = TestPattern::new(640, 480, 30).unwrap();
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
        let tp = TestPattern::new(640, 480, 30).unwrap();
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
        let t0 = Instant::now();
        let frames: Vec<I420Frame> = (0..11).map(|_| tp.next_picture()).collect();
        let elapsed = t0.elapsed();
        // 11 frames at 50 fps: the first is immediate, the last due at 200 ms.
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
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
    fn pacer_does_not_drift() {
        // 100 items at 1 kHz with a sleeping consumer: the total stays near
        // 100 ms because each deadline is computed from the start.
        let mut p = Pacer::new(1000, 0, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..=100 {
            p.wait();
        }
        let e = t0.elapsed();
        assert!(e >= Duration::from_millis(100) && e < Duration::from_millis(200), "{e:?}");
    }

    #[test]
    fn pacer_skips_instead_of_bursting_after_a_stall() {
        let mut p = Pacer::new(100, 0, Duration::from_millis(20));
        p.wait();
        std::thread::sleep(Duration::from_millis(100));
        p.wait(); // late: re-anchors
        let t0 = Instant::now();
        p.wait();
        p.wait();
        assert!(t0.elapsed() >= Duration::from_millis(15), "burst after stall: {:?}", t0.elapsed());
    }

    #[test]
    fn rejects_unsupported_sizes() {
        for &(w, h, fps) in &[(321, 240, 30), (160, 120, 30), (640, 480, 0), (8000, 480, 30), (320, 100, 30)] {
            assert!(matches!(TestPattern::new(w, h, fps), Err(MediaError::Unsupported(_))), "{w}x{h}@{fps}");
        }
    }

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
        let t0 = Instant::now();
        for _ in 0..10 {
            src.read_frame(&mut frame).unwrap();
        }
        let e = t0.elapsed();
        assert!(e >= Duration::from_millis(195) && e < Duration::from_millis(500), "{e:?}");
    }

    #[test]
    fn speaker_reports_each_second() {
        let mut spk = NullSpeaker::new();
        let stats = spk.stats();
        let tone = sine(660.0, 8_231.0, 48_000 * 2, 0);
        // Uneven chunks, as a decoder with varying packet sizes would give.
        for chunk in tone.chunks(700) {
            spk.write(chunk).unwrap();
        }
        let s = stats.lock().unwrap().clone();
        assert_eq!(s.samples_received, 96_000);
        assert_eq!(s.reports, 2);
        let r = s.last_report.unwrap();
        assert!((r.seconds_received - 2.0).abs() < 1e-9);
        assert!((r.tone_hz.unwrap() - 660.0).abs() < 1.0);
        assert!((r.rms_dbfs - -15.0).abs() < 0.2);

        spk.write(&vec![0; 48_000]).unwrap();
        let r = stats.lock().unwrap().last_report.unwrap();
        assert_eq!(r.tone_hz, None);
        assert_eq!(r.rms_dbfs, crate::media::audio::MIN_DBFS);
        assert_eq!(stats.lock().unwrap().reports, 3);
    }

    #[test]
    fn speaker_log_line_format_is_stable() {
        let r = SpeakerReport { seconds_received: 3.04, rms_dbfs: -15.03, tone_hz: Some(659.7) };
        assert_eq!(r.log_line(), "speaker: 3.0s received, rms -15.0 dBFS, tone 660 Hz");
        let silent = SpeakerReport { seconds_received: 1.0, rms_dbfs: -100.0, tone_hz: None };
        assert_eq!(silent.log_line(), "speaker: 1.0s received, rms -100.0 dBFS, tone none");
        let parsed = SpeakerReport::parse(&format!("[INFO roomcam] {}", r.log_line())).unwrap();
        assert_eq!(parsed, SpeakerReport { seconds_received: 3.0, rms_dbfs: -15.0, tone_hz: Some(660.0) });
        assert_eq!(SpeakerReport::parse(&silent.log_line()).unwrap().tone_hz, None);
        assert_eq!(SpeakerReport::parse("speaker: garbage"), None);
    }
}
