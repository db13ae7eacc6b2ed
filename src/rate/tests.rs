//! Scripted feedback through the rate policy and the keyframe throttle.

use super::*;

const KBPS: u64 = 1000;
/// 32 kbit/s Opus, as configured by default.
const AUDIO: u64 = 32 * KBPS + AUDIO_PACKET_OVERHEAD_BPS;

/// The defaults: 640x480 at 25 fps, 1000 kbit/s ceiling, 150 kbit/s floor.
fn vga() -> RateController {
    RateController::new(RateLimits::new(1000 * KBPS, 150 * KBPS, AUDIO, (640, 480), 25).unwrap())
}

/// An estimate that leaves exactly `video` for video.
fn leaving(video: u64) -> u64 {
    video + AUDIO
}

#[test]
fn audio_budget_is_opus_plus_packet_overhead() {
    assert_eq!(audio_budget_bps(32_000), 32_000 + 16_000);
}

#[test]
fn starts_at_the_ceiling_and_a_viewer_at_the_ceiling_changes_nothing() {
    let mut rate = vga();
    assert_eq!(rate.target(), VideoTarget { bitrate_bps: 1000 * KBPS, fps: 25 });
    let update = rate.on_estimate("v1", leaving(1000 * KBPS));
    assert_eq!(update.target, None);
    assert_eq!(update.quality, None);
    // The first estimate of a viewer is always worth a line.
    assert_eq!(
        update.estimate_jump,
        Some(EstimateJump { viewer: "v1".into(), from_bps: None, to_bps: leaving(1000 * KBPS) })
    );
}

#[test]
fn audio_comes_off_the_estimate_before_video_gets_it() {
    let mut rate = vga();
    let update = rate.on_estimate("v1", 600 * KBPS);
    assert_eq!(update.target, Some(VideoTarget { bitrate_bps: 600 * KBPS - AUDIO, fps: 25 }));
}

#[test]
fn the_slowest_viewer_that_receives_video_sets_the_target() {
    let mut rate = vga();
    rate.on_estimate("fast", leaving(900 * KBPS));
    let update = rate.on_estimate("slow", leaving(400 * KBPS));
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(400 * KBPS));

    // A viewer that receives no video (refused H.264) does not hold the others back.
    let update = rate.set_receives_video("slow", false);
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(900 * KBPS));
    let update = rate.set_receives_video("slow", true);
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(400 * KBPS));

    // The slow viewer leaves: the fast one's path is the bound again, at once.
    let update = rate.remove_viewer("slow");
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(900 * KBPS));
    // Everyone leaves: back to the ceiling.
    let update = rate.remove_viewer("fast");
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(1000 * KBPS));
    assert_eq!(rate.remove_viewer("nobody"), RateUpdate::default());
}

#[test]
fn small_changes_are_held_back_until_they_add_up() {
    let mut rate = vga();
    rate.on_estimate("v1", leaving(800 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 800 * KBPS);
    // 5 % steps down: nothing until the drift reaches 10 % of the last target.
    assert_eq!(rate.on_estimate("v1", leaving(760 * KBPS)).target, None);
    let update = rate.on_estimate("v1", leaving(720 * KBPS));
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(720 * KBPS));
    // Up as well.
    assert_eq!(rate.on_estimate("v1", leaving(780 * KBPS)).target, None);
    assert_eq!(rate.on_estimate("v1", leaving(792 * KBPS)).target.map(|t| t.bitrate_bps), Some(792 * KBPS));
}

#[test]
fn the_floor_and_the_ceiling_are_reached_exactly() {
    let mut rate = vga();
    rate.on_estimate("v1", leaving(160 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 160 * KBPS);
    // 160 → 155 is only 3 %, but it is below the floor: the floor, reported.
    let update = rate.on_estimate("v1", leaving(155 * KBPS) - 10 * KBPS);
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(150 * KBPS));
    // Far below the floor (or less than the audio budget): still the floor, nothing new.
    assert_eq!(rate.on_estimate("v1", 20 * KBPS).target, None);
    assert_eq!(rate.target().bitrate_bps, 150 * KBPS);

    rate.on_estimate("v1", leaving(950 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 950 * KBPS);
    // 950 → 1000 is 5 %, but it is the ceiling: reported. Beyond it: clamped.
    let update = rate.on_estimate("v1", leaving(5000 * KBPS));
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(1000 * KBPS));
}

