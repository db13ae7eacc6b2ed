//! Picks the media edges named in the config.

use crate::config::Config;
use crate::media::sinks::{AlsaSpeaker, NullSpeaker};
use crate::media::sources::{AlsaMicrophone, H264TestCamera, TestPattern, ToneSource, V4l2Camera, WavSource};
use crate::media::{AudioSink, AudioSource, MediaError, VideoSource};

/// The tone the test microphone plays; tests listen for it.
pub const TEST_TONE_HZ: f32 = 440.0;

/// IDR period of the simulated H.264 camera: that of a typical UVC camera,
/// and how long a new viewer waits, since it cannot be asked for an IDR.
pub const TEST_H264_CAMERA_GOP: std::time::Duration = std::time::Duration::from_secs(1);

pub fn open_camera(config: &Config) -> Result<Box<dyn VideoSource>, MediaError> {
    let camera = &config.camera;
    match camera.device.as_str() {
        "test" => Ok(Box::new(TestPattern::new(camera.size.width, camera.size.height, camera.fps)?)),
        "test-busy" => Ok(Box::new(TestPattern::busy(camera.size.width, camera.size.height, camera.fps)?)),
        "test-h264" => Ok(Box::new(H264TestCamera::new(
            camera.size.width,
            camera.size.height,
            camera.fps,
            TEST_H264_CAMERA_GOP,
            false,
        )?)),
        device => {
            let mut cam = V4l2Camera::new(device, camera.size.width, camera.size.height, camera.fps)
                .with_format(camera.format.only())
                .with_h264_bitrate(camera.bitrate);
            // A camera that is missing at start-up is waited for (the
            // placeholder shows meanwhile); one that can never work
            // (no usable format) fails the start.
            match cam.open_now() {
                Ok(()) => {}
                Err(e @ MediaError::Unsupported(_)) => return Err(e),
                Err(e) => log::warn!("camera: {e}; showing \"camera unavailable\" until it appears"),
            }
            Ok(Box::new(cam))
        }
    }
}

pub fn open_microphone(config: &Config) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
    match config.audio.microphone.as_str() {
        "test" => Ok(Some(Box::new(ToneSource::new(TEST_TONE_HZ)))),
        "none" => Ok(None),
        name if WavSource::path_of(name).is_some() => {
            Ok(Some(Box::new(WavSource::open(&WavSource::path_of(name).unwrap_or_default())?)))
        }
        pcm => Ok(Some(Box::new(AlsaMicrophone::open_with_periods(pcm, config.audio.periods)?))),
    }
}

pub fn open_speaker(config: &Config) -> Result<Box<dyn AudioSink>, MediaError> {
    match config.audio.speaker.as_str() {
        "null" => Ok(Box::new(NullSpeaker::new())),
        pcm => Ok(Box::new(AlsaSpeaker::open_with_periods(pcm, config.audio.periods)?)),
    }
}
