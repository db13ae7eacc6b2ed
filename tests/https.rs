//! HTTPS and WSS on `roomcam serve`'s own listener (issue 10 point 1): the
//! real socket.io 2.x and 4.x Node clients and the roomcam device join over
//! TLS with a test CA given to them; plain HTTP to the port is told to use
//! https; certificate files that are missing, unpaired or bad are refused
//! with exit 78. Certificates are made here with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Proc, free_port, node_client, repo_root, roomcam_bin, roomcam_run, server_cert, test_ca};
use rcgen::{CertificateParams, KeyPair};
use roomcam::signaling::tls::CertInfo;
use serde_json::Value;
use tokio_rustls::rustls;

/// A scratch directory for this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcam-https-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `roomcam serve` on `port` with `args`; waits until it listens on https.
fn serve_https(port: u16, args: &[&str]) -> Proc {
    let mut cmd = Command::new(roomcam_bin());
    cmd.arg("serve").args(["--listen", &format!("127.0.0.1:{port}")]).args(args).env("RUST_LOG", "info");
    let mut proc = Proc::spawn("roomcam-serve", &mut cmd);
    proc.wait_for_line("`listening on https`", Duration::from_secs(20), |l| l.contains("listening on https://"));
    proc
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Waits for the client's JSON line with `"event": event` (and `check`).
fn wait_event(client: &mut Proc, event: &str, check: impl Fn(&Value) -> bool) -> Value {
    let line = client.wait_for_line(&format!("event {event}"), Duration::from_secs(20), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == event && check(&v))
    });
    serde_json::from_str(&line).unwrap()
}

/// What a TLS client that trusts `ca_pem` gets for `GET path` on 127.0.0.1:`port`:
/// the status line, the headers, the body and the server's certificate.
pub struct HttpsReply {
    pub status: String,
    pub headers: String,
    pub body: Vec<u8>,
    pub certificate: Vec<u8>,
}

fn https_get(port: u16, ca_pem: &[u8], path: &str) -> HttpsReply {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    // The server closes without close_notify once it has answered; what came is the answer.
    let _ = tls.read_to_end(&mut raw);
    let certificate = conn.peer_certificates().expect("a server certificate")[0].to_vec();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    HttpsReply {
        status: status.to_owned(),
        headers: headers.to_ascii_lowercase(),
        body: raw[split + 4..].to_vec(),
        certificate,
    }
}

#[test]
fn socketio_2_and_4_clients_join_over_https_and_wss() {
    let dir = scratch("clients");
    let ca = test_ca(&dir);
    let (cert, key) = server_cert(&dir, &ca, "server");
    let port = free_port();
    let _server = serve_https(port, &["--tls-cert", path_arg(&cert), "--tls-key", path_arg(&key)]);
    let url = format!("https://localhost:{port}");
    let ca_file = dir.join("ca.pem");

    // Each client starts on HTTPS long-polling and upgrades to WSS; the two
    // versions meet in one room.
    let mut v2 = node_client(2, &url, "tls", Some(&ca_file));
    wait_event(&mut v2, "joined", |v| v["room"] == "tls");
    wait_event(&mut v2, "upgrade", |v| v["transport"] == "websocket");
    let mut v4 = node_client(4, &url, "tls", Some(&ca_file));
    let joined = wait_event(&mut v4, "joined", |v| v["room"] == "tls");
    wait_event(&mut v4, "upgrade", |v| v["transport"] == "websocket");
    wait_event(&mut v2, "otherjoin", |v| v["id"] == joined["id"]);

    // Without the CA, Node refuses the certificate: no join.
    let mut untrusting = node_client(4, &url, "tls-untrusted", None);
    wait_event(&mut untrusting, "connect_error", |_| true);
    assert_eq!(untrusting.count_lines(|l| l.contains("\"joined\"")), 0, "{:?}", untrusting.lines());
}

