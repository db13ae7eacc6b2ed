//! The memory of `roomcam serve` with 1000 idle members connected (500
//! rooms of two, roomcam's own socket.io client over WebSocket), measured
//! as the server process's RSS before, once all have joined, and after 30 s
//! of nothing but pings. Prints the figures; asserts nothing.
//!
//!     unshare -n sh -c 'ip link set lo up; cargo bench --bench idle_members'
//!
//! All members come from 127.0.0.1, so the config raises
//! `max-connections-per-address` (loopback is not exempt).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Member, free_port, proc_status_kib, roomcam_serve};
use roomcam::config::ProtocolChoice;

const MEMBERS: usize = 1000;
const BATCH: usize = 50;

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Each member is a socket here and in the server: lift the soft file limit
/// (the server inherits it).
fn raise_open_files() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; any other filter means "not me".
    if std::env::args().skip(1).any(|a| !a.starts_with("--")) {
        return;
    }
    raise_open_files();
    let dir = std::env::temp_dir().join(format!("roomcam-idle-members-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("serve.toml");
    std::fs::write(&config, format!("[server]\nmax-connections-per-address = {}\n", MEMBERS + 10)).unwrap();
    let port = free_port();
    let server = roomcam_serve(port, Some(&config));
    let url = format!("http://127.0.0.1:{port}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let empty = rss_kib(server.pid());

    let started = Instant::now();
    let mut members = Vec::with_capacity(MEMBERS);
    for batch in 0..MEMBERS / BATCH {
        let joins = (0..BATCH).map(|i| {
            let url = url.clone();
            let room = format!("idle{}", (batch * BATCH + i) / 2);
            tokio::spawn(async move {
                let mut member = Member::connect(&url, ProtocolChoice::Auto);
                member.expect_connected().await;
                member.join(&room).await;
                member
            })
        });
        for join in joins.collect::<Vec<_>>() {
            members.push(join.await.expect("member joined"));
        }
    }
    let joined_after = started.elapsed();
    let joined = rss_kib(server.pid());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = rss_kib(server.pid());
    let per_member = |rss: u64| (rss.saturating_sub(empty)) as f64 / MEMBERS as f64;
    println!("idle_members: {MEMBERS} members in {} rooms joined in {joined_after:.1?}", MEMBERS / 2);
    println!("idle_members: server RSS empty {empty} KiB");
    println!("idle_members: server RSS all joined {joined} KiB ({:.1} KiB per member)", per_member(joined));
    println!("idle_members: server RSS after 30 s idle {idle} KiB ({:.1} KiB per member)", per_member(idle));
    for member in members {
        member.close();
    }
}
