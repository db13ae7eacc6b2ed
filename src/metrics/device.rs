//! The device's metrics: the camera, the encoder, the viewers and their
//! paths, the signaling connection, talk-back and alerts.
//!
//! The pipeline's own counters are mirrored at each scrape (the media
//! threads count once, in their atomics); the rest is told by the daemon's
//! main loop as events pass. Viewers are labelled by a slot (`viewer="0"`,
//! the lowest free), never by peer id: a scrape has as many series as
//! viewers at once, not one per page load since boot.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use super::{HealthCheck, Metrics, MetricsError, Refresh, Slots};
use crate::media::pipeline::{EncodeTimes, PipelineStats};
use crate::peer::{ConnectionState, PeerId, SentTotals};
use crate::util::lock_ignoring_poison;

type StatsReader = Box<dyn Fn() -> PipelineStats + Send + Sync>;

pub struct DeviceMetrics {
    stats: OnceLock<StatsReader>,
    /// Serialises the mirroring: two scrapes at once must not both add the
    /// same difference.
    mirror: Mutex<()>,
    frames_captured: IntCounter,
    frames_dropped: IntCounter,
    camera_errors: IntCounter,
    frames_sent: IntCounter,
    keyframes: IntCounter,
    encoder_skips: IntCounter,
    encode_seconds: Histogram,
    audio_packets: IntCounter,
    talkback_received: IntCounter,
    talkback_lost: IntCounterVec,
    sound_alerts: IntCounter,
    viewers: IntGauge,
    peer_states: IntCounterVec,
    signaling_connected: IntGauge,
    signaling_reconnects: IntCounter,
    viewer_estimate: GaugeVec,
    viewer_round_trip: GaugeVec,
    viewer_sent: IntCounterVec,
    slots: Mutex<Slots<PeerId>>,
    /// Signaling connections made so far: all but the first are reconnects.
    connections: Mutex<u64>,
    video_target: Gauge,
    /// `[camera] bitrate`: the target until congestion control moves it.
    configured_bps: u64,
}

fn counter(name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    Ok(IntCounter::new(name, help)?)
}

impl DeviceMetrics {
    /// `configured_bps`: `[camera] bitrate`, the target until congestion
    /// control moves it.
    pub fn register(metrics: &Metrics, configured_bps: u64) -> Result<Arc<DeviceMetrics>, MetricsError> {
        let m = metrics;
        let device = Arc::new(DeviceMetrics {
            stats: OnceLock::new(),
            mirror: Mutex::new(()),
            frames_captured: m.register(counter(
                "roomcam_camera_frames_captured_total",
                "Frames the camera delivered (a placeholder picture while it is away is not one).",
            )?)?,
            frames_dropped: m.register(counter(
                "roomcam_camera_frames_dropped_total",
                "Captured frames never sent: nobody watching, the encoder busy with an older one, or a lowered frame rate.",
            )?)?,
            camera_errors: m.register(counter(
                "roomcam_media_source_errors_total",
                "Errors reading the camera or the microphone (each retried).",
            )?)?,
            frames_sent: m.register(counter(
                "roomcam_video_frames_sent_total",
                "Encoded pictures (or a camera's own H.264 access units) handed to the viewers.",
            )?)?,
            keyframes: m.register(counter("roomcam_video_keyframes_total", "IDR pictures sent.")?)?,
            encoder_skips: m.register(counter(
                "roomcam_video_encoder_skipped_frames_total",
                "Pictures the encoder's rate control chose not to code.",
            )?)?,
            encode_seconds: m.register(Histogram::with_opts(
                HistogramOpts::new("roomcam_video_encode_seconds", "Time the video encoder took per picture.")
                    .buckets(vec![0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.133, 0.25, 0.5]),
            )?)?,
            audio_packets: m.register(counter("roomcam_audio_packets_sent_total", "Opus packets handed to the viewers.")?)?,
            talkback_received: m.register(counter(
                "roomcam_talkback_packets_received_total",
                "Talk-back Opus packets received from viewers.",
            )?)?,
            talkback_lost: m.register(IntCounterVec::new(
                Opts::new("roomcam_talkback_packets_not_played_total", "Talk-back packets received but not played, by reason."),
                &["reason"],
            )?)?,
            sound_alerts: m.register(counter("roomcam_sound_alerts_total", "Sound alerts started.")?)?,
            viewers: m.register(IntGauge::new("roomcam_viewers", "Viewers with a peer connection now.")?)?,
            peer_states: m.register(IntCounterVec::new(
                Opts::new("roomcam_peer_state_changes_total", "Peer connection state changes, by the state entered."),
                &["state"],
            )?)?,
            signaling_connected: m.register(IntGauge::new(
                "roomcam_signaling_connected",
                "1 while connected to the signaling server.",
            )?)?,
            signaling_reconnects: m.register(counter(
                "roomcam_signaling_reconnects_total",
                "Connections to the signaling server after the first.",
            )?)?,
            viewer_estimate: m.register(GaugeVec::new(
                Opts::new(
                    "roomcam_viewer_estimated_bandwidth_bytes_per_second",
                    "What the path to the viewer carries, as its congestion controller estimates it (bytes: bit/s / 8, Prometheus' base unit).",
                ),
                &["viewer"],
            )?)?,
            viewer_round_trip: m.register(GaugeVec::new(
                Opts::new(
                    "roomcam_viewer_round_trip_time_seconds",
                    "The viewer's selected ICE pair's last STUN round trip.",
                ),
                &["viewer"],
            )?)?,
            viewer_sent: m.register(IntCounterVec::new(
                Opts::new("roomcam_viewer_sent_bytes_total", "RTP bytes sent to the viewer, by kind (video, repairs, audio)."),
                &["viewer", "kind"],
            )?)?,
            slots: Mutex::new(Slots::default()),
            connections: Mutex::new(0),
            video_target: m.register(Gauge::new(
                "roomcam_video_target_bytes_per_second",
                "The rate the video encoder is asked for now, in bytes (bit/s / 8): the weakest watching viewer's share, within the floor and ceiling.",
            )?)?,
            configured_bps,
        });
        m.add_refresh(Arc::clone(&device) as Arc<dyn Refresh>);
        Ok(device)
    }

