//! The rate policy: every viewer's bandwidth estimate in, one encoder target
//! out. Pure: no I/O and no clock reads; time is passed in where it matters.
//!
//! roomcam encodes once for all viewers, so the stream has to fit the worst
//! path among the viewers that receive video. The estimates come from each
//! peer's congestion controller (`PeerEvent::BandwidthEstimate`); what to do
//! with them is decided here:
//!
//! 1. Audio is never starved: [`audio_budget_bps`] (Opus plus its packet
//!    overhead) comes off each estimate before it becomes a video budget.
//! 2. The video target is the smallest budget among the viewers that receive
//!    video, clamped to `[floor, ceiling]` (`camera.min-bitrate`,
//!    `camera.bitrate`). With no such viewer it is the ceiling.
//! 3. A new target is reported only when it matters: a change of at least
//!    [`TARGET_HYSTERESIS`] of the current one, or reaching the floor or the
//!    ceiling exactly (so a slowly sinking path still ends at the floor).
//! 4. "Keep the frame rate, let quality give": down to
//!    [`FULL_RATE_MIN_BPS_VGA`] (scaled by the picture's pixels) only the
//!    bitrate falls. Below that the frame rate falls in proportion to the
//!    bitrate, so each picture keeps the bits it had at that point instead of
//!    turning to mush, down to [`MIN_FPS`].
//! 5. The stream is "degraded" when its target is below [`DEGRADED_BELOW`]
//!    of the ceiling or its frame rate had to drop, and "recovered" once it is
//!    back at [`RECOVERED_AT`] of the ceiling at full frame rate: the band in
//!    between keeps a target that hovers around one threshold from logging a
//!    line on every wobble.
//! 6. A viewer's estimate that moved by more than [`ESTIMATE_LOG_STEP`] since
//!    it was last logged (or is its first) is flagged for one device-log line.
//! 7. A weak viewer does not drag the others down, where the encoder makes
//!    two temporal layers (OpenH264: every other picture is one nothing
//!    refers to, and layer 0 alone carries [`BASE_LAYER_SHARE`] of the
//!    bits). When the weakest budget is far enough below the strongest that
//!    giving the weak viewers layer 0 only lets the target rise by
//!    [`LAYER_SPLIT_GAIN`], the target becomes what the weakest can carry
//!    as layer 0 (at most the strongest budget), and every viewer whose
//!    budget is under that target gets layer 0 only: half the frame rate at
//!    the same picture quality, from the same encode. The split ends when
//!    the gain falls under [`LAYER_MERGE_GAIN`]. Without layers (a camera's
//!    own H.264) the weakest sets the rate for all, and that is flagged once.
//!
//! [`KeyframeThrottle`] coalesces keyframe requests: an IDR costs several
//! frames' worth of bits, and a PLI storm on a lossy link would otherwise turn
//! the whole stream into IDRs exactly when the link can least carry them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// Opus packet overhead beyond its payload, in bit/s: 50 packets a second
/// (20 ms frames) of about 40 bytes each: the RTP header (12), the header
/// extensions it carries (transport-wide sequence number, mid: 8 to 12) and
/// the SRTP authentication tag (10), with some slack. The estimate counts RTP
/// bytes, so this is the same unit; UDP/IP headers are in neither.
pub const AUDIO_PACKET_OVERHEAD_BPS: u64 = 50 * 40 * 8;

/// What audio needs out of an estimate: its Opus bitrate and its overhead.
pub fn audio_budget_bps(opus_bps: u64) -> u64 {
    opus_bps + AUDIO_PACKET_OVERHEAD_BPS
}

