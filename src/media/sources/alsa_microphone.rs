//! An ALSA capture PCM as the microphone (see [`alsa_pcm`](crate::media::alsa_pcm)
//! for what it shares with the speaker).

use std::collections::VecDeque;

use alsa::Direction;
use alsa::pcm::PCM;

use crate::media::alsa_pcm::{DEFAULT_PERIODS, RateConverter, Setup, XrunLog, configure, is_xrun, pcm_error, to_i16};
use crate::media::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioSource, MediaError};

struct Capture {
    pcm: PCM,
    setup: Setup,
    buf: Vec<i16>,
    resampler: Option<RateConverter>,
}

/// An ALSA capture PCM as a 48 kHz mono microphone. Reopens after the PCM
/// disappears (USB microphone unplugged).
pub struct AlsaMicrophone {
    name: String,
    periods: u32,
    capture: Option<Capture>,
    pending: VecDeque<i16>,
    xruns: XrunLog,
    was_open: bool,
}

impl AlsaMicrophone {
    /// Opens now, so a wrong name or missing permission fails the start
    /// with a clear message.
    pub fn open(name: &str) -> Result<Self, MediaError> {
        Self::open_with_periods(name, DEFAULT_PERIODS)
    }

    /// As [`open`](Self::open), with `periods` 10 ms periods per buffer.
    pub fn open_with_periods(name: &str, periods: u32) -> Result<Self, MediaError> {
        let mut mic = Self {
            name: name.to_string(),
            periods,
            capture: None,
            pending: VecDeque::new(),
            xruns: XrunLog::new("microphone"),
            was_open: false,
        };
        mic.capture = Some(mic.try_open()?);
        mic.was_open = true;
        Ok(mic)
    }

    fn try_open(&self) -> Result<Capture, MediaError> {
        let pcm = PCM::new(&self.name, Direction::Capture, false)
            .map_err(|e| pcm_error(&self.name, "open for capture", &e))?;
        let setup = configure(&pcm, &self.name, self.periods)?;
        pcm.prepare().map_err(|e| pcm_error(&self.name, "prepare", &e))?;
        let resampler = if setup.rate != AUDIO_SAMPLE_RATE {
            Some(RateConverter::new(setup.rate, AUDIO_SAMPLE_RATE)?)
        } else {
            None
        };
        log::info!(
            "microphone {:?}: {} Hz{}, {} channel{}{}, period {} frames, buffer {} frames",
            self.name,
            setup.rate,
            if resampler.is_some() { " (resampled to 48000)" } else { "" },
            setup.channels,
            if setup.channels == 1 { "" } else { "s" },
            if setup.channels > 1 { " (mixed to mono)" } else { "" },
            setup.period,
            setup.buffer
        );
        let buf = vec![0i16; setup.period * setup.channels];
        Ok(Capture { pcm, setup, buf, resampler })
    }
}

impl AudioSource for AlsaMicrophone {
    fn read_frame(&mut self, out: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError> {
        if self.capture.is_none() {
            self.capture = Some(self.try_open()?);
            if self.was_open {
                log::info!("microphone {:?}: back", self.name);
            }
            self.was_open = true;
        }
        while self.pending.len() < AUDIO_FRAME_SAMPLES {
            let cap = self.capture.as_mut().expect("opened above");
            let res = match cap.pcm.io_i16() {
                Ok(io) => io.readi(&mut cap.buf),
                Err(e) => Err(e),
            };
            let mut lost = None;
            match res {
                Ok(0) => continue,
                Ok(frames) => {
                    let ch = cap.setup.channels;
                    let mono = cap.buf[..frames * ch]
                        .chunks_exact(ch)
                        .map(|f| f.iter().map(|&s| f32::from(s)).sum::<f32>() / ch as f32);
                    match cap.resampler.as_mut() {
                        None => self.pending.extend(mono.map(to_i16)),
                        Some(rs) => {
                            rs.push(mono);
                            while let Some(v) = rs.pop() {
                                self.pending.push_back(to_i16(v));
                            }
                        }
                    }
                }
                Err(e) if is_xrun(&e) => {
                    self.xruns.xrun(&self.name);
                    if let Err(e2) = cap.pcm.try_recover(e, true) {
                        lost = Some(pcm_error(&self.name, "recover from overrun", &e2));
                    }
                }
                Err(e) => {
                    let err = pcm_error(&self.name, "capture", &e);
                    log::warn!("microphone {:?}: {err}; closing, will reopen", self.name);
                    lost = Some(err);
                }
            }
            if let Some(err) = lost {
                self.capture = None;
                self.pending.clear();
                return Err(err);
            }
        }
        for (o, s) in out.iter_mut().zip(self.pending.drain(..AUDIO_FRAME_SAMPLES)) {
            *o = s;
        }
        Ok(())
    }
}
