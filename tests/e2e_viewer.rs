//! The device end to end, as separate processes: `roomcam run` (test pattern,
//! 440 Hz tone, null speaker) joins a room on `roomcam serve` or on a classic
//! socket.io server; a webrtc-rs viewer joins, and what it decodes is checked
//! by content: the stamped frame numbers advance, the picture is the test
//! pattern, the tone is 440 Hz, and its own 660 Hz talk-back is heard by the
//! device's speaker sink. And a PLI storm from one viewer does not turn the
//! others' stream into IDRs.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::time::{Duration, Instant};

use common::{ClassicDevice, Member, Proc, classic_device, free_port, roomcam_run, roomcam_serve};
use room_viewer::RoomViewer;
use roomcam::config::ProtocolChoice;
use roomcam::media::fixtures::{looks_like_test_pattern, read_stamp};
use roomcam::media::{SpeakerReport, dominant_frequency};
use viewer::{OfferedCodecs, Viewer, ViewerOptions};

fn assert_stream_is_the_test_pattern(stats: &viewer::ViewerStats) {
    let stamps: Vec<u32> = stats.recent_frames.iter().filter_map(read_stamp).map(|s| s.frame_number).collect();
    assert!(
        stamps.len() * 10 >= stats.recent_frames.len() * 9,
        "stamps readable in only {} of {} frames",
        stamps.len(),
        stats.recent_frames.len()
    );
    assert!(stamps.windows(2).all(|w| w[1] > w[0]), "frame numbers do not advance: {stamps:?}");
    let last = stats.last_frame.as_ref().expect("a decoded frame");
    assert!(looks_like_test_pattern(last), "the picture is not the test pattern");
    let codec = stats.video_codec.as_ref().map(|(mime, _)| mime.to_lowercase());
    assert_eq!(codec.as_deref(), Some("video/h264"));
}