/// Below this (at 640x480; scaled by pixel count for other sizes) the frame
/// rate drops rather than the quality of every picture. At 25 fps this is
/// about 0.04 bit per pixel and frame, where OpenH264's baseline pictures of a
/// room are still recognisable; below it they smear into blocks.
pub const FULL_RATE_MIN_BPS_VGA: u64 = 300_000;
const VGA_PIXELS: u64 = 640 * 480;
/// The frame rate never drops below this: fewer pictures than this read as a
/// frozen stream, and a viewer reloads the page.
pub const MIN_FPS: u32 = 5;
/// A new target must differ from the current one by this fraction to be
/// worth reconfiguring the encoder for.
pub const TARGET_HYSTERESIS: f64 = 0.10;
/// The stream is degraded when its target falls below this share of the ceiling.
pub const DEGRADED_BELOW: f64 = 0.70;
/// ... and recovered when it is back at this share of it at full frame rate.
pub const RECOVERED_AT: f64 = 0.80;
/// A viewer's estimate is logged when it moved by more than this fraction
/// since it was last logged.
pub const ESTIMATE_LOG_STEP: f64 = 0.25;
/// Layer 0's share of the bits with two temporal layers: measured 58 % on
/// `test-busy` at 640x480@25 and 1500 kbit/s
/// (`media::encoders::h264::tests::layer_1_pictures_can_be_left_out`),
/// rounded up so a layer-0 viewer's path is not overfilled.
pub const BASE_LAYER_SHARE: f64 = 0.62;
/// Viewers are split into layers only when that raises the target by at
/// least this factor: less is not worth halving someone's frame rate (the
/// most a split can give is 1 / BASE_LAYER_SHARE = 1.6).
pub const LAYER_SPLIT_GAIN: f64 = 1.4;
/// ... and merged again when the gain falls under this (the band between
/// keeps an estimate wobbling at the edge from flipping a viewer's rate).
pub const LAYER_MERGE_GAIN: f64 = 1.2;
/// At most one IDR per this long, except a new viewer's first one.
pub const KEYFRAME_WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateError {
    #[error("the bitrate ceiling must be above zero")]
    ZeroCeiling,
    #[error("the picture must have pixels (got {width}x{height})")]
    NoPixels { width: u32, height: u32 },
    #[error("the frame rate must be above zero")]
    ZeroFrameRate,
}

/// The fixed inputs of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// The configured video bitrate (`camera.bitrate`): never exceeded.
    ceiling_bps: u64,
    /// `camera.min-bitrate`: never gone below, whatever the estimates say.
    floor_bps: u64,
    /// Taken off every estimate first, see [`audio_budget_bps`].
    audio_budget_bps: u64,
    pixels: u64,
    /// The configured frame rate: the full rate.
    fps: u32,
}

impl RateLimits {
    /// A floor above the ceiling becomes the ceiling: the default floor (150
    /// kbit/s) must not make a deliberately low `camera.bitrate` invalid.
    pub fn new(
        ceiling_bps: u64,
        floor_bps: u64,
        audio_budget_bps: u64,
        (width, height): (u32, u32),
        fps: u32,
    ) -> Result<RateLimits, RateError> {
        if ceiling_bps == 0 {
            return Err(RateError::ZeroCeiling);
        }
        if width == 0 || height == 0 {
            return Err(RateError::NoPixels { width, height });
        }
        if fps == 0 {
            return Err(RateError::ZeroFrameRate);
        }
        Ok(RateLimits {
            ceiling_bps,
            floor_bps: floor_bps.min(ceiling_bps),
            audio_budget_bps,
            pixels: u64::from(width) * u64::from(height),
            fps,
        })
    }

    pub fn ceiling_bps(&self) -> u64 {
        self.ceiling_bps
    }

    pub fn floor_bps(&self) -> u64 {
        self.floor_bps
    }

    /// The lowest bitrate that still gets the full frame rate: the VGA figure
    /// scaled by pixel count, but never above the ceiling (a deliberately low
    /// ceiling keeps the configured frame rate at the ceiling).
    pub fn full_rate_min_bps(&self) -> u64 {
        (FULL_RATE_MIN_BPS_VGA * self.pixels / VGA_PIXELS).min(self.ceiling_bps)
    }

    /// The encoder settings for a video bitrate (already clamped by the caller
    /// or not: it is clamped here too).
    pub fn target_for(&self, bitrate_bps: u64) -> VideoTarget {
        let bitrate_bps = bitrate_bps.clamp(self.floor_bps, self.ceiling_bps);
        let full_rate_min = self.full_rate_min_bps();
        let fps = if bitrate_bps >= full_rate_min {
            self.fps
        } else {
            // The same bits per picture as at `full_rate_min`: fewer, not worse, pictures.
            let scaled = u64::from(self.fps) * bitrate_bps / full_rate_min.max(1);
            (scaled as u32).clamp(MIN_FPS.min(self.fps), self.fps)
        };
        VideoTarget { bitrate_bps, fps }
    }
}

/// What the encoder should be set to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoTarget {
    pub bitrate_bps: u64,
    pub fps: u32,
}

