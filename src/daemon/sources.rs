//! Picks the media edges named in the config.

use crate::config::Config;
use crate::media::test_sources::{NullSpeaker, TestPattern, ToneSource};
use crate::media::{AudioSink, AudioSource, MediaError, VideoSource};

/// The tone the test microphone plays; tests listen for it.
pub const TEST_TONE_HZ: f32 = 440.0;

pub fn open_camera(config: &Config) -> Result<Box<dyn VideoSource>, MediaError> {
    let camera = &config.camera;
    match camera.device.as_str() {
        "test" => Ok(Box::new(TestPattern::new(camera.size.width, camera.size.height, camera.fps)?)),
        device => Err(MediaError::Unsupported(format!(
            "camera {device:?}: V4L2 cameras are not supported yet; use --camera test"
        ))),
    }
}

pub fn open_microphone(config: &Config) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
    match config.audio.microphone.as_str() {
        "test" => Ok(Some(Box::new(ToneSource::new(TEST_TONE_HZ)))),
        "none" => Ok(None),
        pcm => Err(MediaError::Unsupported(format!(
            "microphone {pcm:?}: ALSA capture is not supported yet; use --microphone test or none"
        ))),
    }
}

pub fn open_speaker(config: &Config) -> Result<Box<dyn AudioSink>, MediaError> {
    match config.audio.speaker.as_str() {
        "null" => Ok(Box::new(NullSpeaker::new())),
        pcm => Err(MediaError::Unsupported(format!(
            "speaker {pcm:?}: ALSA playback is not supported yet; use --speaker null"
        ))),
    }
}
