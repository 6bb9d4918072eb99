//! Retention after retrieval (RFC 2449 EXPIRE): deletes messages whose account policy says they
//! have been kept long enough since their first retrieval.
//!
//! Every frontend runs the loop, but each round first takes a pool-wide lease, held (renewed)
//! for as long as the round runs and then left to expire, so one frontend sweeps per interval
//! and rounds never overlap. A round lists the maildrops that have a retention ledger (one
//! listing per thousand maildrops), never every account; for each it reads the account's
//! policy and the ledger, and only a mailbox with something due is locked and swept, under its
//! maildrop lock like a POP3 session (renewed, deletions fenced batch by batch), so a sweep
//! never races a session: a mailbox in use waits for the next round. One failing mailbox is
//! logged and counted; the round goes on.

use crate::accounts::AccountError;
use crate::backends::Backends;
use crate::coord::CoordError;
use crate::coord::lock::held::{HeldLease, RemoveStopped, removed_ids};
use crate::names::AccountName;
use crate::store::{StoreError, Upkeep};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Why a round or one mailbox of it could not be swept; the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Locks(#[from] CoordError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("the round's lease was lost; another frontend may sweep now")]
    RoundLost,
    #[error("the maildrop lock was lost after {0} removals")]
    Fenced(usize),
}

/// The lease that makes one frontend of the pool the sweeper for a round.
pub const SWEEPER_LEASE: &str = "cloudpop-internal-sweeper";

/// First retrievals by message id: the maildrop's ledger, one line `id seconds-since-the-epoch`
/// per message. One object per maildrop, so recording a session's retrievals and sweeping a
/// mailbox each cost one read and one write, whatever the number of messages.
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

async fn read_ledger(backends: &Backends, name: &AccountName) -> Result<Ledger, StoreError> {
    let text = backends.messages.get_ledger(name).await?;
    Ok(text.as_deref().map(parse_ledger).unwrap_or_default())
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Maildrops with a ledger that the round looked at.
    pub mailboxes: usize,
    pub removed: usize,
    /// Maildrops that failed (logged); the next round tries them again.
    pub failed: usize,
}

