//! `Peer`: one webrtc-rs 0.21 peer connection, its tracks and its tasks.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use log::{debug, error, info, warn};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{PayloadType, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

use super::congestion::EstimateSink;
use super::room_channel;
use super::rtcp::is_keyframe_request;
use super::send_meter::SentBytes;
use super::setup;
use super::video_packets::VideoPackets;
use super::{
    ConnectionState, IceCandidate, MediaTaps, PeerError, PeerEvent, PeerId, PeerSettings, PlayoutDelay, SdpKind,
    SentTotals,
};
use crate::media::pipeline::{Talkback, Talker};
use crate::util::{LogLimit, lock_ignoring_poison};

/// Remote candidates that arrive before the remote description are held
/// (signaling may reorder them); beyond this many something is wrong.
const MAX_EARLY_CANDIDATES: usize = 64;
/// A new subscriber first waits for an IDR, since P-frames without their
/// reference only make the browser's decoder complain. If the encoder never
/// marks one (a bug elsewhere), send everything rather than nothing.
const KEYFRAME_WAIT_LIMIT: Duration = Duration::from_secs(2);

/// One viewer's WebRTC connection: sends H.264 + Opus, receives Opus talk-back.
pub struct Peer {
    id: PeerId,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    taps: MediaTaps,
    /// Video is packetized by roomcam (`video_packets`), audio by webrtc.
    video: LocalTrack<TrackLocalStaticRTP>,
    audio: LocalTrack<TrackLocalStaticSample>,
    /// Whether the transceivers exist; they are added at the first offer or
    /// remote offer because their direction depends on who offers.
    transceivers_added: tokio::sync::Mutex<bool>,
    early_candidates: StdMutex<Vec<IceCandidate>>,
    /// Whether congestion control is on (transport-wide CC offered).
    congestion_control: bool,
    playout_delay: Option<PlayoutDelay>,
}

/// How long a viewer that cannot trickle waits for the candidates.
const GATHER_WAIT: Duration = Duration::from_secs(3);

struct LocalTrack<T> {
    track: Arc<T>,
    ssrc: u32,
}

/// State shared between `Peer` and the event handler that runs on the
/// webrtc driver. It must not own the connection: the driver owns the
/// handler, and a handler owning the connection would keep it alive forever.
struct Shared {
    id: PeerId,
    events: mpsc::UnboundedSender<PeerEvent>,
    signal: StdMutex<SignalState>,
    connected: watch::Sender<bool>,
    last_state: StdMutex<Option<ConnectionState>>,
    closed: AtomicBool,
    tasks: StdMutex<Vec<JoinHandle<()>>>,
    talkback: Talkback,
    /// This viewer, as the speaker knows it.
    talker: Talker,
    /// Send only temporal layer 0 (the rate policy's call for a weak path).
    base_layer_only: AtomicBool,
    /// The viewer asked for audio only (listen-only): no video RTP at all.
    listen_only: AtomicBool,
    /// What has been sent to this viewer, by kind.
    sent: Arc<SentBytes>,
    /// Repairs not sent: over the share of the estimate they may use.
    repairs_dropped: Arc<AtomicU64>,
    /// [`PeerSettings::trickle`].
    trickle: bool,
    /// ICE gathering is complete (what a viewer that cannot trickle waits for).
    gathered: watch::Sender<bool>,
}

/// Local candidates can be gathered before `LocalDescription` is emitted
/// (set_local_description starts gathering); the viewer cannot use a
/// candidate before the description, so they wait here until it is out.
#[derive(Default)]
struct SignalState {
    description_sent: bool,
    pending: Vec<IceCandidate>,
    /// mid of the first m-line: with BUNDLE every candidate belongs to it.
    bundle_mid: Option<String>,
}

impl Shared {
    fn emit(&self, event: PeerEvent) {
        if self.events.send(event).is_err() {
            debug!("peer {}: event receiver is gone", self.id);
        }
    }

    fn emit_state(&self, state: ConnectionState) {
        let mut last = lock_ignoring_poison(&self.last_state);
        if *last == Some(state) {
            return;
        }
        *last = Some(state);
        drop(last);
        self.emit(PeerEvent::ConnectionState { peer: self.id.clone(), state });
    }

    fn keyframe_requested(&self, new_viewer: bool) {
        self.emit(PeerEvent::KeyframeRequested { peer: self.id.clone(), new_viewer });
    }

