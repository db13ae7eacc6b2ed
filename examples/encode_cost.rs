//! Per-frame H.264 encode cost in INSTRUCTIONS (issue 4), for the emulated
//! board: `board/emulated/test.sh aarch64 --encode-cost` boots it under
//! `qemu-system-* -icount shift=0`, where the guest's clock advances exactly
//! 1 ns per guest instruction, so `Instant` measures instructions. Where the
//! kernel exposes a PMU (qemu's cortex-a57 PMUv3 counts instructions when
//! icount is on) it also reads PERF_COUNT_HW_INSTRUCTIONS (user mode only).
//!
//! The same loop as benches/encode.rs (test pattern → I420 → OpenH264),
//! encode step only. A calibration loop of known length comes first, so the
//! output says how exact both counters are. Prints numbers, asserts nothing.
//!
//! Then the echo canceller (issue 12 point 5): AEC3 per 10 ms chunk on the
//! simulated room of the echo tests, after 2 s of convergence, and the
//! microphone frame while it rests (`ENCODE-COST echo` lines).
//!
//! `encode_cost [FRAMES] [WARMUP] [ECHO_CHUNKS] [ECHO_WARMUP]` (default 30,
//! 5, 100 and 200).
//! With `ENCODE_COST_ONLY_ECHO=SECONDS` only the echo canceller runs, on
//! that many seconds of signal, with no calibration: two runs with
//! different ECHO_CHUNKS under an instruction-counting emulator then
//! differ by exactly those chunks (scripts/echo-cost-qemu-user does that).

use std::time::Instant;

use roomcam::media::echo::{Aec3, CHUNK_SAMPLES, EchoCanceller, EchoRemoval, Reference};
use roomcam::media::fixtures::{EchoPath, Noise, add_luma_noise, speech_like};
use roomcam::media::{AUDIO_FRAME_SAMPLES, H264Encoder, H264Settings, TestPattern, VideoEncoder};

/// User-mode instruction counter of this thread (perf_event_open), if the
/// kernel has a PMU that counts them.
struct PerfInstructions(i32);

impl PerfInstructions {
    fn open() -> Result<Self, String> {
        // struct perf_event_attr, PERF_ATTR_SIZE_VER5 (112 bytes): type,
        // size, config, …, flags at byte 40.
        let mut attr = [0u64; 14];
        attr[0] = 0 /* PERF_TYPE_HARDWARE */ | (112u64 << 32);
        attr[1] = 1; // PERF_COUNT_HW_INSTRUCTIONS
        attr[5] = (1 << 5) | (1 << 6); // exclude_kernel, exclude_hv (enabled at once)
        // SAFETY: attr outlives the call and has the size it declares.
        // pid 0 (this thread), cpu -1 (any), no group, no flags; longs, as the
        // variadic syscall() reads them.
        let (pid, cpu, group, flags): (libc::c_long, libc::c_long, libc::c_long, libc::c_ulong) = (0, -1, -1, 0);
        let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid, cpu, group, flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let counter = Self(fd as i32);
        // A counter that opens but never moves (no PMU events) is no counter.
        let a = counter.read();
        spin(1_000_000);
        if counter.read() == a {
            return Err("opens but does not count".into());
        }
        Ok(counter)
    }

    fn read(&self) -> u64 {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into v.
        let n = unsafe { libc::read(self.0, (&raw mut v).cast(), 8) };
        assert_eq!(n, 8, "read perf counter");
        v
    }
}

/// Exactly `2 * n` instructions (a decrement and a conditional branch per
/// iteration), for calibrating the counters.
#[inline(never)]
fn spin(n: u64) {
    assert!(n > 0);
    // SAFETY: register-only loop.
    unsafe {
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("2:", "subs {n}, {n}, #1", "b.ne 2b", n = inout(reg) n => _, options(nomem, nostack));
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n => _, options(nomem, nostack));
        #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
        compile_error!("spin: aarch64 and x86_64 only");
    }
}

