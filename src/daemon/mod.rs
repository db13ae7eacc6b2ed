//! The device daemon: wires the signaling client, the peers and the media
//! pipeline to the session core, and carries out the core's actions.

pub mod encoder;
pub mod notify;
pub mod sources;
mod stream_rate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use tokio::sync::mpsc;

use crate::config::{Config, CongestionControlChoice, IceTransportPolicyChoice, LoopbackChoice, PlayoutDelayChoice};
use crate::media::encoders::OpusSettings;
use crate::media::pipeline::{MediaPipeline, PipelineSettings, SoundAlerts};
use crate::media::{AudioSink, AudioSource, MediaError, VideoSource};
use crate::peer::{
    CongestionSettings, IceCandidate, IceServer, MediaTaps, Peer, PeerEvent, PeerId, PeerSettings, PlayoutDelay,
    SdpKind,
};
use crate::rate::{LayerChange, RateController, RateLimits, audio_budget_bps};
use crate::session::{Action, Event, Session, SessionSettings};
use crate::signaling::client::{self, ClientCommand, ClientEvent, ClientSettings};
use crate::signaling::protocol;
use crate::signaling::turn_credentials::TurnCredentials;
use stream_rate::StreamRate;

pub use sources::TEST_TONE_HZ;

const TICK: Duration = Duration::from_millis(250);
/// How long shutdown waits for `leave` to go out and peers to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("the rate policy: {0}")]
    Rate(#[from] crate::rate::RateError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// How often each viewer's path is measured for `/metrics`.
const MEASURE_EVERY: Duration = Duration::from_secs(2);

/// The media edges the daemon streams from and plays to.
pub struct Devices {
    pub camera: Box<dyn VideoSource>,
    pub microphone: Option<Box<dyn AudioSource>>,
    pub speaker: Box<dyn AudioSink>,
    /// The board's H.264 encoder; `None`: OpenH264.
    pub hardware_encoder: Option<encoder::HardwareEncoder>,
}

impl Devices {
    /// The devices the config names.
    pub fn open(config: &Config) -> Result<Devices, DaemonError> {
        Ok(Devices {
            camera: sources::open_camera(config)?,
            microphone: sources::open_microphone(config)?,
            speaker: sources::open_speaker(config)?,
            hardware_encoder: encoder::open_hardware_encoder(config)?,
        })
    }
}

/// Runs the device until `shutdown` resolves, with the devices the config
/// names, telling systemd about it when `$NOTIFY_SOCKET` is set.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), DaemonError> {
    let devices = Devices::open(&config)?;
    run_with(config, devices, notify::Notifier::from_env(), shutdown).await
}

/// [`run`] with the devices and the systemd notifier given: the seam tests
/// use to put a failing camera or a private notify socket under the real
/// daemon. Serves `/metrics` on `[metrics] listen` when it is set.
pub async fn run_with(
    config: Config,
    devices: Devices,
    notifier: notify::Notifier,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let Some(addr) = config.metrics.listen else {
        return run_observed(config, devices, notifier, None, shutdown).await;
    };
    let metrics = crate::metrics::Metrics::new();
    let exporter = crate::metrics::spawn(addr, metrics.clone()).await?;
    let result = run_observed(config, devices, notifier, Some(metrics), shutdown).await;
    exporter.abort();
    result
}

