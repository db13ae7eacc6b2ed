//! The media pipeline: capture → encode → broadcast to viewers, and the
//! talk-back path from viewers to the speaker.
//!
//! Threads (all plain std threads: capture, encode and playback must keep
//! their timing whatever the async runtime is doing):
//!
//! * `capture`: pulls frames from the camera into a one-picture slot (or,
//!   from a camera that encodes H.264 itself, into an ordered queue);
//! * `encode`: takes the newest picture from the slot, encodes, broadcasts
//!   (and broadcasts the camera's own access units, in order, so that the
//!   "camera unavailable" picture and the camera's stream never interleave);
//! * `audio`: microphone → Opus → broadcast (Opus is cheap enough to run
//!   inline, and 20 ms frames must not queue behind video);
//! * `speaker`: talk-back Opus packets → decode (one decoder per viewer)
//!   → the newest talker's voice → speaker.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::audio::{OpusDecoder, OpusEncoder, OpusSettings, rms_dbfs};
use super::talkback::{Floor, FloorChange, VOICE_DBFS};
use super::video::ParameterSets;
use super::{
    AUDIO_FRAME_SAMPLES, AudioSink, AudioSource, CameraFrame, EncodedAudio, EncodedVideo, I420Frame, KeyframeRequest,
    MediaError, VideoEncoder, VideoSource,
};

/// Access units from an H.264 camera waiting to be sent (about half a
/// second). They cannot be skipped like pictures (each depends on the one
/// before), so when the sender falls this far behind the queue is dropped
/// and restarts at the camera's next IDR.
const PASSTHROUGH_QUEUE: usize = 16;

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
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            opus: OpusSettings::default(),
            video_channel_capacity: 8,
            audio_channel_capacity: 16,
            talkback_queue: 25,
            placeholder_size: (640, 480),
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
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Lets one warning through per interval and counts the rest, so a broken
/// device or a peer sending junk cannot flood the journal.
struct RateLimit {
    epoch: Instant,
    interval: Duration,
    /// Milliseconds since `epoch` of the last allowed message, plus one
    /// (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        Self { epoch: Instant::now(), interval, last: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` if a message may be logged now, `n` = messages suppressed since the last one.
    fn allow(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now - last < self.interval.as_millis() as u64 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Another thread may have won the race; then this one is suppressed.
        if self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limit.allow() {
            if suppressed > 0 {
                log::warn!("{} ({suppressed} similar suppressed)", format_args!($($arg)+));
            } else {
                log::warn!($($arg)+);
            }
        }
    };
}

struct Shared {
    stop: AtomicBool,
    viewers: AtomicUsize,
    keyframe_requested: AtomicBool,
    /// Set on 0 → >0 viewers: the next thing sent must be an IDR.
    restart: AtomicBool,
    /// The sender wants an IDR from a camera that encodes for itself.
    camera_keyframe_wanted: AtomicBool,
    slot: Mutex<Slot>,
    slot_cv: Condvar,
    counters: Counters,
    talkback_limit: RateLimit,
}

/// Hand-over from the capture thread to the encode thread.
#[derive(Default)]
struct Slot {
    /// "Latest picture wins": capture overwrites, the encoder takes.
    picture: Option<I420Frame>,
    /// From an H.264 camera, in order.
    access_units: VecDeque<EncodedVideo>,
    /// The queue overflowed: drop until the camera's next IDR.
    access_units_broken: bool,
}

/// What the encode thread gets next.
enum Next {
    Picture(I420Frame),
    AccessUnit(EncodedVideo),
}