    /// Runs inside the interceptor chain (on the driver): only sends.
    fn bandwidth_estimate(&self, bitrate_bps: u64) {
        debug!("peer {}: bandwidth estimate {} kbit/s", self.id, bitrate_bps / 1000);
        self.emit(PeerEvent::BandwidthEstimate { peer: self.id.clone(), bitrate_bps });
    }

    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock_ignoring_poison(&self.tasks);
        // Checked under the lock that `close` takes to abort, so no task can
        // slip in after the abort.
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(fut));
    }

    fn abort_tasks(&self) {
        let tasks = {
            let mut tasks = lock_ignoring_poison(&self.tasks);
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *tasks)
        };
        for task in tasks {
            task.abort();
        }
    }

    fn local_candidate(&self, candidate: String) {
        if !self.trickle {
            // It goes out in the local description, once gathering is done.
            return;
        }
        let mut signal = lock_ignoring_poison(&self.signal);
        let candidate = IceCandidate { candidate, sdp_mid: signal.bundle_mid.clone(), sdp_mline_index: Some(0) };
        if signal.description_sent {
            drop(signal);
            self.emit(PeerEvent::LocalCandidate { peer: self.id.clone(), candidate });
        } else {
            signal.pending.push(candidate);
        }
    }
}

impl room_channel::ChannelOwner for Shared {
    fn id(&self) -> &str {
        &self.id
    }

    fn set_listen_only(&self, on: bool) -> bool {
        if self.listen_only.swap(on, Ordering::AcqRel) != on {
            if on {
                info!("peer {}: listen-only: video stopped, audio goes on", self.id);
            } else {
                info!("peer {}: video again (listen-only ended)", self.id);
                // Its decoder has nothing to build on: it needs an IDR now.
                self.keyframe_requested(true);
            }
            self.emit(PeerEvent::ListenOnly { peer: self.id.clone(), on });
        }
        on
    }

    fn listen_only(&self) -> bool {
        self.listen_only.load(Ordering::Acquire)
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                debug!("peer {}: local candidate {}", self.shared.id, init.candidate);
                self.shared.local_candidate(init.candidate);
            }
            Err(e) => warn!("peer {}: unserializable local candidate: {e}", self.shared.id),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        debug!("peer {}: ICE gathering {state}", self.shared.id);
        self.shared.gathered.send_replace(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let mapped = match state {
            RTCPeerConnectionState::New => ConnectionState::New,
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            _ => return,
        };
        info!("peer {}: connection {state}", self.shared.id);
        if mapped == ConnectionState::Connected {
            self.shared.connected.send_replace(true);
        }
        self.shared.emit_state(mapped);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Runs on the driver: hand the track to a task and return at once.
        let shared = Arc::clone(&self.shared);
        self.shared.spawn(read_remote_track(shared, track));
    }
}

impl Peer {
    pub async fn create(
        id: PeerId,
        settings: &PeerSettings,
        taps: MediaTaps,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<Peer, PeerError> {
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            id: id.clone(),
            events,
            signal: StdMutex::new(SignalState::default()),
            connected,
            last_state: StdMutex::new(None),
            closed: AtomicBool::new(false),
            tasks: StdMutex::new(Vec::new()),
            talkback: Arc::clone(&taps.talkback),
            talker: Talker::from(id.as_str()),
            base_layer_only: AtomicBool::new(false),
            listen_only: AtomicBool::new(false),
            sent: Arc::default(),
            repairs_dropped: Arc::default(),
            trickle: settings.trickle,
            gathered: watch::channel(false).0,
        });
        let lan = setup::LanInterfaces::detect();
        let udp_addrs = setup::udp_bind_addrs(&lan, settings.include_loopback);
        debug!("peer {id}: binding UDP {udp_addrs:?}");
        // The sink holds `Shared`, not the connection: the chain it lives in
        // is the connection's.
        let estimates = settings.congestion.map(|_| {
            let shared = Arc::clone(&shared);
            Arc::new(EstimateSink::new(move |bitrate_bps| shared.bandwidth_estimate(bitrate_bps)))
        });

        // mDNS is pointless without a LAN, and its socket cannot even be
        // created then (joining the multicast group fails with ENODEV).
        let pc = match build_connection(&shared, settings, &udp_addrs, lan.any(), estimates.clone()).await {
            Ok(pc) => pc,
            Err(e) if lan.any() => {
                // Some hosts refuse the multicast join even with a LAN
                // (containers, no multicast route); work without mDNS there.
                warn!("peer {id}: {e}; retrying without mDNS");
                build_connection(&shared, settings, &udp_addrs, false, estimates).await?
            }
            Err(e) => return Err(e),
        };
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        if let Some(every) = settings.measure_every {
            shared.spawn(measure(Arc::clone(&shared), Arc::downgrade(&pc), every));
        }

