//! Synthetic sources, the ones the CLI offers when there is no device or
//! for tests: the test pattern (`--camera test`), a simulated camera that
//! encodes H.264 itself (`--camera test-h264`) and a tone
//! (`--microphone test`). All run in real time, like the devices they
//! stand in for.

use std::time::{Duration, Instant};

mod h264_camera;
pub(crate) mod test_pattern;
mod tone;

pub use h264_camera::H264TestCamera;
pub use test_pattern::{Stamp, TestPattern};
pub use tone::ToneSource;

/// Releases item `n` at `start + n / rate`, computed from the start each
/// time so rounding never accumulates into drift. If the consumer falls more
/// than `max_lag` behind (it paused, or the machine stalled) the schedule is
/// re-anchored instead of bursting out the backlog, as a real device would
/// drop rather than replay.
struct Pacer {
    rate: u64,
    start: Instant,
    next: u64,
    max_lag: Duration,
    enabled: bool,
}

impl Pacer {
    fn new(rate: u32, first: u64, max_lag: Duration) -> Self {
        Self { rate: u64::from(rate.max(1)), start: Instant::now(), next: first, max_lag, enabled: true }
    }

    fn due(&self, n: u64) -> Duration {
        Duration::from_nanos((u128::from(n) * 1_000_000_000 / u128::from(self.rate)) as u64)
    }

    fn wait(&mut self) {
        if !self.enabled {
            return;
        }
        let due = self.start + self.due(self.next);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now - due > self.max_lag {
            self.start = now.checked_sub(self.due(self.next)).unwrap_or(now);
        }
        self.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_does_not_drift() {
        // 100 items at 1 kHz with a sleeping consumer: the total stays near
        // 100 ms because each deadline is computed from the start.
        let mut p = Pacer::new(1000, 0, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..=100 {
            p.wait();
        }
        let e = t0.elapsed();
        assert!(e >= Duration::from_millis(100) && e < Duration::from_millis(200), "{e:?}");
    }

    #[test]
    fn pacer_skips_instead_of_bursting_after_a_stall() {
        let mut p = Pacer::new(100, 0, Duration::from_millis(20));
        p.wait();
        std::thread::sleep(Duration::from_millis(100));
        p.wait(); // late: re-anchors
        let t0 = Instant::now();
        p.wait();
        p.wait();
        assert!(t0.elapsed() >= Duration::from_millis(15), "burst after stall: {:?}", t0.elapsed());
    }
}
