//! Accounts: creating them, changing passwords, and checking logins against argon2id hashes.
//!
//! Passwords exist in memory only while being hashed or verified; hashing runs on the blocking
//! pool so a burst of logins cannot stall the network tasks.
//!
//! Layout: [`hashing`] (the argon2id pool), [`schemes`] (password hashes imported from other
//! servers), [`verified`] (recently verified credentials), [`pool_verified`] (the same across
//! the pool, opt-in), [`cache`] (records cached in a pool, dropped pool-wide on change),
//! [`policy`] (per-user policy from a directory).

pub mod cache;
pub mod hashing;
pub mod policy;
pub mod pool_verified;
mod records;
pub mod schemes;
pub mod verified;

pub use policy::Policy;

use crate::names::{AccountName, InvalidName};
use crate::store::{AccountRecord, AccountStore, MessageStore, StoreError};
use cache::{Announcer, RecordCache};
use hashing::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use verified::VerifiedCache;

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Account management failures, mapped to CLI messages and (later) gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    #[error("account {0} already exists")]
    AlreadyExists(AccountName),
    #[error("account {0} does not exist")]
    NotFound(AccountName),
    #[error("maildrop {0} is in use by a POP3 session; try again when it ends, or end it with EndSession")]
    InUse(AccountName),
    #[error("account {0} is being deleted; delete it again to finish")]
    BeingDeleted(AccountName),
    /// The maildrop lock was lost part-way; what is left is left for a retry.
    #[error("{0}")]
    Interrupted(String),
    #[error(transparent)]
    Lock(#[from] crate::coord::CoordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.is_empty() {
        return Err(AccountError::InvalidPassword("empty"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AccountError::InvalidPassword("longer than 1024 bytes"));
    }
    if password.contains(['\r', '\n', '\0']) {
        // POP3 cannot carry these in PASS, and NUL would break SASL PLAIN.
        return Err(AccountError::InvalidPassword("contains CR, LF or NUL"));
    }
    Ok(())
}

/// Account operations over any [`AccountStore`].
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    /// Hash jobs on a fixed pool of working memory: bounds CPU and memory under a login storm.
    hasher: Arc<Hasher>,
    verified: Arc<VerifiedCache>,
    /// Checks remembered across the pool, when configured.
    pool_verified: Option<Arc<pool_verified::SharedVerified>>,
    /// Records for logins and deliveries, and where their changes are announced.
    records: Arc<RecordCache>,
    announcer: Announcer,
    /// Logins verifying or waiting to verify a password, and how many may.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// PBKDF2 iterations of the SCRAM-SHA-256 credentials stored with each password; `None`
    /// stores none.
    scram_iterations: Option<u32>,
}

/// What [`Accounts::import`] did with one exported account.
#[derive(Debug)]
pub enum Imported {
    Created(AccountName),
    /// An account of that name already exists; it was left as it is.
    Exists(AccountName),
    /// The password field is not one cloudpop accepts (the reason says why).
    Refused(String),
}

/// Why a login could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// More logins are waiting for a password check than `max_pending_logins` allows.
    #[error("too many logins in progress")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory or identity provider gave no answer.
    #[error("{0}")]
    Directory(String),
}

/// The password hash of a mailbox made for a directory user: it matches no password, so
/// only the directory can let the user in.
pub const EXTERNAL_HASH: &str = "!external";

/// One login counted in [`Accounts::pending`] until dropped.
pub(crate) struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the account service is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSettings {
    /// How long a successful password check is remembered (zero: never), and how many at once.
    pub credential_cache: Duration,
    pub credential_cache_entries: usize,
    /// How long a record is cached in a pool (zero: never), and how many at once.
    pub account_cache: Duration,
    pub account_cache_entries: usize,
    /// Logins that may wait for, or be in, a password check at once.
    pub max_pending_logins: usize,
    /// Threads of the hashing pool, and the legacy queue's memory budget.
    pub hashing_threads: usize,
    pub legacy_hash_memory_kib: u32,
    /// SCRAM-SHA-256 credentials are kept beside the hash with this many iterations; `None`:
    /// SCRAM is off and none are kept.
    pub scram_iterations: Option<u32>,
    /// How long a successful check is also remembered pool-wide (zero: not at all), and the
    /// pool's key for those entries (see [`verified::SharedVerified`]).
    pub shared_credential_cache: Duration,
    pub shared_credential_key: Option<crate::secret::Secret>,
}

impl Accounts {
    /// `max_pending_logins` logins may wait for, or be in, a password check; more are refused
    /// at once rather than queued without limit. Hashing runs `hashing_threads` jobs at a time.
    pub fn new(store: Arc<dyn AccountStore>, settings: &AccountSettings) -> Self {
        Self {
            store,
            hasher: Arc::new(Hasher::new(settings.hashing_threads, settings.legacy_hash_memory_kib)),
            verified: Arc::new(VerifiedCache::new(settings.credential_cache, settings.credential_cache_entries)),
            pool_verified: None,
            records: Arc::new(RecordCache::new(settings.account_cache, settings.account_cache_entries)),
            announcer: Announcer::Local,
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending: settings.max_pending_logins,
            scram_iterations: settings.scram_iterations,
        }
    }

