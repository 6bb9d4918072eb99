//! TLS for both POP3 roles: implicit TLS (995) and STLS (110). TLS 1.2 and 1.3 only.
//!
//! Certificates come from PEM files; without them a self-signed ECDSA P-256 certificate for
//! localhost is generated once into the data directory, so the embedded default works out of
//! the box (and its handshakes cost a fraction of an RSA key's).

pub mod handshake;
pub mod reloading;

pub use reloading::CertStore;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// TLS 1.2 sessions remembered for resumption by session id (a few hundred bytes each).
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("cannot write the self-signed certificate to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads a certificate chain and its private key from PEM files, ready to serve.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem { path, message: e.to_string() }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert.into(), message: "no certificate found".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // Checks that the key can sign and matches the certificate, so a mismatched pair is
    // refused here instead of failing every handshake.
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

/// A client configuration for the services cloudpop calls out to (a directory, an identity
/// provider's JWKS, a server being migrated from): TLS 1.2 and 1.3, trusting the PEM
/// certificates in `ca_file` or else the system's roots, presenting `client_cert` (chain and
/// key) when given.
pub fn client_config(ca_file: Option<&Path>, client_cert: Option<(&Path, &Path)>) -> Result<ClientConfig, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem { path, message: e.to_string() }
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(pem_err(path))? {
                roots.add(cert.map_err(pem_err(path))?)?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem { path: path.into(), message: "no certificate found".into() });
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    Ok(match client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem_err(cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_err(cert))?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// A server configuration for both POP3 roles that asks `resolver` for the certificate at
/// every handshake (so a replaced certificate is used without a restart).
pub fn acceptor(resolver: Arc<dyn ResolvesServerCert>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // No ALPN list: a server that sets one rejects clients offering other protocols, and POP3
    // clients in the field offer none or odd ones.
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // Resumption, so a client that reconnects every minute skips the full handshake: stateless
    // tickets (TLS 1.3, and RFC 5077 for TLS 1.2) under keys that rotate every few hours, and a
    // bounded cache of TLS 1.2 session ids for clients without tickets. Both are per process: a
    // client sent to another frontend of the pool does one full handshake there.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The gRPC API's TLS: the same reloading certificate as POP3, HTTP/2 by ALPN, and client
/// certificates from `client_ca` required when given (mutual TLS).
pub fn api_acceptor(resolver: Arc<dyn ResolvesServerCert>, client_ca: Option<&Path>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match client_ca {
        None => builder.with_no_client_auth().with_cert_resolver(resolver),
        Some(ca) => {
            let pem_err = |e: rustls::pki_types::pem::Error| TlsError::Pem { path: ca.into(), message: e.to_string() };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(pem_err)? {
                roots.add(cert.map_err(pem_err)?)?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem { path: ca.into(), message: "no CA certificate found".into() });
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Pem { path: ca.into(), message: e.to_string() })?;
            builder.with_client_cert_verifier(verifier).with_cert_resolver(resolver)
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The self-signed certificate and key paths under `data_dir`, generating them on first use.
pub fn self_signed_paths(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("selfsigned-cert.pem");
    let key = dir.join("selfsigned-key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generate = || -> Result<_, rcgen::Error> {
        let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = rcgen::CertificateParams::new(names)?.self_signed(&signing_key)?;
        Ok(rcgen::CertifiedKey { cert, signing_key })
    };
    let generated = generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, text: String, mode: u32| -> Result<(), TlsError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let err = |source| TlsError::Write { path: path.to_owned(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(err)?;
        let tmp = path.with_extension("tmp");
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(err)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    };
    write(&key, generated.signing_key.serialize_pem(), 0o600)?;
    write(&cert, generated.cert.pem(), 0o644)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_paths(dir.path()).unwrap();
        let first = std::fs::read(&cert).unwrap();
        assert_eq!(self_signed_paths(dir.path()).unwrap(), (cert.clone(), key.clone()));
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        certified_key(&cert, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