    /// Where the pipeline's counters are read at each scrape.
    pub fn watch_pipeline(&self, stats: impl Fn() -> PipelineStats + Send + Sync + 'static) {
        let _ = self.stats.set(Box::new(stats));
    }

    /// For the pipeline's encode thread.
    pub fn encode_times(&self) -> EncodeTimes {
        let histogram = self.encode_seconds.clone();
        EncodeTimes(Arc::new(move |took: Duration| histogram.observe(took.as_secs_f64())))
    }

    pub fn set_viewers(&self, n: usize) {
        self.viewers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn signaling(&self, connected: bool) {
        self.signaling_connected.set(i64::from(connected));
        if connected {
            let mut connections = lock_ignoring_poison(&self.connections);
            *connections += 1;
            if *connections > 1 {
                self.signaling_reconnects.inc();
            }
        }
    }

    pub fn peer_state(&self, peer: &PeerId, state: ConnectionState) {
        let name = match state {
            ConnectionState::New => "new",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Failed => "failed",
            ConnectionState::Closed => "closed",
        };
        self.peer_states.with_label_values(&[name]).inc();
        lock_ignoring_poison(&self.slots).slot(peer);
    }

    pub fn estimate(&self, peer: &PeerId, bitrate_bps: u64) {
        let slot = lock_ignoring_poison(&self.slots).slot(peer).to_string();
        self.viewer_estimate.with_label_values(&[slot.as_str()]).set(bitrate_bps as f64 / 8.0);
    }

    pub fn measured(&self, peer: &PeerId, round_trip: Option<Duration>, sent: SentTotals) {
        let slot = lock_ignoring_poison(&self.slots).slot(peer).to_string();
        if let Some(rtt) = round_trip {
            self.viewer_round_trip.with_label_values(&[slot.as_str()]).set(rtt.as_secs_f64());
        }
        for (kind, total) in [("video", sent.video), ("repairs", sent.repairs), ("audio", sent.audio)] {
            let counter = self.viewer_sent.with_label_values(&[slot.as_str(), kind]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The viewer's series go with it; its slot is free for the next one.
    pub fn viewer_left(&self, peer: &PeerId) {
        let Some(slot) = lock_ignoring_poison(&self.slots).free(peer) else { return };
        let slot = slot.to_string();
        let _ = self.viewer_estimate.remove_label_values(&[slot.as_str()]);
        let _ = self.viewer_round_trip.remove_label_values(&[slot.as_str()]);
        for kind in ["video", "repairs", "audio"] {
            let _ = self.viewer_sent.remove_label_values(&[slot.as_str(), kind]);
        }
    }
}

impl Refresh for DeviceMetrics {
    fn refresh(&self) {
        let Some(read) = self.stats.get() else { return };
        let _one_at_a_time = lock_ignoring_poison(&self.mirror);
        let s = read();
        let mirror = |counter: &IntCounter, value: u64| counter.inc_by(value.saturating_sub(counter.get()));
        mirror(&self.frames_captured, s.frames_captured);
        mirror(&self.frames_dropped, s.frames_dropped);
        mirror(&self.camera_errors, s.source_errors);
        mirror(&self.frames_sent, s.frames_encoded);
        mirror(&self.keyframes, s.keyframes);
        mirror(&self.encoder_skips, s.encoder_skips);
        mirror(&self.audio_packets, s.audio_packets);
        mirror(&self.talkback_received, s.talkback_received);
        for (reason, value) in
            [("queue_full", s.talkback_dropped), ("talked_over", s.talkback_muted), ("error", s.talkback_errors)]
        {
            mirror(&self.talkback_lost.with_label_values(&[reason]), value);
        }
        mirror(&self.sound_alerts, s.sound_alerts);
        let target = if s.video_target_bps == 0 { self.configured_bps } else { s.video_target_bps };
        self.video_target.set(target as f64 / 8.0);
    }
}

/// `/healthz` for the device: the same truth as the systemd watchdog (the
/// capture thread comes back from the camera, the main loop turns), which
/// the daemon's supervisor keeps here.
#[derive(Debug, Default)]
pub struct DeviceHealth {
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The capture thread has not returned for this long.
    capture_stuck: Option<Duration>,
    last_turn: Option<std::time::Instant>,
}

impl DeviceHealth {
    /// The main loop has not turned for this long: it is stuck (it turns
    /// at least every tick, a quarter of a second).
    pub const MAIN_LOOP_STALL: Duration = Duration::from_secs(5);

    pub fn update(&self, capture_stuck: Option<Duration>, now: std::time::Instant) {
        let mut state = lock_ignoring_poison(&self.state);
        state.capture_stuck = capture_stuck;
        state.last_turn = Some(now);
    }

    pub fn check_at(&self, now: std::time::Instant) -> Result<(), String> {
        let state = lock_ignoring_poison(&self.state);
        if let Some(still) = state.capture_stuck {
            return Err(format!(
                "camera: the capture thread has not returned from the camera for {}s (a hung driver?)",
                still.as_secs()
            ));
        }
        match state.last_turn {
            Some(at) if now.saturating_duration_since(at) > Self::MAIN_LOOP_STALL => {
                Err(format!("the daemon's main loop has not run for {}s", now.saturating_duration_since(at).as_secs()))
            }
            Some(_) => Ok(()),
            None => Err("starting".to_owned()),
        }
    }
}

impl HealthCheck for DeviceHealth {
    fn check(&self) -> Result<(), String> {
        self.check_at(std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn pipeline_counters_are_mirrored_at_each_scrape() {
        let metrics = Metrics::new();
        let device = DeviceMetrics::register(&metrics, 1_500_000).unwrap();
        let stats = Arc::new(Mutex::new(PipelineStats::default()));
        let source = Arc::clone(&stats);
        device.watch_pipeline(move || *source.lock().unwrap());
        stats.lock().unwrap().frames_captured = 10;
        stats.lock().unwrap().talkback_muted = 3;
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "roomcam_camera_frames_captured_total"), Some(10.0));
        assert_eq!(value(&text, "roomcam_talkback_packets_not_played_total{reason=\"talked_over\"}"), Some(3.0));
        stats.lock().unwrap().frames_captured = 25;
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "roomcam_camera_frames_captured_total"), Some(25.0), "{text}");
    }

    #[test]
    fn viewers_are_slots_and_their_series_go_with_them() {
        let metrics = Metrics::new();
        let device = DeviceMetrics::register(&metrics, 1_500_000).unwrap();
        let (a, b, c) = (PeerId::from("peer-a"), PeerId::from("peer-b"), PeerId::from("peer-c"));
        device.estimate(&a, 800_000);
        device.estimate(&b, 300_000);
        let sent = SentTotals { video: 1000, repairs: 10, audio: 200 };
        device.measured(&b, Some(Duration::from_millis(40)), sent);
        device.measured(&b, None, SentTotals { video: 1500, ..sent });
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "roomcam_viewer_estimated_bandwidth_bytes_per_second{viewer=\"0\"}"), Some(100_000.0));
        assert_eq!(value(&text, "roomcam_viewer_round_trip_time_seconds{viewer=\"1\"}"), Some(0.04));
        assert_eq!(
            value(&text, "roomcam_viewer_sent_bytes_total{kind=\"video\",viewer=\"1\"}"),
            Some(1500.0),
            "{text}"
        );
        assert!(!text.contains(&String::from(a.as_str())), "no peer ids in the labels");
        device.viewer_left(&a);
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "roomcam_viewer_estimated_bandwidth_bytes_per_second{viewer=\"0\"}"), None);
        device.estimate(&c, 500_000);
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "roomcam_viewer_estimated_bandwidth_bytes_per_second{viewer=\"0\"}"), Some(62_500.0));
    }

    #[test]
    fn reconnects_are_the_connections_after_the_first() {
        let metrics = Metrics::new();
        let device = DeviceMetrics::register(&metrics, 1_500_000).unwrap();
        device.signaling(true);
        device.signaling(false);
        device.signaling(true);
        device.signaling(true);
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "roomcam_signaling_reconnects_total"), Some(2.0));
        assert_eq!(value(&text, "roomcam_signaling_connected"), Some(1.0));
    }

    #[test]
    fn health_is_the_watchdog_truth() {
        let health = DeviceHealth::default();
        let t0 = Instant::now();
        assert!(health.check_at(t0).is_err(), "before the first turn of the loop");
        health.update(None, t0);
        assert_eq!(health.check_at(t0 + Duration::from_secs(1)), Ok(()));
        let stalled = health.check_at(t0 + Duration::from_secs(6)).unwrap_err();
        assert!(stalled.contains("main loop"), "{stalled}");
        health.update(Some(Duration::from_secs(8)), t0 + Duration::from_secs(6));
        let stuck = health.check_at(t0 + Duration::from_secs(6)).unwrap_err();
        assert!(stuck.contains("capture thread"), "{stuck}");
    }
}
