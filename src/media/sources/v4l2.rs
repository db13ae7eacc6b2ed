//! V4L2 cameras (the `v4l` crate): format negotiation, mmap streaming,
//! conversion to I420 (or the camera's own H.264 passed through),
//! reopening after the camera goes away.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use v4l::buffer::Type;
use v4l::control::{Control, Value};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC, Fraction};

use super::discovery::until_nul;
use crate::media::convert::{MjpegDecoder, PixelFormat, camera_access_unit, raw_to_i420};
use crate::media::{CameraFrame, KeyframeRequest, MediaError, VideoSource};

/// V4L2 codec controls (linux/v4l2-controls.h, V4L2_CID_CODEC_BASE + n)
/// that an H.264 camera may offer.
const CID_BITRATE: u32 = 0x0099_0900 + 207;
const CID_FORCE_KEY_FRAME: u32 = 0x0099_0900 + 229;
const CID_H264_I_PERIOD: u32 = 0x0099_0900 + 358;

/// mmap buffers: one being converted, one being filled, the rest queued,
/// so a slow conversion or encode never makes the driver drop frames.
pub const BUFFERS: u32 = 5;
/// No frame for this long: the camera is considered gone and reopened.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// Turns an open/ioctl error into a message that says what to do.
pub fn device_error(device: &str, action: &str, e: &io::Error) -> MediaError {
    let hint = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied: add the user to the `video` group (usermod -aG video USER, then log in again), \
             or check the unit's DeviceAllow; ls -l {device}"
        ),
        Some(libc::ENOENT) => {
            "missing: no such device node; is the camera plugged in? `roomcam devices` lists cameras".to_string()
        }
        Some(libc::ENODEV) | Some(libc::ENXIO) => "the device went away (unplugged or driver unloaded)".to_string(),
        Some(libc::EBUSY) => format!("busy: another program is using the camera (fuser -v {device})"),
        _ => e.to_string(),
    };
    MediaError::Device { device: device.to_string(), reason: format!("{action}: {hint}") }
}

/// What a camera can deliver, for selection and for `roomcam devices`.
#[derive(Clone, Debug)]
pub struct Mode {
    pub fourcc: [u8; 4],
    pub description: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second the camera offers at this size (descending).
    pub rates: Vec<f64>,
}

fn rate_of(f: &Fraction) -> f64 {
    if f.numerator == 0 { 0.0 } else { f64::from(f.denominator) / f64::from(f.numerator) }
}

/// Sizes a camera offers for one format. Stepwise ranges are reduced to the
/// common sizes inside them plus (when given) the wanted size.
fn sizes(dev: &Device, fourcc: FourCC, want: Option<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for fs in dev.enum_framesizes(fourcc).unwrap_or_default() {
        match fs.size {
            FrameSizeEnum::Discrete(d) => out.push((d.width, d.height)),
            FrameSizeEnum::Stepwise(s) => {
                let fits = |w: u32, h: u32| {
                    (s.min_width..=s.max_width).contains(&w)
                        && (s.min_height..=s.max_height).contains(&h)
                        && (w - s.min_width).is_multiple_of(s.step_width.max(1))
                        && (h - s.min_height).is_multiple_of(s.step_height.max(1))
                };
                let common = [(320, 240), (640, 480), (800, 600), (1280, 720), (1920, 1080)];
                for (w, h) in common.into_iter().chain(want) {
                    if fits(w, h) && !out.contains(&(w, h)) {
                        out.push((w, h));
                    }
                }
                if !out.contains(&(s.max_width, s.max_height)) {
                    out.push((s.max_width, s.max_height));
                }
            }
        }
    }
    out
}

fn rates(dev: &Device, fourcc: FourCC, w: u32, h: u32) -> Vec<f64> {
    let mut out = Vec::new();
    for fi in dev.enum_frameintervals(fourcc, w, h).unwrap_or_default() {
        match fi.interval {
            FrameIntervalEnum::Discrete(f) => out.push(rate_of(&f)),
            FrameIntervalEnum::Stepwise(s) => {
                // min interval = max rate.
                out.push(rate_of(&s.min));
                out.push(rate_of(&s.max));
            }
        }
    }
    out.retain(|r| r.is_finite() && *r > 0.0);
    out.sort_by(|a, b| b.total_cmp(a));
    out.dedup_by(|a, b| (*a - *b).abs() < 0.01);
    out
}

