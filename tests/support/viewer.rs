//! A programmatic viewer for tests: a webrtc-rs peer that plays the
//! browser's part against roomcam.
//!
//! It can answer roomcam's offer or make its own (recvonly video, sendrecv
//! audio, optionally listing several video codecs like a browser does),
//! trickles its candidates out through a channel in roomcam's
//! `peer::IceCandidate` shape, depacketizes and decodes the H.264 it
//! receives, decodes the Opus it receives into a PCM ring, sends PLI at the
//! start and whenever decoding fails, and can talk back with a sine tone.
//!
//! Self-contained: only roomcam's public API plus webrtc/rtc. Include with
//! `#[path = "support/viewer.rs"] mod viewer;`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::Unmarshal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use roomcam::media::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, H264Decoder, I420Frame, OpusDecoder, OpusEncoder};
use roomcam::peer::{IceCandidate, SdpKind};

/// How much received audio is kept for frequency checks.
const PCM_RING_SAMPLES: usize = 3 * AUDIO_SAMPLE_RATE as usize;
/// H.264 NAL unit type of an IDR picture's slices.
const NAL_SLICE_IDR: u8 = 5;
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// The id an SDP gives the header extension `uri` (`a=extmap:ID[/dir] URI`).
fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, rest) = rest.split_once(' ')?;
        let id = id.split('/').next()?.parse().ok()?;
        (rest.split_whitespace().next()? == uri).then_some(id)
    })
}

/// How many decoded pictures are kept for content checks.
const RECENT_FRAMES: usize = 40;

/// Which browser's list of video codecs a viewer offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferedCodecs {
    /// Only H.264 42e01f packetization-mode=1.
    H264Only,
    /// VP8, VP9 and several H.264 variants, VP8 first, as Chrome lists them.
    ChromeLike,
    /// H.264 High (640c1f) first, then constrained baseline, each with both
    /// packetization modes, then VP8, as Safari lists them.
    SafariLike,
}

#[derive(Clone, Debug)]
pub struct ViewerOptions {
    /// Bind 127.0.0.1 so the viewer works where loopback is the only interface.
    pub include_loopback: bool,
    /// The video codecs the viewer offers and accepts.
    pub codecs: OfferedCodecs,
    /// Talk back with a sine of this frequency once connected.
    pub talkback_hz: Option<f32>,
    /// Reach roomcam only through this TURN server (`turn:` URL, username,
    /// credential): ICE transport policy `relay`, as a browser behind a
    /// strict NAT ends up doing.
    pub relay_only_via: Option<(String, String, String)>,
    /// Send PLI this often whatever happens (a viewer on a lossy link, or a
    /// broken one): a PLI storm.
    pub pli_every: Option<Duration>,
    /// Bind this UDP port (0: any), so that a test can shape this viewer's
    /// path alone with a filter on it.
    pub udp_port: u16,
}

impl Default for ViewerOptions {
    fn default() -> Self {
        Self {
            include_loopback: true,
            codecs: OfferedCodecs::H264Only,
            talkback_hz: None,
            relay_only_via: None,
            pli_every: None,
            udp_port: 0,
        }
    }
}

/// What the viewer sends towards roomcam.
#[derive(Clone, Debug)]
pub enum ViewerSignal {
    Description { kind: SdpKind, sdp: String },
    Candidate(IceCandidate),
}

#[derive(Clone, Debug, Default)]
pub struct ViewerStats {
    pub frames_decoded: u64,
    /// Of the access units handed to the decoder, those that were IDRs.
    pub idr_access_units: u64,
    pub decode_errors: u64,
    pub first_frame_at: Option<Instant>,
    pub last_frame: Option<I420Frame>,
    /// The most recent decoded pictures, oldest first.
    pub recent_frames: VecDeque<I420Frame>,
    pub video_packets: u64,
    /// RTP payload bytes of those packets.
    pub video_bytes: u64,
    /// Video packets that carried the playout-delay extension at the id
    /// negotiated for it, and the last (min, max) seen, in 10 ms units.
    pub playout_delay_packets: u64,
    pub playout_delay: Option<(u16, u16)>,
    pub audio_packets: u64,
    pub plis_sent: u64,
    pub talkback_packets_sent: u64,
    /// When each talk-back tone burst started (the tick of its first
    /// packet), after `set_talkback(true)` following a mute.
    pub talkback_onsets: Vec<Instant>,
    /// mime type and fmtp of the video codec the viewer receives.
    pub video_codec: Option<(String, String)>,
    pub states: Vec<RTCPeerConnectionState>,
}