/// Where the stream the viewers decode currently comes from. A switch
/// needs an IDR from the new origin, since their references differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Encoder,
    Camera,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked thread must not take the others down with it; the slot
    // holds plain data that is valid whatever happened.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn put_frame(&self, frame: I420Frame) {
        if lock(&self.slot).picture.replace(frame).is_some() {
            bump(&self.counters.frames_dropped);
        }
        self.slot_cv.notify_one();
    }

    fn put_access_unit(&self, au: EncodedVideo) {
        let mut slot = lock(&self.slot);
        if slot.access_units.len() >= PASSTHROUGH_QUEUE {
            let dropped = slot.access_units.len() as u64;
            slot.access_units.clear();
            slot.access_units_broken = true;
            self.counters.frames_dropped.fetch_add(dropped, Ordering::Relaxed);
            self.camera_keyframe_wanted.store(true, Ordering::Release);
        }
        if slot.access_units_broken && !au.keyframe {
            bump(&self.counters.frames_dropped);
            return;
        }
        slot.access_units_broken = false;
        // The camera is back: a placeholder still waiting must not go out
        // after its frames (it would cost the viewers a wait for the
        // camera's next IDR).
        if slot.picture.take().is_some() {
            bump(&self.counters.frames_dropped);
        }
        slot.access_units.push_back(au);
        drop(slot);
        self.slot_cv.notify_one();
    }

    /// Blocks for the next access unit or the newest picture; `None` once stopping.
    fn take(&self) -> Option<Next> {
        let mut slot = lock(&self.slot);
        loop {
            if self.stopping() {
                return None;
            }
            if let Some(au) = slot.access_units.pop_front() {
                return Some(Next::AccessUnit(au));
            }
            if let Some(frame) = slot.picture.take() {
                return Some(Next::Picture(frame));
            }
            // The timeout is only a backstop for the stop flag.
            slot =
                self.slot_cv.wait_timeout(slot, Duration::from_millis(100)).unwrap_or_else(PoisonError::into_inner).0;
        }
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

/// Retry pacing for a failing device: 50 ms doubling to 5 s, so a camera
/// that was unplugged is picked up again soon after it comes back without
/// spinning a core while it is gone.
struct Backoff {
    delay: Duration,
    max: Duration,
    limit: RateLimit,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { delay: Self::FIRST, max: Self::MAX, limit: RateLimit::new(Duration::from_secs(10)) }
    }

    fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    fn failed(&mut self, shared: &Shared, what: &str, err: &MediaError) -> bool {
        bump(&shared.counters.source_errors);
        warn_limited!(self.limit, "{what}: {err}; retrying in {:?}", self.delay);
        let keep_going = shared.sleep(self.delay);
        self.delay = (self.delay * 2).min(self.max);
        keep_going
    }
}

pub struct MediaPipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    video_tx: broadcast::Sender<EncodedVideo>,
    audio_tx: broadcast::Sender<EncodedAudio>,
    talkback_tx: SyncSender<(Talker, Bytes)>,
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
            keyframe_requested: AtomicBool::new(false),
            restart: AtomicBool::new(false),
            camera_keyframe_wanted: AtomicBool::new(false),
            slot: Mutex::new(Slot::default()),
            slot_cv: Condvar::new(),
            counters: Counters::default(),
            talkback_limit: RateLimit::new(Duration::from_secs(5)),
        });
        let (video_tx, _) = broadcast::channel(settings.video_channel_capacity.max(1));
        let (audio_tx, _) = broadcast::channel(settings.audio_channel_capacity.max(1));
        let (talkback_tx, talkback_rx) = std::sync::mpsc::sync_channel(settings.talkback_queue.max(1));
        // Built before spawning so that, if a spawn fails, Drop stops and
        // joins whatever did start.
        let mut pipeline = Self { shared, threads: Vec::new(), video_tx, audio_tx, talkback_tx };

        let shared = Arc::clone(&pipeline.shared);
        let placeholder_size = settings.placeholder_size;
        pipeline
            .threads
            .push(spawn("capture", move || capture_loop(&shared, video.as_mut(), parameter_sets, placeholder_size))?);

        let shared = Arc::clone(&pipeline.shared);
        let tx = pipeline.video_tx.clone();
        pipeline.threads.push(spawn("encode", move || encode_loop(&shared, encoder, &tx))?);

        if let (Some(mut source), Some(mut opus)) = (audio, opus_encoder) {
            let shared = Arc::clone(&pipeline.shared);
            let tx = pipeline.audio_tx.clone();
            pipeline.threads.push(spawn("audio", move || audio_loop(&shared, source.as_mut(), &mut opus, &tx))?);
        }

        let shared = Arc::clone(&pipeline.shared);
        pipeline.threads.push(spawn("speaker", move || speaker_loop(&shared, &talkback_rx, speaker))?);
        Ok(pipeline)
    }

    /// The peer subscribes once per viewer.
    pub fn video_sender(&self) -> broadcast::Sender<EncodedVideo> {
        self.video_tx.clone()
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
        let before = self.shared.viewers.swap(n, Ordering::AcqRel);
        if before == 0 && n > 0 {
            // The encoder's references are stale after a pause, and the new
            // viewer needs SPS/PPS: restart the stream with an IDR.
            self.shared.restart.store(true, Ordering::Release);
            self.shared.keyframe_requested.store(true, Ordering::Release);
        }
    }

    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Acquire)
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
        let c = &self.shared.counters;
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
        }
    }

    /// Stops and joins all threads. A source blocked in a read is waited
    /// for (one frame period for a healthy device). Idempotent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            // Taking the lock orders the flag before the wake-up, so the
            // encoder cannot miss it between its check and its wait.
            let _slot = lock(&self.shared.slot);
            self.shared.slot_cv.notify_all();
        }
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

