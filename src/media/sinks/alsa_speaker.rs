//! An ALSA playback PCM as the speaker for talk-back, behind a jitter
//! buffer (see [`alsa_pcm`](crate::media::alsa_pcm) for what it shares with
//! the microphone).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alsa::Direction;
use alsa::pcm::PCM;

use crate::media::alsa_pcm::{
    DEFAULT_PERIODS, PERIOD_MS, RateConverter, Setup, XrunLog, configure, is_xrun, pcm_error, to_i16,
};
use crate::media::{AUDIO_SAMPLE_RATE, AudioSink, MediaError};
use crate::util::{Backoff, lock_ignoring_poison};

/// Talk-back delay through the jitter buffer: from `write` (decoded viewer
/// packet) to the ALSA write of its first sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TalkbackDelay {
    pub packets: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// Samples dropped to keep the delay bounded.
    pub trimmed: u64,
    /// Packets whose start was among them (never timed: not in `packets`).
    pub trimmed_packets: u64,
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
                self.stats.trimmed_packets += 1;
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
        lock_ignoring_poison(&self.shared.jitter).stats
    }

    /// A handle to read the delay figures after the speaker moved into the pipeline.
    pub fn delay_probe(&self) -> impl Fn() -> TalkbackDelay + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || lock_ignoring_poison(&shared.jitter).stats
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
        lock_ignoring_poison(&self.shared.jitter).push(pcm);
        Ok(())
    }
}

fn playback_loop(name: &str, periods: u32, shared: &SpeakerShared, mut device: Option<(PCM, Setup)>) {
    let xruns = XrunLog::new("speaker");
    // Reopening a speaker that went away: 100 ms doubling to 5 s.
    let mut reopen = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
            std::thread::sleep(reopen.next_delay());
            match open_playback(name, periods) {
                Ok(d) => {
                    log::info!("speaker {name:?}: back");
                    resampler = None;
                    device = Some(d);
                    reopen.reset();
                }
                Err(e) => {
                    log::debug!("speaker: {e}");
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
        lock_ignoring_poison(&shared.jitter).pull(&mut mono);
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
                    lock_ignoring_poison(&shared.jitter).stats.underruns += 1;
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
            let d = lock_ignoring_poison(&shared.jitter).stats;
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
}
