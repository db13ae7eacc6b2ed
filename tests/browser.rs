//! Headless Debian Chromium opens roomcam's viewer page and watches the real
//! daemon: H.264 frames decoded, audio received, push-to-talk reaches the
//! device's speaker, leave/rejoin streams again; on roomcam's own server and
//! on classic socket.io 2.x/4.x servers that serve the same page.
//!
//! Needs /usr/bin/chromium and `npm ci` in tests/classic (scripts/test does
//! both); without them these tests fail, they never skip.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::page::{self, check_viewer_command, wait_for_file};
use common::{Proc, classic_device, free_port, roomcam_run, roomcam_serve};
use roomcam::media::SpeakerReport;
use serde_json::Value;

/// Runs the page scenario to its end; returns the JSON report.
fn check_viewer(url: &str, args: &[&str]) -> Value {
    let output = check_viewer_command(None, url, args).output().expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from check-viewer:\n{stdout}\n{stderr}"));
    assert!(output.status.success() && report["ok"] == true, "viewer page failed: {report}\n{stderr}");
    report
}

fn artifact(name: &str) -> String {
    page::artifact(name).to_string_lossy().into_owned()
}

fn device_heard_something(device: &Proc) -> Option<SpeakerReport> {
    device.lines().iter().filter_map(|l| SpeakerReport::parse(l)).find(|r| r.tone_hz.is_some() && r.rms_dbfs > -50.0)
}

#[test]
fn chromium_views_the_device_on_roomcams_server_talks_back_and_rejoins() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "browser", &[]);
    device.wait_in_room();

    let shot = artifact("roomcam-serve.png");
    let report = check_viewer(
        &format!("{url}/?room=browser"),
        &[
            "--expect-role",
            "answerer",
            "--expect-bars",
            "--expect-audio",
            "--talk",
            "3",
            "--rejoin",
            "--screenshot",
            &shot,
        ],
    );
    eprintln!("page report: {report}");
    let talk = device_heard_something(&device);
    assert!(talk.is_some(), "push-to-talk never reached the device's speaker:\n{}", device.lines().join("\n"));
    assert!(device.is_running());
}

#[test]
fn chromium_waiting_first_offers_and_the_device_answers() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let ready = PathBuf::from(artifact("waiting-first.ready"));
    let _ = std::fs::remove_file(&ready);
    let ready_arg = ready.to_string_lossy().into_owned();
    let mut page = Proc::spawn(
        "chromium",
        &mut check_viewer_command(
            None,
            &format!("{url}/?room=first"),
            &["--ready-file", &ready_arg, "--expect-role", "offerer", "--expect-video", "--expect-audio"],
        ),
    );
    wait_for_file(&ready, &mut page, Duration::from_secs(30));
    let _device = roomcam_run(&url, "first", &[]);
    let line = page.wait_for_line("page report", Duration::from_secs(60), |l| l.starts_with('{'));
    let report: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["ok"], true, "{report}\n{}", page.lines().join("\n"));
}

/// The same page, served by a classic server, and the same unchanged daemon.
#[test]
fn chromium_views_the_device_through_classic_socketio_2_and_4() {
    for version in [2u8, 4] {
        let mut classic = classic_device(version, "classic");
        let url = &classic.url;
        let report = check_viewer(&format!("{url}/?room=classic"), &["--expect-video", "--expect-audio", "--rejoin"]);
        eprintln!("socket.io {version}: {report}");
        assert!(classic.device.is_running());
    }
}

#[test]
fn chromium_without_the_room_token_is_refused() {
    let dir = std::env::temp_dir().join(format!("roomcam-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("serve.toml");
    std::fs::write(&config, "[[server.rooms]]\nname = \"locked\"\ntoken = \"s3cret\"\n").unwrap();
    let port = free_port();
    let _server = roomcam_serve(port, Some(&config));
    let url = format!("http://127.0.0.1:{port}");
    check_viewer(&format!("{url}/?room=locked&token=wrong"), &["--expect-state", "unauthorized"]);
    let mut device = roomcam_run(&url, "locked", &["--token", "s3cret"]);
    device.wait_in_room();
    check_viewer(&format!("{url}/?room=locked&token=s3cret"), &["--expect-video"]);
}

/// A camera that encodes H.264 itself: Chromium shows its own stream, bars
/// and all, for a first viewer and for the next one (each starts at one of
/// the camera's periodic IDRs, since such a camera cannot be asked for one).
#[test]
fn chromium_shows_an_h264_cameras_own_stream() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "passthrough", &["--camera", "test-h264"]);
    device.wait_in_room();
    let report = check_viewer(&format!("{url}/?room=passthrough"), &["--expect-bars", "--expect-audio", "--rejoin"]);
    eprintln!("page report: {report}");
    assert!(report["video"]["fps"].as_f64().is_some_and(|fps| fps >= 5.0), "{report}");
    assert!(device.is_running());
}