        let (video, rtx_ssrc) = new_video_track(&id);
        let audio = new_audio_track(&id)?;
        debug!("peer {id}: video ssrc {}, retransmissions on ssrc {rtx_ssrc}", video.ssrc);
        info!("peer {id}: created");
        Ok(Peer {
            id,
            pc,
            shared,
            taps,
            video,
            audio,
            transceivers_added: tokio::sync::Mutex::new(false),
            early_candidates: StdMutex::new(Vec::new()),
            congestion_control: settings.congestion.is_some(),
            playout_delay: settings.playout_delay,
        })
    }

    pub fn id(&self) -> &PeerId {
        &self.id
    }

    /// Sends this viewer only the pictures of temporal layer 0 (`true`), which
    /// nothing in layer 1 is needed to decode, or every picture again.
    pub fn set_base_layer_only(&self, only: bool) {
        self.shared.base_layer_only.store(only, Ordering::Relaxed);
    }

    /// Creates an offer (optionally an ICE restart), sets it locally, emits
    /// `PeerEvent::LocalDescription`.
    pub async fn create_offer(&self, ice_restart: bool) -> Result<(), PeerError> {
        self.ensure_open()?;
        self.add_transceivers(false).await?;
        let options = RTCOfferOptions { ice_restart };
        let offer =
            self.pc.create_offer(Some(options)).await.map_err(|e| PeerError::WebRtc(format!("create offer: {e}")))?;
        info!("peer {}: offering (ice restart: {ice_restart})", self.id);
        self.apply_local(offer).await
    }

    /// Applies the remote SDP; for an offer also creates + sets the answer and
    /// emits `LocalDescription`.
    pub async fn set_remote_description(&self, kind: SdpKind, sdp: String) -> Result<(), PeerError> {
        self.ensure_open()?;
        let sdp_text = sdp.clone();
        let parsed = parse_remote_description(kind, sdp)?;
        if self.congestion_control {
            self.log_transport_cc(kind, &parsed);
        }

        if kind == SdpKind::Offer {
            self.add_transceivers(true).await?;
        }
        AssertUnwindSafe(self.pc.set_remote_description(parsed))
            .catch_unwind()
            .await
            .map_err(|_| PeerError::BadSdp("applying the SDP panicked".into()))?
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        info!("peer {}: remote {kind:?} applied", self.id);
        self.report_video_ceiling(&sdp_text);
        self.apply_early_candidates().await;

        if kind == SdpKind::Offer {
            let answer =
                self.pc.create_answer(None).await.map_err(|e| PeerError::WebRtc(format!("create answer: {e}")))?;
            self.apply_local(answer).await?;
        }
        Ok(())
    }

    pub async fn add_remote_candidate(&self, candidate: IceCandidate) -> Result<(), PeerError> {
        self.ensure_open()?;
        // Parsed before queueing, so a malformed candidate is reported to the
        // caller that sent it, not logged later.
        let Some(candidate) = parse_remote_candidate(candidate)? else {
            // End-of-candidates; webrtc-rs needs no such signal.
            return Ok(());
        };

        let Some(remote) = self.pc.remote_description().await else {
            let mut early = lock_ignoring_poison(&self.early_candidates);
            if early.len() >= MAX_EARLY_CANDIDATES {
                return Err(PeerError::BadCandidate("too many candidates before the remote description".into()));
            }
            debug!("peer {}: holding candidate until the remote description", self.id);
            early.push(candidate);
            return Ok(());
        };
        self.add_checked_candidate(&remote, candidate).await
    }

    /// Closes the connection, ends its tasks and frees its sockets. Idempotent.
    pub async fn close(&self) {
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        // Tasks first: the RTCP reader holds the track's event lock while it
        // waits, and nothing may write to a connection being torn down.
        self.shared.abort_tasks();
        if let Err(e) = self.pc.close().await {
            warn!("peer {}: close: {e}", self.id);
        }
        self.shared.connected.send_replace(false);
        // The driver is stopped before it can report Closed, so report it here.
        self.shared.emit_state(ConnectionState::Closed);
        let (video, repairs, audio) = self.shared.sent.totals();
        let kb = |bytes: u64| bytes / 1000;
        let over_budget = self.shared.repairs_dropped.load(Ordering::Relaxed);
        info!(
            "peer {}: closed (sent {} kB video, {} kB repairs, {} kB audio; {over_budget} repairs over budget not sent)",
            self.id,
            kb(video),
            kb(repairs),
            kb(audio)
        );
    }

    /// The viewer's own cap on its video (a data-saver page), for the rate policy.
    fn report_video_ceiling(&self, sdp: &str) {
        let ceiling = super::bandwidth::video_ceiling_bps(sdp);
        if let Some(bps) = ceiling {
            info!("peer {}: the viewer caps its video at {} kbit/s (SDP bandwidth)", self.id, bps / 1000);
        }
        self.shared.emit(PeerEvent::VideoCeiling { peer: self.id.clone(), bitrate_bps: ceiling });
    }

    /// Whether the viewer takes part in transport-wide congestion control:
    /// without it there is no estimate unless it sends REMB.
    fn log_transport_cc(&self, kind: SdpKind, desc: &RTCSessionDescription) {
        let Ok(parsed) = desc.unmarshal() else { return };
        let with_twcc: Vec<&str> = parsed
            .media_descriptions
            .iter()
            .filter(|m| {
                m.attributes.iter().any(|a| {
                    a.key == "extmap" && a.value.as_deref().is_some_and(|v| v.contains(setup::TRANSPORT_CC_URI))
                })
            })
            .map(|m| m.media_name.media.as_str())
            .collect();
        if with_twcc.is_empty() {
            info!("peer {}: the viewer's {kind:?} has no transport-wide CC; no estimate unless it sends REMB", self.id);
        } else {
            debug!("peer {}: the viewer's {kind:?} has transport-wide CC on {}", self.id, with_twcc.join(", "));
        }
    }

    fn ensure_open(&self) -> Result<(), PeerError> {
        if self.shared.closed.load(Ordering::Acquire) {
            Err(PeerError::WebRtc("the peer is closed".into()))
        } else {
            Ok(())
        }
    }

    async fn apply_local(&self, desc: RTCSessionDescription) -> Result<(), PeerError> {
        let kind = match desc.sdp_type {
            RTCSdpType::Offer => SdpKind::Offer,
            RTCSdpType::Answer => SdpKind::Answer,
            other => return Err(PeerError::WebRtc(format!("unexpected local {other}"))),
        };
        let sdp = desc.sdp.clone();
        {
            let mut signal = lock_ignoring_poison(&self.shared.signal);
            signal.description_sent = false;
            signal.bundle_mid = first_mid(&desc);
        }
        let result = self
            .pc
            .set_local_description(desc)
            .await
            .map_err(|e| PeerError::WebRtc(format!("set local description: {e}")));

        let sdp = match (&result, self.shared.trickle) {
            (Ok(()), false) => self.gathered_description(sdp).await,
            _ => sdp,
        };
        let mut signal = lock_ignoring_poison(&self.shared.signal);
        if result.is_ok() {
            self.shared.emit(PeerEvent::LocalDescription { peer: self.id.clone(), kind, sdp });
        }
        // Candidates gathered meanwhile go out after the description (or,
        // on failure, still go out: they belong to the previous description).
        signal.description_sent = true;
        let bundle_mid = signal.bundle_mid.clone();
        for mut candidate in std::mem::take(&mut signal.pending) {
            candidate.sdp_mid = bundle_mid.clone();
            self.shared.emit(PeerEvent::LocalCandidate { peer: self.id.clone(), candidate });
        }
        result
    }

    /// The local description with every candidate in it, for a viewer that
    /// cannot take trickled ones: after gathering completes (host candidates
    /// at once; STUN and TURN ones within [`GATHER_WAIT`], else without them).
    async fn gathered_description(&self, sdp: String) -> String {
        let mut gathered = self.shared.gathered.subscribe();
        if tokio::time::timeout(GATHER_WAIT, gathered.wait_for(|done| *done)).await.is_err() {
            warn!("peer {}: ICE gathering not complete after {GATHER_WAIT:?}; answering with what it has", self.id);
        }
        match self.pc.local_description().await {
            Some(desc) => desc.sdp,
            None => sdp,
        }
    }

    /// Adds the video and audio transceivers once, then starts the tasks
    /// that feed them.
    ///
    /// When answering, video is added as sendrecv: rtc 0.21 attaches a local
    /// transceiver to a remote m-line only if the directions are compatible,
    /// and a sendonly one does not match a browser offering sendrecv video
    /// (a viewer with a camera). rtc narrows it to sendonly when the browser
    /// offers recvonly. When offering, video is sendonly.
    async fn add_transceivers(&self, answering: bool) -> Result<(), PeerError> {
        let mut added = self.transceivers_added.lock().await;
        if *added {
            return Ok(());
        }
        let video_direction =
            if answering { RTCRtpTransceiverDirection::Sendrecv } else { RTCRtpTransceiverDirection::Sendonly };
        let video_sender = self.add_transceiver(&self.video, video_direction).await?;
        let audio_sender = self.add_transceiver(&self.audio, RTCRtpTransceiverDirection::Sendrecv).await?;
        let channel = self
            .pc
            .create_data_channel(room_channel::LABEL, Some(room_channel::channel_init()))
            .await
            .map_err(|e| PeerError::WebRtc(format!("{} data channel: {e}", room_channel::LABEL)))?;
        *added = true;

        let shared = &self.shared;
        shared.spawn(room_channel::serve(Arc::clone(shared), channel, self.taps.sound.clone()));
        shared.spawn(send_video(
            Arc::clone(shared),
            Arc::clone(&self.video.track),
            self.video.ssrc,
            video_sender,
            self.taps.video.clone(),
            self.playout_delay,
        ));
        shared.spawn(send_audio(
            Arc::clone(shared),
            Arc::clone(&self.audio.track),
            self.audio.ssrc,
            audio_sender,
            self.taps.audio.clone(),
        ));
        shared.spawn(read_video_rtcp(Arc::clone(shared), Arc::clone(&self.video.track)));
        Ok(())
    }

    async fn add_transceiver<T: TrackLocal + 'static>(
        &self,
        local: &LocalTrack<T>,
        direction: RTCRtpTransceiverDirection,
    ) -> Result<Arc<dyn RtpSender>, PeerError> {
        let transceiver = self
            .pc
            .add_transceiver_from_track(
                Arc::clone(&local.track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit { direction, streams: vec![], send_encodings: vec![] }),
            )
            .await
            .map_err(|e| PeerError::WebRtc(format!("add transceiver: {e}")))?;
        transceiver
            .sender()
            .await
            .map_err(|e| PeerError::WebRtc(format!("transceiver sender: {e}")))?
            .ok_or_else(|| PeerError::WebRtc("transceiver has no sender".into()))
    }

    async fn apply_early_candidates(&self) {
        let early = std::mem::take(&mut *lock_ignoring_poison(&self.early_candidates));
        if early.is_empty() {
            return;
        }
        let Some(remote) = self.pc.remote_description().await else {
            return;
        };
        for candidate in early {
            if let Err(e) = self.add_checked_candidate(&remote, candidate).await {
                warn!("peer {}: early candidate dropped: {e}", self.id);
            }
        }
    }

    async fn add_checked_candidate(
        &self,
        remote: &RTCSessionDescription,
        candidate: IceCandidate,
    ) -> Result<(), PeerError> {
        check_candidate_target(remote, &candidate)?;
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: None,
            url: None,
        };
        self.pc.add_ice_candidate(init).await.map_err(|e| PeerError::BadCandidate(e.to_string()))?;
        self.wake_driver().await;
        Ok(())
    }

    /// New ICE servers (fresh TURN credentials) for this connection's next
    /// gathering, which an ICE restart starts; the live path keeps its own.
    pub async fn set_ice_servers(&self, settings: &PeerSettings) -> Result<(), PeerError> {
        self.pc
            .set_configuration(setup::configuration(settings))
            .await
            .map_err(|e| PeerError::WebRtc(format!("new ICE servers: {e}")))
    }

    /// webrtc 0.21.1's `add_ice_candidate` does not wake its driver (unlike
    /// `set_remote_description`): the ICE agent asks for an immediate check,
    /// but the driver sleeps on its previous timer, up to a second with no
    /// checks (seen as 1.1 s joins in `cargo bench --bench join`). Any event
    /// to the driver makes it re-poll its timers; re-applying the unchanged
    /// configuration is one that does nothing else (it is only stored for
    /// the next gathering).
    async fn wake_driver(&self) {
        let configuration = self.pc.get_configuration().await;
        if let Err(e) = self.pc.set_configuration(configuration).await {
            debug!("peer {}: could not wake the ICE driver: {e}", self.id);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        // webrtc 0.21 keeps a dropped connection's driver (and its sockets)
        // running on the runtime: only close() stops it.
        self.shared.abort_tasks();
        warn!("peer {}: dropped without close(), closing in the background", self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pc = Arc::clone(&self.pc);
            runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

async fn build_connection(
    shared: &Arc<Shared>,
    settings: &PeerSettings,
    udp_addrs: &[String],
    mdns: bool,
    estimates: Option<Arc<EstimateSink>>,
) -> Result<impl PeerConnection, PeerError> {
    let congestion = settings
        .congestion
        .as_ref()
        .zip(estimates)
        .map(|(settings, estimates)| setup::CongestionSetup { settings, estimates });
    let meter = setup::Metering {
        peer: &shared.id,
        sent: Arc::clone(&shared.sent),
        repairs_dropped: Arc::clone(&shared.repairs_dropped),
    };
    let (media_engine, registry) =
        setup::media_engine_and_interceptors(congestion, settings.playout_delay.is_some(), meter)?;
    PeerConnectionBuilder::new()
        .with_configuration(setup::configuration(settings))
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setup::setting_engine(settings, mdns))
        .with_handler(Arc::new(Handler { shared: Arc::clone(shared) }))
        .with_udp_addrs(udp_addrs.to_vec())
        .build()
        .await
        .map_err(|e| PeerError::WebRtc(format!("peer connection: {e}")))
}

/// One stream id for both tracks, so a browser puts them in one MediaStream.
fn media_stream_track(id: &str, kind: RtpCodecKind, coding: RTCRtpEncodingParameters) -> MediaStreamTrack {
    let name = match kind {
        RtpCodecKind::Video => "video",
        _ => "audio",
    };
    MediaStreamTrack::new(
        "roomcam".to_owned(),
        format!("roomcam-{name}"),
        format!("roomcam {name} for {id}"),
        kind,
        vec![coding],
    )
}

/// The video track and the SSRC of its retransmissions (RTX).
fn new_video_track(id: &str) -> (LocalTrack<TrackLocalStaticRTP>, u32) {
    let (ssrc, rtx_ssrc) = (rand::random::<u32>(), rand::random::<u32>());
    let coding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            rtx: Some(RTCRtpRtxParameters { ssrc: rtx_ssrc }),
            ..Default::default()
        },
        codec: setup::h264_codec(),
        ..Default::default()
    };
    let track = TrackLocalStaticRTP::new(media_stream_track(id, RtpCodecKind::Video, coding));
    (LocalTrack { track: Arc::new(track), ssrc }, rtx_ssrc)
}

