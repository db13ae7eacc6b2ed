//! The capture thread: reads the camera, hands its pictures (or its own
//! H.264 access units) to the encode thread, and puts the "camera
//! unavailable" picture in their place while the camera is away.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::encode::VideoRate;
use super::{DeviceRetry, Shared, bump};
use crate::media::encoders::h264::ParameterSets;
use crate::media::night::{NightChange, NightSwitch};
use crate::media::sources::placeholder::camera_unavailable;
use crate::media::{CameraFrame, KeyframeRequest, VideoSource};

fn log_night(change: NightChange) {
    match change.night {
        true => log::info!(
            "camera: night mode on: the room is dark (mean luma {}); pictures in greyscale",
            change.mean_luma
        ),
        false => log::info!("camera: night mode off: the room is lit (mean luma {}); colour again", change.mean_luma),
    }
}

pub(super) fn capture_loop(
    shared: &Shared,
    source: &mut dyn VideoSource,
    mut parameter_sets: ParameterSets,
    mut size: (u32, u32),
    mut night: NightSwitch,
) {
    // While the camera is away, viewers get a placeholder picture at least
    // this often, and the camera is retried at least this often.
    let mut retry = DeviceRetry::new(Duration::from_millis(500));
    let mut told_keyframes_unsupported = false;
    let mut rate_applied = 0u64;
    let mut delivers_h264 = false;
    while !shared.stopping() {
        // Only a camera that encodes for itself is told the bitrate; pictures
        // are roomcam's encoder's business (the encode thread).
        let rate_word = shared.video_rate.load(Ordering::Acquire);
        if delivers_h264
            && rate_word != rate_applied
            && let Some(rate) = VideoRate::unpacked(rate_word)
        {
            rate_applied = rate_word;
            source.set_h264_bitrate(rate.bitrate_bps);
        }
        if shared.camera_keyframe_wanted.swap(false, Ordering::AcqRel)
            && source.request_keyframe() == KeyframeRequest::Unsupported
            && !std::mem::replace(&mut told_keyframes_unsupported, true)
        {
            log::warn!(
                "camera: it encodes H.264 itself and cannot be asked for a keyframe, so viewers' picture-loss \
                 requests (PLI/FIR) cannot be honoured: a new or recovering viewer waits for the camera's next IDR"
            );
        }
        let next = source.next_frame();
        bump(&shared.counters.capture_returns);
        match next {
            Ok(frame) => {
                retry.reset();
                bump(&shared.counters.frames_captured);
                let watched = shared.video_watched();
                match frame {
                    CameraFrame::Picture(mut picture) => {
                        size = (picture.width, picture.height);
                        // Looked at whether watched or not: the room's light
                        // is the same when a viewer comes.
                        if let Some(change) = night.process(&mut picture, std::time::Instant::now()) {
                            log_night(change);
                        }
                        if watched {
                            shared.handover.put_frame(picture, &shared.counters);
                        } else {
                            bump(&shared.counters.frames_dropped);
                        }
                    }
                    CameraFrame::H264(mut au) => {
                        delivers_h264 = true;
                        // Every keyframe, watched or not: the camera may have
                        // sent its SPS/PPS long before the first viewer came.
                        if au.keyframe {
                            au.data = parameter_sets.complete_idr(au.data.to_vec()).into();
                        }
                        if watched {
                            shared.handover.put_access_unit(au, &shared.counters, &shared.camera_keyframe_wanted);
                        } else {
                            bump(&shared.counters.frames_dropped);
                        }
                    }
                }
            }
            Err(e) => {
                if shared.video_watched()
                    && let Some(frame) = camera_unavailable(size.0, size.1, SystemTime::now())
                {
                    shared.handover.put_frame(frame, &shared.counters);
                }
                if !retry.failed(shared, "camera", &e) {
                    break;
                }
            }
        }
    }
}
