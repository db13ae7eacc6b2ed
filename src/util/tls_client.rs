//! The rustls client configuration roomcam's outgoing TLS shares (wss://
//! signaling, mqtts:// alerts): the system's roots (or `SSL_CERT_FILE`),
//! plus a CA of the user's own where the server has one (a LAN broker or
//! server with a self-made certificate).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The system's roots plus every certificate in `extra_ca` (PEM). Errors
/// name the file and what is wrong with it.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(extra_ca) = extra_ca {
        let pem = std::fs::read(extra_ca).map_err(|e| format!("cannot read {}: {e}", extra_ca.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", extra_ca.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", extra_ca.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{}: no PEM certificate found", extra_ca.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_extra_ca_is_named() {
        let dir = std::env::temp_dir().join(format!("roomcam-tls-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = client_config(Some(&junk)).unwrap_err();
        assert!(e.contains("junk.pem") && e.contains("no PEM certificate"), "{e}");
        let e = client_config(Some(&dir.join("absent.pem"))).unwrap_err();
        assert!(e.contains("cannot read") && e.contains("absent.pem"), "{e}");
        assert!(client_config(None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