fn new_audio_track(id: &str) -> Result<LocalTrack<TrackLocalStaticSample>, PeerError> {
    let ssrc = rand::random::<u32>();
    let coding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
        codec: setup::opus_codec(),
        ..Default::default()
    };
    let track = TrackLocalStaticSample::new(Instant::now(), media_stream_track(id, RtpCodecKind::Audio, coding))
        .map_err(|e| PeerError::WebRtc(format!("audio track: {e}")))?;
    Ok(LocalTrack { track: Arc::new(track), ssrc })
}

/// A viewer's description as `set_remote_description` takes it: parsed, and
/// with media sections roomcam can answer or apply.
pub(crate) fn parse_remote_description(kind: SdpKind, sdp: String) -> Result<RTCSessionDescription, PeerError> {
    // The SDP parser is third-party code fed with remote input: contain
    // a panic there as a rejected description rather than a dead daemon.
    let parsed = std::panic::catch_unwind(|| match kind {
        SdpKind::Offer => RTCSessionDescription::offer(sdp),
        SdpKind::Answer => RTCSessionDescription::answer(sdp),
    })
    .map_err(|_| PeerError::BadSdp("the SDP parser panicked".into()))?
    .map_err(|e| PeerError::BadSdp(e.to_string()))?;
    check_media_sections(&parsed)?;
    Ok(parsed)
}

