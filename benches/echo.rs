//! Cost of echo cancellation (issue 12 point 5) per 10 ms chunk on this
//! machine: AEC3 on the simulated room of the echo tests (speech-like far
//! end, echo 80 ms late, −9 dB, a reverb tail; double talk from 7 to 10 s),
//! and the microphone frame while the canceller rests (speaker silent).
//! `cargo bench --bench echo`. A plain main: prints median, p95 and mean.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcam::media::AUDIO_FRAME_SAMPLES;
use roomcam::media::echo::{Aec3, CHUNK_SAMPLES, EchoCanceller, EchoRemoval, Reference};
use roomcam::media::fixtures::{EchoPath, Noise, speech_like};

const SECOND: usize = 48_000;

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// (median, p95, mean) in µs.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let p = |q: f64| us(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    let mean = us(samples.iter().sum::<Duration>()) / samples.len() as f64;
    (p(0.5), p(0.95), mean)
}

fn main() {
    let n = 14 * SECOND;
    let far = speech_like(n, 140.0, 16_000.0, 1);
    let echo = EchoPath::new(80, -9.0, 2).process(&far);
    let talker = speech_like(3 * SECOND, 230.0, 5_000.0, 3);
    let mut noise = Noise::new(4);
    let mic: Vec<i16> = (0..n)
        .map(|i| {
            let near = if (7 * SECOND..10 * SECOND).contains(&i) { talker[i - 7 * SECOND] } else { 0 };
            echo[i] + near + (20.0 * noise.sample()) as i16
        })
        .collect();
    println!("echo cancellation, µs per 10 ms chunk (48 kHz mono): median / p95 / mean");
    for round in 0..3 {
        let mut aec = Aec3::new();
        let mut out = mic.clone();
        let mut times = Vec::with_capacity(n / CHUNK_SAMPLES);
        for (f, m) in far.chunks_exact(CHUNK_SAMPLES).zip(out.chunks_exact_mut(CHUNK_SAMPLES)) {
            let t0 = Instant::now();
            aec.played(black_box(f)).expect("played");
            aec.cancel(black_box(m)).expect("cancel");
            times.push(t0.elapsed());
        }
        // The first 2 s (convergence) aside.
        let (m50, m95, mean) = summary(&mut times[200..]);
        println!(
            "  AEC3 (sonora), talk-back, round {round}: {m50:7.1} / {m95:7.1} / {mean:7.1}  ({:.2} % of a core)",
            mean / 10_000.0 * 100.0
        );
    }
    // Resting: nothing played; the microphone thread's whole echo step.
    let reference = Arc::new(Reference::new(4_800));
    let mut removal = EchoRemoval::new(Box::new(Aec3::new()), Arc::clone(&reference));
    let mut times = Vec::new();
    let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
    for _ in 0..5_000 {
        let t0 = Instant::now();
        removal.process(black_box(&mut frame)).expect("process");
        times.push(t0.elapsed());
    }
    assert!(removal.resting());
    let (m50, m95, mean) = summary(&mut times);
    // Per 10 ms, as above: a frame is two chunks.
    println!("  resting (speaker silent), per 10 ms: {:7.3} / {:7.3} / {:7.3}", m50 / 2.0, m95 / 2.0, mean / 2.0);
}
