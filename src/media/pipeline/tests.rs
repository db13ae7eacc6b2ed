//! The pipeline's threads together, with test sources, encoders and sinks.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::media::analysis::dominant_frequency;
use crate::media::encoders::h264::{H264Decoder, H264Encoder, H264Settings, nal_types};
use crate::media::fixtures::{looks_like_placeholder, looks_like_test_pattern, read_stamp, sine};
use crate::media::sinks::NullSpeaker;
use crate::media::sources::{H264TestCamera, TestPattern, ToneSource};
use crate::media::{AUDIO_SAMPLE_RATE, I420Frame, KeyframeRequest};
use crate::util::lock_ignoring_poison;

fn h264(w: u32, h: u32) -> Box<H264Encoder> {
    Box::new(
        H264Encoder::new(H264Settings { width: w, height: h, fps: 30, bitrate_kbps: 400, ..H264Settings::default() })
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

/// A camera that hands over a frame only when the test lets it, so that a
/// test knows exactly which frames the pipeline has been given, whatever
/// the threads' timing. Once the test's end is gone it runs freely (at the
/// inner camera's pace), so that the pipeline can stop.
struct SteppedCamera {
    inner: Box<dyn VideoSource>,
    go: Receiver<()>,
    /// Calls to `next_frame` so far: the capture thread asks for frame n+1
    /// only once it has handed frame n over.
    asked: Arc<AtomicU64>,
}

impl VideoSource for SteppedCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let _ = self.go.recv();
        self.inner.next_frame()
    }

    fn request_keyframe(&mut self) -> KeyframeRequest {
        self.inner.request_keyframe()
    }

    fn set_h264_bitrate(&mut self, bitrate_bps: u64) {
        self.inner.set_h264_bitrate(bitrate_bps);
    }
}

/// A pipeline on a [`SteppedCamera`].
struct Stepped {
    /// Declared first, so dropped first: the camera then runs freely and
    /// the pipeline, dropped next, can stop (also when a test fails).
    go: Option<Sender<()>>,
    asked: Arc<AtomicU64>,
    released: u64,
    p: MediaPipeline,
}

impl Stepped {
    fn start(inner: Box<dyn VideoSource>, encoder: Box<dyn VideoEncoder>) -> Self {
        let (go, go_rx) = channel();
        let asked = Arc::new(AtomicU64::new(0));
        // The frame `MediaPipeline::start` reads itself.
        go.send(()).unwrap();
        let camera = SteppedCamera { inner, go: go_rx, asked: Arc::clone(&asked) };
        let p = start_video(Box::new(camera), encoder);
        Self { go: Some(go), asked, released: 1, p }
    }

    /// Lets one frame through and waits until the capture thread has
    /// handed it to the encode thread (or dropped it, nobody watching).
    fn frame(&mut self) {
        self.go.as_ref().expect("not stopped").send(()).unwrap();
        self.released += 1;
        let (asked, released) = (&self.asked, self.released);
        assert!(
            wait_until(Duration::from_secs(5), || asked.load(Ordering::SeqCst) > released),
            "the capture thread did not take frame {released}"
        );
    }

