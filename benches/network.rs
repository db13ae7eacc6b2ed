//! The stream over a real-looking network, watched by headless Chromium:
//! glass-to-glass latency read from the test pattern's stamp at every
//! presented frame (requestVideoFrameCallback), frame rate, freezes, audio
//! concealment, and how fast the device's target follows the link.
//!
//!     cargo bench --bench network        (as root: it makes its own network
//!                                         namespace; prints, asserts nothing)
//!
//! Sections:
//! 1. unshaped loopback, 640x480@25 test pattern: the playout-delay hint
//!    ("low") against none ("off"), `RUNS` runs each;
//! 2. `test-busy` at 640x480@25, 2000 kbit/s ceiling, the link (a token
//!    bucket on `lo`, both ways) at 3 Mbit/s, 400 kbit/s, 3 Mbit/s for
//!    `STEP` each: congestion control `gcc` against `off`; per phase;
//! 3. the plain test pattern over 150 kbit/s (the first case).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::page::{artifact, check_viewer_command, wait_for_file};
use common::{Proc, free_port, roomcam_bin, roomcam_serve};
use serde_json::Value;

const RUNS: usize = 3;
const STEP: Duration = Duration::from_secs(20);
/// Frames this long after a step are not counted in its phase: the
/// estimate needs them to follow (that time is reported separately).
const SETTLE: Duration = Duration::from_secs(3);

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shape(kbit: u32) {
    let rate = format!("{kbit}kbit");
    run("tc", &["qdisc", "replace", "dev", "lo", "root", "tbf", "rate", &rate, "burst", "32kbit", "latency", "400ms"]);
}