fn capture_loop(
    shared: &Shared,
    source: &mut dyn VideoSource,
    mut parameter_sets: ParameterSets,
    mut size: (u32, u32),
) {
    let mut backoff = Backoff::new();
    // While the camera is away, viewers get a placeholder picture at least
    // this often, and the camera is retried at least this often.
    backoff.max = Duration::from_millis(500);
    let mut told_keyframes_unsupported = false;
    while !shared.stopping() {
        if shared.camera_keyframe_wanted.swap(false, Ordering::AcqRel)
            && source.request_keyframe() == KeyframeRequest::Unsupported
            && !std::mem::replace(&mut told_keyframes_unsupported, true)
        {
            log::warn!(
                "camera: it encodes H.264 itself and cannot be asked for a keyframe, so viewers' picture-loss \
                 requests (PLI/FIR) cannot be honoured: a new or recovering viewer waits for the camera's next IDR"
            );
        }
        let next = source.next_frame();
        bump(&shared.counters.capture_returns);
        match next {
            Ok(frame) => {
                backoff.reset();
                bump(&shared.counters.frames_captured);
                let watched = shared.viewers.load(Ordering::Acquire) > 0;
                match frame {
                    CameraFrame::Picture(picture) => {
                        size = (picture.width, picture.height);
                        if watched {
                            shared.put_frame(picture);
                        } else {
                            bump(&shared.counters.frames_dropped);
                        }
                    }
                    CameraFrame::H264(mut au) => {
                        // Every keyframe, watched or not: the camera may have
                        // sent its SPS/PPS long before the first viewer came.
                        if au.keyframe {
                            au.data = parameter_sets.complete_idr(au.data.to_vec()).into();
                        }
                        if watched {
                            shared.put_access_unit(au);
                        } else {
                            bump(&shared.counters.frames_dropped);
                        }
                    }
                }
            }
            Err(e) => {
                if shared.viewers.load(Ordering::Acquire) > 0
                    && let Some(frame) = super::placeholder::camera_unavailable(size.0, size.1, SystemTime::now())
                {
                    shared.put_frame(frame);
                }
                if !backoff.failed(shared, "camera", &e) {
                    break;
                }
            }
        }
    }
}

/// Encodes pictures and forwards a camera's own access units: every frame
/// the viewers get leaves from here, in order.
fn encode_loop(shared: &Shared, mut encoder: Box<dyn VideoEncoder>, tx: &broadcast::Sender<EncodedVideo>) {
    let limit = RateLimit::new(Duration::from_secs(10));
    let mut want_key = true;
    // Until an IDR has gone out, P frames are useless to every viewer.
    let mut need_idr_first = true;
    let mut origin: Option<Origin> = None;
    // The camera was asked for the IDR that `need_idr_first` waits for.
    let mut asked_camera = false;
    while let Some(next) = shared.take() {
        if shared.viewers.load(Ordering::Acquire) == 0 {
            bump(&shared.counters.frames_dropped);
            need_idr_first = true;
            want_key = true;
            continue;
        }
        if shared.restart.swap(false, Ordering::AcqRel) {
            need_idr_first = true;
        }
        let keyframe_requested = shared.keyframe_requested.swap(false, Ordering::AcqRel);
        let frame = match next {
            Next::Picture(frame) => frame,
            Next::AccessUnit(au) => {
                if origin != Some(Origin::Camera) {
                    origin = Some(Origin::Camera);
                    need_idr_first = true;
                }
                if keyframe_requested || (need_idr_first && !au.keyframe && !asked_camera) {
                    shared.camera_keyframe_wanted.store(true, Ordering::Release);
                    asked_camera = true;
                }
                if au.keyframe {
                    need_idr_first = false;
                    asked_camera = false;
                    bump(&shared.counters.keyframes);
                } else if need_idr_first {
                    bump(&shared.counters.frames_dropped);
                    continue;
                }
                bump(&shared.counters.frames_encoded);
                let _ = tx.send(au);
                continue;
            }
        };
        if origin != Some(Origin::Encoder) {
            origin = Some(Origin::Encoder);
            need_idr_first = true;
        }
        want_key |= keyframe_requested || need_idr_first;
        match encoder.encode(&frame, want_key) {
            Ok(Some(ev)) => {
                if ev.keyframe {
                    want_key = false;
                    need_idr_first = false;
                    bump(&shared.counters.keyframes);
                } else if need_idr_first {
                    continue;
                }
                bump(&shared.counters.frames_encoded);
                // No receivers is normal (viewer count and subscriptions are
                // updated by different tasks).
                let _ = tx.send(ev);
            }
            Ok(None) => bump(&shared.counters.encoder_skips),
            Err(e) => {
                warn_limited!(limit, "video encoder: {e}");
                // The encoder may have lost its state; restart cleanly.
                want_key = true;
            }
        }
    }
}

