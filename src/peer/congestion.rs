//! Per-viewer bandwidth estimation: webrtc-rs 0.21's GCC, wrapped so that its
//! estimate gets out of the interceptor chain (see docs/platform-findings.md).
//!
//! `rtc-interceptor`'s `CongestionControlInterceptor` owns the estimator it
//! drives and exposes nothing of it once the chain is built, so the estimator
//! handed to it is [`ReportingGcc`]: the real `Gcc`, delegated to, that
//! pushes each estimate into an [`EstimateSink`] after every batch of
//! feedback. The sink decides what is worth a `PeerEvent` ([`EstimateGate`]);
//! the keyframe forwarder feeds REMB into the same sink for viewers that
//! report REMB instead of transport-wide feedback.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// An estimate is reported when it moved by at least this fraction since the
/// last report: GCC moves by a few per cent on every feedback (10 per second),
/// which is noise to an encoder.
pub(crate) const ESTIMATE_MIN_CHANGE: f64 = 0.05;
/// Increases are reported at most this often: GCC climbs 5–8 % per second, so
/// a report a second follows the climb without one event per feedback.
/// Decreases are reported at once: they mean a queue is building somewhere.
pub(crate) const ESTIMATE_RAISE_INTERVAL: Duration = Duration::from_secs(1);
/// The pacer releases packets at this multiple of the estimate (libwebrtc's
/// default pace multiplier). webrtc-rs paces at exactly the estimate, but the
/// encoder aims at the estimate on average: pacing an IDR burst at the average
/// rate would queue every packet behind it (audio too: the queue is one
/// FIFO) for as long as the burst is worth in average-rate time.
pub(crate) const PACING_FACTOR: f64 = 2.5;
/// Viewers send transport-wide feedback every 50–100 ms. None for this
/// long means the path went black (Wi-Fi gone, a queue dropping everything,
/// feedback included): webrtc-rs' GCC then keeps its last estimate forever,
/// since it only moves on feedback; libwebrtc lowers its rate instead, and
/// so does [`FeedbackTimeout`].
pub(crate) const FEEDBACK_TIMEOUT: Duration = Duration::from_millis(1500);
/// While feedback stays away: the rate is cut by [`TIMEOUT_CUT`] this often
/// (libwebrtc: 20 % a second).
pub(crate) const TIMEOUT_CUT_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const TIMEOUT_CUT: f64 = 0.8;
/// Once feedback is back, the cap climbs this much a second until GCC's own
/// estimate is below it (GCC's own climb: 8 %/s).
pub(crate) const CAP_CLIMB_PER_SECOND: f64 = 0.08;

/// How a peer's congestion control is set up; `PeerSettings::congestion =
/// None` turns it off (no transport-wide CC negotiated, fixed rate).
///
/// All rates are for the whole transport (audio and video RTP), which is what
/// GCC estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CongestionSettings {
    /// Where the estimate starts before any feedback.
    pub start_bps: u64,
    /// The estimate never goes below this.
    pub min_bps: u64,
    /// ... nor above this.
    pub max_bps: u64,
    /// What is sent whatever the estimate says (the encoder's floor, or its
    /// fixed rate while it does not follow the estimate): the pacer never
    /// paces below it, or its queue would only ever grow.
    pub pacing_floor_bps: u64,
}

impl CongestionSettings {
    /// For roomcam's stream: video between `video_floor_bps` and
    /// `video_ceiling_bps`, plus `audio_budget_bps`.
    ///
    /// The estimate starts at the ceiling, not at Chrome's ~300 kbit/s:
    /// webrtc-rs' GCC has no probing, so from 300 kbit/s it would take its
    /// 8 %/s climb about 15 s to reach 1 Mbit/s on every good path (most
    /// viewers), while on a weak path its first back-off is computed from the
    /// rate the viewer actually receives (0.85 × received) and lands near the
    /// path's capacity within a second of the first feedback. And while the
    /// encoder still sends its fixed configured rate, a lower start would
    /// only report a "degraded" stream that is not.
    ///
    /// `encoder_follows` says whether the encoder follows the estimate (down
    /// to the floor) or still sends the ceiling: that is what the pacer must
    /// never pace below.
    pub fn for_stream(
        video_ceiling_bps: u64,
        video_floor_bps: u64,
        audio_budget_bps: u64,
        encoder_follows: bool,
    ) -> CongestionSettings {
        let max_bps = video_ceiling_bps + audio_budget_bps;
        // Below what the encoder sends at its floor an estimate only slows the climb back.
        let min_bps = video_floor_bps.min(video_ceiling_bps) + audio_budget_bps;
        CongestionSettings {
            start_bps: max_bps,
            min_bps,
            max_bps,
            pacing_floor_bps: if encoder_follows { min_bps } else { max_bps },
        }
    }