/// Every format/size/rate the device offers (all formats, also those roomcam cannot use).
pub fn modes(dev: &Device, want: Option<(u32, u32)>) -> io::Result<Vec<Mode>> {
    let mut out = Vec::new();
    for f in dev.enum_formats()? {
        for (w, h) in sizes(dev, f.fourcc, want) {
            out.push(Mode {
                fourcc: f.fourcc.repr,
                description: f.description.clone(),
                width: w,
                height: h,
                rates: rates(dev, f.fourcc, w, h),
            });
        }
    }
    Ok(out)
}

/// The chosen mode and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub reason: String,
}

/// Picks the mode closest to `want` (size first, then rate, then the
/// cheapest format to convert). Pure, so it is tested without a camera.
pub fn choose(modes: &[Mode], want_w: u32, want_h: u32, want_fps: u32) -> Option<Choice> {
    let want_fps = f64::from(want_fps.max(1));
    let mut best: Option<((u64, u64, u8), Choice)> = None;
    for m in modes {
        let Some(format) = PixelFormat::from_fourcc(&m.fourcc) else { continue };
        // Rates unknown (driver does not enumerate): assume it can.
        let fps = if m.rates.is_empty() {
            want_fps
        } else {
            // Lowest rate ≥ wanted, else the highest available.
            m.rates
                .iter()
                .copied()
                .filter(|r| *r >= want_fps - 0.01)
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.min(r))))
                .unwrap_or(m.rates[0])
        };
        let size_pen = u64::from(m.width.abs_diff(want_w)) + u64::from(m.height.abs_diff(want_h));
        let fps_pen = ((want_fps - fps).max(0.0) * 100.0) as u64;
        // Odd sizes cannot be I420; the conversion would fail.
        if m.width % 2 != 0 || m.height % 2 != 0 || m.width == 0 || m.height == 0 {
            continue;
        }
        let key = (size_pen, fps_pen, format.cost_rank());
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            let mut why = Vec::new();
            if size_pen == 0 {
                why.push(format!("{want_w}x{want_h} as configured"));
            } else {
                why.push(format!("{}x{} is the nearest size to {want_w}x{want_h} it offers", m.width, m.height));
            }
            if fps_pen == 0 {
                why.push(format!("{fps:.1} fps for {want_fps} wanted"));
            } else {
                why.push(format!("{fps:.1} fps is its best at that size ({want_fps} wanted)"));
            }
            why.push(format!(
                "{} {}",
                String::from_utf8_lossy(&m.fourcc),
                match format {
                    PixelFormat::Mjpeg => "(decoded on the board)",
                    PixelFormat::H264 => "(the camera's own H.264, passed through without re-encoding)",
                    _ => "(raw)",
                }
            ));
            best = Some((key, Choice { format, width: m.width, height: m.height, fps, reason: why.join(", ") }));
        }
    }
    best.map(|(_, c)| c)
}

struct Open {
    // Field order matters: the stream (buffers) must go before the device.
    stream: Stream<'static>,
    dev: Device,
    choice: Choice,
    stride: usize,
    mjpeg: MjpegDecoder,
    /// Consecutive unusable buffers.
    bad_buffers: u32,
    /// H.264 cameras: whether V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME exists.
    can_force_keyframe: bool,
    /// Set when the camera's rate could not be set: drops what is too early.
    pacer: Option<FramePacer>,
}

/// Keeps at most `fps` frames a second out of a camera that sends more,
/// evenly: a frame is kept when it is no more than a quarter period early
/// for the next slot, and a late one does not make the next ones early.
#[derive(Debug)]
pub struct FramePacer {
    period: Duration,
    next_due: Option<Duration>,
}

impl FramePacer {
    pub fn new(fps: f64) -> Self {
        Self { period: Duration::from_secs_f64(1.0 / fps.max(1.0)), next_due: None }
    }