    /// Lets frames through one at a time until one is sent to the viewers
    /// (rate control may skip a picture; a camera's access units are
    /// dropped until its IDR), and returns it with the time it arrived.
    fn next_sent(&mut self, rx: &mut broadcast::Receiver<EncodedVideo>) -> (EncodedVideo, SystemTime) {
        loop {
            let before = self.p.stats();
            self.frame();
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                match rx.try_recv() {
                    Ok(ev) => return (ev, SystemTime::now()),
                    Err(TryRecvError::Lagged(n)) => panic!("{n} frames more were sent than were let through"),
                    Err(_) => {}
                }
                let now = self.p.stats();
                if now.encoder_skips > before.encoder_skips || now.frames_dropped > before.frames_dropped {
                    break;
                }
                assert!(Instant::now() < end, "frame {} was neither sent nor dropped: {now:?}", self.released);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    fn stop(&mut self) {
        self.go = None;
        self.p.stop();
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn video_flows_only_while_watched_and_each_session_starts_with_an_idr() {
    let mut s = Stepped::start(pattern(30), h264(320, 240));
    let mut rx = s.p.video_sender().subscribe();
    // Nobody watches: capture goes on, nothing is encoded.
    for _ in 0..5 {
        s.frame();
    }
    let stats = s.p.stats();
    assert_eq!((stats.frames_captured, stats.frames_dropped, stats.frames_encoded), (5, 5, 0), "{stats:?}");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "encoded with no viewers");

    s.p.set_viewers(1);
    let mut dec = H264Decoder::new().unwrap();
    let mut last = None;
    for i in 0..20 {
        let (ev, arrived) = s.next_sent(&mut rx);
        assert!(ev.keyframe || i > 0, "first frame for a new viewer is an IDR");
        let pic = dec.decode(&ev.data).unwrap().expect("every access unit decodes");
        assert!(looks_like_test_pattern(&pic));
        let stamp = read_stamp(&pic).expect("stamp survives");
        if let Some(prev) = last {
            assert!(stamp.frame_number > prev, "{} after {prev}", stamp.frame_number);
        }
        last = Some(stamp.frame_number);
        // The stream is live: sent well within a second of capture.
        assert!(unix_ms(arrived) - stamp.captured_unix_ms < 1_000);
    }

    // The last frame sent has arrived, so nothing is in flight: from now
    // on nothing may be encoded.
    s.p.set_viewers(0);
    let encoded = s.p.stats().frames_encoded;
    for _ in 0..5 {
        s.frame();
    }
    assert_eq!(s.p.stats().frames_encoded, encoded, "encoding after viewers went to 0");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "sent after viewers went to 0");

    s.p.set_viewers(2);
    assert!(s.next_sent(&mut rx).0.keyframe, "resuming starts with an IDR");
    assert!(!s.next_sent(&mut rx).0.keyframe);
    let t0 = Instant::now();
    s.stop();
    assert!(t0.elapsed() < Duration::from_secs(1), "stop took {:?}", t0.elapsed());
}

#[test]
fn the_encoder_rests_while_every_viewer_listens_only_and_resumes_with_an_idr() {
    let mut s = Stepped::start(pattern(30), h264(320, 240));
    let mut rx = s.p.video_sender().subscribe();
    s.p.set_viewers(2);
    for _ in 0..3 {
        s.next_sent(&mut rx);
    }
    // One of two listens only: the other still gets every picture.
    s.p.set_viewers_without_video(1);
    assert!(!s.next_sent(&mut rx).0.keyframe);
    // Both do: after what is in flight, nothing more is encoded.
    s.p.set_viewers_without_video(2);
    s.frame();
    while rx.try_recv().is_ok() {}
    let encoded = s.p.stats().frames_encoded;
    for _ in 0..5 {
        s.frame();
    }
    assert_eq!(s.p.stats().frames_encoded, encoded, "encoding while nobody takes video");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "sent while nobody takes video");
    // One wants the picture again: it starts with an IDR.
    s.p.set_viewers_without_video(1);
    assert!(s.next_sent(&mut rx).0.keyframe, "resuming the picture starts with an IDR");
    assert!(!s.next_sent(&mut rx).0.keyframe);
}

#[test]
fn request_keyframe_yields_an_idr_promptly() {
    let mut s = Stepped::start(pattern(30), h264(320, 240));
    let mut rx = s.p.video_sender().subscribe();
    s.p.set_viewers(1);
    let first: Vec<bool> = (0..5).map(|_| s.next_sent(&mut rx).0.keyframe).collect();
    assert_eq!(first, [true, false, false, false, false]);
    s.p.request_keyframe();
    assert!(s.next_sent(&mut rx).0.keyframe, "the frame after the request is not an IDR");
    assert_eq!(s.p.stats().keyframes, 2);
}

/// An encoder that reports the frame number of each picture it starts on
/// and is stuck on the first one until the test lets it finish.
struct StuckEncoder {
    started: Sender<u32>,
    finish: Option<Receiver<()>>,
}

impl VideoEncoder for StuckEncoder {
    fn encode(&mut self, frame: &I420Frame, force: bool) -> Result<Option<EncodedVideo>, MediaError> {
        let _ = self.started.send(read_stamp(frame).expect("test pattern").frame_number);
        if let Some(finish) = self.finish.take() {
            // A test that failed first does not hold the pipeline forever.
            let _ = finish.recv_timeout(Duration::from_secs(10));
        }
        Ok(Some(EncodedVideo {
            data: Bytes::from(vec![0, 0, 0, 1, 0x65]),
            keyframe: force,
            duration: Duration::ZERO,
            temporal_layer: 0,
        }))
    }
}

#[test]
fn slow_encoder_gets_the_latest_frame_and_old_ones_are_dropped() {
    let (started_tx, started) = channel();
    let (finish, finish_rx) = channel();
    let encoder = StuckEncoder { started: started_tx, finish: Some(finish_rx) };
    let mut s = Stepped::start(pattern(60), Box::new(encoder));
    s.p.set_viewers(1);
    s.frame();
    let first = started.recv_timeout(Duration::from_secs(5)).expect("the encoder got the first frame");
    // While the encoder is busy with it, eight more frames are captured:
    // each one replaces the one waiting in the slot.
    let dropped = s.p.stats().frames_dropped;
    for _ in 0..8 {
        s.frame();
    }
    assert_eq!(s.p.stats().frames_dropped, dropped + 7, "{:?}", s.p.stats());
    finish.send(()).unwrap();
    let next = started.recv_timeout(Duration::from_secs(5)).expect("the encoder got another frame");
    assert_eq!(next, first + 8, "the encoder got frame {next} after {first}: queued, not the latest");
    assert!(started.try_recv().is_err(), "the dropped frames were encoded after all");
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
    // While the camera fails, a watched stream carries the "camera
    // unavailable" picture, so frames out say nothing of the camera: wait
    // for frames the camera itself made.
    let frames = collect(&mut rx, 3, Duration::from_secs(5));
    assert_eq!(frames.len(), 3, "video flows while the camera fails and after");
    assert!(frames[0].keyframe);
    assert!(
        wait_until(Duration::from_secs(5), || p.stats().frames_captured >= 3),
        "the camera came back: {:?}",
        p.stats()
    );
    assert_eq!(p.stats().source_errors, 3, "one failure at start, three in the capture thread");
    let after = collect(&mut rx, 3, Duration::from_secs(5));
    assert_eq!(after.len(), 3, "video after the device came back");
}

/// A camera that is "unplugged" (fails, a bit slowly, like a vanished
/// device) while the test says so.
struct UnpluggedCamera {
    inner: Box<dyn VideoSource>,
    unplugged: Arc<AtomicBool>,
}

impl VideoSource for UnpluggedCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        if self.unplugged.load(Ordering::SeqCst) {
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
        let unplugged = Arc::new(AtomicBool::new(false));
        let cam = UnpluggedCamera { inner, unplugged: Arc::clone(&unplugged) };
        // Room for every frame of the test: the one decoder below must see
        // them all, however late this thread gets to them.
        let settings = PipelineSettings { video_channel_capacity: 1_024, ..PipelineSettings::default() };
        let p =
            MediaPipeline::start(Box::new(cam), h264(320, 240), None, Box::new(NullSpeaker::new()), settings).unwrap();
        let mut rx = p.video_sender().subscribe();
        p.set_viewers(1);
        // One decoder throughout, as a viewer that never reconnects:
        // after the first IDR every frame must decode, whether it came
        // from the camera or from the placeholder, in whichever order.
        let mut dec = H264Decoder::new().unwrap();
        let mut next_picture = || {
            let ev = collect(&mut rx, 1, Duration::from_secs(5)).pop().expect("a frame within 5 s");
            dec.decode(&ev.data).unwrap().expect("every frame decodes")
        };
        for i in 0..5 {
            assert!(looks_like_test_pattern(&next_picture()), "frame {i} is not the camera's");
        }
        // Unplugged: the camera's frames still on their way, then the
        // placeholder (without one, frames stop and `next_picture` fails).
        unplugged.store(true, Ordering::SeqCst);
        loop {
            let pic = next_picture();
            if looks_like_placeholder(&pic) {
                break;
            }
            assert!(looks_like_test_pattern(&pic), "a frame is neither camera nor placeholder");
        }
        // Back: placeholders still on their way, then the camera's pictures.
        unplugged.store(false, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let pic = next_picture();
            if looks_like_test_pattern(&pic) {
                break;
            }
            assert!(looks_like_placeholder(&pic), "a frame is neither camera nor placeholder");
            assert!(Instant::now() < end, "camera pictures did not come back");
        }
    }
}

