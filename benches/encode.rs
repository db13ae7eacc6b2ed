//! Per-frame cost of the media path: test pattern → I420 → H.264, and Opus.
//! `cargo bench --bench encode`. A plain main: prints median and p95.

use std::hint::black_box;
use std::time::{Duration, Instant};

use roomcam::media::AudioSource;
use roomcam::media::fixtures::add_luma_noise;
use roomcam::media::{
    AUDIO_FRAME_SAMPLES, H264Decoder, H264Encoder, H264Settings, OpusEncoder, OpusSettings, TestPattern, ToneSource,
    VideoEncoder,
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

/// What is encoded.
#[derive(Clone, Copy, PartialEq)]
enum Picture {
    /// The bare test pattern: almost static, it compresses to nearly
    /// nothing, which says little about a real camera.
    Pattern,
    /// The pattern with ±4 luma of sensor-like noise on every pixel: the
    /// pessimistic case for encode cost.
    Noise,
    /// `--camera test-busy`: motion and noise that fill the bitrate, as
    /// the weak-network tests need; the bitrate it reaches is printed.
    Busy,
}

fn video(label: &str, settings: H264Settings, picture: Picture) {
    let (w, h) = (settings.width, settings.height);
    let ceiling_kbps = settings.bitrate_kbps;
    let fps = settings.fps;
    let src = match picture {
        Picture::Busy => TestPattern::busy(w, h, fps),
        Picture::Pattern | Picture::Noise => TestPattern::new(w, h, fps),
    };
    let mut src = src.expect("pattern").without_pacing();
    let mut enc = H264Encoder::new(settings).expect("encoder");
    // What the viewer sees: luma PSNR of each decoded picture against the
    // one encoded (the cost of a cheaper encode, at the same bitrate).
    let mut dec = H264Decoder::new().expect("decoder");
    let (mut psnr_sum, mut psnr_n) = (0.0f64, 0usize);
    let (mut gen_t, mut enc_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0usize;
    let mut rng: u32 = 0x2545_F491;
    let start = std::time::SystemTime::now();
    for i in 0..WARMUP + FRAMES {
        let t0 = Instant::now();
        let mut frame = src.next_picture();
        // Stamped at the frame rate, so that rate control budgets (and the
        // bitrate below is) per second of video, not of wall-clock time.
        frame.captured_at = start + Duration::from_secs(1) * i as u32 / fps;
        if picture == Picture::Noise {
            add_luma_noise(&mut frame, &mut rng);
        }
        let t1 = Instant::now();
        let out = enc.encode(&frame, false).expect("encode");
        let t2 = Instant::now();
        if let Some(Ok(Some(decoded))) = out.as_ref().map(|e| dec.decode(&e.data))
            && i >= WARMUP
        {
            let luma = (w * h) as usize;
            psnr_sum += luma_psnr(&frame.data[..luma], &decoded.data[..luma]);
            psnr_n += 1;
        }
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
    let label = format!(
        "{label}{}",
        match picture {
            Picture::Pattern => "",
            Picture::Noise => ", +noise",
            Picture::Busy => ", test-busy",
        }
    );
    let kbps = bytes as f64 * 8.0 * f64::from(fps) / FRAMES as f64 / 1000.0;
    let psnr = psnr_sum / psnr_n.max(1) as f64;
    println!(
        "{label:<44} pattern {g50:6.2} / {g95:6.2}   encode {e50:6.2} / {e95:6.2}   total {t50:6.2} / {t95:6.2} ms   ({:.0} B/frame, {kbps:.0} of {ceiling_kbps} kbit/s, luma PSNR {psnr:.1} dB)",
        bytes as f64 / FRAMES as f64
    );
}

fn luma_psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 { 99.0 } else { 10.0 * (255.0f64.powi(2) / mse).log10() }
}

fn main() {
    println!("ms median / p95 over {FRAMES} frames after {WARMUP} warm-up; pattern generation unpaced");
    let base =
        |w, h, kbps| H264Settings { width: w, height: h, fps: 30, bitrate_kbps: kbps, ..H264Settings::default() };
    for picture in [Picture::Pattern, Picture::Noise] {
        video("640x480 1000 kb/s", base(640, 480, 1_000), picture);
        video(
            "640x480 1000 kb/s, low complexity",
            H264Settings { low_complexity: true, ..base(640, 480, 1_000) },
            picture,
        );
        video("1280x720 2500 kb/s", base(1280, 720, 2_500), picture);
        video(
            "1280x720 2500 kb/s, low complexity",
            H264Settings { low_complexity: true, ..base(1280, 720, 2_500) },
            picture,
        );
        video(
            "1280x720 2500 kb/s, 2 threads, 1200 B slices",
            H264Settings { threads: 2, max_slice_bytes: Some(1_200), ..base(1280, 720, 2_500) },
            picture,
        );
    }
    video("640x480@25 1500 kb/s", H264Settings { fps: 25, ..base(640, 480, 1_500) }, Picture::Busy);
    // The Pi Zero 2 W's profile (board/profiles/pi-zero-2w.toml): what low
    // complexity saves there, and what it costs the picture.
    let zero = H264Settings { fps: 15, threads: 2, max_slice_bytes: Some(1_100), ..base(640, 480, 600) };
    video("640x480@15 600 kb/s, 2 threads (Zero 2 W)", zero.clone(), Picture::Busy);
    video(
        "640x480@15 600 kb/s, 2 threads, low complexity",
        H264Settings { low_complexity: true, ..zero },
        Picture::Busy,
    );

    for complexity in [10u8, 5] {
        let mut tone = ToneSource::new(660.0).without_pacing();
        let settings = OpusSettings { complexity, ..OpusSettings::default() };
        let mut opus = OpusEncoder::with_settings(&settings).expect("opus");
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
        let label = format!("opus 32 kb/s mono, complexity {complexity}");
        println!("{label:<44} encode {o50:6.3} / {o95:6.3} ms per 20 ms frame (500 frames)");
    }
}
