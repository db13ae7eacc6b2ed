//! What the echo canceller does and costs: ERLE with the echo alone at
//! several delays, how much of a near-end talker over the echo comes
//! through, and the time per 10 ms frame (capture and render both).
//!
//!   cargo bench --bench echo

use std::time::Instant;

use roomcam::media::AUDIO_FRAME_SAMPLES;
use roomcam::media::echo_canceller::EchoCanceller;
use roomcam::media::fixtures::{EchoRoom, Voice};

fn main() {
    println!("echo alone, 10 dB softer, judged after 2 s of 8 s:");
    for delay_ms in [40, 60, 120] {
        let room = EchoRoom { delay_ms, echo_gain: 0.316, near_from_s: f32::INFINITY, judged_from_s: 2.0 };
        println!("  delay {delay_ms:>3} ms: ERLE {:.1} dB", room.run(8.0).erle_db());
    }
    println!("a near-end talker over the echo (from 4 s, judged from 5 s of 12 s; aim: within 3 dB):");
    for echo_gain in [0.316f32, 0.2, 0.1] {
        let room = EchoRoom { delay_ms: 60, echo_gain, near_from_s: 4.0, judged_from_s: 5.0 };
        let e = room.run(12.0);
        println!("  echo {:>5.1} dB: near-end kept {:+.1} dB", 20.0 * f64::from(echo_gain).log10(), e.near_kept_db());
    }
    let (mut canceller, _) = EchoCanceller::new();
    let mut far = Voice::new(1, 8000.0, 4.0);
    let mut near = Voice::new(2, 3000.0, 3.0);
    let frames = 3000;
    let started = Instant::now();
    for _ in 0..frames {
        canceller.render(&far.frame()).unwrap();
        let mut mic = near.frame();
        canceller.cancel(&mut mic).unwrap();
    }
    let per_10ms = started.elapsed() / (frames * 2);
    println!(
        "cost: {:.1} µs per 10 ms frame ({:.2} % of one core), {} frames of {} samples",
        per_10ms.as_secs_f64() * 1e6,
        per_10ms.as_secs_f64() / 0.010 * 100.0,
        frames * 2,
        AUDIO_FRAME_SAMPLES / 2
    );
}
