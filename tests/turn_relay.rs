//! TURN with a real coturn on loopback: the viewer may only use relayed
//! candidates (ICE transport policy `relay`), so media can reach it only
//! through coturn, with the long-term credentials roomcam was given.

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::time::Duration;

use common::{TurnAuth, coturn, free_port, roomcam_run, roomcam_serve};
use room_viewer::RoomViewer;
use roomcam::media::fixtures::{looks_like_test_pattern, read_stamp};
use viewer::ViewerOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_through_coturn_when_the_viewer_is_relay_only() {
    let turn_port = free_port();
    let turn = coturn(turn_port, TurnAuth::User { name: "roomcam", password: "turn-secret" });
    let turn_url = format!("turn:127.0.0.1:{turn_port}?transport=udp");

    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(
        &url,
        "turn",
        &["--ice-server", &turn_url, "--ice-username", "roomcam", "--ice-credential", "turn-secret"],
    );
    device.wait_in_room();

    let options = ViewerOptions {
        relay_only_via: Some((turn_url.clone(), "roomcam".into(), "turn-secret".into())),
        ..ViewerOptions::default()
    };
    let viewer = RoomViewer::join(&url, "turn", options).await;
    let stats = viewer.wait_frames(30, Duration::from_secs(30)).await;
    let stamps: Vec<u32> = stats.recent_frames.iter().filter_map(read_stamp).map(|s| s.frame_number).collect();
    assert!(stamps.windows(2).all(|w| w[1] > w[0]) && stamps.len() >= 20, "stamps: {stamps:?}");
    assert!(looks_like_test_pattern(stats.last_frame.as_ref().unwrap()));
    // coturn really relayed: it logs the allocation and the permission for the device.
    let log = turn.lines().join("\n");
    assert!(log.contains("ALLOCATE") && log.contains("success"), "no TURN allocation in coturn's log:\n{log}");
    assert!(log.contains("CREATE_PERMISSION") || log.contains("CHANNEL_BIND"), "no TURN permission:\n{log}");
    viewer.vanish().await;
}
