//! `/metrics` and `/healthz` on the real binaries (issue 13, point 5): a
//! `roomcam run` device and a `roomcam serve` server, each with
//! `[metrics] listen`, a webrtc-rs viewer that watches, and `roomcam demo`
//! with both sets on one listener. Every scrape is linted by promtool (from
//! Debian's prometheus package, what Prometheus itself would accept) and
//! read with a Prometheus text-format parser; the counters must move.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Member, Proc, free_port, roomcam_bin};
use prometheus_parse::{Scrape, Value};
use room_viewer::RoomViewer;
use roomcam::config::ProtocolChoice;
use roomcam::signaling::protocol::RoomEvent;
use viewer::ViewerOptions;

/// `/metrics` at `addr`, linted by promtool and parsed.
async fn scrape(addr: &str) -> (String, Scrape) {
    let response = reqwest::get(format!("http://{addr}/metrics")).await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET /metrics");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "content type {content_type}");
    let text = response.text().await.unwrap();
    promtool_accepts(&text);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format");
    (text, scrape)
}

/// `promtool check metrics`: the format, and Prometheus' naming conventions
/// (counters end in `_total`, units in the names, help text everywhere).
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- the scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one sample of `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
        .next()
}

fn kind(scrape: &Scrape, name: &str) -> &'static str {
    match scrape.samples.iter().find(|s| s.metric == name).map(|s| &s.value) {
        Some(Value::Counter(_)) => "counter",
        Some(Value::Gauge(_)) => "gauge",
        Some(Value::Histogram(_)) => "histogram",
        Some(_) => "other",
        None => "absent",
    }
}

async fn health(addr: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}/healthz")).await.expect("GET /healthz");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Scrapes until `pred` holds (a viewer's path is measured every 2 s).
async fn scrape_until(addr: &str, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (text, scrape) = scrape(addr).await;
        if pred(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "no {what} within 20 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_and_server_counters_move_when_a_viewer_watches() {
    let (port, server_metrics, device_metrics) = (free_port(), free_port(), free_port());
    let server_addr = format!("127.0.0.1:{server_metrics}");
    let device_addr = format!("127.0.0.1:{device_metrics}");
    let server_config = common::temp_file(
        "metrics",
        "serve.toml",
        &format!("[server]\ncapacity = 2\n[metrics]\nlisten = \"{server_addr}\"\n"),
    );
    let _server = common::roomcam_serve(port, Some(&server_config));
    let url = format!("http://127.0.0.1:{port}");
    let device_config = common::temp_file("metrics", "run.toml", &format!("[metrics]\nlisten = \"{device_addr}\"\n"));
    let mut device = common::roomcam_run(&url, "metrics", &["--config", device_config.to_str().unwrap()]);
    device.wait_in_room();

    let (_, before) = scrape(&device_addr).await;
    assert_eq!(value(&before, "roomcam_viewers", &[]), Some(0.0));
    assert_eq!(value(&before, "roomcam_signaling_connected", &[]), Some(1.0));
    assert_eq!(value(&before, "roomcam_video_frames_sent_total", &[]), Some(0.0), "nobody watches yet");
    for (name, want) in [
        ("roomcam_camera_frames_captured_total", "counter"),
        ("roomcam_viewers", "gauge"),
        ("roomcam_video_encode_seconds", "histogram"),
        ("roomcam_video_target_bytes_per_second", "gauge"),
    ] {
        assert_eq!(kind(&before, name), want, "{name}");
        assert!(before.docs.get(name).is_some_and(|help| !help.is_empty()), "{name} has no help");
    }
    let (status, body) = health(&device_addr).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let viewer = RoomViewer::join(&url, "metrics", ViewerOptions::default()).await;
    let stats = viewer.wait_frames(30, Duration::from_secs(30)).await;
    let watched = scrape_until(&device_addr, "a measured viewer", |s| {
        value(s, "roomcam_viewer_sent_bytes_total", &[("viewer", "0"), ("kind", "video")]).is_some_and(|v| v > 0.0)
            && value(s, "roomcam_viewer_round_trip_time_seconds", &[("viewer", "0")]).is_some()
    })
    .await;
    assert_eq!(value(&watched, "roomcam_viewers", &[]), Some(1.0));
    let sent = value(&watched, "roomcam_video_frames_sent_total", &[]).unwrap();
    assert!(sent >= 30.0, "{sent} frames sent, the viewer decoded {}", stats.frames_decoded);
    assert!(value(&watched, "roomcam_video_keyframes_total", &[]).unwrap() >= 1.0);
    let encoded = value(&watched, "roomcam_video_encode_seconds_count", &[]).unwrap();
    assert!(encoded >= 30.0, "{encoded} encode times observed");
    assert!(value(&watched, "roomcam_audio_packets_sent_total", &[]).unwrap() > 0.0);
    assert!(value(&watched, "roomcam_peer_state_changes_total", &[("state", "connected")]).unwrap() >= 1.0);
    let rtt = value(&watched, "roomcam_viewer_round_trip_time_seconds", &[("viewer", "0")]).unwrap();
    eprintln!("metrics: viewer 0 round trip {:.3} ms", rtt * 1000.0);
    assert!(rtt > 0.0 && rtt < 1.0, "loopback round trip {rtt} s");
    let video_bytes =
        value(&watched, "roomcam_viewer_sent_bytes_total", &[("viewer", "0"), ("kind", "video")]).unwrap();
    assert!(video_bytes >= stats.video_bytes as f64 * 0.5, "{video_bytes} bytes sent, {} received", stats.video_bytes);
    let labels: Vec<_> = watched.samples.iter().filter_map(|s| s.labels.get("viewer")).collect();
    assert!(labels.iter().all(|l| *l == "0"), "one viewer, one slot: {labels:?}");

    let (_, server) = scrape(&server_addr).await;
    assert_eq!(value(&server, "roomcam_server_rooms", &[]), Some(1.0));
    assert_eq!(value(&server, "roomcam_server_members", &[]), Some(2.0), "device and viewer");
    assert_eq!(value(&server, "roomcam_server_connections", &[]), Some(2.0));
    assert!(value(&server, "roomcam_server_joins_total", &[]).unwrap() >= 2.0);
    assert!(value(&server, "roomcam_server_messages_relayed_total", &[]).unwrap() >= 2.0, "offer and answer at least");
    assert_eq!(value(&server, "roomcam_server_refusals_total", &[("reason", "full")]), Some(0.0));
    let (status, _) = health(&server_addr).await;
    assert_eq!(status, 200);

    // A third member of a room for two is refused, and counted so.
    let mut third = Member::connect(&url, ProtocolChoice::Auto);
    third.expect_connected().await;
    third.emit("join", vec!["metrics".into()]);
    third.expect_room("full", |r| matches!(r, RoomEvent::Full { .. })).await;
    let refused = scrape_until(&server_addr, "a refusal", |s| {
        value(s, "roomcam_server_refusals_total", &[("reason", "full")]) == Some(1.0)
    })
    .await;
    assert_eq!(value(&refused, "roomcam_server_members", &[]), Some(2.0));
    third.close();

    // The viewer leaves: its slot's series go, the gauge comes down.
    viewer.leave().await;
    let left = scrape_until(&device_addr, "the viewer gone", |s| value(s, "roomcam_viewers", &[]) == Some(0.0)).await;
    assert_eq!(value(&left, "roomcam_viewer_round_trip_time_seconds", &[("viewer", "0")]), None);
    assert_eq!(value(&left, "roomcam_viewer_sent_bytes_total", &[("viewer", "0"), ("kind", "video")]), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_device_and_the_server_on_one_listener() {
    let (port, metrics_port) = (free_port(), free_port());
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let config = common::temp_file("metrics", "demo.toml", &format!("[metrics]\nlisten = \"{metrics_addr}\"\n"));
    let mut cmd = Command::new(roomcam_bin());
    cmd.arg("demo")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config", config.to_str().unwrap()])
        .args(["--camera", "test", "--microphone", "test", "--speaker", "null"])
        .env("RUST_LOG", "info");
    let mut demo = Proc::spawn("roomcam-demo", &mut cmd);
    demo.wait_in_room();
    let both = scrape_until(&metrics_addr, "the device in its room", |s| {
        value(s, "roomcam_server_members", &[]) == Some(1.0)
            && value(s, "roomcam_signaling_connected", &[]) == Some(1.0)
    })
    .await;
    assert!(value(&both, "roomcam_camera_frames_captured_total", &[]).unwrap() > 0.0);
    assert_eq!(value(&both, "roomcam_server_rooms", &[]), Some(1.0));
    let (status, body) = health(&metrics_addr).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"), "device and server healthy");
}
