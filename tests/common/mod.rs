//! Shared by the integration tests: real servers as child processes, the
//! roomcam binary, and a socket.io client to poke rooms with.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../support/member.rs"]
mod member;
#[allow(unused_imports)] // not every test uses it
pub use member::Member;
pub mod netns;
#[path = "../support/page.rs"]
pub mod page;
pub mod webhook;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 when it
/// cannot be read (the process is gone).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `text` written to `name` in this test process's own temporary directory
/// (`tag` tells the test binaries apart): a config file for a child.
pub fn temp_file(tag: &str, name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcam-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process whose output is collected and which dies with the test.
pub struct Proc {
    pub name: String,
    child: Child,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> Proc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("ROOMCAM_TEST_VERBOSE").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        Proc { name: name.to_owned(), child, output }
    }

    pub fn lines(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Waits for a line matching `pred`; panics with the whole output if none comes.
    pub fn wait_for_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("{} exited ({status}) before {what}:\n{}", self.name, self.lines().join("\n"));
            }
            if Instant::now() > deadline {
                panic!("{}: no {what} within {timeout:?}:\n{}", self.name, self.lines().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines().iter().filter(|l| pred(l)).count()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (SIGKILL after `grace`). Returns the exit code.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // A failing test's children are what explains it: CI keeps only the
        // test's output, so the tail of theirs goes there too.
        if std::thread::panicking() {
            let lines = self.lines();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("--- last {} lines of {} ---\n{}", tail.len(), self.name, tail.join("\n"));
        }
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

/// The classic room server fixture (`tests/classic/server.js`) on socket.io 2 or 4.
pub fn classic_server(version: u8, port: u16, extra: &[&str]) -> Proc {
    let dir = repo_root().join("tests/classic");
    assert!(
        dir.join("node_modules/socketio2").exists() && dir.join("node_modules/socketio4").exists(),
        "the classic servers need their npm packages: run `npm ci --prefix tests/classic` (scripts/test does)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("server.js")
        .args(["--version", &version.to_string(), "--port", &port.to_string()])
        .args(extra);
    let mut proc = Proc::spawn(&format!("socket.io-{version}"), &mut cmd);
    proc.wait_for_line("`listening`", Duration::from_secs(20), |l| l.contains("listening"));
    proc
}

/// A member on the real socket.io `version` client (`tests/classic/client.js`).
pub fn node_client(version: u8, url: &str, room: &str, ca: Option<&Path>) -> Proc {
    let dir = repo_root().join("tests/classic");
    assert!(
        dir.join("node_modules/socketio-client2").exists() && dir.join("node_modules/socketio-client4").exists(),
        "the socket.io clients need their npm packages: run `npm ci --prefix tests/classic` (scripts/test does)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).arg("client.js").args(["--version", &version.to_string(), "--url", url, "--room", room]);
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    Proc::spawn(&format!("socket.io-client-{version}"), &mut cmd)
}

pub fn roomcam_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roomcam"))
}

/// `roomcam serve` on `port`, optionally with a config file.
pub fn roomcam_serve(port: u16, config: Option<&Path>) -> Proc {
    let mut cmd = Command::new(roomcam_bin());
    cmd.arg("serve").args(["--listen", &format!("127.0.0.1:{port}")]);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.env("RUST_LOG", "info");
    let mut proc = Proc::spawn("roomcam-serve", &mut cmd);
    proc.wait_for_line("`listening`", Duration::from_secs(20), |l| l.contains("listening on"));
    proc
}

/// `roomcam run` with test sources against `server`.
pub fn roomcam_run(server: &str, room: &str, extra: &[&str]) -> Proc {
    roomcam_run_env(server, room, extra, &[])
}

/// `roomcam run` as above, with extra environment variables (e.g. NOTIFY_SOCKET).
pub fn roomcam_run_env(server: &str, room: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(roomcam_bin());
    cmd.envs(env.iter().copied());
    cmd.arg("run")
        .args(["--server", server, "--room", room])
        .args(["--camera", "test", "--microphone", "test", "--speaker", "null"])
        .args(extra)
        // ROOMCAM_DEVICE_LOG lets a developer look deeper (e.g. rtc_ice=trace).
        .env("RUST_LOG", std::env::var("ROOMCAM_DEVICE_LOG").unwrap_or_else(|_| "info,roomcam=debug".into()));
    Proc::spawn("roomcam-run", &mut cmd)
}

impl Proc {
    /// For a `roomcam run`: waits until it has joined its room and waits for viewers.
    pub fn wait_in_room(&mut self) {
        self.wait_for_line("device in the room", Duration::from_secs(20), |l| l.contains("waiting for a viewer"));
    }
}

/// A classic socket.io server (2 or 4) with a `roomcam run` device already
/// waiting in `room` on it. Dropping it stops the device, then the server.
pub struct ClassicDevice {
    // Field order is drop order: the device goes before its server.
    pub device: Proc,
    pub server: Proc,
    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub url: String,
}

/// Starts the classic room server on socket.io `version` and a device with
/// test sources in `room`, and waits until the device waits for viewers.
pub fn classic_device(version: u8, room: &str) -> ClassicDevice {
    let port = free_port();
    let server = classic_server(version, port, &[]);
    let url = format!("http://127.0.0.1:{port}");
    let mut device = roomcam_run(&url, room, &[]);
    device.wait_in_room();
    ClassicDevice { device, server, url }
}

/// How coturn authenticates TURN clients.
pub enum TurnAuth<'a> {
    /// Long-term credentials of one static user (`--lt-cred-mech --user`).
    User { name: &'a str, password: &'a str },
    /// coturn's REST API (`--use-auth-secret --static-auth-secret`): any
    /// username `"<expiry>:…"` whose password is base64(HMAC-SHA1(secret,
    /// username)) and whose expiry has not passed.
    Secret(&'a str),
}

/// A real coturn on 127.0.0.1:`port` (UDP, realm `roomcam.test`), relaying
/// on loopback; returns once it listens. Fails when coturn is missing.
pub fn coturn(port: u16, auth: TurnAuth) -> Proc {
    assert!(
        Path::new("/usr/bin/turnserver").exists(),
        "coturn is needed (apt-get install coturn; scripts/test does it)"
    );
    let mut cmd = Command::new("/usr/bin/turnserver");
    cmd.args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .args(["--min-port=49152", "--max-port=49999", "--realm=roomcam.test"]);
    match auth {
        TurnAuth::User { name, password } => cmd.arg("--lt-cred-mech").arg(format!("--user={name}:{password}")),
        TurnAuth::Secret(secret) => cmd.arg("--use-auth-secret").arg(format!("--static-auth-secret={secret}")),
    };
    cmd.args([
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--allow-loopback-peers",
        "--simple-log",
        "--log-file=stdout",
        "--verbose",
    ]);
    let mut proc = Proc::spawn("coturn", &mut cmd);
    proc.wait_for_line("coturn listening", Duration::from_secs(15), |l| {
        l.contains("listener opened on") || l.contains("Total UDP servers")
    });
    proc
}

const RECORDING_RATE: u32 = 16_000;

/// A nursery recording for `--microphone wav:PATH`: fan-like noise (mostly
/// low, some hiss) throughout, a cry-like sound (450 Hz harmonics with a 5
/// Hz vibrato) from `cry.0` to `cry.1` seconds. Mono 16 kHz, so the device
/// resamples it too.
pub fn write_fan_then_cry(path: &Path, seconds: f32, cry: (f32, f32)) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RECORDING_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    let (mut seed, mut low, mut phase) = (0x9e37_79b9_7f4a_7c15u64, 0.0f32, 0.0f32);
    for i in 0..(seconds * RECORDING_RATE as f32) as u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let white = (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        low += 0.08 * (white - low);
        let t = i as f32 / RECORDING_RATE as f32;
        let mut v = 0.05 * (low * 6.0 + 0.05 * white);
        if (cry.0..cry.1).contains(&t) {
            let f = 450.0 + 40.0 * (2.0 * std::f32::consts::PI * 5.0 * t).sin();
            phase += 2.0 * std::f32::consts::PI * f / RECORDING_RATE as f32;
            v += 0.3 * (phase.sin() + 0.5 * (2.0 * phase).sin() + 0.25 * (3.0 * phase).sin()) / 1.75;
        }
        writer.write_sample((v * 32_767.0).clamp(-32_768.0, 32_767.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
}

/// `roomcam run` in `room` hearing `microphone` (e.g. `wav:PATH`), with a
/// test camera and optionally a config file.
pub fn roomcam_hearing(url: &str, room: &str, microphone: &str, config: Option<&Path>) -> Proc {
    roomcam_hearing_env(url, room, microphone, config, &[])
}

/// [`roomcam_hearing`] with extra environment variables (e.g. SSL_CERT_FILE).
pub fn roomcam_hearing_env(
    url: &str,
    room: &str,
    microphone: &str,
    config: Option<&Path>,
    env: &[(&str, &Path)],
) -> Proc {
    let mut cmd = Command::new(roomcam_bin());
    cmd.envs(env.iter().copied());
    cmd.arg("run");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["--server", url, "--room", room, "--camera", "test", "--microphone", microphone, "--speaker", "null"])
        .env("RUST_LOG", "info");
    Proc::spawn("roomcam-run", &mut cmd)
}

/// A real mosquitto on 127.0.0.1:`port`, anonymous or (with `user`) only
/// for that user and password, with `extra` lines of configuration (e.g.
/// another listener); returns once it listens. Fails when mosquitto is missing.
pub fn mosquitto(dir: &Path, port: u16, user: Option<(&str, &str)>, extra: &str) -> Proc {
    assert!(
        Path::new("/usr/sbin/mosquitto").exists(),
        "mosquitto is needed (apt-get install mosquitto mosquitto-clients; scripts/test does it)"
    );
    // Root would otherwise switch to the mosquitto user, who cannot read a
    // test's files.
    let mut conf = format!("listener {port} 127.0.0.1\nuser root\npersistence false\nlog_dest stderr\n");
    match user {
        None => conf.push_str("allow_anonymous true\n"),
        Some((name, password)) => {
            let passwords = dir.join(format!("mosquitto-{port}.passwd"));
            std::fs::write(&passwords, "").unwrap();
            let status = Command::new("mosquitto_passwd").arg("-b").arg(&passwords).args([name, password]).status();
            assert!(status.is_ok_and(|s| s.success()), "mosquitto_passwd failed");
            conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", passwords.display()));
        }
    }
    conf.push_str(extra);
    let config = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(&config, conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/mosquitto");
    cmd.arg("-v").arg("-c").arg(&config);
    let mut proc = Proc::spawn("mosquitto", &mut cmd);
    proc.wait_for_line("mosquitto listening", Duration::from_secs(10), |l| {
        l.contains("mosquitto version") && l.ends_with(" running")
    });
    proc
}

/// `mosquitto_sub` on `topics`: one line per message, `TIME RETAIN TOPIC
/// PAYLOAD` (TIME in seconds since the epoch, RETAIN 0 or 1).
pub fn mqtt_subscriber(port: u16, topics: &[&str], user: Option<(&str, &str)>) -> Proc {
    assert!(
        Path::new("/usr/bin/mosquitto_sub").exists(),
        "mosquitto_sub is needed (apt-get install mosquitto-clients; scripts/test does it)"
    );
    let mut cmd = Command::new("/usr/bin/mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-F", "%U %r %t %p"]);
    if let Some((name, password)) = user {
        cmd.args(["-u", name, "-P", password]);
    }
    for topic in topics {
        cmd.args(["-t", topic]);
    }
    Proc::spawn("mosquitto_sub", &mut cmd)
}

/// A test CA (`ca.pem`) in `dir`; returns it to sign server certificates with.
pub fn test_ca(dir: &Path) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "roomcam test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    ca
}

/// A server certificate for localhost and 127.0.0.1 signed by `ca`, as
/// `PREFIX.crt` and `PREFIX.key` in `dir`.
pub fn server_cert(
    dir: &Path,
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    prefix: &str,
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{prefix}.crt")), dir.join(format!("{prefix}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}