#[test]
fn an_h264_cameras_stream_is_passed_through_from_an_idr_with_parameter_sets() {
    // Like most UVC cameras: no keyframe on request, SPS/PPS only once.
    let camera = H264TestCamera::new(320, 240, 30, Duration::from_millis(500), false).unwrap();
    // The encoder must never run while the camera delivers H.264.
    let mut s = Stepped::start(Box::new(camera), Box::new(FailingEncoder));
    let mut rx = s.p.video_sender().subscribe();
    // The camera's first IDR, the only one with SPS/PPS, went by before
    // anybody watched.
    for _ in 0..3 {
        s.frame();
    }
    s.p.set_viewers(1);
    s.p.request_keyframe();
    let frames: Vec<EncodedVideo> = (0..45).map(|_| s.next_sent(&mut rx).0).collect();
    assert!(frames[0].keyframe, "a viewer's first frame is an IDR");
    assert_eq!(&nal_types(&frames[0].data)[..2], &[7, 8], "with SPS and PPS");
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
    // An IDR every 15 frames: the viewer's first and two periodic ones.
    assert_eq!(frames.iter().filter(|f| f.keyframe).count(), 3, "the camera's periodic IDRs go through");
    let stats = s.p.stats();
    assert!(stats.frames_encoded == 45 && stats.encoder_skips == 0, "{stats:?}");
}

