//! `--board NAME` and `board = "NAME"` on the real binary: the profile fills
//! in what the config and the flags leave out; explicit settings win; an
//! unknown board is a configuration error (exit 78, no restart by systemd).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proc, roomcam_bin};

fn started_with(args: &[&str]) -> String {
    let mut cmd = Command::new(roomcam_bin());
    // Nobody listens on port 1: the device starts and keeps trying to connect.
    cmd.args(["run", "--server", "http://127.0.0.1:1", "--camera", "test", "--microphone", "none"])
        .args(args)
        .env("RUST_LOG", "info");
    let mut device = Proc::spawn("roomcam-run-board", &mut cmd);
    let line = device.wait_for_line("start-up line", Duration::from_secs(20), |l| l.contains("camera test "));
    device.terminate(Duration::from_secs(10));
    line
}

#[test]
fn board_flag_fills_in_and_explicit_flags_win() {
    assert!(started_with(&["--board", "pi4"]).contains("camera test 1280x720@25"));
    assert!(started_with(&["--board", "pi-zero-2w", "--fps", "10"]).contains("camera test 640x480@10"));
}

#[test]
fn board_key_in_the_config_and_the_flag_over_it() {
    let dir = std::env::temp_dir().join(format!("roomcam-board-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("roomcam.toml");
    std::fs::write(&config, "board = \"pi5\"\n[camera]\nsize = \"640x360\"\n").unwrap();
    let config = config.to_str().unwrap();
    assert!(started_with(&["--config", config]).contains("camera test 640x360@30"), "file size wins, pi5 fps");
    assert!(started_with(&["--config", config, "--board", "pi3"]).contains("camera test 640x360@25"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_board_exits_78() {
    let out = Command::new(roomcam_bin()).args(["run", "--board", "pi9"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown board \"pi9\"") && stderr.contains("pi-zero-2w"), "{stderr}");
}
