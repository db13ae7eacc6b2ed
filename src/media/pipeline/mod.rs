//! The media pipeline: capture → encode → broadcast to viewers, and the
//! talk-back path from viewers to the speaker.
//!
//! Threads (all plain std threads: capture, encode and playback must keep
//! their timing whatever the async runtime is doing), each in its own file:
//!
//! * `capture` (`capture.rs`): pulls frames from the camera into a
//!   one-picture slot (or, from a camera that encodes H.264 itself, into an
//!   ordered queue): the hand-over (`handover.rs`);
//! * `encode` (`encode.rs`): takes the newest picture from the slot,
//!   encodes, broadcasts (and broadcasts the camera's own access units, in
//!   order, so that the "camera unavailable" picture and the camera's stream
//!   never interleave);
//! * `audio` (`microphone.rs`): microphone → echo cancellation → sound
//!   alerts, and Opus → broadcast (Opus is cheap enough to run inline, and
//!   20 ms frames must not queue behind video);
//! * `speaker` (`speaker.rs`): talk-back Opus packets → decode (one decoder
//!   per viewer) → the newest talker's voice ([`talkback`]) → speaker, and
//!   what it played to the microphone thread's echo canceller
//!   ([`echo::Reference`](crate::media::echo::Reference)).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub use encode::VideoRate;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::echo;
use super::encoders::h264::ParameterSets;
use super::encoders::opus::{OpusDecoder, OpusEncoder, OpusSettings};
use super::{
    AUDIO_FRAME_SAMPLES, AudioSink, AudioSource, CameraFrame, EncodedAudio, EncodedVideo, MediaError, VideoEncoder,
    VideoSource,
};
use crate::util::{Backoff, LogLimit, warn_limited};
use handover::Handover;

mod capture;
mod encode;
mod handover;
mod microphone;
mod speaker;
pub mod talkback;
#[cfg(test)]
mod tests;

/// What the speaker played waits this long at most (in samples, 48 kHz:
/// 100 ms) for the microphone thread. The reference is handed over when
/// written, before the speaker's jitter buffer (40–80 ms) and ALSA buffer
/// play it, so it leads its echo; a backlog longer than that lead would
/// give the canceller the reference after its echo (which it cannot
/// cancel), so a burst of talk-back beyond 100 ms loses its oldest part,
/// as the jitter buffer itself trims above 80 ms.
const ECHO_REFERENCE_SAMPLES: usize = 4_800;

#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub opus: OpusSettings,
    /// Broadcast capacity in access units. Small on purpose: a viewer that
    /// falls this far behind gets `Lagged` and should ask for a keyframe,
    /// rather than being fed seconds-old video.
    pub video_channel_capacity: usize,
    pub audio_channel_capacity: usize,
    /// Talk-back packets waiting for the speaker thread (20 ms each); more
    /// arriving than this are dropped, never queued without bound.
    pub talkback_queue: usize,
    /// Size of the "camera unavailable" picture sent while the camera is
    /// away and no frame has been seen yet (afterwards: the last frame's size).
    pub placeholder_size: (u32, u32),
    /// The camera's frame rate: what a lowered target frame rate is a share of.
    pub camera_fps: u32,
    /// Listen for sound alerts (whether anyone watches or not).
    pub sound_alerts: Option<SoundAlerts>,
    /// Told how long each picture took the encoder (`/metrics`).
    pub encode_times: Option<EncodeTimes>,
    /// Greyscale pictures: never, always, or while the room is dark.
    pub night: crate::config::NightChoice,
    /// Cancel the speaker's echo from the microphone (talk-back). Without
    /// it the sound detector does not listen while a viewer's voice plays.
    pub echo_cancellation: bool,
}

/// Where the encode thread tells each picture's encode time.
#[derive(Clone)]
pub struct EncodeTimes(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for EncodeTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodeTimes")
    }
}

/// What the microphone thread listens for, and for which room (the log).
#[derive(Clone, Debug)]
pub struct SoundAlerts {
    pub room: String,
    pub detector: crate::alerts::DetectorSettings,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            opus: OpusSettings::default(),
            video_channel_capacity: 8,
            audio_channel_capacity: 16,
            talkback_queue: 25,
            placeholder_size: (640, 480),
            camera_fps: 30,
            sound_alerts: None,
            encode_times: None,
            night: crate::config::NightChoice::Off,
            echo_cancellation: true,
        }
    }
}