    /// `at`: the frame's capture time on any monotonic clock.
    pub fn keep(&mut self, at: Duration) -> bool {
        let slot = match self.next_due {
            None => at,
            Some(due) if at + self.period / 4 < due => return false,
            // Far behind (the camera stalled): start again from this frame.
            Some(due) if at > due + self.period => at,
            Some(due) => due,
        };
        self.next_due = Some(slot + self.period);
        true
    }
}

/// Drivers round sizes to their steps (libcamera's vimc: multiples of 6):
/// a size within 16 pixels of the wanted one, even, in the same format, is
/// taken as the driver gives it.
fn accept_adjusted_size(choice: &Choice, fourcc: [u8; 4], width: u32, height: u32) -> Option<Choice> {
    let close = width.abs_diff(choice.width) <= 16 && height.abs_diff(choice.height) <= 16;
    let changed = (width, height) != (choice.width, choice.height);
    (changed
        && close
        && fourcc == *choice.format.fourcc()
        && width.is_multiple_of(2)
        && height.is_multiple_of(2)
        && width > 0
        && height > 0)
        .then(|| Choice { width, height, ..choice.clone() })
}

/// How many mmap buffers the driver gave when asked for `asked`: REQBUFS
/// may give fewer or more (libcamera's vimc handler fixes 4), and the v4l
/// stream does not say. QUERYBUF answers only below the count.
fn buffers_given(dev: &Device, asked: u32) -> u32 {
    let fd = dev.handle().fd();
    (0..asked.saturating_mul(4).max(1))
        .take_while(|&index| {
            // SAFETY: v4l2_buffer is plain data; the kernel (or libcamera's
            // layer) fills the struct we own and nothing else.
            let mut buf: v4l::v4l_sys::v4l2_buffer = unsafe { std::mem::zeroed() };
            buf.index = index;
            buf.type_ = Type::VideoCapture as u32;
            buf.memory = v4l::memory::Memory::Mmap as u32;
            unsafe {
                v4l::v4l2::ioctl(fd, v4l::v4l2::vidioc::VIDIOC_QUERYBUF, &mut buf as *mut _ as *mut std::ffi::c_void)
            }
            .is_ok()
        })
        .count() as u32
}

/// A V4L2 camera behind [`VideoSource`]. Opens lazily; when the camera
/// fails (read error, timeout, node gone) it is closed, `next_frame`
/// returns `MediaError::Device`, and the next call tries to reopen it.
pub struct V4l2Camera {
    path: PathBuf,
    label: String,
    want: (u32, u32, u32),
    /// `camera.format`: only this format, or the cheapest that fits.
    only_format: Option<PixelFormat>,
    /// H.264 cameras are asked for this bitrate, where they let us (at open,
    /// and again when the rate policy moves it).
    h264_bitrate_kbps: u32,
    open: Option<Open>,
    /// Logged once per outage, not once per retry.
    was_open: bool,
}

impl V4l2Camera {
    pub fn new(path: impl AsRef<Path>, width: u32, height: u32, fps: u32) -> Self {
        let path = path.as_ref().to_path_buf();
        Self {
            label: path.display().to_string(),
            path,
            want: (width, height, fps),
            only_format: None,
            h264_bitrate_kbps: 1000,
            open: None,
            was_open: false,
        }
    }

    /// Uses only `format` (`camera.format` in the config); `None`: the
    /// cheapest for the board among those that give the wanted size and rate.
    pub fn with_format(mut self, format: Option<PixelFormat>) -> Self {
        self.only_format = format;
        self
    }

    /// How logs and errors name the camera (default: its path).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The bitrate an H.264 camera is asked for (if it has the control).
    pub fn with_h264_bitrate(mut self, kbps: u32) -> Self {
        self.h264_bitrate_kbps = kbps;
        self
    }

    /// Opens now (used at start-up to report a clear error early).
    pub fn open_now(&mut self) -> Result<(), MediaError> {
        if self.open.is_none() {
            self.open = Some(self.try_open()?);
        }
        Ok(())
    }

    pub fn current(&self) -> Option<&Choice> {
        self.open.as_ref().map(|o| &o.choice)
    }