#[test]
fn keyframe_requests_reach_an_h264_camera_that_can_take_them() {
    let camera = H264TestCamera::new(320, 240, 30, Duration::from_secs(60), true).unwrap();
    let mut s = Stepped::start(Box::new(camera), Box::new(FailingEncoder));
    let mut rx = s.p.video_sender().subscribe();
    s.p.set_viewers(1);
    let first: Vec<bool> = (0..5).map(|_| s.next_sent(&mut rx).0.keyframe).collect();
    assert_eq!(first, [true, false, false, false, false]);
    s.p.request_keyframe();
    // The request reaches the camera through the encode thread (on the
    // next access unit) and the capture thread (before the frame after
    // that, or the one after that if it was already waiting for it).
    let next: Vec<bool> = (0..3).map(|_| s.next_sent(&mut rx).0.keyframe).collect();
    assert!(!next[0] && next[1..].contains(&true), "{next:?}: no IDR within 3 frames of the request (GOP is 60 s)");
}

/// Every rate the encoder (or a camera) was set to.
type Rates = Arc<Mutex<Vec<(u64, u32)>>>;

/// Emits a one-NAL access unit per picture (an IDR when asked) and records
/// the rates it is set to.
struct RateRecordingEncoder(Rates);
impl VideoEncoder for RateRecordingEncoder {
    fn encode(&mut self, _: &I420Frame, force_keyframe: bool) -> Result<Option<EncodedVideo>, MediaError> {
        let nal = if force_keyframe { 0x65 } else { 0x41 };
        let data = bytes::Bytes::from(vec![0, 0, 0, 1, nal, 0x88]);
        Ok(Some(EncodedVideo {
            data,
            keyframe: force_keyframe,
            duration: Duration::from_millis(33),
            temporal_layer: 0,
        }))
    }

    fn set_target(&mut self, bitrate_bps: u64, fps: u32) -> Result<(), MediaError> {
        lock_ignoring_poison(&self.0).push((bitrate_bps, fps));
        Ok(())
    }
}

/// A camera that encodes H.264 itself and records the bitrates it is given.
struct RateRecordingCamera(H264TestCamera, Rates);
impl VideoSource for RateRecordingCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        self.0.next_frame()
    }

    fn set_h264_bitrate(&mut self, bitrate_bps: u64) {
        lock_ignoring_poison(&self.1).push((bitrate_bps, 0));
    }
}

#[test]
fn a_new_rate_reaches_the_encoder_once_and_an_h264_camera_gets_its_bitrate() {
    let rates = Rates::default();
    let mut s = Stepped::start(pattern(30), Box::new(RateRecordingEncoder(Arc::clone(&rates))));
    let mut rx = s.p.video_sender().subscribe();
    s.p.set_viewers(1);
    assert!(s.next_sent(&mut rx).0.keyframe);
    s.p.set_video_rate(VideoRate { bitrate_bps: 400_000, fps: 30 });
    for _ in 0..5 {
        assert!(!s.next_sent(&mut rx).0.keyframe, "a new rate brings no IDR");
    }
    assert_eq!(*lock_ignoring_poison(&rates), [(400_000, 30)], "set once, before the next picture");

    let camera_rates = Rates::default();
    let camera = H264TestCamera::new(320, 240, 30, Duration::from_millis(500), false).unwrap();
    let mut s =
        Stepped::start(Box::new(RateRecordingCamera(camera, Arc::clone(&camera_rates))), Box::new(FailingEncoder));
    let mut rx = s.p.video_sender().subscribe();
    s.p.set_viewers(1);
    s.next_sent(&mut rx);
    s.p.set_video_rate(VideoRate { bitrate_bps: 250_000, fps: 15 });
    for _ in 0..3 {
        s.next_sent(&mut rx);
    }
    assert_eq!(*lock_ignoring_poison(&camera_rates), [(250_000, 0)]);
}

/// For streams that must bypass roomcam's encoder.
struct FailingEncoder;
impl VideoEncoder for FailingEncoder {
    fn encode(&mut self, _: &I420Frame, _: bool) -> Result<Option<EncodedVideo>, MediaError> {
        panic!("the encoder ran on a passed-through stream");
    }
}

/// Records what reaches the speaker, one entry per write.
struct RecordingSpeaker(Arc<Mutex<Vec<Vec<i16>>>>);
impl AudioSink for RecordingSpeaker {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        lock_ignoring_poison(&self.0).push(pcm.to_vec());
        Ok(())
    }
}

