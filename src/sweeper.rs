//! Retention after retrieval (RFC 2449 EXPIRE): deletes messages whose account policy says they
//! have been kept long enough since their first retrieval.
//!
//! Every frontend runs the loop, but each round first takes a pool-wide lease, so one frontend
//! sweeps per interval. Each mailbox is swept only while its maildrop lock is held, so a sweep
//! never races a POP3 session: a mailbox in use is skipped until the next round.

use crate::backends::Backends;
use crate::names::AccountName;
use crate::store::MarkerKey;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// The lease that makes one frontend of the pool the sweeper for a round.
pub const SWEEPER_LEASE: &str = "cloudpop-internal-sweeper";

/// The marker that records when a message was first retrieved (seconds since the epoch).
pub fn seen_marker(id: &str) -> Option<MarkerKey> {
    MarkerKey::parse(&format!("seen.{id}"))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Sweeps every `interval` until `shutdown`.
pub async fn run(backends: Backends, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        match sweep_once(&backends, interval).instrument(info_span!("sweep")).await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "retention sweep done"),
            Err(e) => warn!(error = %e, "retention sweep failed; trying again next round"),
        }
    }
}

/// One round; returns how many messages it removed (0 when another frontend has the round).
pub async fn sweep_once(backends: &Backends, round: Duration) -> Result<usize, String> {
    let me = AccountName::parse(SWEEPER_LEASE).expect("valid name");
    // The round's lease is left to expire rather than released, so the pool sweeps once per
    // interval however many frontends it has.
    let Some(_round) = backends.locks.acquire(&me, round).await.map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let mut removed = 0;
    for name in backends.accounts.list().await.map_err(|e| e.to_string())? {
        let Some(days) = backends.accounts.get(&name).await.map_err(|e| e.to_string())?.and_then(|a| a.expire_days)
        else {
            continue;
        };
        let Some(lease) = backends.locks.acquire(&name, Duration::from_secs(120)).await.map_err(|e| e.to_string())?
        else {
            continue;
        };
        let result = sweep_mailbox(backends, &name, u64::from(days) * 86_400).await;
        let _ = backends.locks.release(&name, &lease).await;
        removed += result?;
    }
    Ok(removed)
}

async fn sweep_mailbox(backends: &Backends, name: &AccountName, keep_secs: u64) -> Result<usize, String> {
    let now = now_secs();
    let mut doomed = Vec::new();
    for message in backends.messages.list(name).await.map_err(|e| e.to_string())? {
        let Some(key) = seen_marker(&message.id) else { continue };
        let seen = backends.messages.get_marker(name, &key).await.map_err(|e| e.to_string())?;
        if seen.and_then(|s| s.trim().parse::<u64>().ok()).is_some_and(|at| now >= at.saturating_add(keep_secs)) {
            doomed.push(message.id);
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    let report = backends.messages.remove(name, &doomed).await.map_err(|e| e.to_string())?;
    info!(account = %name, removed = report.removed, "expired messages removed");
    Ok(report.removed)
}

/// Records the first retrieval of messages (called when a session of an account with a
/// retention policy ends); earlier records are kept.
pub async fn mark_seen(backends: &Backends, name: &AccountName, ids: &[String]) {
    let now = now_secs().to_string();
    for id in ids {
        let Some(key) = seen_marker(id) else { continue };
        match backends.messages.get_marker(name, &key).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(e) = backends.messages.put_marker(name, &key, &now).await {
                    warn!(error = %e, "cannot record a retrieval; the message is kept longer");
                }
            }
            Err(e) => warn!(error = %e, "cannot read a retrieval record"),
        }
    }
}