struct Shared {
    signals: mpsc::UnboundedSender<ViewerSignal>,
    stats: Mutex<ViewerStats>,
    pcm: Mutex<VecDeque<i16>>,
    connected: watch::Sender<bool>,
    /// Candidates wait until the description they belong to is out.
    candidates: Mutex<CandidateGate>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Talk-back sends silence (still packets, like a muted browser track) while false.
    talkback_on: AtomicBool,
    pli_every: Option<Duration>,
    /// The id the descriptions gave the playout-delay extension.
    playout_delay_id: Mutex<Option<u8>>,
}

#[derive(Default)]
struct CandidateGate {
    open: bool,
    pending: Vec<String>,
    mid: Option<String>,
}

impl Shared {
    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap();
        if !self.closed.load(Ordering::Acquire) {
            tasks.push(tokio::spawn(fut));
        }
    }

    fn send_candidate(&self, gate: &CandidateGate, candidate: String) {
        // A browser fills both fields; with BUNDLE everything is on m-line 0.
        let _ = self.signals.send(ViewerSignal::Candidate(IceCandidate {
            candidate,
            sdp_mid: gate.mid.clone(),
            sdp_mline_index: Some(0),
        }));
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(init) = event.candidate.to_json() else {
            return;
        };
        let mut gate = self.shared.candidates.lock().unwrap();
        if gate.open {
            self.shared.send_candidate(&gate, init.candidate);
        } else {
            gate.pending.push(init.candidate);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        log::info!("viewer: connection {state}");
        self.shared.stats.lock().unwrap().states.push(state);
        if state == RTCPeerConnectionState::Connected {
            self.shared.connected.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = Arc::clone(&self.shared);
        match track.kind().await {
            RtpCodecKind::Video => self.shared.spawn(receive_video(shared, track)),
            RtpCodecKind::Audio => self.shared.spawn(receive_audio(shared, track)),
            _ => {}
        }
    }
}

pub struct Viewer {
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    audio_sender: Arc<dyn RtpSender>,
}

fn fb(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback { typ: typ.into(), parameter: parameter.into() }
}

fn video_codec(mime: &str, fmtp: &str, payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        },
        payload_type,
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

fn media_engine(codecs: OfferedCodecs) -> anyhow::Result<MediaEngine> {
    let mut me = MediaEngine::default();
    let h264 = |fmtp: &str, pt| video_codec(MIME_TYPE_H264, fmtp, pt);
    let baseline = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
    let video = match codecs {
        OfferedCodecs::H264Only => vec![h264(baseline, 106)],
        // Chrome's order and payload types: VP8 first, the wanted H.264 not first.
        OfferedCodecs::ChromeLike => vec![
            video_codec(MIME_TYPE_VP8, "", 96),
            video_codec(MIME_TYPE_VP9, "profile-id=0", 98),
            h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 102),
            h264("level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f", 108),
            h264(baseline, 106),
            h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032", 112),
        ],
        // Safari 17's order: High before constrained baseline.
        OfferedCodecs::SafariLike => vec![
            h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f", 96),
            h264(baseline, 98),
            h264("level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=640c1f", 100),
            h264("level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f", 102),
            video_codec(MIME_TYPE_VP8, "", 104),
        ],
    };
    for codec in video {
        me.register_codec(codec, RtpCodecKind::Video)?;
    }
    if codecs == OfferedCodecs::ChromeLike {
        // Chrome offers and accepts it on video.
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: PLAYOUT_DELAY_URI.to_owned() },
            RtpCodecKind::Video,
            None,
        )?;
    }
    me.register_codec(RTCRtpCodecParameters { rtp_codec: opus_codec(), payload_type: 111 }, RtpCodecKind::Audio)?;
    Ok(me)
}

