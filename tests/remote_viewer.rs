//! A viewer on another machine, as a new user has it: headless Chromium with
//! its default behaviour (no camera or microphone permission granted, so its
//! ICE hides the host's addresses behind mDNS `.local` names) opens the
//! viewer page over plain http from the device's address, across a real
//! link.
//!
//! The link: two network namespaces made by the test itself, joined by a veth
//! pair addressed in 169.254.0.0/16 (zeroconf, what a board cabled straight
//! to a laptop has), nothing else in either. The device and `roomcam serve`
//! live in one (169.254.10.1), Chromium in the other (169.254.10.2, its
//! default route over the veth, multicast on: Chromium gathers candidates
//! only on its default route's interface when it has no permission). No
//! traffic can leave these namespaces.
//!
//! - From the server's address: video (the test pattern's bars, read off the
//!   page) and audio arrive, the page never asked for the microphone, "Hold
//!   to talk" is disabled and the page says that talk-back needs https and
//!   where to find it.
//!   The device's side has no multicast route there, so it learns the
//!   page's address from its connectivity checks (peer-reflexive).
//! - From a name (`http://roomcam.test:PORT`, mapped to the server's address
//!   by Chromium's host resolver rules): the same notice, and the video
//!   plays; the device's side routes multicast (as a LAN with a default
//!   route does) and resolves the page's `.local` name by mDNS.
//!
//! - On a secure page (Chromium treats the origin as secure, as it does
//!   https) whose microphone the person refused: the first press is refused,
//!   the page disables "Hold to talk" and says how to allow it; video and
//!   sound go on.
//!
//! Needs root (`unshare -n`, `ip`), /usr/bin/chromium and `npm ci` in
//! tests/classic; without them these tests fail, they never skip.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::page::{artifact, check_viewer_succeeds, in_netns};
use common::{Proc, roomcam_bin};
use serde_json::Value;

const DEVICE_ADDR: &str = "169.254.10.1";
const VIEWER_ADDR: &str = "169.254.10.2";
const PORT: u16 = 8080;

/// The device's namespace and the viewer's, joined by a veth pair.
struct Lan {
    device: Netns,
    viewer: Netns,
}

impl Lan {
    /// `device_multicast_route`: the device's side routes multicast over
    /// the veth (a board with a default route has that), so its mDNS
    /// socket can join the group and resolve the page's `.local` names;
    /// without it the device learns the page's address from its checks
    /// (peer-reflexive).
    fn new(device_multicast_route: bool) -> Lan {
        let device = Netns::new("netns-device");
        let viewer = Netns::new("netns-viewer");
        let viewer_pid = viewer.pid().to_string();
        device.ip(&["link", "add", "rc-dev", "type", "veth", "peer", "name", "rc-view", "netns", &viewer_pid]);
        device.ip(&["addr", "add", &format!("{DEVICE_ADDR}/24"), "dev", "rc-dev"]);
        device.ip(&["link", "set", "rc-dev", "multicast", "on", "up"]);
        if device_multicast_route {
            device.ip(&["route", "add", "224.0.0.0/4", "dev", "rc-dev"]);
        }
        viewer.ip(&["addr", "add", &format!("{VIEWER_ADDR}/24"), "dev", "rc-view"]);
        viewer.ip(&["link", "set", "rc-view", "multicast", "on", "up"]);
        viewer.ip(&["route", "add", "default", "via", DEVICE_ADDR, "dev", "rc-view"]);
        Lan { device, viewer }
    }

    /// `roomcam serve` on the device's veth address, then a device in `room`.
    fn serve_and_run(&self, room: &str) -> (Proc, Proc) {
        let mut cmd = in_netns(Some(self.device.pid()), roomcam_bin().to_str().unwrap());
        cmd.args(["serve", "--listen", &format!("{DEVICE_ADDR}:{PORT}")]).env("RUST_LOG", "info");
        let mut server = Proc::spawn("roomcam-serve", &mut cmd);
        server.wait_for_line("listening", Duration::from_secs(20), |l| l.contains("listening"));
        let mut cmd = in_netns(Some(self.device.pid()), roomcam_bin().to_str().unwrap());
        cmd.args(["run", "--server", &format!("http://{DEVICE_ADDR}:{PORT}"), "--room", room])
            .args(["--camera", "test", "--microphone", "test", "--speaker", "null"])
            // rtc_ice's agent says how it learnt the page's address (mDNS or a check).
            .env(
                "RUST_LOG",
                std::env::var("ROOMCAM_DEVICE_LOG")
                    .unwrap_or_else(|_| "info,roomcam=debug,rtc_ice::agent=debug".into()),
            );
        let mut device = Proc::spawn("roomcam-run", &mut cmd);
        device.wait_in_room();
        (server, device)
    }