/// Talk-back packets the speaker thread is done with: played, muted,
/// failed, or dropped before it saw them.
fn talkback_done(stats: &PipelineStats, played: u64) -> u64 {
    stats.talkback_dropped + stats.talkback_muted + stats.talkback_errors + played
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
    let writes = || lock_ignoring_poison(&played).len() as u64;
    // Alice talks throughout; Bob from 0.8 s to 1.8 s (and sends
    // silence otherwise, as a browser with push-to-talk released does).
    // Each 20 ms the speaker thread is done with both packets before the
    // next two come, so it sees them at least 20 ms apart, as sent.
    for i in 0..150 {
        let chunk = i * AUDIO_FRAME_SAMPLES..(i + 1) * AUDIO_FRAME_SAMPLES;
        talk(&alice, alice_opus.encode(&frame(&alice_voice[chunk.clone()])).unwrap().data);
        let bob_frame = if (40..90).contains(&i) { frame(&bob_voice[chunk]) } else { silence };
        talk(&bob, bob_opus.encode(&bob_frame).unwrap().data);
        let sent = 2 * (i as u64 + 1);
        assert!(wait_until(Duration::from_secs(5), || talkback_done(&p.stats(), writes()) == sent), "{:?}", p.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = p.stats();
    assert_eq!((stats.talkback_received, stats.talkback_dropped, stats.talkback_errors), (300, 0, 0), "{stats:?}");
    let writes = writes();
    assert_eq!(stats.talkback_muted + writes, 300);
    let pcm: Vec<i16> = lock_ignoring_poison(&played).concat();
    // What was heard, 200 ms at a time: Alice, then only Bob, then Alice again.
    let heard: Vec<u32> = pcm
        .chunks_exact(9_600)
        .map(|c| dominant_frequency(c, AUDIO_SAMPLE_RATE).map_or(0, |f| (f / 110.0).round() as u32 * 110))
        .collect();
    let mut phases = heard.clone();
    phases.dedup();
    phases.retain(|&f| f != 0);
    assert_eq!(phases, vec![440, 660, 440], "heard {heard:?}");
    // Nothing was mixed: of each pair one packet was played, the other
    // muted, but for the pair in which Bob took over (Alice's came first,
    // so both) and, perhaps, the one in which his turn ran out between
    // his packet and hers (neither).
    assert!((150..=151).contains(&writes), "one voice at a time, not two: {writes} packets played, {stats:?}");
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
    let r =
        MediaPipeline::start(pattern(30), h264(320, 240), Some(Box::new(NoMic)), spk(), PipelineSettings::default());
    assert!(matches!(r, Err(MediaError::Unsupported(ref s)) if s == "S24_3LE"));
}

/// A microphone that counts its reads.
struct CountedMicrophone {
    inner: ToneSource,
    reads: Arc<AtomicU64>,
}

impl AudioSource for CountedMicrophone {
    fn read_frame(&mut self, pcm: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError> {
        self.inner.read_frame(pcm)?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn microphone_audio_is_encoded_while_watched() {
    let reads = Arc::new(AtomicU64::new(0));
    let microphone = CountedMicrophone { inner: ToneSource::new(440.0), reads: Arc::clone(&reads) };
    let p = MediaPipeline::start(
        pattern(30),
        h264(320, 240),
        Some(Box::new(microphone)),
        Box::new(NullSpeaker::new()),
        PipelineSettings::default(),
    )
    .unwrap();
    let mut rx = p.audio_sender().subscribe();
    // The microphone is read (once by start) and then five more times…
    assert!(wait_until(Duration::from_secs(5), || reads.load(Ordering::SeqCst) >= 6));
    // …and none of it was encoded: nobody watches.
    assert_eq!(p.stats().audio_packets, 0, "audio encoded with no viewers");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "audio sent with no viewers");
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
    // Room for every packet: this test is about garbage, not about a
    // speaker thread that falls behind (talkback_never_blocks_the_caller).
    let settings = PipelineSettings { talkback_queue: 130, ..PipelineSettings::default() };
    let p = MediaPipeline::start(pattern(30), h264(320, 240), None, Box::new(speaker), settings).unwrap();
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
    let played = || lock_ignoring_poison(&stats).writes;
    assert!(
        wait_until(Duration::from_secs(3), || talkback_done(&p.stats(), played()) == 130),
        "{:?} {:?}",
        p.stats(),
        lock_ignoring_poison(&stats)
    );
    let s = p.stats();
    assert_eq!((s.talkback_received, s.talkback_dropped, s.talkback_muted, s.talkback_errors), (130, 0, 0, 5), "{s:?}");
    let speaker = lock_ignoring_poison(&stats).clone();
    // 125 packets of 20 ms: every one of them played, two whole seconds reported.
    assert_eq!((speaker.writes, speaker.samples_received, speaker.reports), (125, 120_000, 2), "{speaker:?}");
    let report = speaker.last_report.unwrap();
    let hz = report.tone_hz.expect("a tone, not silence");
    assert!((hz - 660.0).abs() < 5.0, "{report:?}");
    assert!((report.rms_dbfs - -15.0).abs() < 2.0, "{report:?}");
}

/// A speaker stuck in its first write until the test drops `release`;
/// counts its writes.
struct StuckSpeaker {
    release: Receiver<()>,
    writes: Arc<AtomicU64>,
}

impl AudioSink for StuckSpeaker {
    fn write(&mut self, _: &[i16]) -> Result<(), MediaError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        // Returns once the sender is gone (and at once from then on).
        let _ = self.release.recv_timeout(Duration::from_secs(10));
        Ok(())
    }
}

#[test]
fn talkback_never_blocks_the_caller() {
    let settings = PipelineSettings { talkback_queue: 5, ..PipelineSettings::default() };
    let (release, stuck) = channel::<()>();
    let writes = Arc::new(AtomicU64::new(0));
    let speaker = StuckSpeaker { release: stuck, writes: Arc::clone(&writes) };
    let mut p = MediaPipeline::start(pattern(30), h264(320, 240), None, Box::new(speaker), settings).unwrap();
    let talk = p.talkback_handle();
    // A voice, so that the speaker gets it and is stuck on it. (Digital
    // silence would reach no speaker at all: nobody is talking, so it is
    // muted, and the speaker thread would drain the queue as fast as the
    // caller fills it, however fast that happens to be.)
    let mut opus = OpusEncoder::new(24_000).unwrap();
    let voice = sine(440.0, 8_000.0, 10 * AUDIO_FRAME_SAMPLES, 0);
    let pkt = voice.chunks_exact(AUDIO_FRAME_SAMPLES).map(|c| opus.encode(c.try_into().unwrap()).unwrap().data).last();
    let pkt = pkt.unwrap();
    // Pushed from another thread: the speaker is stuck until `release` is
    // dropped, so a caller that waited for it would never finish.
    let pusher = {
        let (talk, pkt) = (Arc::clone(&talk), pkt.clone());
        std::thread::spawn(move || {
            let viewer = Talker::from("viewer");
            for _ in 0..200 {
                talk(&viewer, pkt.clone());
            }
        })
    };
    assert!(wait_until(Duration::from_secs(5), || pusher.is_finished()), "talk-back blocked the caller");
    pusher.join().unwrap();
    let s = p.stats();
    // The speaker thread took at most one packet (it is stuck on it), at
    // most `talkback_queue` wait, the rest were dropped.
    assert_eq!(s.talkback_received, 200);
    assert!(s.talkback_dropped >= 200 - 5 - 1, "{s:?}");
    drop(release);
    let played = || writes.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || talkback_done(&p.stats(), played()) == 200), "{:?}", p.stats());
    let s = p.stats();
    // Every packet accounted for: dropped, or (once unstuck) played.
    assert_eq!((s.talkback_muted, s.talkback_errors), (0, 0), "{s:?}");
    assert_eq!(s.talkback_dropped + played(), 200, "{s:?}");
    p.stop();
    // After stop the handle still works (drops) instead of panicking.
    talk(&Talker::from("viewer"), pkt);
    assert_eq!(p.stats().talkback_dropped, s.talkback_dropped + 1);
}

#[test]
fn pipeline_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MediaPipeline>();
}

