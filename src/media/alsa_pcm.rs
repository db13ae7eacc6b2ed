//! What the ALSA microphone ([`AlsaMicrophone`]) and speaker
//! ([`AlsaSpeaker`]) share, with the `alsa` crate: opening and configuring
//! a PCM, errors that say what to do, xrun logging and resampling.
//!
//! Both ends talk to roomcam in 48 kHz mono i16. A card that cannot do
//! 48 kHz is resampled with `rubato`; stereo-only cards are downmixed
//! (capture) or fed the same signal on both channels (playback).
//!
//! Period and buffer: 10 ms periods, [`DEFAULT_PERIODS`] of them per buffer
//! (fits a small board); `audio.periods` raises the count for slow
//! machines (an emulated board needs ≥ 8).

use std::collections::VecDeque;
use std::time::Duration;

use alsa::ValueOr;
use alsa::pcm::{Access, Format, HwParams, PCM};
use rubato::Resampler as _;

use super::{AUDIO_SAMPLE_RATE, MediaError};
use crate::util::LogLimit;

#[cfg(doc)]
use super::{sinks::AlsaSpeaker, sources::AlsaMicrophone};

pub(crate) const PERIOD_MS: u32 = 10;

/// Periods per ALSA buffer unless configured (`audio.periods`).
pub const DEFAULT_PERIODS: u32 = 4;

/// An ALSA error, with what to do about it.
pub fn pcm_error(pcm: &str, action: &str, e: &alsa::Error) -> MediaError {
    let hint = match e.errno() {
        libc::EACCES | libc::EPERM => {
            "permission denied: add the user to the `audio` group (usermod -aG audio USER, then log in again)".into()
        }
        libc::ENOENT | libc::ENODEV | libc::ENXIO => {
            "missing: no such PCM or card; `roomcam devices` lists the PCMs (e.g. default, plughw:1,0)".into()
        }
        libc::EBUSY => {
            "busy: another program is using the sound device (fuser -v /dev/snd/*); try a dmix/dsnoop or plughw PCM"
                .into()
        }
        _ => e.to_string(),
    };
    MediaError::Device { device: format!("ALSA PCM {pcm:?}"), reason: format!("{action}: {hint}") }
}

pub(crate) fn is_xrun(e: &alsa::Error) -> bool {
    matches!(e.errno(), libc::EPIPE | libc::ESTRPIPE | libc::EINTR)
}

/// Logs an xrun once per burst: the first of a run at warn, then a summary
/// when the run ends (no xrun for a second).
pub(crate) struct XrunLog {
    what: &'static str,
    limit: LogLimit,
}

impl XrunLog {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, limit: LogLimit::first_of_each_burst(Duration::from_secs(1)) }
    }

    pub(crate) fn xrun(&self, pcm: &str) {
        if let Some(written) = self.limit.allow() {
            if written.held_back > 0 {
                let burst = written.held_back + 1;
                log::warn!("{} {pcm:?}: previous burst had {burst} {}s", self.what, xrun_word(self.what));
            }
            log::warn!("{} {pcm:?}: {} (recovered; {} so far)", self.what, xrun_word(self.what), written.total);
        }
    }
}

fn xrun_word(what: &str) -> &'static str {
    if what == "microphone" { "overrun" } else { "underrun" }
}

pub(crate) struct Setup {
    pub(crate) rate: u32,
    pub(crate) channels: usize,
    pub(crate) period: usize,
    pub(crate) buffer: usize,
}

pub(crate) fn configure(pcm: &PCM, name: &str, periods: u32) -> Result<Setup, MediaError> {
    let hw = HwParams::any(pcm).map_err(|e| pcm_error(name, "hw params", &e))?;
    let set = |r: alsa::Result<()>, what: &str| r.map_err(|e| pcm_error(name, what, &e));
    set(hw.set_access(Access::RWInterleaved), "interleaved access")?;
    set(hw.set_format(Format::s16()), "16-bit samples (S16; use a plug: PCM such as plughw:N,M)")?;
    let channels = if hw.set_channels(1).is_ok() {
        1
    } else {
        hw.set_channels_near(2).map_err(|e| pcm_error(name, "channels", &e))?
    };
    let rate = hw.set_rate_near(AUDIO_SAMPLE_RATE, ValueOr::Nearest).map_err(|e| pcm_error(name, "rate", &e))?;
    let period = hw
        .set_period_size_near((rate * PERIOD_MS / 1000) as alsa::pcm::Frames, ValueOr::Nearest)
        .map_err(|e| pcm_error(name, "period size", &e))?;
    let _ = hw.set_periods_near(periods.clamp(2, 64), ValueOr::Nearest);
    pcm.hw_params(&hw).map_err(|e| pcm_error(name, "apply hw params", &e))?;
    let hw = pcm.hw_params_current().map_err(|e| pcm_error(name, "read hw params", &e))?;
    let buffer = hw.get_buffer_size().unwrap_or(period * 4) as usize;
    let period = hw.get_period_size().unwrap_or(period) as usize;
    Ok(Setup { rate, channels: channels as usize, period, buffer })
}

/// Mono f32 resampler between a card's rate and 48 kHz, any chunk sizes in and out.
pub struct RateConverter {
    inner: rubato::FftFixedInOut<f32>,
    input: Vec<f32>,
    output: VecDeque<f32>,
}

impl RateConverter {
    pub fn new(from: u32, to: u32) -> Result<Self, MediaError> {
        let inner = rubato::FftFixedInOut::<f32>::new(from as usize, to as usize, (from / 100) as usize, 1)
            .map_err(|e| MediaError::Unsupported(format!("resampling {from} → {to} Hz: {e}")))?;
        Ok(Self { inner, input: Vec::new(), output: VecDeque::new() })
    }

    pub fn push(&mut self, samples: impl IntoIterator<Item = f32>) {
        self.input.extend(samples);
        loop {
            let need = self.inner.input_frames_next();
            if self.input.len() < need {
                break;
            }
            match self.inner.process(&[&self.input[..need]], None) {
                Ok(out) => self.output.extend(out[0].iter().copied()),
                Err(e) => log::warn!("resampler: {e}"),
            }
            self.input.drain(..need);
        }
    }

    pub fn available(&self) -> usize {
        self.output.len()
    }

    pub fn pop(&mut self) -> Option<f32> {
        self.output.pop_front()
    }
}

pub(crate) fn to_i16(v: f32) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_converter_keeps_the_frequency() {
        let mut rc = RateConverter::new(44_100, 48_000).unwrap();
        // 1 s of 1 kHz sampled at 44.1 kHz.
        let tone = (0..44_100).map(|i| 8000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 44_100.0).sin());
        rc.push(tone);
        let out: Vec<i16> = std::iter::from_fn(|| rc.pop()).map(to_i16).collect();
        assert!(out.len() > 46_000, "{}", out.len());
        let f = crate::media::analysis::dominant_frequency(&out[4800..], 48_000).unwrap();
        assert!((f - 1000.0).abs() < 5.0, "{f}");
    }
}
