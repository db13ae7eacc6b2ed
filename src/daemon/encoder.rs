//! Picks who encodes H.264 (`[camera] encoder`): the board's own encoder
//! (a V4L2 memory-to-memory device) or OpenH264, and puts OpenH264 behind
//! the hardware one for the day it fails.

use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::config::{Config, EncoderChoice};
use crate::media::encoders::fallback::FallbackEncoder;
use crate::media::encoders::v4l2m2m::{self, M2mSettings, V4l2M2mEncoder};
use crate::media::encoders::{H264Encoder, H264Settings};
use crate::media::{MediaError, VideoEncoder};

/// The board's encoder, opened.
pub struct HardwareEncoder {
    pub encoder: Box<dyn VideoEncoder>,
    /// Its node and card, for the log.
    pub label: String,
}

/// The hardware encoder `[camera] encoder` asks for: `Ok(None)` for
/// OpenH264, and for `auto` on a board without one (said in one line).
pub fn open_hardware_encoder(config: &Config) -> Result<Option<HardwareEncoder>, MediaError> {
    let camera = &config.camera;
    if camera.encoder == EncoderChoice::OpenH264 {
        info!("H.264 encoder: OpenH264 (camera.encoder = \"openh264\")");
        warn_on_armv6();
        return Ok(None);
    }
    let opened = hardware_node(camera.encoder_device.as_deref()).and_then(|path| {
        let settings = M2mSettings::h264(camera.size.width, camera.size.height, camera.fps, camera.bitrate);
        V4l2M2mEncoder::open(&path, settings).map_err(|e| e.to_string())
    });
    match (opened, camera.encoder) {
        (Ok(encoder), _) => {
            let label = encoder.label().to_owned();
            info!("H.264 encoder: {label}, in hardware");
            Ok(Some(HardwareEncoder { encoder: Box::new(encoder), label }))
        }
        (Err(why), EncoderChoice::Auto) => {
            info!("H.264 encoder: OpenH264, in software ({why})");
            warn_on_armv6();
            Ok(None)
        }
        (Err(why), _) => Err(MediaError::Device { device: "camera.encoder = \"v4l2m2m\"".into(), reason: why }),
    }
}

fn warn_on_armv6() {
    if let Some(warning) = crate::board::software_encoder_warning() {
        warn!("H.264 encoder: {warning}");
    }
}

fn hardware_node(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    let nodes = v4l2m2m::find_encoders(Path::new("/dev"), v4l2m2m::H264);
    if let Some(node) = nodes.iter().find(|n| n.raw_formats.contains(&v4l2m2m::YU12)) {
        return Ok(node.path.clone());
    }
    Err(match nodes.first() {
        None => "no V4L2 memory-to-memory node encodes H.264 here".to_string(),
        Some(node) => format!("{} ({}) encodes H.264 but not from YU12 (I420)", node.path.display(), node.card),
    })
}

/// What encodes the pipeline's pictures: OpenH264 alone, or the hardware
/// encoder with OpenH264 made the moment it fails (one temporal layer then,
/// as the hardware's stream had: the rate policy was set up for that).
pub fn video_encoder(
    config: &Config,
    hardware: Option<HardwareEncoder>,
    temporal_layers: u8,
) -> Result<Box<dyn VideoEncoder>, MediaError> {
    let camera = &config.camera;
    let openh264 = H264Settings {
        width: camera.size.width,
        height: camera.size.height,
        fps: camera.fps,
        bitrate_kbps: camera.bitrate,
        threads: camera.encoder_threads,
        // OpenH264 threads share out slices: without several slices per
        // picture the extra threads idle. Slices that fit one RTP packet.
        max_slice_bytes: (camera.encoder_threads > 1).then_some(1100),
        temporal_layers,
        low_complexity: camera.encoder_complexity == crate::config::EncoderComplexity::Low,
        ..H264Settings::default()
    };
    match hardware {
        None => Ok(Box::new(H264Encoder::new(openh264)?)),
        Some(HardwareEncoder { encoder, label }) => {
            let settings = H264Settings { temporal_layers: 1, ..openh264 };
            // Tried now: settings OpenH264 refuses must fail at start, not
            // on the day the hardware does.
            H264Encoder::new(settings.clone())?;
            let make = Box::new(move || Ok(Box::new(H264Encoder::new(settings.clone())?) as Box<dyn VideoEncoder>));
            Ok(Box::new(FallbackEncoder::new(encoder, label, make)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(camera: &str) -> Config {
        Config::parse(&format!("[camera]\nsize = \"320x240\"\n{camera}"), Path::new("encoder.toml")).unwrap()
    }

    #[test]
    fn auto_without_a_hardware_encoder_is_openh264_and_openh264_is_never_hardware() {
        assert!(find_encoder_free_machine(), "this test wants a machine without a hardware H.264 encoder");
        assert!(open_hardware_encoder(&config("")).unwrap().is_none());
        assert!(open_hardware_encoder(&config("encoder = \"openh264\"\n")).unwrap().is_none());
        assert!(video_encoder(&config(""), None, 2).is_ok());
    }

    #[test]
    fn v4l2m2m_that_cannot_be_had_fails_the_start_saying_why() {
        assert!(find_encoder_free_machine(), "this test wants a machine without a hardware H.264 encoder");
        let error = open_hardware_encoder(&config("encoder = \"v4l2m2m\"\n")).err().unwrap().to_string();
        assert!(error.contains("no V4L2 memory-to-memory node encodes H.264"), "{error}");
        let error = open_hardware_encoder(&config("encoder = \"v4l2m2m\"\nencoder-device = \"/dev/null\"\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("/dev/null") && error.contains("VIDIOC_QUERYCAP"), "{error}");
        // auto says why in its log line and goes on with OpenH264.
        assert!(open_hardware_encoder(&config("encoder-device = \"/dev/null\"\n")).unwrap().is_none());
    }

    fn find_encoder_free_machine() -> bool {
        v4l2m2m::find_encoders(Path::new("/dev"), v4l2m2m::H264).is_empty()
    }
}
