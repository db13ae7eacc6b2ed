//! Sound alerts end to end: `roomcam run` hears a recording (`--microphone
//! wav:PATH`) of a fan, then a cry over the fan, then the fan again, with
//! nobody watching, and logs one alert for the cry and its end; a page in
//! Chromium gets that alert over the `roomcam` data channel (banner, the
//! room's level, a notification while in the background) and can listen
//! only (no video sent to it, the sound goes on).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::page::{artifact, check_viewer_succeeds};
use common::{Proc, free_port, roomcam_bin, roomcam_hearing, roomcam_serve, write_fan_then_cry};

#[test]
fn a_cry_over_a_fan_is_one_alert_with_nobody_watching() {
    let dir = std::env::temp_dir().join(format!("roomcam-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("nursery.wav");
    // Long enough that the loop does not come round within the test.
    write_fan_then_cry(&recording, 60.0, (8.0, 12.0));
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let microphone = format!("wav:{}", recording.display());
    let mut device = roomcam_hearing(&url, "nursery", &microphone, None);
    device.wait_in_room();
    let alert = device.wait_for_line("the cry's alert", Duration::from_secs(30), |l| l.contains("sound alert:"));
    assert!(alert.contains("room nursery") && alert.contains("dB over the room's floor"), "{alert}");
    let lines = device.lines();
    let at = lines.iter().position(|l| l.contains("sound alert:")).unwrap();
    device.wait_for_line("the alert's end", Duration::from_secs(15), |l| l.contains("sound alert ended"));
    // The fan goes on: nothing more.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(device.count_lines(|l| l.contains("sound alert:")), 1, "{:#?}", &device.lines()[at..]);
    assert!(device.is_running());

    // Alerts off: the same recording says nothing.
    let config = dir.join("quiet.toml");
    std::fs::write(&config, "[alerts]\nenabled = false\nwebhook = \"http://127.0.0.1:9/\"\n").unwrap();
    let mut quiet = device_with_config(&url, &microphone, &config);
    quiet.wait_in_room();
    // A webhook configured with alerts off is said to be unused, not silently ignored.
    assert_eq!(quiet.count_lines(|l| l.contains("enabled = false, so nothing goes to MQTT or the webhook")), 1);
    std::thread::sleep(Duration::from_secs(14));
    assert_eq!(quiet.count_lines(|l| l.contains("sound alert")), 0, "{:#?}", quiet.lines());
    std::fs::remove_dir_all(&dir).ok();
}

fn device_with_config(url: &str, microphone: &str, config: &Path) -> Proc {
    roomcam_hearing(url, "quiet-nursery", microphone, Some(config))
}

#[test]
fn bad_alert_settings_are_a_config_error() {
    let dir = std::env::temp_dir().join(format!("roomcam-alerts-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[signaling]\nserver = \"http://127.0.0.1:1\"\nroom = \"r\"\n\n[alerts]\nthreshold = 1000\n",
    )
    .unwrap();
    let out = Command::new(roomcam_bin()).args(["check-config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("alerts.threshold"), "{stderr}");

    // A broker URL is checked at its line and column, and its password is not repeated.
    std::fs::write(&config, "[alerts]\n\nmqtt = \"http://ha:secret@broker:1883\"\n").unwrap();
    let out = Command::new(roomcam_bin()).args(["check-config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("bad.toml:3:8") && stderr.contains("alerts.mqtt"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_cry_reaches_a_page_in_the_background_as_a_banner_and_a_notification() {
    let dir = std::env::temp_dir().join(format!("roomcam-alerts-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("nursery.wav");
    // The cry comes once the page is surely watching (it waits for it).
    write_fan_then_cry(&recording, 90.0, (25.0, 29.0));
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_hearing(&url, "nursery", &format!("wav:{}", recording.display()), None);
    device.wait_in_room();
    let screenshot = artifact("alert-banner.png");
    let report = check_viewer_succeeds(
        None,
        &format!("{url}/?room=nursery"),
        &[
            "--expect-video",
            "--expect-level",
            "--notifications",
            "--expect-alert",
            "--alert-screenshot",
            screenshot.to_str().unwrap(),
            "--phone",
            "--timeout",
            "60",
        ],
        || device.lines().join("\n"),
    );
    let alert = &report["alert"];
    assert_eq!(alert["permission"], "granted", "{report}");
    let notifications = alert["notifications"].as_array().unwrap();
    assert!(notifications.iter().any(|n| n["title"] == "roomcam — nursery"), "{report}");
    // The fan's level before the cry: a quiet room, well under the cry.
    let level = report["level"]["level"].as_f64().unwrap();
    assert!((-90.0..-25.0).contains(&level), "the fan's level: {report}");
    let start = alert["alerts"].as_array().unwrap().iter().find(|a| a["state"] == "start").unwrap().clone();
    // The meter shows the loudest quarter second, the floor is the fan's average.
    assert!(start["level_db"].as_f64().unwrap() > level + 10.0, "the cry over the fan: {report}");
    assert!(start["over_floor_db"].as_f64().unwrap() >= 15.0, "the default threshold: {report}");
    assert!(screenshot.exists());
    assert_eq!(device.count_lines(|l| l.contains("sound alert:")), 1, "{:#?}", device.lines());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn listen_only_stops_the_video_to_that_page_and_keeps_the_sound() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_hearing(&url, "listen", "test", None);
    device.wait_in_room();
    let report = check_viewer_succeeds(
        None,
        &format!("{url}/?room=listen"),
        &["--expect-video", "--expect-audio", "--listen-only", "4", "--timeout", "30"],
        || device.lines().join("\n"),
    );
    assert!(report["listenOnly"]["keyFrames"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["listenOnly"]["placeholder"], "Listening only. Tap \"Video\" for the picture.", "{report}");
    let said = |what: &str| device.count_lines(|l| l.contains(what));
    assert_eq!(said("listen-only: video stopped, audio goes on"), 1, "{:#?}", device.lines());
    assert_eq!(said("video again (listen-only ended)"), 1, "{:#?}", device.lines());
    // Its only viewer listening: nothing encoded the picture meanwhile, and
    // the picture came back (keyFrames above) once it asked again.
    assert_eq!(said("the video encoder rests"), 1, "{:#?}", device.lines());
    assert_eq!(said("takes the picture again; 1 viewer(s) take the picture"), 1, "{:#?}", device.lines());
}