    /// What the config asks for; `None` with `webrtc.congestion-control = "off"`.
    ///
    /// `encoder_follows`: the stream's rate follows the estimate (roomcam's
    /// own encoder, or a camera that takes a new bitrate while streaming), so
    /// the pacer may go down to the floor; otherwise it is held at the
    /// configured rate, which is what is sent whatever the estimate says.
    pub fn from_config(config: &crate::config::Config, encoder_follows: bool) -> Option<CongestionSettings> {
        match config.webrtc.congestion_control {
            crate::config::CongestionControlChoice::Off => None,
            crate::config::CongestionControlChoice::Gcc => Some(CongestionSettings::for_stream(
                u64::from(config.camera.bitrate) * 1000,
                u64::from(config.camera.min_bitrate) * 1000,
                crate::rate::audio_budget_bps(u64::from(config.audio.bitrate) * 1000),
                encoder_follows,
            )),
        }
    }

    /// The rate the pacer starts at.
    pub(crate) fn initial_pacing_bps(&self) -> f64 {
        pacing_rate(self.start_bps.clamp(self.min_bps, self.max_bps) as f64, self.pacing_floor_bps as f64)
    }
}

fn pacing_rate(estimate_bps: f64, pacing_floor_bps: f64) -> f64 {
    estimate_bps.max(pacing_floor_bps) * PACING_FACTOR
}

/// Decides which estimates become events: the first one, then changes of
/// [`ESTIMATE_MIN_CHANGE`] or more (decreases at once, increases at most every
/// [`ESTIMATE_RAISE_INTERVAL`]). Holds the latest estimate of each kind of
/// feedback and reports the lower: a viewer that sends both REMB and
/// transport-wide feedback is bounded by both. Pure: time is passed in.
#[derive(Debug, Default)]
pub(crate) struct EstimateGate {
    twcc_bps: Option<f64>,
    remb_bps: Option<f64>,
    /// The last reported estimate and when.
    reported: Option<(u64, Instant)>,
}

impl EstimateGate {
    /// GCC's estimate after a batch of transport-wide feedback.
    pub(crate) fn twcc(&mut self, now: Instant, bps: f64) -> Option<u64> {
        self.twcc_bps = Some(bps);
        self.decide(now)
    }

    /// A REMB the viewer sent.
    pub(crate) fn remb(&mut self, now: Instant, bps: f64) -> Option<u64> {
        self.remb_bps = Some(bps);
        self.decide(now)
    }

    /// The latest estimate, whether reported or not: the lower of the two
    /// kinds of feedback.
    pub(crate) fn current(&self) -> Option<u64> {
        let estimate = match (self.twcc_bps, self.remb_bps) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        (estimate.is_finite() && estimate >= 0.0).then(|| estimate.round() as u64)
    }

    fn decide(&mut self, now: Instant) -> Option<u64> {
        let estimate = self.current()?;
        if let Some((last, at)) = self.reported {
            let change = (estimate as f64 - last as f64).abs() / (last.max(1) as f64);
            let raise_too_soon = estimate > last && now.saturating_duration_since(at) < ESTIMATE_RAISE_INTERVAL;
            if change < ESTIMATE_MIN_CHANGE || raise_too_soon {
                return None;
            }
        }
        self.reported = Some((estimate, now));
        Some(estimate)
    }
}

/// Where a peer's estimates go: gated, then handed to `emit`.
pub(crate) struct EstimateSink {
    gate: Mutex<EstimateGate>,
    emit: Box<dyn Fn(u64) + Send + Sync>,
}

