//! Who has the speaker. The board has one speaker and mixing several
//! viewers' voices makes all of them unintelligible, so the newest talker
//! wins: whoever started talking last is played, the others are muted
//! until they are the newest one still talking. Pure (time is passed in),
//! so the rules are tested without audio.
//!
//! "Talking" is judged by level, not by packets: a browser keeps sending
//! (digital) silence while push-to-talk is released.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::analysis::SILENCE_FLOOR_DBFS;

/// A pause shorter than this (between words) keeps a talker's turn.
pub const HANG: Duration = Duration::from_millis(600);

/// A viewer's voice: above this level a 20 ms frame counts as talking.
pub const VOICE_DBFS: f32 = SILENCE_FLOOR_DBFS;

#[derive(Clone, Copy, Debug)]
struct Spurt {
    started: Instant,
    last_voice: Instant,
}

/// Tracks who talks and decides whose audio reaches the speaker.
#[derive(Debug, Default)]
pub struct Floor {
    talking: HashMap<Arc<str>, Spurt>,
    holder: Option<Arc<str>>,
}

/// A change of who has the speaker, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloorChange {
    /// `talker` has the speaker; `over` is who was cut off, if anyone.
    Taken { talker: Arc<str>, over: Option<Arc<str>> },
    /// Nobody talks any more.
    Released,
}

impl Floor {
    /// Takes one frame's verdict (`voice`: above [`VOICE_DBFS`]) from
    /// `talker` and says whether that frame is to be played, and whether
    /// the speaker changed hands.
    pub fn admit(&mut self, talker: &Arc<str>, voice: bool, now: Instant) -> (bool, Option<FloorChange>) {
        if voice {
            let spurt = self.talking.entry(Arc::clone(talker)).or_insert(Spurt { started: now, last_voice: now });
            if now.saturating_duration_since(spurt.last_voice) > HANG {
                spurt.started = now;
            }
            spurt.last_voice = now;
        }
        self.talking.retain(|_, s| now.saturating_duration_since(s.last_voice) <= HANG);
        let newest = self.talking.iter().max_by_key(|(_, s)| s.started).map(|(name, _)| Arc::clone(name));
        let change = match (&self.holder, &newest) {
            (before, after) if before == after => None,
            (_, None) => Some(FloorChange::Released),
            (before, Some(after)) => Some(FloorChange::Taken {
                talker: Arc::clone(after),
                // Only a talker still talking is "cut off"; one who had
                // stopped simply handed over.
                over: before.as_ref().filter(|b| self.talking.contains_key(*b)).cloned(),
            }),
        };
        self.holder = newest;
        (self.holder.as_ref() == Some(talker), change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    struct Script {
        floor: Floor,
        now: Instant,
    }

    impl Script {
        /// One 20 ms frame from each of `frames` (talker, voice), in order;
        /// returns who was played.
        fn step(&mut self, frames: &[(&Arc<str>, bool)]) -> Vec<Arc<str>> {
            self.now += FRAME;
            let mut played = Vec::new();
            for &(talker, voice) in frames {
                if self.floor.admit(talker, voice, self.now).0 {
                    played.push(Arc::clone(talker));
                }
            }
            played
        }
    }

    #[test]
    fn newest_talker_wins_and_the_other_comes_back_when_it_stops() {
        let (a, b): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let mut s = Script { floor: Floor::default(), now: Instant::now() };
        // Nobody talks: nothing is played (the speaker plays silence).
        assert!(s.step(&[(&a, false), (&b, false)]).is_empty());
        // Alice talks.
        for _ in 0..10 {
            assert_eq!(s.step(&[(&a, true), (&b, false)]), vec![a.clone()]);
        }
        // Bob starts while Alice goes on: Bob wins, Alice is muted (from
        // her next frame: this one came before Bob's first).
        assert_eq!(s.step(&[(&a, true), (&b, true)]), vec![a.clone(), b.clone()]);
        for _ in 0..10 {
            assert_eq!(s.step(&[(&a, true), (&b, true)]), vec![b.clone()]);
        }
        // A short pause between Bob's words keeps his turn.
        for _ in 0..(HANG.as_millis() / FRAME.as_millis() - 1) {
            assert_eq!(s.step(&[(&a, true), (&b, false)]), vec![b.clone()], "Bob's pause is played as silence");
        }
        // Bob has stopped for longer than the hang time: Alice is heard again.
        let mut back = false;
        for _ in 0..5 {
            back |= s.step(&[(&a, true), (&b, false)]) == vec![a.clone()];
        }
        assert!(back);
        // Alice stops too: after the hang, nobody is played.
        for _ in 0..(HANG.as_millis() / FRAME.as_millis() + 2) {
            s.step(&[(&a, false), (&b, false)]);
        }
        assert!(s.step(&[(&a, false), (&b, false)]).is_empty());
    }

    #[test]
    fn changes_are_reported_once() {
        let (a, b): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let mut floor = Floor::default();
        let t0 = Instant::now();
        assert_eq!(floor.admit(&a, false, t0).1, None);
        assert_eq!(floor.admit(&a, true, t0).1, Some(FloorChange::Taken { talker: a.clone(), over: None }));
        assert_eq!(floor.admit(&a, true, t0 + FRAME).1, None);
        assert_eq!(
            floor.admit(&b, true, t0 + FRAME * 2).1,
            Some(FloorChange::Taken { talker: b.clone(), over: Some(a.clone()) })
        );
        let later = t0 + FRAME * 2 + HANG + FRAME;
        assert_eq!(floor.admit(&b, false, later).1, Some(FloorChange::Released));
        assert_eq!(floor.admit(&b, false, later + FRAME).1, None);
    }
}
