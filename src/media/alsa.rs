//! ALSA microphone ([`AudioSource`]) and speaker ([`AudioSink`]) with the
//! `alsa` crate.
//!
//! Both ends talk to roomcam in 48 kHz mono i16. A card that cannot do
//! 48 kHz is resampled with `rubato`; stereo-only cards are downmixed
//! (capture) or fed the same signal on both channels (playback).
//!
//! Period and buffer: 10 ms periods, [`DEFAULT_PERIODS`] of them per buffer
//! (fits a small board); `audio.periods` raises the count for slow
//! machines (an emulated board needs ≥ 8).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use rubato::Resampler as _;

use super::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioSink, AudioSource, MediaError};

const PERIOD_MS: u32 = 10;

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

fn is_xrun(e: &alsa::Error) -> bool {
    matches!(e.errno(), libc::EPIPE | libc::ESTRPIPE | libc::EINTR)
}

/// Logs an xrun once per burst: the first of a run at warn, then a summary
/// when the run ends (no xrun for a second).
struct XrunLog {
    what: &'static str,
    count: u64,
    burst: u64,
    last: Option<Instant>,
}

impl XrunLog {
    fn new(what: &'static str) -> Self {
        Self { what, count: 0, burst: 0, last: None }
    }

    fn xrun(&mut self, pcm: &str) {
        self.count += 1;
        let now = Instant::now();
        if self.last.is_none_or(|t| now - t > Duration::from_secs(1)) {
            if self.burst > 1 {
                log::warn!("{} {pcm:?}: previous burst had {} {}s", self.what, self.burst, xrun_word(self.what));
            }
            log::warn!("{} {pcm:?}: {} (recovered; {} so far)", self.what, xrun_word(self.what), self.count);
            self.burst = 0;
        }
        self.burst += 1;
        self.last = Some(now);
    }
}

fn xrun_word(what: &str) -> &'static str {
    if what == "microphone" { "overrun" } else { "underrun" }
}

struct Setup {
    rate: u32,
    channels: usize,
    period: usize,
    buffer: usize,
}

fn configure(pcm: &PCM, name: &str, periods: u32) -> Result<Setup, MediaError> {
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

fn to_i16(v: f32) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}

// ---------------------------------------------------------------- capture

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

// ---------------------------------------------------------------- playback

/// Talk-back delay through the jitter buffer: from `write` (decoded viewer
/// packet) to the ALSA write of its first sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TalkbackDelay {
    pub packets: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// Samples dropped to keep the delay bounded.
    pub trimmed: u64,
    pub underruns: u64,
}

/// Jitter buffer: starts playing once `TARGET` is queued, trims back to
/// `TARGET` when more than `MAX` piles up, plays silence when empty.
pub const JITTER_TARGET: Duration = Duration::from_millis(40);
pub const JITTER_MAX: Duration = Duration::from_millis(80);

fn samples(d: Duration) -> usize {
    (d.as_micros() as usize * AUDIO_SAMPLE_RATE as usize) / 1_000_000
}

#[derive(Default)]
struct JitterBuffer {
    samples: VecDeque<i16>,
    /// (samples still queued ahead of this packet's first sample when it arrived... as an absolute index, arrival)
    packets: VecDeque<(u64, Instant)>,
    /// Absolute index of `samples[0]`.
    head: u64,
    playing: bool,
    delay_sum_ms: f64,
    stats: TalkbackDelay,
}

impl JitterBuffer {
    fn push(&mut self, pcm: &[i16]) {
        let index = self.head + self.samples.len() as u64;
        self.packets.push_back((index, Instant::now()));
        self.samples.extend(pcm.iter().copied());
        if self.samples.len() > samples(JITTER_MAX) {
            let drop = self.samples.len() - samples(JITTER_TARGET);
            self.samples.drain(..drop);
            self.head += drop as u64;
            self.stats.trimmed += drop as u64;
            while self.packets.front().is_some_and(|(i, _)| *i < self.head) {
                self.packets.pop_front();
            }
        }
    }

    /// Fills `out` (48 kHz mono) with queued talk-back or silence.
    fn pull(&mut self, out: &mut [i16]) {
        if !self.playing && self.samples.len() >= samples(JITTER_TARGET) {
            self.playing = true;
        }
        let n = if self.playing { self.samples.len().min(out.len()) } else { 0 };
        let now = Instant::now();
        while let Some(&(i, t)) = self.packets.front() {
            if i >= self.head + n as u64 {
                break;
            }
            self.packets.pop_front();
            let ms = (now - t).as_secs_f64() * 1000.0;
            self.stats.packets += 1;
            self.delay_sum_ms += ms;
            self.stats.mean_ms = self.delay_sum_ms / self.stats.packets as f64;
            self.stats.max_ms = self.stats.max_ms.max(ms);
        }
        for (o, s) in out.iter_mut().zip(self.samples.drain(..n)) {
            *o = s;
        }
        out[n..].fill(0);
        self.head += n as u64;
        if self.playing && n < out.len() {
            // Talk ended, or the network starved us: prebuffer again.
            self.playing = false;
        }
    }
}

