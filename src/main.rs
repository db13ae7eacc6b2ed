//! The `roomcam` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roomcam::config::{Config, ConfigError, EXIT_CONFIG, FrameSize, IceServerConfig};

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
    /// `test`, `test-busy`, `test-h264` or a V4L2 device such as /dev/video0.
    #[arg(long)]
    camera: Option<String>,
    /// `test`, `none` or an ALSA PCM.
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
}

#[derive(clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = e.downcast_ref::<ConfigError>().is_some();
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
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Run(args) => {
            let config = device_config(&args.device)?;
            roomcam::logging::init(&config.log.level);
            runtime()?.block_on(async { Ok(roomcam::daemon::run(config, shutdown_signal()).await?) })
        }
        Command::Serve(args) => {
            let mut config = load_or_default(args.config.as_deref())?;
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            roomcam::logging::init(&config.log.level);
            runtime()?.block_on(async {
                let listener = roomcam::signaling::server::bind(config.server.listen).await?;
                log::info!("server: listening on http://{}/", listener.local_addr()?);
                roomcam::signaling::server::serve(listener, &config.server, shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Demo(args) => {
            let mut config = device_config(&args.device)?;
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            roomcam::logging::init(&config.log.level);
            runtime()?.block_on(demo(config))
        }
    }
}

async fn demo(mut config: Config) -> anyhow::Result<()> {
    let listener = roomcam::signaling::server::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    config.signaling.server = format!("http://{addr}");
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let mut url = format!("http://{host}:{}/?room={}", addr.port(), config.signaling.room);
    if let Some(token) = &config.signaling.token {
        url.push_str(&format!("&token={token}"));
    }
    println!("roomcam demo: open {url} in a browser (Ctrl-C stops)");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_config = config.server.clone();
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        roomcam::signaling::server::serve(listener, &server_config, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        })
        .await
    });
    let mut device_stop = stop_rx;
    let device = roomcam::daemon::run(config, async move {
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
    Ok(())
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