/// Sweeps every `interval` until `shutdown`; mailboxes are held with leases of `lease`.
pub async fn run(backends: Backends, interval: Duration, lease: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let outcome = sweep_once(&backends, interval, lease).instrument(info_span!("sweep")).await;
        if let Ok(Some(_)) = outcome {
            crate::metrics::metrics().sweep_rounds.inc();
        }
        match outcome {
            Ok(Some(sweep)) if sweep.removed > 0 || sweep.failed > 0 => {
                info!(
                    mailboxes = sweep.mailboxes,
                    removed = sweep.removed,
                    failed = sweep.failed,
                    "retention sweep done"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retention sweep failed; trying again next round"),
        }
    }
}

/// One round; `None` when another frontend has it.
pub async fn sweep_once(backends: &Backends, round: Duration, lease: Duration) -> Result<Option<Sweep>, SweepError> {
    let me = AccountName::parse(SWEEPER_LEASE).expect("valid name");
    let Some(round_lease) = HeldLease::take(backends.locks.clone(), &me, round).await? else {
        return Ok(None);
    };
    let result = sweep_all(backends, &round_lease, lease).await;
    // Left to expire rather than released, so the pool sweeps once per interval however many
    // frontends it has; renewed while the round ran, so a long round is never run twice.
    round_lease.keep_until_expiry();
    result.map(Some)
}

async fn sweep_all(backends: &Backends, round: &HeldLease, lease: Duration) -> Result<Sweep, SweepError> {
    let names = backends.messages.ledgers().await?;
    let mut sweep = Sweep { mailboxes: names.len(), ..Sweep::default() };
    for name in names {
        if round.is_lost() {
            return Err(SweepError::RoundLost);
        }
        match sweep_mailbox(backends, &name, lease).await {
            Ok(removed) => sweep.removed += removed,
            Err(e) => {
                sweep.failed += 1;
                warn!(account = %name, error = %e, "cannot sweep this mailbox; trying again next round");
            }
        }
    }
    Ok(sweep)
}

async fn sweep_mailbox(backends: &Backends, name: &AccountName, lease: Duration) -> Result<usize, SweepError> {
    let now = crate::clock::unix_secs();
    // Decided without the lock: most mailboxes have nothing due.
    let account = backends.accounts.get(name).await?;
    let keep_secs = account.and_then(|a| a.expire_days).map(|days| u64::from(days) * 86_400);
    let ledger = read_ledger(backends, name).await?;
    if let Some(keep) = keep_secs
        && !ledger.values().any(|at| now >= at.saturating_add(keep))
    {
        return Ok(0);
    }
    let Some(held) = HeldLease::take(backends.locks.clone(), name, lease).await? else {
        return Ok(0);
    };
    let result = sweep_locked(backends, &held, keep_secs, now).await;
    held.release().await;
    result
}

/// Removes what is due from a locked mailbox and rewrites its ledger (removing it when empty).
async fn sweep_locked(backends: &Backends, held: &HeldLease, keep: Option<u64>, now: u64) -> Result<usize, SweepError> {
    let name = held.maildrop();
    let Some(keep) = keep else {
        // The account is gone or keeps its mail now: its ledger has no use any more.
        return Ok(backends.messages.put_ledger(name, "").await.map(|()| 0)?);
    };
    let mut ledger = read_ledger(backends, name).await?;
    let doomed: Vec<String> =
        ledger.iter().filter(|(_, at)| now >= at.saturating_add(keep)).map(|(id, _)| id.clone()).collect();
    // No view of the maildrop here: index upkeep runs before any removal, to be safe.
    let (report, stopped) = held.remove(backends.messages.as_ref(), &doomed, Upkeep::BeforeRemoval).await;
    // The ledger knows no sizes: the next delivery that needs the usage counts again.
    if report.removed > 0
        && let Err(e) = backends.usage.forget(name).await
    {
        tracing::warn!(error = %e, "cannot drop the mailbox's usage counter after expiring messages");
    }
    if let Some(RemoveStopped::Fenced) = stopped {
        // Another holder may be changing the ledger now: what was removed is forgotten by the
        // next round (removing a message that is gone already counts as done).
        return Err(SweepError::Fenced(report.removed));
    }
    for id in removed_ids(&doomed, &report) {
        ledger.remove(id);
    }
    backends.messages.put_ledger(name, &format_ledger(&ledger)).await?;
    if report.removed > 0 {
        info!(account = %name, removed = report.removed, "expired messages removed");
    }
    match stopped {
        Some(RemoveStopped::Store(e)) => Err(e.into()),
        Some(RemoveStopped::Fenced) | None => Ok(report.removed),
    }
}

/// Records a session's retrievals and deletions in the maildrop's ledger, when the session of
/// an account with a retention policy ends, still under its maildrop lock: one read and at most
/// one write, whatever the number of messages. Earlier first retrievals are kept; entries of
/// messages the session deleted go.
pub async fn record_session(backends: &Backends, name: &AccountName, retrieved: &BTreeSet<String>, deleted: &[String]) {
    let mut ledger = match read_ledger(backends, name).await {
        Ok(ledger) => ledger,
        Err(e) => {
            warn!(error = %e, "cannot read the retention ledger; these retrievals are not recorded");
            return;
        }
    };
    let before = ledger.clone();
    let now = crate::clock::unix_secs();
    for id in retrieved {
        ledger.entry(id.clone()).or_insert(now);
    }
    for id in deleted {
        ledger.remove(id);
    }
    if ledger != before
        && let Err(e) = backends.messages.put_ledger(name, &format_ledger(&ledger)).await
    {
        warn!(error = %e, "cannot record retrievals; the messages are kept longer");
    }
}
