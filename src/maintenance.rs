//! Operator actions on maildrops (the Admin API and `cloudpop account del`): deleting messages,
//! purging a mailbox, deleting an account. Each runs under the maildrop's lock, held like a
//! POP3 session holds it (renewed, deletions confirmed batch by batch), so it never races a
//! session: a maildrop in use is refused with [`AccountError::InUse`], never changed under it.

use crate::accounts::AccountError;
use crate::backends::Backends;
use crate::coord::lock::held::{HeldLease, RemoveStopped, removed_ids};
use crate::names::AccountName;
use crate::store::RemoveReport;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// Which messages to delete.
pub enum Which {
    /// These ids; ids not in the maildrop are ignored.
    Ids(Vec<String>),
    All,
}

/// Takes the maildrop's lock, or says it is in use.
async fn hold(backends: &Backends, name: &AccountName, lease: Duration) -> Result<HeldLease, AccountError> {
    HeldLease::take(backends.locks.clone(), name, lease).await?.ok_or_else(|| AccountError::InUse(name.clone()))
}

/// An account that exists and is not being deleted.
async fn existing(backends: &Backends, raw: &str) -> Result<AccountName, AccountError> {
    let name = AccountName::parse(raw)?;
    match backends.accounts.get(&name).await? {
        Some(record) if !record.deleting => Ok(name),
        _ => Err(AccountError::NotFound(name)),
    }
}

/// Deletes messages of an account's maildrop; the report counts what went and names what
/// could not.
pub async fn delete_messages(
    backends: &Backends,
    raw: &str,
    which: Which,
    lease: Duration,
) -> Result<RemoveReport, AccountError> {
    let name = existing(backends, raw).await?;
    let held = hold(backends, &name, lease).await?;
    let result = delete_held(backends, &held, which).await;
    held.release().await;
    result
}

async fn delete_held(backends: &Backends, held: &HeldLease, which: Which) -> Result<RemoveReport, AccountError> {
    let name = held.maildrop();
    let view = backends.messages.view(name).await?;
    held.saw(view.index);
    let ids: Vec<String> = match &which {
        Which::All => view.messages.iter().map(|m| m.id.clone()).collect(),
        Which::Ids(wanted) => {
            let present: HashSet<&str> = view.messages.iter().map(|m| m.id.as_str()).collect();
            wanted.iter().filter(|id| present.contains(id.as_str())).cloned().collect()
        }
    };
    let sizes: HashMap<String, u64> = view.messages.into_iter().map(|m| (m.id, m.size)).collect();
    let (report, stopped) = held.remove(backends.messages.as_ref(), &ids, view.upkeep).await;
    let gone: Vec<String> = removed_ids(&ids, &report).cloned().collect();
    let octets: u64 = gone.iter().filter_map(|id| sizes.get(id)).sum();
    if let Err(e) = backends.usage.add(name, -(gone.len() as i64), -(octets as i64)).await {
        tracing::warn!(error = %e, "cannot take removed messages off the mailbox's usage");
    }
    match stopped {
        None => {
            crate::sweeper::record_session(backends, name, &BTreeSet::new(), &gone).await;
            Ok(report)
        }
        Some(RemoveStopped::Fenced) => Err(AccountError::Interrupted(format!(
            "the maildrop lock was lost after {} of {} messages were deleted; the rest are kept",
            report.removed,
            ids.len()
        ))),
        Some(RemoveStopped::Store(e)) => Err(e.into()),
    }
}

/// Deletes an account and everything of its maildrop: messages, markers (idempotency records,
/// kept UIDLs) and retention ledger. The record is first marked as being deleted, so from then
/// on logins and deliveries treat the account as gone; it is removed last. If anything fails
/// part-way, the account stays marked (and cannot be re-created) until a retry finishes.
pub async fn delete_account(backends: &Backends, raw: &str, lease: Duration) -> Result<(), AccountError> {
    let name = AccountName::parse(raw)?;
    let held = hold(backends, &name, lease).await?;
    let result = delete_held_account(backends, &held).await;
    held.release().await;
    result
}

async fn delete_held_account(backends: &Backends, held: &HeldLease) -> Result<(), AccountError> {
    let name = held.maildrop();
    backends.accounts.update(name.as_str(), |record| record.deleting = true).await?;
    if !held.confirm().await {
        return Err(AccountError::Interrupted(format!("the maildrop lock of {name} was lost; delete it again")));
    }
    backends.messages.remove_maildrop(name).await?;
    // A re-created account starts empty.
    if let Err(e) = backends.usage.forget(name).await {
        tracing::warn!(error = %e, "cannot drop the deleted mailbox's usage counter");
    }
    backends.accounts.remove_record(name).await?;
    Ok(())
}
