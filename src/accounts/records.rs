//! Account records written conditionally: a creation in two writes (created `creating`, then
//! opened once an earlier account's leftovers are gone), updates that read again when someone
//! else changed the record meanwhile, and the first provisioning of a directory user.

use super::{AccountError, Accounts, EXTERNAL_HASH};
use crate::names::AccountName;
use crate::store::{AccountRecord, MessageStore, Precondition, StoreError, Version};

/// Times a record update is tried when others keep changing the record.
const UPDATE_ATTEMPTS: usize = 8;

/// How long a login or delivery waits for another frontend to finish creating a record.
const CREATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A record still `creating` after this was abandoned by a process that died.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl Accounts {
    /// Stores a new account record with `password_hash`, in two conditional writes: the record
    /// is created `creating` (so of two racing creations, only one wins, and logins and
    /// deliveries wait), then whatever an earlier account of the name left is removed, then the
    /// record is opened. The loser gets `AlreadyExists` and has removed nothing.
    pub(super) async fn insert(
        &self,
        name: AccountName,
        password_hash: String,
        scram_sha256: Option<String>,
        messages: &dyn MessageStore,
    ) -> Result<AccountName, AccountError> {
        if name.as_str().starts_with("cloudpop-internal") {
            // Internal leases (health probe, sweeper) use these names.
            return Err(AccountError::InvalidName(crate::names::InvalidName::reserved()));
        }
        match self.store.get(&name).await? {
            Some(existing) if existing.deleting => return Err(AccountError::BeingDeleted(name)),
            Some(_) => return Err(AccountError::AlreadyExists(name)),
            None => {}
        }
        let mut incarnation = [0u8; 8];
        getrandom::fill(&mut incarnation).map_err(|e| StoreError::Failed(e.to_string()))?;
        let mut record = AccountRecord {
            name: name.to_string(),
            password_hash,
            disabled: false,
            created_at: crate::clock::unix_secs(),
            quota_bytes: 0,
            quota_messages: 0,
            login_delay_secs: 0,
            expire_days: None,
            deleting: false,
            creating: true,
            incarnation: u64::from_le_bytes(incarnation),
            scram_sha256,
        };
        let version = match self.store.put(&record, Precondition::Absent).await {
            Ok(version) => version,
            Err(StoreError::Conflict) => return Err(AccountError::AlreadyExists(name)),
            Err(e) => {
                self.changed(&name).await;
                return Err(e.into());
            }
        };
        let finished = self.finish_creation(&name, record.clone(), version, messages).await;
        record.creating = false;
        self.changed(&name).await;
        finished?;
        Ok(name)
    }

    /// Removes what an earlier account of the name left behind (a delivery still being stored
    /// while it was deleted), then opens the record.
    async fn finish_creation(
        &self,
        name: &AccountName,
        mut record: AccountRecord,
        version: Version,
        messages: &dyn MessageStore,
    ) -> Result<(), StoreError> {
        messages.remove_maildrop(name).await?;
        record.creating = false;
        self.store.put(&record, Precondition::Unchanged(version)).await?;
        Ok(())
    }

    /// The mailbox record of a user a directory (or an identity provider) let in: created
    /// the first time, with `policy` applied whenever the record differs from it. `None` if
    /// the record is disabled or being deleted.
    pub async fn provision(
        &self,
        name: &AccountName,
        policy: &crate::accounts::Policy,
        messages: &dyn MessageStore,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let mut record = self.get_cached(name).await?;
        if record.as_ref().is_none_or(|r| r.creating) {
            if record.is_none() {
                match self.insert(name.clone(), EXTERNAL_HASH.to_owned(), None, messages).await {
                    Ok(_) => tracing::info!(account = %name, "mailbox created for a directory user"),
                    Err(AccountError::AlreadyExists(_) | AccountError::BeingDeleted(_)) => {}
                    Err(AccountError::InvalidName(e)) => {
                        tracing::warn!(error = %e, "a directory user's mailbox name is reserved; login refused");
                        return Ok(None);
                    }
                    Err(AccountError::Store(e)) => return Err(e),
                    Err(e) => return Err(StoreError::Failed(e.to_string())),
                }
            }
            // Another frontend (a login, another delivery) may be creating it: wait for it.
            record = self.created(name, messages).await?;
        }
        let Some(record) = record.filter(AccountRecord::can_log_in) else { return Ok(None) };
        // A directory may say anything: a LOGIN-DELAY of years would overflow Redis's expiry.
        let policy = &policy.bounded();
        if policy.is_applied(&record) {
            return Ok(Some(record));
        }
        match self.update(name.as_str(), |stored| policy.apply(stored)).await {
            Ok(updated) => Ok(Some(updated).filter(AccountRecord::can_log_in)),
            Err(AccountError::Store(e)) => Err(e),
            Err(e) => Err(StoreError::Failed(e.to_string())),
        }
    }

    /// The record once its creation has finished: a creation still in progress elsewhere is
    /// waited for (up to [`CREATION_WAIT`]), and one abandoned (its process died between the
    /// two writes) is finished here. `Unavailable` if it is still being created.
    async fn created(
        &self,
        name: &AccountName,
        messages: &dyn MessageStore,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let give_up = std::time::Instant::now() + CREATION_WAIT;
        loop {
            let Some((record, version)) = self.store.get_versioned(name).await? else { return Ok(None) };
            if !record.creating {
                return Ok(Some(record));
            }
            let abandoned = crate::clock::unix_secs().saturating_sub(record.created_at) > ABANDONED_AFTER.as_secs();
            if abandoned {
                match self.finish_creation(name, record, version, messages).await {
                    Ok(()) | Err(StoreError::Conflict) => {
                        self.changed(name).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if std::time::Instant::now() >= give_up {
                return Err(StoreError::Unavailable(format!("the account {name} is still being created")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Changes a record with `change` and stores it, if nobody changed it meanwhile (else reads
    /// it again and re-applies `change`, a few times); `NotFound` if there is none.
    pub async fn update(&self, name: &str, change: impl Fn(&mut AccountRecord)) -> Result<AccountRecord, AccountError> {
        let name = AccountName::parse(name)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut record, version) =
                self.store.get_versioned(&name).await?.ok_or_else(|| AccountError::NotFound(name.clone()))?;
            change(&mut record);
            match self.store.put(&record, Precondition::Unchanged(version)).await {
                Ok(_) => {
                    self.changed(&name).await;
                    return Ok(record);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => {
                    // The write may have applied all the same (a PUT that timed out).
                    self.changed(&name).await;
                    return Err(e.into());
                }
            }
        }
        Err(StoreError::Unavailable(format!("the account {name} kept changing; try again")).into())
    }
}