struct SpeakerShared {
    jitter: Mutex<JitterBuffer>,
    stop: AtomicBool,
}

/// An ALSA playback PCM for talk-back. A thread keeps the device fed with
/// talk-back or silence (so the speaker is silent, not noisy or clicking,
/// when nobody talks), and reopens the device if it disappears.
pub struct AlsaSpeaker {
    shared: Arc<SpeakerShared>,
    thread: Option<JoinHandle<()>>,
}

fn open_playback(name: &str, periods: u32) -> Result<(PCM, Setup), MediaError> {
    let pcm = PCM::new(name, Direction::Playback, false).map_err(|e| pcm_error(name, "open for playback", &e))?;
    let setup = configure(&pcm, name, periods)?;
    pcm.prepare().map_err(|e| pcm_error(name, "prepare", &e))?;
    log::info!(
        "speaker {name:?}: {} Hz{}, {} channel(s), period {} frames, buffer {} frames; jitter buffer {:?}..{:?}",
        setup.rate,
        if setup.rate != AUDIO_SAMPLE_RATE { " (resampled from 48000)" } else { "" },
        setup.channels,
        setup.period,
        setup.buffer,
        JITTER_TARGET,
        JITTER_MAX
    );
    Ok((pcm, setup))
}

impl AlsaSpeaker {
    pub fn open(name: &str) -> Result<Self, MediaError> {
        Self::open_with_periods(name, DEFAULT_PERIODS)
    }

    /// As [`open`](Self::open), with `periods` 10 ms periods per buffer.
    pub fn open_with_periods(name: &str, periods: u32) -> Result<Self, MediaError> {
        let first = open_playback(name, periods)?;
        let shared =
            Arc::new(SpeakerShared { jitter: Mutex::new(JitterBuffer::default()), stop: AtomicBool::new(false) });
        let name = name.to_string();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("roomcam-alsa-out".into())
            .spawn(move || playback_loop(&name, periods, &sh, Some(first)))
            .map_err(|e| MediaError::Device { device: "speaker thread".into(), reason: e.to_string() })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    pub fn delay(&self) -> TalkbackDelay {
        self.shared.jitter.lock().unwrap_or_else(PoisonError::into_inner).stats
    }

    /// A handle to read the delay figures after the speaker moved into the pipeline.
    pub fn delay_probe(&self) -> impl Fn() -> TalkbackDelay + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.jitter.lock().unwrap_or_else(PoisonError::into_inner).stats
    }
}

impl Drop for AlsaSpeaker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl AudioSink for AlsaSpeaker {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.shared.jitter.lock().unwrap_or_else(PoisonError::into_inner).push(pcm);
        Ok(())
    }
}

