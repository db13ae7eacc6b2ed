//! The simulated H.264 camera (`--camera test-h264`).

use std::time::Duration;

use super::TestPattern;
use crate::media::encoders::h264::{H264Encoder, H264Settings, nal_units};
use crate::media::{CameraFrame, KeyframeRequest, MediaError, VideoEncoder, VideoSource};

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
    fn delivers_h264(&self) -> bool {
        true
    }

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
