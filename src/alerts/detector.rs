//! Sound detection for alerts, pure: 20 ms frames of 48 kHz mono in, alert
//! start and end out. The level is measured in the band where voices and
//! cries are (a band-pass, 300 Hz to 4 kHz), against a noise floor that
//! follows quiet fast and loudness slowly, so a fan that runs all night
//! becomes the floor and a cry over it stands out.

use crate::media::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE};

/// What the detector is told to look for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorSettings {
    /// dB above the noise floor that counts as sound.
    pub threshold_db: f32,
    /// Seconds the sound must last before it is an alert.
    pub hold_s: f32,
    /// Seconds after an alert's start before another may start.
    pub cooldown_s: f32,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings { threshold_db: 15.0, hold_s: 1.5, cooldown_s: 30.0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SoundEvent {
    /// Sound over the floor for `hold` seconds; `level_db` in dBFS (band).
    Started { level_db: f32, floor_db: f32 },
    /// Quiet again; `peak_db` was the loudest frame of the alert.
    Ended { peak_db: f32 },
}

const FRAME_S: f32 = AUDIO_FRAME_SAMPLES as f32 / AUDIO_SAMPLE_RATE as f32;
/// A sound this much of the hold window over the threshold counts as
/// lasting: a cry has breaths in it.
const HOLD_FRACTION: f32 = 0.7;
/// A pause this long ends a sound (a breath between two cries does not).
const PAUSE_ENDS_SOUND_S: f32 = 0.5;
/// Quiet this long ends an alert.
const QUIET_TO_END_S: f32 = 2.0;
/// Time constants of the floor: down after quiet, up under a new steady
/// noise (a fan switched on is the floor within about a minute).
const FLOOR_DOWN_S: f32 = 1.0;
const FLOOR_UP_S: f32 = 20.0;
const FLOOR_UP_WHILE_OVER_S: f32 = 60.0;
/// The first second learns the room before anything may alert.
const LEARN_S: f32 = 1.0;
const SILENCE_DBFS: f32 = -100.0;

/// A biquad section (RBJ cookbook), transposed direct form II.
#[derive(Clone, Copy, Debug)]
struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
    z: [f32; 2],
}

impl Biquad {
    fn new(high_pass: bool, cutoff_hz: f32) -> Biquad {
        let w = 2.0 * std::f32::consts::PI * cutoff_hz / AUDIO_SAMPLE_RATE as f32;
        let (sin, cos) = w.sin_cos();
        // Q = 1/√2 (Butterworth): alpha = sin / 2Q.
        let alpha = sin * std::f32::consts::FRAC_1_SQRT_2;
        let a0 = 1.0 + alpha;
        let b = if high_pass {
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0]
        } else {
            [(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0]
        };
        Biquad { b: b.map(|v| v / a0), a: [-2.0 * cos / a0, (1.0 - alpha) / a0], z: [0.0; 2] }
    }

    fn run(&mut self, x: f32) -> f32 {
        let y = self.b[0] * x + self.z[0];
        self.z[0] = self.b[1] * x - self.a[0] * y + self.z[1];
        self.z[1] = self.b[2] * x - self.a[1] * y;
        y
    }
}

/// Listens to a room. Pure: time is the count of frames fed.
#[derive(Debug)]
pub struct SoundDetector {
    settings: DetectorSettings,
    band: [Biquad; 4],
    floor_db: Option<f32>,
    frames: u64,
    /// Whether each of the last `hold` frames was over the threshold.
    recent: std::collections::VecDeque<bool>,
    alert: Option<Alert>,
    last_start: Option<u64>,
    /// The frame the current sound began at; gone after a pause.
    sound_since: Option<u64>,
    last_level_db: f32,
}

#[derive(Clone, Copy, Debug)]
struct Alert {
    peak_db: f32,
    quiet_frames: u32,
}

impl SoundDetector {
    pub fn new(settings: DetectorSettings) -> SoundDetector {
        // Two sections each way: 12 dB/octave is too gentle for a fan's hum.
        let band = [
            Biquad::new(true, 300.0),
            Biquad::new(true, 300.0),
            Biquad::new(false, 4000.0),
            Biquad::new(false, 4000.0),
        ];
        SoundDetector {
            settings,
            band,
            floor_db: None,
            frames: 0,
            recent: std::collections::VecDeque::new(),
            alert: None,
            last_start: None,
            sound_since: None,
            last_level_db: SILENCE_DBFS,
        }
    }

    /// The band level of the last frame fed, dBFS.
    pub fn level_db(&self) -> f32 {
        self.last_level_db
    }

