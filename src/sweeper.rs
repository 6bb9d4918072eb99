//! Retention after retrieval (RFC 2449 EXPIRE): deletes messages whose account policy says they
//! have been kept long enough since their first retrieval.
//!
//! Every frontend runs the loop, but each round first takes a pool-wide lease, so one frontend
//! sweeps per interval. Each mailbox is swept only while its maildrop lock is held, so a sweep
//! never races a POP3 session: a mailbox in use is skipped until the next round.

use crate::backends::Backends;
use crate::names::AccountName;
use crate::store::MarkerKey;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// The lease that makes one frontend of the pool the sweeper for a round.
pub const SWEEPER_LEASE: &str = "cloudpop-internal-sweeper";

/// The marker that records when each retrieved message of a maildrop was first retrieved: one
/// line `id seconds-since-the-epoch` per message. One object per maildrop, so recording a
/// session's retrievals and sweeping a mailbox each cost one read and one write, whatever the
/// number of messages.
fn ledger_key() -> MarkerKey {
    MarkerKey::parse("retention").expect("valid marker name")
}

/// First retrievals by message id.
type Ledger = BTreeMap<String, u64>;

fn parse_ledger(text: &str) -> Ledger {
    text.lines()
        .filter_map(|line| {
            let (id, at) = line.split_once(' ')?;
            Some((id.to_owned(), at.trim().parse().ok()?))
        })
        .collect()
}

fn format_ledger(ledger: &Ledger) -> String {
    ledger.iter().map(|(id, at)| format!("{id} {at}\n")).collect()
}

async fn read_ledger(backends: &Backends, name: &AccountName) -> Result<Ledger, String> {
    let text = backends.messages.get_marker(name, &ledger_key()).await.map_err(|e| e.to_string())?;
    Ok(text.as_deref().map(parse_ledger).unwrap_or_default())
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
    let ledger = read_ledger(backends, name).await?;
    if ledger.is_empty() {
        return Ok(0);
    }
    let present: HashSet<String> =
        backends.messages.list(name).await.map_err(|e| e.to_string())?.into_iter().map(|m| m.id).collect();
    // Entries of messages deleted by POP3 since are forgotten.
    let mut kept: Ledger =
        ledger.iter().filter(|(id, _)| present.contains(*id)).map(|(k, v)| (k.clone(), *v)).collect();
    let doomed: Vec<String> =
        kept.iter().filter(|(_, at)| now >= at.saturating_add(keep_secs)).map(|(id, _)| id.clone()).collect();
    let mut removed = 0;
    if !doomed.is_empty() {
        let report = backends.messages.remove(name, &doomed).await.map_err(|e| e.to_string())?;
        let failed: HashSet<&String> = report.failed.iter().map(|(id, _)| id).collect();
        kept.retain(|id, _| !doomed.contains(id) || failed.contains(id));
        removed = report.removed;
        info!(account = %name, removed, "expired messages removed");
    }
    if kept != ledger {
        let text = format_ledger(&kept);
        backends.messages.put_marker(name, &ledger_key(), &text).await.map_err(|e| e.to_string())?;
    }
    Ok(removed)
}

/// Records the first retrieval of messages (called when a session of an account with a
/// retention policy ends, still under its maildrop lock): one read and at most one write of the
/// maildrop's ledger, whatever the number of messages. Earlier records are kept.
pub async fn mark_seen(backends: &Backends, name: &AccountName, ids: &BTreeSet<String>) {
    let mut ledger = match read_ledger(backends, name).await {
        Ok(ledger) => ledger,
        Err(e) => {
            warn!(error = %e, "cannot read the retention ledger; these retrievals are not recorded");
            return;
        }
    };
    let now = now_secs();
    let before = ledger.len();
    for id in ids {
        ledger.entry(id.clone()).or_insert(now);
    }
    if ledger.len() != before
        && let Err(e) = backends.messages.put_marker(name, &ledger_key(), &format_ledger(&ledger)).await
    {
        warn!(error = %e, "cannot record retrievals; the messages are kept longer");
    }
}
