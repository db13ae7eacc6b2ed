//! Joining a room over HTTPS/WSS against plain HTTP/WS on `roomcam serve`:
//! the device's own socket.io client, connect → `joined`, 20 joins each
//! (alternating), the bare TCP + TLS handshake to the same listener, and
//! loading the system CA store (which a wss:// client start does once).
//! The servers run in this process on loopback; it prints figures and
//! asserts nothing.
//!
//!     unshare -n sh -c 'ip link set lo up; cargo bench --bench tls_join'

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcam::config::{ProtocolChoice, ServerConfig};
use roomcam::signaling::client::{self, ClientCommand, ClientEvent, ClientSettings};
use roomcam::signaling::protocol::RoomEvent;
use roomcam::signaling::server;
use roomcam::signaling::tls::ServerTls;
use serde_json::Value;
use tokio_rustls::rustls;

const JOINS: usize = 20;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<34} median {:6.2} ms  p95 {:6.2} ms  min {:6.2} ms  ({} runs)",
        percentile(&ms, 50.0),
        percentile(&ms, 95.0),
        ms[0],
        ms.len()
    );
}

/// One device-client connection: connect, join, until `joined`; milliseconds.
async fn join_once(url: &str, extra_ca: Option<PathBuf>, room: &str) -> f64 {
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = ClientSettings { server: url.to_owned(), protocol: ProtocolChoice::Eio4, extra_ca };
    let started = Instant::now();
    let task = tokio::spawn(client::run(settings, events_tx, commands_rx));
    let joined = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            match event {
                ClientEvent::Connected { .. } => {
                    let _ = commands.send(ClientCommand::Emit { name: "join".into(), args: vec![Value::from(room)] });
                }
                ClientEvent::Room(RoomEvent::Joined { .. }) => return started.elapsed(),
                _ => {}
            }
        }
        panic!("client ended before joined");
    })
    .await
    .expect("no joined within 10 s");
    let _ = commands.send(ClientCommand::Close);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    joined.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("roomcam-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = roomcam::signaling::tls::self_signed::ensure(&dir, &["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("a local CA");
    let tls = Arc::new(ServerTls::new(&made.cert, &made.key, Duration::from_secs(3600), None).unwrap());
    let config = ServerConfig::default();

    let plain = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let plain_url = format!("http://127.0.0.1:{plain_port}");
    // The wss:// URL must name the certificate's host; the same name for ws:// too.
    let plain_named_url = format!("http://localhost:{plain_port}");
    let secure = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let secure_port = secure.local_addr().unwrap().port();
    let secure_url = format!("https://localhost:{secure_port}");
    let plain_config = config.clone();
    tokio::spawn(async move { server::serve(plain, &plain_config, std::future::pending()).await });
    let tls_server = tls.clone();
    tokio::spawn(async move { server::serve_tls(secure, &config, Some(tls_server), std::future::pending()).await });

    // One of each first: the first connection pays for lazy set-up.
    join_once(&plain_url, None, "warm").await;
    join_once(&secure_url, Some(made.ca_cert.clone()), "warm").await;
    let (mut http, mut http_named, mut https) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..JOINS {
        http.push(join_once(&plain_url, None, &format!("http-{i}")).await);
        http_named.push(join_once(&plain_named_url, None, &format!("http-named-{i}")).await);
        https.push(join_once(&secure_url, Some(made.ca_cert.clone()), &format!("https-{i}")).await);
    }

    // The TLS handshake alone (TCP connect + TLS 1.3 with ECDSA P-256), with a prepared client config.
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::pem::PemObject;
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(&made.ca_pem).unwrap()).unwrap();
    }
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let mut handshakes = Vec::new();
    for _ in 0..=JOINS {
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", secure_port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        handshakes.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(stream);
    }
    handshakes.remove(0);

    // What a wss:// client start pays besides the handshake: the device
    // builds its TLS config once per run, with the system's CA store.
    let mut store = Vec::new();
    let mut store_size = 0;
    for _ in 0..=JOINS {
        let started = Instant::now();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        store_size = added;
        store.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    store.remove(0);

    println!("roomcam serve on loopback, the device's socket.io client (Engine.IO 4 over WebSocket):");
    summary("join over ws://127.0.0.1 (HTTP)", http);
    summary("join over ws://localhost (HTTP)", http_named);
    summary("join over wss://localhost (HTTPS)", https);
    summary("TCP + TLS handshake only", handshakes);
    summary(&format!("system CA store, read + parsed ({store_size})"), store);
    let _ = std::fs::remove_dir_all(&dir);
}