#[test]
fn capture_to_au_latency_is_the_mean_and_the_max() {
    assert_eq!(PipelineStats::default().capture_to_au_ms(), None, "nothing encoded yet");
    let c = Counters::default();
    for ms in [10, 30, 20] {
        c.record_capture_to_au(Duration::from_millis(ms));
    }
    let stats = PipelineStats {
        capture_to_au_count: c.capture_to_au_count.load(Ordering::Relaxed),
        capture_to_au_us_sum: c.capture_to_au_us_sum.load(Ordering::Relaxed),
        capture_to_au_max_us: c.capture_to_au_max_us.load(Ordering::Relaxed),
        ..PipelineStats::default()
    };
    assert_eq!(stats.capture_to_au_count, 3);
    assert_eq!(stats.capture_to_au_ms(), Some((20.0, 30.0)));
}

#[test]
fn night_mode_sends_greyscale_pictures_whose_stamp_still_reads() {
    let settings = PipelineSettings { night: crate::config::NightChoice::On, ..PipelineSettings::default() };
    let p = MediaPipeline::start(pattern(30), h264(320, 240), None, Box::new(NullSpeaker::new()), settings).unwrap();
    let mut rx = p.video_sender().subscribe();
    p.set_viewers(1);
    let mut dec = H264Decoder::new().unwrap();
    let mut pictures = 0;
    for ev in collect(&mut rx, 10, Duration::from_secs(10)) {
        let Some(pic) = dec.decode(&ev.data).unwrap() else { continue };
        let luma = (pic.width * pic.height) as usize;
        let off_grey = pic.data[luma..].iter().filter(|&&c| c.abs_diff(128) > 3).count();
        assert_eq!(off_grey, 0, "chroma samples off neutral grey in a night picture");
        assert!(read_stamp(&pic).is_some(), "the stamp reads in greyscale");
        pictures += 1;
    }
    assert!(pictures >= 5, "{pictures} pictures decoded");
    // The test pattern in colour has chroma far from grey: the check can fail.
    let mut colour = TestPattern::new(320, 240, 30).unwrap().without_pacing();
    let picture = colour.next_picture();
    assert!(picture.data[320 * 240..].iter().any(|&c| c.abs_diff(128) > 3));
}

