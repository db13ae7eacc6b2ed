//! How the echo canceller was chosen (issue 12 point 5): WebRTC's AEC3
//! (`sonora`, what roomcam uses) against speexdsp (`aec-rs`, with and
//! without its preprocessor) on the room of the echo tests
//! ([`echo_room`]): ERLE on far-end-only stretches after 2 s (2–7 s /
//! 10–14 s), the output against a clean talker in the room during double
//! talk (7–10 s) at three talker levels, and wall time per 10 ms chunk.
//!
//! `cargo run --release --features echo-comparison --example echo_comparison`

use roomcam::media::echo::{Aec3, CHUNK_SAMPLES, EchoCanceller, EchoError};
use roomcam::media::fixtures::echo_room;

/// speexdsp's canceller (48 kHz, 10 ms frames) behind roomcam's seam.
struct Speex {
    aec: aec_rs::Aec,
    mic: Vec<i16>,
    far: Vec<i16>,
}

// SAFETY: aec_rs::Aec holds raw pointers to speexdsp state that this value
// alone owns; speexdsp keeps no thread-local state, so moving it to another
// thread is sound (it is only ever used by one thread at a time).
unsafe impl Send for Speex {}

impl Speex {
    fn new(filter_ms: usize, preprocess: bool) -> Self {
        let config = aec_rs::AecConfig {
            frame_size: CHUNK_SAMPLES,
            filter_length: (filter_ms * 48) as i32,
            sample_rate: 48_000,
            enable_preprocess: preprocess,
        };
        Self { aec: aec_rs::Aec::new(&config), mic: vec![0; CHUNK_SAMPLES], far: vec![0; CHUNK_SAMPLES] }
    }
}

impl EchoCanceller for Speex {
    fn played(&mut self, far: &[i16]) -> Result<(), EchoError> {
        self.far.copy_from_slice(far);
        Ok(())
    }

    fn cancel(&mut self, mic: &mut [i16]) -> Result<(), EchoError> {
        self.mic.copy_from_slice(mic);
        self.aec.cancel_echo(&self.mic, &self.far, mic);
        Ok(())
    }
}

fn main() {
    type Make = fn() -> Box<dyn EchoCanceller>;
    let candidates: [(&str, Make); 3] = [
        ("AEC3 (sonora 0.2.0)", || Box::new(Aec3::new())),
        ("speexdsp (aec-rs 1.0.0), 200 ms filter", || Box::new(Speex::new(200, false))),
        ("speexdsp (aec-rs 1.0.0), 200 ms filter + preprocessor", || Box::new(Speex::new(200, true))),
    ];
    for (name, make) in candidates {
        println!("{name}");
        for (delay_ms, gain_db) in [(30, -6.0), (80, -9.0), (120, -12.0)] {
            for near_db in [-6.0, 0.0, 6.0] {
                let r = echo_room(make().as_mut(), delay_ms, gain_db, near_db);
                println!(
                    "  {delay_ms:3} ms {gain_db:5.1} dB: ERLE {:5.1} / {:5.1} dB, talker {near_db:+3.0} dB vs echo: out {:+5.1} dB, {:6.1} us per 10 ms",
                    r.erle_db[0], r.erle_db[1], r.double_talk_db, r.us_per_chunk
                );
            }
        }
    }
}
