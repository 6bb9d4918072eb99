//! Storing one spooled message for one mailbox: the delivery's claims, the account and quota
//! checks, the markers written before and after, and the message itself.

use super::markers::{self, Verdict};
use super::{Options, Outcome, Spooled};
use crate::accounts::Accounts;
use crate::coord::lock::{LeaseToken, MaildropLocks};
use crate::coord::usage::{Usage, UsageCounters};
use crate::names::AccountName;
use crate::store::{AccountRecord, MarkerKey, MessageStore, StoreError, StoredMessage, ids};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long one attempt may hold its delivery's claims. A crashed attempt's claims block
/// retries (which get a temporary failure) for at most this long.
const CLAIM_TTL: Duration = Duration::from_secs(15 * 60);

/// The services a delivery touches.
pub(super) struct Parts<'a> {
    pub store: &'a dyn MessageStore,
    pub accounts: &'a Accounts,
    pub claims: &'a std::sync::Arc<dyn MaildropLocks>,
    pub usage: &'a dyn UsageCounters,
}

/// The claims one attempt holds on its idempotency key and kept UIDL, so that two attempts of
/// one delivery cannot both find no record and both store. Dropped without [`Claims::give_up`]
/// (the delivery was cancelled: a client deadline, a reset stream, a shutdown), they are given
/// back in the background, so the key is not blocked for [`CLAIM_TTL`].
struct Claims {
    claims: std::sync::Arc<dyn MaildropLocks>,
    name: AccountName,
    held: Vec<(String, LeaseToken)>,
}

impl Claims {
    async fn take(
        claims: &std::sync::Arc<dyn MaildropLocks>,
        name: &AccountName,
        scopes: &[&MarkerKey],
    ) -> Result<Claims, StoreError> {
        let mut taken = Claims { claims: claims.clone(), name: name.clone(), held: Vec::with_capacity(scopes.len()) };
        for scope in scopes {
            match claims.claim(name, scope.as_str(), CLAIM_TTL).await {
                Ok(Some(token)) => taken.held.push((scope.as_str().to_owned(), token)),
                Ok(None) => {
                    taken.give_up().await;
                    return Err(StoreError::Unavailable("another attempt of this delivery is in progress".into()));
                }
                Err(e) => {
                    taken.give_up().await;
                    return Err(StoreError::Unavailable(e.to_string()));
                }
            }
        }
        Ok(taken)
    }

    async fn give_up(mut self) {
        let held = std::mem::take(&mut self.held);
        release(self.claims.as_ref(), &self.name, held).await;
    }
}

async fn release(claims: &dyn MaildropLocks, name: &AccountName, held: Vec<(String, LeaseToken)>) {
    for (scope, token) in held {
        if let Err(e) = claims.unclaim(name, &scope, &token).await {
            tracing::warn!(error = %e, "cannot give up a delivery claim; it expires by itself");
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (claims, name) = (self.claims.clone(), self.name.clone());
            runtime.spawn(async move { release(claims.as_ref(), &name, held).await });
        }
    }
}

/// Stores a spooled message for one recipient, honouring quota, idempotency and kept UIDLs.
pub(super) async fn store_for(parts: &Parts<'_>, message: &Spooled, recipient: &str, options: &Options) -> Outcome {
    let name = match AccountName::parse(recipient) {
        Ok(name) => name,
        Err(e) => return Outcome::InvalidName(e),
    };
    let uidl_marker =
        options.uidl.as_deref().and_then(|uidl| MarkerKey::parse(&format!("uidl.{}", ids::uidl_hex(uidl))));
    let scopes: Vec<&MarkerKey> = options.idempotency_key.iter().chain(uidl_marker.iter()).collect();
    let claims = match Claims::take(parts.claims, &name, &scopes).await {
        Ok(claims) => claims,
        Err(e) => return Outcome::Failed(e),
    };
    let outcome = Attempt { parts, message, name: &name, options, uidl_marker: uidl_marker.as_ref() }
        .run()
        .await
        .unwrap_or_else(Outcome::Failed);
    claims.give_up().await;
    outcome
}

/// One attempt at storing, under its claims.
struct Attempt<'a> {
    parts: &'a Parts<'a>,
    message: &'a Spooled,
    name: &'a AccountName,
    options: &'a Options,
    uidl_marker: Option<&'a MarkerKey>,
}