/// A trickled remote candidate as roomcam keeps it: its `a=` prefix dropped,
/// its line parsed. `None` for the end-of-candidates marker (an empty one).
pub(crate) fn parse_remote_candidate(candidate: IceCandidate) -> Result<Option<IceCandidate>, PeerError> {
    let value = candidate.candidate.trim();
    let value = value.strip_prefix("a=").unwrap_or(value).to_owned();
    if value.is_empty() {
        return Ok(None);
    }
    let body = value.strip_prefix("candidate:").unwrap_or(&value);
    // rtc takes any word for the foundation, even a second `a=candidate:`
    // (found by fuzzing); RFC 8839 allows ice-chars only.
    let foundation = body.split_whitespace().next().unwrap_or_default();
    if !foundation.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') {
        return Err(PeerError::BadCandidate(format!("foundation {foundation:?} is not ice-chars: {value}")));
    }
    rtc::ice::candidate::unmarshal_candidate(body).map_err(|e| PeerError::BadCandidate(format!("{e}: {value}")))?;
    Ok(Some(IceCandidate { candidate: value, ..candidate }))
}

pub(crate) fn first_mid(desc: &RTCSessionDescription) -> Option<String> {
    let parsed = desc.unmarshal().ok()?;
    let media = parsed.media_descriptions.first()?;
    media.attribute("mid").flatten().map(str::to_owned)
}

