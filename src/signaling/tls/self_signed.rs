//! `roomcam serve --self-signed`: a small local CA, made once, and a server
//! certificate signed by it, for a LAN where no public certificate can be had.
//!
//! A phone trusts the CA once (installed from `/roomcam-ca.crt`), then every
//! server certificate the CA signs later: renewing the server certificate
//! (30 days before it expires, or when the host's names or addresses are no
//! longer all in it) never asks the phone for anything again. The server
//! certificate lives 820 days, under the 825 Apple accepts; the CA ten years.
//!
//! Files in `tls-dir`: `ca.crt`, `ca.key`, `server.crt`, `server.key`; the
//! keys are readable by their owner only.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use log::info;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use super::{CertInfo, TlsError, fingerprint};

/// The server certificate's life (Apple: at most 825 days).
pub const SERVER_DAYS: i64 = 820;
/// The CA's life: a phone installs it once.
pub const CA_DAYS: i64 = 3650;
/// A certificate expiring sooner than this is made again at start.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// What `ensure` left in the directory.
#[derive(Debug)]
pub struct SelfSigned {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: Vec<u8>,
    /// SHA-256 of the CA certificate, `AA:BB:…`: what the phone shows before installing it.
    pub ca_fingerprint: String,
}

/// The host's names and addresses as a browser on the LAN may reach it:
/// the host name (and `NAME.local`, its mDNS name), `localhost`, the
/// addresses of its interfaces, the listen address when it is a specific
/// one, and `extra` (`tls-names`).
pub fn local_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: BTreeSet<String> =
        extra.iter().filter(|n| n.parse::<IpAddr>().is_err()).map(|n| n.to_ascii_lowercase()).collect();
    if let Some(host) = host_name() {
        if !host.contains('.') {
            names.insert(format!("{host}.local"));
        }
        names.insert(host);
    }
    names.insert("localhost".to_owned());
    let mut addresses: BTreeSet<IpAddr> = interface_addresses().into_iter().collect();
    addresses.extend(extra.iter().filter_map(|n| n.parse::<IpAddr>().ok()));
    addresses.insert(IpAddr::from([127, 0, 0, 1]));
    if !listen.ip().is_unspecified() {
        addresses.insert(listen.ip());
    }
    names.into_iter().chain(addresses.into_iter().map(|a| a.to_string())).collect()
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_ascii_lowercase();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')).then_some(name)
}

/// IPv4 and global IPv6 addresses of the interfaces that are up (link-local
/// IPv6 needs a zone no URL can carry).
fn interface_addresses() -> Vec<IpAddr> {
    let mut list = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return list;
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        let up = entry.ifa_flags & libc::IFF_UP as u32 != 0;
        if up && !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            match unsafe { (*entry.ifa_addr).sa_family } as i32 {
                libc::AF_INET => {
                    let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                    list.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                }
                libc::AF_INET6 => {
                    let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                    let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                        list.push(IpAddr::V6(ip));
                    }
                }
                _ => {}
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    list
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive, as RFC 5280 wants
    SerialNumber::from(bytes.to_vec())
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "roomcam");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// reader (the certificate poller) never sees half a file.
fn write_atomically(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|error| TlsError::Write { path: path.to_owned(), error })
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: Vec<u8>,
}

/// The CA in `dir`, made if missing, unreadable or expiring.
fn ensure_ca(dir: &Path, host: &str) -> Result<(Ca, bool), TlsError> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if let (Ok(pem), Ok(key_pem)) = (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
        let reused = (|| {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?.to_vec();
            let key = KeyPair::from_pem(&key_pem).ok()?;
            let info = CertInfo::of(&der).ok()?;
            if info.not_after - now().unix_timestamp() < RENEW_BEFORE_DAYS * 86_400 {
                return None;
            }
            // The issuer name of what it signs must be the CA's subject,
            // byte for byte: rebuild it from the certificate's own CN.
            let cn = common_name(&der)?;
            Some(Ca { issuer: Issuer::new(ca_params(&cn), key), pem: pem.clone(), der })
        })();
        if let Some(ca) = reused {
            return Ok((ca, false));
        }
        info!("server: the local CA in {} is unusable or expiring; making a new one", dir.display());
    }
    let key = KeyPair::generate().map_err(generate)?;
    let cn = format!("roomcam local CA ({host})");
    let mut params = ca_params(&cn);
    params.serial_number = Some(random_serial());
    params.not_before = now() - time::Duration::hours(1);
    params.not_after = params.not_before + time::Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(generate)?;
    write_atomically(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_atomically(&cert_path, cert.pem().as_bytes(), false)?;
    let ca = Ca { issuer: Issuer::new(ca_params(&cn), key), pem: cert.pem(), der: cert.der().to_vec() };
    Ok((ca, true))
}

fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    cert.subject().iter_common_name().next()?.as_str().ok().map(str::to_owned)
}

/// Makes (once) or reuses the CA and the server certificate for `names` in `dir`.
pub fn ensure(dir: &Path, names: &[String]) -> Result<SelfSigned, TlsError> {
    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write { path: dir.to_owned(), error })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    // The host's own name for the subjects (the names are sorted: localhost may come first).
    let host = names
        .iter()
        .find(|n| *n != "localhost" && !n.ends_with(".local") && n.parse::<IpAddr>().is_err())
        .or(names.first())
        .cloned()
        .unwrap_or_else(|| "localhost".to_owned());
    let (ca, new_ca) = ensure_ca(dir, &host)?;
    let ca_fingerprint = fingerprint(&ca.der);
    if new_ca {
        info!("server: made a local CA in {} (SHA-256 {ca_fingerprint})", dir.display());
    }
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    let current = std::fs::read(&cert_path).ok().and_then(|pem| {
        let der = CertificateDer::from_pem_slice(&pem).ok()?;
        CertInfo::of(&der).ok()
    });
    let why_new = match &current {
        _ if new_ca => Some("a new CA".to_owned()),
        None => Some("none yet".to_owned()),
        Some(_) if super::load_certified_key(&cert_path, &key_path).is_err() => Some("unreadable".to_owned()),
        Some(info) if info.not_after - now().unix_timestamp() < RENEW_BEFORE_DAYS * 86_400 => {
            Some(format!("it expires {}", info.expires()))
        }
        Some(info) => {
            let missing: Vec<&String> = names.iter().filter(|n| !info.names.contains(n)).collect();
            (!missing.is_empty()).then(|| format!("new names {missing:?}"))
        }
    };
    if let Some(why) = why_new {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "roomcam");
        dn.push(DnType::CommonName, host.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(generate)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now() - time::Duration::hours(1);
        params.not_after = params.not_before + time::Duration::days(SERVER_DAYS);
        let cert = params.signed_by(&key, &ca.issuer).map_err(generate)?;
        // The key first: the poller reloads once both files changed.
        write_atomically(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_atomically(&cert_path, cert.pem().as_bytes(), false)?;
        info!("server: made a server certificate ({why}) for {}", names.join(", "));
    }
    Ok(SelfSigned {
        ca_cert: dir.join("ca.crt"),
        cert: cert_path,
        key: key_path,
        ca_pem: ca.pem.into_bytes(),
        ca_fingerprint,
    })
}