    fn try_open(&mut self) -> Result<Open, MediaError> {
        let label = self.label.clone();
        let dev = Device::with_path(&self.path).map_err(|e| device_error(&label, "open", &e))?;
        let caps = dev.query_caps().map_err(|e| device_error(&label, "query capabilities", &e))?;
        if !caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE)
            || !caps.capabilities.contains(v4l::capability::Flags::STREAMING)
        {
            return Err(MediaError::Device {
                device: label,
                reason: format!(
                    "{} ({}) is not a streaming capture device (a metadata or output node?); `roomcam devices` lists the capture nodes",
                    until_nul(&caps.card),
                    until_nul(&caps.driver)
                ),
            });
        }
        let (ww, wh, wfps) = self.want;
        let mut modes = modes(&dev, Some((ww, wh))).map_err(|e| device_error(&label, "list formats", &e))?;
        let mut offered: Vec<String> = modes.iter().map(|m| String::from_utf8_lossy(&m.fourcc).into_owned()).collect();
        offered.dedup();
        if let Some(only) = self.only_format {
            modes.retain(|m| m.fourcc == *only.fourcc());
        }
        let Some(choice) = choose(&modes, ww, wh, wfps) else {
            return Err(MediaError::Unsupported(match self.only_format {
                Some(only) => format!(
                    "camera {label}: camera.format is {} but the camera offers only {}; set camera.format = \"auto\" \
                     or one of those",
                    String::from_utf8_lossy(only.fourcc()),
                    offered.join(", ")
                ),
                None => format!(
                    "camera {label}: none of its formats ({}) is one roomcam reads (YUYV, NV12, YU12, RGB3, BGR3, MJPEG, H264)",
                    offered.join(", ")
                ),
            }));
        };
        let fmt = dev
            .set_format(&Format::new(choice.width, choice.height, FourCC::new(choice.format.fourcc())))
            .map_err(|e| device_error(&label, "set format", &e))?;
        let choice = match accept_adjusted_size(&choice, fmt.fourcc.repr, fmt.width, fmt.height) {
            Some(adjusted) => {
                log::info!(
                    "camera {label}: the driver adjusted {}x{} to {}x{} (its size steps); using that",
                    choice.width,
                    choice.height,
                    fmt.width,
                    fmt.height
                );
                adjusted
            }
            None => choice,
        };
        if fmt.fourcc.repr != *choice.format.fourcc() || (fmt.width, fmt.height) != (choice.width, choice.height) {
            return Err(MediaError::Device {
                device: label,
                reason: format!(
                    "asked for {}x{} {}, the driver set {}x{} {}",
                    choice.width,
                    choice.height,
                    String::from_utf8_lossy(choice.format.fourcc()),
                    fmt.width,
                    fmt.height,
                    fmt.fourcc
                ),
            });
        }
        // Rate: best effort; many drivers round.
        let interval = Fraction::new(1000, (choice.fps * 1000.0).round() as u32);
        let (fps, pacer) = match dev.set_params(&Parameters::new(interval)) {
            Ok(p) => (rate_of(&p.interval), None),
            Err(e) => {
                // libcamera's V4L2 layer has no S_PARM: the pipeline runs at
                // its own rate, and frames beyond the wanted one are dropped
                // here, before any conversion is paid for.
                log::info!(
                    "camera {label}: cannot set the frame rate ({e}); keeping at most {:.1} fps of what it sends",
                    choice.fps
                );
                (choice.fps, Some(FramePacer::new(choice.fps)))
            }
        };
        let stride = (fmt.stride as usize).max(choice.format.min_stride(fmt.width));
        let can_force_keyframe = choice.format == PixelFormat::H264 && self.set_up_h264_controls(&dev, fps);
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(|e| device_error(&label, "allocate buffers", &e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        let buffers = buffers_given(&dev, BUFFERS);
        log::info!(
            "camera {label}: {} (driver {}, bus {}): {}x{} {} at {fps:.1} fps, {buffers} mmap buffers ({BUFFERS} asked); chosen because: {}",
            until_nul(&caps.card),
            until_nul(&caps.driver),
            until_nul(&caps.bus),
            choice.width,
            choice.height,
            String::from_utf8_lossy(choice.format.fourcc()),
            choice.reason
        );
        Ok(Open {
            stream,
            dev,
            choice: Choice { fps, ..choice },
            stride,
            mjpeg: MjpegDecoder::new(),
            bad_buffers: 0,
            can_force_keyframe,
            pacer,
        })
    }

    /// Asks an H.264 camera for our bitrate and a 2 s IDR period where it
    /// has the controls (UVC cameras often have neither), and reports
    /// whether it can be asked for an IDR.
    fn set_up_h264_controls(&self, dev: &Device, fps: f64) -> bool {
        let controls = dev.query_controls().unwrap_or_default();
        let has = |id: u32| controls.iter().any(|c| c.id == id);
        let set = |id: u32, value: Value, what: &str| {
            if has(id)
                && let Err(e) = dev.set_control(Control { id, value })
            {
                log::info!("camera {}: cannot set the {what}: {e}", self.label);
            }
        };
        set(CID_BITRATE, Value::Integer(i64::from(self.h264_bitrate_kbps) * 1000), "H.264 bitrate");
        set(CID_H264_I_PERIOD, Value::Integer((fps * 2.0).round().max(1.0) as i64), "H.264 IDR period");
        let can_force = has(CID_FORCE_KEY_FRAME);
        if can_force {
            log::info!("camera {}: H.264 passthrough; keyframe requests use its force-key-frame control", self.label);
        } else {
            // The consequence (PLI cannot be honoured) is warned about once
            // by the pipeline, for any camera, not again at every reopen.
            log::info!("camera {}: H.264 passthrough; it has no force-key-frame control", self.label);
        }
        can_force
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            // v4l's Stream panics in Drop when STREAMOFF fails with anything
            // but ENODEV; a vanished device may give other errors.
            let Open { stream, dev: _dev, .. } = open;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream))).is_err() {
                log::debug!("camera {}: stream teardown failed (device gone)", self.label);
            }
        }
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        self.close();
    }
}

