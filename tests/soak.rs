//! Soak: 200 viewer cycles against one `roomcam run` in a classic socket.io
//! 4 room, as a night of phones coming and going would do. Half the viewers
//! leave (`leave`, the server says `bye`), half vanish like a closed tab (no
//! word at all: classic servers send no `bye`). Every cycle decodes frames.
//! The first cycles are headless Chromium on the viewer page, the real client.
//! The device's memory must not grow (≤ 2 MB from cycle 20 to the end) and
//! its file descriptors and threads must come back to where they started.
//! The trace is printed (`cargo test --test soak -- --nocapture`).

mod common;
#[path = "support/room_viewer.rs"]
mod room_viewer;
#[path = "support/viewer.rs"]
mod viewer;

use std::time::{Duration, Instant};

use common::classic_device;
use common::page::check_viewer_command;
use room_viewer::RoomViewer;
use viewer::ViewerOptions;

const WEBRTC_RS_CYCLES: usize = 190;
const CHROMIUM_CYCLES: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Usage {
    rss_kb: u64,
    fds: usize,
    threads: usize,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("device alive");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    let count = |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).map(|d| d.count()).unwrap_or(0);
    Usage { rss_kb, fds: count("fd"), threads: count("task") }
}

/// Waits until the device has closed every peer and its counts settle.
async fn settled(pid: u32, device: &common::Proc, want: Option<Usage>) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = usage(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = usage(pid);
        let streaming = device.lines().iter().rev().find(|l| l.contains("viewer(s) streaming")).cloned();
        let idle = streaming.is_none_or(|l| l.contains(": 0 viewer(s)"));
        let matches = want.is_none_or(|w| now.fds == w.fds && now.threads == w.threads);
        if idle && now.fds == last.fds && now.threads == last.threads && matches {
            return now;
        }
        if Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewer_cycles_leak_nothing() {
    let classic = classic_device(4, "soak");
    let url = classic.url.clone();
    let pid = classic.device.pid();
    let start = settled(pid, &classic.device, None).await;
    eprintln!("soak: start {start:?}");
    let mut trace = vec![(0, start)];
    let mut at_20 = None;
    let t0 = Instant::now();
    for cycle in 1..=CHROMIUM_CYCLES {
        let output = check_viewer_command(None, &format!("{url}/?room=soak"), &["--expect-video", "--timeout", "30"])
            .output()
            .expect("run node");
        assert!(
            output.status.success(),
            "Chromium cycle {cycle}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for cycle in CHROMIUM_CYCLES + 1..=CHROMIUM_CYCLES + WEBRTC_RS_CYCLES {
        let viewer = RoomViewer::join(&url, "soak", ViewerOptions::default()).await;
        viewer.wait_frames(3, Duration::from_secs(30)).await;
        if cycle % 2 == 0 {
            viewer.leave().await;
        } else {
            viewer.vanish().await;
        }
        if cycle % 20 == 0 {
            let u = usage(pid);
            eprintln!("soak: cycle {cycle} after {:.0?}: {u:?}", t0.elapsed());
            trace.push((cycle, u));
            if cycle == 20 {
                at_20 = Some(u);
            }
        }
    }
    let end = settled(pid, &classic.device, Some(start)).await;
    let cycles = WEBRTC_RS_CYCLES + CHROMIUM_CYCLES;
    trace.push((cycles, end));
    eprintln!("soak: {cycles} cycles in {:.0?}; trace (cycle, usage): {trace:?}", t0.elapsed());
    let at_20 = at_20.unwrap();
    let growth_kb = end.rss_kb as i64 - at_20.rss_kb as i64;
    assert!(growth_kb <= 2048, "RSS grew {growth_kb} KB from cycle 20 to {cycles}: {trace:?}");
    assert_eq!(end.fds, start.fds, "file descriptors: {trace:?}");
    assert_eq!(end.threads, start.threads, "threads: {trace:?}");
    let closed = classic.device.count_lines(|l| l.contains("closed, ready for the next viewer"));
    assert!(closed >= cycles, "{closed} peers closed for {cycles} viewers");
}
