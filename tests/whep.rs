//! WHEP on `roomcam serve` (issue 13, point 4), against the real binaries:
//! a third-party player (the npm `whip-whep` client in headless Chromium,
//! on another origin) decodes the device's video and hears its audio, then
//! DELETEs its session; a webrtc-rs player POSTs, trickles its candidates
//! by PATCH and decodes; and what WHEP must refuse is refused with the
//! right status and a reason: no camera (404), a bad or missing token
//! (401), bad SDP (400), not SDP (415), a full room (503, Retry-After).

mod common;
#[path = "support/viewer.rs"]
mod viewer;

use std::process::Command;
use std::time::Duration;

use common::{free_port, repo_root, roomcam_run, roomcam_serve};
use roomcam::peer::SdpKind;
use viewer::{Viewer, ViewerOptions, ViewerSignal};

/// Runs tests/browser/whep-viewer.mjs; its JSON report.
fn whep_player(url: &str, extra: &[&str]) -> common::page::ViewerRun {
    let mut command = Command::new("node");
    command.arg(repo_root().join("tests/browser/whep-viewer.mjs")).args(["--url", url, "--timeout", "30"]).args(extra);
    common::page::run_driver(&mut command, "whep-viewer.mjs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_player_in_chromium_watches_then_deletes_its_session() {
    let port = free_port();
    let mut server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "porch", &[]);
    device.wait_in_room();

    let run = whep_player(&format!("{url}/whep/porch"), &["--delete"]);
    let report = run.report;
    assert!(run.ok, "WHEP player: {report}\n{}", run.stderr);
    eprintln!("whep: Chromium's whip-whep player: {report}");
    assert!(report["video"]["framesDecoded"].as_u64().unwrap() >= 30);
    assert_eq!(report["deleteStatus"], 200);
    server.wait_for_line("the session deleted", Duration::from_secs(5), |l| l.contains("its WHEP session was deleted"));
    device.wait_for_line("the WHEP peer closed", Duration::from_secs(10), |l| {
        l.contains("peer whep-") && l.contains("closed, ready for the next viewer")
    });
}

/// A webrtc-rs player: its offer (no candidates in it: it trickles them).
async fn player_offer() -> (Viewer, tokio::sync::mpsc::UnboundedReceiver<ViewerSignal>, String) {
    let (player, mut signals) = Viewer::new(ViewerOptions::default()).await.expect("viewer");
    player.create_offer().await.expect("offer");
    let offer = loop {
        match tokio::time::timeout(Duration::from_secs(10), signals.recv()).await.expect("the player's offer") {
            Some(ViewerSignal::Description { kind: SdpKind::Offer, sdp }) => break sdp,
            Some(_) => continue,
            None => panic!("the player stopped"),
        }
    };
    (player, signals, offer)
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>, sdp: &str) -> reqwest::Response {
    let mut request = client.post(url).header("content-type", "application/sdp").body(sdp.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_answers_with_every_candidate_and_refuses_what_it_cannot_serve() {
    let port = free_port();
    let config = common::temp_file(
        "whep",
        "serve.toml",
        "[[server.rooms]]\nname = \"porch\"\ntoken = \"s3cret\"\ncapacity = 2\n",
    );
    let mut server = roomcam_serve(port, Some(&config));
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let endpoint = format!("{url}/whep/porch");
    let (player, mut signals, offer) = player_offer().await;

    // No camera in the room yet.
    let response = post(&client, &endpoint, Some("s3cret"), &offer).await;
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("no camera is connected in room porch"));

    let mut device = roomcam_run(&url, "porch", &["--token", "s3cret"]);
    device.wait_in_room();

    // The CORS preflight a player on another origin sends first.
    let preflight = client
        .request(reqwest::Method::OPTIONS, &endpoint)
        .header("origin", "http://player.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let allowed = |name: &str| preflight.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(allowed("access-control-allow-origin"), "*");
    assert!(allowed("access-control-allow-headers").contains("Authorization"));
    assert!(allowed("access-control-expose-headers").contains("Location"));

    for token in [None, Some("wrong")] {
        let response = post(&client, &endpoint, token, &offer).await;
        assert_eq!(response.status(), 401, "token {token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert!(response.text().await.unwrap().contains("needs its token"));
    }
    let response = post(&client, &endpoint, Some("s3cret"), "v=0\r\nthis is not SDP\r\n").await;
    assert_eq!(response.status(), 400);
    let why = response.text().await.unwrap();
    assert!(why.starts_with("not a usable SDP offer"), "{why}");
    let response = client.post(&endpoint).bearer_auth("s3cret").body(offer.clone()).send().await.unwrap();
    assert_eq!(response.status(), 415, "an offer without Content-Type: application/sdp");

    // The real offer: 201, the answer with the device's candidates in it.
    let response = post(&client, &endpoint, Some("s3cret"), &offer).await;
    assert_eq!(response.status(), 201, "{:?}", response.headers());
    assert_eq!(response.headers()["content-type"], "application/sdp");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/whep/porch/whep-"), "{location}");
    let answer = response.text().await.unwrap();
    assert!(answer.contains("a=candidate:"), "the device gathered before answering:\n{answer}");
    player.set_remote_description(SdpKind::Answer, answer).await.expect("the answer");
    // Its candidates by PATCH (trickle-ice-sdpfrag), as a WHEP player sends them.
    let session = format!("{url}{location}");
    let mut patched = 0;
    while let Ok(Some(signal)) = tokio::time::timeout(Duration::from_millis(500), signals.recv()).await {
        if let ViewerSignal::Candidate(candidate) = signal {
            let fragment = format!(
                "a=ice-ufrag:x\r\na=ice-pwd:y\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{}\r\na={}\r\n",
                candidate.sdp_mid.clone().unwrap_or_else(|| "0".into()),
                candidate.candidate
            );
            let response = client
                .patch(&session)
                .header("content-type", "application/trickle-ice-sdpfrag")
                .body(fragment)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 204, "PATCH");
            patched += 1;
        }
    }
    assert!(patched > 0, "the player trickled no candidate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while player.stats().frames_decoded < 30 {
        assert!(tokio::time::Instant::now() < deadline, "WHEP player decoded {:?}", player.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(player.stats().audio_packets > 0, "no audio to the WHEP player");

    // Device + this player fill a room for two.
    let (_other, _other_signals, other_offer) = player_offer().await;
    let response = post(&client, &endpoint, Some("s3cret"), &other_offer).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "10");
    assert!(response.text().await.unwrap().contains("room porch is full"));

    // An ICE restart by PATCH is not offered; DELETE frees the place.
    let restart = client.patch(&session).header("if-match", "*").body("a=ice-ufrag:z\r\n").send().await.unwrap();
    assert_eq!(restart.status(), 405);
    assert_eq!(client.delete(&session).send().await.unwrap().status(), 200);
    assert_eq!(client.delete(&session).send().await.unwrap().status(), 404, "already gone");
    device.wait_for_line("the WHEP peer closed", Duration::from_secs(10), |l| {
        l.contains("peer whep-") && l.contains("closed, ready for the next viewer")
    });
    let response = post(&client, &endpoint, Some("s3cret"), &other_offer).await;
    assert_eq!(response.status(), 201, "the place is free again");
    server
        .wait_for_line("the second session", Duration::from_secs(5), |l| l.contains("joined over WHEP (2 member(s))"));
}