/// Counters since start, for logs, health checks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Times the camera returned to the capture thread, with a frame or an
    /// error: this moves while the camera is unplugged and retried, and
    /// stops only when a driver call hangs.
    pub capture_returns: u64,
    pub frames_captured: u64,
    /// Captured but never sent: replaced in the slot by a newer frame
    /// (encoder too slow), captured while nobody was watching, or (from an
    /// H.264 camera) waiting for an IDR.
    pub frames_dropped: u64,
    /// Sent to the viewers: encoded by roomcam or passed through from the camera.
    pub frames_encoded: u64,
    pub keyframes: u64,
    /// Frames the encoder's rate control chose to skip.
    pub encoder_skips: u64,
    pub audio_packets: u64,
    pub talkback_received: u64,
    /// Talk-back packets dropped because the speaker queue was full.
    pub talkback_dropped: u64,
    /// Talk-back packets not played because a newer talker had the speaker.
    pub talkback_muted: u64,
    /// Talk-back packets that failed to decode or to play.
    pub talkback_errors: u64,
    pub source_errors: u64,
    /// Sound alerts started.
    pub sound_alerts: u64,
    /// The bitrate the encoder is asked for now; 0: the configured one
    /// (nothing has changed it).
    pub video_target_bps: u64,
    /// Capture → encoded access unit, over the pictures roomcam encoded:
    /// from the driver's capture stamp to the encoder's output (queueing
    /// in the camera layer, conversion, hand-over, encode).
    pub capture_to_au_count: u64,
    pub capture_to_au_us_sum: u64,
    pub capture_to_au_max_us: u64,
}

impl PipelineStats {
    /// Mean and max capture → encoded access unit, in ms; `None` before
    /// the first encoded picture.
    pub fn capture_to_au_ms(&self) -> Option<(f64, f64)> {
        (self.capture_to_au_count > 0).then(|| {
            (
                self.capture_to_au_us_sum as f64 / self.capture_to_au_count as f64 / 1000.0,
                self.capture_to_au_max_us as f64 / 1000.0,
            )
        })
    }
}

#[derive(Default)]
struct Counters {
    capture_returns: AtomicU64,
    frames_captured: AtomicU64,
    frames_dropped: AtomicU64,
    frames_encoded: AtomicU64,
    keyframes: AtomicU64,
    encoder_skips: AtomicU64,
    audio_packets: AtomicU64,
    talkback_received: AtomicU64,
    talkback_dropped: AtomicU64,
    talkback_muted: AtomicU64,
    talkback_errors: AtomicU64,
    source_errors: AtomicU64,
    sound_alerts: AtomicU64,
    capture_to_au_count: AtomicU64,
    capture_to_au_us_sum: AtomicU64,
    capture_to_au_max_us: AtomicU64,
}

impl Counters {
    fn record_capture_to_au(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        bump(&self.capture_to_au_count);
        self.capture_to_au_us_sum.fetch_add(us, Ordering::Relaxed);
        self.capture_to_au_max_us.fetch_max(us, Ordering::Relaxed);
    }
}

impl Shared {
    /// Whether any viewer takes the picture now.
    fn video_watched(&self) -> bool {
        self.viewers.load(Ordering::Acquire) > self.viewers_without_video.load(Ordering::Acquire)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    stop: AtomicBool,
    viewers: AtomicUsize,
    /// Viewers that take no video (listen-only, or no H.264): when all do,
    /// nothing is encoded for the picture, only the sound.
    viewers_without_video: AtomicUsize,
    keyframe_requested: AtomicBool,
    /// Set on 0 → >0 viewers: the next thing sent must be an IDR.
    restart: AtomicBool,
    /// The sender wants an IDR from a camera that encodes for itself.
    camera_keyframe_wanted: AtomicBool,
    /// The rate the stream should have now ([`VideoRate::packed`]; 0: the
    /// configured one). One word, so the encode and capture threads read a
    /// bitrate and a frame rate that belong together.
    video_rate: AtomicU64,
    handover: Handover,
    counters: Counters,
    talkback_limit: LogLimit,
    /// When the speaker last played a viewer's voice (ms after `started`,
    /// plus one; 0: never): the microphone hears it too, and a parent's own
    /// voice must not raise a sound alert.
    voice_played: AtomicU64,
    started: Instant,
}

impl Shared {
    /// The speaker is playing a viewer's voice now.
    fn voice_playing(&self) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        self.voice_played.store(ms, Ordering::Release);
    }