/// Rejects descriptions that rtc would accept but that leave nothing to do,
/// or whose m-lines lack the mid that rtc 0.21 requires (its error for that
/// case is cryptic).
fn check_media_sections(desc: &RTCSessionDescription) -> Result<(), PeerError> {
    let parsed = desc.unmarshal().map_err(|e| PeerError::BadSdp(e.to_string()))?;
    if parsed.media_descriptions.is_empty() {
        return Err(PeerError::BadSdp("no media sections".into()));
    }
    for media in &parsed.media_descriptions {
        if media.attribute("mid").flatten().is_none_or(str::is_empty) {
            return Err(PeerError::BadSdp(format!("m={} section without a=mid", media.media_name.media)));
        }
    }
    Ok(())
}

/// rtc 0.21 ignores sdpMid/sdpMLineIndex (everything is bundled on one
/// transport), so a candidate aimed at an m-line that does not exist would be
/// accepted silently; reject it, it means the signaling is confused.
pub(crate) fn check_candidate_target(
    remote: &RTCSessionDescription,
    candidate: &IceCandidate,
) -> Result<(), PeerError> {
    let parsed = remote.unmarshal().map_err(|e| PeerError::BadCandidate(format!("remote description: {e}")))?;
    let sections = &parsed.media_descriptions;
    if let Some(mid) = candidate.sdp_mid.as_deref().filter(|m| !m.is_empty()) {
        let known = sections.iter().any(|m| m.attribute("mid").flatten() == Some(mid));
        if !known {
            return Err(PeerError::BadCandidate(format!("unknown mid {mid:?}")));
        }
    } else if let Some(index) = candidate.sdp_mline_index
        && usize::from(index) >= sections.len()
    {
        return Err(PeerError::BadCandidate(format!(
            "m-line index {index} out of range ({} sections)",
            sections.len()
        )));
    }
    Ok(())
}

