//! The fuzz targets' bodies (roomcam::media::fuzzing, also used by
//! fuzz/fuzz_targets/*) as a plain stable-toolchain test: over the corpus
//! in fuzz/corpus and over deterministic mutations of generated seeds
//! (bit flips, truncation, splices). cargo-fuzz (nightly) explores further;
//! this keeps the "never panics on bad input" property checked in CI.
//!
//! `ROOMCAM_WRITE_CORPUS=1 cargo test --test fuzz_corpus` (re)writes the
//! generated seeds into fuzz/corpus/ for cargo-fuzz.

use std::path::Path;

use roomcam::media::fuzzing::{camera_buffer, h264_stream};
use roomcam::media::{H264Encoder, H264Settings, TestPattern, VideoEncoder};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => d.truncate(rng.below(d.len())),
            2 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0x00, 0xFF, 0x7F, 0x80, 0x01][rng.below(5)];
            }
            3 => {
                let i = rng.below(d.len() + 1);
                let n = rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(i..i, junk);
            }
            _ if d.len() > 8 => {
                // Duplicate a slice (repeated markers / NAL units).
                let a = rng.below(d.len() - 4);
                let b = (a + 1 + rng.below(64)).min(d.len());
                let chunk = d[a..b].to_vec();
                let at = rng.below(d.len());
                d.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    d
}

fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(dir);
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect()
}

fn jpeg_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (w, h, q, sf) in [
        (16u16, 16u16, 90u8, jpeg_encoder::SamplingFactor::R_4_2_0),
        (33, 17, 50, jpeg_encoder::SamplingFactor::R_4_2_2),
        (64, 48, 75, jpeg_encoder::SamplingFactor::R_4_4_4),
    ] {
        let rgb: Vec<u8> = (0..w as usize * h as usize * 3).map(|i| (i * 31 % 255) as u8).collect();
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, q);
        enc.set_sampling_factor(sf);
        enc.encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        seeds.push(out);
    }
    seeds
}

fn h264_seeds() -> Vec<Vec<u8>> {
    let mut enc = H264Encoder::new(H264Settings {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_kbps: 200,
        ..H264Settings::default()
    })
    .unwrap();
    let mut src = TestPattern::new(320, 240, 30).unwrap().without_pacing();
    let mut seeds = Vec::new();
    for _ in 0..3 {
        let frame = src.next_picture();
        if let Some(ev) = enc.encode(&frame, false).unwrap() {
            seeds.push(ev.data.to_vec());
        }
    }
    seeds
}

fn write_corpus(dir: &str, seeds: &[Vec<u8>]) {
    if std::env::var_os("ROOMCAM_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("ROOMCAM_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn camera_buffers_never_panic() {
    let mut seeds = jpeg_seeds();
    write_corpus("mjpeg", &seeds);
    seeds.extend(corpus("mjpeg"));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for s in &seeds {
        camera_buffer(s);
    }
    for _ in 0..iterations(3_000) {
        let seed = &seeds[rng.below(seeds.len())];
        camera_buffer(&mutate(&mut rng, seed));
    }
}

#[test]
fn h264_streams_never_panic() {
    let mut seeds = h264_seeds();
    write_corpus("h264", &seeds);
    seeds.extend(corpus("h264"));
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for s in &seeds {
        h264_stream(s);
    }
    for _ in 0..iterations(400) {
        let seed = &seeds[rng.below(seeds.len())];
        h264_stream(&mutate(&mut rng, seed));
    }
}
