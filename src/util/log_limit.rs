//! Keeping a repeated warning from flooding the journal: a broken device, a
//! peer sending junk or a sound card that keeps underrunning can fail many
//! times a second, and the journal is the operator's only view of the board.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock_ignoring_poison;

/// Which occurrences of a repeated message are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// One per interval: the first after `interval` since the last written.
    OncePer(Duration),
    /// The first, then every `n`th (the 1st, the n+1st, the 2n+1st, …).
    FirstAndEvery(u64),
    /// The first of each burst: an occurrence after `quiet` without any.
    FirstOfEachBurst(Duration),
}

/// Counts the occurrences of one kind of message and says which of them to
/// write. Takes `&self`, so one limit can be shared between threads.
#[derive(Debug)]
pub struct LogLimit {
    rule: Rule,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: u64,
    held_back: u64,
    last_written: Option<Instant>,
    last_seen: Option<Instant>,
}

/// An occurrence that is to be written, and what it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Occurrences held back since the last one written.
    pub held_back: u64,
    /// Occurrences so far, this one included.
    pub total: u64,
}

impl LogLimit {
    /// At most one message per `interval`.
    pub fn once_per(interval: Duration) -> Self {
        Self::new(Rule::OncePer(interval))
    }

    /// The first message, then every `n`th (`n` = 0 counts as 1).
    pub fn first_and_every(n: u64) -> Self {
        Self::new(Rule::FirstAndEvery(n.max(1)))
    }

    /// The first message of each burst, a burst ending after `quiet`
    /// without any; the next burst's first message can then say how many
    /// the previous one held back.
    pub fn first_of_each_burst(quiet: Duration) -> Self {
        Self::new(Rule::FirstOfEachBurst(quiet))
    }

    fn new(rule: Rule) -> Self {
        Self { rule, state: Mutex::default() }
    }

    /// Records one occurrence now: `Some` if it is to be written.
    pub fn allow(&self) -> Option<Written> {
        self.allow_at(Instant::now())
    }

    /// Records one occurrence at `now` (time is passed in so the rules are
    /// tested without sleeping).
    pub fn allow_at(&self, now: Instant) -> Option<Written> {
        let mut state = lock_ignoring_poison(&self.state);
        state.total += 1;
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let write = match self.rule {
            Rule::OncePer(interval) => since(state.last_written).is_none_or(|d| d >= interval),
            Rule::FirstAndEvery(n) => (state.total - 1).is_multiple_of(n),
            Rule::FirstOfEachBurst(quiet) => since(state.last_seen).is_none_or(|d| d > quiet),
        };
        state.last_seen = Some(now);
        if !write {
            state.held_back += 1;
            return None;
        }
        state.last_written = Some(now);
        Some(Written { held_back: std::mem::take(&mut state.held_back), total: state.total })
    }
}

/// `log::warn!` through a [`LogLimit`]: written when the limit allows it,
/// with the number of similar messages held back since the last one.
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(written) = $limit.allow() {
            if written.held_back > 0 {
                log::warn!("{} ({} similar suppressed)", format_args!($($arg)+), written.held_back);
            } else {
                log::warn!($($arg)+);
            }
        }
    };
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `limit` one occurrence at each of `at_ms` (ms from now) and
    /// checks which are written.
    fn check(limit: &LogLimit, at_ms: &[u64], want: &[Option<Written>]) {
        let t0 = Instant::now();
        let got: Vec<_> = at_ms.iter().map(|&ms| limit.allow_at(t0 + MS * ms as u32)).collect();
        assert_eq!(got, want);
    }

    fn w(held_back: u64, total: u64) -> Option<Written> {
        Some(Written { held_back, total })
    }

    #[test]
    fn once_per_lets_one_through_per_interval() {
        let limit = LogLimit::once_per(MS * 100);
        check(
            &limit,
            &[0, 1, 99, 100, 150, 199, 200, 500],
            &[w(0, 1), None, None, w(2, 4), None, None, w(2, 7), w(0, 8)],
        );
    }

    #[test]
    fn once_per_counts_what_it_held_back_across_threads() {
        let limit = LogLimit::once_per(Duration::from_secs(3600));
        let written = std::thread::scope(|s| {
            let threads: Vec<_> =
                (0..4).map(|_| s.spawn(|| (0..100).filter(|_| limit.allow().is_some()).count())).collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum::<usize>()
        });
        assert_eq!(written, 1);
        let state = lock_ignoring_poison(&limit.state);
        assert_eq!((state.total, state.held_back), (400, 399));
    }

    #[test]
    fn first_and_every_nth() {
        check(&LogLimit::first_and_every(3), &[0; 8], &[w(0, 1), None, None, w(2, 4), None, None, w(2, 7), None]);
        // Time plays no part.
        let limit = LogLimit::first_and_every(500);
        let t0 = Instant::now();
        let written: Vec<u64> = (0..1_200).filter_map(|_| limit.allow_at(t0)).map(|w| w.total).collect();
        assert_eq!(written, [1, 501, 1_001]);
    }

    #[test]
    fn first_of_each_burst_waits_for_a_quiet_spell() {
        // A burst every 500 ms for 3 s is one burst: the quiet spell is
        // measured from the last occurrence, not from the last written.
        check(
            &LogLimit::first_of_each_burst(MS * 1_000),
            &[0, 500, 1_000, 1_500, 2_000, 3_000, 4_001, 4_002],
            &[w(0, 1), None, None, None, None, None, w(5, 7), None],
        );
    }
}