    /// Remembers successful checks for the pool as well (`credential_cache_shared_secs`).
    pub fn share_checks_through(&mut self, shared: pool_verified::SharedVerified) {
        self.pool_verified = Some(Arc::new(shared));
    }

    /// Announces record changes to a pool; the cache serves records while `records()` is
    /// kept live by the pool's change feed ([`crate::accounts::cache::spawn_feed`]).
    pub fn announce_through(&mut self, announcer: Announcer) {
        self.announcer = announcer;
    }

    pub fn records(&self) -> Arc<RecordCache> {
        self.records.clone()
    }

    /// After any change of `name`'s record: forgets it here and tells the pool.
    async fn changed(&self, name: &AccountName) {
        self.records.invalidate(name);
        self.announcer.announce(name).await;
    }

    /// The record for a login or a delivery: from the cache when it has one (see
    /// [`crate::accounts::cache`]), else from the store.
    pub async fn get_cached(&self, name: &AccountName) -> Result<Option<AccountRecord>, StoreError> {
        if let Some(hit) = self.records.get(name) {
            crate::metrics::metrics().account_cache_hits.inc();
            return Ok(hit);
        }
        let epoch = self.records.epoch();
        let record = self.store.get(name).await?;
        self.records.insert(name, record.clone(), epoch);
        Ok(record)
    }

    /// Hashes a new password on the pool.
    async fn hash(&self, password: &str) -> Result<String, AccountError> {
        check_password(password)?;
        self.hasher.hash(password.to_owned()).await.ok_or(AccountError::InvalidPassword("could not be hashed"))
    }

