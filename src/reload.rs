//! Reloading certificates and API token files without a restart.
//!
//! Kubernetes updates a mounted Secret by swapping a symlink, and certificate managers renew
//! files in place, so the files are read again every `reload_interval_secs` (and at once on
//! SIGHUP) and compared with what is in use. New connections and calls use new material; open
//! ones keep theirs. A new file that does not load keeps the old material, and is logged and
//! counted (`cloudpop_reloads_total{outcome="failed"}`).

use crate::api::auth::Tokens;
use crate::config::Config;
use crate::ops::metrics::{ReloadLabels, metrics};
use crate::tls::{self, TlsError};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
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
    /// Loads the configured certificate, or the generated self-signed one.
    pub fn load(config: &Config) -> Result<Self, TlsError> {
        let (cert, key) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => tls::self_signed_paths(&config.data_dir)?,
        };
        let seen = (read(&cert), read(&key));
        let current = Arc::new(Current(ArcSwap::new(tls::certified_key(&cert, &key)?)));
        let acceptor = tls::acceptor(current.clone())?;
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
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match tls::certified_key(&self.cert, &self.key) {
            Ok(key) => {
                self.current.0.store(key);
                counted("tls", "ok");
                info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                counted("tls", "failed");
                warn!(error = %e, "new TLS certificate or key does not load; still serving the previous one");
                false
            }
        }
    }
}

/// The API tokens in use; the files given for them are read again when they change.
#[derive(Clone)]
pub struct TokenStore {
    config: Arc<Config>,
    current: Arc<ArcSwap<Tokens>>,
    seen: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

impl TokenStore {
    pub fn load(config: &Config) -> Result<Self, crate::api::ApiError> {
        let tokens = crate::api::tokens(config)?;
        let config = Arc::new(config.clone());
        let seen = token_files(&config).iter().map(|f| f.as_deref().and_then(read_opt)).collect();
        Ok(Self { config, current: Arc::new(ArcSwap::from_pointee(tokens)), seen: Arc::new(Mutex::new(seen)) })
    }

    /// The tokens to check a call against now.
    pub fn current(&self) -> Arc<Tokens> {
        self.current.load_full()
    }

    /// Reads the token files again if they changed.
    pub fn reload(&self) -> bool {
        let now: Vec<Option<Vec<u8>>> =
            token_files(&self.config).iter().map(|f| f.as_deref().and_then(read_opt)).collect();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match crate::api::tokens(&self.config) {
            Ok(tokens) => {
                self.current.store(Arc::new(tokens));
                counted("api_tokens", "ok");
                info!("API tokens reloaded");
                true
            }
            Err(e) => {
                counted("api_tokens", "failed");
                warn!(error = %e, "API token file unreadable; still accepting the previous tokens");
                false
            }
        }
    }
}

fn token_files(config: &Config) -> [Option<PathBuf>; 2] {
    [config.api_admin_tokens_file.clone(), config.api_ingest_tokens_file.clone()]
}

fn counted(what: &'static str, outcome: &'static str) {
    metrics().reloads.get_or_create(&ReloadLabels { what, outcome }).inc();
}

/// A file's bytes; empty when unreadable (which then differs from any good content).
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn read_opt(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Checks for changed files every `reload_interval_secs` and on SIGHUP, until `stop`.
pub async fn watch(config: Arc<Config>, certs: CertStore, tokens: TokenStore, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            warn!(error = %e, "cannot watch SIGHUP; files are still checked periodically");
            None
        }
    };
    let interval = Duration::from_secs(config.reload_interval_secs);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                info!("SIGHUP: checking certificate and token files");
            }
            () = stop.cancelled() => return,
        }
        // File reads and key parsing are small, but they are blocking IO.
        let (certs, tokens) = (certs.clone(), tokens.clone());
        let _ = tokio::task::spawn_blocking(move || {
            certs.reload();
            tokens.reload();
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_certificate_keeps_the_old_one_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = tls::self_signed_paths(dir.path()).unwrap();
        let config = Config { tls_cert: Some(cert.clone()), tls_key: Some(key.clone()), ..Config::default() };
        let store = CertStore::load(&config).unwrap();
        let first = store.current.0.load_full();
        assert!(!store.reload(), "nothing changed");

        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(!store.reload(), "a broken file was taken");
        assert!(Arc::ptr_eq(&first, &store.current.0.load_full()));

        let other = tempfile::tempdir().unwrap();
        let (new_cert, new_key) = tls::self_signed_paths(other.path()).unwrap();
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        assert!(store.reload());
        assert_ne!(first.cert, store.current.0.load_full().cert);
    }
}
