//! The `roomcam` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use roomcam::config::{Config, ConfigError, EXIT_CONFIG, FrameSize, IceServerConfig};
use roomcam::daemon::sources::{NoCamera, prepare_camera};
use roomcam::signaling::tls::{ServerTls, TlsError};

#[derive(Parser)]
#[command(name = "roomcam", version, about = "Camera + microphone to a WebRTC room, from a small board")]
// The last of a repeated flag wins, so a wrapper (a unit drop-in, a test) can
// append an override to a command line it was given.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the device daemon: join the room and stream to whoever joins.
    Run(RunArgs),
    /// Run the signaling server with the viewer page.
    Serve(ServeArgs),
    /// Server + device in one process, with test sources unless told otherwise.
    Demo(DemoArgs),
    /// Check a configuration file; exit 0 when valid, 78 otherwise.
    CheckConfig { file: PathBuf },
    /// List cameras (formats, sizes, rates) and ALSA sound devices.
    Devices,
    /// Lists libcamera's cameras from inside its V4L2 layer (roomcam runs
    /// this itself, with the layer preloaded).
    #[command(name = "libcamera-cameras", hide = true)]
    LibcameraCameras {
        /// The human description for `roomcam devices`.
        #[arg(long)]
        describe: bool,
    },
}

#[derive(clap::Args, Default)]
struct DeviceArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Signaling server URL (http, https, ws or wss).
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    room: Option<String>,
    /// Room secret (roomcam's own server).
    #[arg(long)]
    token: Option<String>,
    /// `auto`, a V4L2 device such as /dev/video0, `libcamera[:ID]`, `test`,
    /// `test-busy` or `test-h264`.
    #[arg(long)]
    camera: Option<String>,
    /// `test`, `none`, `wav:PATH` (a recording, looped) or an ALSA PCM.
    #[arg(long)]
    microphone: Option<String>,
    /// `null` or an ALSA PCM.
    #[arg(long)]
    speaker: Option<String>,
    /// Picture size, e.g. 640x480.
    #[arg(long)]
    size: Option<FrameSize>,
    #[arg(long)]
    fps: Option<u32>,
    /// H.264 bitrate in kbit/s: the ceiling congestion control stays under.
    #[arg(long)]
    bitrate: Option<u32>,
    /// The lowest H.264 bitrate in kbit/s congestion control may go to.
    #[arg(long)]
    min_bitrate: Option<u32>,
    /// STUN/TURN server URL; repeat for several.
    #[arg(long = "ice-server")]
    ice_servers: Vec<String>,
    /// Username for the turn: servers given with --ice-server.
    #[arg(long)]
    ice_username: Option<String>,
    /// Credential for the turn: servers given with --ice-server.
    #[arg(long)]
    ice_credential: Option<String>,
    /// Board profile (generic, pi-zero-2w, pi3, pi4, pi5): size, fps, bitrate
    /// and encoder threads for it, where the config and flags set none.
    #[arg(long)]
    board: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// HTTPS/WSS on the server's listener.
#[derive(clap::Args, Default)]
struct TlsArgs {
    /// PEM certificate chain for HTTPS (with --tls-key), e.g. certbot's fullchain.pem.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert, e.g. certbot's privkey.pem.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// HTTPS with a certificate of roomcam's own local CA (made once in --tls-dir).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    self_signed: bool,
    /// Where --self-signed keeps its CA and certificate (default /var/lib/roomcam/tls).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// One more name (DNS or IP) for the --self-signed certificate; repeat for several.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
}

impl TlsArgs {
    /// The flags over the config file's `[server]` TLS keys; both checked again.
    fn apply(&self, config: &mut Config, origin: Option<&Path>) -> Result<(), ConfigError> {
        let server = &mut config.server;
        if self.tls_cert.is_some() || self.tls_key.is_some() {
            server.tls_cert.clone_from(&self.tls_cert);
            server.tls_key.clone_from(&self.tls_key);
            server.self_signed = false;
        }
        if self.self_signed {
            server.self_signed = true;
            server.tls_cert = None;
            server.tls_key = None;
        }
        if let Some(dir) = &self.tls_dir {
            server.tls_dir.clone_from(dir);
        }
        if !self.tls_names.is_empty() {
            server.tls_names.clone_from(&self.tls_names);
        }
        let origin = origin.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("command line"));
        config.validate().map_err(|message| ConfigError::Invalid { path: origin, message })
    }
}

