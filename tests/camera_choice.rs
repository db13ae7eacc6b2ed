//! Which camera roomcam uses on a machine as CI has it (no camera at all,
//! Debian's real libcamera 0.0.3 and its V4L2 layer installed): `auto`
//! runs and shows "camera unavailable" instead of failing or faking a
//! picture; `libcamera` goes through libcamera's V4L2 layer (roomcam
//! re-executes itself with it) and says plainly that it finds no camera;
//! without the layer, a configuration error (exit 78) that names the
//! package. The libcamera camera itself streams in the emulated board
//! (vimc), where a kernel driver can be loaded.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, roomcam_bin, roomcam_run, roomcam_serve};
use room_viewer::RoomViewer;
use roomcam::media::fixtures::looks_like_placeholder;
use roomcam::media::sources::libcamera;
use viewer::ViewerOptions;

fn compat_library() -> std::path::PathBuf {
    libcamera::compat_library().expect(
        "libcamera's V4L2 layer (v4l2-compat.so, Debian package libcamera-v4l2) is missing: scripts/test installs it",
    )
}

/// `roomcam run` with `args`, waited for (at most 60 s).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(roomcam_bin());
    cmd.arg("run").args(["--server", "http://127.0.0.1:9", "--room", "choice", "--microphone", "test"]);
    cmd.args(["--speaker", "null"]).args(args).envs(env.iter().copied()).env("RUST_LOG", "info");
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("roomcam run {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_a_camera_runs_and_viewers_see_camera_unavailable() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    // The flags after the helper's `--camera test` win.
    let mut device = roomcam_run(&url, "nocam", &["--camera", "auto"]);
    device.wait_for_line("auto found nothing", Duration::from_secs(30), |l| {
        l.contains("camera: none found") && l.contains("until one is plugged in")
    });
    device.wait_in_room();
    let viewer = RoomViewer::join(&url, "nocam", ViewerOptions::default()).await;
    let stats = viewer.wait_frames(5, Duration::from_secs(30)).await;
    let frame = stats.last_frame.expect("a decoded picture");
    assert!(looks_like_placeholder(&frame), "the viewer's picture is not \"camera unavailable\"");
    assert_eq!((frame.width, frame.height), (640, 480), "the configured size");
    viewer.leave().await;
    assert!(device.is_running(), "roomcam run stopped without a camera");
    assert_eq!(device.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn libcamera_runs_through_its_v4l2_layer_and_says_when_it_finds_no_camera() {
    let library = compat_library();
    let out = run_to_exit(&["--camera", "libcamera"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Restarted under the layer (the same pid, LD_PRELOAD), then libcamera
    // itself enumerated the (absent) cameras.
    assert!(
        err.contains("restarting roomcam with libcamera's V4L2 layer") && err.contains(&*library.to_string_lossy()),
        "{err}"
    );
    assert!(err.contains("libcamera finds no camera") && err.contains("config.txt"), "{err}");
    assert_eq!(out.status.code(), Some(1), "a camera may still come (systemd restarts it): not a config error\n{err}");
    // A named camera that is not there lists what is (nothing here).
    let out = run_to_exit(&["--camera", "libcamera:/base/soc/i2c0mux/i2c@1/imx708@1a"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("libcamera finds no camera"));
}

#[test]
fn libcamera_without_its_v4l2_layer_is_a_config_error_naming_the_package() {
    let out =
        run_to_exit(&["--camera", "libcamera"], &[(libcamera::COMPAT_LIBRARY_ENV, "/nonexistent/v4l2-compat.so")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("apt install libcamera-v4l2"), "{err}");
    // A layer that does not load (not a library): said, not looped on.
    let dir = std::env::temp_dir().join(format!("roomcam-compat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("v4l2-compat.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let out = run_to_exit(&["--camera", "libcamera"], &[(libcamera::COMPAT_LIBRARY_ENV, fake.to_str().unwrap())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not in the process"), "{err}");
    assert_eq!(err.matches("restarting roomcam").count(), 1, "re-executed once only: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn devices_lists_libcamera_cameras_through_the_layer() {
    let library = compat_library();
    let out = Command::new(roomcam_bin()).arg("devices").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Cameras (libcamera"), "{text}");
    assert!(text.contains(&format!("none found (libcamera through {})", library.display())), "{text}");
    // The hidden probe refuses to run outside the layer.
    let out = Command::new(roomcam_bin()).arg(libcamera::PROBE_SUBCOMMAND).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LD_PRELOAD"));
}

#[test]
fn a_camera_device_that_cannot_be_is_a_config_error_with_its_place() {
    let dir = std::env::temp_dir().join(format!("roomcam-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("roomcam.toml");
    std::fs::write(&file, "[camera]\ndevice = \"libcamera:\"\n").unwrap();
    let out = Command::new(roomcam_bin()).arg("check-config").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("roomcam.toml:2:10:") && err.contains("camera id"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