impl Viewer {
    pub async fn new(options: ViewerOptions) -> anyhow::Result<(Viewer, mpsc::UnboundedReceiver<ViewerSignal>)> {
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            signals,
            stats: Mutex::new(ViewerStats::default()),
            pcm: Mutex::new(VecDeque::with_capacity(PCM_RING_SAMPLES)),
            connected,
            candidates: Mutex::new(CandidateGate::default()),
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            talkback_on: AtomicBool::new(true),
            pli_every: options.pli_every,
            playout_delay_id: Mutex::new(None),
        });

        let mut me = media_engine(options.codecs)?;
        let registry = register_default_interceptors(Registry::new(), &mut me)?;
        // Loopback only when asked: the tests run where 127.0.0.1 is all there is.
        let addrs = if options.include_loopback {
            vec![format!("127.0.0.1:{}", options.udp_port)]
        } else {
            vec![format!("0.0.0.0:{}", options.udp_port)]
        };
        let mut configuration = RTCConfigurationBuilder::new();
        if let Some((url, username, credential)) = &options.relay_only_via {
            configuration = configuration
                .with_ice_servers(vec![RTCIceServer {
                    urls: vec![url.clone()],
                    username: username.clone(),
                    credential: credential.clone(),
                }])
                .with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(configuration.build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler { shared: Arc::clone(&shared) }))
            // mDNS needs a multicast-capable interface; the tests have only lo.
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    // Paced like a browser (RFC 8445 Ta = 50 ms), not webrtc-rs' 200 ms.
                    .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
                    .build(),
            )
            .with_udp_addrs(addrs)
            .build()
            .await
            .context("viewer peer connection")?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        // Transceivers up front, as a browser page does before it offers or
        // answers: recvonly video, sendrecv audio with the microphone track.
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await?;
        let ssrc = rand::random::<u32>();
        let mic = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "viewer".into(),
                "viewer-mic".into(),
                "viewer mic".into(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec: opus_codec(),
                    ..Default::default()
                }],
            ),
        )?);
        let audio = pc
            .add_transceiver_from_track(
                Arc::clone(&mic) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendrecv,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        let audio_sender = audio.sender().await?.ok_or_else(|| anyhow!("audio transceiver without sender"))?;

        if let Some(hz) = options.talkback_hz {
            shared.spawn(talk_back(Arc::clone(&shared), mic, ssrc, Arc::clone(&audio_sender), hz));
        }
        Ok((Viewer { pc, shared, audio_sender }, signals_rx))
    }

    /// Offers (recvonly video, sendrecv audio); the offer goes out as a signal.
    pub async fn create_offer(&self) -> anyhow::Result<()> {
        let offer = self.pc.create_offer(None).await?;
        self.apply_local(offer).await
    }

    /// Applies roomcam's description; answers an offer.
    pub async fn set_remote_description(&self, kind: SdpKind, sdp: String) -> anyhow::Result<()> {
        let desc = match kind {
            SdpKind::Offer => RTCSessionDescription::offer(sdp)?,
            SdpKind::Answer => RTCSessionDescription::answer(sdp)?,
        };
        *self.shared.playout_delay_id.lock().unwrap() = extension_id(&desc.sdp, PLAYOUT_DELAY_URI);
        self.pc.set_remote_description(desc).await?;
        if kind == SdpKind::Offer {
            let answer = self.pc.create_answer(None).await?;
            self.apply_local(answer).await?;
        }
        Ok(())
    }

    pub async fn add_candidate(&self, candidate: IceCandidate) -> anyhow::Result<()> {
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
                username_fragment: None,
                url: None,
            })
            .await?;
        // Same webrtc 0.21.1 driver wake-up as roomcam's peer (see
        // Peer::wake_driver); a browser has no such stall.
        let configuration = self.pc.get_configuration().await;
        self.pc.set_configuration(configuration).await?;
        Ok(())
    }

    async fn apply_local(&self, desc: RTCSessionDescription) -> anyhow::Result<()> {
        let kind = if desc.sdp_type == RTCSdpType::Offer { SdpKind::Offer } else { SdpKind::Answer };
        let sdp = desc.sdp.clone();
        let mid = desc.unmarshal().ok().and_then(|parsed| {
            parsed.media_descriptions.first().and_then(|m| m.attribute("mid").flatten().map(str::to_owned))
        });
        self.shared.candidates.lock().unwrap().open = false;
        self.pc.set_local_description(desc).await?;
        let mut gate = self.shared.candidates.lock().unwrap();
        let _ = self.shared.signals.send(ViewerSignal::Description { kind, sdp });
        gate.open = true;
        gate.mid = mid;
        for candidate in std::mem::take(&mut gate.pending) {
            self.shared.send_candidate(&gate, candidate);
        }
        Ok(())
    }

    /// Mutes (silence packets) or unmutes the talk-back tone; an unmute
    /// starts a burst whose onset lands in `stats().talkback_onsets`.
    pub fn set_talkback(&self, on: bool) {
        self.shared.talkback_on.store(on, Ordering::Release);
    }

    /// `stats().talkback_onsets` without copying the pictures in the stats.
    pub fn talkback_onsets(&self) -> Vec<Instant> {
        self.shared.stats.lock().unwrap().talkback_onsets.clone()
    }

    pub fn stats(&self) -> ViewerStats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Up to the last `seconds` of received audio (48 kHz mono).
    pub fn received_pcm(&self, seconds: f32) -> Vec<i16> {
        let pcm = self.shared.pcm.lock().unwrap();
        let n = ((seconds * AUDIO_SAMPLE_RATE as f32) as usize).min(pcm.len());
        pcm.iter().skip(pcm.len() - n).copied().collect()
    }

    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
    }

    pub async fn local_description(&self) -> Option<String> {
        self.pc.local_description().await.map(|d| d.sdp)
    }

    pub async fn close(&self) {
        let tasks = {
            let mut tasks = self.shared.tasks.lock().unwrap();
            self.shared.closed.store(true, Ordering::Release);
            std::mem::take(&mut *tasks)
        };
        for task in tasks {
            task.abort();
        }
        let _ = self.pc.close().await;
    }
}

