//! HTTPS and WSS for `roomcam serve`: TLS on the server's own listener.
//!
//! Browsers give the microphone (talk-back) only to secure origins, so a
//! phone needs `https://`. The certificate comes from PEM files (`tls-cert`,
//! `tls-key`: certbot's, say) or from roomcam's own local CA (`self-signed`,
//! see [`self_signed`]). The files are re-read when they change (polled) or
//! on SIGHUP: each handshake asks [`ReloadingCert`] for the current
//! certificate, so new connections get the new one while established ones,
//! the room's members, are left alone. A new file that does not load keeps
//! the old certificate.
//!
//! Both socket.io versions run over the same listener as before: TLS is
//! below HTTP, so Engine.IO 3 and 4, polling and WebSocket, are unchanged.

pub mod self_signed;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use log::{debug, info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

use crate::config::ServerConfig;
use crate::util::lock_ignoring_poison;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // `error`, not `source`: the message carries it once, for log lines too.
    #[error("{path}: cannot read: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")]
    NoKey { path: PathBuf },
    #[error("{path}: bad PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{cert} with {key}: {reason}")]
    Unusable { cert: PathBuf, key: PathBuf, reason: String },
    #[error("{path}: cannot write: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("{path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// A client that has not finished its handshake by then is dropped, so
/// silent connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a certificate says that an operator (or a test) compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, hex.
    pub serial: String,
    /// SHA-256 of the whole certificate (DER), `AA:BB:…`, as phones show it.
    pub sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo, base64: Chromium's
    /// `--ignore-certificate-errors-spki-list` and HPKP pins.
    pub spki_sha256_base64: String,
    pub subject: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses (text) it is valid for.
    pub names: Vec<String>,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn of(der: &[u8]) -> Result<CertInfo, String> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string()),
                        16 => names.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string()),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            serial: cert.raw_serial_as_string().replace(':', ""),
            sha256: fingerprint(der),
            spki_sha256_base64: base64_standard(
                ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw).as_ref(),
            ),
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            names,
            is_ca: cert.is_ca(),
        })
    }

    /// The certificate's life, in days.
    pub fn validity_days(&self) -> f64 {
        (self.not_after - self.not_before) as f64 / 86_400.0
    }

    /// `not_after` as a UTC date and time, for log lines.
    pub fn expires(&self) -> String {
        x509_parser::time::ASN1Time::from_timestamp(self.not_after).map(|t| t.to_string()).unwrap_or_default()
    }
}

/// SHA-256 of `der`, as `AA:BB:…` (what Android and iOS show for a CA).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })
}

/// Reads a PEM certificate chain (leaf first) and its private key, and
/// checks that they belong together.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let cert_pem = read(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem { path: cert_path.to_owned(), reason: e.to_string() })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: cert_path.to_owned() });
    };
    let info = CertInfo::of(leaf).map_err(|reason| TlsError::BadCertificate { path: cert_path.to_owned(), reason })?;
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: key_path.to_owned() },
        e => TlsError::BadPem { path: key_path.to_owned(), reason: e.to_string() },
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Unusable {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: match e {
            rustls::Error::InconsistentKeys(_) => "the private key is not the certificate's".to_owned(),
            e => e.to_string(),
        },
    })?;
    Ok((certified, info))
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate every new handshake gets; swapped on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(lock_ignoring_poison_read(&self.current).clone())
    }
}

fn lock_ignoring_poison_read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A file's identity and content version as far as polling can tell:
/// replaced (rename), rewritten (mtime, size) or re-linked (certbot's symlinks).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Stamp {
        Stamp(std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino())))
    }
}

/// TLS for the server: the files, the certificate in use, and what
/// `/roomcam-ca.crt` serves when the certificate is roomcam's own.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: Arc<ReloadingCert>,
    info: std::sync::Mutex<CertInfo>,
    rustls: Arc<rustls::ServerConfig>,
    interval: Duration,
    ca_pem: Option<Vec<u8>>,
    stamps: std::sync::Mutex<(Stamp, Stamp)>,
    /// `self-signed`: the directory and names to renew the certificate for
    /// while the server runs (checked daily; the poller then loads it).
    renew: Option<(PathBuf, Vec<String>)>,
}

/// How often a running `self-signed` server checks whether its certificate is due.
const RENEW_CHECK: Duration = Duration::from_secs(24 * 3600);

