//! Sound alerts to Home Assistant over MQTT (a real mosquitto) and to a
//! webhook (a small HTTP receiver here), from `roomcam run` hearing a fan
//! and then a cry. Run in a private network namespace:
//! `unshare -n bash -c 'ip link set lo up; cargo test --test alerts_mqtt'`.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::webhook::{assert_recent_rfc3339, receiver};
use common::{
    Proc, free_port, mosquitto, mqtt_subscriber, roomcam_hearing, roomcam_hearing_env, roomcam_serve, server_cert,
    test_ca, write_fan_then_cry,
};
use room_viewer::RoomViewer;
use viewer::ViewerOptions;

/// A test's own directory with the recording (cry from 8 to 12 s) in it.
fn test_dir(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("roomcam-alerts-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("nursery.wav");
    // Long enough that the loop does not come round within the test.
    write_fan_then_cry(&recording, 90.0, (8.0, 12.0));
    let microphone = format!("wav:{}", recording.display());
    (dir, microphone)
}

fn config(dir: &Path, name: &str, alerts: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("[alerts]\n{alerts}")).unwrap();
    path
}

/// One line of [`mqtt_subscriber`].
struct Message {
    at: f64,
    retained: bool,
    topic: String,
    payload: String,
}

fn message(line: &str) -> Option<Message> {
    let mut parts = line.splitn(4, ' ');
    Some(Message {
        at: parts.next()?.parse().ok()?,
        retained: parts.next()? == "1",
        topic: parts.next()?.to_owned(),
        payload: parts.next().unwrap_or("").to_owned(),
    })
}

fn messages(sub: &Proc, topic: &str) -> Vec<Message> {
    sub.lines().iter().filter_map(|l| message(l)).filter(|m| m.topic == topic).collect()
}

/// Waits until `topic` has carried `payload` `n` times in all.
fn wait_for_payload(sub: &mut Proc, topic: &str, payload: &str, n: usize, timeout: Duration) {
    let what = format!("{topic} {payload} (#{n})");
    let deadline = Instant::now() + timeout;
    while messages(sub, topic).iter().filter(|m| m.payload == payload).count() < n {
        assert!(sub.is_running(), "mosquitto_sub exited:\n{}", sub.lines().join("\n"));
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}:\n{}", sub.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn discovery(sub: &mut Proc, topic: &str) -> serde_json::Value {
    let line = sub.wait_for_line(topic, Duration::from_secs(20), |l| message(l).is_some_and(|m| m.topic == topic));
    let message = message(&line).unwrap();
    serde_json::from_str(&message.payload).unwrap_or_else(|e| panic!("{topic}: {e}: {}", message.payload))
}

