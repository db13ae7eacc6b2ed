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
    common::page::check_viewer_succeeds(None, url, args, String::new)
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

/// A link with the room's token (issue 10 point 5): the page takes the
/// token out of the address bar, keeps no Referer, and the token-less
/// address it leaves (a reload, a home-screen icon) still gets in.
#[test]
fn chromium_keeps_the_token_out_of_the_address_bar_and_rejoins_on_reload() {
    let dir = std::env::temp_dir().join(format!("roomcam-browser-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("serve.toml");
    // Room for the reloaded page while the first one's place is still held.
    std::fs::write(&config, "[[server.rooms]]\nname = \"hidden\"\ntoken = \"t0ken-in-link\"\ncapacity = 3\n").unwrap();
    let port = free_port();
    let server = roomcam_serve(port, Some(&config));
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "hidden", &["--token", "t0ken-in-link"]);
    device.wait_in_room();
    let report =
        check_viewer(&format!("{url}/?room=hidden&token=t0ken-in-link"), &["--expect-video", "--token-hidden"]);
    let href = report["tokenHidden"]["href"].as_str().expect("the address after the reload");
    assert_eq!(href, format!("{url}/?room=hidden"), "{report}");
    // Two pages joined: the first load and the reload, with the kept token.
    let joins = server.count_lines(|l| l.contains("room hidden:") && l.contains("viewer-") && l.contains(" joined ("));
    assert_eq!(joins, 2, "{}", server.lines().join("\n"));
    assert_eq!(server.count_lines(|l| l.contains("t0ken-in-link")), 0, "the token in the server log");
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

/// A phone: a 390x844 touch screen whose browser refuses autoplay with sound
/// until a tap. Everything fits without scrolling (checked on a screenshot:
/// the video's area shows a picture), one "Tap for sound" brings the sound,
/// the fullscreen button puts the video fullscreen, and holding "Hold to
/// talk" with a finger (touch events) is heard by the device, with nothing
/// sent before or after, no text selected and no context menu.
#[test]
fn chromium_on_a_phone_fits_taps_for_sound_goes_fullscreen_and_talks_by_touch() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "phone", &[]);
    device.wait_in_room();
    let shot = artifact("phone-390x844.png");
    let report = check_viewer(
        &format!("{url}/?room=phone"),
        &[
            "--phone",
            "--refuse-autoplay-sound",
            "--expect-bars",
            "--expect-tap-for-sound",
            "--expect-audio",
            "--expect-phone-layout",
            "--phone-screenshot",
            &shot,
            "--fullscreen",
            "--touch-talk",
            "2",
        ],
    );
    eprintln!("page report: {report}");
    assert!(std::path::Path::new(&shot).exists(), "no screenshot at {shot}");
    assert_eq!(report["layout"]["viewport"]["width"], 390, "{report}");
    assert!(
        device_heard_something(&device).is_some(),
        "the touch press never reached the device's speaker:\n{}",
        device.lines().join("\n")
    );
}

/// "Data saver" on the page: remembered across a reload, its SDP asks for at
/// most 300 kbit/s of video (b=AS/b=TIAS), and the device, streaming a busy
/// picture that fills 1500 kbit/s otherwise, sets its encoder to that
/// viewer's ceiling: what the page receives stays under about 330 kbit/s.
#[test]
fn a_data_saver_viewer_receives_at_most_about_300_kbits() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "saver", &["--camera", "test-busy", "--bitrate", "1500"]);
    device.wait_in_room();
    let report = check_viewer(
        &format!("{url}/?room=saver"),
        &["--expect-video", "--data-saver", "--measure-fps", "10", "--timeout", "40"],
    );
    eprintln!("page report: {report}");
    let kbps = report["measured"]["kbps"].as_f64().unwrap_or(f64::MAX);
    assert!(kbps <= 330.0, "a data-saver viewer received {kbps} kbit/s of video: {report}");
    assert!(report["measured"]["fps"].as_f64().is_some_and(|fps| fps >= 10.0), "{report}");
    let lines = device.lines();
    assert!(
        lines.iter().any(|l| l.contains("video ceiling 300 kbit/s")),
        "the device never logged the viewer's ceiling:\n{}",
        lines.join("\n")
    );
}