/// Converts a CLOCK_MONOTONIC driver timestamp to wall-clock time.
fn wall_clock(ts: &v4l::timestamp::Timestamp) -> SystemTime {
    let now_wall = SystemTime::now();
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 || (ts.sec == 0 && ts.usec == 0) {
        return now_wall;
    }
    let now_us = now.tv_sec as i128 * 1_000_000 + now.tv_nsec as i128 / 1_000;
    let ts_us = ts.sec as i128 * 1_000_000 + ts.usec as i128;
    let age = now_us - ts_us;
    if !(0..10_000_000).contains(&age) {
        // Not monotonic (some drivers use other clocks), or absurd.
        return now_wall;
    }
    now_wall - Duration::from_micros(age as u64)
}

impl VideoSource for V4l2Camera {
    fn delivers_h264(&self) -> bool {
        match &self.open {
            Some(open) => open.choice.format == PixelFormat::H264,
            None => self.only_format == Some(PixelFormat::H264),
        }
    }

    fn set_h264_bitrate(&mut self, bitrate_bps: u64) {
        // Kept for the next open too: a camera that comes back gets the
        // current target, not the configured ceiling.
        self.h264_bitrate_kbps = (bitrate_bps / 1000).clamp(1, u64::from(u32::MAX)) as u32;
        let Some(open) = self.open.as_ref().filter(|o| o.choice.format == PixelFormat::H264) else {
            return;
        };
        // Drivers that have it (bcm2835-codec) take it while streaming; UVC
        // cameras mostly lack it, and then the camera keeps its own rate.
        let value = Value::Integer(i64::from(self.h264_bitrate_kbps) * 1000);
        if let Err(e) = open.dev.set_control(Control { id: CID_BITRATE, value }) {
            log::debug!("camera {}: cannot change the H.264 bitrate: {e}", self.label);
        }
    }