#[test]
fn frame_rate_holds_down_to_300_kbps_at_vga_then_drops_in_proportion() {
    let limits = RateLimits::new(1000 * KBPS, 150 * KBPS, AUDIO, (640, 480), 25).unwrap();
    assert_eq!(limits.full_rate_min_bps(), 300 * KBPS);
    assert_eq!(limits.target_for(300 * KBPS), VideoTarget { bitrate_bps: 300 * KBPS, fps: 25 });
    assert_eq!(limits.target_for(240 * KBPS), VideoTarget { bitrate_bps: 240 * KBPS, fps: 20 });
    assert_eq!(limits.target_for(150 * KBPS), VideoTarget { bitrate_bps: 150 * KBPS, fps: 12 });
    // Clamped to the floor first.
    assert_eq!(limits.target_for(10 * KBPS), VideoTarget { bitrate_bps: 150 * KBPS, fps: 12 });

    // 720p has three times the pixels: full frame rate needs 900 kbit/s.
    let hd = RateLimits::new(2000 * KBPS, 150 * KBPS, AUDIO, (1280, 720), 25).unwrap();
    assert_eq!(hd.full_rate_min_bps(), 900 * KBPS);
    assert_eq!(hd.target_for(450 * KBPS).fps, 12);
    // Never below MIN_FPS.
    assert_eq!(hd.target_for(150 * KBPS).fps, MIN_FPS);

    // A ceiling below the full-rate bitrate was chosen: full frame rate at the ceiling.
    let low = RateLimits::new(200 * KBPS, 150 * KBPS, AUDIO, (640, 480), 25).unwrap();
    assert_eq!(low.target_for(200 * KBPS).fps, 25);
    assert_eq!(low.target_for(150 * KBPS).fps, 18);
    // A configured rate below MIN_FPS is kept as it is.
    let slow = RateLimits::new(1000 * KBPS, 150 * KBPS, AUDIO, (640, 480), 2).unwrap();
    assert_eq!(slow.target_for(150 * KBPS).fps, 2);
}

#[test]
fn a_floor_above_the_ceiling_is_the_ceiling_and_bad_limits_are_errors() {
    let limits = RateLimits::new(100 * KBPS, 150 * KBPS, AUDIO, (640, 480), 25).unwrap();
    assert_eq!(limits.floor_bps(), 100 * KBPS);
    assert_eq!(RateLimits::new(0, 0, AUDIO, (640, 480), 25), Err(RateError::ZeroCeiling));
    assert_eq!(RateLimits::new(1, 0, AUDIO, (0, 480), 25), Err(RateError::NoPixels { width: 0, height: 480 }));
    assert_eq!(RateLimits::new(1, 0, AUDIO, (640, 480), 0), Err(RateError::ZeroFrameRate));
}

#[test]
fn degrades_once_and_recovers_once_with_a_band_between() {
    let mut rate = vga();
    // 75 % of the ceiling: lower target, but not degraded.
    let update = rate.on_estimate("v1", leaving(750 * KBPS));
    assert!(update.target.is_some());
    assert_eq!(update.quality, None);
    // Below 70 %: degraded, one line.
    let update = rate.on_estimate("v1", leaving(650 * KBPS));
    assert_eq!(update.quality, Some(QualityChange::Degraded(VideoTarget { bitrate_bps: 650 * KBPS, fps: 25 })));
    assert!(rate.is_degraded());
    // Further down (into frame-rate territory): still the same episode, no new line.
    let update = rate.on_estimate("v1", leaving(200 * KBPS));
    assert_eq!(update.target, Some(VideoTarget { bitrate_bps: 200 * KBPS, fps: 16 }));
    assert_eq!(update.quality, None);
    // Back to 75 %: inside the band, still degraded.
    let update = rate.on_estimate("v1", leaving(750 * KBPS));
    assert!(update.target.is_some());
    assert_eq!(update.quality, None);
    // 80 % at full frame rate: recovered, one line.
    let update = rate.on_estimate("v1", leaving(850 * KBPS));
    assert_eq!(update.quality, Some(QualityChange::Recovered(VideoTarget { bitrate_bps: 850 * KBPS, fps: 25 })));
    assert!(!rate.is_degraded());
}