impl Attempt<'_> {
    async fn run(&self) -> Result<Outcome, StoreError> {
        let (store, key) = (self.parts.store, self.options.idempotency_key.as_ref());
        let account = match self.parts.accounts.get_for_delivery(self.name).await? {
            Some(account) if account.creating => {
                return Err(StoreError::Unavailable(format!("the account {} is being created", self.name)));
            }
            Some(account) if !account.deleting => account,
            _ => return Ok(Outcome::UnknownMailbox),
        };
        if account.disabled {
            return Ok(Outcome::Disabled);
        }
        let (id, fresh) = match markers::read(store, self.name, key, self.uidl_marker).await? {
            Verdict::Duplicate(id) => return Ok(Outcome::Duplicate(id)),
            Verdict::Resume(id) => (id, false),
            Verdict::Fresh => (self.fresh_id(), true),
        };
        if let Some(why) = self.over_quota(&account).await? {
            return Ok(Outcome::OverQuota(why));
        }
        self.mark_pending(&id, fresh).await?;
        let stored = self.write(&id).await?;
        // The account may have been deleted (and even re-created) while the message was being
        // stored: a re-created account starts empty, so the message is taken back.
        match self.parts.accounts.get(self.name).await? {
            Some(now) if now.incarnation == account.incarnation && !now.deleting => {}
            _ => {
                store.remove(self.name, std::slice::from_ref(&stored.id)).await?;
                return Ok(Outcome::UnknownMailbox);
            }
        }
        self.mark_stored(&stored).await?;
        Ok(Outcome::Stored(stored))
    }

    /// A new id (at the original receipt time for imports), carrying a kept UIDL.
    fn fresh_id(&self) -> String {
        let id = self.options.received_ms.map_or_else(ids::new_message_id, ids::new_message_id_at);
        self.options.uidl.as_deref().map_or_else(|| id.clone(), |uidl| ids::with_uidl(&id, uidl))
    }

    /// Why the message does not fit the account's quota, if it does not.
    async fn over_quota(&self, account: &AccountRecord) -> Result<Option<&'static str>, StoreError> {
        if account.quota_bytes == 0 && account.quota_messages == 0 {
            return Ok(None);
        }
        let now = current_usage(self.parts.store, self.parts.usage, self.name).await?;
        let size = self.message.size + self.options.header.len() as u64;
        Ok(if account.quota_messages > 0 && now.messages >= account.quota_messages {
            Some("message count quota reached")
        } else if account.quota_bytes > 0 && now.octets + size > account.quota_bytes {
            Some("byte quota would be exceeded")
        } else {
            None
        })
    }

    /// Names `id` in the markers before anything is stored, so a retry finishes this attempt
    /// (an attempt that resumes an earlier one finds the key's record written already).
    async fn mark_pending(&self, id: &str, fresh: bool) -> Result<(), StoreError> {
        let pending = format!("{id} pending");
        if let Some(key) = &self.options.idempotency_key
            && fresh
        {
            self.parts.store.put_marker(self.name, key, &pending).await?;
        }
        if let Some(marker) = self.uidl_marker {
            self.parts.store.put_marker(self.name, marker, &pending).await?;
        }
        Ok(())
    }

    /// The message under `id`: trace context, the per-recipient header, then the spool.
    async fn write(&self, id: &str) -> Result<StoredMessage, StoreError> {
        let mut new = self.parts.store.create_with_id(self.name, id).await?;
        if let Some(traceparent) = &self.options.traceparent {
            new.set_trace_parent(traceparent);
        }
        if !self.options.header.is_empty() {
            new.write(&self.options.header).await?;
        }
        let mut file = self.message.open().await?;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut chunk).await?;
            if n == 0 {
                return new.commit().await;
            }
            new.write(&chunk[..n]).await?;
        }
    }

    /// Makes the markers final and counts the message in the mailbox's usage.
    async fn mark_stored(&self, stored: &StoredMessage) -> Result<(), StoreError> {
        if let Some(marker) = self.uidl_marker {
            self.parts.store.put_marker(self.name, marker, &stored.id).await?;
        }
        if let Some(key) = &self.options.idempotency_key {
            self.parts.store.put_marker(self.name, key, &markers::stored_record(&stored.id)).await?;
        }
        // Stored whatever the counter says; a counter that missed it is remade within a day.
        if let Err(e) = self.parts.usage.add(self.name, 1, stored.size as i64).await {
            tracing::warn!(error = %e, "cannot count a delivery in the mailbox's usage");
        }
        Ok(())
    }
}

/// What the mailbox holds: its counter, or a listing that starts one. Without a working
/// counter service the listing answers.
async fn current_usage(
    store: &dyn MessageStore,
    usage: &dyn UsageCounters,
    name: &AccountName,
) -> Result<Usage, StoreError> {
    match usage.get(name).await {
        Ok(Some(now)) => return Ok(now),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "mailbox usage unavailable; listing the mailbox"),
    }
    let now = Usage::of(&store.list(name).await?);
    if let Err(e) = usage.start(name, now).await {
        tracing::warn!(error = %e, "cannot start counting the mailbox's usage");
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::lock::memory::MemoryLocks;
    use std::sync::Arc;

    /// Issue 22 item 13: claims of a delivery that was cancelled half-way (its future dropped)
    /// are given back, not held for the claim's whole lifetime.
    #[tokio::test]
    async fn a_cancelled_delivery_gives_its_claims_back() {
        let locks: Arc<dyn MaildropLocks> = Arc::new(MemoryLocks::new());
        let name = AccountName::parse("claimed").unwrap();
        let key = MarkerKey::parse("mta-queue-id-7").unwrap();
        let held = Claims::take(&locks, &name, &[&key]).await.unwrap();
        assert!(Claims::take(&locks, &name, &[&key]).await.is_err(), "a claim was taken twice");
        drop(held);
        let mut again = None;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if let Ok(claims) = Claims::take(&locks, &name, &[&key]).await {
                again = Some(claims);
                break;
            }
        }
        assert!(again.is_some(), "a dropped attempt kept its claim");
    }
}