impl EstimateSink {
    pub(crate) fn new(emit: impl Fn(u64) + Send + Sync + 'static) -> EstimateSink {
        EstimateSink { gate: Mutex::new(EstimateGate::default()), emit: Box::new(emit) }
    }

    pub(crate) fn twcc(&self, now: Instant, bps: f64) {
        let decided = self.lock().twcc(now, bps);
        if let Some(bps) = decided {
            (self.emit)(bps);
        }
    }

    pub(crate) fn remb(&self, now: Instant, bps: f64) {
        let decided = self.lock().remb(now, bps);
        if let Some(bps) = decided {
            (self.emit)(bps);
        }
    }

    /// The latest estimate (see [`EstimateGate::current`]).
    pub(crate) fn current_bps(&self) -> Option<u64> {
        self.lock().current()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EstimateGate> {
        self.gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The rate cap while transport-wide feedback is missing, and its climb
/// back when feedback returns. Pure: time is passed in.
#[derive(Debug, Default)]
pub(crate) struct FeedbackTimeout {
    last_feedback: Option<Instant>,
    last_cut: Option<Instant>,
    /// (cap, when it was last moved)
    cap: Option<(f64, Instant)>,
}

impl FeedbackTimeout {
    /// Feedback arrived; `estimate` is GCC's own after it.
    pub(crate) fn feedback(&mut self, now: Instant, estimate: f64) {
        self.last_feedback = Some(now);
        // The climb counts from the feedback's return, not from the last cut.
        let returning = self.last_cut.take().is_some();
        if let Some((cap, since)) = self.cap {
            let climbing_for = if returning { Duration::ZERO } else { now.saturating_duration_since(since) };
            let climbed = cap * (1.0 + CAP_CLIMB_PER_SECOND * climbing_for.as_secs_f64());
            self.cap = (climbed < estimate).then_some((climbed, now));
        }
    }

    /// Cuts the cap when feedback has been missing for [`FEEDBACK_TIMEOUT`]
    /// (then every [`TIMEOUT_CUT_INTERVAL`]); returns whether it went down.
    pub(crate) fn tick(&mut self, now: Instant, estimate: f64, min_bps: f64) -> bool {
        if self.next_deadline().is_none_or(|due| now < due) {
            return false;
        }
        let from = self.cap.map_or(estimate, |(cap, _)| cap.min(estimate));
        let cut = (from * TIMEOUT_CUT).max(min_bps);
        self.cap = Some((cut, now));
        self.last_cut = Some(now);
        // At the floor already: nothing changed, nothing to report.
        cut < from
    }

    /// The estimate under the cap.
    pub(crate) fn apply(&self, estimate: f64) -> f64 {
        self.cap.map_or(estimate, |(cap, _)| estimate.min(cap))
    }

    /// When [`tick`](Self::tick) next has something to do: never before any
    /// feedback (a viewer that never sends any is REMB's or nobody's business).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let last = self.last_feedback?;
        Some(match self.last_cut {
            None => last + FEEDBACK_TIMEOUT,
            Some(cut) => cut + TIMEOUT_CUT_INTERVAL,
        })
    }

    pub(crate) fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.last_feedback.map(|last| now.saturating_duration_since(last))
    }
}

/// `Gcc`, delegated to, publishing its estimate into an [`EstimateSink`],
/// with [`FeedbackTimeout`] over it.
///
/// Its `target_bitrate` is what the chain's pacer is set to (the only use
/// `CongestionControlInterceptor` makes of it): the estimate, never below the
/// pacing floor, times [`PACING_FACTOR`]. The estimate itself goes to the sink.
pub(crate) struct ReportingGcc {
    inner: Gcc,
    min_bps: f64,
    pacing_floor_bps: f64,
    timeout: FeedbackTimeout,
    sink: Arc<EstimateSink>,
}

impl ReportingGcc {
    pub(crate) fn new(settings: &CongestionSettings, sink: Arc<EstimateSink>) -> ReportingGcc {
        let inner = Gcc::new(settings.start_bps as f64, settings.min_bps as f64, settings.max_bps as f64);
        ReportingGcc {
            inner,
            min_bps: settings.min_bps as f64,
            pacing_floor_bps: settings.pacing_floor_bps as f64,
            timeout: FeedbackTimeout::default(),
            sink,
        }
    }

