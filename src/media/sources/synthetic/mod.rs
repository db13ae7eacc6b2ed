//! Synthetic sources, the ones the CLI offers when there is no device or
//! for tests: the test pattern (`--camera test`; `--camera test-busy` adds
//! motion and noise so it costs a real camera's bits), a simulated camera that
//! encodes H.264 itself (`--camera test-h264`) and a tone
//! (`--microphone test`), and a recorded microphone (`--microphone
//! wav:PATH`). All run in real time, like the devices they stand in for.

use std::time::{Duration, Instant};

mod h264_camera;
pub(crate) mod test_pattern;
mod tone;
mod wav;

pub use h264_camera::H264TestCamera;
pub use test_pattern::{Stamp, TestPattern};
pub use tone::ToneSource;
pub use wav::{WAV_PREFIX, WavSource};

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
        let delay = self.delay_at(Instant::now());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }

    /// How long a consumer asking at `now` waits for the next item (zero
    /// when it is due already), moving on to the item after it. Time is
    /// passed in, so the schedule is tested without sleeping.
    fn delay_at(&mut self, now: Instant) -> Duration {
        let due = self.start + self.due(self.next);
        let mut delay = Duration::ZERO;
        if now < due {
            delay = due - now;
        } else if now - due > self.max_lag {
            self.start = now.checked_sub(self.due(self.next)).unwrap_or(now);
        }
        self.next += 1;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs `p` on simulated time for `n` items: the consumer waits as
    /// told, then wakes up `late(i)` after item `i` was due. Returns when
    /// each item was released, from the pacer's start.
    fn release_times(p: &mut Pacer, n: usize, late: impl Fn(usize) -> Duration) -> Vec<Duration> {
        let t0 = p.start;
        let mut now = t0;
        (0..n)
            .map(|i| {
                now += p.delay_at(now) + late(i);
                now - t0
            })
            .collect()
    }

    #[test]
    fn pacer_does_not_drift() {
        // 1 kHz, and a consumer that wakes up as much as 0.9 ms late every
        // time: each item still comes at its own deadline, n ms from the
        // start (plus that one wake-up's lateness). Lateness never adds up,
        // because each deadline is computed from the start.
        let mut p = Pacer::new(1000, 0, Duration::from_secs(1));
        let late = |i: usize| Duration::from_micros((i as u64 * 370) % 900);
        let released = release_times(&mut p, 101, late);
        for (i, &t) in released.iter().enumerate() {
            assert_eq!(t, MS * i as u32 + late(i), "item {i}");
        }
        // A 5 ms stall, within the allowed lag: the items it held up come
        // at once, and the schedule is back on time after it.
        let mut p = Pacer::new(1000, 0, Duration::from_secs(1));
        let released = release_times(&mut p, 20, |i| if i == 10 { MS * 5 } else { Duration::ZERO });
        let ms: Vec<u32> = released.iter().map(|t| t.as_millis() as u32).collect();
        assert_eq!(ms, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 15, 15, 15, 15, 15, 16, 17, 18, 19]);
    }

    #[test]
    fn pacer_skips_instead_of_bursting_after_a_stall() {
        // 100 Hz, at most 20 ms of lag caught up.
        let mut p = Pacer::new(100, 0, MS * 20);
        let t0 = p.start;
        assert_eq!(p.delay_at(t0), Duration::ZERO, "item 0 is due at once");
        // Item 1, due at 10 ms, is asked for at 100 ms: the schedule starts
        // again from it instead of releasing items 2 to 9 at once.
        let late = t0 + MS * 100;
        assert_eq!(p.delay_at(late), Duration::ZERO);
        assert_eq!(p.delay_at(late), MS * 10, "burst after the stall");
        assert_eq!(p.delay_at(late + MS * 10), MS * 10);
    }
}
