//! The daemon's side of the rate policy: feeds the viewers' bandwidth
//! estimates into [`RateController`] and keyframe requests through
//! [`KeyframeThrottle`], carries their decisions out on the pipeline, and
//! logs what a person reading the device log needs (the stream degraded or
//! recovered, a viewer's path changed a lot, the encoder's new target).
//! The policy itself is pure (`crate::rate`); this is the I/O around it.

use std::time::Instant;

use log::info;

use crate::media::pipeline::{MediaPipeline, VideoRate};
use crate::peer::PeerId;
use crate::rate::{
    EstimateJump, KeyframeReason, KeyframeThrottle, LayerChange, QualityChange, RateController, RateUpdate,
};

pub(super) struct StreamRate {
    room: String,
    /// `None` with congestion control off: the stream keeps its configured rate.
    controller: Option<RateController>,
    throttle: KeyframeThrottle,
    /// Viewers that take no video (listen-only, no H.264): with congestion
    /// control on or off, the pipeline rests the encoder when all do.
    without_video: std::collections::BTreeSet<PeerId>,
}

impl StreamRate {
    pub(super) fn new(room: String, controller: Option<RateController>) -> StreamRate {
        StreamRate { room, controller, throttle: KeyframeThrottle::default(), without_video: Default::default() }
    }

    /// A viewer's congestion controller has a new estimate of its path.
    /// Returns the viewers whose peers must change layers.
    pub(super) fn on_estimate(
        &mut self,
        peer: &PeerId,
        bitrate_bps: u64,
        pipeline: &MediaPipeline,
    ) -> Vec<LayerChange> {
        let Some(controller) = self.controller.as_mut() else { return Vec::new() };
        let update = controller.on_estimate(peer, bitrate_bps);
        self.apply(update, pipeline)
    }

    /// The viewer asks for at most this much video (its data saver), or no
    /// longer does. With congestion control off the stream keeps its
    /// configured rate, and the log says that the cap is not honoured.
    pub(super) fn on_video_ceiling(
        &mut self,
        peer: &PeerId,
        bitrate_bps: Option<u64>,
        pipeline: &MediaPipeline,
    ) -> Vec<LayerChange> {
        let room = &self.room;
        let Some(controller) = self.controller.as_mut() else {
            if let Some(bps) = bitrate_bps {
                info!(
                    room:% = room, peer:% = peer;
                    "room {room} peer {peer}: asks for at most {} kbit/s of video; not honoured with congestion-control = \"off\"",
                    bps / 1000
                );
            }
            return Vec::new();
        };
        let Some(update) = controller.set_viewer_ceiling(peer, bitrate_bps) else { return Vec::new() };
        {
            match bitrate_bps {
                Some(bps) => info!(
                    room:% = room, peer:% = peer;
                    "room {room} peer {peer}: video ceiling {} kbit/s (the viewer's data saver)", bps / 1000
                ),
                None => info!(room:% = room, peer:% = peer; "room {room} peer {peer}: no video ceiling"),
            }
        }
        self.apply(update, pipeline)
    }

    /// Whether the viewer gets video: one that refused H.264 or listens
    /// only does not, and its path does not bound the video.
    pub(super) fn on_receives_video(
        &mut self,
        peer: &PeerId,
        receives_video: bool,
        pipeline: &MediaPipeline,
    ) -> Vec<LayerChange> {
        let changed =
            if receives_video { self.without_video.remove(peer) } else { self.without_video.insert(peer.clone()) };
        if changed {
            pipeline.set_viewers_without_video(self.without_video.len());
            let room = &self.room;
            let watching = pipeline.viewers().saturating_sub(self.without_video.len());
            let what = if receives_video { "takes the picture again" } else { "takes no picture (listen-only)" };
            let rest = if watching == 0 { "; the video encoder rests" } else { "" };
            info!(room:% = room, peer:% = peer; "room {room} peer {peer}: {what}; {watching} viewer(s) take the picture{rest}");
        }
        let Some(controller) = self.controller.as_mut() else { return Vec::new() };
        let update = controller.set_receives_video(peer, receives_video);
        self.apply(update, pipeline)
    }

