//! Night mode for the nursery's usual camera, a Pi NoIR with infrared
//! light: the picture in greyscale (the chroma dropped, so IR's pink cast is
//! gone and the bits go to luma), on, off, or by the picture's brightness.
//! Pure: the capture thread feeds it pictures and the time.

use std::time::{Duration, Instant};

use super::I420Frame;
use crate::config::NightChoice;

/// Mean luma (0–255) under which the room counts as dark, and over which
/// it counts as lit again: apart, so that a room at dusk does not flap.
pub const DARK_LUMA: u8 = 45;
pub const LIT_LUMA: u8 = 90;
/// How long the room must stay dark (or lit) before the mode changes: a
/// lamp switched off for a moment, or a hand over the lens, does not.
pub const HOLD: Duration = Duration::from_secs(20);
/// How often a picture's brightness is looked at (each look reads one
/// pixel in 64).
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Whether pictures are sent in greyscale now, and when that changes.
#[derive(Debug)]
pub struct NightSwitch {
    choice: NightChoice,
    night: bool,
    /// Since when the brightness has said the other mode, under `auto`.
    other_since: Option<Instant>,
    last_look: Option<Instant>,
}

/// A change of mode, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NightChange {
    pub night: bool,
    pub mean_luma: u8,
}

impl NightSwitch {
    pub fn new(choice: NightChoice) -> NightSwitch {
        NightSwitch { choice, night: choice == NightChoice::On, other_since: None, last_look: None }
    }

    pub fn night(&self) -> bool {
        self.night
    }

    /// Looks at `frame` (at most every [`LOOK_EVERY`]) under `auto`, and
    /// turns it grey at night. Returns the change of mode, if this made one.
    pub fn process(&mut self, frame: &mut I420Frame, now: Instant) -> Option<NightChange> {
        let change = match self.choice {
            NightChoice::Auto if self.last_look.is_none_or(|at| now.saturating_duration_since(at) >= LOOK_EVERY) => {
                self.last_look = Some(now);
                self.observe(mean_luma(frame), now)
            }
            _ => None,
        };
        if self.night {
            greyscale(frame);
        }
        change
    }

    /// One brightness reading under `auto`.
    pub fn observe(&mut self, mean_luma: u8, now: Instant) -> Option<NightChange> {
        let says_night = if self.night { mean_luma < LIT_LUMA } else { mean_luma < DARK_LUMA };
        if says_night == self.night {
            self.other_since = None;
            return None;
        }
        let since = *self.other_since.get_or_insert(now);
        if now.saturating_duration_since(since) < HOLD {
            return None;
        }
        self.night = says_night;
        self.other_since = None;
        Some(NightChange { night: self.night, mean_luma })
    }
}

/// The mean of one luma sample in 64 (every 8th pixel of every 8th row).
pub fn mean_luma(frame: &I420Frame) -> u8 {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let luma = &frame.data[..(w * h).min(frame.data.len())];
    let (mut sum, mut n) = (0u64, 0u64);
    for row in luma.chunks(w.max(1)).step_by(8) {
        for &y in row.iter().step_by(8) {
            sum += u64::from(y);
            n += 1;
        }
    }
    (sum / n.max(1)) as u8
}

/// Drops the chroma: both planes to their neutral value.
pub fn greyscale(frame: &mut I420Frame) {
    let luma = frame.width as usize * frame.height as usize;
    if let Some(chroma) = frame.data.get_mut(luma..) {
        chroma.fill(128);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn frame(luma: u8, chroma: u8) -> I420Frame {
        let (w, h) = (64u32, 48u32);
        let mut data = vec![luma; (w * h) as usize];
        data.extend(std::iter::repeat_n(chroma, (w * h / 2) as usize));
        I420Frame { width: w, height: h, data, captured_at: SystemTime::now() }
    }

    #[test]
    fn on_and_off_are_fixed_whatever_the_room() {
        let t0 = Instant::now();
        let mut on = NightSwitch::new(NightChoice::On);
        let mut off = NightSwitch::new(NightChoice::Off);
        for s in 0..60 {
            let at = t0 + Duration::from_secs(s);
            let mut bright = frame(200, 60);
            assert_eq!(on.process(&mut bright, at), None);
            assert!(bright.data[64 * 48..].iter().all(|&c| c == 128), "on: grey");
            let mut dark = frame(10, 60);
            assert_eq!(off.process(&mut dark, at), None);
            assert!(dark.data[64 * 48..].iter().all(|&c| c == 60), "off: colour kept");
        }
    }

    #[test]
    fn auto_follows_the_room_after_it_stayed_dark_or_lit() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut auto = NightSwitch::new(NightChoice::Auto);
        assert!(!auto.night(), "auto starts in day mode");
        // A hand over the lens for 10 s: nothing.
        for s in 0..10 {
            assert_eq!(auto.observe(20, at(s)), None);
        }
        assert_eq!(auto.observe(150, at(10)), None);
        // The lamp goes off for good: night after HOLD.
        for s in 11..31 {
            assert_eq!(auto.observe(20, at(s)), None, "at {s} s");
        }
        assert_eq!(auto.observe(20, at(31)), Some(NightChange { night: true, mean_luma: 20 }));
        // Dusk-level light (between the thresholds) keeps it night.
        for s in 32..80 {
            assert_eq!(auto.observe(60, at(s)), None);
        }
        for s in 80..100 {
            assert_eq!(auto.observe(120, at(s)), None);
        }
        assert_eq!(auto.observe(120, at(100)), Some(NightChange { night: false, mean_luma: 120 }));
    }

    #[test]
    fn auto_greys_the_picture_once_night() {
        let t0 = Instant::now();
        let mut auto = NightSwitch::new(NightChoice::Auto);
        let mut changes = Vec::new();
        for s in 0..=25 {
            let mut dark = frame(15, 90);
            if let Some(change) = auto.process(&mut dark, t0 + Duration::from_secs(s)) {
                changes.push(change);
            }
            let grey = dark.data[64 * 48..].iter().all(|&c| c == 128);
            assert_eq!(grey, auto.night(), "at {s} s");
        }
        assert_eq!(changes, vec![NightChange { night: true, mean_luma: 15 }]);
    }

    #[test]
    fn mean_luma_reads_the_picture() {
        assert_eq!(mean_luma(&frame(77, 0)), 77);
        let mut half = frame(0, 128);
        half.data[..64 * 24].fill(200);
        assert_eq!(mean_luma(&half), 100);
    }
}