/// (virtual ns, perf user instructions) spent in `f`.
fn measure(perf: Option<&PerfInstructions>, f: impl FnOnce()) -> (u64, Option<u64>) {
    let p0 = perf.map(PerfInstructions::read);
    let t0 = Instant::now();
    f();
    let ns = t0.elapsed().as_nanos() as u64;
    (ns, perf.zip(p0).map(|(p, p0)| p.read() - p0))
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn video(
    label: &str,
    settings: H264Settings,
    noise: bool,
    perf: Option<&PerfInstructions>,
    frames: usize,
    warmup: usize,
) {
    let (w, h) = (settings.width, settings.height);
    let mut src = TestPattern::new(w, h, settings.fps).expect("pattern").without_pacing();
    let mut enc = H264Encoder::new(settings).expect("encoder");
    let (mut ns, mut ins, mut bytes, mut skipped) = (Vec::new(), Vec::new(), 0usize, 0usize);
    let mut rng: u32 = 0x2545_F491;
    for i in 0..warmup + frames {
        let mut frame = src.next_picture();
        if noise {
            add_luma_noise(&mut frame, &mut rng);
        }
        let mut out = None;
        let (t, n) = measure(perf, || out = Some(enc.encode(&frame, false).expect("encode")));
        if i >= warmup {
            ns.push(t);
            ins.extend(n);
            match out.flatten() {
                Some(e) => bytes += e.data.len(),
                None => skipped += 1,
            }
        }
    }
    let label = format!("{label}{}", if noise { " +noise" } else { "" });
    let mi = |v: u64| v as f64 / 1e6;
    let perf_part = if ins.is_empty() {
        String::new()
    } else {
        format!("  perf user instr/frame median {:8.2} M", mi(median(&mut ins)))
    };
    println!(
        "ENCODE-COST {label:<22} virtual-ns(=instr)/frame median {:8.2} M  min {:8.2} M  max {:8.2} M{perf_part}  ({:.0} B/frame, {skipped} skipped of {frames})",
        mi(median(&mut ns)),
        mi(ns[0]),
        mi(ns[ns.len() - 1]),
        bytes as f64 / frames as f64,
    );
}

/// AEC3 on `seconds` of the echo tests' room (echo 80 ms late, −9 dB,
/// reverb tail): `chunks` 10 ms chunks measured after `warmup` (200: 2 s)
/// of convergence. The signals are made whatever `chunks` is.
fn echo(perf: Option<&PerfInstructions>, seconds: usize, chunks: usize, warmup: usize) {
    let n = seconds * 48_000;
    let far = speech_like(n, 140.0, 16_000.0, 1);
    let room = EchoPath::new(80, -9.0, 2).process(&far);
    let mut noise = Noise::new(4);
    let mut mic: Vec<i16> = room.iter().map(|&e| e + (20.0 * noise.sample()) as i16).collect();
    let mut aec = Aec3::new();
    let (mut ns, mut ins) = (Vec::new(), Vec::new());
    let warmup = warmup.min(n / CHUNK_SAMPLES);
    let chunks = chunks.min(n / CHUNK_SAMPLES - warmup);
    for (i, (f, m)) in far.chunks_exact(CHUNK_SAMPLES).zip(mic.chunks_exact_mut(CHUNK_SAMPLES)).enumerate() {
        if i == warmup + chunks {
            break;
        }
        let (t, c) = measure(perf, || {
            aec.played(f).expect("played");
            aec.cancel(m).expect("cancel");
        });
        if i >= warmup {
            ns.push(t);
            ins.extend(c);
        }
    }
    let mi = |v: u64| v as f64 / 1e6;
    if !ns.is_empty() {
        let perf_part = if ins.is_empty() {
            String::new()
        } else {
            format!("  perf user instr/chunk median {:6.3} M", mi(median(&mut ins)))
        };
        println!(
            "ENCODE-COST echo AEC3 talk-back      virtual-ns(=instr)/10 ms median {:6.3} M  min {:6.3} M  max {:6.3} M{perf_part}  ({chunks} chunks after {warmup})",
            mi(median(&mut ns)),
            mi(ns[0]),
            mi(ns[ns.len() - 1]),
        );
    }
    // Resting: the speaker silent, the microphone thread's whole echo step.
    let mut removal = EchoRemoval::new(Box::new(Aec3::new()), std::sync::Arc::new(Reference::new(4_800)));
    let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
    let mut ns: Vec<u64> =
        (0..50).map(|_| measure(perf, || removal.process(&mut frame).expect("process")).0 / 2).collect();
    println!("ENCODE-COST echo resting (silent)    virtual-ns(=instr)/10 ms median {:9.6} M", mi(median(&mut ns)));
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("FRAMES WARMUP ECHO_CHUNKS ECHO_WARMUP"));
    let frames = args.next().unwrap_or(30);
    let warmup = args.next().unwrap_or(5);
    let echo_chunks = args.next().unwrap_or(100);
    let echo_warmup = args.next().unwrap_or(200);
    if let Ok(seconds) = std::env::var("ENCODE_COST_ONLY_ECHO") {
        echo(None, seconds.parse().expect("ENCODE_COST_ONLY_ECHO=SECONDS"), echo_chunks, echo_warmup);
        return;
    }
    let arch = std::env::consts::ARCH;
    let perf = match PerfInstructions::open() {
        Ok(p) => Some(p),
        Err(e) => {
            println!("ENCODE-COST {arch}: no perf instruction counter ({e}); virtual ns only");
            None
        }
    };

    // Calibration: a loop of exactly 2 * N instructions.
    for n in [1_000_000u64, 10_000_000, 50_000_000] {
        let (ns, ins) = measure(perf.as_ref(), || spin(n));
        let expect = 2 * n;
        let rel = |v: u64| (v as f64 - expect as f64) / expect as f64 * 100.0;
        let perf_part = ins.map_or(String::new(), |i| format!("  perf {i} ({:+.4} %)", rel(i)));
        println!("ENCODE-COST calibration {expect} instructions: virtual ns {ns} ({:+.4} %){perf_part}", rel(ns));
    }

    println!("ENCODE-COST {arch}: encode step only, {frames} frames after {warmup} warm-up, 1 thread");
    let base =
        |w, h, kbps| H264Settings { width: w, height: h, fps: 30, bitrate_kbps: kbps, ..H264Settings::default() };
    for noise in [false, true] {
        video("640x480 1000 kb/s", base(640, 480, 1_000), noise, perf.as_ref(), frames, warmup);
        video("1280x720 2500 kb/s", base(1280, 720, 2_500), noise, perf.as_ref(), frames, warmup);
    }
    echo(perf.as_ref(), 6, echo_chunks, echo_warmup);
}