    /// The viewer's peer is closed: its estimate and its keyframe history go.
    pub(super) fn on_viewer_left(&mut self, peer: &PeerId, pipeline: &MediaPipeline) -> Vec<LayerChange> {
        self.throttle.forget_viewer(peer);
        if self.without_video.remove(peer) {
            pipeline.set_viewers_without_video(self.without_video.len());
        }
        let Some(controller) = self.controller.as_mut() else { return Vec::new() };
        let update = controller.remove_viewer(peer);
        self.apply(update, pipeline)
    }

    /// A viewer needs an IDR: forced now, or deferred to the end of the
    /// throttle's window ([`poll`](Self::poll)).
    pub(super) fn on_keyframe_request(
        &mut self,
        peer: &PeerId,
        new_viewer: bool,
        now: Instant,
        pipeline: &MediaPipeline,
    ) {
        let reason = if new_viewer { KeyframeReason::NewViewer(peer.clone()) } else { KeyframeReason::PictureLoss };
        if self.throttle.request(now, reason) {
            pipeline.request_keyframe();
        }
    }

    /// When a deferred keyframe request falls due.
    pub(super) fn next_keyframe_due(&self) -> Option<Instant> {
        self.throttle.next_due()
    }

    /// Forces the deferred IDR once its time has come.
    pub(super) fn poll(&mut self, now: Instant, pipeline: &MediaPipeline) {
        if self.throttle.poll(now) {
            pipeline.request_keyframe();
        }
    }

    fn apply(&self, update: RateUpdate, pipeline: &MediaPipeline) -> Vec<LayerChange> {
        let room = &self.room;
        if let Some(EstimateJump { viewer, from_bps, to_bps }) = &update.estimate_jump {
            let to = to_bps / 1000;
            match from_bps {
                Some(from) => info!(
                    room:% = room, peer:% = viewer;
                    "room {room} peer {viewer}: bandwidth estimate {} -> {to} kbit/s", from / 1000
                ),
                None => {
                    info!(room:% = room, peer:% = viewer; "room {room} peer {viewer}: bandwidth estimate {to} kbit/s")
                }
            }
        }
        if let Some(target) = update.target {
            info!(
                room:% = room;
                "room {room}: video target {} kbit/s at {} fps", target.bitrate_bps / 1000, target.fps
            );
            pipeline.set_video_rate(VideoRate { bitrate_bps: target.bitrate_bps, fps: target.fps });
        }
        match update.quality {
            Some(QualityChange::Degraded(target)) => info!(
                room:% = room;
                "room {room}: stream degraded to {} kbit/s at {} fps to fit the slowest viewer's path",
                target.bitrate_bps / 1000,
                target.fps
            ),
            Some(QualityChange::Recovered(target)) => info!(
                room:% = room;
                "room {room}: stream recovered: {} kbit/s at {} fps", target.bitrate_bps / 1000, target.fps
            ),
            None => {}
        }
        if let Some(viewer) = &update.weakest_sets_the_rate {
            info!(
                room:% = room, peer:% = viewer;
                "room {room} peer {viewer}: this viewer's path sets the rate for every viewer \
                 (the camera's own H.264 has no temporal layers to spare it pictures)"
            );
        }
        for LayerChange { viewer, base_layer_only, budget_bps, target_bps } in &update.layer_changes {
            let (budget, target) = (budget_bps / 1000, target_bps / 1000);
            if *base_layer_only {
                info!(
                    room:% = room, peer:% = viewer;
                    "room {room} peer {viewer}: sent every other picture (temporal layer 0): its path carries \
                     {budget} kbit/s of video, the stream is {target} kbit/s"
                );
            } else {
                info!(
                    room:% = room, peer:% = viewer;
                    "room {room} peer {viewer}: sent every picture again ({budget} kbit/s for a {target} kbit/s stream)"
                );
            }
        }
        update.layer_changes
    }
}