impl ServerTls {
    /// TLS as the config asks for it: `None` for plain HTTP. With
    /// `self-signed`, makes (or reuses) the local CA and certificate first.
    pub fn from_config(config: &ServerConfig) -> Result<Option<ServerTls>, TlsError> {
        if config.self_signed {
            let names = self_signed::local_names(config.listen, &config.tls_names);
            let made = self_signed::ensure(&config.tls_dir, &names)?;
            let mut tls = ServerTls::new(&made.cert, &made.key, config.tls_reload_interval(), Some(made.ca_pem))?;
            tls.renew = Some((config.tls_dir.clone(), names));
            return Ok(Some(tls));
        }
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls::new(cert, key, config.tls_reload_interval(), None)?)),
            _ => Ok(None),
        }
    }

    pub fn new(cert: &Path, key: &Path, interval: Duration, ca_pem: Option<Vec<u8>>) -> Result<ServerTls, TlsError> {
        let stamps = (Stamp::of(cert), Stamp::of(key));
        let (certified, info) = load_certified_key(cert, key)?;
        let resolver = Arc::new(ReloadingCert { current: RwLock::new(Arc::new(certified)) });
        let mut rustls = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // axum serves HTTP/1.1 only (WebSocket upgrades need it anyway).
        rustls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            cert: resolver,
            info: std::sync::Mutex::new(info),
            rustls: Arc::new(rustls),
            interval,
            ca_pem,
            stamps: std::sync::Mutex::new(stamps),
            renew: None,
        })
    }

    /// The certificate new handshakes get.
    pub fn info(&self) -> CertInfo {
        lock_ignoring_poison(&self.info).clone()
    }

    /// The local CA (PEM) when the certificate is roomcam's own.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// SHA-256 of the local CA (`AA:BB:…`) when the certificate is roomcam's own.
    pub fn ca_fingerprint(&self) -> Option<String> {
        let der = CertificateDer::from_pem_slice(self.ca_pem.as_deref()?).ok()?;
        Some(fingerprint(&der))
    }

    pub fn describe(&self) -> String {
        let info = self.info();
        format!(
            "{} (serial {}, SHA-256 {}, expires {})",
            self.cert_path.display(),
            info.serial,
            info.sha256,
            info.expires()
        )
    }

    /// Loads the files again; on success new handshakes use them. On
    /// failure the certificate in use stays and the error says why.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        *lock_ignoring_poison(&self.stamps) = (Stamp::of(&self.cert_path), Stamp::of(&self.key_path));
        let (certified, info) = load_certified_key(&self.cert_path, &self.key_path)?;
        match self.cert.current.write() {
            Ok(mut current) => *current = Arc::new(certified),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(certified),
        }
        *lock_ignoring_poison(&self.info) = info.clone();
        Ok(info)
    }

    fn files_changed(&self) -> bool {
        *lock_ignoring_poison(&self.stamps) != (Stamp::of(&self.cert_path), Stamp::of(&self.key_path))
    }

    fn reload_and_log(&self, why: &str) {
        let old = self.info();
        match self.reload() {
            Ok(info) if info == old => info!("server: TLS certificate {why}: unchanged (serial {})", info.serial),
            Ok(_) => info!("server: TLS certificate {why}: now {}", self.describe()),
            Err(e) => warn!("server: TLS certificate {why}, but kept the old one (serial {}): {e}", old.serial),
        }
    }

    /// Polls the files every `interval` and reloads on SIGHUP, until dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                warn!("server: no SIGHUP handler ({e}); certificate files are still polled");
                None
            }
        };
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew_ticks = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_CHECK, RENEW_CHECK);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticks.tick() => {
                    if self.files_changed() {
                        self.reload_and_log("files changed");
                    }
                }
                _ = hup => self.reload_and_log("SIGHUP"),
                _ = renew_ticks.tick(), if self.renew.is_some() => {
                    if let Some((dir, names)) = self.renew.clone() {
                        // Makes new files only when due; the poller loads them.
                        let renewed = tokio::task::spawn_blocking(move || self_signed::ensure(&dir, &names)).await;
                        if let Ok(Err(e)) = renewed {
                            warn!("server: could not renew the self-signed certificate: {e}");
                        }
                    }
                }
            }
        }
    }

    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.rustls.clone()
    }
}

/// A listener that hands axum finished TLS connections. Handshakes run in
/// tasks of their own, so a slow or silent client holds up no one else.
pub struct TlsListener {
    incoming: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, incoming) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait, as axum's own listener does.
                        debug!("server: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // TLS sends an answer as several records (several segments):
                // with Nagle's algorithm the later ones would wait for the
                // peer's delayed ACK, 40 ms each on Linux.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, stream, peer, local)).await {
                        Ok(Some(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(None) => {}
                        Err(_) => debug!("server: {peer}: no TLS handshake within {HANDSHAKE_TIMEOUT:?}; closed"),
                    }
                });
            }
        });
        Ok(TlsListener { incoming, local, acceptor })
    }
}

/// The TLS handshake; a client speaking plain HTTP to this port gets a
/// plain-text 400 that says to use https, rather than a dead connection.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    // 0x16: a TLS handshake record. Anything else is not TLS.
    if first[0] != 0x16 {
        debug!("server: {peer}: plain HTTP on the HTTPS port; told to use https");
        let body = format!("This port speaks HTTPS only: use https://HOST:{}/\n", local.port());
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        return None;
    }
    match acceptor.accept(stream).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            debug!("server: {peer}: TLS handshake failed: {e}");
            None
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // The acceptor task is gone (aborted): nothing will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