/// The stream's quality crossed a threshold: the caller logs one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QualityChange {
    /// Below [`DEGRADED_BELOW`] of the ceiling, or the frame rate had to drop.
    Degraded(VideoTarget),
    /// Back at [`RECOVERED_AT`] of the ceiling at full frame rate.
    Recovered(VideoTarget),
}

/// A viewer's estimate moved enough to be worth a device-log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstimateJump {
    pub viewer: String,
    /// What was last logged for this viewer; `None` for its first estimate.
    pub from_bps: Option<u64>,
    pub to_bps: u64,
}

/// What one input changed; each field says what the caller has to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateUpdate {
    /// Reconfigure the encoder to this.
    pub target: Option<VideoTarget>,
    /// Log one line: the stream degraded or recovered.
    pub quality: Option<QualityChange>,
    /// Log one line: this viewer's estimate moved by more than [`ESTIMATE_LOG_STEP`].
    pub estimate_jump: Option<EstimateJump>,
    /// Tell these viewers' peers to send layer 0 only (`true`) or every
    /// picture again (`false`); one log line each.
    pub layer_changes: Vec<LayerChange>,
    /// Log one line, once: the encoder has no layers, so this viewer's path
    /// sets the rate for everyone although the others could carry more.
    pub weakest_sets_the_rate: Option<String>,
}

/// A viewer whose share of the stream changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerChange {
    pub viewer: String,
    pub base_layer_only: bool,
    /// Its video budget and the stream's target, for the log line.
    pub budget_bps: u64,
    pub target_bps: u64,
}

/// The target the viewers' budgets allow, and who gets layer 0 only.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    wanted_bps: u64,
    base_layer_only: BTreeSet<String>,
}

#[derive(Debug)]
struct ViewerRate {
    estimate_bps: Option<u64>,
    /// What the viewer asks for at most (its SDP's video bandwidth: a data
    /// saver), video only.
    ceiling_bps: Option<u64>,
    /// The estimate last flagged for the log.
    logged_bps: Option<u64>,
    receives_video: bool,
}

impl ViewerRate {
    /// What its path leaves for video, and what it asks for at most: the
    /// lower; `None` while it has neither.
    fn video_budget_bps(&self, limits: &RateLimits) -> Option<u64> {
        let path = self.estimate_bps.map(|estimate| estimate.saturating_sub(limits.audio_budget_bps));
        match (path, self.ceiling_bps) {
            (Some(path), Some(ceiling)) => Some(path.min(ceiling)),
            (path, ceiling) => path.or(ceiling),
        }
    }
}

impl Default for ViewerRate {
    fn default() -> Self {
        // A viewer counts as receiving video until told otherwise: the peer
        // sends video to every viewer that accepted H.264.
        ViewerRate { estimate_bps: None, ceiling_bps: None, logged_bps: None, receives_video: true }
    }
}

/// Viewers' estimates in, one encoder target out (see the module docs for the rules).
#[derive(Debug)]
pub struct RateController {
    limits: RateLimits,
    viewers: BTreeMap<String, ViewerRate>,
    /// The target last reported (initially the ceiling at full frame rate,
    /// which is what the encoder starts with).
    target: VideoTarget,
    degraded: bool,
    /// Whether the encoder makes two temporal layers.
    layered: bool,
    /// The viewers sent layer 0 only, as last reported.
    base_layer_only: BTreeSet<String>,
    /// Whether `weakest_sets_the_rate` was flagged already.
    told_unlayered: bool,
}

impl RateController {
    pub fn new(limits: RateLimits) -> RateController {
        let target = limits.target_for(limits.ceiling_bps);
        RateController {
            limits,
            viewers: BTreeMap::new(),
            target,
            degraded: false,
            layered: false,
            base_layer_only: BTreeSet::new(),
            told_unlayered: false,
        }
    }

    /// The encoder makes two temporal layers: weak viewers can get layer 0 only.
    pub fn with_temporal_layers(mut self, layered: bool) -> RateController {
        self.layered = layered;
        self
    }

