//! The real `roomcam run` binary under systemd's notify protocol, with the
//! test listening on a unix datagram socket exactly as systemd does for a
//! `Type=notify` service with `WatchdogSec=`: READY=1 once in the room,
//! STATUS= lines as viewers come and go and the server disappears,
//! WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM; and no more
//! WATCHDOG=1 once the capture thread hangs in the camera, but pings all
//! along while the camera is merely absent.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::path::Path;

use common::{free_port, roomcam_run_env, roomcam_serve};
use room_viewer::RoomViewer;
use roomcam::config::Config;
use roomcam::daemon::{self, Devices, notify::Notifier};
use roomcam::media::{CameraFrame, MediaError, NullSpeaker, TestPattern, VideoSource};
use viewer::ViewerOptions;

/// What systemd's side of NOTIFY_SOCKET would see: each datagram and when.
struct NotifyListener {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifyListener {
    fn bind(name: &str) -> NotifyListener {
        let dir = std::env::temp_dir().join(format!("roomcam-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if std::env::var_os("ROOMCAM_TEST_VERBOSE").is_some() {
                    eprintln!("[notify] {text:?}");
                }
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        NotifyListener { path, messages }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Every `KEY=value` assignment received, with its time.
    fn assignments(&self) -> Vec<(Instant, String)> {
        self.all().into_iter().flat_map(|(t, m)| m.lines().map(|l| (t, l.to_owned())).collect::<Vec<_>>()).collect()
    }

    async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((t, _)) = self.assignments().into_iter().find(|(_, l)| pred(l)) {
                return t;
            }
            assert!(Instant::now() < deadline, "no {what} within {timeout:?}; got {:#?}", self.all());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pings_between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.assignments()
            .into_iter()
            .filter(|(t, l)| l == "WATCHDOG=1" && *t >= from && *t <= to)
            .map(|(t, _)| t)
            .collect()
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping_over_notify_socket() {
    let notify = NotifyListener::bind("notify");
    let port = free_port();
    let mut server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    // WatchdogSec=2: a ping every second.
    let mut device =
        roomcam_run_env(&url, "nursery", &[], &[("NOTIFY_SOCKET", notify.path()), ("WATCHDOG_USEC", "2000000")]);

    let ready = notify.wait_for("READY=1", Duration::from_secs(30), |l| l == "READY=1").await;
    let before_ready: Vec<String> =
        notify.assignments().into_iter().filter(|(t, _)| *t < ready).map(|(_, l)| l).collect();
    assert!(
        before_ready.iter().any(|l| l == "STATUS=connecting to the signaling server"),
        "STATUS while connecting: {before_ready:?}"
    );
    notify
        .wait_for("waiting status", Duration::from_secs(1), |l| l == "STATUS=waiting for a viewer in room nursery")
        .await;

    // A viewer comes and goes.
    let viewer = RoomViewer::join(&url, "nursery", ViewerOptions::default()).await;
    viewer.wait_frames(10, Duration::from_secs(30)).await;
    let streaming = notify
        .wait_for("streaming status", Duration::from_secs(5), |l| l == "STATUS=streaming to 1 viewer in room nursery")
        .await;
    viewer.leave().await;
    notify
        .wait_for("waiting again", Duration::from_secs(15), |l| l == "STATUS=waiting for a viewer in room nursery")
        .await;
    let statuses: Vec<String> = notify
        .assignments()
        .into_iter()
        .filter(|(t, l)| *t > streaming && l.starts_with("STATUS="))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(statuses.last().map(String::as_str), Some("STATUS=waiting for a viewer in room nursery"));

    // Watchdog: a ping about every WATCHDOG_USEC / 2 all along.
    let now = Instant::now();
    let pings = notify.pings_between(ready, now);
    let span = now - ready;
    // Due every second, sent at the main loop's next event or 250 ms tick.
    assert!(
        pings.len() as f64 >= span.as_secs_f64() / 1.25 - 1.0,
        "{} pings over {span:?} (one every 1 to 1.25 s expected)",
        pings.len()
    );
    let worst = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    // systemd's own criterion: never WATCHDOG_USEC without a ping.
    assert!(worst < Duration::from_secs(2), "longest gap between pings {worst:?}");

    // The server goes away: the device says it is reconnecting, and keeps pinging.
    server.kill();
    let gone = notify
        .wait_for("reconnecting status", Duration::from_secs(15), |l| {
            l == "STATUS=reconnecting to the signaling server"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(notify.pings_between(gone, Instant::now()).len() >= 2, "pings stop while reconnecting");

    // SIGTERM: STOPPING=1 and a clean exit within a few seconds.
    let t = Instant::now();
    let code = device.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{}", device.lines().join("\n"));
    assert!(t.elapsed() < Duration::from_secs(8), "shutdown took {:?}", t.elapsed());
    notify.wait_for("STOPPING=1", Duration::from_secs(1), |l| l == "STOPPING=1").await;
    let ready_count = notify.assignments().iter().filter(|(_, l)| l == "READY=1").count();
    assert_eq!(ready_count, 1, "READY=1 once only");
}

/// A camera whose driver call never returns after `left` frames, as a
/// wedged V4L2 driver's ioctl. Lives here, not in the product: the shipped
/// binary has no fault switch; the test runs the real daemon in-process
/// through `daemon::run_with`.
struct HangingCamera {
    inner: TestPattern,
    left: u32,
}

impl VideoSource for HangingCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        if self.left == 0 {
            loop {
                std::thread::park();
            }
        }
        self.left -= 1;
        self.inner.next_frame()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_when_the_capture_thread_hangs() {
    let notify = NotifyListener::bind("notify-stall");
    let port = free_port();
    let _server = roomcam_serve(port, None);
    // `/healthz` tells the same truth as the watchdog.
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = Config::parse(
        &format!(
            "[signaling]\nserver = \"http://127.0.0.1:{port}\"\nroom = \"stall\"\n[camera]\nsize = \"320x240\"\n\
             [metrics]\nlisten = \"{metrics}\"\n"
        ),
        Path::new("stall.toml"),
    )
    .unwrap();
    let healthz = |metrics: String| async move {
        let response = reqwest::get(format!("http://{metrics}/healthz")).await.expect("GET /healthz");
        (response.status().as_u16(), response.text().await.unwrap())
    };
    // 25 fps: the camera hangs about two seconds in, inside next_frame.
    let devices = Devices {
        camera: Box::new(HangingCamera { inner: TestPattern::new(320, 240, 25).unwrap(), left: 50 }),
        microphone: None,
        speaker: Box::new(NullSpeaker::new()),
        hardware_encoder: None,
    };
    // WatchdogSec=1: a ping every 500 ms.
    let notifier = Notifier::from_vars(Some(notify.path().as_ref()), Some("1000000"), None, std::process::id());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(daemon::run_with(config, devices, notifier, async move {
        let _ = stop_rx.await;
    }));

    let ready = notify.wait_for("READY=1", Duration::from_secs(30), |l| l == "READY=1").await;
    assert_eq!(healthz(metrics.clone()).await, (200, "ok\n".to_owned()), "healthy before the hang");
    let stalled = notify
        .wait_for("stuck status", Duration::from_secs(20), |l| {
            l.starts_with("STATUS=camera stuck: the capture thread has not returned for 5s")
        })
        .await;
    assert!(notify.pings_between(ready, stalled).len() >= 2, "pings before the hang");
    // systemd (WatchdogSec=1) would now kill us: no ping for well over the timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = notify.pings_between(stalled, Instant::now());
    assert!(after.is_empty(), "{} WATCHDOG=1 after the capture thread hung", after.len());
    let (status, body) = healthz(metrics.clone()).await;
    assert_eq!(status, 503, "/healthz while the capture thread hangs: {body}");
    assert!(body.contains("capture thread has not returned"), "{body}");

    // Shutting down does not wait for the wedged capture thread for ever.
    let t = Instant::now();
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(15), daemon).await.expect("daemon stopped").unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "shutdown took {:?}", t.elapsed());
    notify.wait_for("STOPPING=1", Duration::from_secs(1), |l| l == "STOPPING=1").await;
}

/// The product binary with a camera that is not there (unplugged, or not
/// yet enumerated at boot): the capture thread keeps retrying, viewers get
/// the "camera unavailable" picture, and systemd must not restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_camera_keeps_the_watchdog_fed_for_a_minute() {
    let notify = NotifyListener::bind("notify-absent");
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    // WatchdogSec=2: a ping every second; systemd would restart after 2 s without one.
    let mut device = roomcam_run_env(
        &url,
        "absent",
        &["--camera", "/dev/video-roomcam-absent"],
        &[("NOTIFY_SOCKET", notify.path()), ("WATCHDOG_USEC", "2000000")],
    );
    let ready = notify.wait_for("READY=1", Duration::from_secs(30), |l| l == "READY=1").await;
    notify
        .wait_for("camera unavailable status", Duration::from_secs(15), |l| {
            l == "STATUS=waiting for a viewer in room absent; camera unavailable, retrying"
        })
        .await;
    // A viewer meanwhile gets the placeholder: the stream is up.
    let viewer = RoomViewer::join(&url, "absent", ViewerOptions::default()).await;
    viewer.wait_frames(5, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(ready.elapsed())).await;
    let pings = notify.pings_between(ready, Instant::now());
    let worst = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    assert!(ready.elapsed() >= Duration::from_secs(60));
    assert!(worst < Duration::from_secs(2), "longest gap between pings {worst:?} (systemd would restart)");
    // The main loop sends a ping when one is due at its next event or
    // 250 ms tick: one every 1 to 1.25 s.
    let expected = ready.elapsed().as_secs_f64() / 1.25 - 1.0;
    assert!(pings.len() as f64 >= expected, "{} pings in {:?}", pings.len(), ready.elapsed());
    assert!(
        notify.assignments().iter().all(|(_, l)| !l.starts_with("STATUS=camera stuck")),
        "an absent camera is not a stuck one: {:#?}",
        notify.all()
    );
    viewer.leave().await;
    assert_eq!(device.terminate(Duration::from_secs(10)), Some(0));
}
