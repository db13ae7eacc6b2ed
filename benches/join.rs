//! Viewer join → first decoded frame, over 20 joins, and the device's memory
//! with one viewer streaming. Real processes on loopback: `roomcam serve`,
//! `roomcam run` (test pattern + tone), and the webrtc-rs test viewer.
//!
//!     cargo bench --bench join            (prints the figures; no assertions)
//!
//! Run it where loopback is the only interface, like the tests:
//!     unshare -n sh -c 'ip link set lo up; cargo bench --bench join'

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/room_viewer.rs"]
mod room_viewer;
#[path = "../tests/support/viewer.rs"]
mod viewer;

use std::time::{Duration, Instant};

use common::{free_port, proc_status_kib, roomcam_run, roomcam_serve};
use room_viewer::RoomViewer;
use viewer::ViewerOptions;

const JOINS: usize = 20;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> (u64, u64) {
    (proc_status_kib(pid, "VmRSS:"), proc_status_kib(pid, "VmHWM:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; any other filter means "not me".
    if std::env::args().skip(1).any(|a| !a.starts_with("--")) {
        return;
    }
    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, "bench", &[]);
    device.wait_in_room();
    let (idle_rss, _) = rss_kib(device.pid());

    let mut join_ms = Vec::with_capacity(JOINS);
    let mut streaming_rss = Vec::new();
    for i in 0..JOINS {
        let closed_before = device.count_lines(|l| l.contains("closed, ready for the next viewer"));
        let started = Instant::now();
        let viewer = RoomViewer::join(&url, "bench", ViewerOptions::default()).await;
        let stats = viewer.wait_frames(1, Duration::from_secs(20)).await;
        let first = stats.first_frame_at.expect("first frame time");
        join_ms.push(first.duration_since(started).as_secs_f64() * 1000.0);
        if i == JOINS / 2 {
            // Let one viewer stream for a while before reading memory.
            viewer.wait_frames(150, Duration::from_secs(20)).await;
            streaming_rss.push(rss_kib(device.pid()));
        }
        viewer.leave().await;
        device
            .wait_for_line("peer closed", Duration::from_secs(10), |l| l.contains("closed, ready for the next viewer"));
        while device.count_lines(|l| l.contains("closed, ready for the next viewer")) <= closed_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut sorted = join_ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "join -> first decoded frame over {JOINS} joins (ms): p50 {:.0}, p95 {:.0}, min {:.0}, max {:.0}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    println!("  each: {}", join_ms.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" "));
    let (rss, hwm) = streaming_rss.first().copied().unwrap_or_default();
    let (_, final_hwm) = rss_kib(device.pid());
    println!(
        "device RSS: idle {:.1} MB, one viewer streaming {:.1} MB (peak so far {:.1} MB), peak after {JOINS} joins {:.1} MB",
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        final_hwm as f64 / 1024.0
    );
}
