//! The encode thread: every frame the viewers get leaves from here, in
//! order, whether roomcam encoded it or the camera did.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;

use super::handover::Next;
use super::{Shared, bump};
use crate::media::{EncodedVideo, VideoEncoder};
use crate::util::{LogLimit, warn_limited};

/// Where the stream the viewers decode currently comes from. A switch
/// needs an IDR from the new origin, since their references differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Encoder,
    Camera,
}

/// Encodes pictures and forwards a camera's own access units: every frame
/// the viewers get leaves from here, in order.
pub(super) fn encode_loop(shared: &Shared, mut encoder: Box<dyn VideoEncoder>, tx: &broadcast::Sender<EncodedVideo>) {
    let limit = LogLimit::once_per(Duration::from_secs(10));
    let mut want_key = true;
    // Until an IDR has gone out, P frames are useless to every viewer.
    let mut need_idr_first = true;
    let mut origin: Option<Origin> = None;
    // The camera was asked for the IDR that `need_idr_first` waits for.
    let mut asked_camera = false;
    while let Some(next) = shared.handover.take(&shared.stop) {
        if shared.viewers.load(Ordering::Acquire) == 0 {
            bump(&shared.counters.frames_dropped);
            need_idr_first = true;
            want_key = true;
            continue;
        }
        if shared.restart.swap(false, Ordering::AcqRel) {
            need_idr_first = true;
        }
        let keyframe_requested = shared.keyframe_requested.swap(false, Ordering::AcqRel);
        let frame = match next {
            Next::Picture(frame) => frame,
            Next::AccessUnit(au) => {
                if origin != Some(Origin::Camera) {
                    origin = Some(Origin::Camera);
                    need_idr_first = true;
                }
                if keyframe_requested || (need_idr_first && !au.keyframe && !asked_camera) {
                    shared.camera_keyframe_wanted.store(true, Ordering::Release);
                    asked_camera = true;
                }
                if au.keyframe {
                    need_idr_first = false;
                    asked_camera = false;
                    bump(&shared.counters.keyframes);
                } else if need_idr_first {
                    bump(&shared.counters.frames_dropped);
                    continue;
                }
                bump(&shared.counters.frames_encoded);
                let _ = tx.send(au);
                continue;
            }
        };
        if origin != Some(Origin::Encoder) {
            origin = Some(Origin::Encoder);
            need_idr_first = true;
        }
        want_key |= keyframe_requested || need_idr_first;
        match encoder.encode(&frame, want_key) {
            Ok(Some(ev)) => {
                if ev.keyframe {
                    want_key = false;
                    need_idr_first = false;
                    bump(&shared.counters.keyframes);
                } else if need_idr_first {
                    continue;
                }
                bump(&shared.counters.frames_encoded);
                // No receivers is normal (viewer count and subscriptions are
                // updated by different tasks).
                let _ = tx.send(ev);
            }
            Ok(None) => bump(&shared.counters.encoder_skips),
            Err(e) => {
                warn_limited!(limit, "video encoder: {e}");
                // The encoder may have lost its state; restart cleanly.
                want_key = true;
            }
        }
    }
}