    /// The viewers currently sent layer 0 only.
    pub fn base_layer_only(&self) -> &BTreeSet<String> {
        &self.base_layer_only
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The target last reported.
    pub fn target(&self) -> VideoTarget {
        self.target
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// A viewer's new estimate (its whole transport: audio and video).
    pub fn on_estimate(&mut self, viewer: &str, estimate_bps: u64) -> RateUpdate {
        let entry = self.viewers.entry(viewer.to_owned()).or_default();
        entry.estimate_bps = Some(estimate_bps);
        let estimate_jump = match entry.logged_bps {
            Some(logged) if relative_change(logged, estimate_bps) <= ESTIMATE_LOG_STEP => None,
            from_bps => {
                entry.logged_bps = Some(estimate_bps);
                Some(EstimateJump { viewer: viewer.to_owned(), from_bps, to_bps: estimate_bps })
            }
        };
        RateUpdate { estimate_jump, ..self.evaluate() }
    }

    /// Whether a viewer receives video (one that refused H.264 does not):
    /// only those bound the target.
    pub fn set_receives_video(&mut self, viewer: &str, receives_video: bool) -> RateUpdate {
        self.viewers.entry(viewer.to_owned()).or_default().receives_video = receives_video;
        self.evaluate()
    }

    /// The video ceiling the viewer asks for (`None`: none). `None` back
    /// when it is what the viewer already had (nothing to log or apply).
    pub fn set_viewer_ceiling(&mut self, viewer: &str, ceiling_bps: Option<u64>) -> Option<RateUpdate> {
        let entry = self.viewers.entry(viewer.to_owned()).or_default();
        if entry.ceiling_bps == ceiling_bps {
            return None;
        }
        entry.ceiling_bps = ceiling_bps;
        Some(self.evaluate())
    }

    /// The viewer left: its path no longer bounds the target.
    pub fn remove_viewer(&mut self, viewer: &str) -> RateUpdate {
        if self.viewers.remove(viewer).is_none() {
            return RateUpdate::default();
        }
        self.evaluate()
    }

    /// The video bitrate the viewers' paths allow, before hysteresis, and
    /// who gets layer 0 only (rule 7 of the module docs).
    fn plan(&mut self) -> (Plan, Option<String>) {
        let limits = &self.limits;
        let budgets: Vec<(&String, u64)> = self
            .viewers
            .iter()
            .filter(|(_, v)| v.receives_video)
            .filter_map(|(name, v)| Some((name, v.video_budget_bps(limits)?)))
            .map(|(name, budget)| (name, budget.clamp(limits.floor_bps, limits.ceiling_bps)))
            .collect();
        let everyone = |wanted_bps| Plan { wanted_bps, base_layer_only: BTreeSet::new() };
        let (Some(&(weakest, lowest)), Some(highest)) =
            (budgets.iter().min_by_key(|(_, b)| *b), budgets.iter().map(|(_, b)| *b).max())
        else {
            return (everyone(limits.ceiling_bps), None);
        };
        // What the stronger viewers could have if the weak got layer 0 only.
        let split_bps = highest.min((lowest as f64 / BASE_LAYER_SHARE) as u64).min(limits.ceiling_bps);
        let splitting = !self.base_layer_only.is_empty();
        let gain_needed = if splitting { LAYER_MERGE_GAIN } else { LAYER_SPLIT_GAIN };
        let worth_it = split_bps as f64 >= gain_needed * lowest as f64;
        if !worth_it {
            return (everyone(lowest), None);
        }
        if !self.layered {
            let first = !std::mem::replace(&mut self.told_unlayered, true);
            return (everyone(lowest), first.then(|| weakest.clone()));
        }
        let base_layer_only = budgets.iter().filter(|(_, b)| *b < split_bps).map(|(name, _)| (*name).clone()).collect();
        (Plan { wanted_bps: split_bps, base_layer_only }, None)
    }

    fn evaluate(&mut self) -> RateUpdate {
        let (plan, weakest_sets_the_rate) = self.plan();
        let wanted = plan.wanted_bps;
        let current = self.target.bitrate_bps;
        let at_an_edge = wanted == self.limits.floor_bps || wanted == self.limits.ceiling_bps;
        let matters = wanted != current && (relative_change(current, wanted) >= TARGET_HYSTERESIS || at_an_edge);
        let target = matters.then(|| {
            self.target = self.limits.target_for(wanted);
            self.target
        });

        let ceiling = self.limits.ceiling_bps as f64;
        let full_fps = self.target.fps >= self.limits.fps;
        let bitrate = self.target.bitrate_bps as f64;
        let quality = if !self.degraded && (bitrate < DEGRADED_BELOW * ceiling || !full_fps) {
            self.degraded = true;
            Some(QualityChange::Degraded(self.target))
        } else if self.degraded && bitrate >= RECOVERED_AT * ceiling && full_fps {
            self.degraded = false;
            Some(QualityChange::Recovered(self.target))
        } else {
            None
        };
        let budget_of =
            |viewer: &str| self.viewers.get(viewer).and_then(|v| v.video_budget_bps(&self.limits)).unwrap_or(0);
        let target_bps = self.target.bitrate_bps;
        let change = |viewer: &String, base_layer_only| LayerChange {
            viewer: viewer.clone(),
            base_layer_only,
            budget_bps: budget_of(viewer),
            target_bps,
        };
        // Viewers that left need no message: their peer is gone.
        let layer_changes = plan
            .base_layer_only
            .difference(&self.base_layer_only)
            .map(|v| change(v, true))
            .chain(
                self.base_layer_only
                    .difference(&plan.base_layer_only)
                    .filter(|v| self.viewers.contains_key(*v))
                    .map(|v| change(v, false)),
            )
            .collect();
        self.base_layer_only = plan.base_layer_only;
        RateUpdate { target, quality, estimate_jump: None, layer_changes, weakest_sets_the_rate }
    }
}

/// |to - from| / from; a change from zero is infinite.
fn relative_change(from: u64, to: u64) -> f64 {
    if from == 0 {
        return if to == 0 { 0.0 } else { f64::INFINITY };
    }
    (to as f64 - from as f64).abs() / from as f64
}

/// Why a keyframe is wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A viewer started receiving video (or lost its place in the stream):
    /// it can decode nothing until the next IDR.
    NewViewer(String),
    /// The viewer's decoder lost a reference (RTCP PLI).
    PictureLoss,
    /// RTCP FIR.
    FullIntraRequest,
}

/// Coalesces keyframe requests to at most one IDR per [`KEYFRAME_WINDOW`].
///
/// A request inside the window after an IDR is not dropped but deferred to
/// the window's end ([`poll`](Self::poll)): the viewer that asked is still
/// frozen, and one IDR then serves every request made meanwhile (the encoder
/// encodes once for all viewers). The exception is a new viewer's first
/// request, honoured at once even inside the window: joining is when a viewer
/// watches the screen hardest, and half a second of black on every join is
/// worse than one extra IDR per join (joins are bounded by the room's
/// capacity; PLIs are not). That IDR restarts the window like any other.
#[derive(Debug)]
pub struct KeyframeThrottle {
    window: Duration,
    last_idr: Option<Instant>,
    /// A request came inside the window and waits for its end.
    pending: bool,
    /// Viewers whose first request was already honoured.
    served: HashSet<String>,
}

impl Default for KeyframeThrottle {
    fn default() -> Self {
        KeyframeThrottle::new(KEYFRAME_WINDOW)
    }
}

impl KeyframeThrottle {
    pub fn new(window: Duration) -> KeyframeThrottle {
        KeyframeThrottle { window, last_idr: None, pending: false, served: HashSet::new() }
    }

