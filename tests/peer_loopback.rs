//! roomcam's `Peer` against a programmatic viewer, in one process, over
//! loopback only: SDP and candidates go straight through channels (no
//! signaling server). Meant to pass inside `unshare -n` with only `lo` up:
//!
//! ```text
//! unshare -n bash -c 'ip link set lo up; cargo test --test peer_loopback'
//! ```

#[path = "support/viewer.rs"]
mod viewer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use roomcam::media::fixtures::{looks_like_test_pattern, read_stamp};
use roomcam::media::{
    AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioSource, EncodedAudio, EncodedVideo, H264Encoder, H264Settings,
    I420Frame, OpusDecoder, OpusEncoder, TestPattern, ToneSource, VideoEncoder, dominant_frequency,
};
use roomcam::peer::{
    CongestionSettings, ConnectionState, IceCandidate, MediaTaps, Peer, PeerError, PeerEvent, PeerSettings, SdpKind,
};
use viewer::{OfferedCodecs, Viewer, ViewerOptions, ViewerSignal};

const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const FPS: u32 = 15;
const SENT_FRAMES_KEPT: usize = 200;

fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

// ---------------------------------------------------------------------------
// Media source: the test pattern through the H.264 encoder, a 440 Hz tone
// through the Opus encoder, each on its own thread as in the daemon.

