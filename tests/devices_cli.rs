//! `roomcam devices` on a machine without cameras or sound cards: still a
//! useful report (what is missing and what to check), exit status 0.

use std::process::Command;

#[test]
fn devices_reports_cameras_and_pcms_even_when_there_are_none() {
    let out = Command::new(env!("CARGO_BIN_EXE_roomcam")).arg("devices").output().expect("run roomcam devices");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Cameras (V4L2)"), "{text}");
    assert!(text.contains("ALSA PCMs"), "{text}");
    // This x86 machine has no device-tree model: the generic profile.
    assert!(text.contains("suggested profile: generic (640x480"), "{text}");
    if !std::path::Path::new("/dev/video0").exists() {
        assert!(text.contains("none found"), "{text}");
    }
}

#[test]
fn a_missing_camera_or_pcm_is_named_with_the_reason() {
    // The daemon waits for a missing camera (placeholder), but a missing
    // microphone PCM fails the start with a message naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_roomcam"))
        .args(["run", "--server", "http://127.0.0.1:9", "--camera", "test", "--microphone", "no_such_pcm_here"])
        .env("ALSA_CONFIG_PATH", "/dev/null")
        .output()
        .expect("run roomcam");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no_such_pcm_here") && err.contains("missing"), "{err}");
}
