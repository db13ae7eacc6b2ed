//! The null speaker (`--speaker null`): plays nothing, measures what it is
//! played (level and dominant tone) and logs it once per second of audio.

use std::sync::{Arc, Mutex};

use crate::media::analysis::{SILENCE_FLOOR_DBFS, dominant_frequency, rms_dbfs};
use crate::media::{AUDIO_SAMPLE_RATE, AudioSink, MediaError};
use crate::util::lock_ignoring_poison;

/// One measurement of what the speaker was played.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeakerReport {
    /// Total audio received so far (not just this window).
    pub seconds_received: f64,
    pub rms_dbfs: f32,
    /// Dominant frequency of the window, `None` when it was silent.
    pub tone_hz: Option<f32>,
}

impl SpeakerReport {
    /// The exact log line format, which external tests parse.
    pub fn log_line(&self) -> String {
        let tone = match self.tone_hz {
            Some(hz) => format!("{hz:.0} Hz"),
            None => "none".to_owned(),
        };
        format!("speaker: {:.1}s received, rms {:.1} dBFS, tone {tone}", self.seconds_received, self.rms_dbfs)
    }

    /// Parses a line produced by [`SpeakerReport::log_line`] (it may be
    /// embedded in a longer log line).
    pub fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.find("speaker: ")? + "speaker: ".len()..];
        let (secs, rest) = rest.split_once("s received, rms ")?;
        let (rms, rest) = rest.split_once(" dBFS, tone ")?;
        let tone = rest.trim();
        let tone_hz = if tone == "none" { None } else { Some(tone.strip_suffix(" Hz")?.parse().ok()?) };
        Some(Self { seconds_received: secs.parse().ok()?, rms_dbfs: rms.parse().ok()?, tone_hz })
    }
}

#[derive(Clone, Debug, Default)]
pub struct SpeakerStats {
    pub samples_received: u64,
    pub writes: u64,
    pub reports: u64,
    pub last_report: Option<SpeakerReport>,
}

impl SpeakerStats {
    pub fn seconds_received(&self) -> f64 {
        self.samples_received as f64 / f64::from(AUDIO_SAMPLE_RATE)
    }
}

/// A speaker that plays nothing but measures everything: after each second
/// of received audio it logs one [`SpeakerReport::log_line`] at info level
/// and updates the shared [`SpeakerStats`].
pub struct NullSpeaker {
    window: Vec<i16>,
    stats: Arc<Mutex<SpeakerStats>>,
}

impl Default for NullSpeaker {
    fn default() -> Self {
        Self::new()
    }
}

impl NullSpeaker {
    const WINDOW: usize = AUDIO_SAMPLE_RATE as usize;

    pub fn new() -> Self {
        Self { window: Vec::with_capacity(Self::WINDOW * 2), stats: Arc::default() }
    }

    /// A handle on the live statistics, for in-process tests.
    pub fn stats(&self) -> Arc<Mutex<SpeakerStats>> {
        Arc::clone(&self.stats)
    }
}

impl AudioSink for NullSpeaker {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.window.extend_from_slice(pcm);
        let mut stats = lock_ignoring_poison(&self.stats);
        stats.samples_received += pcm.len() as u64;
        stats.writes += 1;
        while self.window.len() >= Self::WINDOW {
            let win = &self.window[..Self::WINDOW];
            let level = rms_dbfs(win);
            let tone_hz = if level < SILENCE_FLOOR_DBFS { None } else { dominant_frequency(win, AUDIO_SAMPLE_RATE) };
            // Report the total up to the end of this window, not including
            // samples still waiting in the next one.
            let pending = (self.window.len() - Self::WINDOW) as u64;
            let report = SpeakerReport {
                seconds_received: (stats.samples_received - pending) as f64 / f64::from(AUDIO_SAMPLE_RATE),
                rms_dbfs: level,
                tone_hz,
            };
            // Silence every second would bury the journal; sound is news.
            let level = if report.tone_hz.is_some() { log::Level::Info } else { log::Level::Debug };
            log::log!(level, "{}", report.log_line());
            stats.reports += 1;
            stats.last_report = Some(report);
            self.window.drain(..Self::WINDOW);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fixtures::sine;

    #[test]
    fn speaker_reports_each_second() {
        let mut spk = NullSpeaker::new();
        let stats = spk.stats();
        let tone = sine(660.0, 8_231.0, 48_000 * 2, 0);
        // Uneven chunks, as a decoder with varying packet sizes would give.
        for chunk in tone.chunks(700) {
            spk.write(chunk).unwrap();
        }
        let s = stats.lock().unwrap().clone();
        assert_eq!(s.samples_received, 96_000);
        assert_eq!(s.reports, 2);
        let r = s.last_report.unwrap();
        assert!((r.seconds_received - 2.0).abs() < 1e-9);
        assert!((r.tone_hz.unwrap() - 660.0).abs() < 1.0);
        assert!((r.rms_dbfs - -15.0).abs() < 0.2);

        spk.write(&vec![0; 48_000]).unwrap();
        let r = stats.lock().unwrap().last_report.unwrap();
        assert_eq!(r.tone_hz, None);
        assert_eq!(r.rms_dbfs, crate::media::analysis::MIN_DBFS);
        assert_eq!(stats.lock().unwrap().reports, 3);
    }

    #[test]
    fn speaker_log_line_format_is_stable() {
        let r = SpeakerReport { seconds_received: 3.04, rms_dbfs: -15.03, tone_hz: Some(659.7) };
        assert_eq!(r.log_line(), "speaker: 3.0s received, rms -15.0 dBFS, tone 660 Hz");
        let silent = SpeakerReport { seconds_received: 1.0, rms_dbfs: -100.0, tone_hz: None };
        assert_eq!(silent.log_line(), "speaker: 1.0s received, rms -100.0 dBFS, tone none");
        let parsed = SpeakerReport::parse(&format!("[INFO roomcam] {}", r.log_line())).unwrap();
        assert_eq!(parsed, SpeakerReport { seconds_received: 3.0, rms_dbfs: -15.0, tone_hz: Some(660.0) });
        assert_eq!(SpeakerReport::parse(&silent.log_line()).unwrap().tone_hz, None);
        assert_eq!(SpeakerReport::parse("speaker: garbage"), None);
    }
}