#[test]
fn the_device_joins_over_wss_with_its_extra_ca() {
    let dir = scratch("device");
    let ca = test_ca(&dir);
    let (cert, key) = server_cert(&dir, &ca, "server");
    let port = free_port();
    let mut server = serve_https(port, &["--tls-cert", path_arg(&cert), "--tls-key", path_arg(&key)]);
    let device_config = dir.join("device.toml");
    std::fs::write(&device_config, format!("[signaling]\nextra-ca = {:?}\n", dir.join("ca.pem"))).unwrap();
    let mut device = roomcam_run(
        &format!("https://localhost:{port}"),
        "wss-device",
        &["--config", path_arg(&device_config), "--microphone", "none"],
    );
    device.wait_in_room();
    server.wait_for_line("the device in the room", Duration::from_secs(10), |l| {
        l.contains("room wss-device:") && l.contains("joined")
    });
}

#[test]
fn plain_http_to_the_https_port_is_told_to_use_https() {
    let dir = scratch("plain");
    let ca = test_ca(&dir);
    let (cert, key) = server_cert(&dir, &ca, "server");
    let port = free_port();
    let mut server = serve_https(port, &["--tls-cert", path_arg(&cert), "--tls-key", path_arg(&key)]);

    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /?room=x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("HTTPS only: use https://"), "{answer}");

    // The same port still serves HTTPS, the page included.
    let page = https_get(port, &std::fs::read(dir.join("ca.pem")).unwrap(), "/");
    assert!(page.status.contains(" 200 "), "{}", page.status);
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));
    assert_eq!(CertInfo::of(&page.certificate).unwrap(), CertInfo::of(&pem_der(&cert)).unwrap());
    assert!(server.is_running());
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// `roomcam ARGS`: exit code and stderr.
fn roomcam(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(roomcam_bin()).args(args).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn unpaired_missing_or_bad_certificate_files_exit_78_and_say_why() {
    let dir = scratch("errors");
    let ca = test_ca(&dir);
    let (cert, key) = server_cert(&dir, &ca, "server");
    let (_, other_key) = server_cert(&dir, &ca, "other");
    let (cert, key, other_key) = (path_arg(&cert), path_arg(&key), path_arg(&other_key));

    let (code, err) = roomcam(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("tls-cert is set without server.tls-key"), "{err}");

    let config = dir.join("serve.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\ntls-key = \"/nowhere.key\"\n").unwrap();
    let (code, err) = roomcam(&["serve", "--config", path_arg(&config)]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("serve.toml:3:1: server.tls-key is set without server.tls-cert"), "{err}");
    let (code, _) = roomcam(&["check-config", path_arg(&config)]);
    assert_eq!(code, Some(78));

    let missing = dir.join("missing.crt");
    let (code, err) =
        roomcam(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", path_arg(&missing), "--tls-key", key]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("missing.crt: cannot read: No such file"), "{err}");

    let (code, err) = roomcam(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", cert]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("server.crt: no PEM private key"), "{err}");

    let (code, err) = roomcam(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", key, "--tls-key", key]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("server.key: no PEM certificate"), "{err}");

    let (code, err) = roomcam(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", other_key]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("the private key is not the certificate's"), "{err}");

    let garbage = dir.join("garbage.crt");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n").unwrap();
    let (code, err) =
        roomcam(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", path_arg(&garbage), "--tls-key", key]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("garbage.crt: bad PEM"), "{err}");
}

/// Replaces `path` the way certbot and deploy scripts do: a new file renamed over it.
fn replace_file(path: &Path, from: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits for a line matching `pred` among those `proc` prints after its first `skip`.
fn wait_new_line(proc: &mut Proc, skip: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = proc.lines().into_iter().skip(skip).find(|l| pred(l)) {
            return line;
        }
        assert!(proc.is_running(), "{} exited before {what}:\n{}", proc.name, proc.lines().join("\n"));
        assert!(std::time::Instant::now() < deadline, "no {what} within 20 s:\n{}", proc.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serial_of(path: &Path) -> String {
    CertInfo::of(&pem_der(path)).unwrap().serial
}

fn tls_config(dir: &Path, cert: &Path, key: &Path, interval: u64) -> PathBuf {
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!("[server]\ntls-cert = {cert:?}\ntls-key = {key:?}\ntls-reload-interval = {interval}\n"),
    )
    .unwrap();
    config
}

#[test]
fn a_renewed_certificate_is_used_for_new_handshakes_and_members_stay() {
    let dir = scratch("rotate");
    let ca = test_ca(&dir);
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let (cert, key) = server_cert(&dir, &ca, "live");
    let (new_cert, new_key) = server_cert(&dir, &ca, "renewed");
    let config = tls_config(&dir, &cert, &key, 1);
    let port = free_port();
    let mut server = serve_https(port, &["--config", path_arg(&config)]);
    let url = format!("https://localhost:{port}");
    let old_serial = serial_of(&cert);
    assert_eq!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, old_serial);

    // A member in the room over WSS before the renewal.
    let mut before = node_client(4, &url, "rotation", Some(&dir.join("ca.pem")));
    wait_event(&mut before, "joined", |_| true);
    wait_event(&mut before, "upgrade", |v| v["transport"] == "websocket");

    // Renewed as certbot does it: the key, then the certificate.
    replace_file(&key, &new_key);
    replace_file(&cert, &new_cert);
    let new_serial = serial_of(&new_cert);
    server.wait_for_line("the reload", Duration::from_secs(20), |l| {
        l.contains("TLS certificate files changed: now") && l.contains(&new_serial)
    });
    let seen = CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap();
    assert_eq!(seen.serial, new_serial, "a new handshake still got the old certificate");

    // The member from before hears a newcomer (who handshook with the new
    // certificate) and never lost its connection.
    let mut after = node_client(2, &url, "rotation", Some(&dir.join("ca.pem")));
    let joined = wait_event(&mut after, "joined", |_| true);
    wait_event(&mut before, "otherjoin", |v| v["id"] == joined["id"]);
    assert_eq!(before.count_lines(|l| l.contains("\"disconnect\"") || l.contains("\"connect_error\"")), 0);
    assert_eq!(before.count_lines(|l| l.contains("\"connect\"")), 1, "{:?}", before.lines());

    // A broken new file keeps the certificate in use, and the log says why.
    std::fs::write(dir.join("broken.crt"), "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let seen_lines = server.lines().len();
    replace_file(&cert, &dir.join("broken.crt"));
    let warning = wait_new_line(&mut server, seen_lines, "the refusal", |l| l.contains("kept the old one"));
    assert!(warning.contains(&new_serial) && warning.contains("live.crt"), "{warning}");
    assert_eq!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, new_serial);
    let (third_cert, third_key) = server_cert(&dir, &ca, "third");
    // A key that is not the certificate's is refused as well.
    let seen_lines = server.lines().len();
    replace_file(&cert, &third_cert);
    wait_new_line(&mut server, seen_lines, "the mismatch", |l| l.contains("not the certificate's"));
    assert_eq!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, new_serial);
    // ... until its key comes too.
    replace_file(&key, &third_key);
    let third_serial = serial_of(&third_cert);
    server.wait_for_line("the third", Duration::from_secs(20), |l| l.contains("now") && l.contains(&third_serial));
    assert_eq!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, third_serial);
    assert_eq!(before.count_lines(|l| l.contains("\"disconnect\"")), 0, "{:?}", before.lines());
    assert!(server.is_running());
}

#[test]
fn sighup_reloads_at_once() {
    let dir = scratch("sighup");
    let ca = test_ca(&dir);
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let (cert, key) = server_cert(&dir, &ca, "live");
    let (new_cert, new_key) = server_cert(&dir, &ca, "renewed");
    // Polling once a day: only the signal can explain a prompt reload.
    let config = tls_config(&dir, &cert, &key, 86_400);
    let port = free_port();
    let mut server = serve_https(port, &["--config", path_arg(&config)]);
    replace_file(&key, &new_key);
    replace_file(&cert, &new_cert);
    let new_serial = serial_of(&new_cert);
    assert_ne!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, new_serial);
    let status = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    server.wait_for_line("the reload", Duration::from_secs(20), |l| l.contains("TLS certificate SIGHUP: now"));
    assert_eq!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, new_serial);
    assert!(server.is_running(), "SIGHUP must not stop the server");
}

fn sha256_colons(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// `roomcam serve --self-signed --tls-dir DIR` until it listens; its log lines.
fn self_signed_start(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let server = serve_https(port, &["--self-signed", "--tls-dir", path_arg(dir)]);
    (server, port)
}

fn printed_fingerprint(server: &Proc) -> String {
    let line = server
        .lines()
        .into_iter()
        .find(|l| l.contains("local CA SHA-256 fingerprint"))
        .unwrap_or_else(|| panic!("no fingerprint printed:\n{}", server.lines().join("\n")));
    line.rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn self_signed_makes_a_ca_once_serves_it_and_renews_the_server_certificate() {
    let dir = scratch("self-signed").join("tls");
    let (mut first, port) = self_signed_start(&dir);
    assert!(first.count_lines(|l| l.contains("made a local CA")) == 1, "{}", first.lines().join("\n"));
    let ca_der = pem_der(&dir.join("ca.crt"));
    let ca_pem = std::fs::read(dir.join("ca.crt")).unwrap();
    let fingerprint = printed_fingerprint(&first);
    assert_eq!(fingerprint, sha256_colons(&ca_der), "the printed fingerprint is not the CA file's");
    let ca = CertInfo::of(&ca_der).unwrap();
    assert!(ca.is_ca, "{ca:?}");

    // The server certificate: signed by the CA (the handshake checks the
    // chain and the name), the host's names, at most 825 days.
    let page = https_get(port, &ca_pem, "/");
    assert!(page.status.contains(" 200 "), "{}", page.status);
    let server_cert = CertInfo::of(&page.certificate).unwrap();
    assert!(!server_cert.is_ca);
    assert!(server_cert.validity_days() <= 825.0, "{} days", server_cert.validity_days());
    assert!(server_cert.validity_days() >= 800.0, "{} days", server_cert.validity_days());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_ascii_lowercase();
    for name in ["localhost", "127.0.0.1", host.as_str(), &format!("{host}.local")] {
        assert!(server_cert.names.iter().any(|n| n == name), "{name} not in {:?}", server_cert.names);
    }
    for key in ["ca.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }

    // The CA, for a phone to install.
    let served = https_get(port, &ca_pem, "/roomcam-ca.crt");
    assert!(served.status.contains(" 200 "), "{}", served.status);
    assert!(served.headers.contains("content-type: application/x-x509-ca-cert"), "{}", served.headers);
    assert_eq!(served.body, ca_pem);
    first.kill();

    // A second start reuses both.
    let (mut second, port) = self_signed_start(&dir);
    assert_eq!(second.count_lines(|l| l.contains("made a")), 0, "{}", second.lines().join("\n"));
    assert_eq!(printed_fingerprint(&second), fingerprint);
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_pem);
    assert_eq!(CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap().serial, server_cert.serial);
    second.kill();

    // A server certificate 10 days from expiry is made again at start, by the same CA.
    let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("server.key")).unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(800);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    std::fs::write(dir.join("server.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
    let (mut third, port) = self_signed_start(&dir);
    let renewed =
        third.wait_for_line("the renewal", Duration::from_secs(5), |l| l.contains("made a server certificate"));
    assert!(renewed.contains("it expires"), "{renewed}");
    assert_eq!(printed_fingerprint(&third), fingerprint);
    let fresh = CertInfo::of(&https_get(port, &ca_pem, "/").certificate).unwrap();
    assert_ne!(fresh.serial, server_cert.serial);
    assert!(fresh.validity_days() <= 825.0);
    third.kill();
}

#[test]
fn the_ca_is_not_served_without_self_signed() {
    let dir = scratch("no-ca");
    let ca = test_ca(&dir);
    let (cert, key) = server_cert(&dir, &ca, "server");
    let port = free_port();
    let _server = serve_https(port, &["--tls-cert", path_arg(&cert), "--tls-key", path_arg(&key)]);
    let reply = https_get(port, &std::fs::read(dir.join("ca.pem")).unwrap(), "/roomcam-ca.crt");
    assert!(reply.status.contains(" 404"), "{}", reply.status);
}

/// Runs `check-viewer.mjs URL ARGS` to its end: its JSON report, success or not.
fn check_viewer(url: &str, args: &[&str]) -> (bool, Value, String) {
    let run = common::page::run_check_viewer(None, url, args);
    (run.ok, run.report, run.stderr)
}

/// The page over HTTPS from a name that is not localhost, as a phone opens
/// it: Chromium maps roomcam.test to 127.0.0.1 and trusts the self-signed
/// server's key (its SPKI pin) and nothing else. The page is a secure
/// context, so the microphone works: video decoded (the test pattern's bars),
/// audio received, push-to-talk heard by the device, which itself joined
/// over WSS trusting the local CA.
#[test]
fn chromium_on_https_from_a_real_name_views_and_talks_back() {
    let dir = scratch("chromium").join("tls");
    let port = free_port();
    let server = serve_https(port, &["--self-signed", "--tls-dir", path_arg(&dir), "--tls-name", "roomcam.test"]);
    let server_cert = CertInfo::of(&pem_der(&dir.join("server.crt"))).unwrap();
    assert!(server_cert.names.iter().any(|n| n == "roomcam.test"), "{:?}", server_cert.names);
    let device_config = dir.join("device.toml");
    std::fs::write(&device_config, format!("[signaling]\nextra-ca = {:?}\n", dir.join("ca.crt"))).unwrap();
    let mut device =
        roomcam_run(&format!("https://localhost:{port}"), "secure", &["--config", path_arg(&device_config)]);
    device.wait_in_room();

    let url = format!("https://roomcam.test:{port}/?room=secure");
    let resolve = "--host-resolver-rules=MAP roomcam.test 127.0.0.1";
    let pin = format!("--ignore-certificate-errors-spki-list={}", server_cert.spki_sha256_base64);
    // Without the pin the certificate is not trusted: the page does not load.
    let (ok, report, _) = check_viewer(&url, &["--chromium-arg", resolve, "--timeout", "20"]);
    assert!(!ok && report["error"].as_str().is_some_and(|e| e.contains("ERR_CERT")), "{report}");

    let shot = common::page::artifact("https-roomcam-test.png").to_string_lossy().into_owned();
    let (ok, report, stderr) = check_viewer(
        &url,
        &[
            "--chromium-arg",
            resolve,
            "--chromium-arg",
            &pin,
            "--expect-secure-context",
            "--expect-bars",
            "--expect-audio",
            "--talk",
            "3",
            "--screenshot",
            &shot,
            "--timeout",
            "45",
        ],
    );
    assert!(ok, "the page over https failed: {report}\n{stderr}\n{}", device.lines().join("\n"));
    assert_eq!(report["secureContext"], true, "{report}");
    eprintln!("page report: {report}");
    let heard = device
        .lines()
        .iter()
        .filter_map(|l| roomcam::media::SpeakerReport::parse(l))
        .find(|r| r.tone_hz.is_some() && r.rms_dbfs > -50.0);
    assert!(heard.is_some(), "push-to-talk never reached the device's speaker:\n{}", device.lines().join("\n"));
    drop(server);
}

/// The nginx block of the README, between its marker comments.
fn readme_nginx_snippet() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("# roomcam-nginx-begin\n").expect("README: no `# roomcam-nginx-begin` marker");
    let end = readme.find("# roomcam-nginx-end\n").expect("README: no `# roomcam-nginx-end` marker");
    readme[start..end].to_owned()
}

/// `text` with `from` replaced by `to`; `from` must be there (the README
/// changed otherwise, and this test with it).
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the README's nginx block no longer has {from:?}:\n{text}");
    text.replace(from, to)
}

/// Debian's nginx in front of plain `roomcam serve`, configured with the
/// README's block: the page, socket.io 2 and 4 (HTTPS polling, then the
/// WebSocket upgrade through the proxy), the device over wss, and Chromium
/// decoding video through it.
#[test]
fn nginx_from_the_readme_terminates_tls_in_front_of_plain_roomcam_serve() {
    let nginx = Path::new("/usr/sbin/nginx");
    assert!(
        nginx.exists(),
        "Debian's nginx is needed at /usr/sbin/nginx (apt-get install nginx; scripts/test does it)"
    );
    let dir = scratch("nginx");
    let ca = test_ca(&dir);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["roomcam.test".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("fullchain.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("privkey.pem"), key.serialize_pem()).unwrap();

    let backend = free_port();
    let mut server = common::roomcam_serve(backend, None);
    let front = free_port();
    let snippet = readme_nginx_snippet();
    let snippet = substitute(&snippet, "listen 443 ssl;", &format!("listen 127.0.0.1:{front} ssl;"));
    let snippet = substitute(&snippet, "http://127.0.0.1:8080", &format!("http://127.0.0.1:{backend}"));
    let snippet = substitute(
        &snippet,
        "/etc/letsencrypt/live/cam.example.org/fullchain.pem",
        path_arg(&dir.join("fullchain.pem")),
    );
    let snippet =
        substitute(&snippet, "/etc/letsencrypt/live/cam.example.org/privkey.pem", path_arg(&dir.join("privkey.pem")));
    std::fs::write(dir.join("roomcam.conf"), &snippet).unwrap();
    // The rest of a minimal nginx.conf, everything under the test's directory;
    // one process (no master), so that killing it leaves no worker behind.
    let d = path_arg(&dir);
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/roomcam.conf;\n}}\n"
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        // nginx's workers run as nobody when started by root.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut test_config = Command::new(nginx);
    let checked = test_config.args(["-t", "-e", "stderr", "-p", d, "-c"]).arg(dir.join("nginx.conf")).output().unwrap();
    assert!(checked.status.success(), "nginx -t: {}", String::from_utf8_lossy(&checked.stderr));
    let mut cmd = Command::new(nginx);
    cmd.args(["-e", "stderr", "-p", d, "-c"]).arg(dir.join("nginx.conf"));
    let mut proxy = Proc::spawn("nginx", &mut cmd);
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", front)).is_err() {
        assert!(proxy.is_running(), "nginx exited:\n{}", proxy.lines().join("\n"));
        assert!(std::time::Instant::now() < deadline, "nginx never listened:\n{}", proxy.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // The page, through the proxy.
    let page = https_get(front, &ca_pem, "/");
    assert!(page.status.contains(" 200 "), "{}", page.status);
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));

    // socket.io 2 and 4: polling over HTTPS, then the WebSocket upgrade through nginx.
    let url = format!("https://localhost:{front}");
    let mut v2 = node_client(2, &url, "proxied", Some(&dir.join("ca.pem")));
    wait_event(&mut v2, "joined", |_| true);
    wait_event(&mut v2, "upgrade", |v| v["transport"] == "websocket");
    let mut v4 = node_client(4, &url, "proxied", Some(&dir.join("ca.pem")));
    let joined = wait_event(&mut v4, "joined", |_| true);
    wait_event(&mut v4, "upgrade", |v| v["transport"] == "websocket");
    wait_event(&mut v2, "otherjoin", |v| v["id"] == joined["id"]);
    drop((v2, v4));

    // The device over wss through nginx, and Chromium watching it through nginx.
    let device_config = dir.join("device.toml");
    std::fs::write(&device_config, format!("[signaling]\nextra-ca = {:?}\n", dir.join("ca.pem"))).unwrap();
    let mut device = roomcam_run(&url, "proxied-video", &["--config", path_arg(&device_config)]);
    device.wait_in_room();
    let pin = CertInfo::of(cert.der()).unwrap().spki_sha256_base64;
    let (ok, report, stderr) = check_viewer(
        &format!("https://roomcam.test:{front}/?room=proxied-video"),
        &[
            "--chromium-arg",
            "--host-resolver-rules=MAP roomcam.test 127.0.0.1",
            "--chromium-arg",
            &format!("--ignore-certificate-errors-spki-list={pin}"),
            "--expect-secure-context",
            "--expect-video",
            "--timeout",
            "45",
        ],
    );
    assert!(ok, "the page through nginx failed: {report}\n{stderr}\n{}", device.lines().join("\n"));
    // WebSocket upgrades reached roomcam through the proxy (101 in nginx's log).
    let access = std::fs::read_to_string(dir.join("access.log")).unwrap();
    assert!(access.lines().any(|l| l.contains("transport=websocket") && l.contains("\" 101 ")), "{access}");
    assert!(server.is_running());
    server.kill();
    proxy.terminate(Duration::from_secs(5));
}