/// The payload type the remote accepted for `mime`; `None` if it refused the
/// codec (e.g. a viewer that offered no H.264).
async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<PayloadType> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// Waits for the first Connected, then resolves the payload type.
async fn wait_until_sendable(shared: &Shared, sender: &Arc<dyn RtpSender>, mime: &str) -> Option<PayloadType> {
    let mut connected = shared.connected.subscribe();
    connected.wait_for(|c| *c).await.ok()?;
    let pt = negotiated_payload_type(sender, mime).await;
    if pt.is_none() {
        error!("peer {}: the viewer did not accept {mime}; not sending it", shared.id);
    }
    pt
}

/// Logs write failures without flooding: the first, then every 500th.
struct WriteErrors {
    limit: LogLimit,
}

impl WriteErrors {
    fn new() -> Self {
        Self { limit: LogLimit::first_and_every(500) }
    }

    fn record(&self, peer: &str, what: &str, e: &dyn std::fmt::Display) {
        if let Some(written) = self.limit.allow() {
            warn!("peer {peer}: writing {what} failed ({} so far): {e}", written.total);
        }
    }
}

async fn send_video(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    source: broadcast::Sender<crate::media::EncodedVideo>,
    playout_delay: Option<PlayoutDelay>,
) {
    let Some(pt) = wait_until_sendable(&shared, &sender, MIME_TYPE_H264).await else {
        if *shared.connected.borrow() {
            shared.emit(PeerEvent::VideoRefused { peer: shared.id.clone() });
        }
        return;
    };
    // Read after negotiation: the ids the viewer agreed to.
    let negotiated = sender.get_parameters().await.map(|p| p.rtp_parameters.header_extensions).unwrap_or_default();
    let mut packets = match VideoPackets::new(ssrc, pt, &negotiated, playout_delay) {
        Ok(packets) => packets,
        Err(e) => {
            error!("peer {}: cannot send video: {e}", shared.id);
            return;
        }
    };
    // Subscribe only now: a receiver created at peer creation would have
    // lagged through the whole negotiation.
    let mut frames = source.subscribe();
    let hint = if packets.sends_playout_delay() { "with" } else { "without" };
    info!("peer {}: sending video (payload type {pt}, {hint} the playout-delay hint)", shared.id);
    // A new viewer can decode nothing until the next IDR.
    shared.keyframe_requested(true);
    let mut waiting_since = Some(Instant::now());
    let errors = WriteErrors::new();
    loop {
        let frame = match frames.recv().await {
            Ok(frame) => frame,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                warn!("peer {}: video lagged, {skipped} frames dropped", shared.id);
                shared.keyframe_requested(false);
                waiting_since = Some(Instant::now());
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => {
                info!("peer {}: video source ended", shared.id);
                return;
            }
        };
        if let Some(since) = waiting_since {
            if !frame.keyframe && since.elapsed() < KEYFRAME_WAIT_LIMIT {
                continue;
            }
            if !frame.keyframe {
                warn!("peer {}: no keyframe within {KEYFRAME_WAIT_LIMIT:?}, sending anyway", shared.id);
            }
            waiting_since = None;
        }
        if shared.listen_only.load(Ordering::Acquire) {
            packets.skip(frame.duration);
            // Back to video starts at an IDR (asked for when it ended).
            waiting_since = Some(Instant::now());
            continue;
        }
        if frame.temporal_layer > 0 && shared.base_layer_only.load(Ordering::Relaxed) {
            packets.skip(frame.duration);
            continue;
        }
        let rtp = match packets.packetize(&frame.data, frame.duration, Instant::now()) {
            Ok(rtp) => rtp,
            Err(e) => {
                errors.record(&shared.id, "video", &e);
                continue;
            }
        };
        for packet in rtp {
            if let Err(e) = track.write_rtp(packet).await {
                errors.record(&shared.id, "video", &e);
            }
        }
    }
}

