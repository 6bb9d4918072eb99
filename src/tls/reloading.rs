//! The serving certificate, swapped atomically when its files change.
//!
//! Kubernetes updates a mounted Secret by swapping a symlink, and certificate managers renew
//! files in place: [`CertStore::reload`] reads both files again, and only a pair that loads
//! replaces what new handshakes get; open connections keep theirs.

use super::TlsError;
use crate::metrics::count_reload;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// The certificate in use, swapped atomically when its files change.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The POP3 certificate and key, from their files.
#[derive(Clone)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    /// The file contents last loaded (or tried), to notice changes cheaply.
    seen: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
}

impl CertStore {
    /// Loads a certificate chain and its key from PEM files.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let seen = (read(&cert), read(&key));
        let current = Arc::new(Current(ArcSwap::new(super::certified_key(&cert, &key)?)));
        let acceptor = super::acceptor(current.clone())?;
        Ok(Self { cert, key, current, acceptor, seen: Arc::new(Mutex::new(seen)) })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The certificate source, for other TLS listeners that should follow the same files.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.current.clone()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.cert.clone()
    }

    pub fn key_path(&self) -> PathBuf {
        self.key.clone()
    }

    /// Loads the files again if they changed; `true` when new material is now served.
    pub fn reload(&self) -> bool {
        let now = (read(&self.cert), read(&self.key));
        {
            let mut seen = crate::sync::lock(&self.seen);
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match super::certified_key(&self.cert, &self.key) {
            Ok(key) => {
                self.current.0.store(key);
                count_reload("tls", "ok");
                info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                count_reload("tls", "failed");
                warn!(error = %e, "new TLS certificate or key does not load; still serving the previous one");
                false
            }
        }
    }
}

/// A file's bytes; empty when unreadable (which then differs from any good content).
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_certificate_keeps_the_old_one_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = super::super::self_signed_paths(dir.path()).unwrap();
        let store = CertStore::load(cert.clone(), key.clone()).unwrap();
        let first = store.current.0.load_full();
        assert!(!store.reload(), "nothing changed");

        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(!store.reload(), "a broken file was taken");
        assert!(Arc::ptr_eq(&first, &store.current.0.load_full()));

        let other = tempfile::tempdir().unwrap();
        let (new_cert, new_key) = super::super::self_signed_paths(other.path()).unwrap();
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        assert!(store.reload());
        assert_ne!(first.cert, store.current.0.load_full().cert);
    }
}
