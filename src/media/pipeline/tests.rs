//! The pipeline's threads together, with test sources, encoders and sinks.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
        lock_ignoring_poison(&self.seen).push((stamp.frame_number, stamp.captured_unix_ms, Instant::now()));
        std::thread::sleep(Duration::from_millis(150));
        Ok(Some(EncodedVideo { data: Bytes::from(vec![0, 0, 0, 1, 0x65]), keyframe: force, duration: Duration::ZERO }))
    }
}

#[test]
fn slow_encoder_gets_the_latest_frame_and_old_ones_are_dropped() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut p = start_video(pattern(60), Box::new(SlowEncoder { seen: Arc::clone(&seen) }));
    p.set_viewers(1);
    std::thread::sleep(Duration::from_millis(1_300));
    p.stop();
    let seen = lock_ignoring_poison(&seen).clone();
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
                if looks_like_placeholder(&pic) {
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
        lock_ignoring_poison(&self.0).extend_from_slice(pcm);
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
    let pcm = lock_ignoring_poison(&played).clone();
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
    let r =
        MediaPipeline::start(pattern(30), h264(320, 240), Some(Box::new(NoMic)), spk(), PipelineSettings::default());
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
    assert!(
        wait_until(Duration::from_secs(3), || lock_ignoring_poison(&stats).reports >= 2),
        "{:?}",
        lock_ignoring_poison(&stats)
    );
    let report = lock_ignoring_poison(&stats).last_report.unwrap();
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