    fn request_keyframe(&mut self) -> KeyframeRequest {
        let Some(open) = self.open.as_ref().filter(|o| o.can_force_keyframe) else {
            return KeyframeRequest::Unsupported;
        };
        match open.dev.set_control(Control { id: CID_FORCE_KEY_FRAME, value: Value::None }) {
            Ok(()) => KeyframeRequest::Forced,
            Err(e) => {
                log::warn!("camera {}: force-key-frame failed: {e}", self.label);
                KeyframeRequest::Unsupported
            }
        }
    }

    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        loop {
            if let Some(frame) = self.next_kept_frame()? {
                return Ok(frame);
            }
        }
    }
}

impl V4l2Camera {
    /// One buffer from the camera: a frame, or `None` when the pacer drops it.
    fn next_kept_frame(&mut self) -> Result<Option<CameraFrame>, MediaError> {
        if self.open.is_none() {
            match self.try_open() {
                Ok(open) => {
                    if self.was_open {
                        log::info!("camera {}: back", self.label);
                    }
                    self.open = Some(open);
                    self.was_open = true;
                }
                Err(e) => return Err(e),
            }
        }
        let label = self.label.clone();
        let open = self.open.as_mut().expect("opened above");
        let result = open.stream.next();
        let (buf, meta) = match result {
            Ok(x) => x,
            Err(e) => {
                let err = if e.kind() == io::ErrorKind::TimedOut {
                    MediaError::Device { device: label, reason: format!("no frame for {FRAME_TIMEOUT:?}") }
                } else {
                    device_error(&label, "capture", &e)
                };
                log::warn!("camera {}: {err}; closing it, will reopen when it is back", self.label);
                self.close();
                return Err(err);
            }
        };
        if let Some(pacer) = &mut open.pacer {
            let at = Duration::from_secs(meta.timestamp.sec.max(0) as u64)
                + Duration::from_micros(meta.timestamp.usec.max(0) as u64);
            if !pacer.keep(at) {
                return Ok(None);
            }
        }
        let used = (meta.bytesused as usize).min(buf.len());
        let data = &buf[..used];
        let captured_at = wall_clock(&meta.timestamp);
        let (w, h) = (open.choice.width, open.choice.height);
        let frame = if data.is_empty() {
            Err(MediaError::Decoder("empty buffer".into()))
        } else if meta.flags.contains(v4l::buffer::Flags::ERROR) {
            Err(MediaError::Decoder("driver marked the buffer as corrupt".into()))
        } else {
            let frame_period = Duration::from_secs_f64(1.0 / open.choice.fps.max(1.0));
            match open.choice.format {
                PixelFormat::H264 => camera_access_unit(data, frame_period).map(CameraFrame::H264),
                PixelFormat::Mjpeg => open.mjpeg.decode(data, captured_at).map(CameraFrame::Picture),
                f => raw_to_i420(f, data, open.stride, w, h, captured_at).map(CameraFrame::Picture),
            }
        };
        match frame {
            Ok(f) => {
                open.bad_buffers = 0;
                Ok(Some(f))
            }
            Err(e) => {
                open.bad_buffers += 1;
                // A camera that only sends junk is as good as gone.
                if open.bad_buffers >= 50 {
                    self.close();
                }
                Err(MediaError::Device { device: label, reason: format!("unusable frame: {e}") })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(fourcc: &[u8; 4], w: u32, h: u32, rates: &[f64]) -> Mode {
        Mode { fourcc: *fourcc, description: String::new(), width: w, height: h, rates: rates.to_vec() }
    }

    #[test]
    fn exact_size_and_rate_wins_and_raw_beats_mjpeg() {
        let modes = [
            mode(b"MJPG", 640, 480, &[30.0, 15.0]),
            mode(b"YUYV", 640, 480, &[30.0, 15.0]),
            mode(b"YUYV", 1280, 720, &[10.0]),
        ];
        let c = choose(&modes, 640, 480, 25).unwrap();
        assert_eq!((c.format, c.width, c.height, c.fps), (PixelFormat::Yuyv, 640, 480, 30.0));
        assert!(c.reason.contains("640x480 as configured"), "{}", c.reason);
    }

    #[test]
    fn mjpeg_when_raw_is_too_slow_and_nearest_size_otherwise() {
        let modes = [mode(b"YUYV", 1280, 720, &[10.0, 5.0]), mode(b"MJPG", 1280, 720, &[30.0])];
        let c = choose(&modes, 1280, 720, 30).unwrap();
        assert_eq!(c.format, PixelFormat::Mjpeg);
        let modes = [mode(b"YUYV", 320, 240, &[30.0]), mode(b"YUYV", 800, 600, &[30.0])];
        let c = choose(&modes, 640, 480, 30).unwrap();
        assert_eq!((c.width, c.height), (800, 600));
        assert!(c.reason.contains("nearest"), "{}", c.reason);
        // Only unusable formats: nothing.
        assert!(choose(&[mode(b"HEVC", 640, 480, &[30.0]), mode(b"GREY", 640, 480, &[30.0])], 640, 480, 30).is_none());
    }

    #[test]
    fn the_cameras_own_h264_wins_at_the_same_size_and_rate() {
        let modes =
            [mode(b"YUYV", 1280, 720, &[10.0]), mode(b"MJPG", 1280, 720, &[30.0]), mode(b"H264", 1280, 720, &[30.0])];
        let c = choose(&modes, 1280, 720, 30).unwrap();
        assert_eq!(c.format, PixelFormat::H264);
        assert!(c.reason.contains("passed through"), "{}", c.reason);
        // But not at the price of the wanted size.
        let modes = [mode(b"YUYV", 640, 480, &[30.0]), mode(b"H264", 1920, 1080, &[30.0])];
        assert_eq!(choose(&modes, 640, 480, 30).unwrap().format, PixelFormat::Yuyv);
    }

    #[test]
    fn a_60_fps_pipeline_paced_to_25_keeps_25_evenly() {
        let mut pacer = FramePacer::new(25.0);
        let frame = Duration::from_secs_f64(1.0 / 60.0);
        let kept: Vec<u32> = (0..600u32).filter(|&i| pacer.keep(frame * i)).collect();
        assert!((249..=251).contains(&kept.len()), "{} frames kept of 10 s at 60 fps", kept.len());
        let gaps: Vec<u32> = kept.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (2..=3).contains(g)), "uneven: {gaps:?}");
        // A stall of a second, then frames again: no burst to catch up.
        let resumed: Vec<bool> = (0..6u32).map(|i| pacer.keep(frame * (660 + i))).collect();
        assert_eq!(resumed.iter().filter(|k| **k).count(), 3, "{resumed:?}");
        // A camera slower than wanted loses nothing.
        let mut pacer = FramePacer::new(25.0);
        assert!((0..100u32).all(|i| pacer.keep(Duration::from_millis(50) * i)));
    }

    #[test]
    fn a_driver_rounding_the_size_is_accepted_a_different_one_is_not() {
        let choice = Choice { format: PixelFormat::Bgr24, width: 640, height: 480, fps: 25.0, reason: String::new() };
        let adjusted = accept_adjusted_size(&choice, *b"BGR3", 636, 480).unwrap();
        assert_eq!((adjusted.width, adjusted.height), (636, 480));
        assert!(accept_adjusted_size(&choice, *b"BGR3", 640, 480).is_none(), "unchanged");
        assert!(accept_adjusted_size(&choice, *b"BGR3", 320, 240).is_none(), "not close");
        assert!(accept_adjusted_size(&choice, *b"RGB3", 636, 480).is_none(), "other format");
        assert!(accept_adjusted_size(&choice, *b"BGR3", 635, 480).is_none(), "odd");
    }

    #[test]
    fn missing_device_says_so() {
        let mut cam = V4l2Camera::new("/dev/video-does-not-exist", 640, 480, 25);
        assert_eq!(cam.request_keyframe(), KeyframeRequest::Unsupported, "not open");
        let e = cam.next_frame().unwrap_err().to_string();
        assert!(e.contains("/dev/video-does-not-exist") && e.contains("missing"), "{e}");
        let e = device_error("/dev/video0", "open", &io::Error::from_raw_os_error(libc::EACCES)).to_string();
        assert!(e.contains("video` group"), "{e}");
        let e = device_error("/dev/video0", "open", &io::Error::from_raw_os_error(libc::EBUSY)).to_string();
        assert!(e.contains("busy"), "{e}");
    }
}