    /// Whether an IDR is to be forced now. `false` means it is deferred (see
    /// [`poll`](Self::poll)).
    pub fn request(&mut self, now: Instant, reason: KeyframeReason) -> bool {
        let first_for_new_viewer = match reason {
            KeyframeReason::NewViewer(viewer) => self.served.insert(viewer),
            KeyframeReason::PictureLoss | KeyframeReason::FullIntraRequest => false,
        };
        if first_for_new_viewer || self.window_over(now) {
            self.sent(now);
            true
        } else {
            self.pending = true;
            false
        }
    }

    /// Whether a deferred request is due now; call at [`next_due`](Self::next_due).
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.pending && self.window_over(now) {
            self.sent(now);
            true
        } else {
            false
        }
    }

    /// When [`poll`](Self::poll) will next return true, if a request waits.
    pub fn next_due(&self) -> Option<Instant> {
        // Pending implies an IDR inside the window, so `last_idr` is set.
        self.last_idr.filter(|_| self.pending).map(|at| at + self.window)
    }

    /// The viewer left; if it (or a namesake) joins again it is new again.
    pub fn forget_viewer(&mut self, viewer: &str) {
        self.served.remove(viewer);
    }

    fn window_over(&self, now: Instant) -> bool {
        self.last_idr.is_none_or(|at| now.saturating_duration_since(at) >= self.window)
    }

    fn sent(&mut self, now: Instant) {
        self.last_idr = Some(now);
        self.pending = false;
    }
}

#[cfg(test)]
mod tests;