struct Source {
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
    /// Frame number → the picture that was encoded, to compare with what the
    /// viewer decodes.
    sent: Arc<Mutex<HashMap<u32, I420Frame>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Source {
    fn start(video: broadcast::Sender<EncodedVideo>, audio: broadcast::Sender<EncodedAudio>) -> Source {
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(HashMap::new()));
        let mut threads = Vec::new();

        let (stop_v, key_v, sent_v) = (Arc::clone(&stop), Arc::clone(&keyframe), Arc::clone(&sent));
        threads.push(std::thread::spawn(move || {
            let mut pattern = TestPattern::new(WIDTH, HEIGHT, FPS).expect("test pattern");
            // No periodic IDR: the viewer only gets pictures if keyframe
            // requests travel from the viewer through Peer to the encoder.
            let mut encoder = H264Encoder::new(H264Settings {
                width: WIDTH,
                height: HEIGHT,
                fps: FPS,
                bitrate_kbps: 600,
                keyframe_interval: None,
                ..H264Settings::default()
            })
            .expect("H.264 encoder");
            let mut number: u32 = 0;
            while !stop_v.load(Ordering::Acquire) {
                let frame = pattern.next_picture();
                {
                    let mut sent = sent_v.lock().unwrap();
                    sent.insert(number, frame.clone());
                    sent.remove(&number.wrapping_sub(SENT_FRAMES_KEPT as u32));
                }
                number = number.wrapping_add(1);
                let force = key_v.swap(false, Ordering::AcqRel);
                if let Some(encoded) = encoder.encode(&frame, force).expect("encode") {
                    // No subscriber yet is fine: like the daemon, frames are dropped.
                    let _ = video.send(encoded);
                }
            }
        }));

        let stop_a = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut tone = ToneSource::new(440.0);
            let mut encoder = OpusEncoder::new(32_000).expect("Opus encoder");
            let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
            while !stop_a.load(Ordering::Acquire) {
                tone.read_frame(&mut pcm).expect("tone");
                let _ = audio.send(encoder.encode(&pcm).expect("opus encode"));
            }
        }));
        Source { stop, keyframe, sent, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The wiring a session core would do: events of one side into the other.

#[derive(Default)]
struct Record {
    states: Vec<ConnectionState>,
    local_candidates: Vec<IceCandidate>,
    /// Candidates trickled since roomcam's latest description (an ICE
    /// restart rebinds, so older ones name sockets that are gone).
    current_candidates: Vec<IceCandidate>,
    local_descriptions: Vec<(SdpKind, String)>,
    viewer_descriptions: Vec<(SdpKind, String)>,
    keyframe_requests: usize,
    /// Of those, the ones the viewer made (PLI/FIR, or lag), not the sender's
    /// own when video started.
    loss_keyframe_requests: usize,
    /// `PeerEvent::BandwidthEstimate`s, when they arrived.
    estimates: Vec<(Instant, u64)>,
    errors: Vec<String>,
}

struct Rig {
    peer: Arc<Peer>,
    viewer: Arc<Viewer>,
    record: Arc<Mutex<Record>>,
    talkback: Arc<Mutex<Vec<Bytes>>>,
    source: Source,
    pump: tokio::task::JoinHandle<()>,
}

/// roomcam's side as the tests mostly want it: loopback, no congestion control.
fn loopback_settings() -> PeerSettings {
    PeerSettings {
        ice_servers: vec![],
        include_loopback: true,
        congestion: None,
        playout_delay: None,
        relay_only: false,
        measure_every: None,
        trickle: true,
    }
}

async fn rig(viewer_options: ViewerOptions) -> Rig {
    rig_with(loopback_settings(), viewer_options).await
}

async fn rig_with(settings: PeerSettings, viewer_options: ViewerOptions) -> Rig {
    init_logging();
    let (video_tx, _) = broadcast::channel(16);
    let (audio_tx, _) = broadcast::channel(50);
    let talkback = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&talkback);
    let taps = MediaTaps {
        video: video_tx.clone(),
        audio: audio_tx.clone(),
        talkback: Arc::new(move |_talker: &roomcam::media::Talker, payload: Bytes| sink.lock().unwrap().push(payload)),
        sound: None,
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let peer = Arc::new(Peer::create("viewer-1".into(), &settings, taps, events_tx).await.expect("Peer::create"));
    let (viewer, signals) = Viewer::new(viewer_options).await.expect("viewer");
    let viewer = Arc::new(viewer);
    let source = Source::start(video_tx, audio_tx);
    let record = Arc::new(Mutex::new(Record::default()));
    let pump = tokio::spawn(pump(
        Arc::clone(&peer),
        Arc::clone(&viewer),
        events_rx,
        signals,
        Arc::clone(&record),
        Arc::clone(&source.keyframe),
    ));
    Rig { peer, viewer, record, talkback, source, pump }
}

async fn pump(
    peer: Arc<Peer>,
    viewer: Arc<Viewer>,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
    mut signals: mpsc::UnboundedReceiver<ViewerSignal>,
    record: Arc<Mutex<Record>>,
    keyframe: Arc<AtomicBool>,
) {
    let fail = |what: String| record.lock().unwrap().errors.push(what);
    loop {
        tokio::select! {
            Some(event) = events.recv() => match event {
                PeerEvent::LocalDescription { kind, sdp, .. } => {
                    {
                        let mut record = record.lock().unwrap();
                        record.local_descriptions.push((kind, sdp.clone()));
                        record.current_candidates.clear();
                    }
                    if let Err(e) = viewer.set_remote_description(kind, sdp).await {
                        fail(format!("viewer rejected roomcam's {kind:?}: {e:#}"));
                    }
                }
                PeerEvent::LocalCandidate { candidate, .. } => {
                    {
                        let mut record = record.lock().unwrap();
                        record.local_candidates.push(candidate.clone());
                        record.current_candidates.push(candidate.clone());
                    }
                    if let Err(e) = viewer.add_candidate(candidate).await {
                        fail(format!("viewer rejected a roomcam candidate: {e:#}"));
                    }
                }
                PeerEvent::ConnectionState { state, .. } => record.lock().unwrap().states.push(state),
                PeerEvent::KeyframeRequested { new_viewer, .. } => {
                    let mut record = record.lock().unwrap();
                    record.keyframe_requests += 1;
                    // The sender's own request when video starts is not the
                    // viewer's: only PLI/FIR (and lag) come without the flag.
                    record.loss_keyframe_requests += usize::from(!new_viewer);
                    keyframe.store(true, Ordering::Release);
                }
                PeerEvent::VideoRefused { .. }
                | PeerEvent::VideoCeiling { .. }
                | PeerEvent::ListenOnly { .. }
                | PeerEvent::Measured { .. } => {}
                PeerEvent::BandwidthEstimate { bitrate_bps, .. } => {
                    record.lock().unwrap().estimates.push((Instant::now(), bitrate_bps));
                }
            },
            Some(signal) = signals.recv() => match signal {
                ViewerSignal::Description { kind, sdp } => {
                    record.lock().unwrap().viewer_descriptions.push((kind, sdp.clone()));
                    if let Err(e) = peer.set_remote_description(kind, sdp).await {
                        fail(format!("roomcam rejected the viewer's {kind:?}: {e}"));
                    }
                }
                ViewerSignal::Candidate(candidate) => {
                    if let Err(e) = peer.add_remote_candidate(candidate).await {
                        fail(format!("roomcam rejected a viewer candidate: {e}"));
                    }
                }
            },
            else => break,
        }
    }
}

async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    condition()
}

