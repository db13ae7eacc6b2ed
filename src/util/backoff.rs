//! Pacing retries of something that keeps failing (a camera that was
//! unplugged, a sound card that went away, a signaling server that is down):
//! soon after it comes back, without spinning while it is gone.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off: `first`, doubling after every failure up to `cap`,
/// and back to `first` on [`reset`](Self::reset). With
/// [`with_jitter`](Self::with_jitter) each delay is drawn between half of
/// and the whole exponential delay, so that many clients do not retry in step.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    jitter: bool,
    /// Failures since the last reset.
    attempt: u32,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap, jitter: false, attempt: 0 }
    }

    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// It worked: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How long to wait after this failure; every call doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// As [`next_delay`](Self::next_delay), drawing the jitter from `rng`.
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.first.saturating_mul(1u32 << self.attempt.min(31)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        if self.jitter { ceiling.mul_f64(rng.random_range(0.5..=1.0)) } else { ceiling }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(MS * 50, MS * 500);
        let delays: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [MS * 50, MS * 100, MS * 200, MS * 400, MS * 500, MS * 500, MS * 500]);
        b.reset();
        assert_eq!(b.next_delay(), MS * 50);
        // Far past the cap: no overflow, still the cap.
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), MS * 500);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let mut rng = rand::rng();
        let mut b = Backoff::new(MS * 250, Duration::from_secs(5)).with_jitter();
        for attempt in 0..40 {
            let ceiling = (MS * 250).saturating_mul(1 << attempt.min(31)).min(Duration::from_secs(5));
            let d = b.next_delay_with(&mut rng);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?} for {ceiling:?}");
        }
        let late: Vec<_> = (0..20).map(|_| b.next_delay_with(&mut rng)).collect();
        assert!(late.iter().any(|d| *d != late[0]), "no jitter: {late:?}");
    }
}
