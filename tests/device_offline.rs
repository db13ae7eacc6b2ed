//! roomcam's server speaks for an absent camera: when the device's
//! connection to the server ends (the process killed: its TCP closes at
//! once; or frozen with SIGSTOP: no FIN, found by Engine.IO's ping timeout),
//! the viewers in its room get `device-offline`, a viewer that joins
//! meanwhile gets it at join, `[server] webhook` gets a POST (json or ntfy),
//! and `device-online` / a second POST follow when the device is back. The
//! page shows "camera offline since HH:MM" over the picture meanwhile.
//! Run in a private network namespace:
//! `unshare -n bash -c 'ip link set lo up; cargo test --test device_offline'`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::page::{artifact, check_viewer_command, in_netns, wait_for_file};
use common::webhook::{Receiver, assert_recent_rfc3339, receiver};
use common::{Member, Proc, free_port, node_client, roomcam_bin, roomcam_run, roomcam_serve};
use roomcam::config::ProtocolChoice;
use roomcam::signaling::protocol::RoomEvent;
use roomcam::signaling::server::{PING_INTERVAL, PING_TIMEOUT};
use serde_json::json;

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcam-offline-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `roomcam serve` with `[server]` `settings`.
fn serve_with(name: &str, settings: &str) -> (Proc, String) {
    let config = test_dir(name).join("server.toml");
    std::fs::write(&config, format!("[server]\n{settings}")).unwrap();
    let port = free_port();
    let server = roomcam_serve(port, Some(&config));
    (server, format!("http://127.0.0.1:{port}"))
}

