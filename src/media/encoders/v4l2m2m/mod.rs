//! A hardware encoder: a V4L2 stateful memory-to-memory encoder
//! (bcm2835-codec at /dev/video11 on a Pi Zero 2 W, 3 and 4) behind
//! [`VideoEncoder`], so that the board's encoder does the work OpenH264
//! would spend a core on.
//!
//! The logic here (formats, which controls and when, parameter sets on
//! every IDR, keyframe requests that survive, the frame rate of a weak
//! path) talks to the device through [`device::M2mDevice`]; its unit tests
//! use a fake device, and [`device::V4l2rDevice`] is the real one.
//! Pictures are copied into the device's buffers (the pipeline's frames are
//! converted I420 in ordinary memory, not camera dmabufs).

use std::time::{Duration, SystemTime};

use crate::media::encoders::h264::{ParameterSets, level_idc_for, nal_types};
use crate::media::{EncodedVideo, I420Frame, MediaError, VideoEncoder};

pub mod device;

pub use device::{CodedBuffer, EncoderNode, M2mDevice, RawLayout, V4l2rDevice, find_encoders, probe_encoder};

pub const H264: [u8; 4] = *b"H264";
/// vicodec's codec: what the emulated board proves the plumbing with.
pub const FWHT: [u8; 4] = *b"FWHT";
/// Planar 4:2:0, the pipeline's own layout (I420).
pub const YU12: [u8; 4] = *b"YU12";

