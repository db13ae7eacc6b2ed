//! Picks the media edges named in the config.

use std::path::Path;

use crate::config::Config;
use crate::media::sinks::{AlsaSpeaker, NullSpeaker};
use crate::media::sources::discovery::{self, NodeKind};
use crate::media::sources::libcamera;
use crate::media::sources::{
    AlsaMicrophone, AutoCamera, CameraSpec, H264TestCamera, TestPattern, ToneSource, V4l2Camera, WavSource,
};
use crate::media::{AudioSink, AudioSource, MediaError, VideoSource};

/// The tone the test microphone plays; tests listen for it.
pub const TEST_TONE_HZ: f32 = 440.0;

/// IDR period of the simulated H.264 camera: that of a typical UVC camera,
/// and how long a new viewer waits, since it cannot be asked for an IDR.
pub const TEST_H264_CAMERA_GOP: std::time::Duration = std::time::Duration::from_secs(1);

/// What a start without any camera does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoCamera {
    /// `roomcam demo`: it is for trying, so the test pattern.
    TestPattern,
    /// `roomcam run` and the service: "camera unavailable" until one appears.
    Wait,
}

/// Settles `[camera] device` before the runtime starts: `auto` becomes the
/// first V4L2 camera, else libcamera's first camera, else per `no_camera`;
/// a libcamera camera brings libcamera's V4L2 layer into the process, by
/// re-executing roomcam with it (this call then does not return).
pub fn prepare_camera(config: &mut Config, no_camera: NoCamera) -> Result<(), MediaError> {
    let spec = CameraSpec::parse(&config.camera.device)
        .map_err(|e| MediaError::Unsupported(format!("camera.device {:?}: {e}", config.camera.device)))?;
    let reexecuted_for_libcamera = std::env::var_os(libcamera::COMPAT_ENV).is_some();
    match spec {
        CameraSpec::Libcamera(_) if !libcamera::compat_loaded() => {
            let library = libcamera::compat_library().ok_or_else(compat_missing)?;
            Err(libcamera::reexec_with_compat(&library))
        }
        CameraSpec::Auto if reexecuted_for_libcamera && libcamera::compat_loaded() => {
            "libcamera".clone_into(&mut config.camera.device);
            Ok(())
        }
        CameraSpec::Auto => {
            let nodes = discovery::scan(Path::new("/dev"));
            for node in &nodes {
                if let Some(why) = discovery::classify(node).explain() {
                    log::debug!("camera: auto skips {} ({}): {why}", node.path.display(), node.driver);
                }
            }
            if let Some(node) = discovery::first_camera(&nodes) {
                log::info!("camera: auto picked {} ({}, {})", node.path.display(), node.driver, node.card);
                config.camera.device = node.path.display().to_string();
                return Ok(());
            }
            let bayer = nodes.iter().any(|n| discovery::classify(n) == NodeKind::RawBayer);
            match libcamera::compat_library() {
                Some(library) => match libcamera::probe(&library, false) {
                    Ok(text) if !libcamera::parse_probe(&text).is_empty() => {
                        return Err(libcamera::reexec_with_compat(&library));
                    }
                    Ok(_) => log::debug!("camera: libcamera has no camera either"),
                    Err(e) => log::warn!("camera: {e}"),
                },
                None if bayer => {
                    log::warn!("camera: a camera module is there (raw Bayer only) but {}", compat_missing())
                }
                None => {}
            }
            match no_camera {
                NoCamera::TestPattern => {
                    log::info!("camera: none found; the demo shows the test pattern");
                    "test".clone_into(&mut config.camera.device);
                }
                NoCamera::Wait => log::warn!(
                    "camera: none found (no V4L2 camera, no libcamera camera); showing \"camera unavailable\" \
                     until one is plugged in"
                ),
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn compat_missing() -> MediaError {
    MediaError::Unsupported(
        "libcamera cameras (the camera modules on the CSI connector) are read through libcamera's V4L2 layer, \
         v4l2-compat.so, which is not installed: apt install libcamera-v4l2"
            .into(),
    )
}

/// A V4L2 camera as the config sets it up, opened now where it can be.
fn v4l2_camera(path: &Path, config: &Config) -> V4l2Camera {
    let camera = &config.camera;
    V4l2Camera::new(path, camera.size.width, camera.size.height, camera.fps)
        .with_format(camera.format.only())
        .with_h264_bitrate(camera.bitrate)
}

fn opened_now(mut cam: V4l2Camera) -> Result<Box<dyn VideoSource>, MediaError> {
    // A camera that is missing at start-up is waited for (the placeholder
    // shows meanwhile); one that can never work (no usable format) fails
    // the start.
    match cam.open_now() {
        Ok(()) => {}
        Err(e @ MediaError::Unsupported(_)) => return Err(e),
        Err(e) => log::warn!("camera: {e}; showing \"camera unavailable\" until it appears"),
    }
    Ok(Box::new(cam))
}

/// The camera after [`prepare_camera`].
pub fn open_camera(config: &Config) -> Result<Box<dyn VideoSource>, MediaError> {
    let camera = &config.camera;
    let spec = CameraSpec::parse(&camera.device)
        .map_err(|e| MediaError::Unsupported(format!("camera.device {:?}: {e}", camera.device)))?;
    match spec {
        CameraSpec::Test => Ok(Box::new(TestPattern::new(camera.size.width, camera.size.height, camera.fps)?)),
        CameraSpec::TestBusy => Ok(Box::new(TestPattern::busy(camera.size.width, camera.size.height, camera.fps)?)),
        CameraSpec::TestH264 => Ok(Box::new(H264TestCamera::new(
            camera.size.width,
            camera.size.height,
            camera.fps,
            TEST_H264_CAMERA_GOP,
            false,
        )?)),
        CameraSpec::Auto => {
            let config = config.clone();
            Ok(Box::new(AutoCamera::new("/dev", move |path| v4l2_camera(path, &config))))
        }
        CameraSpec::Libcamera(id) => {
            if !libcamera::compat_loaded() {
                return Err(compat_missing());
            }
            let cameras = libcamera::cameras_in_process(Path::new("/dev"));
            let found = libcamera::select(&cameras, id.as_deref())
                .map_err(|reason| MediaError::Device { device: "libcamera".into(), reason })?;
            log::info!("camera: libcamera camera {:?} (through {})", found.id, found.node.display());
            opened_now(v4l2_camera(&found.node, config).with_label(format!("libcamera:{}", found.id)))
        }
        CameraSpec::V4l2(path) => opened_now(v4l2_camera(&path, config)),
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