#[test]
fn a_dropped_frame_rate_is_degraded_even_with_a_low_ceiling() {
    // Ceiling 300 at 720p: 70 % of the ceiling is 210, but full frame rate
    // needs 300 (the ceiling): anything lower drops frames, and says so.
    let mut rate = RateController::new(RateLimits::new(300 * KBPS, 150 * KBPS, AUDIO, (1280, 720), 25).unwrap());
    let update = rate.on_estimate("v1", leaving(250 * KBPS));
    assert_eq!(update.target.map(|t| t.fps), Some(20));
    assert!(matches!(update.quality, Some(QualityChange::Degraded(_))));
}

#[test]
fn an_estimate_is_logged_when_it_moved_more_than_a_quarter_since_the_last_line() {
    let mut rate = vga();
    assert!(rate.on_estimate("v1", 1000 * KBPS).estimate_jump.is_some());
    // −20 %: no line.
    assert_eq!(rate.on_estimate("v1", 800 * KBPS).estimate_jump, None);
    // −26 % from the last *logged* value (1000), though only −7.5 % from 800.
    let jump = rate.on_estimate("v1", 740 * KBPS).estimate_jump;
    assert_eq!(jump, Some(EstimateJump { viewer: "v1".into(), from_bps: Some(1000 * KBPS), to_bps: 740 * KBPS }));
    // Up by more than a quarter of 740.
    assert!(rate.on_estimate("v1", 930 * KBPS).estimate_jump.is_some());
    // Each viewer on its own account.
    assert!(rate.on_estimate("v2", 930 * KBPS).estimate_jump.is_some());
    assert_eq!(rate.on_estimate("v1", 1000 * KBPS).estimate_jump, None);
}

#[test]
fn a_collapsing_then_recovering_path_gives_a_short_script_of_actions() {
    // GCC-like feedback: a few 15 % backoffs, then an 8 %/s climb, one estimate
    // per 100 ms as TWCC feedback would bring. The caller sees few changes.
    let mut rate = vga();
    let mut estimate = leaving(1000 * KBPS) as f64;
    let mut targets = Vec::new();
    let mut lines = Vec::new();
    for step in 0..400 {
        if step < 40 && step % 5 == 0 {
            estimate *= 0.85;
        } else if step >= 40 {
            estimate *= 1.08f64.powf(0.1);
        }
        let update = rate.on_estimate("v1", estimate as u64);
        targets.extend(update.target);
        lines.extend(update.quality);
    }
    assert_eq!(rate.target().bitrate_bps, 1000 * KBPS, "climbed back to the ceiling");
    assert!(targets.len() <= 30, "{} encoder changes: {targets:?}", targets.len());
    assert!(matches!(lines.as_slice(), [QualityChange::Degraded(_), QualityChange::Recovered(_)]), "{lines:?}");
}

// --- KeyframeThrottle -------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_first_request_is_honoured_and_the_next_one_waits_for_the_window() {
    let t0 = Instant::now();
    let mut throttle = KeyframeThrottle::default();
    assert_eq!(throttle.next_due(), None);
    assert!(throttle.request(t0, KeyframeReason::PictureLoss));
    assert!(!throttle.request(t0 + ms(100), KeyframeReason::FullIntraRequest));
    assert_eq!(throttle.next_due(), Some(t0 + ms(500)));
    assert!(!throttle.poll(t0 + ms(499)));
    assert!(throttle.poll(t0 + ms(500)));
    // Served: nothing more due.
    assert!(!throttle.poll(t0 + ms(2000)));
    assert_eq!(throttle.next_due(), None);
    // Long after: at once.
    assert!(throttle.request(t0 + ms(2000), KeyframeReason::PictureLoss));
}

#[test]
fn a_new_viewer_gets_its_idr_at_once_even_inside_the_window() {
    let t0 = Instant::now();
    let mut throttle = KeyframeThrottle::default();
    assert!(throttle.request(t0, KeyframeReason::PictureLoss));
    // 50 ms after an IDR, a viewer joins: it gets its own, now.
    assert!(throttle.request(t0 + ms(50), KeyframeReason::NewViewer("v2".into())));
    // That IDR restarts the window for everyone else.
    assert!(!throttle.request(t0 + ms(100), KeyframeReason::PictureLoss));
    assert_eq!(throttle.next_due(), Some(t0 + ms(550)));
    // The same viewer asking again as "new" (its video lagged) is throttled like a PLI.
    assert!(!throttle.request(t0 + ms(120), KeyframeReason::NewViewer("v2".into())));
    // A second new viewer inside the window: at once too, and it covers what was pending.
    assert!(throttle.request(t0 + ms(130), KeyframeReason::NewViewer("v3".into())));
    assert_eq!(throttle.next_due(), None);
    // A viewer that left and joins again is new again.
    throttle.forget_viewer("v2");
    assert!(throttle.request(t0 + ms(140), KeyframeReason::NewViewer("v2".into())));
}