fn audio_loop(
    shared: &Shared,
    source: &mut dyn AudioSource,
    opus: &mut OpusEncoder,
    tx: &broadcast::Sender<EncodedAudio>,
) {
    let mut backoff = Backoff::new();
    let limit = RateLimit::new(Duration::from_secs(10));
    let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
    while !shared.stopping() {
        if let Err(e) = source.read_frame(&mut pcm) {
            if !backoff.failed(shared, "microphone", &e) {
                break;
            }
            continue;
        }
        backoff.reset();
        if shared.viewers.load(Ordering::Acquire) == 0 {
            continue;
        }
        match opus.encode(&pcm) {
            Ok(packet) => {
                bump(&shared.counters.audio_packets);
                let _ = tx.send(packet);
            }
            Err(e) => warn_limited!(limit, "audio encoder: {e}"),
        }
    }
}

/// A viewer silent this long loses its decoder (it has most likely left).
const TALKER_IDLE: Duration = Duration::from_secs(30);

fn speaker_loop(shared: &Shared, rx: &Receiver<(Talker, Bytes)>, mut sink: Box<dyn AudioSink>) {
    let decode_limit = RateLimit::new(Duration::from_secs(5));
    let sink_limit = RateLimit::new(Duration::from_secs(10));
    let mut decoders: HashMap<Talker, (OpusDecoder, Instant)> = HashMap::new();
    let mut floor = Floor::default();
    while !shared.stopping() {
        let (talker, packet) = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = Instant::now();
        decoders.retain(|_, (_, last)| now.duration_since(*last) < TALKER_IDLE);
        let decoded = match decoders.entry(Arc::clone(&talker)) {
            Entry::Occupied(mut e) => {
                e.get_mut().1 = now;
                e.into_mut().0.decode(&packet)
            }
            Entry::Vacant(e) => match OpusDecoder::new() {
                Ok(decoder) => e.insert((decoder, now)).0.decode(&packet),
                Err(err) => Err(err),
            },
        };
        let pcm = match decoded {
            Ok(pcm) if pcm.is_empty() => continue,
            Ok(pcm) => pcm,
            Err(e) => {
                bump(&shared.counters.talkback_errors);
                warn_limited!(decode_limit, "talk-back from {talker}: dropping bad packet: {e}");
                continue;
            }
        };
        let (play, change) = floor.admit(&talker, rms_dbfs(&pcm) > VOICE_DBFS, now);
        match change {
            Some(FloorChange::Taken { talker, over: Some(over) }) => {
                log::info!("talk-back: {talker} talks over {over}; {over} muted while {talker} talks")
            }
            Some(FloorChange::Taken { talker, over: None }) => log::info!("talk-back: {talker} has the speaker"),
            Some(FloorChange::Released) => log::info!("talk-back: nobody talks"),
            None => {}
        }
        if !play {
            bump(&shared.counters.talkback_muted);
            continue;
        }
        if let Err(e) = sink.write(&pcm) {
            bump(&shared.counters.talkback_errors);
            warn_limited!(sink_limit, "speaker: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::AUDIO_SAMPLE_RATE;
    use crate::media::audio::{dominant_frequency, sine};
    use crate::media::test_sources::{
        H264TestCamera, NullSpeaker, TestPattern, ToneSource, looks_like_test_pattern, read_stamp,
    };
    use crate::media::video::{H264Decoder, H264Encoder, H264Settings};
    use std::time::{SystemTime, UNIX_EPOCH};

    fn h264(w: u32, h: u32) -> Box<H264Encoder> {
        Box::new(
            H264Encoder::new(H264Settings {
                width: w,
                height: h,
                fps: 30,
                bitrate_kbps: 400,
                ..H264Settings::default()
            })
            .unwrap(),
        )
    }

    fn pattern(fps: u32) -> Box<TestPattern> {
        Box::new(TestPattern::new(320, 240, fps).unwrap())
    }

    fn start_video(video: Box<dyn VideoSource>, enc: Box<dyn VideoEncoder>) -> MediaPipeline {
        MediaPipeline::start(video, enc, None, Box::new(NullSpeaker::new()), PipelineSettings::default()).unwrap()
    }

    /// Receives up to `n` items or until `timeout`, skipping over lag.
    fn collect<T: Clone>(rx: &mut broadcast::Receiver<T>, n: usize, timeout: Duration) -> Vec<T> {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < end {
            match rx.try_recv() {
                Ok(v) => out.push(v),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        out
    }

    fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    #[test]
    fn video_flows_only_while_watched_and_each_session_starts_with_an_idr() {
        let mut p = start_video(pattern(30), h264(320, 240));
        let mut rx = p.video_sender().subscribe();
        std::thread::sleep(Duration::from_millis(300));
        assert!(collect(&mut rx, 1, Duration::from_millis(50)).is_empty(), "encoded with no viewers");
        assert!(p.stats().frames_captured >= 5, "capture keeps running: {:?}", p.stats());

        p.set_viewers(1);
        let frames = collect(&mut rx, 20, Duration::from_secs(5));
        assert_eq!(frames.len(), 20);
        assert!(frames[0].keyframe, "first frame for a new viewer is an IDR");
        let mut dec = H264Decoder::new().unwrap();
        let mut last = None;
        for ev in &frames {
            let pic = dec.decode(&ev.data).unwrap().expect("every access unit decodes");
            assert!(looks_like_test_pattern(&pic));
            let stamp = read_stamp(&pic).expect("stamp survives");
            if let Some(prev) = last {
                assert!(stamp.frame_number > prev, "{} after {prev}", stamp.frame_number);
            }
            last = Some(stamp.frame_number);
            // The stream is live: decoded well within a second of capture.
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            assert!(now - stamp.captured_unix_ms < 1_000);
        }

        p.set_viewers(0);
        std::thread::sleep(Duration::from_millis(150));
        while rx.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(300));
        assert!(collect(&mut rx, 1, Duration::from_millis(50)).is_empty(), "encoding after viewers went to 0");

        p.set_viewers(2);
        let again = collect(&mut rx, 3, Duration::from_secs(3));
        assert_eq!(again.len(), 3);
        assert!(again[0].keyframe, "resuming starts with an IDR");
        assert!(!again[1].keyframe);
        let t0 = Instant::now();
        p.stop();
        assert!(t0.elapsed() < Duration::from_secs(1), "stop took {:?}", t0.elapsed());
    }

    #[test]
    fn request_keyframe_yields_an_idr_promptly() {
        let p = start_video(pattern(30), h264(320, 240));
        let mut rx = p.video_sender().subscribe();
        p.set_viewers(1);
        let first = collect(&mut rx, 5, Duration::from_secs(3));
        assert_eq!(first.iter().filter(|e| e.keyframe).count(), 1);
        p.request_keyframe();
        let next = collect(&mut rx, 4, Duration::from_secs(3));
        assert!(next.iter().any(|e| e.keyframe), "no IDR within 4 frames of the request");
        assert!(p.stats().keyframes >= 2);
    }

    /// Encoder that takes 150 ms per frame and records which frames it got.
    struct SlowEncoder {
        seen: Arc<Mutex<Vec<(u32, u64, Instant)>>>,
    }

    impl VideoEncoder for SlowEncoder {
        fn encode(&mut self, frame: &I420Frame, force: bool) -> Result<Option<EncodedVideo>, MediaError> {
            let stamp = read_stamp(frame).expect("test pattern");
            lock(&self.seen).push((stamp.frame_number, stamp.captured_unix_ms, Instant::now()));
            std::thread::sleep(Duration::from_millis(150));
            Ok(Some(EncodedVideo {
                data: Bytes::from(vec![0, 0, 0, 1, 0x65]),
                keyframe: force,
                duration: Duration::ZERO,
            }))
        }
    }

    #[test]
    fn slow_encoder_gets_the_latest_frame_and_old_ones_are_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut p = start_video(pattern(60), Box::new(SlowEncoder { seen: Arc::clone(&seen) }));
        p.set_viewers(1);
        std::thread::sleep(Duration::from_millis(1_300));
        p.stop();
        let seen = lock(&seen).clone();
        let stats = p.stats();
        assert!((5..=10).contains(&seen.len()), "encoded {} frames in 1.3 s at 150 ms each", seen.len());
        assert!(stats.frames_dropped >= 40, "{stats:?}");
        // Each encode got a fresh frame (about 9 frames newer than the
        // previous one at 60 fps), not the next one from a queue.
        for w in seen.windows(2) {
            assert!(w[1].0 >= w[0].0 + 6, "frame {} followed {}: queued, not latest", w[1].0, w[0].0);
        }
        // And it was captured no more than a couple of frame periods before
        // the encoder started on it.
        let unix_now = |i: Instant| {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            now_ms - i.elapsed().as_millis() as u64
        };
        for &(n, captured_ms, started) in &seen[1..] {
            let age = unix_now(started).saturating_sub(captured_ms);
            assert!(age <= 80, "frame {n} was {age} ms old when encoding started");
        }
    }

    /// Fails `failures` times with a device error, then behaves.
    struct FlakyCamera {
        failures: u32,
        inner: TestPattern,
    }

    impl VideoSource for FlakyCamera {
        fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(MediaError::Device { device: "/dev/video0".into(), reason: "unplugged".into() });
            }
            self.inner.next_frame()
        }
    }

    #[test]
    fn device_errors_are_retried_not_fatal() {
        let cam = FlakyCamera { failures: 4, inner: TestPattern::new(320, 240, 30).unwrap() };
        let p = start_video(Box::new(cam), h264(320, 240));
        let mut rx = p.video_sender().subscribe();
        p.set_viewers(1);
        let frames = collect(&mut rx, 3, Duration::from_secs(5));
        assert_eq!(frames.len(), 3, "video resumed after the device came back");
        assert!(frames[0].keyframe);
        assert_eq!(p.stats().source_errors, 3, "one failure at start, three in the capture thread");
    }

    /// Works, then is "unplugged" for a while, then works again.
    struct UnpluggedCamera {
        inner: Box<dyn VideoSource>,
        calls: u32,
    }

    impl VideoSource for UnpluggedCamera {
        fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
            self.calls += 1;
            if (10..16).contains(&self.calls) {
                std::thread::sleep(Duration::from_millis(20));
                return Err(MediaError::Device { device: "/dev/video0".into(), reason: "gone".into() });
            }
            self.inner.next_frame()
        }

        fn request_keyframe(&mut self) -> KeyframeRequest {
            self.inner.request_keyframe()
        }
    }

    #[test]
    fn viewers_see_a_placeholder_while_the_camera_is_away_then_the_camera_again() {
        let raw: Box<dyn VideoSource> = pattern(30);
        let h264_camera = Box::new(H264TestCamera::new(320, 240, 30, Duration::from_secs(5), true).unwrap());
        for inner in [raw, h264_camera] {
            let cam = UnpluggedCamera { inner, calls: 0 };
            let p = start_video(Box::new(cam), h264(320, 240));
            let mut rx = p.video_sender().subscribe();
            p.set_viewers(1);
            // One decoder throughout, as a viewer that never reconnects:
            // after the first IDR every frame must decode, whether it came
            // from the camera or from the placeholder, in whichever order.
            let mut dec = H264Decoder::new().unwrap();
            let (mut saw_placeholder, mut pattern_after, mut decoded) = (false, false, 0);
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end && !pattern_after {
                for ev in collect(&mut rx, 1, Duration::from_millis(200)) {
                    let pic = dec.decode(&ev.data).unwrap().expect("every frame decodes");
                    decoded += 1;
                    if crate::media::placeholder::looks_like_placeholder(&pic) {
                        saw_placeholder = true;
                    } else if saw_placeholder && looks_like_test_pattern(&pic) {
                        pattern_after = true;
                    } else {
                        assert!(looks_like_test_pattern(&pic), "frame {decoded} is neither camera nor placeholder");
                    }
                }
            }
            assert!(saw_placeholder, "no placeholder while the camera was away");
            assert!(pattern_after, "camera pictures did not come back");
        }
    }

    #[test]
    fn an_h264_cameras_stream_is_passed_through_from_an_idr_with_parameter_sets() {
        // Like most UVC cameras: no keyframe on request, SPS/PPS only once.
        let camera = H264TestCamera::new(320, 240, 30, Duration::from_millis(500), false).unwrap();
        // The encoder must never run while the camera delivers H.264.
        let p = start_video(Box::new(camera), Box::new(FailingEncoder));
        let mut rx = p.video_sender().subscribe();
        std::thread::sleep(Duration::from_millis(700));
        p.set_viewers(1);
        p.request_keyframe();
        let frames = collect(&mut rx, 45, Duration::from_secs(5));
        assert_eq!(frames.len(), 45);
        assert!(frames[0].keyframe, "a viewer's first frame is an IDR");
        assert_eq!(&crate::media::video::nal_types(&frames[0].data)[..2], &[7, 8], "with SPS and PPS");
        let mut dec = H264Decoder::new().unwrap();
        let mut last = None;
        for ev in &frames {
            let pic = dec.decode(&ev.data).unwrap().expect("every access unit decodes");
            let stamp = read_stamp(&pic).expect("the camera's own picture");
            // Passed through: consecutive camera frames, none skipped.
            if let Some(prev) = last {
                assert_eq!(stamp.frame_number, prev + 1);
            }
            last = Some(stamp.frame_number);
        }
        assert!(frames.iter().filter(|f| f.keyframe).count() >= 2, "the camera's periodic IDRs go through");
        let stats = p.stats();
        assert!(stats.frames_encoded >= 45 && stats.encoder_skips == 0, "{stats:?}");
    }

    #[test]
    fn keyframe_requests_reach_an_h264_camera_that_can_take_them() {
        let camera = H264TestCamera::new(320, 240, 30, Duration::from_secs(60), true).unwrap();
        let p = start_video(Box::new(camera), Box::new(FailingEncoder));
        let mut rx = p.video_sender().subscribe();
        p.set_viewers(1);
        let first = collect(&mut rx, 5, Duration::from_secs(3));
        assert!(first[0].keyframe);
        assert_eq!(first.iter().filter(|f| f.keyframe).count(), 1);
        p.request_keyframe();
        let next = collect(&mut rx, 5, Duration::from_secs(3));
        assert!(next.iter().any(|f| f.keyframe), "no IDR within 5 frames of the request (GOP is 60 s)");
    }

    /// For streams that must bypass roomcam's encoder.
    struct FailingEncoder;
    impl VideoEncoder for FailingEncoder {
        fn encode(&mut self, _: &I420Frame, _: bool) -> Result<Option<EncodedVideo>, MediaError> {
            panic!("the encoder ran on a passed-through stream");
        }
    }

    /// Records what reaches the speaker.
    struct RecordingSpeaker(Arc<Mutex<Vec<i16>>>);
    impl AudioSink for RecordingSpeaker {
        fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
            lock(&self.0).extend_from_slice(pcm);
            Ok(())
        }
    }

    #[test]
    fn the_newest_talker_has_the_speaker() {
        let played = Arc::new(Mutex::new(Vec::new()));
        let speaker = Box::new(RecordingSpeaker(Arc::clone(&played)));
        let p = MediaPipeline::start(pattern(30), h264(320, 240), None, speaker, PipelineSettings::default()).unwrap();
        let talk = p.talkback_handle();
        let (alice, bob) = (Talker::from("alice"), Talker::from("bob"));
        let (mut alice_opus, mut bob_opus) = (OpusEncoder::new(32_000).unwrap(), OpusEncoder::new(32_000).unwrap());
        let alice_voice = sine(440.0, 8_000.0, 48_000 * 4, 0);
        let bob_voice = sine(660.0, 8_000.0, 48_000 * 4, 0);
        let silence = [0i16; AUDIO_FRAME_SAMPLES];
        let frame = |pcm: &[i16]| -> [i16; AUDIO_FRAME_SAMPLES] { pcm.try_into().unwrap() };
        // Alice talks throughout; Bob from 0.8 s to 1.8 s (and sends
        // silence otherwise, as a browser with push-to-talk released does).
        for i in 0..150 {
            let chunk = i * AUDIO_FRAME_SAMPLES..(i + 1) * AUDIO_FRAME_SAMPLES;
            talk(&alice, alice_opus.encode(&frame(&alice_voice[chunk.clone()])).unwrap().data);
            let bob_frame = if (40..90).contains(&i) { frame(&bob_voice[chunk]) } else { silence };
            talk(&bob, bob_opus.encode(&bob_frame).unwrap().data);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(wait_until(Duration::from_secs(2), || p.stats().talkback_received == 300));
        std::thread::sleep(Duration::from_millis(200));
        let pcm = lock(&played).clone();
        // What was heard, 200 ms at a time: Alice, then only Bob, then Alice again.
        let heard: Vec<u32> = pcm
            .chunks_exact(9_600)
            .map(|c| dominant_frequency(c, AUDIO_SAMPLE_RATE).map_or(0, |f| (f / 110.0).round() as u32 * 110))
            .collect();
        let mut phases = heard.clone();
        phases.dedup();
        phases.retain(|&f| f != 0);
        assert_eq!(phases, vec![440, 660, 440], "heard {heard:?}");
        // Nothing was mixed: while Bob had the speaker Alice was muted.
        assert!(p.stats().talkback_muted >= 45, "{:?}", p.stats());
        // (150 frames of one voice, give or take the frames at a handover.)
        assert!(pcm.len() <= 152 * AUDIO_FRAME_SAMPLES, "one voice at a time, not two: {} samples", pcm.len());
    }

    struct NoCamera;
    impl VideoSource for NoCamera {
        fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
            Err(MediaError::Unsupported("MJPEG".into()))
        }
    }
    struct NoMic;
    impl AudioSource for NoMic {
        fn read_frame(&mut self, _: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError> {
            Err(MediaError::Unsupported("S24_3LE".into()))
        }
    }

    #[test]
    fn unsupported_source_fails_start() {
        let spk = || Box::new(NullSpeaker::new());
        let r = MediaPipeline::start(Box::new(NoCamera), h264(320, 240), None, spk(), PipelineSettings::default());
        assert!(matches!(r, Err(MediaError::Unsupported(ref s)) if s == "MJPEG"));
        let r = MediaPipeline::start(
            pattern(30),
            h264(320, 240),
            Some(Box::new(NoMic)),
            spk(),
            PipelineSettings::default(),
        );
        assert!(matches!(r, Err(MediaError::Unsupported(ref s)) if s == "S24_3LE"));
    }

    #[test]
    fn microphone_audio_is_encoded_while_watched() {
        let p = MediaPipeline::start(
            pattern(30),
            h264(320, 240),
            Some(Box::new(ToneSource::new(440.0))),
            Box::new(NullSpeaker::new()),
            PipelineSettings::default(),
        )
        .unwrap();
        let mut rx = p.audio_sender().subscribe();
        std::thread::sleep(Duration::from_millis(200));
        assert!(collect(&mut rx, 1, Duration::from_millis(30)).is_empty(), "audio encoded with no viewers");
        p.set_viewers(1);
        let packets = collect(&mut rx, 40, Duration::from_secs(4));
        assert_eq!(packets.len(), 40);
        let mut dec = OpusDecoder::new().unwrap();
        let pcm: Vec<i16> = packets.iter().flat_map(|pk| dec.decode(&pk.data).unwrap()).collect();
        let f = dominant_frequency(&pcm[9_600..], AUDIO_SAMPLE_RATE).unwrap();
        assert!((f - 440.0).abs() < 5.0, "{f}");
    }

    #[test]
    fn talkback_tone_reaches_the_speaker_despite_garbage() {
        let speaker = NullSpeaker::new();
        let stats = speaker.stats();
        let p = MediaPipeline::start(pattern(30), h264(320, 240), None, Box::new(speaker), PipelineSettings::default())
            .unwrap();
        let talk = p.talkback_handle();
        let mut enc = OpusEncoder::new(32_000).unwrap();
        let tone = sine(660.0, 8_231.0, 48_000 * 5 / 2, 0);
        // Pushed from another thread, a bit faster than real time.
        let pusher = std::thread::spawn(move || {
            let viewer = Talker::from("viewer");
            for (i, chunk) in tone.chunks_exact(AUDIO_FRAME_SAMPLES).enumerate() {
                let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
                frame.copy_from_slice(chunk);
                talk(&viewer, enc.encode(&frame).unwrap().data);
                if i % 25 == 7 {
                    talk(&viewer, Bytes::from_static(&[0xFF, 0xFF]));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        pusher.join().unwrap();
        assert!(wait_until(Duration::from_secs(3), || lock(&stats).reports >= 2), "{:?}", lock(&stats));
        let report = lock(&stats).last_report.unwrap();
        let hz = report.tone_hz.expect("a tone, not silence");
        assert!((hz - 660.0).abs() < 5.0, "{report:?}");
        assert!((report.rms_dbfs - -15.0).abs() < 2.0, "{report:?}");
        let s = p.stats();
        assert_eq!(s.talkback_errors, 5, "{s:?}");
        assert_eq!(s.talkback_received, 130);
        assert_eq!(s.talkback_dropped, 0);
    }

    /// A speaker that blocks for a long time on every write.
    struct StuckSpeaker;
    impl AudioSink for StuckSpeaker {
        fn write(&mut self, _: &[i16]) -> Result<(), MediaError> {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        }
    }

    #[test]
    fn talkback_never_blocks_the_caller() {
        let settings = PipelineSettings { talkback_queue: 5, ..PipelineSettings::default() };
        let mut p = MediaPipeline::start(pattern(30), h264(320, 240), None, Box::new(StuckSpeaker), settings).unwrap();
        let talk = p.talkback_handle();
        let pkt = OpusEncoder::new(24_000).unwrap().encode(&[0; AUDIO_FRAME_SAMPLES]).unwrap().data;
        let t0 = Instant::now();
        let viewer = Talker::from("viewer");
        for _ in 0..200 {
            talk(&viewer, pkt.clone());
        }
        assert!(t0.elapsed() < Duration::from_millis(100), "talk-back blocked for {:?}", t0.elapsed());
        let s = p.stats();
        assert_eq!(s.talkback_received, 200);
        assert!(s.talkback_dropped >= 190, "{s:?}");
        p.stop();
        // After stop the handle still works (drops) instead of panicking.
        talk(&viewer, pkt);
        assert_eq!(p.stats().talkback_dropped, s.talkback_dropped + 1);
    }

    #[test]
    fn pipeline_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MediaPipeline>();
    }

    #[test]
    fn rate_limit_lets_one_through_per_interval() {
        let rl = RateLimit::new(Duration::from_millis(100));
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), None);
        assert_eq!(rl.allow(), None);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(rl.allow(), Some(2));
    }
}