async fn send_pli(track: &Arc<dyn TrackRemote>, shared: &Shared, media_ssrc: u32) {
    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
    if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
        shared.stats.lock().unwrap().plis_sent += 1;
    }
}

/// Depacketizes H.264 RTP into access units (one per marker bit) and hands
/// them to a decoder thread; asks for a keyframe at the start, on packet
/// loss, on decode errors and until the first picture comes out.
async fn receive_video(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let Some(ssrc) = track.ssrcs().await.first().copied() else {
        return;
    };
    if let Some(codec) = track.codec(ssrc).await {
        shared.stats.lock().unwrap().video_codec = Some((codec.mime_type, codec.sdp_fmtp_line));
    }

    let (au_tx, au_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (pli_tx, mut pli_rx) = mpsc::unbounded_channel::<()>();
    let decoder_shared = Arc::clone(&shared);
    // openh264 decoding is CPU work: keep it off the runtime's two workers.
    std::thread::spawn(move || decode_loop(decoder_shared, au_rx, pli_tx));

    send_pli(&track, &shared, ssrc).await;
    let mut depacketizer = H264Packet::default();
    let mut access_unit: Vec<u8> = Vec::new();
    let mut last_seq: Option<u16> = None;
    let mut damaged = false;
    let mut pli_timer = tokio::time::interval(Duration::from_millis(500));
    // Polled only with `pli_every` (the select branch is off otherwise).
    let mut storm = tokio::time::interval(shared.pli_every.unwrap_or(Duration::from_secs(86_400)));
    storm.tick().await;
    loop {
        tokio::select! {
            event = track.poll() => {
                let Some(event) = event else { break };
                let packet = match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => packet,
                    TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
                    _ => continue,
                };
                let playout_delay_id = *shared.playout_delay_id.lock().unwrap();
                {
                    let mut stats = shared.stats.lock().unwrap();
                    stats.video_packets += 1;
                    stats.video_bytes += packet.payload.len() as u64;
                    if let Some(mut value) = playout_delay_id.and_then(|id| packet.header.get_extension(id)) {
                        if let Ok(hint) = PlayoutDelayExtension::unmarshal(&mut value) {
                            stats.playout_delay_packets += 1;
                            stats.playout_delay = Some((hint.min_delay, hint.max_delay));
                        }
                    }
                }
                let seq = packet.header.sequence_number;
                if last_seq.is_some_and(|last| seq != last.wrapping_add(1)) {
                    damaged = true;
                }
                last_seq = Some(seq);
                match depacketizer.depacketize(&packet.payload) {
                    Ok(nals) => access_unit.extend_from_slice(&nals),
                    Err(_) => damaged = true,
                }
                if packet.header.marker {
                    let au = std::mem::take(&mut access_unit);
                    if damaged {
                        damaged = false;
                        depacketizer = H264Packet::default();
                        send_pli(&track, &shared, ssrc).await;
                    } else if !au.is_empty() && au_tx.send(au).is_err() {
                        break;
                    }
                }
            }
            Some(()) = pli_rx.recv() => send_pli(&track, &shared, ssrc).await,
            _ = storm.tick(), if shared.pli_every.is_some() => send_pli(&track, &shared, ssrc).await,
            _ = pli_timer.tick() => {
                if shared.stats.lock().unwrap().frames_decoded == 0 {
                    send_pli(&track, &shared, ssrc).await;
                }
            }
        }
    }
}

