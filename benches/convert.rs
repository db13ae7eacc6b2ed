//! Per-frame cost of camera format conversion: YUYV → I420 (roomcam's:
//! yuvutils-rs + scalar fix of each line's tail; the scalar reference; bare
//! yuvutils-rs) and MJPEG decode (zune-jpeg → I420), at
//! 640x480 and 1280x720. `cargo bench --bench convert`. A plain main:
//! prints median and p95.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use roomcam::media::convert::{MjpegDecoder, yuyv_to_i420, yuyv_to_i420_scalar};

const WARMUP: usize = 10;
const RUNS: usize = 200;

fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (p(0.5), p(0.95))
}

fn time(mut f: impl FnMut()) -> (f64, f64) {
    let mut t = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let t0 = Instant::now();
        f();
        if i >= WARMUP {
            t.push(t0.elapsed());
        }
    }
    summary(t)
}

/// A camera-like picture: gradients plus noise (compresses like a real scene).
fn rgb(w: usize, h: usize) -> Vec<u8> {
    let mut seed: u32 = 0x1234_5678;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let n = (seed >> 28) as u8;
            out.extend_from_slice(&[(x * 255 / w) as u8 ^ n, (y * 255 / h) as u8, ((x + y) % 256) as u8 | n]);
        }
    }
    out
}

fn main() {
    println!("{:<38} {:>10} {:>10}", "per frame", "median ms", "p95 ms");
    for (w, h) in [(640usize, 480usize), (1280, 720)] {
        let yuyv: Vec<u8> = (0..w * h * 2).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let (m, p) = time(|| yuyv_to_i420(black_box(&yuyv), w * 2, w as u32, h as u32, &mut out).unwrap());
        println!("{:<38} {m:>10.3} {p:>10.3}", format!("YUYV→I420 roomcam {w}x{h}"));
        let (m, p) = time(|| yuyv_to_i420_scalar(black_box(&yuyv), w * 2, w as u32, h as u32, &mut out).unwrap());
        println!("{:<38} {m:>10.3} {p:>10.3}", format!("YUYV→I420 scalar {w}x{h}"));

        let mut y = vec![0u8; w * h];
        let mut u = vec![0u8; w * h / 4];
        let mut v = vec![0u8; w * h / 4];
        let (m, p) = time(|| {
            let mut planar = yuvutils_rs::YuvPlanarImageMut {
                y_plane: yuvutils_rs::BufferStoreMut::Borrowed(&mut y),
                y_stride: w as u32,
                u_plane: yuvutils_rs::BufferStoreMut::Borrowed(&mut u),
                u_stride: w as u32 / 2,
                v_plane: yuvutils_rs::BufferStoreMut::Borrowed(&mut v),
                v_stride: w as u32 / 2,
                width: w as u32,
                height: h as u32,
            };
            let packed = yuvutils_rs::YuvPackedImage {
                yuy: black_box(&yuyv),
                yuy_stride: w as u32 * 2,
                width: w as u32,
                height: h as u32,
            };
            yuvutils_rs::yuyv422_to_yuv420(&mut planar, &packed).unwrap();
        });
        println!("{:<38} {m:>10.3} {p:>10.3}", format!("YUYV→I420 bare yuvutils-rs {w}x{h}"));

        let pic = rgb(w, h);
        let mut jpeg = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut jpeg, 85);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
        enc.encode(&pic, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
        let mut dec = MjpegDecoder::new();
        let (m, p) = time(|| {
            black_box(dec.decode(black_box(&jpeg), SystemTime::now()).unwrap());
        });
        println!("{:<38} {m:>10.3} {p:>10.3}", format!("MJPEG→I420 {w}x{h} ({} KiB, 4:2:2)", jpeg.len() / 1024));
    }
}