    /// SCRAM-SHA-256 credentials for `password` with a fresh salt, if they are kept.
    async fn scram(&self, password: &str) -> Option<String> {
        let iterations = self.scram_iterations?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).ok()?;
            Some(crate::protocol::scram::StoredCredentials::derive(&password, &salt, iterations).encode())
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether `record` lacks the SCRAM credentials this configuration keeps (none yet, or
    /// another iteration count).
    fn scram_outdated(&self, record: &AccountRecord) -> bool {
        self.scram_iterations.is_some_and(|wanted| {
            record
                .scram_sha256
                .as_deref()
                .and_then(crate::protocol::scram::StoredCredentials::decode)
                .map(|c| c.iterations)
                != Some(wanted)
        })
    }

    /// Counts a login in, unless `max_pending` are already in.
    pub(crate) fn enter(&self) -> Result<Pending, LoginError> {
        let admitted = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_pending).then_some(n + 1))
            .is_ok();
        if admitted { Ok(Pending(self.pending.clone())) } else { Err(LoginError::Busy) }
    }

    /// Creates an account with an empty maildrop: whatever an earlier account of the same name
    /// left behind (a delivery that was still being stored while it was deleted) is removed
    /// first, so a re-created account inherits no mail and no markers.
    pub async fn create(
        &self,
        name: &str,
        password: &str,
        messages: &dyn MessageStore,
    ) -> Result<AccountName, AccountError> {
        let name = AccountName::parse(name)?;
        let password_hash = self.hash(password).await?;
        let scram = self.scram(password).await;
        self.insert(name, password_hash, scram, messages).await
    }

    /// Creates an account from an account export, with its existing password hash (see
    /// [`crate::accounts::schemes`]); a `{PLAIN}` password (only with `allow_plain`) is hashed
    /// at once. An account that already exists is left as it is: its password may have been
    /// changed, or re-hashed by a login, since the export.
    pub async fn import(
        &self,
        name: &str,
        password_field: &str,
        allow_plain: bool,
        messages: &dyn MessageStore,
    ) -> Result<Imported, AccountError> {
        let parsed = AccountName::parse(name)?;
        let (hash, scram) = match crate::accounts::schemes::parse(password_field, allow_plain) {
            Ok(crate::accounts::schemes::Imported::Hash(hash)) => (hash, None),
            Ok(crate::accounts::schemes::Imported::Plain(password)) => {
                (self.hash(&password).await?, self.scram(&password).await)
            }
            Err(e) => return Ok(Imported::Refused(e.to_string())),
        };
        match self.insert(parsed, hash, scram, messages).await {
            Ok(name) => Ok(Imported::Created(name)),
            Err(AccountError::AlreadyExists(name)) => Ok(Imported::Exists(name)),
            Err(e) => Err(e),
        }
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<AccountRecord, AccountError> {
        let hash = self.hash(password).await?;
        let scram = self.scram(password).await;
        self.update(name, |record| {
            record.password_hash.clone_from(&hash);
            record.scram_sha256.clone_from(&scram);
        })
        .await
    }

    /// Removes the account record (the last step of deleting an account; see
    /// `maintenance::delete_account`); whether there was one.
    pub async fn remove_record(&self, name: &AccountName) -> Result<bool, StoreError> {
        let existed = self.store.delete(name).await?;
        self.changed(name).await;
        Ok(existed)
    }

    pub async fn list(&self) -> Result<Vec<AccountName>, AccountError> {
        Ok(self.store.list().await?)
    }

    /// The record for a delivery's verdict: as [`Self::get_cached`], except that a remembered
    /// absence is checked in the store again, since it would bounce the message for good.
    pub async fn get_for_delivery(&self, name: &AccountName) -> Result<Option<AccountRecord>, StoreError> {
        match self.get_cached(name).await? {
            Some(record) => Ok(Some(record)),
            None => self.store.get(name).await,
        }
    }

    /// A secret shared by every process on this store (see [`AccountStore::pool_secret`]).
    pub async fn pool_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        self.store.pool_secret(name).await
    }

    /// The stored record, if any.
    pub async fn get(&self, name: &AccountName) -> Result<Option<AccountRecord>, StoreError> {
        self.store.get(name).await
    }

    /// Checks a login. `Ok(None)` for any bad credential, unknown or disabled account alike.
    /// A success remembered by the verified-credential cache skips the hash (and the queue).
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<Option<AccountRecord>, LoginError> {
        let name = AccountName::parse(user).ok();
        let record = match &name {
            Some(name) => self.get_cached(name).await?.filter(AccountRecord::can_log_in),
            None => None,
        };
        if let (Some(name), Some(record)) = (&name, &record) {
            let (user, phc) = (name.as_str(), record.password_hash.as_str());
            if self.verified.hit(user, password, phc).is_some() {
                tracing::Span::current().record("hash_ms", 0.0);
                crate::metrics::metrics().credential_cache_hits.inc();
                return Ok(Some(record.clone()));
            }
            if let Some(pool) = &self.pool_verified
                && pool.hit(user, password, phc).await
            {
                tracing::Span::current().record("hash_ms", 0.0);
                crate::metrics::metrics().credential_cache_shared_hits.inc();
                self.verified.remember(user, password, phc, ());
                return Ok(Some(record.clone()));
            }
        }
        let _pending = self.enter()?;
        let started = std::time::Instant::now();
        // Unknown users are checked against a decoy hash, so they take as long as a wrong password.
        let phc = record.as_ref().map(|r| r.password_hash.clone());
        let matches = self.hasher.verify(phc, password.to_owned()).await;
        let took = started.elapsed();
        crate::metrics::metrics().password_hash_duration.observe(took.as_secs_f64());
        // The login span declares this field; the time says nothing about the password.
        tracing::Span::current().record("hash_ms", took.as_secs_f64() * 1000.0);
        match (matches, name, record) {
            (true, Some(name), Some(record)) => {
                let record = self.upgrade_hash(&name, password, record).await;
                self.verified.remember(name.as_str(), password, &record.password_hash, ());
                if let Some(pool) = &self.pool_verified {
                    pool.remember(name.as_str(), password, &record.password_hash).await;
                }
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }

    /// After a login that matched an imported or outdated hash: replaces it with a current
    /// argon2id hash of the same password, and adds SCRAM credentials where they are kept but
    /// missing, unless the record changed meanwhile. A failure leaves the old hash, which
    /// still works, and is only logged.
    async fn upgrade_hash(&self, name: &AccountName, password: &str, record: AccountRecord) -> AccountRecord {
        let rehash = !crate::accounts::hashing::is_current(&record.password_hash);
        if !rehash && !self.scram_outdated(&record) {
            return record;
        }
        let new_hash = if rehash {
            let Some(hash) = self.hasher.hash(password.to_owned()).await else { return record };
            hash
        } else {
            record.password_hash.clone()
        };
        let scram = self.scram(password).await;
        let old_hash = record.password_hash.clone();
        let replaced = self
            .update(name.as_str(), |stored| {
                if stored.password_hash == old_hash {
                    stored.password_hash.clone_from(&new_hash);
                    stored.scram_sha256.clone_from(&scram);
                }
            })
            .await;
        match replaced {
            Ok(updated) => {
                if rehash {
                    tracing::info!(account = %name, "password hash upgraded to argon2id");
                    crate::metrics::metrics().password_rehashes.inc();
                }
                updated
            }
            Err(e) => {
                tracing::warn!(account = %name, error = %e, "cannot upgrade the password hash; the old one stays");
                record
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_pop3_cannot_carry_are_refused() {
        for bad in ["", "a\r\nb", "nul\0"] {
            assert!(check_password(bad).is_err(), "{bad:?}");
        }
        assert!(check_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        assert!(check_password("fine").is_ok());
    }
}