#[derive(clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Certificate files that do not load are a configuration error
            // too: restarting does not fix them.
            let config_error = e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<TlsError>().is_some();
            eprintln!("roomcam: {e:#}");
            ExitCode::from(if config_error { EXIT_CONFIG as u8 } else { 1 })
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Devices => {
            print!("{}", roomcam::media::devices::report());
            Ok(())
        }
        Command::LibcameraCameras { describe } => {
            anyhow::ensure!(
                roomcam::media::sources::libcamera::compat_loaded(),
                "libcamera-cameras runs with libcamera's v4l2-compat.so in LD_PRELOAD (roomcam devices does that)"
            );
            print!("{}", roomcam::media::devices::libcamera_cameras_here(describe));
            Ok(())
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Run(args) => {
            let mut config = device_config(&args.device)?;
            roomcam::logging::init(&config.log.level);
            settle_camera(&mut config, &args.device, NoCamera::Wait)?;
            runtime()?.block_on(async { Ok(roomcam::daemon::run(config, shutdown_signal()).await?) })
        }
        Command::Serve(args) => {
            let mut config = load_or_default(args.config.as_deref())?;
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            args.tls.apply(&mut config, args.config.as_deref())?;
            roomcam::logging::init(&config.log.level);
            let tls = ServerTls::from_config(&config.server)?.map(Arc::new);
            runtime()?.block_on(async {
                let listener = roomcam::signaling::server::bind(config.server.listen).await?;
                let addr = listener.local_addr()?;
                log_tls(tls.as_deref(), addr);
                let scheme = if tls.is_some() { "https" } else { "http" };
                log::info!("server: listening on {scheme}://{addr}/");
                let metrics = server_metrics(&config, addr)?;
                let app = roomcam::signaling::server::app_with(
                    &config.server,
                    tls.as_ref().and_then(|t| t.ca_pem()),
                    metrics.as_ref().map(|(_, server)| server.clone()),
                );
                if let (Some(listen), Some((metrics, _))) = (config.metrics.listen, metrics) {
                    roomcam::metrics::spawn(listen, metrics).await?;
                }
                roomcam::signaling::server::serve_router(listener, app, tls, shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Demo(args) => {
            let mut config = device_config(&args.device)?;
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            args.tls.apply(&mut config, args.device.config.as_deref())?;
            roomcam::logging::init(&config.log.level);
            settle_camera(&mut config, &args.device, NoCamera::TestPattern)?;
            let tls = ServerTls::from_config(&config.server)?.map(Arc::new);
            runtime()?.block_on(demo(config, tls))
        }
    }
}

/// `[metrics] listen` for the server whose app listens on `addr`: the
/// registry and the server's metrics in it, with `/healthz` asking that
/// listener.
fn server_metrics(
    config: &Config,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Option<(roomcam::metrics::Metrics, Arc<roomcam::metrics::server::ServerMetrics>)>> {
    if config.metrics.listen.is_none() {
        return Ok(None);
    }
    let metrics = roomcam::metrics::Metrics::new();
    let server = roomcam::metrics::server::ServerMetrics::register(&metrics)?;
    metrics.add_health_check(Arc::new(roomcam::metrics::ListenerHealth { addr }));
    Ok(Some((metrics, server)))
}

/// The certificate in use, and for roomcam's own CA where a phone gets it.
fn log_tls(tls: Option<&ServerTls>, addr: std::net::SocketAddr) {
    let Some(tls) = tls else { return };
    log::info!("server: TLS certificate {}", tls.describe());
    if let Some(fingerprint) = tls.ca_fingerprint() {
        log::info!("server: local CA SHA-256 fingerprint {fingerprint}");
        log::info!("server: phones install the CA from https://HOST:{}/roomcam-ca.crt", addr.port());
    }
}

async fn demo(mut config: Config, tls: Option<Arc<ServerTls>>) -> anyhow::Result<()> {
    let listener = roomcam::signaling::server::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    log_tls(tls.as_deref(), addr);
    // One listener for both sets of metrics: the device's and the server's.
    let metrics = server_metrics(&config, addr)?;
    let app = roomcam::signaling::server::app_with(
        &config.server,
        tls.as_ref().and_then(|t| t.ca_pem()),
        metrics.as_ref().map(|(_, server)| server.clone()),
    );
    let metrics = metrics.map(|(metrics, _)| metrics);
    if let (Some(listen), Some(metrics)) = (config.metrics.listen, &metrics) {
        roomcam::metrics::spawn(listen, metrics.clone()).await?;
    }
    // Over TLS, the device in this process joins through a second, plain
    // listener on loopback (same app, same rooms): the certificate need not
    // name 127.0.0.1 nor be trusted by the device.
    let inner = match &tls {
        Some(_) => {
            let inner = roomcam::signaling::server::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            config.signaling.server = format!("http://{}", inner.local_addr()?);
            Some(inner)
        }
        None => {
            config.signaling.server = format!("http://{addr}");
            None
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let mut url = format!("{scheme}://{host}:{}/?room={}", addr.port(), config.signaling.room);
    if let Some(token) = &config.signaling.token {
        url.push_str(&format!("&token={token}"));
    }
    println!("roomcam demo: open {url} in a browser (Ctrl-C stops)");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let inner_server = inner.map(|inner| {
        tokio::spawn(roomcam::signaling::server::serve_router(inner, app.clone(), None, stopped(stop_rx.clone())))
    });
    let server = tokio::spawn(roomcam::signaling::server::serve_router(listener, app, tls, stopped(stop_rx.clone())));
    let mut device_stop = stop_rx;
    let devices = roomcam::daemon::Devices::open(&config)?;
    let notifier = roomcam::daemon::notify::Notifier::from_env();
    let device = roomcam::daemon::run_observed(config, devices, notifier, metrics, async move {
        let _ = device_stop.wait_for(|stop| *stop).await;
    });
    tokio::pin!(device);
    tokio::select! {
        result = &mut device => { result?; }
        _ = shutdown_signal() => {
            let _ = stop_tx.send(true);
            device.await?;
        }
    }
    let _ = stop_tx.send(true);
    server.await??;
    if let Some(inner) = inner_server {
        inner.await??;
    }
    Ok(())
}

/// [`prepare_camera`], with what no restart can fix (a camera name that
/// cannot work, libcamera's layer not installed) as a configuration error.
fn settle_camera(config: &mut Config, args: &DeviceArgs, no_camera: NoCamera) -> anyhow::Result<()> {
    match prepare_camera(config, no_camera) {
        Err(roomcam::media::MediaError::Unsupported(message)) => Err(ConfigError::Invalid {
            path: args.config.clone().unwrap_or_else(|| PathBuf::from("command line")),
            message,
        }
        .into()),
        other => Ok(other?),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
}

fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

/// The config file, then each flag given on the command line on top of it.
fn device_config(args: &DeviceArgs) -> Result<Config, ConfigError> {
    let mut config = Config::load_with_board(args.config.as_deref(), args.board.as_deref())?;
    let set = |target: &mut String, value: &Option<String>| {
        if let Some(value) = value {
            target.clone_from(value);
        }
    };
    set(&mut config.signaling.server, &args.server);
    set(&mut config.signaling.room, &args.room);
    if args.token.is_some() {
        config.signaling.token.clone_from(&args.token);
    }
    set(&mut config.camera.device, &args.camera);
    set(&mut config.audio.microphone, &args.microphone);
    set(&mut config.audio.speaker, &args.speaker);
    if let Some(size) = args.size {
        config.camera.size = size;
    }
    if let Some(fps) = args.fps {
        config.camera.fps = fps;
    }
    if let Some(bitrate) = args.bitrate {
        config.camera.bitrate = bitrate;
    }
    if let Some(min_bitrate) = args.min_bitrate {
        config.camera.min_bitrate = min_bitrate;
    }
    if !args.ice_servers.is_empty() {
        config.webrtc.ice_servers = args
            .ice_servers
            .iter()
            .map(|url| IceServerConfig {
                urls: vec![url.clone()],
                username: args.ice_username.clone(),
                credential: args.ice_credential.clone(),
            })
            .collect();
    }
    let origin = args.config.clone().unwrap_or_else(|| PathBuf::from("command line"));
    config.validate().map_err(|message| ConfigError::Invalid { path: origin, message })?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