fn playback_loop(name: &str, periods: u32, shared: &SpeakerShared, mut device: Option<(PCM, Setup)>) {
    let mut xruns = XrunLog::new("speaker");
    let mut backoff = Duration::from_millis(100);
    let chunk = samples(Duration::from_millis(u64::from(PERIOD_MS)));
    let mut mono = vec![0i16; chunk];
    let mut resampler: Option<RateConverter> = None;
    let mut out: Vec<i16> = Vec::new();
    let mut reported = Instant::now();
    // A real device paces us by blocking in writei; a PCM that never blocks
    // (alsa-lib's null/file plugins) must not make this thread spin.
    let mut paced_from = Instant::now();
    let mut paced_frames: u64 = 0;
    while !shared.stop.load(Ordering::Acquire) {
        let Some((pcm, setup)) = device.as_ref() else {
            std::thread::sleep(backoff);
            match open_playback(name, periods) {
                Ok(d) => {
                    log::info!("speaker {name:?}: back");
                    resampler = None;
                    device = Some(d);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    log::debug!("speaker: {e}");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            continue;
        };
        if setup.rate != AUDIO_SAMPLE_RATE && resampler.is_none() {
            match RateConverter::new(AUDIO_SAMPLE_RATE, setup.rate) {
                Ok(r) => resampler = Some(r),
                Err(e) => {
                    log::error!("speaker {name:?}: {e}");
                    return;
                }
            }
        }
        shared.jitter.lock().unwrap_or_else(PoisonError::into_inner).pull(&mut mono);
        out.clear();
        let ch = setup.channels;
        match resampler.as_mut() {
            None => out.extend(mono.iter().flat_map(|&s| std::iter::repeat_n(s, ch))),
            Some(rs) => {
                rs.push(mono.iter().map(|&s| f32::from(s)));
                while let Some(v) = rs.pop() {
                    out.extend(std::iter::repeat_n(to_i16(v), ch));
                }
            }
        }
        let mut written = 0;
        let mut lost = false;
        while written < out.len() / ch {
            let io = match pcm.io_i16() {
                Ok(io) => io,
                Err(e) => {
                    log::warn!("speaker {name:?}: {}", pcm_error(name, "io", &e));
                    break;
                }
            };
            match io.writei(&out[written * ch..]) {
                Ok(n) => written += n,
                Err(e) if is_xrun(&e) => {
                    xruns.xrun(name);
                    shared.jitter.lock().unwrap_or_else(PoisonError::into_inner).stats.underruns += 1;
                    if pcm.try_recover(e, true).is_err() {
                        lost = true;
                        break;
                    }
                }
                Err(e) => {
                    log::warn!("speaker: {}; closing, will reopen", pcm_error(name, "playback", &e));
                    lost = true;
                    break;
                }
            }
        }
        if lost {
            device = None;
            paced_frames = 0;
            paced_from = Instant::now();
        } else {
            paced_frames += (written) as u64;
            let played = Duration::from_secs_f64(paced_frames as f64 / f64::from(setup.rate));
            let ahead = played.saturating_sub(paced_from.elapsed());
            let slack =
                Duration::from_secs_f64(setup.buffer as f64 / f64::from(setup.rate)) + Duration::from_millis(20);
            if ahead > slack {
                std::thread::sleep(ahead - slack);
            }
        }
        if reported.elapsed() > Duration::from_secs(10) {
            reported = Instant::now();
            let d = shared.jitter.lock().unwrap_or_else(PoisonError::into_inner).stats;
            if d.packets > 0 {
                log::debug!(
                    "speaker {name:?}: talk-back delay mean {:.1} ms, max {:.1} ms, {} packets, {} underruns",
                    d.mean_ms,
                    d.max_ms,
                    d.packets,
                    d.underruns
                );
            }
        }
    }
    if let Some((pcm, _)) = device {
        let _ = pcm.drop();
    }
}

// ---------------------------------------------------------------- listing

#[derive(Clone, Debug)]
pub struct PcmInfo {
    pub name: String,
    pub description: String,
    /// None: both directions.
    pub direction: Option<Direction>,
}

/// The PCMs alsa-lib knows (cards' hw/plughw/default/dsnoop… and the config's own).
pub fn list_pcms() -> Result<Vec<PcmInfo>, MediaError> {
    let hints = alsa::device_name::HintIter::new_str(None, "pcm")
        .map_err(|e| MediaError::Device { device: "ALSA".into(), reason: format!("list PCMs: {e}") })?;
    Ok(hints
        .filter_map(|h| {
            Some(PcmInfo {
                name: h.name?,
                description: h.desc.unwrap_or_default().replace('\n', " — "),
                direction: h.direction,
            })
        })
        .collect())
}

/// Sound cards: (index, id, long name).
pub fn list_cards() -> Vec<(i32, String, String)> {
    alsa::card::Iter::new()
        .filter_map(Result::ok)
        .map(|c| (c.get_index(), c.get_name().unwrap_or_default(), c.get_longname().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_buffer_prebuffers_trims_and_goes_silent() {
        let mut jb = JitterBuffer::default();
        let mut out = vec![7i16; 480];
        jb.pull(&mut out);
        assert!(out.iter().all(|&s| s == 0), "silence when nobody talks");
        jb.push(&[1; 960]);
        jb.pull(&mut out);
        assert!(out.iter().all(|&s| s == 0), "still prebuffering at 20 ms");
        jb.push(&[2; 960]);
        jb.pull(&mut out);
        assert!(out.iter().all(|&s| s == 1), "plays from 40 ms");
        for _ in 0..10 {
            jb.push(&[3; 960]);
        }
        assert!(jb.samples.len() <= samples(JITTER_MAX));
        assert!(jb.stats.trimmed > 0);
        let mut drained = 0;
        loop {
            jb.pull(&mut out);
            if out.iter().all(|&s| s == 0) {
                break;
            }
            drained += 1;
        }
        assert!(drained <= 9, "{drained}");
        assert!(jb.stats.packets >= 2 && jb.stats.max_ms < 1000.0, "{:?}", jb.stats);
    }

    #[test]
    fn rate_converter_keeps_the_frequency() {
        let mut rc = RateConverter::new(44_100, 48_000).unwrap();
        // 1 s of 1 kHz sampled at 44.1 kHz.
        let tone = (0..44_100).map(|i| 8000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 44_100.0).sin());
        rc.push(tone);
        let out: Vec<i16> = std::iter::from_fn(|| rc.pop()).map(to_i16).collect();
        assert!(out.len() > 46_000, "{}", out.len());
        let f = crate::media::audio::dominant_frequency(&out[4800..], 48_000).unwrap();
        assert!((f - 1000.0).abs() < 5.0, "{f}");
    }
}
