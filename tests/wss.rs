//! wss:// with a private CA: the device trusts the server only when the CA is
//! given as `extra-ca`; otherwise it refuses the certificate and keeps trying.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Member;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use roomcam::config::{ProtocolChoice, ServerConfig};
use roomcam::signaling::client::{self, ClientCommand, ClientEvent, ClientSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// A CA, and a server certificate for 127.0.0.1/localhost signed by it.
fn private_pki() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)
        .unwrap();
    (ca.pem(), config)
}

/// roomcam's server behind a TLS front on 127.0.0.1; returns the https URL.
async fn tls_server(tls: rustls::ServerConfig) -> String {
    let plain = roomcam::signaling::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        roomcam::signaling::server::serve(plain, &ServerConfig::default(), std::future::pending()).await.unwrap();
    });
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", front.local_addr().unwrap().port());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = front.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut backend) = TcpStream::connect(plain_addr).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_extra_ca_connects_and_without_it_does_not() {
    let (ca_pem, tls) = private_pki();
    let url = tls_server(tls).await;
    let dir = std::env::temp_dir().join(format!("roomcam-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    // Trusted through extra-ca: connects and joins.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = ClientSettings { server: url.clone(), protocol: ProtocolChoice::Auto, extra_ca: Some(ca_file) };
    tokio::spawn(client::run(settings, events_tx, commands_rx));
    let connected = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("no event in 10 s");
    assert!(matches!(connected, Some(ClientEvent::Connected { .. })), "{connected:?}");
    let _ = commands.send(ClientCommand::Close);

    // Without the CA the certificate is refused: never connected.
    let mut untrusting = Member::connect(&url, ProtocolChoice::Auto);
    let outcome = tokio::time::timeout(Duration::from_secs(3), untrusting.events.recv()).await;
    assert!(outcome.is_err(), "connected to a server signed by an unknown CA: {outcome:?}");
    untrusting.close();
}