    /// The noise floor in the band, dBFS.
    pub fn floor_db(&self) -> Option<f32> {
        self.floor_db
    }

    /// Feeds one 20 ms frame; returns what changed.
    pub fn feed(&mut self, pcm: &[i16; AUDIO_FRAME_SAMPLES]) -> Option<SoundEvent> {
        let level = self.band_level(pcm);
        self.last_level_db = level;
        self.frames += 1;
        let elapsed_s = self.frames as f32 * FRAME_S;
        let floor = *self.floor_db.get_or_insert(level);
        let over = elapsed_s > LEARN_S && level > floor + self.settings.threshold_db;
        // The floor learns from the sound it is there to catch too, only
        // slower: a cry barely moves it, a fan switched on becomes it.
        let time_constant = match (level < floor || elapsed_s <= LEARN_S, over) {
            (true, _) => FLOOR_DOWN_S,
            (false, false) => FLOOR_UP_S,
            (false, true) => FLOOR_UP_WHILE_OVER_S,
        };
        self.floor_db = Some(floor + (level - floor) * (FRAME_S / time_constant).min(1.0));
        let hold_frames = ((self.settings.hold_s / FRAME_S).round() as usize).max(1);
        self.recent.push_back(over);
        while self.recent.len() > hold_frames {
            self.recent.pop_front();
        }
        let pause_frames = (PAUSE_ENDS_SOUND_S / FRAME_S) as usize;
        if over {
            self.sound_since.get_or_insert(self.frames);
        } else if self.recent.iter().rev().take(pause_frames).all(|&o| !o) {
            self.sound_since = None;
        }

        if let Some(alert) = &mut self.alert {
            alert.peak_db = alert.peak_db.max(level);
            alert.quiet_frames = if over { 0 } else { alert.quiet_frames + 1 };
            if alert.quiet_frames as f32 * FRAME_S >= QUIET_TO_END_S {
                let peak_db = alert.peak_db;
                self.alert = None;
                return Some(SoundEvent::Ended { peak_db });
            }
            return None;
        }
        let lasting = self.sound_since.is_some_and(|since| self.frames - since + 1 >= hold_frames as u64)
            && self.recent.iter().filter(|&&o| o).count() as f32 >= HOLD_FRACTION * hold_frames as f32;
        let cooled = self.last_start.is_none_or(|at| (self.frames - at) as f32 * FRAME_S >= self.settings.cooldown_s);
        if over && lasting && cooled {
            self.alert = Some(Alert { peak_db: level, quiet_frames: 0 });
            self.last_start = Some(self.frames);
            return Some(SoundEvent::Started { level_db: level, floor_db: self.floor_db.unwrap_or(floor) });
        }
        None
    }