async fn assert_hears_tone(viewer: &Viewer, hz: f32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pcm = viewer.received_pcm(1.0);
        let found = (pcm.len() >= 24_000).then(|| dominant_frequency(&pcm, 48_000)).flatten();
        if let Some(f) = found
            && (f - hz).abs() <= 10.0
        {
            return;
        }
        assert!(Instant::now() < deadline, "viewer does not hear {hz} Hz (got {found:?} over {} samples)", pcm.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wait_speaker_tone(device: &mut Proc, hz: f32) -> SpeakerReport {
    let line = device.wait_for_line("speaker tone", Duration::from_secs(15), |l| {
        l.find("speaker: ")
            .and_then(|i| SpeakerReport::parse(&l[i..]))
            .and_then(|r| r.tone_hz)
            .is_some_and(|f| (f - hz).abs() <= 10.0)
    });
    let start = line.find("speaker: ").unwrap();
    SpeakerReport::parse(&line[start..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_offers_viewer_sees_pattern_hears_tone_and_talks_back() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "e2e", &[]);
    device.wait_in_room();

    let options = ViewerOptions { talkback_hz: Some(660.0), ..ViewerOptions::default() };
    let first = RoomViewer::join(&url, "e2e", options.clone()).await;
    let stats = first.wait_frames(40, Duration::from_secs(20)).await;
    assert_stream_is_the_test_pattern(&stats);
    assert_hears_tone(&first.viewer, 440.0).await;
    let report = wait_speaker_tone(&mut device, 660.0);
    assert!(report.rms_dbfs > -40.0, "talk-back too quiet: {report:?}");

    // Leave and come back: a NEW peer connection streams again.
    first.leave().await;
    device.wait_for_line("peer closed", Duration::from_secs(10), |l| l.contains("closed, ready for the next viewer"));
    let second = RoomViewer::join(&url, "e2e", ViewerOptions::default()).await;
    let stats = second.wait_frames(20, Duration::from_secs(20)).await;
    assert_stream_is_the_test_pattern(&stats);
    second.leave().await;
    assert!(device.is_running(), "the device exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_waiting_first_offers_many_codecs_and_device_answers_h264() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let options = ViewerOptions { codecs: OfferedCodecs::ChromeLike, ..ViewerOptions::default() };
    let waiting = RoomViewer::join(&url, "reboot", options).await;
    // The device "reboots" into a room where the viewer already waits.
    let mut device = roomcam_run(&url, "reboot", &[]);
    let stats = waiting.wait_frames(30, Duration::from_secs(25)).await;
    assert_stream_is_the_test_pattern(&stats);
    assert_hears_tone(&waiting.viewer, 440.0).await;
    device.wait_for_line("answer role", Duration::from_secs(5), |l| l.contains("viewer offered, answering"));
    waiting.leave().await;
}

/// The same daemon, unchanged, against classic socket.io 2.x and 4.x servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_through_classic_socketio_2_and_4_servers() {
    for version in [2u8, 4] {
        let ClassicDevice { server: _server, mut device, url } = classic_device(version, "classic");
        let viewer = RoomViewer::join(&url, "classic", ViewerOptions::default()).await;
        let stats = viewer.wait_frames(30, Duration::from_secs(20)).await;
        assert_stream_is_the_test_pattern(&stats);
        // Classic servers send no `bye` when a tab just closes: the device
        // must notice the dead connection by itself and serve the next viewer.
        viewer.vanish().await;
        device.wait_for_line("dead peer closed", Duration::from_secs(40), |l| {
            l.contains("closed, ready for the next viewer")
        });
        let next = RoomViewer::join(&url, "classic", ViewerOptions::default()).await;
        let stats = next.wait_frames(20, Duration::from_secs(20)).await;
        assert_stream_is_the_test_pattern(&stats);
        next.vanish().await;
        assert!(device.is_running(), "device exited on socket.io {version}");
    }
}

/// Garbage in the room (bad frames, bad SDP, candidates for nothing) is
/// logged and dropped; the daemon keeps serving the next real viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signaling_input_does_not_hurt_the_device() {
    let ClassicDevice { server: _server, mut device, url } = classic_device(4, "junk");

    let mut troll = Member::connect(&url, ProtocolChoice::Auto);
    troll.expect_connected().await;
    troll.join("junk").await;
    use serde_json::json;
    for data in [
        json!({"type": "offer", "sdp": "this is not SDP"}),
        json!({"type": "answer", "sdp": "v=0\r\n"}),
        json!({"type": "candidate", "label": 7, "id": "nope", "candidate": "candidate:garbage"}),
        json!({"no": "type"}),
        json!(12),
        json!("{broken json"),
        json!({"type": "offer", "sdp": 5}),
    ] {
        troll.emit("message", vec!["junk".into(), data]);
    }
    troll.emit("message", vec![]);
    troll.emit("message", vec![json!(["junk"]), json!(null)]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    troll.emit("leave", vec!["junk".into()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    troll.close();
    assert!(device.is_running(), "device died on garbage:\n{}", device.lines().join("\n"));
    assert!(device.count_lines(|l| l.contains("WARN")) >= 3, "garbage was not logged:\n{}", device.lines().join("\n"));

    let viewer = RoomViewer::join(&url, "junk", ViewerOptions::default()).await;
    let stats = viewer.wait_frames(20, Duration::from_secs(20)).await;
    assert_stream_is_the_test_pattern(&stats);
    viewer.vanish().await;
}

/// SIGTERM: the device leaves the room (the other member gets `bye`) and exits 0 promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_room_and_exits_cleanly() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "bye", &[]);
    device.wait_in_room();
    let viewer = RoomViewer::join(&url, "bye", ViewerOptions::default()).await;
    viewer.wait_frames(10, Duration::from_secs(20)).await;
    let started = Instant::now();
    let code = device.terminate(Duration::from_secs(8));
    assert_eq!(code, Some(0), "exit code; output:\n{}", device.lines().join("\n"));
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert!(device.lines().iter().any(|l| l.contains("shutting down")));
    viewer.vanish().await;
}

/// A camera that encodes H.264 itself (`--camera test-h264` simulates one
/// the way UVC H.264 cameras behave: SPS/PPS only with its first IDR, no
/// way to ask for another): its own stream reaches each new viewer,
/// decodable from the first frame, and the log says why PLI goes unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_cameras_own_stream_is_passed_through() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "passthrough", &["--camera", "test-h264"]);
    device.wait_in_room();
    for round in 0..2 {
        let viewer = RoomViewer::join(&url, "passthrough", ViewerOptions::default()).await;
        let stats = viewer.wait_frames(30, Duration::from_secs(20)).await;
        assert_stream_is_the_test_pattern(&stats);
        if round == 0 {
            device.wait_for_line("no-PLI warning", Duration::from_secs(5), |l| {
                l.contains("cannot be asked for a keyframe")
            });
        }
        viewer.leave().await;
        device
            .wait_for_line("peer closed", Duration::from_secs(10), |l| l.contains("closed, ready for the next viewer"));
    }
    assert!(device.is_running(), "the device exited");
}

/// Two viewers talk back at once (roomcam's own server admits several):
/// the speaker plays the newest talker alone, and the earlier one again
/// once the newest has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_talkers_the_newest_has_the_speaker() {
    let (_server, url) = server_for_two_viewers("two-talkers");
    let mut device = roomcam_run(&url, "talkers", &[]);
    device.wait_in_room();

    let alice =
        RoomViewer::join(&url, "talkers", ViewerOptions { talkback_hz: Some(660.0), ..ViewerOptions::default() }).await;
    alice.wait_frames(10, Duration::from_secs(20)).await;
    wait_speaker_tone(&mut device, 660.0);
    let bob =
        RoomViewer::join(&url, "talkers", ViewerOptions { talkback_hz: Some(880.0), ..ViewerOptions::default() }).await;
    bob.wait_frames(10, Duration::from_secs(20)).await;
    device.wait_for_line("talk-over", Duration::from_secs(10), |l| l.contains("talks over"));
    // A whole second of Bob alone: Alice's 660 Hz is not mixed in.
    let report = wait_speaker_tone(&mut device, 880.0);
    assert!(report.rms_dbfs > -40.0, "{report:?}");
    bob.leave().await;
    wait_speaker_tone(&mut device, 660.0);
    alice.leave().await;
}

/// roomcam's own server with room for the device and two viewers.
fn server_for_two_viewers(name: &str) -> (Proc, String) {
    let config = std::env::temp_dir().join(format!("roomcam-{name}-{}.toml", std::process::id()));
    std::fs::write(&config, "[server]\ncapacity = 3\n").unwrap();
    let port = free_port();
    let server = roomcam_serve(port, Some(&config));
    // The server read its config at start-up.
    let _ = std::fs::remove_file(&config);
    (server, format!("http://127.0.0.1:{port}"))
}

/// One viewer sends PLI every 20 ms (a broken decoder, or a lossy link with
/// an eager browser); the device coalesces them (at most two IDRs a second),
/// so the other viewer keeps its frame rate and most of what it gets are
/// P frames, not a stream of IDRs that no link could carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_storm_from_one_viewer_does_not_flood_the_other_with_idrs() {
    let (_server, url) = server_for_two_viewers("pli-storm");
    let mut device = roomcam_run(&url, "storm", &["--fps", "25"]);
    device.wait_in_room();

    let calm = RoomViewer::join(&url, "storm", ViewerOptions::default()).await;
    calm.wait_frames(20, Duration::from_secs(20)).await;
    let stormy = RoomViewer::join(
        &url,
        "storm",
        ViewerOptions { pli_every: Some(Duration::from_millis(20)), ..ViewerOptions::default() },
    )
    .await;
    stormy.wait_frames(10, Duration::from_secs(20)).await;
    // The storm is on once the stormy viewer decodes; watch the calm one.
    let before = calm.viewer.stats();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = calm.viewer.stats();
    let seconds = started.elapsed().as_secs_f64();
    let frames = after.frames_decoded - before.frames_decoded;
    let idrs = after.idr_access_units - before.idr_access_units;
    let fps = frames as f64 / seconds;
    let storm = stormy.viewer.stats().plis_sent;
    eprintln!(
        "PLI storm ({storm} PLIs sent): the calm viewer decoded {frames} frames in {seconds:.1} s ({fps:.1} fps), \
         {idrs} of them IDRs ({:.0} %)",
        100.0 * idrs as f64 / frames.max(1) as f64
    );
    assert!(storm >= 100, "the storm never blew: {storm} PLIs");
    assert!(fps >= 15.0, "the calm viewer's frame rate fell to {fps:.1} fps");
    assert!(idrs * 2 < frames, "{idrs} of {frames} frames were IDRs");
    assert_stream_is_the_test_pattern(&after);
    stormy.leave().await;
    calm.leave().await;
    assert!(device.is_running(), "the device exited");
}

/// Every video packet asks the viewer for a low playout delay, at the id the
/// viewer negotiated for it, whoever offered (a track bound before
/// negotiation once sent it under the id of `sdes:mid` when answering); with
/// `playout-delay = "off"` no packet carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_carries_the_playout_delay_hint_whoever_offers() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let off = std::env::temp_dir().join(format!("roomcam-playout-off-{}.toml", std::process::id()));
    std::fs::write(&off, "[webrtc]\nplayout-delay = \"off\"\n").unwrap();
    for (room, device_offers, config) in
        [("hint-offer", true, None), ("hint-answer", false, None), ("hint-off", true, Some(&off))]
    {
        let config_args = config.map(|c| vec!["--config", c.to_str().unwrap()]).unwrap_or_default();
        let options = ViewerOptions { codecs: OfferedCodecs::ChromeLike, ..ViewerOptions::default() };
        let (mut device, viewer) = if device_offers {
            let mut device = roomcam_run(&url, room, &config_args);
            device.wait_in_room();
            (device, RoomViewer::join(&url, room, options).await)
        } else {
            let viewer = RoomViewer::join(&url, room, options).await;
            (roomcam_run(&url, room, &config_args), viewer)
        };
        let stats = viewer.wait_frames(30, Duration::from_secs(25)).await;
        assert_stream_is_the_test_pattern(&stats);
        if config.is_some() {
            assert_eq!(stats.playout_delay_packets, 0, "{room}: hint sent though off");
            device.wait_for_line("hint off", Duration::from_secs(5), |l| l.contains("without the playout-delay hint"));
        } else {
            // Every packet, in 10 ms units: min 0, max 100 ms.
            assert_eq!(stats.playout_delay_packets, stats.video_packets, "{room}: not every packet has the hint");
            assert_eq!(stats.playout_delay, Some((0, 10)), "{room}");
        }
        viewer.leave().await;
        assert!(device.is_running(), "{room}: the device exited");
    }
    let _ = std::fs::remove_file(off);
}