#[test]
fn a_pli_storm_yields_at_most_one_idr_per_window() {
    let t0 = Instant::now();
    let mut throttle = KeyframeThrottle::default();
    let mut idrs = Vec::new();
    // A PLI every 20 ms for 5 s; the caller polls every 10 ms.
    for tick in 0..=500u64 {
        let now = t0 + ms(tick * 10);
        if tick % 2 == 0 && throttle.request(now, KeyframeReason::PictureLoss) {
            idrs.push(now);
        }
        if throttle.poll(now) {
            idrs.push(now);
        }
    }
    for pair in idrs.windows(2) {
        assert!(pair[1] - pair[0] >= KEYFRAME_WINDOW, "IDRs {:?} apart", pair[1] - pair[0]);
    }
    // 5 s of storm: one at the start and one per window after it.
    assert!((10..=11).contains(&idrs.len()), "{} IDRs", idrs.len());
}

fn layered() -> RateController {
    vga().with_temporal_layers(true)
}

fn bps(update: &RateUpdate) -> Option<u64> {
    update.target.map(|t| t.bitrate_bps)
}

#[test]
fn a_weak_viewer_gets_layer_0_and_the_strong_one_keeps_its_rate() {
    let mut rate = layered();
    rate.on_estimate("strong", leaving(1000 * KBPS));
    let update = rate.on_estimate("weak", leaving(300 * KBPS));
    // 300 kbit/s carries layer 0 of a 300 / 0.62 = 483 kbit/s stream.
    let target = (300.0 * KBPS as f64 / BASE_LAYER_SHARE) as u64;
    assert_eq!(bps(&update), Some(target));
    assert_eq!(
        update.layer_changes,
        [LayerChange { viewer: "weak".into(), base_layer_only: true, budget_bps: 300 * KBPS, target_bps: target }]
    );
    assert_eq!(rate.base_layer_only().iter().collect::<Vec<_>>(), ["weak"]);
    assert_eq!(update.weakest_sets_the_rate, None);

    // Closer to the strong one than the split is worth: everyone gets all.
    let update = rate.on_estimate("weak", leaving(900 * KBPS));
    assert_eq!(bps(&update), Some(900 * KBPS));
    assert_eq!(update.layer_changes.len(), 1);
    assert!(!update.layer_changes[0].base_layer_only);
    assert!(rate.base_layer_only().is_empty());
}