fn luma_psnr(a: &I420Frame, b: &I420Frame) -> f64 {
    let n = (a.width * a.height) as usize;
    let mse = a.data[..n].iter().zip(&b.data[..n]).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>()
        / n as f64;
    if mse == 0.0 { 99.0 } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

/// Waits for media in all three directions and checks its content.
async fn assert_media_flows(rig: &Rig) {
    let viewer = &rig.viewer;
    let talkback = &rig.talkback;
    let flowing = wait_until(Duration::from_secs(40), || {
        viewer.stats().frames_decoded >= 25
            && viewer.received_pcm(1.5).len() >= AUDIO_SAMPLE_RATE as usize * 3 / 2
            && talkback.lock().unwrap().len() >= 75
    })
    .await;
    let stats = viewer.stats();
    let record_errors = rig.record.lock().unwrap().errors.clone();
    assert!(record_errors.is_empty(), "signaling errors: {record_errors:?}");
    assert!(
        flowing,
        "media did not flow: {} frames decoded ({} video packets, {} decode errors, {} PLIs), \
         {} audio packets, {} talk-back payloads; viewer states {:?}; roomcam states {:?}",
        stats.frames_decoded,
        stats.video_packets,
        stats.decode_errors,
        stats.plis_sent,
        stats.audio_packets,
        talkback.lock().unwrap().len(),
        stats.states,
        rig.record.lock().unwrap().states,
    );

    // Video: the pictures are the ones that were sent, in order.
    let (mime, fmtp) = stats.video_codec.clone().expect("video codec");
    assert_eq!(mime.to_ascii_lowercase(), "video/h264");
    assert!(fmtp.contains("packetization-mode=1"), "{fmtp}");
    assert!(fmtp.contains("profile-level-id=42e01f"), "{fmtp}");
    assert!(stats.first_frame_at.is_some());
    assert!(stats.recent_frames.len() >= 20);
    let sent = rig.source.sent.lock().unwrap().clone();
    let mut previous: Option<u32> = None;
    let mut compared = 0;
    for frame in &stats.recent_frames {
        assert_eq!((frame.width, frame.height), (WIDTH, HEIGHT));
        assert!(looks_like_test_pattern(frame), "decoded picture is not the test pattern");
        let stamp = read_stamp(frame).expect("stamp readable in the decoded picture");
        if let Some(prev) = previous {
            assert!(stamp.frame_number > prev, "frame {} after {prev}", stamp.frame_number);
        }
        previous = Some(stamp.frame_number);
        if let Some(original) = sent.get(&stamp.frame_number) {
            let psnr = luma_psnr(frame, original);
            assert!(psnr > 30.0, "frame {}: PSNR {psnr:.1} dB", stamp.frame_number);
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} decoded frames matched a sent one");

    // Audio roomcam → viewer: the 440 Hz tone.
    let pcm = viewer.received_pcm(1.0);
    let f = dominant_frequency(&pcm, AUDIO_SAMPLE_RATE).expect("viewer audio is not silent");
    assert!((f - 440.0).abs() <= 10.0, "viewer heard {f} Hz");

    // Talk-back viewer → roomcam: the 660 Hz tone, as Opus payloads on the tap.
    let payloads: Vec<Bytes> = {
        let all = talkback.lock().unwrap();
        all[all.len() - 50..].to_vec()
    };
    let mut decoder = OpusDecoder::new().expect("opus decoder");
    let mut heard = Vec::new();
    for p in &payloads {
        heard.extend(decoder.decode(p).expect("talk-back payload is valid Opus"));
    }
    let f = dominant_frequency(&heard, AUDIO_SAMPLE_RATE).expect("talk-back is not silent");
    assert!((f - 660.0).abs() <= 10.0, "roomcam heard {f} Hz");

    // The keyframe path: the viewer's PLI (it sends one as its video starts)
    // reached roomcam as a request of its own, not only the sender's request
    // when video started, which would hide a PLI that is never forwarded.
    assert!(stats.plis_sent >= 1);
    let forwarded = wait_until(Duration::from_secs(5), || rig.record.lock().unwrap().loss_keyframe_requests >= 1).await;
    assert!(forwarded, "the viewer sent {} PLIs and none came out as a keyframe request", stats.plis_sent);
}

/// Candidates as the classic `{label, id, candidate}` form needs them, and
/// at least one on 127.0.0.1.
fn assert_candidates(record: &Record) -> Vec<u16> {
    assert!(!record.local_candidates.is_empty(), "roomcam trickled no candidate");
    let mut ports = Vec::new();
    for c in &record.local_candidates {
        assert!(c.candidate.starts_with("candidate:"), "{}", c.candidate);
        assert!(c.sdp_mid.as_deref().is_some_and(|m| !m.is_empty()), "{c:?}");
        assert_eq!(c.sdp_mline_index, Some(0), "{c:?}");
        let fields: Vec<&str> = c.candidate.split_whitespace().collect();
        assert!(fields.len() >= 8, "{}", c.candidate);
        assert_ne!(fields[4], "0.0.0.0", "unusable wildcard candidate {}", c.candidate);
        ports.push(fields[5].parse().expect("candidate port"));
    }
    assert!(
        record.local_candidates.iter().any(|c| c.candidate.contains(" 127.0.0.1 ")),
        "no loopback candidate: {:?}",
        record.local_candidates
    );
    ports
}

/// UDP ports of this network namespace's sockets (v4 and v6).
fn bound_udp_ports() -> HashSet<u16> {
    let mut ports = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let Some(local) = line.split_whitespace().nth(1) else {
                continue;
            };
            if let Some((_, port)) = local.rsplit_once(':')
                && let Ok(port) = u16::from_str_radix(port, 16)
            {
                ports.insert(port);
            }
        }
    }
    ports
}