fn decode_loop(shared: Arc<Shared>, access_units: std::sync::mpsc::Receiver<Vec<u8>>, pli: mpsc::UnboundedSender<()>) {
    let mut decoder = match H264Decoder::new() {
        Ok(d) => d,
        Err(e) => {
            log::error!("viewer: no H.264 decoder: {e}");
            return;
        }
    };
    while let Ok(au) = access_units.recv() {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        if roomcam::media::encoders::h264::nal_types(&au).contains(&NAL_SLICE_IDR) {
            shared.stats.lock().unwrap().idr_access_units += 1;
        }
        match decoder.decode(&au) {
            Ok(Some(frame)) => {
                let mut stats = shared.stats.lock().unwrap();
                stats.frames_decoded += 1;
                stats.first_frame_at.get_or_insert_with(Instant::now);
                if stats.recent_frames.len() == RECENT_FRAMES {
                    stats.recent_frames.pop_front();
                }
                stats.recent_frames.push_back(frame.clone());
                stats.last_frame = Some(frame);
            }
            Ok(None) => {}
            Err(e) => {
                log::warn!("viewer: decode error: {e}");
                shared.stats.lock().unwrap().decode_errors += 1;
                let _ = pli.send(());
            }
        }
    }
}

async fn receive_audio(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let mut decoder = match OpusDecoder::new() {
        Ok(d) => d,
        Err(e) => {
            log::error!("viewer: no Opus decoder: {e}");
            return;
        }
    };
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => continue,
        };
        shared.stats.lock().unwrap().audio_packets += 1;
        let Ok(pcm) = decoder.decode(&packet.payload) else {
            continue;
        };
        let mut ring = shared.pcm.lock().unwrap();
        ring.extend(pcm);
        let excess = ring.len().saturating_sub(PCM_RING_SAMPLES);
        ring.drain(..excess);
    }
}

/// Sends a sine as 20 ms Opus packets on the viewer's audio track once connected.
async fn talk_back(
    shared: Arc<Shared>,
    mic: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    hz: f32,
) {
    let mut connected = shared.connected.subscribe();
    if connected.wait_for(|c| *c).await.is_err() {
        return;
    }
    let Ok(params) = sender.get_parameters().await else {
        return;
    };
    let Some(pt) = params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS))
        .map(|c| c.payload_type)
    else {
        log::error!("viewer: Opus was not negotiated for talk-back");
        return;
    };
    let Ok(mut encoder) = OpusEncoder::new(32_000) else {
        return;
    };
    let step = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(AUDIO_SAMPLE_RATE);
    let mut phase = 0.0f64;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
    let mut was_on = true;
    loop {
        ticker.tick().await;
        // Now, not the tick's deadline: a late task gets past deadlines back.
        let tick = Instant::now();
        let on = shared.talkback_on.load(Ordering::Acquire);
        let onset = on && !was_on;
        was_on = on;
        if onset {
            phase = 0.0;
        }
        for s in pcm.iter_mut() {
            *s = if on { (8_000.0 * phase.sin()) as i16 } else { 0 };
            phase = (phase + step) % (2.0 * std::f64::consts::PI);
        }
        let Ok(packet) = encoder.encode(&pcm) else {
            continue;
        };
        let sample =
            Sample { data: Bytes::clone(&packet.data), duration: packet.duration, ..Sample::new(Instant::now()) };
        if mic.sample_writer(ssrc, pt).write_sample(&sample).await.is_ok() {
            let mut stats = shared.stats.lock().unwrap();
            stats.talkback_packets_sent += 1;
            if onset {
                stats.talkback_onsets.push(tick);
            }
        }
    }
}
