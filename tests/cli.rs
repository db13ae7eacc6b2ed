//! The command line as an operator meets it: config checking with line and
//! column and exit code 78, and clear errors instead of panics.

mod common;

use std::process::Command;

use common::{repo_root, roomcam_bin};

fn roomcam(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(roomcam_bin()).args(args).output().expect("run roomcam");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn example_config_checks_ok() {
    let example = repo_root().join("roomcam.example.toml");
    let (code, stdout, _) = roomcam(&["check-config", example.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(": ok"));
}

#[test]
fn bad_config_gives_line_column_and_exit_78() {
    let path = common::temp_file("cli", "bad.toml", "[signaling]\nroom = \"a\"\n\n[camera]\n  fsp = 30\n");
    let (code, _, stderr) = roomcam(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains(&format!("{}:5:3:", path.display())), "{stderr}");
    assert!(stderr.contains("unknown field `fsp`"), "{stderr}");

    // The daemon refuses the same file the same way (systemd won't restart on 78).
    let (code, _, stderr) = roomcam(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(78), "{stderr}");
    let (code, _, _) = roomcam(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(78));
}

#[test]
fn missing_or_invalid_values_exit_78() {
    let (code, _, stderr) = roomcam(&["check-config", "/nonexistent/roomcam.toml"]);
    assert_eq!(code, Some(78));
    assert!(stderr.contains("/nonexistent/roomcam.toml"), "{stderr}");
    let path = common::temp_file("cli", "invalid.toml", "[signaling]\nserver = \"gopher://x\"\n");
    let (code, _, stderr) = roomcam(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, Some(78));
    assert!(stderr.contains("signaling.server"), "{stderr}");
    let (code, _, stderr) = roomcam(&["run", "--fps", "0"]);
    assert_eq!(code, Some(78), "{stderr}");
}

#[test]
fn missing_sound_devices_are_a_clear_error_not_a_panic() {
    for (flag, value, word) in [("--microphone", "hw:7,0", "capture"), ("--speaker", "hw:7,0", "playback")] {
        let (code, _, stderr) = roomcam(&["run", flag, value, "--server", "http://127.0.0.1:9"]);
        assert_eq!(code, Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains("\"hw:7,0\"") && stderr.contains(word) && stderr.contains("roomcam devices"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A camera that is not there (yet) is waited for, not fatal: the daemon
/// stays up, says which device and what to check, and keeps retrying.
#[test]
fn missing_camera_is_waited_for_with_a_clear_warning() {
    let mut device = common::Proc::spawn(
        "roomcam-run",
        Command::new(roomcam_bin()).args([
            "run",
            "--camera",
            "/dev/video-nonexistent",
            "--server",
            "http://127.0.0.1:9",
        ]),
    );
    let line = device.wait_for_line("camera warning", std::time::Duration::from_secs(10), |l| {
        l.contains("/dev/video-nonexistent") && l.contains("plugged in")
    });
    assert!(line.contains("WARN"), "{line}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(device.is_running(), "the daemon gave up:\n{}", device.lines().join("\n"));
    assert_eq!(device.terminate(std::time::Duration::from_secs(5)), Some(0));
}