    fn estimate(&self) -> f64 {
        self.timeout.apply(self.inner.target_bitrate())
    }
}

impl BandwidthEstimator for ReportingGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        // Only feedback that named packets says anything about the path; the
        // first such batch is also the proof that feedback flows at all.
        if !reports.is_empty() {
            if let Some(silent) = self.timeout.silent_for(now).filter(|s| *s >= FEEDBACK_TIMEOUT) {
                log::info!("congestion: transport-wide feedback back after {silent:?}");
            }
            self.timeout.feedback(now, self.inner.target_bitrate());
            self.sink.twcc(now, self.estimate());
        }
    }

    fn target_bitrate(&self) -> f64 {
        pacing_rate(self.estimate(), self.pacing_floor_bps)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        if self.timeout.tick(now, self.inner.target_bitrate(), self.min_bps) {
            let estimate = self.estimate();
            log::info!(
                "congestion: no transport-wide feedback for {:?}: lowering the estimate to {} kbit/s",
                self.timeout.silent_for(now).unwrap_or_default(),
                (estimate / 1000.0).round()
            );
            self.sink.twcc(now, estimate);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.inner.poll_timeout(), self.timeout.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn stream_settings_add_the_audio_budget_and_start_at_the_ceiling() {
        let fixed = CongestionSettings::for_stream(1_000_000, 150_000, 48_000, false);
        assert_eq!(
            fixed,
            CongestionSettings {
                start_bps: 1_048_000,
                min_bps: 198_000,
                max_bps: 1_048_000,
                pacing_floor_bps: 1_048_000
            }
        );
        assert_eq!(fixed.initial_pacing_bps(), 1_048_000.0 * PACING_FACTOR);
        let following = CongestionSettings::for_stream(1_000_000, 150_000, 48_000, true);
        assert_eq!(following.pacing_floor_bps, 198_000);
        // A floor above the ceiling is the ceiling.
        assert_eq!(CongestionSettings::for_stream(100_000, 150_000, 48_000, true).min_bps, 148_000);
    }

    #[test]
    fn the_pacer_never_paces_below_what_is_sent_anyway() {
        assert_eq!(pacing_rate(100_000.0, 300_000.0), 300_000.0 * PACING_FACTOR);
        assert_eq!(pacing_rate(900_000.0, 300_000.0), 900_000.0 * PACING_FACTOR);
    }

    #[test]
    fn the_first_estimate_then_only_changes_that_matter() {
        let t0 = Instant::now();
        let mut gate = EstimateGate::default();
        assert_eq!(gate.twcc(t0, 1_000_000.0), Some(1_000_000));
        // 4 % either way: noise.
        assert_eq!(gate.twcc(t0 + ms(100), 960_000.0), None);
        assert_eq!(gate.twcc(t0 + ms(200), 1_040_000.0), None);
        // A 5 % drop: at once.
        assert_eq!(gate.twcc(t0 + ms(300), 950_000.0), Some(950_000));
        // A rise, 200 ms later: held until a second has passed since the last report.
        assert_eq!(gate.twcc(t0 + ms(500), 1_100_000.0), None);
        assert_eq!(gate.twcc(t0 + ms(1200), 1_100_000.0), None);
        assert_eq!(gate.twcc(t0 + ms(1300), 1_120_000.0), Some(1_120_000));
        // A drop right after a report is still at once.
        assert_eq!(gate.twcc(t0 + ms(1310), 700_000.0), Some(700_000));
    }

    #[test]
    fn a_gcc_ramp_fed_ten_times_a_second_reports_about_once_a_second() {
        let t0 = Instant::now();
        let mut gate = EstimateGate::default();
        let mut estimate = 300_000.0;
        let mut reports = 0;
        for step in 0..100u64 {
            estimate *= 1.08f64.powf(0.1);
            reports += usize::from(gate.twcc(t0 + ms(step * 100), estimate).is_some());
        }
        // 10 s of an 8 %/s climb: the first, then one per ≥ 5 % step (every ~0.7 s, held to 1 s).
        assert!((8..=11).contains(&reports), "{reports} reports");
    }

    #[test]
    fn remb_alone_is_an_estimate_and_with_twcc_the_lower_one_wins() {
        let t0 = Instant::now();
        let mut gate = EstimateGate::default();
        assert_eq!(gate.remb(t0, 800_000.0), Some(800_000));
        let mut gate = EstimateGate::default();
        assert_eq!(gate.twcc(t0, 1_000_000.0), Some(1_000_000));
        assert_eq!(gate.remb(t0 + ms(10), 600_000.0), Some(600_000));
        // TWCC says more, REMB still bounds it.
        assert_eq!(gate.twcc(t0 + ms(2000), 2_000_000.0), None);
        assert_eq!(gate.remb(t0 + ms(2100), 1_500_000.0), Some(1_500_000));
    }

    #[test]
    fn silent_feedback_cuts_the_rate_each_second_and_it_climbs_back_after() {
        let t0 = Instant::now();
        let mut timeout = FeedbackTimeout::default();
        assert_eq!(timeout.next_deadline(), None, "no deadline before any feedback");
        assert!(!timeout.tick(t0 + ms(10_000), 1_500_000.0, 200_000.0));
        timeout.feedback(t0, 1_500_000.0);
        assert_eq!(timeout.next_deadline(), Some(t0 + FEEDBACK_TIMEOUT));
        assert!(!timeout.tick(t0 + ms(1000), 1_500_000.0, 200_000.0), "1 s of silence is nothing yet");
        assert_eq!(timeout.apply(1_500_000.0), 1_500_000.0);
        // 1.5 s: cut by 20 %, then every second, never below the floor.
        assert!(timeout.tick(t0 + ms(1500), 1_500_000.0, 200_000.0));
        assert_eq!(timeout.apply(1_500_000.0), 1_200_000.0);
        assert!(!timeout.tick(t0 + ms(2000), 1_500_000.0, 200_000.0));
        assert!(timeout.tick(t0 + ms(2500), 1_500_000.0, 200_000.0));
        assert_eq!(timeout.apply(1_500_000.0).round(), 960_000.0);
        for s in 3..30 {
            timeout.tick(t0 + ms(s * 1000 + 500), 1_500_000.0, 200_000.0);
        }
        assert_eq!(timeout.apply(1_500_000.0), 200_000.0);
        assert!(!timeout.tick(t0 + ms(30_500), 1_500_000.0, 200_000.0), "at the floor: no change to report");
        // Feedback is back, GCC's own estimate still stale at 1.5 Mbit/s:
        // the cap climbs 8 %/s from the floor until GCC is below it.
        let back = t0 + ms(31_000);
        timeout.feedback(back, 1_500_000.0);
        assert_eq!(timeout.apply(1_500_000.0), 200_000.0);
        timeout.feedback(back + ms(1000), 1_500_000.0);
        assert_eq!(timeout.apply(1_500_000.0).round(), 216_000.0);
        assert!(!timeout.tick(back + ms(2000), 1_500_000.0, 200_000.0), "feedback flows: no cut");
        // GCC itself went lower meanwhile (it saw the queue): the cap goes.
        timeout.feedback(back + ms(2000), 150_000.0);
        assert_eq!(timeout.apply(150_000.0), 150_000.0);
        assert_eq!(timeout.apply(1_000_000.0), 1_000_000.0, "no cap any more");
    }

    #[test]
    fn the_sink_emits_what_the_gate_lets_through() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_sink = Arc::clone(&seen);
        let sink = EstimateSink::new(move |bps| seen_by_sink.lock().unwrap().push(bps));
        let t0 = Instant::now();
        sink.twcc(t0, 500_000.0);
        sink.twcc(t0 + ms(100), 510_000.0);
        sink.remb(t0 + ms(200), 400_000.0);
        assert_eq!(*seen.lock().unwrap(), [500_000, 400_000]);
    }
}
