//! roomcam's signaling client against REAL socket.io 2.x and 4.x servers
//! (the classic room server in tests/classic, run by Node) and against
//! roomcam's own server: join, otherjoin, full, relay, bye, and reconnect
//! after the server restarts.

mod common;

use std::time::Duration;

use common::{Member, classic_server, free_port};
use roomcam::config::{ProtocolChoice, RoomConfig, ServerConfig};
use roomcam::peer::SdpKind;
use roomcam::signaling::client::ClientEvent;
use roomcam::signaling::codec::EngineIoVersion;
use roomcam::signaling::protocol::{RoomEvent, SignalData};
use serde_json::json;

fn offer_json() -> serde_json::Value {
    json!({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"})
}

/// The classic scenario, the same for every server: `from` tells whether the
/// server names senders (roomcam's own does, classic ones do not).
async fn room_scenario(url: &str, protocol: ProtocolChoice, expected: EngineIoVersion, names_senders: bool) {
    // One room per run: the previous run's members may still be disconnecting.
    let room_name = format!("interop-{protocol:?}");
    let room = room_name.as_str();
    let mut device = Member::connect(url, protocol);
    assert_eq!(device.expect_connected().await, expected);
    let device_id = device.join(room).await;

    let mut viewer = Member::connect(url, protocol);
    viewer.expect_connected().await;
    let viewer_id = viewer.join(room).await;
    assert_ne!(device_id, viewer_id);
    let joined = device.expect_room("otherjoin", |r| matches!(r, RoomEvent::OtherJoined { .. })).await;
    assert_eq!(joined, RoomEvent::OtherJoined { room: room.into(), id: viewer_id.clone() });

    // Relay, both directions, in the classic data shapes.
    device.emit("message", vec![room.into(), offer_json()]);
    let relayed = viewer.expect_room("relayed offer", |r| matches!(r, RoomEvent::Message { .. })).await;
    let RoomEvent::Message { data, from, .. } = relayed else { unreachable!() };
    assert_eq!(
        data,
        SignalData::Description { kind: SdpKind::Offer, sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into() }
    );
    assert_eq!(from, names_senders.then(|| device_id.clone()));
    viewer.emit(
        "message",
        vec![room.into(), json!({"type":"candidate","label":0,"id":"0","candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"})],
    );
    let relayed = device.expect_room("relayed candidate", |r| matches!(r, RoomEvent::Message { .. })).await;
    assert!(matches!(relayed, RoomEvent::Message { data: SignalData::Candidate(_), .. }), "{relayed:?}");

    // A third member is refused and is not in the room.
    let mut third = Member::connect(url, protocol);
    third.expect_connected().await;
    third.emit("join", vec![room.into()]);
    third.expect_room("full", |r| matches!(r, RoomEvent::Full { .. })).await;
    if names_senders {
        // Classic servers relay for anyone who names the room; roomcam's only for members.
        third.emit("message", vec![room.into(), offer_json()]);
        device
            .expect_no_room("message from a refused member", Duration::from_millis(500), |r| {
                matches!(r, RoomEvent::Message { .. })
            })
            .await;
    }
    third.close();

    // Leaving: the other gets `bye`, the leaver `leaved`.
    viewer.emit("leave", vec![room.into()]);
    viewer.expect_room("leaved", |r| matches!(r, RoomEvent::Left { .. })).await;
    let bye = device.expect_room("bye", |r| matches!(r, RoomEvent::Bye { .. })).await;
    assert_eq!(bye, RoomEvent::Bye { room: room.into(), id: viewer_id });

    // A malformed message is dropped by the client, which keeps working.
    viewer.join(room).await;
    device.expect_room("otherjoin again", |r| matches!(r, RoomEvent::OtherJoined { .. })).await;
    viewer.emit("message", vec![room.into(), json!({"no-type": true})]);
    viewer.emit("message", vec![room.into(), json!("not json at all")]);
    viewer.emit("message", vec![room.into(), offer_json()]);
    let next = device.expect_room("the next good message", |r| matches!(r, RoomEvent::Message { .. })).await;
    assert!(matches!(next, RoomEvent::Message { data: SignalData::Description { .. }, .. }));
    viewer.close();
    device.close();
}

/// Kill the server under a joined client; start it again; the client must
/// report the loss, reconnect by itself within the backoff cap, and work.
async fn restart_scenario(version: u8) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = classic_server(version, port, &[]);
    let mut device = Member::connect(&url, ProtocolChoice::Auto);
    device.expect_connected().await;
    device.join("restart").await;

    server.kill();
    device
        .expect("disconnect", Duration::from_secs(10), |e| matches!(e, ClientEvent::Disconnected { .. }).then_some(()))
        .await;
    let _server = classic_server(version, port, &[]);
    device.expect_connected().await;
    device.join("restart").await;
    device.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_socketio_4_server() {
    let port = free_port();
    let _server = classic_server(4, port, &[]);
    let url = format!("http://127.0.0.1:{port}");
    room_scenario(&url, ProtocolChoice::Auto, EngineIoVersion::V4, false).await;
    room_scenario(&url, ProtocolChoice::Eio4, EngineIoVersion::V4, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_socketio_2_server() {
    let port = free_port();
    let _server = classic_server(2, port, &[]);
    let url = format!("http://127.0.0.1:{port}");
    room_scenario(&url, ProtocolChoice::Auto, EngineIoVersion::V3, false).await;
    room_scenario(&url, ProtocolChoice::Eio3, EngineIoVersion::V3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_socketio_4_server_restart() {
    restart_scenario(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_socketio_2_server_restart() {
    restart_scenario(2).await;
}

/// socket.io 2 with short pings: a server that stops answering pings (here:
/// SIGSTOP, the process freezes with its socket open) must be detected as
/// dead by the client's own ping timer, then reconnected after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_is_detected_by_missed_pings() {
    for version in [2u8, 4] {
        let port = free_port();
        let server = classic_server(version, port, &["--ping-interval", "500", "--ping-timeout", "500"]);
        let mut device = Member::connect(&format!("http://127.0.0.1:{port}"), ProtocolChoice::Auto);
        device.expect_connected().await;
        let pid = server.pid().to_string();
        std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        let reason = device
            .expect("ping timeout", Duration::from_secs(5), |e| match e {
                ClientEvent::Disconnected { .. } => Some(()),
                _ => None,
            })
            .await;
        std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
        let _ = reason;
        device.expect_connected().await;
        device.close();
    }
}

async fn own_server(config: ServerConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = roomcam::signaling::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        roomcam::signaling::server::serve(listener, &config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roomcams_own_server_both_engine_io_versions() {
    let (url, _stop) = own_server(ServerConfig::default()).await;
    room_scenario(&url, ProtocolChoice::Auto, EngineIoVersion::V4, true).await;
    room_scenario(&url, ProtocolChoice::Eio3, EngineIoVersion::V3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_server_tokens_capacity_addressing_and_bye_on_disconnect() {
    let config = ServerConfig {
        rooms: vec![RoomConfig { name: "vault".into(), token: Some("s3cret".into()), capacity: Some(3) }],
        ..ServerConfig::default()
    };
    let (url, _stop) = own_server(config).await;

    let mut device = Member::connect(&url, ProtocolChoice::Auto);
    device.expect_connected().await;
    device.emit("join", vec!["vault".into()]);
    device.expect_room("unauthorized", |r| matches!(r, RoomEvent::Unauthorized { .. })).await;
    device.emit("join", vec!["vault".into(), json!({"token": "wrong"})]);
    device.expect_room("unauthorized", |r| matches!(r, RoomEvent::Unauthorized { .. })).await;
    device.emit("join", vec!["vault".into(), json!({"token": "s3cret"})]);
    device.expect_room("joined", |r| matches!(r, RoomEvent::Joined { .. })).await;

    let mut viewers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut viewer = Member::connect(&url, ProtocolChoice::Auto);
        viewer.expect_connected().await;
        viewer.emit("join", vec!["vault".into(), json!({"token": "s3cret"})]);
        let RoomEvent::Joined { id, .. } =
            viewer.expect_room("joined", |r| matches!(r, RoomEvent::Joined { .. })).await
        else {
            unreachable!()
        };
        device.expect_room("otherjoin", |r| matches!(r, RoomEvent::OtherJoined { .. })).await;
        ids.push(id);
        viewers.push(viewer);
    }
    // Capacity 3: a fourth is refused.
    let mut fourth = Member::connect(&url, ProtocolChoice::Auto);
    fourth.expect_connected().await;
    fourth.emit("join", vec!["vault".into(), json!({"token": "s3cret"})]);
    fourth.expect_room("full", |r| matches!(r, RoomEvent::Full { .. })).await;

    // `to` reaches only the named viewer.
    device.emit("message", vec!["vault".into(), offer_json(), json!(ids[1])]);
    viewers[1].expect_room("addressed offer", |r| matches!(r, RoomEvent::Message { .. })).await;
    viewers[0]
        .expect_no_room("offer meant for the other viewer", Duration::from_millis(500), |r| {
            matches!(r, RoomEvent::Message { .. })
        })
        .await;

    // A viewer that just disconnects gets a `bye` (roomcam's extension).
    let gone = viewers.remove(0);
    gone.close();
    let bye = device.expect_room("bye on disconnect", |r| matches!(r, RoomEvent::Bye { .. })).await;
    assert_eq!(bye, RoomEvent::Bye { room: "vault".into(), id: ids[0].clone() });
}

/// Garbage on the wire must not take the server down for anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_server_survives_garbage() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (url, _stop) = own_server(ServerConfig::default()).await;
    let ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket";
    let (mut raw, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.unwrap();
    for frame in [
        "40",
        "42",
        "42[",
        "42[1]",
        "42[\"join\"]",
        "42[\"join\",5]",
        "42[\"join\",{\"a\":1}]",
        "42[\"message\"]",
        "42[\"message\",\"r\"]",
        "42[\"message\",\"nope\",{},7]",
        "42[\"leave\"]",
        "4x",
        "9",
        "",
        "451-[\"join\",{\"_placeholder\":true,\"num\":0}]",
    ] {
        let _ = raw.send(Message::text(frame)).await;
    }
    let _ = raw.send(Message::binary(vec![0xff, 0, 1])).await;
    drop(raw);
    let mut device = Member::connect(&url, ProtocolChoice::Auto);
    device.expect_connected().await;
    device.join("after-garbage").await;
    device.close();
}

/// Viewers come and go many times in a row; every one must be admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_join_leave_cycles_on_own_server() {
    let (url, _stop) = own_server(ServerConfig::default()).await;
    let mut device = Member::connect(&url, ProtocolChoice::Auto);
    device.expect_connected().await;
    device.join("cycles").await;
    for _ in 0..30 {
        let mut viewer = Member::connect(&url, ProtocolChoice::Auto);
        viewer.expect_connected().await;
        viewer.join("cycles").await;
        device.expect_room("otherjoin", |r| matches!(r, RoomEvent::OtherJoined { .. })).await;
        viewer.emit("leave", vec!["cycles".into()]);
        device.expect_room("bye", |r| matches!(r, RoomEvent::Bye { .. })).await;
        viewer.close();
    }
}

/// Socket.io delivers one socket's events in order, and signaling relies on
/// it: a candidate relayed ahead of its offer is dropped by the device ("for
/// no peer"), and a message sent right after `join` must find its sender in
/// the room. Big offers and small candidates alternate, so a server that
/// handled them concurrently would reorder them (socketioxide did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_server_relays_each_members_events_in_order() {
    let (url, _stop) = own_server(ServerConfig::default()).await;
    let mut device = Member::connect(&url, ProtocolChoice::Auto);
    device.expect_connected().await;
    device.join("order").await;
    let mut viewer = Member::connect(&url, ProtocolChoice::Auto);
    viewer.expect_connected().await;
    // No wait for `joined`: the first offer follows the join at once.
    viewer.emit("join", vec!["order".into()]);
    let padding = "a=x-padding:".to_owned() + &"p".repeat(40_000) + "\r\n";
    const SENT: u32 = 120;
    for n in 0..SENT {
        let data = if n % 2 == 0 {
            json!({"type": "offer", "sdp": format!("v=0\r\no=- {n} 1 IN IP4 127.0.0.1\r\n{padding}")})
        } else {
            json!({"type":"candidate","label":0,"id":"0","candidate":format!("candidate:{n} 1 udp 2122260223 127.0.0.1 50000 typ host")})
        };
        viewer.emit("message", vec!["order".into(), data]);
    }
    let mut received = Vec::new();
    while received.len() < SENT as usize {
        let RoomEvent::Message { data, .. } =
            device.expect_room("a relayed message", |r| matches!(r, RoomEvent::Message { .. })).await
        else {
            unreachable!()
        };
        let n = match data {
            SignalData::Description { sdp, .. } => sdp.split(' ').nth(1).map(str::to_owned),
            SignalData::Candidate(c) => c.candidate.split([':', ' ']).nth(1).map(str::to_owned),
            SignalData::Bye => None,
        };
        received.push(n.and_then(|n| n.parse::<u32>().ok()).expect("numbered message"));
    }
    assert_eq!(received, (0..SENT).collect::<Vec<_>>(), "relayed out of order");
}
