//! The encode thread: every frame the viewers get leaves from here, in
//! order, whether roomcam encoded it or the camera did.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::handover::Next;
use super::{Shared, bump};
use crate::media::{EncodedVideo, VideoEncoder};
use crate::util::{LogLimit, warn_limited};

/// A bitrate and frame rate the stream should have (see
/// [`MediaPipeline::set_video_rate`](super::MediaPipeline::set_video_rate)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoRate {
    pub bitrate_bps: u64,
    pub fps: u32,
}

impl VideoRate {
    /// Bitrate (saturated at 32 bits: 4 Gbit/s) in the high word, frame rate
    /// in the low one; never 0 for a real rate (the frame rate is at least 1).
    pub(super) fn packed(self) -> u64 {
        (self.bitrate_bps.min(u64::from(u32::MAX)) << 32) | u64::from(self.fps.max(1))
    }

    pub(super) fn unpacked(word: u64) -> Option<VideoRate> {
        (word != 0).then(|| VideoRate { bitrate_bps: word >> 32, fps: (word & 0xFFFF_FFFF) as u32 })
    }
}

/// Drops pictures to bring the camera's frame rate down to a target: a
/// schedule advancing by the target interval, and a picture is kept when it
/// is due (within half a camera frame, so capture jitter does not cost an
/// extra picture). The schedule advances from where it was, not from the
/// picture kept, so the long-run rate is the target even when it is no
/// whole share of the camera's. Pure: the capture times are the clock.
#[derive(Debug, Default)]
pub(super) struct FrameDecimator {
    /// `None`: every picture is kept.
    interval: Option<Duration>,
    slack: Duration,
    due: Option<SystemTime>,
}

impl FrameDecimator {
    pub(super) fn set_rate(&mut self, camera_fps: u32, target_fps: u32) {
        self.interval = (target_fps < camera_fps).then(|| Duration::from_secs(1) / target_fps.max(1));
        self.slack = Duration::from_secs(1) / camera_fps.max(1) / 2;
        self.due = None;
    }

    /// Whether the picture captured at `captured_at` is to be encoded.
    pub(super) fn keep(&mut self, captured_at: SystemTime) -> bool {
        let Some(interval) = self.interval else {
            self.due = None;
            return true;
        };
        if self.due.is_some_and(|due| captured_at + self.slack < due) {
            return false;
        }
        // Behind by more than an interval (a pause, a stall): start afresh
        // rather than keep every picture until the schedule catches up.
        self.due = Some(match self.due {
            Some(due) if captured_at < due + interval => due + interval,
            _ => captured_at + interval,
        });
        true
    }
}

/// Where the stream the viewers decode currently comes from. A switch
/// needs an IDR from the new origin, since their references differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Encoder,
    Camera,
}

/// Encodes pictures and forwards a camera's own access units: every frame
/// the viewers get leaves from here, in order.
pub(super) fn encode_loop(
    shared: &Shared,
    mut encoder: Box<dyn VideoEncoder>,
    camera_fps: u32,
    encode_times: Option<&super::EncodeTimes>,
    tx: &broadcast::Sender<EncodedVideo>,
) {
    let limit = LogLimit::once_per(Duration::from_secs(10));
    let mut rate_applied = 0u64;
    let mut decimator = FrameDecimator::default();
    let mut want_key = true;
    // Until an IDR has gone out, P frames are useless to every viewer.
    let mut need_idr_first = true;
    let mut origin: Option<Origin> = None;
    // The camera was asked for the IDR that `need_idr_first` waits for.
    let mut asked_camera = false;
    while let Some(next) = shared.handover.take(&shared.stop) {
        if !shared.video_watched() {
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
        let rate_word = shared.video_rate.load(Ordering::Acquire);
        if rate_word != rate_applied
            && let Some(rate) = VideoRate::unpacked(rate_word)
        {
            rate_applied = rate_word;
            decimator.set_rate(camera_fps, rate.fps);
            if let Err(e) = encoder.set_target(rate.bitrate_bps, rate.fps) {
                warn_limited!(limit, "video encoder: cannot change its rate: {e}");
            }
        }
        want_key |= keyframe_requested || need_idr_first;
        // A picture the lowered frame rate has no room for; never one that
        // is to be an IDR (somebody waits for it).
        if !decimator.keep(frame.captured_at) && !want_key {
            bump(&shared.counters.frames_dropped);
            continue;
        }
        let encode_started = std::time::Instant::now();
        let encoded = encoder.encode(&frame, want_key);
        if let Some(times) = encode_times {
            (times.0)(encode_started.elapsed());
        }
        match encoded {
            Ok(Some(ev)) => {
                if ev.keyframe {
                    want_key = false;
                    need_idr_first = false;
                    bump(&shared.counters.keyframes);
                } else if need_idr_first {
                    continue;
                }
                bump(&shared.counters.frames_encoded);
                // From the driver's capture stamp (wall clock, see the
                // sources): what a camera path costs before the network.
                if let Ok(latency) = SystemTime::now().duration_since(frame.captured_at) {
                    shared.counters.record_capture_to_au(latency);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_rate_packs_into_one_word() {
        let rate = VideoRate { bitrate_bps: 1_234_567, fps: 12 };
        assert_eq!(VideoRate::unpacked(rate.packed()), Some(rate));
        assert_eq!(VideoRate::unpacked(0), None);
    }

    #[test]
    fn decimator_keeps_the_target_share_of_pictures() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        // A 25 fps camera with a couple of milliseconds of jitter.
        let at = |i: u64| t0 + Duration::from_millis(i * 40 + (i * 7) % 3);
        let kept = |decimator: &mut FrameDecimator| (0..250).filter(|&i| decimator.keep(at(i))).count();
        let mut decimator = FrameDecimator::default();
        assert_eq!(kept(&mut decimator), 250, "no target: everything");
        decimator.set_rate(25, 25);
        assert_eq!(kept(&mut decimator), 250, "the full rate: everything");
        for target in [5u32, 12, 20] {
            decimator.set_rate(25, target);
            let n = kept(&mut decimator);
            // 10 s of pictures, so ten times the target.
            assert!(n.abs_diff(10 * target as usize) <= 2, "{target} fps: kept {n}");
        }
    }
}