/// What the token bucket on `lo` has carried and dropped so far (bytes,
/// packets dropped); both ways of every flow go through it.
fn link_counters() -> (u64, u64) {
    let out = run("tc", &["-s", "qdisc", "show", "dev", "lo"]);
    let field = |after: &str, end: char| -> u64 {
        out.find(after)
            .and_then(|i| out[i + after.len()..].split(end).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Sent ", ' '), field("dropped ", ','))
}

fn unshape() {
    let _ = Command::new("tc").args(["qdisc", "del", "dev", "lo", "root"]).output();
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `[2026-12-02T17:07:50.864Z ...] ... video target N kbit/s` → (unix ms, N).
fn logged_target(line: &str) -> Option<(i64, u64)> {
    let stamp = line.strip_prefix('[')?.get(..24)?;
    let rest = &line[line.find("video target ")? + "video target ".len()..];
    let kbps = rest.split_whitespace().next()?.parse().ok()?;
    Some((parse_utc_ms(stamp)?, kbps))
}

/// "2026-12-02T17:07:50.864Z" → unix ms (days from the civil calendar).
fn parse_utc_ms(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

struct Trace {
    /// (shown at unix ms, latency ms if the stamp was readable)
    frames: Vec<(i64, Option<i64>)>,
    /// (unix ms, concealed samples)
    audio: Vec<(i64, i64)>,
    jitter_buffer_ms: Option<f64>,
}

fn read_trace(path: &std::path::Path) -> Trace {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let frames = v["frames"].as_array().unwrap().iter().map(|f| (f[0].as_i64().unwrap(), f[1].as_i64())).collect();
    let audio =
        v["audio"].as_array().unwrap().iter().map(|a| (a[0].as_i64().unwrap(), a[1].as_i64().unwrap())).collect();
    Trace { frames, audio, jitter_buffer_ms: v["jitterBufferMsPerFrame"].as_f64() }
}

struct Phase {
    fps: f64,
    p50: i64,
    p95: i64,
    longest_freeze_ms: i64,
    concealed_audio_ms: i64,
}

fn phase(trace: &Trace, from: i64, to: i64) -> Phase {
    let shown: Vec<&(i64, Option<i64>)> = trace.frames.iter().filter(|(t, _)| (from..to).contains(t)).collect();
    let mut latencies: Vec<i64> = shown.iter().filter_map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().max(1) - 1)).copied();
    let mut times: Vec<i64> = vec![from];
    times.extend(shown.iter().map(|(t, _)| *t));
    times.push(to);
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let concealed_at = |t: i64| trace.audio.iter().filter(|(at, _)| *at <= t).next_back().map_or(0, |(_, c)| *c);
    Phase {
        fps: shown.len() as f64 * 1000.0 / (to - from) as f64,
        p50: pct(0.5).unwrap_or(-1),
        p95: pct(0.95).unwrap_or(-1),
        longest_freeze_ms: longest,
        concealed_audio_ms: (concealed_at(to) - concealed_at(from)) * 1000 / 48_000,
    }
}

fn print_phase(name: &str, p: &Phase) {
    println!(
        "  {name:<22} {:>5.1} fps  latency p50 {:>4} ms p95 {:>5} ms  longest freeze {:>5} ms  audio concealed {:>4} ms",
        p.fps, p.p50, p.p95, p.longest_freeze_ms, p.concealed_audio_ms
    );
}

/// A device, a page that traces for `seconds` once video plays; returns the
/// trace and the device (for its log) once the page is done. `during` runs
/// while the page traces (e.g. the link steps).
fn watch(
    label: &str,
    device_args: &[&str],
    config: &str,
    seconds: u64,
    during: impl FnOnce(&Proc),
) -> (Trace, Proc, Proc) {
    let port = free_port();
    let config_path = std::env::temp_dir().join(format!("roomcam-network-bench-{label}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let room = format!("bench-{label}");
    let mut cmd = Command::new(roomcam_bin());
    cmd.args(["run", "--config", config_path.to_str().unwrap(), "--server", &url, "--room", &room])
        .args(["--microphone", "test", "--speaker", "null"])
        .args(device_args)
        // ROOMCAM_DEVICE_LOG looks deeper (e.g. info,roomcam=debug,rtc_interceptor=debug).
        .env("RUST_LOG", std::env::var("ROOMCAM_DEVICE_LOG").unwrap_or_else(|_| "info".into()));
    let mut device = Proc::spawn("roomcam-run", &mut cmd);
    device.wait_in_room();
    let video = artifact(&format!("network-{label}.video"));
    let trace = artifact(&format!("network-{label}.trace"));
    let seconds_arg = seconds.to_string();
    let args = [
        "--expect-video",
        "--video-file",
        video.to_str().unwrap(),
        "--trace",
        &seconds_arg,
        "--trace-file",
        trace.to_str().unwrap(),
        "--timeout",
        "60",
    ];
    let mut page = Proc::spawn("chromium", &mut check_viewer_command(None, &format!("{url}/?room={room}"), &args));
    wait_for_file(&video, &mut page, Duration::from_secs(90));
    during(&device);
    wait_for_file(&trace, &mut page, Duration::from_secs(seconds + 120));
    page.terminate(Duration::from_secs(10));
    // The device's log beside the trace, to read what it did at each step.
    std::fs::write(artifact(&format!("network-{label}.device.log")), device.lines().join("\n")).unwrap();
    (read_trace(&trace), device, server)
}

fn unshaped() {
    println!("1. unshaped loopback, test pattern 640x480@25, {RUNS} runs of 10 s each way");
    for hint in ["low", "off"] {
        for i in 0..RUNS {
            let config = format!("[webrtc]\nplayout-delay = \"{hint}\"\n");
            let (trace, ..) = watch(&format!("hint-{hint}-{i}"), &["--camera", "test"], &config, 10, |_| {});
            let (from, to) = (trace.frames[0].0, trace.frames.last().unwrap().0);
            let p = phase(&trace, from, to);
            print_phase(&format!("playout-delay {hint} #{i}"), &p);
            println!("  {:<22} jitter buffer {:?} ms per frame", "", trace.jitter_buffer_ms);
        }
    }
}

fn link_steps(want: impl Fn(&str) -> bool) {
    println!("2. test-busy 640x480@25, ceiling 2000 kbit/s; the link 3000 -> 400 -> 3000 kbit/s, {STEP:?} each");
    for cc in ["gcc", "off"].into_iter().filter(|cc| want(&format!("steps-{cc}"))) {
        let config = format!("[webrtc]\ncongestion-control = \"{cc}\"\n");
        let mut steps = Vec::new();
        let mut carried = Vec::new();
        shape(3000);
        let total = 3 * STEP.as_secs() + 2;
        let (trace, device, _server) = watch(
            &format!("steps-{cc}"),
            &["--camera", "test-busy", "--size", "640x480", "--fps", "25", "--bitrate", "2000"],
            &config,
            total,
            |_| {
                for kbit in [3000, 400, 3000] {
                    shape(kbit);
                    steps.push((unix_ms(SystemTime::now()), kbit));
                    let before = link_counters();
                    std::thread::sleep(STEP);
                    let after = link_counters();
                    // `tc qdisc replace` may start the counters again.
                    let delta = |a: u64, b: u64| if a >= b { a - b } else { a };
                    carried.push((delta(after.0, before.0), delta(after.1, before.1)));
                }
            },
        );
        unshape();
        println!(" congestion-control = {cc}:");
        let targets: Vec<(i64, u64)> = device.lines().iter().filter_map(|l| logged_target(l)).collect();
        for (i, &(at, kbit)) in steps.iter().enumerate() {
            let end = steps.get(i + 1).map_or(at + STEP.as_millis() as i64, |s| s.0);
            print_phase(&format!("{kbit} kbit/s"), &phase(&trace, at + SETTLE.as_millis() as i64, end));
            if let Some(&(bytes, dropped)) = carried.get(i) {
                let kbps = bytes * 8 / STEP.as_millis() as u64;
                println!("  {:<22} the link carried {kbps} kbit/s (both ways), dropped {dropped} packets", "");
            }
            let converged = match (i, cc) {
                (_, "off") => None,
                (1, _) => targets.iter().find(|(t, k)| *t >= at && *k < 400).map(|(t, _)| t - at),
                (2, _) => targets.iter().find(|(t, k)| *t >= at && *k > 1500).map(|(t, _)| t - at),
                _ => None,
            };
            if i > 0 && cc == "gcc" {
                let what = if i == 1 { "target under 400" } else { "target over 1500" };
                match converged {
                    Some(ms) => println!("  {:<22} {what} after {ms} ms", ""),
                    None => println!("  {:<22} {what}: never within the step", ""),
                }
            }
        }
    }
}

fn plain_pattern_at_150() {
    println!("3. the plain test pattern 640x480@25 over 150 kbit/s (gcc, min-bitrate 60), 20 s after 10 s to settle");
    shape(150);
    let (trace, ..) = watch("plain-150", &["--camera", "test", "--min-bitrate", "60"], "", 30, |_| {});
    unshape();
    let from = trace.frames.first().map_or(0, |f| f.0) + 10_000;
    let to = trace.frames.last().map_or(from, |f| f.0);
    print_phase("150 kbit/s", &phase(&trace, from, to));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: no threads yet; unshare has no memory effects.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {} (run as root)", std::io::Error::last_os_error());
    run("ip", &["link", "set", "lo", "up", "mtu", "1500"]);
    let started = Instant::now();
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    if want("unshaped") {
        unshaped();
    }
    if want("steps-gcc") || want("steps-off") {
        link_steps(want);
    }
    if want("plain") {
        plain_pattern_at_150();
    }
    println!("(the network bench took {:?})", started.elapsed());
}