/// A subscriber to everything roomcam publishes, subscribed before it returns.
fn subscribe(broker: &mut Proc, port: u16, user: Option<(&str, &str)>) -> Proc {
    let subscribed = broker.count_lines(|l| l.contains("Sending SUBACK"));
    let sub = mqtt_subscriber(port, &["homeassistant/#", "roomcam/#"], user);
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.count_lines(|l| l.contains("Sending SUBACK")) == subscribed {
        assert!(Instant::now() < deadline, "mosquitto_sub did not subscribe:\n{}", broker.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    sub
}

#[test]
fn home_assistant_sees_the_sensors_the_cry_the_level_and_offline_after_a_stop_and_a_crash() {
    let (dir, microphone) = test_dir("mqtt");
    let broker_port = free_port();
    let mut broker = mosquitto(&dir, broker_port, None, "");
    let mut sub = subscribe(&mut broker, broker_port, None);
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let config = config(&dir, "mqtt.toml", &format!("mqtt = \"mqtt://127.0.0.1:{broker_port}\"\n"));
    let mut device = roomcam_hearing(&url, "nursery", &microphone, Some(&config));
    device.wait_in_room();

    let sound = discovery(&mut sub, "homeassistant/binary_sensor/roomcam_nursery/sound/config");
    assert_eq!(sound["unique_id"], "roomcam_nursery_sound", "{sound}");
    assert_eq!(sound["device_class"], "sound", "{sound}");
    assert_eq!(sound["state_topic"], "roomcam/nursery/sound", "{sound}");
    assert_eq!((&sound["payload_on"], &sound["payload_off"]), (&"ON".into(), &"OFF".into()), "{sound}");
    let level = discovery(&mut sub, "homeassistant/sensor/roomcam_nursery/level/config");
    assert_eq!(level["unique_id"], "roomcam_nursery_level", "{level}");
    assert_eq!(level["unit_of_measurement"], "dB", "{level}");
    assert_eq!(level["state_topic"], "roomcam/nursery/level", "{level}");
    for config in [&sound, &level] {
        assert_eq!(config["availability_topic"], "roomcam/nursery/availability", "{config}");
        assert_eq!(
            (&config["payload_available"], &config["payload_not_available"]),
            (&"online".into(), &"offline".into())
        );
        assert_eq!(config["device"]["identifiers"][0], "roomcam_nursery", "{config}");
    }
    assert_eq!(sound["device"], level["device"]);

    wait_for_payload(&mut sub, "roomcam/nursery/availability", "online", 1, Duration::from_secs(10));
    wait_for_payload(&mut sub, "roomcam/nursery/sound", "ON", 1, Duration::from_secs(30));
    wait_for_payload(&mut sub, "roomcam/nursery/sound", "OFF", 2, Duration::from_secs(20));
    let states: Vec<_> = messages(&sub, "roomcam/nursery/sound").into_iter().map(|m| m.payload).collect();
    assert_eq!(states, ["OFF", "ON", "OFF"], "the state on connecting, then the cry's start and end");
    device.wait_for_line("the alert's end in the log", Duration::from_secs(5), |l| l.contains("sound alert ended"));

    let levels = messages(&sub, "roomcam/nursery/level");
    assert!(levels.len() >= 8, "a reading a second for the cry's 14 s: {}", levels.len());
    for reading in &levels {
        let db: f32 = reading.payload.parse().unwrap_or_else(|e| panic!("{:?}: {e}", reading.payload));
        assert!((-130.0..=0.0).contains(&db) && !reading.retained, "{:?}", reading.payload);
    }
    // Published a second apart at the device; loopback delivery may bunch
    // two up by a few milliseconds, a 4 Hz stream would be 0.25 s apart.
    let gaps: Vec<f64> = levels.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|gap| *gap > 0.6), "readings closer than a second: {gaps:?}");
    let loudest = levels.iter().map(|m| m.payload.parse::<f32>().unwrap()).fold(f32::MIN, f32::max);
    let quietest = levels.iter().map(|m| m.payload.parse::<f32>().unwrap()).fold(f32::MAX, f32::min);
    assert!(loudest - quietest > 10.0, "the cry shows in the level: {quietest}..{loudest}");

    // A clean stop says offline itself, retained for whoever asks later.
    assert_eq!(device.terminate(Duration::from_secs(10)), Some(0), "{:#?}", device.lines());
    wait_for_payload(&mut sub, "roomcam/nursery/availability", "offline", 1, Duration::from_secs(5));
    assert_eq!(device.count_lines(|l| l.contains("mqtt: room nursery: connected to")), 1, "{:#?}", device.lines());
    assert!(device.lines().iter().any(|l| l.contains("mqtt: room nursery: told") && l.contains("offline")));
    let retained = Command::new("/usr/bin/mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker_port.to_string(), "-C", "1", "-W", "5", "-F", "%r %p"])
        .args(["-t", "roomcam/nursery/availability"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&retained.stdout).trim(), "1 offline");

    // A crash: the kernel closes the socket, the broker sends the will.
    let mut device = roomcam_hearing(&url, "nursery", &microphone, Some(&config));
    wait_for_payload(&mut sub, "roomcam/nursery/availability", "online", 2, Duration::from_secs(20));
    device.wait_for_line("the second connection", Duration::from_secs(5), |l| l.contains("connected to"));
    unsafe_sigkill(&mut device);
    wait_for_payload(&mut sub, "roomcam/nursery/availability", "offline", 2, Duration::from_secs(10));
    assert!(
        broker.lines().iter().any(|l| l.contains("roomcam-nursery") && l.contains("closed its connection")),
        "the will, not a DISCONNECT: {:#?}",
        broker.lines()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGKILL (not `terminate`): nothing of roomcam's own runs.
fn unsafe_sigkill(device: &mut Proc) {
    let status = Command::new("kill").args(["-KILL", &device.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while device.is_running() {
        assert!(Instant::now() < deadline, "roomcam survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_broker_with_a_password_takes_the_url_s_user_and_refuses_a_wrong_one_with_one_log_line() {
    let (dir, microphone) = test_dir("mqtt-user");
    let user = ("roomcam", "s3cret:/@");
    let broker_port = free_port();
    let mut broker = mosquitto(&dir, broker_port, Some(user), "");
    let mut sub = subscribe(&mut broker, broker_port, Some(user));
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    // The password's reserved characters are percent-encoded in the URL.
    let good =
        config(&dir, "good.toml", &format!("mqtt = \"mqtt://roomcam:s3cret%3A%2F%40@127.0.0.1:{broker_port}\"\n"));
    let mut device = roomcam_hearing(&url, "nursery", &microphone, Some(&good));
    wait_for_payload(&mut sub, "roomcam/nursery/availability", "online", 1, Duration::from_secs(20));

    let bad = config(&dir, "bad.toml", &format!("mqtt = \"mqtt://roomcam:wrong@127.0.0.1:{broker_port}\"\n"));
    let mut refused = roomcam_hearing(&url, "hall", &microphone, Some(&bad));
    refused.wait_in_room();
    refused.wait_for_line("the refusal", Duration::from_secs(10), |l| l.contains("mqtt: room hall: cannot reach"));
    // Attempts at 0, 1, 3 and 7 s: several refusals, one line.
    let attempts = |broker: &Proc| broker.count_lines(|l| l.contains("disconnected, not authorised"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while attempts(&broker) < 3 {
        assert!(Instant::now() < deadline, "no retries:\n{}", broker.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(refused.count_lines(|l| l.contains("mqtt: room hall:")), 1, "{:#?}", refused.lines());
    assert!(refused.is_running() && device.is_running());
    assert!(messages(&sub, "roomcam/hall/availability").is_empty());
    assert!(!device.lines().iter().chain(&refused.lines()).any(|l| l.contains("s3cret") || l.contains("wrong")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mqtts_checks_the_broker_s_certificate_against_the_system_roots_ssl_cert_file_or_mqtt_ca() {
    let (dir, microphone) = test_dir("mqtts");
    let ca = test_ca(&dir);
    let (cert, key) = server_cert(&dir, &ca, "broker");
    let (plain_port, tls_port) = (free_port(), free_port());
    let tls = format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        dir.join("ca.pem").display(),
        cert.display(),
        key.display()
    );
    let mut broker = mosquitto(&dir, plain_port, None, &tls);
    let mut sub = subscribe(&mut broker, plain_port, None);
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let plain_config = config(&dir, "mqtts.toml", &format!("mqtt = \"mqtts://127.0.0.1:{tls_port}\"\n"));

    let mut untrusting = roomcam_hearing(&url, "hall", &microphone, Some(&plain_config));
    let refused =
        untrusting.wait_for_line("the unknown CA", Duration::from_secs(20), |l| l.contains("mqtt: room hall:"));
    assert!(refused.contains("cannot reach mqtts://127.0.0.1") && refused.contains("TLS"), "{refused}");

    let ca_file = dir.join("ca.pem");
    let _device =
        roomcam_hearing_env(&url, "nursery", &microphone, Some(&plain_config), &[("SSL_CERT_FILE", &ca_file)]);
    wait_for_payload(&mut sub, "roomcam/nursery/availability", "online", 1, Duration::from_secs(20));
    assert!(messages(&sub, "roomcam/hall/availability").is_empty());

    // Or the broker's CA in the config, the system's roots left as they are.
    let with_ca = config(
        &dir,
        "mqtts-ca.toml",
        &format!("mqtt = \"mqtts://127.0.0.1:{tls_port}\"\nmqtt-ca = \"{}\"\n", ca_file.display()),
    );
    let _trusting = roomcam_hearing(&url, "porch", &microphone, Some(&with_ca));
    wait_for_payload(&mut sub, "roomcam/porch/availability", "online", 1, Duration::from_secs(20));
    // A CA file that is not one: said at start, naming the file.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let bad = config(
        &dir,
        "mqtts-junk.toml",
        &format!("mqtt = \"mqtts://127.0.0.1:{tls_port}\"\nmqtt-ca = \"{}\"\n", junk.display()),
    );
    let mut refused = roomcam_hearing(&url, "attic", &microphone, Some(&bad));
    let said = refused.wait_for_line("the bad CA file", Duration::from_secs(20), |l| l.contains("mqtt: room attic:"));
    assert!(said.contains("junk.pem") && said.contains("no PEM certificate"), "{said}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_absent_broker_does_not_stop_the_device_and_is_used_once_it_is_there() {
    let (dir, microphone) = test_dir("mqtt-absent");
    let broker_port = free_port();
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let config = config(&dir, "mqtt.toml", &format!("mqtt = \"mqtt://127.0.0.1:{broker_port}\"\n"));
    let mut device = roomcam_hearing(&url, "nursery", &microphone, Some(&config));
    device.wait_in_room();
    device.wait_for_line("the broker's absence", Duration::from_secs(10), |l| {
        l.contains("mqtt: room nursery: cannot reach")
    });
    device.wait_for_line("the cry's alert", Duration::from_secs(30), |l| l.contains("sound alert:"));
    device.wait_for_line("the alert's end", Duration::from_secs(15), |l| l.contains("sound alert ended"));
    assert_eq!(device.count_lines(|l| l.contains("mqtt:")), 1, "one line for the outage: {:#?}", device.lines());

    let mut broker = mosquitto(&dir, broker_port, None, "");
    let mut sub = subscribe(&mut broker, broker_port, None);
    // The back-off is at most a minute; by now it is at 16 or 32 s.
    device.wait_for_line("the connection", Duration::from_secs(70), |l| l.contains("mqtt: room nursery: connected to"));
    wait_for_payload(&mut sub, "roomcam/nursery/availability", "online", 1, Duration::from_secs(10));
    // The state missed while away is the current one, not a replay.
    wait_for_payload(&mut sub, "roomcam/nursery/sound", "OFF", 1, Duration::from_secs(10));
    assert!(messages(&sub, "roomcam/nursery/sound").iter().all(|m| m.payload == "OFF"));
    assert!(device.is_running());
    std::fs::remove_dir_all(&dir).ok();
}

/// A "broker" that takes connections and never answers: the slowest there is.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_the_picture_while_the_broker_never_answers() {
    let (dir, microphone) = test_dir("mqtt-viewer");
    let broker_port = black_hole();
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let config = config(&dir, "mqtt.toml", &format!("mqtt = \"mqtt://127.0.0.1:{broker_port}\"\n"));
    let mut device = roomcam_hearing(&url, "nursery", &microphone, Some(&config));
    device.wait_in_room();
    let viewer = RoomViewer::join(&url, "nursery", ViewerOptions::default()).await;
    viewer.wait_frames(50, Duration::from_secs(30)).await;
    let timed_out = device.wait_for_line("the broker's silence", Duration::from_secs(15), |l| l.contains("mqtt:"));
    assert!(timed_out.contains("room nursery: cannot reach") && timed_out.contains("timeout"), "{timed_out}");
    // The first frames came while the device waited for a CONNACK that never
    // came; these come while it retries.
    let before = viewer.viewer.stats().frames_decoded;
    viewer.wait_frames(before + 25, Duration::from_secs(10)).await;
    assert_eq!(device.count_lines(|l| l.contains("mqtt:")), 1, "{:#?}", device.lines());
    viewer.leave().await;
    assert!(device.is_running());
    std::fs::remove_dir_all(&dir).ok();
}

fn webhook_device(name: &str, alerts: &str, url: &str, microphone: &str, dir: &Path) -> Proc {
    let config = config(dir, &format!("{name}.toml"), alerts);
    let mut device = roomcam_hearing(url, "nursery", microphone, Some(&config));
    device.wait_in_room();
    device
}

#[test]
fn the_webhook_gets_json_for_the_start_and_the_end_and_a_failed_first_attempt_is_retried() {
    let (dir, microphone) = test_dir("webhook-json");
    let hook = receiver(1);
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let device = webhook_device("json", &format!("webhook = \"{}\"\n", hook.url), &url, &microphone, &dir);
    let posts = hook.wait_for(3, Duration::from_secs(60), &device);
    for post in &posts {
        assert_eq!(post.path, "/roomcam/alerts");
        assert_eq!(post.header("content-type"), Some("application/json"));
    }
    assert_eq!(posts[0].body, posts[1].body, "the retry is the same alert");
    let (start, end) = (posts[1].json(), posts[2].json());
    assert_eq!((&start["event"], &start["room"]), (&"sound_start".into(), &"nursery".into()), "{start}");
    assert_eq!((&end["event"], &end["room"]), (&"sound_end".into(), &"nursery".into()), "{end}");
    for event in [&start, &end] {
        let level = event["level_db"].as_f64().unwrap_or_else(|| panic!("{event}"));
        assert!((-100.0..0.0).contains(&level), "{event}");
        assert_recent_rfc3339(event["at"].as_str().unwrap());
    }
    assert!(start["at"].as_str() <= end["at"].as_str());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.posts.lock().unwrap().len(), 3, "nothing more for the fan");
    assert_eq!(device.count_lines(|l| l.contains("webhook:")), 0, "{:#?}", device.lines());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_webhook_gets_ntfy_notifications_high_for_the_start_default_for_the_end() {
    let (dir, microphone) = test_dir("webhook-ntfy");
    let hook = receiver(0);
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let alerts = format!("webhook = \"{}\"\nwebhook-format = \"ntfy\"\n", hook.url);
    let device = webhook_device("ntfy", &alerts, &url, &microphone, &dir);
    let posts = hook.wait_for(2, Duration::from_secs(60), &device);
    let (start, end) = (&posts[0], &posts[1]);
    assert_eq!(start.header("priority"), Some("high"), "{start:?}");
    assert_eq!(start.header("title"), Some("Sound in nursery"), "{start:?}");
    assert!(
        start.body.starts_with("Sound in nursery: ") && start.body.contains("dB over the room's floor"),
        "{start:?}"
    );
    assert_eq!(end.header("priority"), Some("default"), "{end:?}");
    assert!(end.body.contains("quiet again"), "{end:?}");
    assert!(start.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{start:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_webhook_that_keeps_failing_is_tried_four_times_per_alert_and_logged_once_per_alert() {
    let (dir, microphone) = test_dir("webhook-down");
    let hook = receiver(usize::MAX);
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = webhook_device("down", &format!("webhook = \"{}\"\n", hook.url), &url, &microphone, &dir);
    device.wait_for_line("the alert given up", Duration::from_secs(45), |l| l.contains("failed after 4 attempts"));
    let posts = hook.wait_for(4, Duration::from_secs(1), &device);
    assert!(posts[..4].iter().all(|p| p.json()["event"] == "sound_start"), "{posts:#?}");
    let failed = device.wait_for_line("the failure", Duration::from_secs(1), |l| l.contains("webhook:"));
    assert!(failed.contains("room nursery") && failed.contains("500"), "{failed}");
    // The end is tried in its turn; the device goes on regardless.
    let posts = hook.wait_for(8, Duration::from_secs(30), &device);
    assert!(posts[4..8].iter().all(|p| p.json()["event"] == "sound_end"), "{posts:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while device.count_lines(|l| l.contains("failed after 4 attempts")) < 2 {
        assert!(Instant::now() < deadline, "the end's failure is not logged:\n{}", device.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(device.count_lines(|l| l.contains("webhook:")), 2, "{:#?}", device.lines());
    assert!(device.is_running());
    std::fs::remove_dir_all(&dir).ok();
}