/// The room around the board, for echo cancellation: the speaker's
/// samples wait here until the microphone hears them (through an
/// [`EchoPath`]) in the same 20 ms as the speaker played them.
type Air = Arc<Mutex<std::collections::VecDeque<i16>>>;

/// Puts what it plays into the air, and counts its writes.
struct LoopbackSpeaker(Air, Arc<AtomicU64>);
impl AudioSink for LoopbackSpeaker {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        lock_ignoring_poison(&self.0).extend(pcm);
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A microphone in that room, read when the test hands it the room's own
/// sound for the next 20 ms (after that sound's speaker frame was played):
/// it hears the room plus the speaker's echo, and keeps what it heard.
struct RoomMicrophone {
    sounds: Receiver<[i16; AUDIO_FRAME_SAMPLES]>,
    air: Air,
    path: crate::media::fixtures::EchoPath,
    heard: Arc<Mutex<Vec<i16>>>,
}

impl AudioSource for RoomMicrophone {
    fn read_frame(&mut self, pcm: &mut [i16; AUDIO_FRAME_SAMPLES]) -> Result<(), MediaError> {
        let Ok(sound) = self.sounds.recv() else {
            // The test is over: silence at the microphone's pace.
            std::thread::sleep(Duration::from_millis(20));
            pcm.fill(0);
            return Ok(());
        };
        let mut played = [0i16; AUDIO_FRAME_SAMPLES];
        {
            let mut air = lock_ignoring_poison(&self.air);
            let n = air.len().min(AUDIO_FRAME_SAMPLES);
            for (p, s) in played.iter_mut().zip(air.drain(..n)) {
                *p = s;
            }
        }
        let echo = self.path.process(&played);
        for ((p, s), e) in pcm.iter_mut().zip(sound).zip(echo) {
            *p = s.saturating_add(e);
        }
        lock_ignoring_poison(&self.heard).extend_from_slice(pcm);
        Ok(())
    }
}

/// Waits (polling fast) for `cond`; a generous limit only for a stuck thread.
fn soon(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What [`talk_back_in_a_room`] found.
#[derive(Debug)]
struct TalkBack {
    /// The viewer's voice as the microphone heard it against what was
    /// sent to the viewers (decoded), 4–10 s (talk-back only, after 2 s).
    voice_removed_db: f64,
    /// The cry in what was sent, against the clean cry (10.5–13 s).
    cry_kept_db: f64,
    /// Sound alerts started before the cry, and during or after it.
    alerts_before_cry: usize,
    alerts_with_cry: usize,
}

/// 14 s in a room, in lock step (each 20 ms: the viewer's talk-back packet
/// played, then the microphone's frame heard, encoded and listened to):
/// 2 s quiet, then the viewer talks to the end; from 10 to 13 s a cry in
/// the room too. The speaker comes back 80 ms late, 10 dB down, with a
/// reverb tail.
fn talk_back_in_a_room(echo_cancellation: bool) -> TalkBack {
    use crate::media::fixtures::{EchoPath, Noise, energy_ratio_db, speech_like};
    const FRAMES: usize = 700;
    let (voice_from, cry_from, cry_to) = (100, 500, 650);
    let air: Air = Arc::default();
    let writes = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (sounds, sounds_rx) = channel();
    let microphone = RoomMicrophone {
        sounds: sounds_rx,
        air: Arc::clone(&air),
        path: EchoPath::new(80, -10.0, 7),
        heard: Arc::clone(&heard),
    };
    // The frame `MediaPipeline::start` reads itself.
    sounds.send([0; AUDIO_FRAME_SAMPLES]).unwrap();
    let settings = PipelineSettings {
        sound_alerts: Some(SoundAlerts { room: "nursery".into(), detector: Default::default() }),
        echo_cancellation,
        ..PipelineSettings::default()
    };
    let p = MediaPipeline::start(
        pattern(30),
        h264(320, 240),
        Some(Box::new(microphone)),
        Box::new(LoopbackSpeaker(Arc::clone(&air), Arc::clone(&writes))),
        settings,
    )
    .unwrap();
    let mut audio = p.audio_sender().subscribe();
    let mut events = p.sound_events();
    p.set_viewers(1);
    let talk = p.talkback_handle();
    let viewer = Talker::from("viewer");
    let mut viewer_opus = OpusEncoder::new(32_000).unwrap();
    let voice = speech_like(FRAMES * AUDIO_FRAME_SAMPLES, 140.0, 16_000.0, 5);
    let cry: Vec<i16> = (0..(cry_to - cry_from) * AUDIO_FRAME_SAMPLES)
        .map(|i| {
            // 450 Hz with a ±30 Hz vibrato at 5 Hz, three harmonics.
            let (t, w) = (i as f32 / AUDIO_SAMPLE_RATE as f32, 2.0 * std::f32::consts::PI * 5.0);
            let phase = 2.0 * std::f32::consts::PI * (450.0 * t - 30.0 / w * ((w * t).cos() - 1.0));
            (6_000.0 * (phase.sin() + 0.5 * (2.0 * phase).sin() + 0.25 * (3.0 * phase).sin()) / 1.75) as i16
        })
        .collect();
    let mut noise = Noise::new(9);
    let mut room_cry = Vec::new();
    let mut decoder = OpusDecoder::new().unwrap();
    let mut sent = Vec::new();
    let (mut alerts_before_cry, mut alerts_with_cry) = (0, 0);
    for i in 0..FRAMES {
        let chunk = i * AUDIO_FRAME_SAMPLES..(i + 1) * AUDIO_FRAME_SAMPLES;
        let frame: [i16; AUDIO_FRAME_SAMPLES] =
            if i >= voice_from { voice[chunk].try_into().unwrap() } else { [0; AUDIO_FRAME_SAMPLES] };
        talk(&viewer, viewer_opus.encode(&frame).unwrap().data);
        // Played (or muted: nobody talking) before the microphone hears the room.
        soon("talk-back packet not taken", || talkback_done(&p.stats(), writes.load(Ordering::SeqCst)) == i as u64 + 1);
        let mut sound = [0i16; AUDIO_FRAME_SAMPLES];
        for (k, s) in sound.iter_mut().enumerate() {
            let c = if (cry_from..cry_to).contains(&i) { cry[(i - cry_from) * AUDIO_FRAME_SAMPLES + k] } else { 0 };
            room_cry.push(c);
            *s = c.saturating_add((20.0 * noise.sample()) as i16);
        }
        sounds.send(sound).unwrap();
        soon("microphone frame not encoded", || p.stats().audio_packets > i as u64);
        loop {
            match audio.try_recv() {
                Ok(packet) => sent.extend(decoder.decode(&packet.data).unwrap()),
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("audio: {e:?}"),
            }
        }
        while let Ok(event) = events.try_recv() {
            if let crate::alerts::RoomSound::Alert(crate::alerts::SoundEvent::Started { .. }) = event {
                if i < cry_from { alerts_before_cry += 1 } else { alerts_with_cry += 1 }
            }
        }
    }
    drop(sounds);
    let heard = lock_ignoring_poison(&heard).clone();
    // `heard` starts with the frame start() read, which was not sent.
    let heard = &heard[AUDIO_FRAME_SAMPLES..];
    let s = |from_s: f32, to_s: f32| (from_s * 48_000.0) as usize..(to_s * 48_000.0) as usize;
    TalkBack {
        voice_removed_db: energy_ratio_db(&heard[s(4.0, 10.0)], &sent[s(4.0, 10.0)]),
        cry_kept_db: energy_ratio_db(&sent[s(10.5, 13.0)], &room_cry[s(10.5, 13.0)]),
        alerts_before_cry,
        alerts_with_cry,
    }
}

#[test]
fn a_viewers_voice_does_not_come_back_nor_alert_and_a_cry_during_talk_back_does() {
    let with = talk_back_in_a_room(true);
    eprintln!("echo cancellation on: {with:?}");
    assert!(with.voice_removed_db >= 20.0, "{with:?}");
    assert_eq!((with.alerts_before_cry, with.alerts_with_cry), (0, 1), "{with:?}");
    assert!(with.cry_kept_db.abs() <= 6.0, "{with:?}");
    // Without it the voice comes back and the detector is deaf to the cry.
    let without = talk_back_in_a_room(false);
    eprintln!("echo cancellation off: {without:?}");
    assert!(without.voice_removed_db < 3.0, "{without:?}");
    assert_eq!(without.alerts_with_cry, 0, "{without:?}");
}
