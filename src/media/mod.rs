//! Media edges: sources (camera, microphone), encoders, sinks (speaker),
//! and the pipeline that runs them.
//!
//! Everything here is synchronous and runs on its own threads: capture and
//! encode must never wait on the network, and the network must never wait on
//! a slow encoder ("latest frame wins" between capture and encode).
//!
//! This file holds what the pieces agree on: the edge traits and the frame
//! types. The pieces, in the order media flows: [`sources`] → [`convert`]
//! (camera buffers) → [`encoders`] → the viewers, and the viewers' talk-back
//! → [`sinks`]; [`pipeline`] runs the threads between them. [`fixtures`] is
//! what only tests, benchmarks and examples use.

use std::time::{Duration, SystemTime};

pub mod alsa_pcm;
pub mod analysis;
pub mod convert;
pub mod devices;
pub mod echo;
pub mod encoders;
pub mod fixtures;
pub mod fuzzing;
pub mod night;
pub mod pipeline;
pub mod sinks;
pub mod sources;

pub use analysis::{dominant_frequency, rms_dbfs};
pub use encoders::{H264Decoder, H264Encoder, H264Settings, OpusApplication, OpusDecoder, OpusEncoder, OpusSettings};
pub use pipeline::{MediaPipeline, PipelineSettings, PipelineStats, Talkback, Talker};
pub use sinks::{AlsaSpeaker, NullSpeaker, SpeakerReport, SpeakerStats};
pub use sources::{AlsaMicrophone, H264TestCamera, Stamp, TestPattern, ToneSource, V4l2Camera};

/// Audio everywhere inside roomcam: 48 kHz, mono, 16-bit, 20 ms frames.
pub const AUDIO_SAMPLE_RATE: u32 = 48_000;
pub const AUDIO_FRAME_SAMPLES: usize = 960;
pub const AUDIO_FRAME_DURATION: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("encoder: {0}")]
    Encoder(String),
    #[error("decoder: {0}")]
    Decoder(String),
    #[error("source ended")]
    Ended,
}

/// One picture in planar I420 (Y, then U, then V; chroma at half resolution).
#[derive(Clone, Debug)]
pub struct I420Frame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    /// Wall-clock capture time (the test pattern also stamps it into the picture).
    pub captured_at: SystemTime,
}

impl I420Frame {
    /// Bytes an I420 picture of this size occupies, or `None` for sizes I420
    /// cannot describe (odd or zero dimensions: chroma is subsampled 2x2).
    pub fn expected_len(width: u32, height: u32) -> Option<usize> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return None;
        }
        let luma = (width as usize).checked_mul(height as usize)?;
        luma.checked_add(luma / 2)
    }

    /// A black picture (video range: Y = 16, U = V = 128).
    pub fn black(width: u32, height: u32, captured_at: SystemTime) -> Option<Self> {
        let len = Self::expected_len(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; len];
        data[..luma].fill(16);
        Some(Self { width, height, data, captured_at })
    }

    /// The Y, U and V planes, or `None` when `data` does not match the size
    /// (frames can come from outside, so callers must not index blindly).
    pub fn planes(&self) -> Option<(&[u8], &[u8], &[u8])> {
        let len = Self::expected_len(self.width, self.height)?;
        if self.data.len() != len {
            return None;
        }
        let luma = self.width as usize * self.height as usize;
        let (y, uv) = self.data.split_at(luma);
        let (u, v) = uv.split_at(luma / 4);
        Some((y, u, v))
    }
}

/// An encoded access unit in Annex-B form, ready for RTP packetization.
#[derive(Clone, Debug)]
pub struct EncodedVideo {
    pub data: bytes::Bytes,
    pub keyframe: bool,
    pub duration: Duration,
    /// 0 for a picture others refer to; 1 for one nothing refers to, which
    /// a viewer on a weak path can be spared (`H264Settings::temporal_layers`).
    pub temporal_layer: u8,
}

/// One Opus packet (20 ms).
#[derive(Clone, Debug)]
pub struct EncodedAudio {
    pub data: bytes::Bytes,
    pub duration: Duration,
}

/// What a camera hands over: a picture for roomcam's own encoder, or an
/// access unit from a camera that encodes H.264 itself, which is passed
/// through untouched (on a small board the camera's encoder is free, ours
/// is not).
#[derive(Clone, Debug)]
pub enum CameraFrame {
    Picture(I420Frame),
    H264(EncodedVideo),
}

/// Whether a camera that encodes for itself acted on a keyframe request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyframeRequest {
    /// The camera will send an IDR soon.
    Forced,
    /// The camera has no way to be asked (no V4L2 force-key-frame control):
    /// viewers wait for its next periodic IDR.
    Unsupported,
}

/// A camera. `next_frame` blocks until the source's next frame is due.
pub trait VideoSource: Send {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError>;

    /// Asks a camera that delivers H.264 for an IDR (a new viewer, PLI,
    /// FIR). Never called for pictures: roomcam's encoder makes those IDRs.
    fn request_keyframe(&mut self) -> KeyframeRequest {
        KeyframeRequest::Unsupported
    }

    /// Asks a camera that delivers H.264 for a new bitrate while it streams
    /// (the rate follows the viewers' network). Never called for pictures:
    /// roomcam's encoder follows the target itself. The default: a camera
    /// that cannot be told keeps its rate.
    fn set_h264_bitrate(&mut self, _bitrate_bps: u64) {}

    /// Whether the camera delivers H.264 itself (as far as is known now):
    /// its stream has none of the temporal layers roomcam's encoder makes.
    fn delivers_h264(&self) -> bool {
        false
    }
}

/// A microphone. `read_frame` blocks until 20 ms of mono 48 kHz audio is ready.
pub trait AudioSource: Send {
    fn read_frame(&mut self, pcm: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError>;
}

/// A speaker. Receives decoded talk-back audio, mono 48 kHz.
pub trait AudioSink: Send {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError>;
}

pub trait VideoEncoder: Send {
    fn encode(&mut self, frame: &I420Frame, force_keyframe: bool) -> Result<Option<EncodedVideo>, MediaError>;

    /// Aim at `bitrate_bps` and `fps` from the next frame on, without a new
    /// IDR (the rate follows the viewers' network, see `crate::rate`). The
    /// default keeps the rate the encoder was made with.
    fn set_target(&mut self, _bitrate_bps: u64, _fps: u32) -> Result<(), MediaError> {
        Ok(())
    }
}