/// [`run_with`], counting into `metrics` (which `roomcam demo` also gives
/// the server, and serves itself).
pub async fn run_observed(
    config: Config,
    devices: Devices,
    notifier: notify::Notifier,
    metrics: Option<crate::metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let device_metrics = metrics
        .as_ref()
        .map(|m| crate::metrics::device::DeviceMetrics::register(m, u64::from(config.camera.bitrate) * 1000))
        .transpose()?;
    let health = Arc::new(crate::metrics::device::DeviceHealth::default());
    if let Some(m) = &metrics {
        m.add_health_check(Arc::clone(&health) as Arc<dyn crate::metrics::HealthCheck>);
    }
    let Devices { camera, microphone, speaker, hardware_encoder } = devices;
    // The hardware encoder makes one temporal layer.
    let layered = config.camera.temporal_layers > 1 && !camera.delivers_h264() && hardware_encoder.is_none();
    let encoder = encoder::video_encoder(&config, hardware_encoder, config.camera.temporal_layers)?;
    let pipeline_settings = PipelineSettings {
        opus: OpusSettings { bitrate_bps: config.audio.bitrate * 1000, ..OpusSettings::default() },
        placeholder_size: (config.camera.size.width, config.camera.size.height),
        camera_fps: config.camera.fps,
        sound_alerts: config
            .alerts
            .detector()
            .map(|detector| SoundAlerts { room: config.signaling.room.clone(), detector }),
        encode_times: device_metrics.as_ref().map(|m| m.encode_times()),
        night: config.camera.night,
        echo_cancellation: config.audio.echo_cancellation,
        ..PipelineSettings::default()
    };
    // roomcam's encoder follows the estimate, and so does a V4L2 H.264
    // camera with a bitrate control. The simulated H.264 camera has none;
    // nor have most UVC cameras, which then keep their own rate while the
    // pacer is allowed to go lower (a known gap: the camera is only known
    // once it is open, after the peers' settings are made).
    let encoder_follows = config.camera.device != "test-h264";
    let rate_controller = match config.webrtc.congestion_control {
        CongestionControlChoice::Off => None,
        CongestionControlChoice::Gcc => Some(
            RateController::new(RateLimits::new(
                u64::from(config.camera.bitrate) * 1000,
                u64::from(config.camera.min_bitrate) * 1000,
                audio_budget_bps(u64::from(config.audio.bitrate) * 1000),
                (config.camera.size.width, config.camera.size.height),
                config.camera.fps,
            )?)
            .with_temporal_layers(layered),
        ),
    };
    let pipeline_settings_alerts = pipeline_settings.sound_alerts.is_some();
    let pipeline = MediaPipeline::start(camera, encoder, microphone, speaker, pipeline_settings)?;
    if let Some(m) = &device_metrics {
        m.watch_pipeline(pipeline.stats_reader());
    }
    let alert_outlets = AlertOutlets::start(&config, &pipeline);
    let taps = MediaTaps {
        video: pipeline.video_sender(),
        audio: pipeline.audio_sender(),
        talkback: pipeline.talkback_handle(),
        sound: pipeline_settings_alerts.then(|| pipeline.sound_tap()),
    };
    let peer_settings = PeerSettings {
        ice_servers: config
            .webrtc
            .ice_servers
            .iter()
            .map(|s| IceServer { urls: s.urls.clone(), username: s.username.clone(), credential: s.credential.clone() })
            .collect(),
        include_loopback: include_loopback(config.webrtc.loopback_candidates),
        congestion: CongestionSettings::from_config(&config, encoder_follows),
        playout_delay: match config.webrtc.playout_delay {
            PlayoutDelayChoice::Low => Some(PlayoutDelay::LOW),
            PlayoutDelayChoice::Off => None,
        },
        relay_only: config.webrtc.ice_transport_policy == IceTransportPolicyChoice::Relay,
        measure_every: device_metrics.is_some().then_some(MEASURE_EVERY),
        trickle: true,
    };
    if peer_settings.include_loopback {
        info!("webrtc: offering loopback candidates");
    }

    let mut session_settings = SessionSettings::new(config.signaling.room.clone());
    session_settings.token = config.signaling.token.clone();
    session_settings.disconnect_timeout = config.webrtc.disconnect_timeout();
    session_settings.member_id = Some(protocol::new_member_id(protocol::DEVICE_MEMBER_PREFIX));
    let mut session = Session::new(session_settings);

    let (client_events_tx, mut client_events) = mpsc::unbounded_channel();
    let (client_commands, client_commands_rx) = mpsc::unbounded_channel();
    let client_task = tokio::spawn(client::run(
        ClientSettings {
            server: config.signaling.server.clone(),
            protocol: config.signaling.protocol,
            extra_ca: config.signaling.extra_ca.clone(),
        },
        client_events_tx,
        client_commands_rx,
    ));

    let (peer_reports_tx, mut peer_reports) = mpsc::unbounded_channel();
    let mut edges = Edges {
        room: config.signaling.room.clone(),
        client: client_commands,
        pipeline,
        peers: HashMap::new(),
        next_generation: 0,
        peer_reports: peer_reports_tx,
        peer_settings,
        taps,
        rate: StreamRate::new(config.signaling.room.clone(), rate_controller),
        turn_expiry: None,
        metrics: device_metrics,
    };

    info!(
        "roomcam: room {} on {}, camera {} {}x{}@{}, microphone {}, speaker {}",
        config.signaling.room,
        config.signaling.server,
        config.camera.device,
        config.camera.size.width,
        config.camera.size.height,
        config.camera.fps,
        config.audio.microphone,
        config.audio.speaker
    );

    let mut supervisor =
        notify::Supervisor::new(notifier, edges.pipeline.stats(), config.camera.fps, std::time::Instant::now())
            .with_health(health);
    // Announce the starting state now: the first event may already be the
    // signaling connection, and "connecting" would then never be shown.
    supervisor.update(&session, edges.pipeline.stats(), std::time::Instant::now());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let keyframe_due = edges.rate.next_keyframe_due();
        let event = tokio::select! {
            _ = &mut shutdown => break,
            _ = sleep_until_some(keyframe_due) => {
                edges.rate.poll(std::time::Instant::now(), &edges.pipeline);
                continue;
            }
            Some(event) = client_events.recv() => match event {
                ClientEvent::Connected { .. } => Event::SignalingConnected,
                ClientEvent::Disconnected { .. } => Event::SignalingDisconnected,
                ClientEvent::Room(room_event) => Event::Room(room_event),
                ClientEvent::Turn { room, credentials } => match edges.use_turn(&room, credentials) {
                    true => Event::IceServersRenewed,
                    false => continue,
                },
            },
            Some(report) = peer_reports.recv() => match edges.accept(report) {
                Some(event) => event,
                None => continue,
            },
            _ = tick.tick() => Event::Tick,
        };
        let now = std::time::Instant::now();
        edges.observe(&event);
        let actions = session.handle(event, now);
        edges.execute(actions, now);
        supervisor.update(&session, edges.pipeline.stats(), now);
    }

    info!("roomcam: stopping");
    let stats = edges.pipeline.stats();
    if let Some((mean, max)) = stats.capture_to_au_ms() {
        // The board test compares camera paths with this line.
        info!(
            "video: capture to encoded access unit: mean {mean:.1} ms, max {max:.1} ms over {} pictures",
            stats.capture_to_au_count
        );
    }
    supervisor.stopping();
    let now = std::time::Instant::now();
    let actions = session.handle(Event::Shutdown, now);
    edges.execute(actions, now);
    let _ = edges.client.send(ClientCommand::Close);
    let peers: Vec<_> = edges.peers.drain().map(|(_, worker)| worker.task).collect();
    let drained = async {
        let _ = client_task.await;
        for task in peers {
            let _ = task.await;
        }
    };
    let (drained, ()) = tokio::join!(tokio::time::timeout(SHUTDOWN_GRACE, drained), alert_outlets.stop());
    if drained.is_err() {
        warn!("roomcam: shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    release_media(edges.pipeline).await;
    Ok(())
}

/// Where sound alerts go besides the log, each from its own task.
struct AlertOutlets {
    mqtt: Option<crate::alerts::mqtt::MqttTask>,
    webhook: Option<tokio::task::JoinHandle<()>>,
}

impl AlertOutlets {
    /// A broken outlet is logged and left out: the stream comes first.
    fn start(config: &Config, pipeline: &MediaPipeline) -> AlertOutlets {
        let alerts = &config.alerts;
        let room = &config.signaling.room;
        if !alerts.enabled {
            if alerts.mqtt.is_some() || alerts.webhook.is_some() {
                warn!(room:% = room; "alerts: room {room}: enabled = false, so nothing goes to MQTT or the webhook");
            }
            return AlertOutlets { mqtt: None, webhook: None };
        }
        let mqtt = alerts.mqtt.as_ref().and_then(|broker| {
            crate::alerts::mqtt::spawn(broker, alerts.mqtt_ca.as_deref(), room, pipeline.sound_events())
                .inspect_err(|e| error!(room:% = room; "mqtt: room {room}: {e}; no alerts to {broker}"))
                .ok()
        });
        let webhook = alerts.webhook.as_ref().and_then(|url| {
            crate::alerts::webhook::spawn(url.clone(), alerts.webhook_format, room, pipeline.sound_events())
                .inspect_err(|e| error!(room:% = room; "webhook: room {room}: {e}; no alerts to it"))
                .ok()
        });
        AlertOutlets { mqtt, webhook }
    }

    /// MQTT says `offline` before the process goes; an alert still being
    /// retried to the webhook is given up.
    async fn stop(self) {
        if let Some(webhook) = self.webhook {
            webhook.abort();
        }
        if let Some(mqtt) = self.mqtt {
            mqtt.stop().await;
        }
    }
}

/// Resolves at `due`, or never without one.
async fn sleep_until_some(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Stops the media threads, but never waits more than a few seconds: a
/// capture thread stuck in a wedged driver must not keep the daemon (and
/// systemd's restart) waiting; exiting the process ends that thread anyway.
async fn release_media(mut pipeline: MediaPipeline) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("roomcam-stop".into()).spawn(move || {
        pipeline.stop();
        let _ = done_tx.send(());
    });
    if spawned.is_ok() && tokio::time::timeout(SHUTDOWN_GRACE, done_rx).await.is_err() {
        warn!("roomcam: media threads did not stop within {SHUTDOWN_GRACE:?}; exiting without them");
    }
}

/// Loopback candidates are useless to a browser elsewhere, but they are the
/// only way in when the board (or a test namespace) has nothing but `lo`.
fn include_loopback(choice: LoopbackChoice) -> bool {
    match choice {
        LoopbackChoice::Always => true,
        LoopbackChoice::Never => false,
        LoopbackChoice::Auto => !has_route_off_host(),
    }
}

/// Connecting a UDP socket sends nothing; it only asks the kernel for a route.
fn has_route_off_host() -> bool {
    let probe = |bind: &str, target: &str| std::net::UdpSocket::bind(bind).and_then(|s| s.connect(target)).is_ok();
    // TEST-NET-1 and the IPv6 documentation prefix: never really contacted.
    probe("0.0.0.0:0", "192.0.2.1:9") || probe("[::]:0", "[2001:db8::1]:9")
}

/// What the session asks of a peer; one worker runs them in order.
enum PeerOp {
    Offer {
        ice_restart: bool,
    },
    Remote {
        kind: SdpKind,
        sdp: String,
    },
    Candidate(IceCandidate),
    /// Send only the pictures of temporal layer 0 (`true`), or all again.
    BaseLayerOnly(bool),
    /// New ICE servers for the next gathering.
    IceServers(PeerSettings),
    Close,
}

/// What a peer worker reports back, tagged so that a late report from a
/// closed peer is never mistaken for its successor of the same id.
enum PeerReport {
    Event { generation: u64, event: PeerEvent },
    Failed { generation: u64, peer: PeerId, reason: String },
}

struct PeerWorker {
    generation: u64,
    ops: mpsc::UnboundedSender<PeerOp>,
    task: tokio::task::JoinHandle<()>,
}

struct Edges {
    room: String,
    client: mpsc::UnboundedSender<ClientCommand>,
    pipeline: MediaPipeline,
    peers: HashMap<PeerId, PeerWorker>,
    next_generation: u64,
    peer_reports: mpsc::UnboundedSender<PeerReport>,
    peer_settings: PeerSettings,
    taps: MediaTaps,
    /// Bandwidth estimates → encoder target; keyframe requests → IDRs.
    rate: StreamRate,
    /// When the oldest TURN credentials a live connection may use expire.
    turn_expiry: Option<std::time::Instant>,
    /// `[metrics] listen` is set.
    metrics: Option<Arc<crate::metrics::device::DeviceMetrics>>,
}

impl Edges {
    fn accept(&self, report: PeerReport) -> Option<Event> {
        let (generation, peer) = match &report {
            PeerReport::Event { generation, event } => (*generation, peer_of(event)),
            PeerReport::Failed { generation, peer, .. } => (*generation, peer),
        };
        if self.peers.get(peer).map(|w| w.generation) != Some(generation) {
            return None;
        }
        Some(match report {
            PeerReport::Event { event, .. } => Event::Peer(event),
            PeerReport::Failed { peer, reason, .. } => Event::PeerFailed { peer, reason },
        })
    }

    /// What the session core does not deal with: the rate policy's inputs
    /// (the session still sees every event).
    fn observe(&mut self, event: &Event) {
        if let Some(metrics) = &self.metrics {
            count(metrics, event);
        }
        match event {
            Event::Peer(PeerEvent::BandwidthEstimate { peer, bitrate_bps }) => {
                let changes = self.rate.on_estimate(peer, *bitrate_bps, &self.pipeline);
                self.send_layers(changes);
            }
            Event::Peer(PeerEvent::VideoRefused { peer }) => {
                let changes = self.rate.on_receives_video(peer, false, &self.pipeline);
                self.send_layers(changes);
            }
            Event::Peer(PeerEvent::ListenOnly { peer, on }) => {
                let changes = self.rate.on_receives_video(peer, !on, &self.pipeline);
                self.send_layers(changes);
            }
            Event::Peer(PeerEvent::VideoCeiling { peer, bitrate_bps }) => {
                let changes = self.rate.on_video_ceiling(peer, *bitrate_bps, &self.pipeline);
                self.send_layers(changes);
            }
            _ => {}
        }
    }

    /// Minted TURN credentials from roomcam's server: they replace the
    /// configured TURN servers (STUN ones stay) for every peer from now on,
    /// and for the live ones at their next gathering. True when the live
    /// connections should gather again now: the credentials they may still
    /// use have less than half the new lifetime left (the server's renewal
    /// at 80 %), not when a signaling blip merely brought a fresh set.
    fn use_turn(&mut self, room: &str, credentials: TurnCredentials) -> bool {
        if room != self.room {
            warn!("room {}: TURN credentials for another room ({room}) ignored", self.room);
            return false;
        }
        let is_turn = |url: &String| url.starts_with("turn:") || url.starts_with("turns:");
        let mut servers: Vec<IceServer> =
            self.peer_settings.ice_servers.iter().filter(|s| !s.urls.iter().any(is_turn)).cloned().collect();
        servers.push(IceServer {
            urls: credentials.urls.clone(),
            username: Some(credentials.username),
            credential: Some(credentials.credential),
        });
        self.peer_settings.ice_servers = servers;
        info!(
            room:% = self.room;
            "room {}: TURN credentials from the server for {} (valid {}s)",
            self.room,
            credentials.urls.join(", "),
            credentials.ttl
        );
        for worker in self.peers.values() {
            let _ = worker.ops.send(PeerOp::IceServers(self.peer_settings.clone()));
        }
        let now = std::time::Instant::now();
        let lifetime = Duration::from_secs(credentials.ttl);
        let restart = self.turn_expiry.is_none_or(|live| live.saturating_duration_since(now) < lifetime / 2);
        if restart {
            self.turn_expiry = Some(now + lifetime);
        }
        restart
    }

    fn send_layers(&self, changes: Vec<LayerChange>) {
        for change in changes {
            self.to_peer(&change.viewer, PeerOp::BaseLayerOnly(change.base_layer_only));
        }
    }

    fn execute(&mut self, actions: Vec<Action>, now: std::time::Instant) {
        for action in actions {
            match action {
                Action::Join { room, token, member } => {
                    self.emit(protocol::join_event(&room, token.as_deref(), member.as_deref()))
                }
                Action::Leave { room } => self.emit(protocol::leave_event(&room)),
                Action::Send { data, to } => {
                    let event = protocol::message_event(&self.room, &data, to.as_deref());
                    self.emit(event);
                }
                Action::CreatePeer { peer } => self.spawn_peer(peer),
                Action::CreateOffer { peer, ice_restart } => self.to_peer(&peer, PeerOp::Offer { ice_restart }),
                Action::SetRemoteDescription { peer, kind, sdp } => self.to_peer(&peer, PeerOp::Remote { kind, sdp }),
                Action::AddRemoteCandidate { peer, candidate } => self.to_peer(&peer, PeerOp::Candidate(candidate)),
                Action::ClosePeer { peer } => {
                    if let Some(worker) = self.peers.remove(&peer) {
                        let _ = worker.ops.send(PeerOp::Close);
                    }
                    let changes = self.rate.on_viewer_left(&peer, &self.pipeline);
                    self.send_layers(changes);
                    if let Some(metrics) = &self.metrics {
                        metrics.viewer_left(&peer);
                    }
                }
                Action::SetViewers(n) => {
                    self.pipeline.set_viewers(n);
                    if let Some(metrics) = &self.metrics {
                        metrics.set_viewers(n);
                    }
                }
                Action::RequestKeyframe { peer, new_viewer } => {
                    self.rate.on_keyframe_request(&peer, new_viewer, now, &self.pipeline)
                }
            }
        }
    }

    fn emit(&self, (name, args): (&'static str, Vec<serde_json::Value>)) {
        let _ = self.client.send(ClientCommand::Emit { name: name.to_owned(), args });
    }

    fn to_peer(&self, peer: &PeerId, op: PeerOp) {
        if let Some(worker) = self.peers.get(peer) {
            let _ = worker.ops.send(op);
        }
    }

    fn spawn_peer(&mut self, id: PeerId) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let settings = PeerSettings { trickle: !protocol::is_whep_member(&id), ..self.peer_settings.clone() };
        let task = tokio::spawn(peer_worker(
            id.clone(),
            generation,
            settings,
            self.taps.clone(),
            ops_rx,
            self.peer_reports.clone(),
        ));
        if let Some(old) = self.peers.insert(id, PeerWorker { generation, ops, task }) {
            let _ = old.ops.send(PeerOp::Close);
        }
    }
}

/// What `/metrics` learns from the events the main loop handles.
fn count(metrics: &crate::metrics::device::DeviceMetrics, event: &Event) {
    match event {
        Event::SignalingConnected => metrics.signaling(true),
        Event::SignalingDisconnected => metrics.signaling(false),
        Event::Peer(PeerEvent::ConnectionState { peer, state }) => metrics.peer_state(peer, *state),
        Event::Peer(PeerEvent::BandwidthEstimate { peer, bitrate_bps }) => metrics.estimate(peer, *bitrate_bps),
        Event::Peer(PeerEvent::Measured { peer, round_trip, sent }) => metrics.measured(peer, *round_trip, *sent),
        _ => {}
    }
}

fn peer_of(event: &PeerEvent) -> &PeerId {
    match event {
        PeerEvent::LocalDescription { peer, .. }
        | PeerEvent::LocalCandidate { peer, .. }
        | PeerEvent::ConnectionState { peer, .. }
        | PeerEvent::KeyframeRequested { peer, .. }
        | PeerEvent::BandwidthEstimate { peer, .. }
        | PeerEvent::VideoRefused { peer }
        | PeerEvent::ListenOnly { peer, .. }
        | PeerEvent::VideoCeiling { peer, .. }
        | PeerEvent::Measured { peer, .. } => peer,
    }
}

async fn peer_worker(
    id: PeerId,
    generation: u64,
    settings: PeerSettings,
    taps: MediaTaps,
    mut ops: mpsc::UnboundedReceiver<PeerOp>,
    reports: mpsc::UnboundedSender<PeerReport>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let forward_reports = reports.clone();
    let forward = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let _ = forward_reports.send(PeerReport::Event { generation, event });
        }
    });
    let fail = |reason: String| {
        let _ = reports.send(PeerReport::Failed { generation, peer: id.clone(), reason });
    };
    let peer = match Peer::create(id.clone(), &settings, taps, events_tx).await {
        Ok(peer) => peer,
        Err(e) => {
            fail(format!("cannot create the peer connection: {e}"));
            forward.abort();
            return;
        }
    };
    while let Some(op) = ops.recv().await {
        let result = match op {
            PeerOp::Offer { ice_restart } => peer.create_offer(ice_restart).await,
            PeerOp::Remote { kind, sdp } => peer.set_remote_description(kind, sdp).await,
            PeerOp::Candidate(candidate) => match peer.add_remote_candidate(candidate).await {
                // A bad candidate costs one path, not the whole peer.
                Err(e) => {
                    warn!("peer {id}: {e}; candidate dropped");
                    Ok(())
                }
                ok => ok,
            },
            PeerOp::BaseLayerOnly(only) => {
                peer.set_base_layer_only(only);
                Ok(())
            }
            PeerOp::IceServers(settings) => match peer.set_ice_servers(&settings).await {
                // The live path goes on with the old servers until it fails.
                Err(e) => {
                    warn!("peer {id}: {e}");
                    Ok(())
                }
                ok => ok,
            },
            PeerOp::Close => break,
        };
        if let Err(e) = result {
            fail(e.to_string());
        }
    }
    peer.close().await;
    forward.abort();
}