#[test]
fn the_split_is_capped_by_the_strongest_and_the_ceiling() {
    let mut rate = layered();
    rate.on_estimate("a", leaving(500 * KBPS));
    // 200 / 0.62 = 322 < 500: layer 0 bounds the target.
    let update = rate.on_estimate("b", leaving(200 * KBPS));
    assert_eq!(bps(&update), Some((200.0 * KBPS as f64 / BASE_LAYER_SHARE) as u64));
    // A third viewer that carries the whole stream gets it.
    let update = rate.on_estimate("c", leaving(400 * KBPS));
    assert!(update.layer_changes.is_empty(), "{update:?}");
    assert_eq!(rate.base_layer_only().iter().collect::<Vec<_>>(), ["b"]);
    // 280 / 0.62 = 451 is over the strongest's 400 once "a" left: "c" bounds it.
    rate.remove_viewer("a");
    let update = rate.on_estimate("b", leaving(280 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 400 * KBPS, "{update:?}");
    assert_eq!(rate.base_layer_only().iter().collect::<Vec<_>>(), ["b"]);

    // A strong viewer over the ceiling: the split target stops at it.
    let mut rate = layered();
    rate.on_estimate("strong", leaving(5000 * KBPS));
    rate.on_estimate("weak", leaving(600 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 1000 * KBPS);
    assert_eq!(rate.base_layer_only().len(), 1);
}

#[test]
fn the_split_and_the_merge_have_a_band_between() {
    let mut rate = layered();
    rate.on_estimate("strong", leaving(1000 * KBPS));
    // Gain 1000/850 = 1.18: not worth splitting.
    rate.on_estimate("weak", leaving(850 * KBPS));
    assert!(rate.base_layer_only().is_empty());
    // 1000/700 = 1.43: split.
    rate.on_estimate("weak", leaving(700 * KBPS));
    assert_eq!(rate.base_layer_only().len(), 1);
    // 1000/780 = 1.28, above the 1.2 merge line: still split.
    let update = rate.on_estimate("weak", leaving(780 * KBPS));
    assert!(update.layer_changes.is_empty());
    assert_eq!(rate.base_layer_only().len(), 1);
    // 1000/880 = 1.14: merged.
    rate.on_estimate("weak", leaving(880 * KBPS));
    assert!(rate.base_layer_only().is_empty());
}

#[test]
fn without_layers_the_weakest_sets_the_rate_and_that_is_said_once() {
    let mut rate = vga();
    rate.on_estimate("strong", leaving(1000 * KBPS));
    let update = rate.on_estimate("weak", leaving(300 * KBPS));
    assert_eq!(bps(&update), Some(300 * KBPS));
    assert_eq!(update.weakest_sets_the_rate.as_deref(), Some("weak"));
    assert!(update.layer_changes.is_empty());
    let update = rate.on_estimate("weak", leaving(250 * KBPS));
    assert_eq!(update.weakest_sets_the_rate, None);
}

#[test]
fn a_layer_0_viewer_that_leaves_needs_no_message() {
    let mut rate = layered();
    rate.on_estimate("strong", leaving(1000 * KBPS));
    rate.on_estimate("weak", leaving(300 * KBPS));
    let update = rate.remove_viewer("weak");
    assert!(update.layer_changes.is_empty());
    assert_eq!(bps(&update), Some(1000 * KBPS));
    assert!(rate.base_layer_only().is_empty());
}

#[test]
fn a_viewers_own_ceiling_bounds_the_target_like_a_slow_path() {
    let mut rate = vga();
    rate.on_estimate("saver", leaving(900 * KBPS));
    rate.on_estimate("other", leaving(900 * KBPS));
    // Its data saver: 300 kbit/s of video whatever its path carries.
    let update = rate.set_viewer_ceiling("saver", Some(300 * KBPS)).expect("a change");
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(300 * KBPS));
    // The same ceiling again is no news.
    assert!(rate.set_viewer_ceiling("saver", Some(300 * KBPS)).is_none());
    // A path below the ceiling still wins.
    let update = rate.on_estimate("saver", leaving(200 * KBPS));
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(200 * KBPS));
    rate.on_estimate("saver", leaving(900 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 300 * KBPS);
    // Data saver off: the paths are the bound again.
    let update = rate.set_viewer_ceiling("saver", None).expect("a change");
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(900 * KBPS));
}

#[test]
fn a_ceiling_counts_before_any_estimate_and_within_floor_and_ceiling() {
    let mut rate = vga();
    // No feedback yet (or congestion feedback not negotiated): the ceiling alone.
    let update = rate.set_viewer_ceiling("saver", Some(300 * KBPS)).expect("a change");
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(300 * KBPS));
    // Never under the floor, never over the configured ceiling.
    rate.set_viewer_ceiling("saver", Some(50 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 150 * KBPS);
    rate.set_viewer_ceiling("saver", Some(5000 * KBPS));
    assert_eq!(rate.target().bitrate_bps, 1000 * KBPS);
    // A viewer that receives no video does not bound it with its ceiling either.
    rate.set_viewer_ceiling("saver", Some(300 * KBPS));
    let update = rate.set_receives_video("saver", false);
    assert_eq!(update.target.map(|t| t.bitrate_bps), Some(1000 * KBPS));
}

#[test]
fn a_data_saver_beside_a_strong_viewer_gets_layer_0_like_a_weak_path() {
    let mut rate = layered();
    rate.on_estimate("strong", leaving(1000 * KBPS));
    let update = rate.set_viewer_ceiling("saver", Some(300 * KBPS)).expect("a change");
    // Layer 0 of the stream fits its 300 kbit/s; the strong viewer gets more.
    let split = (300.0 * KBPS as f64 / BASE_LAYER_SHARE) as u64;
    assert_eq!(bps(&update), Some(split));
    assert!(rate.base_layer_only().contains("saver"), "{:?}", rate.base_layer_only());
    assert!(!rate.base_layer_only().contains("strong"));
}
