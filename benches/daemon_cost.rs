//! The daemon's own CPU cost (issue 11, point 7), as a new user would
//! measure it: `roomcam run` with the 640x480@30 test pattern and the test
//! tone, and 0, 1 or 4 webrtc-rs viewers, the whole roomcam process over 10 s
//! (utime + stime from /proc), with the breakdown by thread: the pipeline's
//! threads are named (roomcam-capture, -encode, -microphone, -speaker),
//! tokio's workers carry the network (SRTP, RTP packetization, pacing,
//! signaling). The viewers run in this process, not roomcam's.
//!
//!     unshare -n sh -c 'ip link set lo up; cargo bench --bench daemon_cost'
//!
//! Prints figures; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/room_viewer.rs"]
mod room_viewer;
#[path = "../tests/support/viewer.rs"]
mod viewer;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, proc_status_kib, roomcam_run, roomcam_serve};
use room_viewer::RoomViewer;
use viewer::ViewerOptions;

const WINDOW: Duration = Duration::from_secs(10);

/// CPU ticks (utime + stime) of each thread of `pid`, by thread name.
fn thread_ticks(pid: u32) -> BTreeMap<(String, u32), u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "tid (comm) state ..." — comm may hold spaces; fields after ")".
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let tid = entry.file_name().to_string_lossy().parse().unwrap_or(0);
        out.insert((comm, tid), ticks);
    }
    out
}

fn rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmRSS:") as f64 / 1024.0
}

/// Where a thread's time goes in the report.
fn group(comm: &str) -> &str {
    match comm {
        c if c.starts_with("tokio-runtime") => "tokio workers (network)",
        c if c.starts_with("roomcam-") => c,
        "roomcam" => "main thread",
        other => other,
    }
}

async fn measure(pid: u32, label: &str) {
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = thread_ticks(pid);
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let after = thread_ticks(pid);
    let scale = WINDOW.as_secs_f64() / t0.elapsed().as_secs_f64() / ticks_per_s;
    let mut groups: BTreeMap<String, f64> = BTreeMap::new();
    for (key, end) in &after {
        let start = before.get(key).copied().unwrap_or(0);
        *groups.entry(group(&key.0).to_owned()).or_default() += end.saturating_sub(start) as f64 * scale;
    }
    let total: f64 = groups.values().sum();
    let parts: Vec<String> = groups.iter().filter(|(_, s)| **s > 0.0).map(|(g, s)| format!("{g} {s:.2}")).collect();
    println!(
        "daemon_cost {label}: {total:.2} CPU-s per 10 s (RSS {:.1} MB); by thread: {}",
        rss_mib(pid),
        parts.join(", ")
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().skip(1).any(|a| !a.starts_with("--")) {
        return;
    }
    let port = free_port();
    // Room for the device and four viewers.
    let config = std::env::temp_dir().join(format!("roomcam-daemon-cost-{}.toml", std::process::id()));
    std::fs::write(&config, "[server]\ncapacity = 5\n").unwrap();
    let _server = roomcam_serve(port, Some(&config));
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(
        &url,
        "cost",
        &["--camera", "test", "--size", "640x480", "--fps", "30", "--microphone", "test", "--speaker", "null"],
    );
    device.wait_in_room();
    tokio::time::sleep(Duration::from_secs(2)).await;
    measure(device.pid(), "no viewer, 640x480@30 test pattern").await;

    let mut viewers = Vec::new();
    for count in [1usize, 4] {
        while viewers.len() < count {
            let viewer = RoomViewer::join(&url, "cost", ViewerOptions::default()).await;
            viewer.wait_frames(30, Duration::from_secs(30)).await;
            viewers.push(viewer);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        measure(device.pid(), &format!("{count} viewer(s), 640x480@30 test pattern")).await;
        let decoded: Vec<u64> = viewers.iter().map(|v| v.viewer.stats().frames_decoded).collect();
        println!("daemon_cost   frames decoded per viewer so far: {decoded:?}");
    }
    for viewer in viewers {
        viewer.vanish().await;
    }
}