async fn send_audio(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    source: broadcast::Sender<crate::media::EncodedAudio>,
) {
    let Some(pt) = wait_until_sendable(&shared, &sender, MIME_TYPE_OPUS).await else {
        return;
    };
    let mut packets = source.subscribe();
    info!("peer {}: sending audio (payload type {pt})", shared.id);
    let errors = WriteErrors::new();
    loop {
        let packet = match packets.recv().await {
            Ok(packet) => packet,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                // Opus packets are independent; a gap is a click, nothing to repair.
                debug!("peer {}: audio lagged, {skipped} packets dropped", shared.id);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => {
                info!("peer {}: audio source ended", shared.id);
                return;
            }
        };
        let sample = Sample { data: packet.data, duration: packet.duration, ..Sample::new(Instant::now()) };
        if let Err(e) = track.sample_writer(ssrc, pt).write_sample(&sample).await {
            errors.record(&shared.id, "audio", &e);
        }
    }
}

/// Reports [`PeerEvent::Measured`] every `every` once connected. Holds the
/// connection weakly: the peer's owner decides when it goes.
async fn measure(shared: Arc<Shared>, pc: std::sync::Weak<dyn PeerConnection>, every: Duration) {
    let mut connected = shared.connected.subscribe();
    if connected.wait_for(|up| *up).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pc) = pc.upgrade() else { return };
        let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
        drop(pc);
        let round_trip = report
            .candidate_pairs()
            .filter(|pair| pair.nominated && pair.current_round_trip_time > 0.0)
            .map(|pair| Duration::from_secs_f64(pair.current_round_trip_time))
            .next();
        let (video, repairs, audio) = shared.sent.totals();
        shared.emit(PeerEvent::Measured {
            peer: shared.id.clone(),
            round_trip,
            sent: SentTotals { video, repairs, audio },
        });
    }
}

async fn read_video_rtcp(shared: Arc<Shared>, track: Arc<TrackLocalStaticRTP>) {
    while let Some(event) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event
            && is_keyframe_request(&packets)
        {
            debug!("peer {}: viewer asked for a keyframe", shared.id);
            shared.keyframe_requested(false);
        }
    }
    debug!("peer {}: video RTCP stream ended", shared.id);
}

async fn read_remote_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let kind = track.kind().await;
    info!("peer {}: remote {kind} track", shared.id);
    let mut packets: u64 = 0;
    while let Some(event) = track.poll().await {
        match event {
            // Only audio is wanted; other tracks (a viewer's camera) are
            // still drained so the driver's queue does not overflow.
            TrackRemoteEvent::OnRtpPacket(packet) if kind == RtpCodecKind::Audio && !packet.payload.is_empty() => {
                packets += 1;
                if packets == 1 {
                    info!("peer {}: talk-back audio started", shared.id);
                }
                (shared.talkback)(&shared.talker, packet.payload);
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    debug!("peer {}: remote {kind} track ended after {packets} packets", shared.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trickled(line: &str) -> IceCandidate {
        IceCandidate { candidate: line.into(), sdp_mid: Some("0".into()), sdp_mline_index: Some(0) }
    }

    #[test]
    fn remote_candidates_lose_their_prefix_and_garbage_is_refused() {
        let line = "candidate:1238323460 1 udp 2122260223 127.0.0.1 53534 typ host generation 0 ufrag R8HM";
        let kept = parse_remote_candidate(trickled(&format!("a={line}"))).unwrap().unwrap();
        assert_eq!(kept, trickled(line));
        assert_eq!(parse_remote_candidate(trickled(" ")).unwrap(), None);
        assert_eq!(parse_remote_candidate(trickled("a=")).unwrap(), None);
        // A doubled prefix once passed as the foundation `a=candidate:1238323460`
        // (fuzz/corpus/sdp/doubled-candidate-prefix.sdp).
        for bad in [format!("a=a={line}"), "candidate:12=3 1 udp 1 127.0.0.1 5000 typ host".into(), "x".into()] {
            assert!(parse_remote_candidate(trickled(&bad)).is_err(), "{bad:?} accepted");
        }
    }
}
