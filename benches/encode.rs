//! Per-frame cost of the media path: test pattern → I420 → H.264, and Opus.
//! `cargo bench --bench encode`. A plain main: prints median and p95.

use std::hint::black_box;
use std::time::{Duration, Instant};

use roomcam::media::AudioSource;
use roomcam::media::fixtures::add_luma_noise;
use roomcam::media::{
    AUDIO_FRAME_SAMPLES, H264Encoder, H264Settings, OpusEncoder, TestPattern, ToneSource, VideoEncoder,
};

const WARMUP: usize = 20;
const FRAMES: usize = 150;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, p95) in ms.
fn summary(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let p = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    (p(0.5), p(0.95))
}

/// `noise`: add ±4 luma of sensor-like noise to every pixel. The bare test
/// pattern is almost static and compresses to nearly nothing, which says
/// little about a real camera; noise is the pessimistic case.
fn video(label: &str, settings: H264Settings, noise: bool) {
    let (w, h) = (settings.width, settings.height);
    let mut src = TestPattern::new(w, h, settings.fps).expect("pattern").without_pacing();
    let mut enc = H264Encoder::new(settings).expect("encoder");
    let (mut gen_t, mut enc_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0usize;
    let mut rng: u32 = 0x2545_F491;
    for i in 0..WARMUP + FRAMES {
        let t0 = Instant::now();
        let mut frame = src.next_picture();
        if noise {
            add_luma_noise(&mut frame, &mut rng);
        }
        let t1 = Instant::now();
        let out = enc.encode(&frame, false).expect("encode");
        let t2 = Instant::now();
        if i >= WARMUP {
            gen_t.push(t1 - t0);
            enc_t.push(t2 - t1);
            total_t.push(t2 - t0);
            bytes += out.map_or(0, |e| e.data.len());
        }
    }
    let (g50, g95) = summary(&mut gen_t);
    let (e50, e95) = summary(&mut enc_t);
    let (t50, t95) = summary(&mut total_t);
    let label = format!("{label}{}", if noise { ", +noise" } else { "" });
    println!(
        "{label:<44} pattern {g50:6.2} / {g95:6.2}   encode {e50:6.2} / {e95:6.2}   total {t50:6.2} / {t95:6.2} ms   ({:.0} B/frame)",
        bytes as f64 / FRAMES as f64
    );
}

fn main() {
    println!("ms median / p95 over {FRAMES} frames after {WARMUP} warm-up; pattern generation unpaced");
    let base =
        |w, h, kbps| H264Settings { width: w, height: h, fps: 30, bitrate_kbps: kbps, ..H264Settings::default() };
    for noise in [false, true] {
        video("640x480 1000 kb/s", base(640, 480, 1_000), noise);
        video(
            "640x480 1000 kb/s, low complexity",
            H264Settings { low_complexity: true, ..base(640, 480, 1_000) },
            noise,
        );
        video("1280x720 2500 kb/s", base(1280, 720, 2_500), noise);
        video(
            "1280x720 2500 kb/s, low complexity",
            H264Settings { low_complexity: true, ..base(1280, 720, 2_500) },
            noise,
        );
        video(
            "1280x720 2500 kb/s, 2 threads, 1200 B slices",
            H264Settings { threads: 2, max_slice_bytes: Some(1_200), ..base(1280, 720, 2_500) },
            noise,
        );
    }

    let mut tone = ToneSource::new(660.0).without_pacing();
    let mut opus = OpusEncoder::new(32_000).expect("opus");
    let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
    let mut times = Vec::new();
    for i in 0..50 + 500 {
        tone.read_frame(&mut pcm).expect("tone");
        let t0 = Instant::now();
        black_box(opus.encode(black_box(&pcm)).expect("encode"));
        if i >= 50 {
            times.push(t0.elapsed());
        }
    }
    let (o50, o95) = summary(&mut times);
    println!("{:<44} encode {o50:6.3} / {o95:6.3} ms per 20 ms frame (500 frames)", "opus 32 kb/s mono");
}