    /// The viewer page in Chromium in the viewer's namespace; its JSON report.
    fn view(&self, url: &str, args: &[&str], device: &Proc) -> Value {
        check_viewer_succeeds(Some(self.viewer.pid()), url, args, || {
            format!("\ndevice:\n{}", device.lines().join("\n"))
        })
    }
}

/// What a viewer with no permission, on plain http, must get: the picture
/// and the sound, no microphone request, and the reason talk-back is off.
const NO_PERMISSION_VIEWER: [&str; 5] =
    ["--no-permission", "--expect-bars", "--expect-audio", "--expect-insecure", "--expect-no-mic"];

#[test]
fn a_viewer_without_permission_behind_mdns_gets_video_and_audio_across_a_veth_link() {
    let lan = Lan::new(false);
    let (_server, device) = lan.serve_and_run("lan");
    let shot = artifact("remote-viewer.png").to_string_lossy().into_owned();
    let mut args = NO_PERMISSION_VIEWER.to_vec();
    args.extend(["--screenshot", &shot, "--timeout", "40"]);
    let report = lan.view(&format!("http://{DEVICE_ADDR}:{PORT}/?room=lan"), &args, &device);
    eprintln!("page report: {report}");
    assert_eq!(report["micRequests"], 0, "{report}");
    assert!(report["video"]["fps"].as_f64().is_some_and(|fps| fps > 0.0), "{report}");
    // The path really is the veth (not some loopback shortcut): the page's
    // selected pair ends at the device's veth address.
    assert_eq!(report["ice"]["remote"]["address"], DEVICE_ADDR, "{report}");
    assert_page_hid_its_address(&report);
    // No multicast route on the device's side: its mDNS socket cannot join
    // the group, so it learnt the page's address from the page's checks.
    let learnt = device.lines().into_iter().find(|l| l.contains(&format!("peer-reflexive candidate: {VIEWER_ADDR}:")));
    assert!(
        learnt.is_some(),
        "the device never learnt the page's address as peer-reflexive:\n{}",
        device.lines().join("\n")
    );
}

/// The page offered only mDNS names for its host candidates.
fn assert_page_hid_its_address(report: &Value) {
    let candidates: Vec<&str> =
        report["localCandidates"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
    assert!(!candidates.is_empty(), "the page gathered no candidate: {report}");
    for c in &candidates {
        assert!(!c.contains(VIEWER_ADDR) && (!c.contains("typ host") || c.contains(".local ")), "{c}: {report}");
    }
}

#[test]
fn a_viewer_on_plain_http_by_name_is_told_why_talk_back_is_off_and_still_sees_the_picture() {
    let lan = Lan::new(true);
    let (_server, device) = lan.serve_and_run("named");
    let rules = format!("MAP roomcam.test {DEVICE_ADDR}");
    let report = lan.view(
        &format!("http://roomcam.test:{PORT}/?room=named"),
        &["--host-rules", &rules, "--no-permission", "--expect-video", "--expect-insecure", "--expect-no-mic"],
        &device,
    );
    eprintln!("page report: {report}");
    let notice = report["insecure"]["notice"].as_str().unwrap_or_default();
    assert!(notice.contains(&format!("https://roomcam.test:{PORT}/?room=named")), "{report}");
    assert_page_hid_its_address(&report);
    // With a multicast route (what a LAN has) the device resolves the
    // page's .local name by mDNS.
    let resolved = device.lines().into_iter().find(|l| {
        l.contains("mDNS query") && l.contains(".local") && l.contains(&format!("resolved_addr {VIEWER_ADDR}:"))
    });
    assert!(resolved.is_some(), "the device never resolved the page's mDNS name:\n{}", device.lines().join("\n"));
}

/// A secure page (Chromium told to treat the device's origin as secure, as
/// it treats https) whose microphone the person refused: watching goes on.
/// The first press asks, is refused, and the page disables "Hold to talk"
/// and says how to allow it; video and sound keep coming.
#[test]
fn a_secure_page_whose_microphone_is_refused_still_gets_video_and_audio() {
    let lan = Lan::new(false);
    let (_server, device) = lan.serve_and_run("denied");
    let origin = format!("http://{DEVICE_ADDR}:{PORT}");
    let report = lan.view(
        &format!("{origin}/?room=denied"),
        &[
            "--no-permission",
            "--deny-mic",
            "--secure-origin",
            &origin,
            "--expect-bars",
            "--expect-audio",
            "--expect-mic-refused",
        ],
        &device,
    );
    eprintln!("page report: {report}");
    assert_eq!(report["micRefused"]["micState"], "none", "{report}");
    assert_page_hid_its_address(&report);
}