const NAL_IDR: u8 = 5;
const NAL_SLICE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum M2mError {
    #[error("{device}: {reason}")]
    Open { device: String, reason: String },
    #[error("{device}: {what}: {reason}")]
    Ioctl { device: String, what: &'static str, reason: String },
    #[error("{device}: no {what} within the deadline (is the encoder hung?)")]
    Timeout { device: String, what: &'static str },
    #[error("{device} cannot serve: {reason}")]
    Unsuitable { device: String, reason: String },
    #[error("{device} refuses {control:?}: {reason}")]
    ControlRejected { device: String, control: Control, reason: String },
}

impl M2mError {
    pub(crate) fn ioctl(device: String, what: &'static str, reason: impl std::fmt::Display) -> Self {
        M2mError::Ioctl { device, what, reason: reason.to_string() }
    }
}

impl From<M2mError> for MediaError {
    fn from(e: M2mError) -> Self {
        MediaError::Encoder(e.to_string())
    }
}

/// The codec controls roomcam sets (V4L2's `V4L2_CID_MPEG_VIDEO_*` class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Constant bitrate: on a path that was just measured, a VBR burst
    /// is a burst of loss.
    ConstantBitrate,
    Bitrate(u32),
    ForceKeyframe,
    /// SPS and PPS in front of every IDR, for viewers that join late.
    RepeatSequenceHeader,
    /// SPS and PPS in the IDR's buffer, not one of their own.
    HeaderJoinedWithFirstFrame,
    /// Constrained Baseline: what every browser decodes (`42e0..`).
    ConstrainedBaseline,
    /// `level_idc` (31 = 3.1).
    Level(u8),
    /// Frames from one IDR to the next (H.264).
    IdrPeriod(u32),
    /// Frames from one key frame to the next (other codecs: FWHT).
    GopSize(u32),
}

impl Control {
    /// The control's id and value as videodev2.h defines them.
    pub fn id_and_value(self) -> (u32, i32) {
        use v4l2r::bindings as b;
        let clamp = |v: u32| v.min(i32::MAX as u32) as i32;
        match self {
            Control::ConstantBitrate => (
                b::V4L2_CID_MPEG_VIDEO_BITRATE_MODE,
                b::v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_CBR as i32,
            ),
            Control::Bitrate(bps) => (b::V4L2_CID_MPEG_VIDEO_BITRATE, clamp(bps)),
            Control::ForceKeyframe => (b::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1),
            Control::RepeatSequenceHeader => (b::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1),
            Control::HeaderJoinedWithFirstFrame => (
                b::V4L2_CID_MPEG_VIDEO_HEADER_MODE,
                b::v4l2_mpeg_video_header_mode_V4L2_MPEG_VIDEO_HEADER_MODE_JOINED_WITH_1ST_FRAME as i32,
            ),
            Control::ConstrainedBaseline => (
                b::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
                b::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE as i32,
            ),
            Control::Level(idc) => (b::V4L2_CID_MPEG_VIDEO_H264_LEVEL, v4l2_level(idc)),
            Control::IdrPeriod(frames) => (b::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, clamp(frames)),
            Control::GopSize(frames) => (b::V4L2_CID_MPEG_VIDEO_GOP_SIZE, clamp(frames)),
        }
    }
}

/// V4L2's `v4l2_mpeg_video_h264_level` for a `level_idc`.
fn v4l2_level(idc: u8) -> i32 {
    match idc {
        ..=30 => 8,
        31 => 9,
        32 => 10,
        40 => 11,
        41 => 12,
        42 => 13,
        50 => 14,
        _ => 15,
    }
}

/// Whether an FWHT frame (vicodec's `struct fwht_cframe_hdr`: two magic
/// words, then version, width, height and flags, all big-endian) is an
/// I-frame (`V4L2_FWHT_FL_I_FRAME`).
pub fn fwht_is_key_frame(frame: &[u8]) -> bool {
    const MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
    let word = |at: usize| frame.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    frame.starts_with(&MAGIC)
        && word(20).is_some_and(|flags| u64::from(flags) & u64::from(v4l2r::bindings::V4L2_FWHT_FL_I_FRAME) != 0)
}

#[derive(Clone, Debug)]
pub struct M2mSettings {
    /// [`H264`] for viewers; [`FWHT`] only to prove the plumbing on vicodec.
    pub codec: [u8; 4],
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_interval: Option<Duration>,
    /// How long a picture may take before the encoder counts as hung (the
    /// caller then falls back to OpenH264: see `encoders::fallback`).
    pub deadline: Duration,
}

impl M2mSettings {
    pub fn h264(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> Self {
        Self {
            codec: H264,
            width,
            height,
            fps,
            bitrate_kbps,
            keyframe_interval: Some(Duration::from_secs(10)),
            deadline: Duration::from_millis(800),
        }
    }
}

pub struct V4l2M2mEncoder<D: M2mDevice = V4l2rDevice> {
    device: D,
    settings: M2mSettings,
    layout: RawLayout,
    can_force_keyframe: bool,
    can_change_bitrate: bool,
    /// A keyframe was asked for and has not come out yet.
    idr_pending: bool,
    parameter_sets: ParameterSets,
    frame_duration: Duration,
    /// The frame rate congestion control asks for (≤ `settings.fps`); the
    /// pipeline leaves the other pictures out before they get here.
    fps: u32,
    first_capture: Option<SystemTime>,
    last_output: Option<Duration>,
}

impl V4l2M2mEncoder<V4l2rDevice> {
    pub fn open(path: &std::path::Path, settings: M2mSettings) -> Result<Self, M2mError> {
        Self::with_device(V4l2rDevice::open(path)?, settings)
    }
}

impl<D: M2mDevice> V4l2M2mEncoder<D> {
    pub fn with_device(mut device: D, settings: M2mSettings) -> Result<Self, M2mError> {
        let s = &settings;
        if I420Frame::expected_len(s.width, s.height).is_none() || !(1..=120).contains(&s.fps) {
            return Err(M2mError::Unsuitable {
                device: device.label().to_owned(),
                reason: format!("{}x{} at {} fps", s.width, s.height, s.fps),
            });
        }
        let layout = device.set_formats(s.codec, YU12, s.width, s.height)?;
        let minimum = I420Frame::expected_len(s.width, s.height).unwrap_or(0) as u32;
        if layout.bytes_per_line < s.width || layout.size_image < minimum {
            return Err(M2mError::Unsuitable {
                device: device.label().to_owned(),
                reason: format!(
                    "its YU12 layout ({} bytes a line, {} in all) is too small",
                    layout.bytes_per_line, layout.size_image
                ),
            });
        }
        let label = device.label().to_owned();
        // Settings a device may lack: said once, then done without.
        let optional = |device: &mut D, control: Control| match device.set_control(control) {
            Ok(()) => true,
            Err(e) => {
                log::info!("hardware encoder {label}: {e}; continuing without it");
                false
            }
        };
        let key_frames = s.keyframe_interval.map(|d| ((d.as_secs_f64() * f64::from(s.fps)).round() as u32).max(1));
        let can_change_bitrate;
        let can_force_keyframe;
        if s.codec == H264 {
            if !optional(&mut device, Control::ConstrainedBaseline) {
                return Err(M2mError::Unsuitable {
                    device: label,
                    reason: "it does not encode Constrained Baseline, which every browser decodes".into(),
                });
            }
            optional(&mut device, Control::Level(level_idc_for(s.width, s.height, s.fps)));
            optional(&mut device, Control::ConstantBitrate);
            can_change_bitrate = optional(&mut device, Control::Bitrate(s.bitrate_kbps.saturating_mul(1000)));
            optional(&mut device, Control::RepeatSequenceHeader);
            optional(&mut device, Control::HeaderJoinedWithFirstFrame);
            // 0: only the first picture and those asked for.
            optional(&mut device, Control::IdrPeriod(key_frames.unwrap_or(0)));
            // Tried on the first request: a button control cannot be read
            // back, and pressing it now would cost an extra IDR.
            can_force_keyframe = true;
        } else {
            can_change_bitrate = false;
            can_force_keyframe = false;
            if let Some(frames) = key_frames {
                optional(&mut device, Control::GopSize(frames));
            }
        }
        if let Err(e) = device.set_frame_rate(s.fps) {
            log::info!("hardware encoder {}: {e}; its rate control keeps its own frame rate", device.label());
        }
        device.start()?;
        Ok(Self {
            device,
            layout,
            can_force_keyframe,
            can_change_bitrate,
            idr_pending: false,
            parameter_sets: ParameterSets::default(),
            frame_duration: Duration::from_nanos(1_000_000_000 / u64::from(settings.fps)),
            fps: settings.fps,
            settings,
            first_capture: None,
            last_output: None,
        })
    }

    pub fn label(&self) -> &str {
        self.device.label()
    }

    fn write_picture(layout: RawLayout, frame: &I420Frame, buffer: &mut [u8]) -> usize {
        let Some((y, u, v)) = frame.planes() else { return 0 };
        let (w, h) = (frame.width as usize, frame.height as usize);
        let stride = layout.bytes_per_line as usize;
        // The driver's padded height, from where its chroma planes start.
        let padded_rows = (layout.size_image as usize * 2 / 3 / stride.max(1)).max(h);
        let luma = stride * padded_rows;
        let chroma_stride = stride / 2;
        let chroma = chroma_stride * (padded_rows / 2);
        let needed = luma + 2 * chroma;
        if buffer.len() < needed {
            return 0;
        }
        for row in 0..h {
            buffer[row * stride..row * stride + w].copy_from_slice(&y[row * w..(row + 1) * w]);
        }
        for (plane, start) in [(u, luma), (v, luma + chroma)] {
            for row in 0..h / 2 {
                let at = start + row * chroma_stride;
                buffer[at..at + w / 2].copy_from_slice(&plane[row * w / 2..(row + 1) * w / 2]);
            }
        }
        needed
    }

    /// The coded picture for the frame just queued: drivers that hand the
    /// parameter sets back in a buffer of their own get them remembered.
    fn next_picture(&mut self) -> Result<(Vec<u8>, bool), M2mError> {
        for _ in 0..4 {
            let coded = self.device.dequeue_coded(self.settings.deadline)?;
            if self.settings.codec == FWHT {
                // vicodec flags no buffer as a key frame; its header does.
                let key = coded.keyframe || fwht_is_key_frame(&coded.data);
                return Ok((coded.data, key));
            }
            if self.settings.codec != H264 {
                return Ok((coded.data, coded.keyframe));
            }
            let types = nal_types(&coded.data);
            if types.iter().any(|&t| t == NAL_IDR || t == NAL_SLICE) {
                return Ok((coded.data, types.contains(&NAL_IDR)));
            }
            self.parameter_sets.complete_idr(coded.data);
        }
        Err(M2mError::Unsuitable {
            device: self.device.label().to_owned(),
            reason: "it returned buffers without a picture".into(),
        })
    }
}

impl<D: M2mDevice> VideoEncoder for V4l2M2mEncoder<D> {
    fn encode(&mut self, frame: &I420Frame, force_keyframe: bool) -> Result<Option<EncodedVideo>, MediaError> {
        if frame.width != self.settings.width || frame.height != self.settings.height || frame.planes().is_none() {
            return Err(MediaError::Encoder(format!(
                "frame {}x{} ({} bytes) for a {}x{} encoder",
                frame.width,
                frame.height,
                frame.data.len(),
                self.settings.width,
                self.settings.height
            )));
        }
        self.idr_pending |= force_keyframe;
        if self.idr_pending
            && self.can_force_keyframe
            && let Err(e) = self.device.set_control(Control::ForceKeyframe)
        {
            log::warn!("hardware encoder {}: {e}; viewers wait for the periodic IDR", self.device.label());
            self.can_force_keyframe = false;
        }
        let first = *self.first_capture.get_or_insert(frame.captured_at);
        let timestamp = frame.captured_at.duration_since(first).unwrap_or_default();
        let layout = self.layout;
        let mut fill = |buffer: &mut [u8]| Self::write_picture(layout, frame, buffer);
        self.device.queue_picture(&mut fill, timestamp)?;
        let (mut data, keyframe) = self.next_picture()?;
        if data.is_empty() {
            return Ok(None);
        }
        if keyframe {
            self.idr_pending = false;
            if self.settings.codec == H264 {
                data = self.parameter_sets.complete_idr(data);
            }
        }
        let duration = self.last_output.map_or(self.frame_duration, |last| timestamp.saturating_sub(last));
        self.last_output = Some(timestamp);
        Ok(Some(EncodedVideo { data: bytes::Bytes::from(data), keyframe, duration, temporal_layer: 0 }))
    }

    fn set_target(&mut self, bitrate_bps: u64, fps: u32) -> Result<(), MediaError> {
        if self.can_change_bitrate {
            let bps = bitrate_bps.min(u64::from(u32::MAX)) as u32;
            self.device.set_control(Control::Bitrate(bps))?;
        }
        let fps = fps.clamp(1, self.settings.fps);
        if fps != self.fps {
            self.fps = fps;
            // The device budgets bits per picture by its frame rate.
            if let Err(e) = self.device.set_frame_rate(fps) {
                log::debug!("hardware encoder {}: {e}", self.device.label());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
