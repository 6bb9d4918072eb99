//! Reloading certificates and API token files without a restart.
//!
//! Kubernetes updates a mounted Secret by swapping a symlink, and certificate managers renew
//! files in place, so every reloadable thing is asked to check its files every
//! `reload_interval_secs` (and at once on SIGHUP). Each one compares the files with what it
//! loaded last, keeps the old material when a new file does not load, and logs and counts the
//! outcome (`cloudpop_reloads_total`). New connections and calls use new material; open ones
//! keep theirs.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One thing whose files may change: checks them and loads what changed (blocking IO).
pub type Reloadable = Box<dyn Fn() + Send + Sync>;

/// Checks every `reloadable` every `interval` and on SIGHUP, until `stop`.
pub async fn watch(interval: Duration, reloadables: Vec<Reloadable>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            warn!(error = %e, "cannot watch SIGHUP; files are still checked periodically");
            None
        }
    };
    let reloadables = std::sync::Arc::new(reloadables);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                info!("SIGHUP: checking certificate and token files");
            }
            () = stop.cancelled() => return,
        }
        // File reads and key parsing are small, but they are blocking IO.
        let reloadables = reloadables.clone();
        let _ = tokio::task::spawn_blocking(move || reloadables.iter().for_each(|reload| reload())).await;
    }
}