    /// Whether a viewer's voice came out of the speaker within `window`.
    fn voice_played_within(&self, window: Duration) -> bool {
        let at = self.voice_played.load(Ordering::Acquire);
        at != 0 && self.started.elapsed().as_millis() as u64 + 1 - at < window.as_millis() as u64
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`, waking early when stopping. Returns false if stopping.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
        false
    }
}

/// Retry pacing for a failing device: 50 ms doubling to `cap`, so a camera
/// that was unplugged is picked up again soon after it comes back without
/// spinning a core while it is gone.
struct DeviceRetry {
    backoff: Backoff,
    limit: LogLimit,
}

impl DeviceRetry {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    fn new(cap: Duration) -> Self {
        Self { backoff: Backoff::new(Self::FIRST, cap), limit: LogLimit::once_per(Duration::from_secs(10)) }
    }

    fn reset(&mut self) {
        self.backoff.reset();
    }

    fn failed(&mut self, shared: &Shared, what: &str, err: &MediaError) -> bool {
        bump(&shared.counters.source_errors);
        let delay = self.backoff.next_delay();
        warn_limited!(self.limit, "{what}: {err}; retrying in {delay:?}");
        shared.sleep(delay)
    }
}

pub struct MediaPipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    video_tx: broadcast::Sender<EncodedVideo>,
    audio_tx: broadcast::Sender<EncodedAudio>,
    talkback_tx: SyncSender<(Talker, Bytes)>,
    sound: crate::alerts::SoundTap,
}

/// Who sent a talk-back packet (the peer's id): each gets its own Opus
/// decoder, and only the newest talker is played.
pub type Talker = Arc<str>;

/// Where peers hand talk-back Opus payloads.
pub type Talkback = Arc<dyn Fn(&Talker, Bytes) + Send + Sync>;

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, MediaError> {
    std::thread::Builder::new()
        .name(format!("roomcam-{name}"))
        .spawn(f)
        .map_err(|e| MediaError::Device { device: format!("{name} thread"), reason: e.to_string() })
}

impl MediaPipeline {
    /// Starts all threads. Each source is read once here, so a source that
    /// cannot work at all (`MediaError::Unsupported`) fails the start;
    /// any other error is logged and retried by the capture thread.
    /// Nothing is encoded until [`set_viewers`](Self::set_viewers) says
    /// somebody is watching.
    pub fn start(
        mut video: Box<dyn VideoSource>,
        encoder: Box<dyn VideoEncoder>,
        mut audio: Option<Box<dyn AudioSource>>,
        speaker: Box<dyn AudioSink>,
        settings: PipelineSettings,
    ) -> Result<Self, MediaError> {
        // Parameter sets are tracked from the very first access unit: a
        // camera may send its SPS/PPS only once, with the first IDR.
        let mut parameter_sets = ParameterSets::default();
        match video.next_frame() {
            Err(e @ MediaError::Unsupported(_)) => return Err(e),
            Err(e) => log::warn!("camera: {e}; will keep retrying"),
            Ok(CameraFrame::H264(au)) if au.keyframe => {
                parameter_sets.complete_idr(au.data.to_vec());
            }
            Ok(_) => {}
        }
        if let Some(source) = audio.as_mut() {
            let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
            match source.read_frame(&mut pcm) {
                Err(e @ MediaError::Unsupported(_)) => return Err(e),
                Err(e) => log::warn!("microphone: {e}; will keep retrying"),
                Ok(()) => {}
            }
        }
        let opus_encoder = match audio {
            Some(_) => Some(OpusEncoder::with_settings(&settings.opus)?),
            None => None,
        };
        // Fail the start now, not per viewer, if Opus cannot decode at all.
        OpusDecoder::new()?;

        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            viewers: AtomicUsize::new(0),
            viewers_without_video: AtomicUsize::new(0),
            keyframe_requested: AtomicBool::new(false),
            restart: AtomicBool::new(false),
            camera_keyframe_wanted: AtomicBool::new(false),
            video_rate: AtomicU64::new(0),
            handover: Handover::default(),
            counters: Counters::default(),
            talkback_limit: LogLimit::once_per(Duration::from_secs(5)),
            voice_played: AtomicU64::new(0),
            started: Instant::now(),
        });
        let (video_tx, _) = broadcast::channel(settings.video_channel_capacity.max(1));
        let (audio_tx, _) = broadcast::channel(settings.audio_channel_capacity.max(1));
        let (talkback_tx, talkback_rx) = std::sync::mpsc::sync_channel(settings.talkback_queue.max(1));
        // Built before spawning so that, if a spawn fails, Drop stops and
        // joins whatever did start.
        let sound = crate::alerts::SoundTap::default();
        let mut pipeline = Self { shared, threads: Vec::new(), video_tx, audio_tx, talkback_tx, sound };

        let shared = Arc::clone(&pipeline.shared);
        let placeholder_size = settings.placeholder_size;
        let night = crate::media::night::NightSwitch::new(settings.night);
        pipeline.threads.push(spawn("capture", move || {
            capture::capture_loop(&shared, video.as_mut(), parameter_sets, placeholder_size, night)
        })?);

        let shared = Arc::clone(&pipeline.shared);
        let tx = pipeline.video_tx.clone();
        let camera_fps = settings.camera_fps;
        let encode_times = settings.encode_times.clone();
        pipeline.threads.push(spawn("encode", move || {
            encode::encode_loop(&shared, encoder, camera_fps, encode_times.as_ref(), &tx)
        })?);

        // What the speaker played, for the microphone's echo canceller.
        let reference = (settings.echo_cancellation && audio.is_some())
            .then(|| Arc::new(echo::Reference::new(ECHO_REFERENCE_SAMPLES)));
        if let (Some(mut source), Some(mut opus)) = (audio, opus_encoder) {
            let shared = Arc::clone(&pipeline.shared);
            let tx = pipeline.audio_tx.clone();
            let mut listener =
                settings.sound_alerts.map(|alerts| microphone::Listener::new(alerts, pipeline.sound.clone()));
            let mut echo =
                reference.as_ref().map(|r| echo::EchoRemoval::new(Box::new(echo::Aec3::new()), Arc::clone(r)));
            pipeline.threads.push(spawn("audio", move || {
                microphone::microphone_loop(&shared, source.as_mut(), &mut opus, &tx, listener.as_mut(), echo.as_mut())
            })?);
        }

        let shared = Arc::clone(&pipeline.shared);
        pipeline
            .threads
            .push(spawn("speaker", move || speaker::speaker_loop(&shared, &talkback_rx, speaker, reference))?);
        Ok(pipeline)
    }

    /// The peer subscribes once per viewer.
    pub fn video_sender(&self) -> broadcast::Sender<EncodedVideo> {
        self.video_tx.clone()
    }

    /// Sound alerts as they start and end, and the room's level.
    pub fn sound_events(&self) -> broadcast::Receiver<crate::alerts::RoomSound> {
        self.sound.subscribe()
    }

    /// The room's sound for the viewers' pages: what is heard, and the alert now.
    pub fn sound_tap(&self) -> crate::alerts::SoundTap {
        self.sound.clone()
    }

    pub fn audio_sender(&self) -> broadcast::Sender<EncodedAudio> {
        self.audio_tx.clone()
    }

    /// Encoding (video and audio) runs only while `n > 0`. Capture keeps
    /// running regardless: a real camera keeps its exposure and white
    /// balance converged and has no stale buffers queued, so the first
    /// picture a new viewer gets is current and correctly exposed, and
    /// reading the microphone continuously avoids ALSA overruns on resume.
    /// Capture is cheap next to encoding, which is what this saves.
    pub fn set_viewers(&self, n: usize) {
        let watched_before = self.shared.video_watched();
        self.shared.viewers.store(n, Ordering::Release);
        self.resume_with_idr_if(watched_before);
    }

    /// After a pause of the picture (no viewer, or none taking video), the
    /// encoder's references are stale and the viewer needs SPS/PPS: the
    /// stream restarts with an IDR.
    fn resume_with_idr_if(&self, watched_before: bool) {
        if !watched_before && self.shared.video_watched() {
            self.shared.restart.store(true, Ordering::Release);
            self.shared.keyframe_requested.store(true, Ordering::Release);
        }
    }

    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Acquire)
    }

    /// How many of the viewers take no video (listen-only on a phone in a
    /// pocket, or a viewer without H.264). When that is all of them the
    /// encoder rests (on a Pi Zero that is most of the daemon's CPU) and
    /// the picture resumes with an IDR when one of them wants it again.
    pub fn set_viewers_without_video(&self, n: usize) {
        let watched_before = self.shared.video_watched();
        self.shared.viewers_without_video.store(n, Ordering::Release);
        self.resume_with_idr_if(watched_before);
    }

    /// The stream's bitrate and frame rate from now on (the rate policy's
    /// target): the encode thread retunes the encoder, without an IDR, and
    /// drops pictures to reach a lower frame rate; a camera that encodes
    /// H.264 itself is given the bitrate where it has the control.
    pub fn set_video_rate(&self, rate: VideoRate) {
        self.shared.video_rate.store(rate.packed(), Ordering::Release);
    }

    /// The next encoded frame will be an IDR (new viewer, PLI, FIR).
    pub fn request_keyframe(&self) {
        self.shared.keyframe_requested.store(true, Ordering::Release);
    }

    /// Accepts talk-back Opus payloads from any thread without blocking.
    /// An empty payload means "a packet was lost here" and is concealed.
    /// When the speaker falls behind, packets are dropped.
    pub fn talkback_handle(&self) -> Talkback {
        let tx = self.talkback_tx.clone();
        let shared = Arc::clone(&self.shared);
        Arc::new(move |talker: &Talker, packet: Bytes| {
            bump(&shared.counters.talkback_received);
            match tx.try_send((Arc::clone(talker), packet)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    bump(&shared.counters.talkback_dropped);
                    warn_limited!(shared.talkback_limit, "talk-back: speaker queue full, dropping audio");
                }
                // The pipeline is stopping; nothing to play it on.
                Err(TrySendError::Disconnected(_)) => bump(&shared.counters.talkback_dropped),
            }
        })
    }

    pub fn stats(&self) -> PipelineStats {
        self.shared.stats()
    }

    /// [`stats`](Self::stats) for whoever reads them from another task
    /// (a scrape of `/metrics`), for as long as it likes.
    pub fn stats_reader(&self) -> impl Fn() -> PipelineStats + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.stats()
    }
}

impl Shared {
    fn stats(&self) -> PipelineStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PipelineStats {
            capture_returns: get(&c.capture_returns),
            frames_captured: get(&c.frames_captured),
            frames_dropped: get(&c.frames_dropped),
            frames_encoded: get(&c.frames_encoded),
            keyframes: get(&c.keyframes),
            encoder_skips: get(&c.encoder_skips),
            audio_packets: get(&c.audio_packets),
            talkback_received: get(&c.talkback_received),
            talkback_dropped: get(&c.talkback_dropped),
            talkback_muted: get(&c.talkback_muted),
            talkback_errors: get(&c.talkback_errors),
            source_errors: get(&c.source_errors),
            sound_alerts: get(&c.sound_alerts),
            video_target_bps: VideoRate::unpacked(self.video_rate.load(Ordering::Acquire))
                .map_or(0, |rate| rate.bitrate_bps),
            capture_to_au_count: get(&c.capture_to_au_count),
            capture_to_au_us_sum: get(&c.capture_to_au_us_sum),
            capture_to_au_max_us: get(&c.capture_to_au_max_us),
        }
    }
}

impl MediaPipeline {
    /// Stops and joins all threads. A source blocked in a read is waited
    /// for (one frame period for a healthy device). Idempotent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.handover.wake_all();
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("media").to_owned();
            if t.join().is_err() {
                log::error!("{name} thread panicked");
            }
        }
    }
}

impl Drop for MediaPipeline {
    fn drop(&mut self) {
        self.stop();
    }
}