fn signal(proc: &Proc, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &proc.pid().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn viewer(url: &str, room: &str, member: &str) -> Member {
    let mut viewer = Member::connect(url, ProtocolChoice::Auto);
    viewer.expect_connected().await;
    viewer.emit("join", vec![json!(room), json!({ "member": member })]);
    viewer.expect_room("joined", |r| matches!(r, RoomEvent::Joined { .. })).await;
    viewer
}

/// Waits up to `within` for `device-offline` (its `since`) and says how long it took.
async fn expect_offline(viewer: &mut Member, what: &str, from: Instant, within: Duration) -> (u64, Duration) {
    let event = viewer
        .expect(what, within, |e| match e {
            roomcam::signaling::client::ClientEvent::Room(RoomEvent::DeviceOffline { since_ms, .. }) => Some(*since_ms),
            _ => None,
        })
        .await;
    let took = from.elapsed();
    eprintln!("{what}: told after {:.2} s", took.as_secs_f64());
    (event, took)
}

async fn expect_online(viewer: &mut Member, what: &str, within: Duration) {
    viewer
        .expect(what, within, |e| {
            matches!(e, roomcam::signaling::client::ClientEvent::Room(RoomEvent::DeviceOnline { .. })).then_some(())
        })
        .await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn posts_of(hook: &Receiver, n: usize, server: &Proc) -> Vec<common::webhook::Post> {
    hook.wait_for(n, Duration::from_secs(20), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_hear_at_once_of_a_killed_device_within_the_ping_timeout_of_a_frozen_one_and_the_webhook_too() {
    let hook = receiver(0);
    // Room for a restarted device while the old one's place is still held.
    let (server, url) = serve_with("json", &format!("capacity = 3\nwebhook = \"{}\"\n", hook.url));
    let mut device = roomcam_run(&url, "nursery", &[]);
    device.wait_in_room();
    let mut first = viewer(&url, "nursery", "viewer-first").await;

    // SIGKILL: the kernel closes its TCP at once.
    let killed = Instant::now();
    device.kill();
    let (since, _) = expect_offline(&mut first, "device-offline after SIGKILL", killed, Duration::from_secs(2)).await;
    assert!(now_ms().abs_diff(since) < 5_000, "since {since} is not now");
    let posts = posts_of(&hook, 1, &server);
    let offline = posts[0].json();
    assert_eq!((&offline["event"], &offline["room"]), (&json!("device_offline"), &json!("nursery")), "{offline}");
    assert_recent_rfc3339(offline["at"].as_str().unwrap());
    assert_eq!(posts[0].header("content-type"), Some("application/json"));

    // A viewer that comes while the device is gone is told at its join.
    let mut late = viewer(&url, "nursery", "viewer-late").await;
    let (late_since, _) =
        expect_offline(&mut late, "device-offline at join", Instant::now(), Duration::from_secs(2)).await;
    assert_eq!(late_since, since);

    // The device restarts (a new member id): online again.
    let mut device = roomcam_run(&url, "nursery", &[]);
    device.wait_in_room();
    expect_online(&mut first, "device-online after the restart", Duration::from_secs(10)).await;
    expect_online(&mut late, "device-online (late viewer)", Duration::from_secs(10)).await;
    let online = posts_of(&hook, 2, &server)[1].json();
    assert_eq!((&online["event"], &online["room"]), (&json!("device_online"), &json!("nursery")), "{online}");
    assert!(online["offline_s"].as_u64().is_some(), "{online}");
    late.close();

    // SIGSTOP: no FIN; the server's pings go unanswered.
    let bound = PING_INTERVAL + PING_TIMEOUT;
    let stopped = Instant::now();
    signal(&device, "STOP");
    let (_, took) =
        expect_offline(&mut first, "device-offline after SIGSTOP", stopped, bound + Duration::from_secs(5)).await;
    eprintln!("SIGSTOP: told after {:.1} s (bound {} s)", took.as_secs_f64(), bound.as_secs());
    assert_eq!(posts_of(&hook, 3, &server)[2].json()["event"], "device_offline");
    signal(&device, "CONT");
    // It finds its connection dead, reconnects and joins again.
    expect_online(&mut first, "device-online after SIGCONT", Duration::from_secs(30)).await;
    assert_eq!(posts_of(&hook, 4, &server)[3].json()["event"], "device_online");
    let log = server.lines().join("\n");
    assert!(!log.contains("ERROR") && !log.contains("panicked"), "{log}");
    // The receiver's URL has no secret, but the log names it only redacted anyway.
    assert!(server.count_lines(|l| l.contains("devices going offline and coming back are POSTed to")) == 1, "{log}");
    first.close();
    device.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_ntfy_notifications_high_for_offline_default_for_back_and_its_token_is_never_logged() {
    let hook = receiver(1);
    let url_with_token = format!("{}?auth=tk_secret_42", hook.url);
    let (server, url) =
        serve_with("ntfy", &format!("capacity = 3\nwebhook = \"{url_with_token}\"\nwebhook-format = \"ntfy\"\n"));
    let mut device = roomcam_run(&url, "hall", &[]);
    device.wait_in_room();
    let mut watcher = viewer(&url, "hall", "viewer-ntfy").await;
    device.kill();
    expect_offline(&mut watcher, "device-offline", Instant::now(), Duration::from_secs(2)).await;
    // The first attempt fails (500): retried after 1 s.
    let posts = posts_of(&hook, 2, &server);
    assert_eq!(posts[0].body, posts[1].body);
    assert_eq!(posts[1].header("priority"), Some("high"));
    assert_eq!(posts[1].header("title"), Some("Camera in hall offline"));
    assert!(posts[1].body.contains("The camera in hall is offline since"), "{}", posts[1].body);
    assert!(posts[1].path.contains("auth=tk_secret_42"), "{}", posts[1].path);
    let mut device = roomcam_run(&url, "hall", &[]);
    device.wait_in_room();
    expect_online(&mut watcher, "device-online", Duration::from_secs(10)).await;
    let back = &posts_of(&hook, 3, &server)[2];
    assert_eq!(back.header("priority"), Some("default"));
    assert_eq!(back.header("title"), Some("Camera in hall back"));
    assert!(back.body.contains("back online"), "{}", back.body);
    assert_eq!(server.count_lines(|l| l.contains("tk_secret_42")), 0, "{}", server.lines().join("\n"));
    watcher.close();
    device.kill();
}

/// What a client can make of the device scheme: a second "device" in a
/// room whose device is connected is an ordinary member (its going says
/// nothing), odd join options and forged server events are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_claims_to_be_a_second_device_is_an_ordinary_member_and_odd_input_is_ignored() {
    let (mut server, url) = serve_with("impostor", "capacity = 4\n");
    let mut device = Member::connect(&url, ProtocolChoice::Auto);
    device.expect_connected().await;
    device.emit("join", vec![json!("den"), json!({ "member": "device-00000000000000aa" })]);
    device.expect_room("device joined", |r| matches!(r, RoomEvent::Joined { .. })).await;
    let mut watcher = viewer(&url, "den", "viewer-den").await;

    let mut impostor = Member::connect(&url, ProtocolChoice::Auto);
    impostor.expect_connected().await;
    // Forged server events and odd options first: none of them is a join.
    impostor.emit("device-offline", vec![json!("den"), json!({ "since": 1 })]);
    impostor.emit("device-online", vec![json!("den")]);
    impostor.emit("join", vec![json!("den"), json!("device-00000000000000bb")]);
    impostor.emit("join", vec![json!("den"), json!({ "member": 42 })]);
    impostor.expect_room("joined with a socket id", |r| matches!(r, RoomEvent::Joined { .. })).await;
    impostor.emit("join", vec![json!("den"), json!({ "member": "device-bad id!" })]);
    impostor.expect_room("joined again", |r| matches!(r, RoomEvent::Joined { .. })).await;
    impostor.emit("join", vec![json!("den"), json!({ "member": "device-00000000000000bb" })]);
    impostor.expect_room("joined as a second device", |r| matches!(r, RoomEvent::Joined { .. })).await;
    server.wait_for_line("the impostor refused as the device", Duration::from_secs(5), |l| {
        l.contains("device-00000000000000bb says it is a device") && l.contains("taken as an ordinary member")
    });
    watcher
        .expect_no_room("device-offline for the impostor", Duration::from_secs(1), |r| {
            matches!(r, RoomEvent::DeviceOffline { .. } | RoomEvent::DeviceOnline { .. })
        })
        .await;
    impostor.close();
    watcher
        .expect_no_room("device-offline for the impostor's going", Duration::from_secs(2), |r| {
            matches!(r, RoomEvent::DeviceOffline { .. })
        })
        .await;
    // The real device going is told.
    device.close();
    expect_offline(&mut watcher, "device-offline (the real one)", Instant::now(), Duration::from_secs(2)).await;
    // Rooms the server never saw a device in say nothing at join.
    let mut elsewhere = viewer(&url, "attic", "viewer-attic").await;
    elsewhere
        .expect_no_room("device-offline in a room without a device", Duration::from_secs(1), |r| {
            matches!(r, RoomEvent::DeviceOffline { .. })
        })
        .await;
    let mut server_alive = Member::connect(&url, ProtocolChoice::Auto);
    server_alive.expect_connected().await;
    let log = server.lines().join("\n");
    assert!(!log.contains("panicked"), "{log}");
    watcher.close();
    elsewhere.close();
    server_alive.close();
}

/// The page: "camera offline since HH:MM" over the picture while the device
/// is gone (killed), gone again once it is back; a phone-sized screenshot.
#[test]
fn the_page_says_the_camera_is_offline_since_when_and_clears_it_when_it_is_back() {
    let port = free_port();
    let mut server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "crib", &[]);
    device.wait_in_room();
    let video = artifact("offline.video");
    let shot = artifact("device-offline-phone.png");
    let args = [
        "--phone",
        "--expect-video",
        "--video-file",
        video.to_str().unwrap(),
        "--expect-offline",
        "--offline-screenshot",
        shot.to_str().unwrap(),
        // The restarted device waits out the old one's held place (10 s) and its retry after `full`.
        "--timeout",
        "45",
    ];
    let mut page = Proc::spawn("chromium", &mut check_viewer_command(None, &format!("{url}/?room=crib"), &args));
    wait_for_file(&video, &mut page, Duration::from_secs(60));
    device.kill();
    server.wait_for_line("the device offline", Duration::from_secs(5), |l| l.contains(": offline ("));
    let mut device = roomcam_run(&url, "crib", &[]);
    device.wait_in_room();
    let line = page.wait_for_line("page report", Duration::from_secs(90), |l| l.starts_with('{'));
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["ok"], true, "{report}\n{}", page.lines().join("\n"));
    eprintln!("page report: {}", report["offline"]);
    let banner = report["offline"]["banner"].as_str().unwrap();
    assert!(banner.starts_with("camera offline since "), "{report}");
    // 390x844 CSS pixels at 3x.
    let png = std::fs::read(&shot).unwrap();
    let (w, h) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((w, h), (390 * 3, 844 * 3), "{shot:?}");
    device.kill();
}

/// The shortened pings (5 s + 12 s) suit the real socket.io 2 and 4
/// clients (HTTP long-polling upgraded to WebSocket, as browsers do): past
/// the time a client that missed the pings would be dropped (interval +
/// timeout) and one more interval, neither drops, and both hear `otherjoin`.
#[test]
fn socket_io_2_and_4_clients_stay_connected_with_the_server_s_ping_values() {
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut clients: Vec<Proc> = [2, 4].iter().map(|&v| node_client(v, &url, &format!("pings-{v}"), None)).collect();
    for client in &mut clients {
        client.wait_for_line("joined", Duration::from_secs(20), |l| l.contains("\"event\":\"joined\""));
    }
    std::thread::sleep(PING_INTERVAL * 2 + PING_TIMEOUT);
    for (client, v) in clients.iter_mut().zip([2, 4]) {
        assert_eq!(client.count_lines(|l| l.contains("\"disconnect\"")), 0, "{}", client.lines().join("\n"));
        let mut device = roomcam_run(&url, &format!("pings-{v}"), &[]);
        device.wait_in_room();
        client.wait_for_line("otherjoin after the pings", Duration::from_secs(10), |l| l.contains("\"otherjoin\""));
        device.kill();
    }
}

/// The device's network vanishes (its link deleted: no FIN, no RST): the
/// server finds it gone by its ping timeout, within interval + timeout (17 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_link_is_deleted_is_told_offline_within_the_ping_bound() {
    const SERVER_ADDR: &str = "10.78.0.1";
    let camera = Netns::new("netns-camera");
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    };
    let camera_pid = camera.pid().to_string();
    ip(&["link", "add", "rc-srv", "type", "veth", "peer", "name", "rc-cam", "netns", &camera_pid]);
    ip(&["addr", "add", &format!("{SERVER_ADDR}/24"), "dev", "rc-srv"]);
    ip(&["link", "set", "rc-srv", "up"]);
    camera.ip(&["addr", "add", "10.78.0.2/24", "dev", "rc-cam"]);
    camera.ip(&["link", "set", "rc-cam", "up"]);
    let port = free_port();
    let mut server = Proc::spawn(
        "roomcam-serve",
        Command::new(roomcam_bin()).args(["serve", "--listen", &format!("0.0.0.0:{port}")]).env("RUST_LOG", "info"),
    );
    server.wait_for_line("listening", Duration::from_secs(20), |l| l.contains("listening on"));
    let url = format!("http://{SERVER_ADDR}:{port}");
    // The viewer over loopback: the link that goes is the device's only.
    let viewer_url = format!("http://127.0.0.1:{port}");
    let mut device = Proc::spawn(
        "roomcam-run",
        in_netns(Some(camera.pid()), roomcam_bin().to_str().unwrap())
            .args(["run", "--server", &url, "--room", "porch", "--camera", "test", "--microphone", "test"])
            .args(["--speaker", "null"])
            .env("RUST_LOG", "info"),
    );
    device.wait_in_room();
    let mut watcher = viewer(&viewer_url, "porch", "viewer-porch").await;
    let cut = Instant::now();
    ip(&["link", "del", "rc-srv"]);
    let bound = PING_INTERVAL + PING_TIMEOUT;
    let (_, took) =
        expect_offline(&mut watcher, "device-offline after the link went", cut, bound + Duration::from_secs(5)).await;
    eprintln!("link deleted: told after {:.1} s (bound {} s)", took.as_secs_f64(), bound.as_secs());
    server.wait_for_line("the reason", Duration::from_secs(1), |l| l.contains("from 10.78.0.2: no pong in time"));
    watcher.close();
    device.kill();
}