    fn band_level(&mut self, pcm: &[i16]) -> f32 {
        let mut sum_sq = 0.0f64;
        for &sample in pcm {
            let mut x = f32::from(sample) / 32_768.0;
            for section in &mut self.band {
                x = section.run(x);
            }
            sum_sq += f64::from(x * x);
        }
        let rms = (sum_sq / pcm.len().max(1) as f64).sqrt();
        if rms <= 0.0 { SILENCE_DBFS } else { ((20.0 * rms.log10()) as f32).max(SILENCE_DBFS) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: f32 = AUDIO_SAMPLE_RATE as f32;

    /// A small xorshift: the same noise every run.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// A fan: noise, mostly low (a one-pole low-pass at ~200 Hz), some hiss.
    fn fan(seconds: f32, amplitude: f32, noise: &mut Noise) -> Vec<f32> {
        let mut low = 0.0;
        (0..(seconds * RATE) as usize)
            .map(|_| {
                let white = noise.next();
                low += 0.026 * (white - low);
                amplitude * (low * 6.0 + 0.05 * white)
            })
            .collect()
    }

    /// A cry-like sound: a 450 Hz harmonic tone with a 5 Hz vibrato.
    fn cry(seconds: f32, amplitude: f32) -> Vec<f32> {
        let mut phase = 0.0f32;
        (0..(seconds * RATE) as usize)
            .map(|i| {
                let t = i as f32 / RATE;
                let f = 450.0 + 40.0 * (2.0 * std::f32::consts::PI * 5.0 * t).sin();
                phase += 2.0 * std::f32::consts::PI * f / RATE;
                amplitude * (phase.sin() + 0.5 * (2.0 * phase).sin() + 0.25 * (3.0 * phase).sin()) / 1.75
            })
            .collect()
    }

    fn mix(a: &[f32], b: &[f32]) -> Vec<f32> {
        (0..a.len().max(b.len())).map(|i| a.get(i).unwrap_or(&0.0) + b.get(i).unwrap_or(&0.0)).collect()
    }

    /// Feeds `signal` (full scale 1.0); the events with their time in seconds.
    fn listen(detector: &mut SoundDetector, signal: &[f32]) -> Vec<(f32, SoundEvent)> {
        let start = detector.frames;
        signal
            .chunks_exact(AUDIO_FRAME_SAMPLES)
            .filter_map(|chunk| {
                let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
                for (o, s) in frame.iter_mut().zip(chunk) {
                    *o = (s * 32_767.0).clamp(-32_768.0, 32_767.0) as i16;
                }
                let event = detector.feed(&frame)?;
                Some(((detector.frames - start) as f32 * FRAME_S, event))
            })
            .collect()
    }

    #[test]
    fn steady_noise_never_alerts_whatever_its_level() {
        for amplitude in [0.001, 0.01, 0.05, 0.2] {
            let mut detector = SoundDetector::new(DetectorSettings::default());
            let events = listen(&mut detector, &fan(60.0, amplitude, &mut Noise(7)));
            assert!(events.is_empty(), "fan at {amplitude}: {events:?}");
        }
    }

    #[test]
    fn a_cry_over_the_fan_alerts_after_hold_and_ends_when_it_stops() {
        let mut noise = Noise(11);
        let mut detector = SoundDetector::new(DetectorSettings::default());
        assert!(listen(&mut detector, &fan(10.0, 0.05, &mut noise)).is_empty());
        let burst = mix(&fan(4.0, 0.05, &mut noise), &cry(4.0, 0.3));
        let events = listen(&mut detector, &[burst, fan(5.0, 0.05, &mut noise)].concat());
        let (at, started) = events[0];
        assert!(matches!(started, SoundEvent::Started { .. }), "{events:?}");
        assert!((1.5..=1.5 + 0.2).contains(&at), "the alert came {at} s into the cry");
        let (end, ended) = events[1];
        assert!(matches!(ended, SoundEvent::Ended { .. }), "{events:?}");
        assert!((4.0..=7.0).contains(&end), "ended at {end} s: {events:?}");
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn sounds_shorter_than_hold_do_not_alert_and_cooldown_spaces_alerts() {
        let mut noise = Noise(3);
        let mut detector = SoundDetector::new(DetectorSettings::default());
        listen(&mut detector, &fan(5.0, 0.02, &mut noise));
        // Speech-like bursts of 0.8 s with pauses: never 1.5 s of sound.
        for _ in 0..5 {
            let word = mix(&fan(0.8, 0.02, &mut noise), &cry(0.8, 0.2));
            let events = listen(&mut detector, &[word, fan(1.0, 0.02, &mut noise)].concat());
            assert!(events.is_empty(), "{events:?}");
        }
        // Two cries 10 s apart: one alert (the cooldown is 30 s).
        let mut starts = 0;
        for _ in 0..2 {
            let burst = mix(&fan(3.0, 0.02, &mut noise), &cry(3.0, 0.3));
            let events = listen(&mut detector, &[burst, fan(7.0, 0.02, &mut noise)].concat());
            starts += events.iter().filter(|(_, e)| matches!(e, SoundEvent::Started { .. })).count();
        }
        assert_eq!(starts, 1);
    }

    #[test]
    fn the_floor_follows_a_fan_switched_on() {
        let mut noise = Noise(5);
        let mut detector = SoundDetector::new(DetectorSettings::default());
        listen(&mut detector, &fan(5.0, 0.002, &mut noise));
        let quiet = detector.floor_db().unwrap();
        // The fan comes on 26 dB louder: that alerts once (it is a change in the room)...
        let events = listen(&mut detector, &fan(120.0, 0.04, &mut noise));
        assert!(events.len() <= 2, "{events:?}");
        let loud = detector.floor_db().unwrap();
        assert!(loud > quiet + 20.0, "floor {quiet} -> {loud}");
        // ... and then it is the floor: a minute more of it is silence.
        assert!(listen(&mut detector, &fan(60.0, 0.04, &mut noise)).is_empty());
        // A cry over it still alerts.
        let burst = mix(&fan(3.0, 0.04, &mut noise), &cry(3.0, 0.5));
        assert!(listen(&mut detector, &burst).iter().any(|(_, e)| matches!(e, SoundEvent::Started { .. })));
    }
}