async fn finish(rig: Rig) -> Record {
    let ports: Vec<u16> = {
        let record = rig.record.lock().unwrap();
        record.current_candidates.iter().filter_map(|c| c.candidate.split_whitespace().nth(5)?.parse().ok()).collect()
    };
    assert!(!ports.is_empty());
    let bound = bound_udp_ports();
    assert!(
        ports.iter().all(|p| bound.contains(p)),
        "candidate ports {ports:?} should be bound while the peer is open"
    );
    rig.peer.close().await;
    rig.peer.close().await; // idempotent
    rig.viewer.close().await;
    rig.source.stop();
    // The close event is emitted before close() returns; let the pump see it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.pump.abort();

    let freed = wait_until(Duration::from_secs(3), || {
        let bound = bound_udp_ports();
        ports.iter().all(|p| !bound.contains(p))
    })
    .await;
    assert!(freed, "roomcam's UDP ports {ports:?} still bound after close");
    let record = std::mem::take(&mut *rig.record.lock().unwrap());
    assert_eq!(record.states.last(), Some(&ConnectionState::Closed), "{:?}", record.states);
    record
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roomcam_offers_viewer_answers() {
    let rig = rig(ViewerOptions { talkback_hz: Some(660.0), ..ViewerOptions::default() }).await;
    rig.peer.create_offer(false).await.expect("create_offer");

    assert!(rig.viewer.wait_connected(Duration::from_secs(15)).await, "viewer never connected");
    assert_media_flows(&rig).await;

    {
        let record = rig.record.lock().unwrap();
        assert!(record.states.contains(&ConnectionState::Connected), "{:?}", record.states);
        assert_candidates(&record);
        // roomcam's offer: H.264 only, sendonly video, sendrecv audio.
        let (kind, offer) = &record.local_descriptions[0];
        assert_eq!(*kind, SdpKind::Offer);
        let video = media_section(offer, "video");
        assert!(video.contains("a=sendonly"), "{video}");
        assert_eq!(video_payloads(offer).len(), 1, "{video}");
        assert!(video.contains("a=rtpmap:102 H264/90000"), "{video}");
        assert!(media_section(offer, "audio").contains("a=sendrecv"));
    }
    finish(rig).await;
}

/// A viewer offering these codecs (and talking back), connected, media
/// flowing both ways.
async fn viewer_offers_and_media_flows(codecs: OfferedCodecs) -> Rig {
    let rig = rig(ViewerOptions { talkback_hz: Some(660.0), codecs, ..ViewerOptions::default() }).await;
    rig.viewer.create_offer().await.expect("viewer offer");
    assert!(rig.viewer.wait_connected(Duration::from_secs(15)).await, "viewer never connected");
    assert_media_flows(&rig).await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_offers_many_codecs_roomcam_answers_h264() {
    let rig = viewer_offers_and_media_flows(OfferedCodecs::ChromeLike).await;

    {
        let record = rig.record.lock().unwrap();
        let (_, offer) = &record.viewer_descriptions[0];
        assert!(video_payloads(offer).len() >= 5, "the viewer should offer several codecs");
        assert!(media_section(offer, "video").contains("VP8/90000"));
        let (kind, answer) = &record.local_descriptions[0];
        assert_eq!(*kind, SdpKind::Answer);
        let video = assert_answers_constrained_baseline_only(answer);
        assert!(video.contains("a=sendonly"), "viewer offered recvonly: {video}");
        assert!(media_section(answer, "audio").contains("a=sendrecv"));
        assert_candidates(&record);
    }
    finish(rig).await;
}

/// The answer's one video codec is H.264 constrained baseline in
/// packetization mode 1 (what every browser, Safari too, decodes, and what
/// roomcam's encoders make); returns the video section.
fn assert_answers_constrained_baseline_only(answer: &str) -> String {
    let video = media_section(answer, "video");
    let payloads = video_payloads(answer);
    assert_eq!(payloads.len(), 1, "answer should carry exactly one video codec: {video}");
    let pt = &payloads[0];
    assert!(video.contains(&format!("a=rtpmap:{pt} H264/90000")), "{video}");
    let fmtp = video
        .lines()
        .find(|l| l.starts_with(&format!("a=fmtp:{pt} ")))
        .unwrap_or_else(|| panic!("no fmtp for {pt}: {video}"));
    assert!(fmtp.contains("packetization-mode=1") && fmtp.contains("profile-level-id=42e01f"), "{fmtp}");
    video.to_string()
}

/// Safari lists H.264 High (640c1f) before constrained baseline: roomcam
/// must not answer with the first H.264 it finds, since what it sends is
/// baseline and a High answer would promise a stream it never makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safari_like_offer_with_high_first_is_answered_with_constrained_baseline() {
    let rig = viewer_offers_and_media_flows(OfferedCodecs::SafariLike).await;
    {
        let record = rig.record.lock().unwrap();
        let (_, offer) = &record.viewer_descriptions[0];
        let first_video = video_payloads(offer)[0].clone();
        assert!(
            media_section(offer, "video").contains(&format!(
                "a=fmtp:{first_video} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f"
            )),
            "the offer should list High first: {offer}"
        );
        let (kind, answer) = &record.local_descriptions[0];
        assert_eq!(*kind, SdpKind::Answer);
        assert_answers_constrained_baseline_only(answer);
    }
    finish(rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_keeps_video_flowing() {
    let rig = rig(ViewerOptions::default()).await;
    rig.peer.create_offer(false).await.expect("create_offer");
    assert!(rig.viewer.wait_connected(Duration::from_secs(15)).await, "viewer never connected");
    let viewer = Arc::clone(&rig.viewer);
    assert!(
        wait_until(Duration::from_secs(30), || viewer.stats().frames_decoded >= 10).await,
        "no video before the restart: {:?}",
        viewer.stats().frames_decoded
    );

    rig.peer.create_offer(true).await.expect("ICE restart offer");
    let before = viewer.stats().frames_decoded;
    assert!(
        wait_until(Duration::from_secs(20), || viewer.stats().frames_decoded >= before + 30).await,
        "video stalled after the ICE restart ({} → {})",
        before,
        viewer.stats().frames_decoded
    );
    {
        let record = rig.record.lock().unwrap();
        assert!(record.errors.is_empty(), "{:?}", record.errors);
        assert_eq!(record.local_descriptions.len(), 2);
        let ufrag = |sdp: &str| sdp.lines().find(|l| l.starts_with("a=ice-ufrag:")).map(str::to_owned);
        assert_ne!(
            ufrag(&record.local_descriptions[0].1),
            ufrag(&record.local_descriptions[1].1),
            "an ICE restart must change the credentials"
        );
    }
    finish(rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_without_panicking() {
    init_logging();
    let (video, _) = broadcast::channel(4);
    let (audio, _) = broadcast::channel(4);
    let taps = MediaTaps { video, audio, talkback: Arc::new(|_: &_, _| {}), sound: None };
    let (events, _events_rx) = mpsc::unbounded_channel();
    let peer = Peer::create("bad".into(), &loopback_settings(), taps, events).await.expect("create");

    for sdp in [
        "garbage",
        "",
        "v=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        // An m-line without a mid.
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n",
        "v=0\r\nm=audio x y z\r\n",
        "\u{0}\u{ff}\u{1}",
    ] {
        for kind in [SdpKind::Offer, SdpKind::Answer] {
            match peer.set_remote_description(kind, sdp.to_owned()).await {
                Err(PeerError::BadSdp(_)) => {}
                other => panic!("{kind:?} {sdp:?}: expected BadSdp, got {other:?}"),
            }
        }
    }
    // An answer while nothing was offered.
    let (viewer, _signals) = Viewer::new(ViewerOptions::default()).await.expect("viewer");
    viewer.create_offer().await.expect("viewer offer");
    let offer = viewer.local_description().await.expect("viewer offer sdp");
    assert!(matches!(peer.set_remote_description(SdpKind::Answer, offer.clone()).await, Err(PeerError::BadSdp(_))));

    let candidate = |c: &str, mid: Option<&str>, index: Option<u16>| IceCandidate {
        candidate: c.to_owned(),
        sdp_mid: mid.map(str::to_owned),
        sdp_mline_index: index,
    };
    const GOOD: &str = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host";
    for bad in ["garbage", "candidate:1 1 udp", "candidate:x y z w v u typ host"] {
        assert!(
            matches!(
                peer.add_remote_candidate(candidate(bad, Some("0"), Some(0))).await,
                Err(PeerError::BadCandidate(_))
            ),
            "{bad}"
        );
    }
    // Early candidates are held, not rejected.
    peer.add_remote_candidate(candidate(GOOD, Some("0"), Some(0))).await.expect("an early candidate is held");
    // End-of-candidates is accepted.
    peer.add_remote_candidate(candidate("", None, None)).await.expect("end of candidates");

    peer.set_remote_description(SdpKind::Offer, offer).await.expect("a real offer");
    assert!(matches!(
        peer.add_remote_candidate(candidate(GOOD, Some("nope"), Some(0))).await,
        Err(PeerError::BadCandidate(_))
    ));
    assert!(matches!(peer.add_remote_candidate(candidate(GOOD, None, Some(7))).await, Err(PeerError::BadCandidate(_))));
    peer.add_remote_candidate(candidate(GOOD, Some("0"), Some(0))).await.expect("a good candidate");

    peer.close().await;
    viewer.close().await;
    assert!(peer.create_offer(false).await.is_err(), "a closed peer refuses to offer");
}

/// The transport-wide sequence number extension, as Chrome and webrtc-rs name it.
const TRANSPORT_CC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Starts low (300 kbit/s, like Chrome) so that the estimate has to move:
/// only feedback moves it. The test source sends 600 kbit/s + Opus whatever
/// the estimate says, and the pacer is held at that.
fn gcc_settings() -> PeerSettings {
    let congestion =
        CongestionSettings { start_bps: 300_000, min_bps: 100_000, max_bps: 3_000_000, pacing_floor_bps: 700_000 };
    PeerSettings { congestion: Some(congestion), ..loopback_settings() }
}

/// transport-wide CC in a description: the header extension on both m-lines
/// and `transport-cc` feedback for the H.264 and Opus payload types.
fn assert_twcc_negotiated(sdp: &str, who: &str) {
    for kind in ["video", "audio"] {
        let section = media_section(sdp, kind);
        assert!(
            section.lines().any(|l| l.starts_with("a=extmap:") && l.contains(TRANSPORT_CC_URI)),
            "{who}: no transport-wide CC extension on {kind}:\n{section}"
        );
        let pt = media_payload(&section, if kind == "video" { "H264/90000" } else { "opus/48000" });
        assert!(
            section.contains(&format!("a=rtcp-fb:{pt} transport-cc")),
            "{who}: no transport-cc feedback for {kind} payload {pt}:\n{section}"
        );
    }
}

fn assert_no_twcc(sdp: &str, who: &str) {
    assert!(!sdp.contains(TRANSPORT_CC_URI) && !sdp.contains("transport-cc"), "{who} negotiates TWCC:\n{sdp}");
}

fn media_payload(section: &str, codec: &str) -> String {
    section
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:").filter(|rest| rest.contains(codec)))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {codec} in\n{section}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn congestion_control_negotiates_twcc_and_reports_the_viewers_estimate() {
    let rig = rig_with(gcc_settings(), ViewerOptions { talkback_hz: Some(660.0), ..ViewerOptions::default() }).await;
    rig.peer.create_offer(false).await.expect("create_offer");
    assert!(rig.viewer.wait_connected(Duration::from_secs(15)).await, "viewer never connected");
    let connected_at = Instant::now();
    {
        let record = rig.record.lock().unwrap();
        assert_twcc_negotiated(&record.local_descriptions[0].1, "roomcam's offer");
        assert!(media_section(&record.local_descriptions[0].1, "video").contains("goog-remb"));
        assert_twcc_negotiated(&record.viewer_descriptions[0].1, "the viewer's answer");
    }
    // Pacing and numbering must not cost the media anything.
    assert_media_flows(&rig).await;

    // The webrtc-rs viewer reports arrivals (its default interceptors hold a
    // TWCC receiver); the first batch of feedback gives the first estimate,
    // and the climb from 300 kbit/s gives more.
    let record = Arc::clone(&rig.record);
    let moved = wait_until(Duration::from_secs(20), || {
        let estimates = &record.lock().unwrap().estimates;
        estimates.len() >= 2 && estimates.last().map(|e| e.1) != estimates.first().map(|e| e.1)
    })
    .await;
    let estimates = rig.record.lock().unwrap().estimates.clone();
    assert!(moved, "estimates: {estimates:?}");
    let (first_at, _) = estimates[0];
    assert!(first_at.saturating_duration_since(connected_at) < Duration::from_secs(10), "first estimate late");
    for (_, bps) in &estimates {
        assert!((100_000..=3_000_000).contains(bps), "estimate {bps} outside the configured range");
    }
    // Reported on change, not per feedback (10 per second).
    let span = estimates.last().unwrap().0.saturating_duration_since(first_at).as_secs_f64();
    assert!(estimates.len() as f64 <= 2.0 + span * 3.0, "{} estimates in {span:.1} s", estimates.len());
    finish(rig).await;
}

/// Negotiation only (no media): roomcam answering a browser-like offer with
/// congestion control on, and offering or answering with it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twcc_is_negotiated_only_with_congestion_control_on() {
    init_logging();
    async fn local_description(settings: PeerSettings, viewer_offers: bool) -> String {
        let (video, _) = broadcast::channel(4);
        let (audio, _) = broadcast::channel(4);
        let taps = MediaTaps { video, audio, talkback: Arc::new(|_: &_, _| {}), sound: None };
        let (events, mut events_rx) = mpsc::unbounded_channel();
        let peer = Peer::create("sdp".into(), &settings, taps, events).await.expect("create");
        let viewer = if viewer_offers {
            let (viewer, _signals) =
                Viewer::new(ViewerOptions { codecs: OfferedCodecs::ChromeLike, ..ViewerOptions::default() })
                    .await
                    .unwrap();
            viewer.create_offer().await.expect("viewer offer");
            let offer = viewer.local_description().await.expect("viewer offer sdp");
            assert_twcc_negotiated(&offer, "the viewer's offer");
            peer.set_remote_description(SdpKind::Offer, offer).await.expect("offer applied");
            Some(viewer)
        } else {
            peer.create_offer(false).await.expect("offer");
            None
        };
        let sdp = loop {
            match tokio::time::timeout(Duration::from_secs(5), events_rx.recv()).await {
                Ok(Some(PeerEvent::LocalDescription { sdp, .. })) => break sdp,
                Ok(Some(_)) => continue,
                other => panic!("no local description: {other:?}"),
            }
        };
        peer.close().await;
        if let Some(viewer) = viewer {
            viewer.close().await;
        }
        sdp
    }

    assert_twcc_negotiated(&local_description(gcc_settings(), true).await, "roomcam's answer (gcc)");
    assert_no_twcc(&local_description(loopback_settings(), true).await, "roomcam's answer (off)");
    assert_no_twcc(&local_description(loopback_settings(), false).await, "roomcam's offer (off)");
}

// ---------------------------------------------------------------------------
// SDP helpers

fn media_section(sdp: &str, kind: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            inside = line.starts_with(&format!("m={kind} "));
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "no m={kind} section in\n{sdp}");
    out
}

/// Payload types on the video m-line, without retransmission/FEC helpers.
fn video_payloads(sdp: &str) -> Vec<String> {
    let section = media_section(sdp, "video");
    let m_line = section.lines().next().unwrap_or_default();
    m_line
        .split_whitespace()
        .skip(3)
        .filter(|pt| {
            let rtpmap = format!("a=rtpmap:{pt} ");
            !section
                .lines()
                .any(|l| l.starts_with(&rtpmap) && ["rtx/", "red/", "ulpfec/", "flexfec"].iter().any(|h| l.contains(h)))
        })
        .map(str::to_owned)
        .collect()
}
