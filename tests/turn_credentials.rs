//! Short-lived TURN credentials (coturn's REST convention) with a real
//! coturn configured `use-auth-secret`: roomcam's server mints them for
//! each admitted member (the `turn` event, and `/config.json` with the
//! room's token as a Bearer token), relay-only peers get media through
//! coturn with them, coturn refuses forged and expired ones, fresh ones
//! arrive before expiry and carry new connections and live ones, and no
//! credential is ever logged.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::page;
use common::{Member, Proc, TurnAuth, coturn, free_port, roomcam_run, roomcam_serve};
use roomcam::config::ProtocolChoice;
use roomcam::signaling::client::ClientEvent;
use roomcam::signaling::protocol::RoomEvent;
use roomcam::signaling::turn_credentials::{TurnCredentials, password};
use serde_json::{Value, json};

const SECRET: &str = "coturn-static-auth-secret";
const ROOM: &str = "nursery";
const ROOM_TOKEN: &str = "room-token-1";

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcam-turn-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn turn_url(turn_port: u16) -> String {
    format!("turn:127.0.0.1:{turn_port}?transport=udp")
}

/// `roomcam serve` minting credentials for coturn on `turn_port`, valid
/// `ttl` seconds; room `nursery` needs its token, room `open` none.
fn serve_minting(dir: &std::path::Path, turn_port: u16, ttl: u64) -> (Proc, u16) {
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ncapacity = 4\nviewer-ice-servers = [{{ urls = [\"stun:127.0.0.1:{turn_port}\"] }}]\n\
             turn-secret = \"{SECRET}\"\nturn-urls = [\"{}\"]\nturn-ttl = {ttl}\n\n\
             [[server.rooms]]\nname = \"{ROOM}\"\ntoken = \"{ROOM_TOKEN}\"\n",
            turn_url(turn_port)
        ),
    )
    .unwrap();
    let port = free_port();
    (roomcam_serve(port, Some(&config)), port)
}

/// A relay-only device (`ice-transport-policy = "relay"`, no ICE servers of
/// its own) in room `nursery`.
fn relay_only_device(dir: &std::path::Path, url: &str) -> Proc {
    let config = dir.join("device.toml");
    std::fs::write(&config, "[webrtc]\nice-transport-policy = \"relay\"\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut device = roomcam_run(url, ROOM, &["--config", &config, "--token", ROOM_TOKEN]);
    device.wait_in_room();
    device
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`: the status and the body.
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to roomcam serve");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP body in {response:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// The TURN entries of a /config.json answer (those with a credential).
fn minted_in(config_json: &str) -> Vec<Value> {
    let config: Value = serde_json::from_str(config_json).unwrap_or_else(|e| panic!("{config_json:?}: {e}"));
    config["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .filter(|s| s.get("credential").is_some())
        .cloned()
        .collect()
}

fn config_json(port: u16, query: &str, bearer: Option<&str>) -> Vec<Value> {
    let header = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
    let (status, body) = http_get(port, &format!("/config.json{query}"), &headers);
    assert_eq!(status, 200, "{body}");
    minted_in(&body)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A TURN allocation by coturn's own test client; true if coturn granted it.
fn allocation_succeeds(turn_port: u16, username: &str, credential: &str) -> bool {
    assert!(
        std::path::Path::new("/usr/bin/turnutils_uclient").exists(),
        "turnutils_uclient (package coturn) is needed"
    );
    let output = Command::new("/usr/bin/turnutils_uclient")
        .args(["-y", "-c", "-n", "1", "-m", "1", "-u", username, "-w", credential, "-p"])
        .arg(turn_port.to_string())
        .arg("127.0.0.1")
        .output()
        .expect("run turnutils_uclient");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let refused = text.contains("Cannot complete Allocation");
    assert_eq!(output.status.success(), !refused, "turnutils_uclient's verdict is unclear:\n{text}");
    output.status.success()
}

/// The usernames coturn saw (`user <NAME>` in its log) that minted ones look like.
fn usernames_coturn_saw(turn: &Proc) -> Vec<String> {
    let mut names: Vec<String> = turn
        .lines()
        .iter()
        .filter_map(|l| l.split("user <").nth(1).and_then(|rest| rest.split('>').next()).map(str::to_owned))
        .filter(|name| name.split(':').count() >= 3)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Neither the secret nor any credential made from it for `usernames` is in these logs.
fn assert_no_credential_logged(usernames: &[String], logs: &[&Proc]) {
    for proc in logs {
        let text = proc.lines().join("\n");
        assert!(!text.contains(SECRET), "{} logged the TURN secret", proc.name);
        assert!(!text.contains(ROOM_TOKEN), "{} logged the room token", proc.name);
        for name in usernames {
            let credential = password(SECRET, name);
            assert!(!text.contains(&credential), "{} logged the credential of {name}", proc.name);
        }
    }
}

/// Runs the page scenario to its end; returns the JSON report.
fn check_viewer(url: &str, args: &[&str]) -> Value {
    common::page::check_viewer_succeeds(None, url, args, String::new)
}

fn assert_relayed(report: &Value) {
    let ice = &report["ice"];
    assert_eq!(ice["local"]["type"], "relay", "the page's path is not relayed: {ice}");
    assert_eq!(ice["remote"]["type"], "relay", "the device's side of the path is not relayed: {ice}");
}

#[test]
fn relay_only_page_and_device_get_media_through_coturn_with_minted_credentials() {
    let dir = test_dir("media");
    let turn_port = free_port();
    let turn = coturn(turn_port, TurnAuth::Secret(SECRET));
    let (server, port) = serve_minting(&dir, turn_port, 86_400);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = relay_only_device(&dir, &url);
    device.wait_for_line("the server's TURN credentials", Duration::from_secs(10), |l| {
        l.contains("TURN credentials from the server")
    });

    let shot = page::artifact("turn-relay-page.png").to_string_lossy().into_owned();
    let report = check_viewer(
        &format!("{url}/?room={ROOM}&token={ROOM_TOKEN}&relay=1"),
        &["--expect-bars", "--expect-audio", "--screenshot", &shot],
    );
    eprintln!("page report: {report}");
    assert_relayed(&report);

    // coturn granted allocations to both members, each under its own
    // minted name "<expiry>:nursery:<member id>", expiring a day from now.
    let names = usernames_coturn_saw(&turn);
    let log = turn.lines().join("\n");
    for member in ["device-", "viewer-"] {
        let name = names
            .iter()
            .find(|n| n.contains(&format!(":{ROOM}:{member}")))
            .unwrap_or_else(|| panic!("coturn saw no {member} credential: {names:?}\n{log}"));
        let expiry: u64 = name.split(':').next().unwrap().parse().unwrap();
        assert!(expiry.abs_diff(unix_now() + 86_400) < 120, "{name}: expiry not a day away");
    }
    assert!(log.contains("ALLOCATE") && log.contains("success"), "no TURN allocation in coturn's log:\n{log}");
    assert!(log.contains("CREATE_PERMISSION") || log.contains("CHANNEL_BIND"), "no TURN permission:\n{log}");
    assert!(device.is_running());
    assert_no_credential_logged(&names, &[&server, &device]);
}

#[test]
fn coturn_refuses_forged_and_expired_credentials() {
    let dir = test_dir("refused");
    let turn_port = free_port();
    let turn = coturn(turn_port, TurnAuth::Secret(SECRET));
    let (server, port) = serve_minting(&dir, turn_port, 3);

    let minted = config_json(port, &format!("?room={ROOM}"), Some(ROOM_TOKEN));
    assert_eq!(minted.len(), 1, "{minted:?}");
    let username = minted[0]["username"].as_str().unwrap().to_owned();
    let credential = minted[0]["credential"].as_str().unwrap().to_owned();
    assert!(allocation_succeeds(turn_port, &username, &credential), "coturn refused fresh credentials");

    // A forged password for the same name, and a name whose expiry was
    // moved a day on with the old password.
    let mut forged = credential.clone().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    assert!(!allocation_succeeds(turn_port, &username, &String::from_utf8(forged).unwrap()));
    let (expiry, rest) = username.split_once(':').unwrap();
    let extended = format!("{}:{rest}", expiry.parse::<u64>().unwrap() + 86_400);
    assert!(!allocation_succeeds(turn_port, &extended, &credential));

    // The genuine credentials, once their 3 s are over.
    let expiry: u64 = expiry.parse().unwrap();
    while unix_now() <= expiry + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!allocation_succeeds(turn_port, &username, &credential), "coturn accepted expired credentials");
    let log = turn.lines().join("\n");
    assert!(log.contains("401"), "coturn's log shows no refusal:\n{log}");
    assert_no_credential_logged(&[username], &[&server]);
}

#[test]
fn config_json_gives_credentials_only_with_the_bearer_token() {
    let dir = test_dir("config-json");
    let turn_port = free_port();
    let (server, port) = serve_minting(&dir, turn_port, 600);
    let query = format!("?room={ROOM}");

    // The static STUN server always; minted ones never without the token,
    // nor from the query string, nor with a wrong one, nor for an open room.
    let (_, body) = http_get(port, &format!("/config.json{query}"), &[]);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["iceServers"], json!([{ "urls": [format!("stun:127.0.0.1:{turn_port}")] }]));
    assert!(config_json(port, "", None).is_empty());
    assert!(config_json(port, &query, None).is_empty());
    assert!(config_json(port, &format!("{query}&token={ROOM_TOKEN}"), None).is_empty());
    assert!(config_json(port, &query, Some("wrong")).is_empty());
    assert!(config_json(port, "?room=open", Some(ROOM_TOKEN)).is_empty());
    let (_, body) = http_get(port, &format!("/config.json{query}"), &[("Authorization", ROOM_TOKEN)]);
    assert!(minted_in(&body).is_empty(), "a token without the Bearer scheme was accepted");

    let minted = config_json(port, &format!("{query}&member=page-1"), Some(ROOM_TOKEN));
    assert_eq!(minted.len(), 1, "{minted:?}");
    let entry = &minted[0];
    assert_eq!(entry["urls"], json!([turn_url(turn_port)]));
    assert_eq!(entry["ttl"], 600);
    let username = entry["username"].as_str().unwrap();
    let (expiry, rest) = username.split_once(':').unwrap();
    assert_eq!(rest, format!("{ROOM}:page-1"));
    assert!(expiry.parse::<u64>().unwrap().abs_diff(unix_now() + 600) <= 2, "{username}");
    assert_eq!(entry["credential"].as_str().unwrap(), password(SECRET, username));
    assert_no_credential_logged(&[username.to_owned()], &[&server]);
}

fn turn_event(event: &ClientEvent) -> Option<(String, TurnCredentials)> {
    match event {
        ClientEvent::Turn { room, credentials } => Some((room.clone(), credentials.clone())),
        _ => None,
    }
}

async fn turn_within(member: &mut Member, within: Duration) -> bool {
    let heard = async {
        while let Some(event) = member.events.recv().await {
            if turn_event(&event).is_some() {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(within, heard).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_event_follows_joined_and_is_renewed_before_expiry() {
    let dir = test_dir("event");
    let turn_port = free_port();
    let (server, port) = serve_minting(&dir, turn_port, 4);
    let url = format!("http://127.0.0.1:{port}");

    // Refused (no token): no credentials.
    let mut stranger = Member::connect(&url, ProtocolChoice::Auto);
    stranger.expect_connected().await;
    stranger.emit("join", vec![json!(ROOM)]);
    stranger.expect_room("unauthorized", |r| matches!(r, RoomEvent::Unauthorized { .. })).await;

    let mut member = Member::connect(&url, ProtocolChoice::Eio3);
    member.expect_connected().await;
    member.emit("join", vec![json!(ROOM), json!({ "token": ROOM_TOKEN, "member": "m-1" })]);
    // `joined` first, then `turn`, before anything else.
    let first = member.expect("joined", Duration::from_secs(10), |e| Some(e.clone())).await;
    assert_eq!(first, ClientEvent::Room(RoomEvent::Joined { room: ROOM.into(), id: "m-1".into() }));
    let next = member.expect("turn", Duration::from_secs(10), |e| Some(e.clone())).await;
    let (room, first) = turn_event(&next).unwrap_or_else(|| panic!("not the turn event: {next:?}"));
    assert_eq!(room, ROOM);
    assert_eq!(first.urls, [turn_url(turn_port)]);
    assert_eq!(first.ttl, 4);
    assert!(first.username.ends_with(&format!(":{ROOM}:m-1")), "{first:?}");
    assert_eq!(first.credential, password(SECRET, &first.username));
    let joined_at = std::time::Instant::now();

    // Fresh ones at 80 % of the 4 s, twice, each expiring later.
    let mut previous = first;
    for renewal in 1..=2u32 {
        let (_, fresh) = member.expect("renewed credentials", Duration::from_secs(8), turn_event).await;
        let expiry = |c: &TurnCredentials| c.username.split(':').next().unwrap().parse::<u64>().unwrap();
        assert!(expiry(&fresh) > expiry(&previous), "renewal {renewal} expires no later: {fresh:?}");
        assert_eq!(fresh.credential, password(SECRET, &fresh.username));
        let elapsed = joined_at.elapsed();
        assert!(elapsed < Duration::from_secs(4 * u64::from(renewal)), "renewal {renewal} after the expiry");
        previous = fresh;
    }
    // After `leave`, no more.
    member.emit("leave", vec![json!(ROOM)]);
    member.expect_room("leaved", |r| matches!(r, RoomEvent::Left { .. })).await;
    assert!(!turn_within(&mut member, Duration::from_secs(5)).await, "credentials after leaving");
    assert!(!turn_within(&mut stranger, Duration::from_millis(200)).await, "a refused member got credentials");
    member.close();
    stranger.close();
    let log = server.lines().join("\n");
    assert_eq!(server.count_lines(|l| l.contains("TURN credentials renewed")), 2, "{log}");
}

/// The stretch of issue 10: credentials that live 4 s, a device whose
/// first ones expired before the viewer came (so only renewed ones can
/// carry the new call through coturn), and a call that then lives through
/// several renewals, the device restarting ICE with each: the same
/// connection, relayed, video flowing at the end.
#[test]
fn renewed_credentials_carry_new_viewers_and_live_relayed_calls() {
    let dir = test_dir("renewal");
    let turn_port = free_port();
    let turn = coturn(turn_port, TurnAuth::Secret(SECRET));
    let (server, port) = serve_minting(&dir, turn_port, 4);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = relay_only_device(&dir, &url);
    device.wait_for_line("a renewal", Duration::from_secs(15), |l| l.contains("TURN credentials from the server"));
    // Its first credentials are expired by now.
    std::thread::sleep(Duration::from_secs(5));
    assert!(device.count_lines(|l| l.contains("TURN credentials from the server")) >= 2);

    let report = check_viewer(
        &format!("{url}/?room={ROOM}&token={ROOM_TOKEN}&relay=1"),
        &["--expect-video", "--keep-watching", "12", "--timeout", "40"],
    );
    eprintln!("page report: {report}");
    assert_relayed(&report);
    let watch = &report["watch"];
    assert_eq!(watch["pcChanges"], 0, "the call was replaced instead of kept: {watch}");
    assert_eq!(watch["counterResets"], 0, "{watch}");
    let restarts = device.count_lines(|l| l.contains("ICE restart with the new TURN credentials"));
    assert!(restarts >= 2, "the device restarted ICE {restarts} times over 12 s of 4 s credentials");
    // The restarted paths were allocated with later credentials than the first call's.
    let device_names: Vec<String> =
        usernames_coturn_saw(&turn).into_iter().filter(|n| n.contains(&format!(":{ROOM}:device-"))).collect();
    assert!(device_names.len() >= 3, "coturn saw too few device credentials: {device_names:?}");
    assert_no_credential_logged(&usernames_coturn_saw(&turn), &[&server, &device]);
}
