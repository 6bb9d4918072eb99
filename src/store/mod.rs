//! Storage in domain terms: maildrops of messages, and account records.
//!
//! Backends implement [`MessageStore`] and [`AccountStore`]; the POP3 layer cannot tell them
//! apart. Every backend passes the same conformance suite (`tests/suite/backend_conformance.rs`).

pub mod fs;
pub mod ids;
pub mod observed;
pub mod s3;

use crate::names::AccountName;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// A message as listed at login: its id (the UIDL) and exact size in octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    pub size: u64,
}

/// A message body being read, chunk by chunk.
pub type MessageBody = Pin<Box<dyn AsyncRead + Send>>;

/// A message opened for reading, with the trace context of the call that delivered it.
pub struct Opened {
    pub body: MessageBody,
    /// The W3C `traceparent` given when the message was delivered, if one was.
    pub delivered_by: Option<TraceParent>,
}

/// A validated W3C trace context header value (`00-<trace id>-<span id>-<flags>`), kept beside
/// a message so its retrieval can link to its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// Accepts version 00 with non-zero lowercase hex ids, as W3C Trace Context requires.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let parts: Vec<&str> = raw.split('-').collect();
        let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        let ok = matches!(parts.as_slice(), [v, t, s, f]
            if *v == "00" && t.len() == 32 && s.len() == 16 && f.len() == 2
                && hex(t) && hex(s) && hex(f) && nonzero(t) && nonzero(s));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Storage failures, each knowing whether retrying later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such message")]
    NotFound,
    #[error("storage temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Failed(String),
    #[error("{0}")]
    Invalid(String),
    /// A conditional write found the object changed (or created, or gone) since it was read.
    #[error("changed by someone else meanwhile")]
    Conflict,
}

impl StoreError {
    /// Whether the same call may succeed later (`[SYS/TEMP]` rather than `[SYS/PERM]`).
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound => StoreError::NotFound,
            // Disk full and similar conditions can clear up; corruption-like ones cannot.
            StorageFull | QuotaExceeded | TimedOut | Interrupted | WouldBlock | ResourceBusy => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Failed(e.to_string()),
        }
    }
}

/// A validated marker name: 1-200 characters from `A-Z a-z 0-9 . _ - :`, not starting with a dot,
/// so it is safe as a file name and an object key segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerKey(String);

impl MarkerKey {
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=200).contains(&raw.len())
            && !raw.starts_with('.')
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What removing a batch of messages achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Messages gone now (including ones that were already gone).
    pub removed: usize,
    /// Messages still present, with the reason.
    pub failed: Vec<(String, String)>,
}

/// A maildrop as a session sees it at login.
#[derive(Debug, Default)]
pub struct MaildropView {
    /// Every committed message, oldest first.
    pub messages: Vec<StoredMessage>,
    /// What the lease holder owes the store's index.
    pub upkeep: Upkeep,
    /// Which index this view was read through: the holder hands it back to
    /// [`MessageStore::upkeep`], which so tells an index written since by a holder that had lost
    /// the maildrop.
    pub index: IndexSeen,
}

/// The index a lease holder's view of a maildrop was read through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IndexSeen {
    /// Not known (a holder that removes without a view of its own, or a store without indexes).
    #[default]
    Unknown,
    /// The fence of the index read, or `None` when there was none (or none readable).
    At(Option<u64>),
}

/// When a lease holder calls [`MessageStore::upkeep`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Upkeep {
    /// Never: the store keeps no index of this maildrop.
    #[default]
    None,
    /// Before removing anything: an index lists the messages.
    BeforeRemoval,
    /// Before letting go, even with nothing to remove: the index fell behind.
    Due,
}

impl Upkeep {
    /// Whether a holder about to remove `removing` messages must call `upkeep` first.
    pub fn needed(self, removing: usize) -> bool {
        match self {
            Upkeep::None => false,
            Upkeep::BeforeRemoval => removing > 0,
            Upkeep::Due => true,
        }
    }
}

/// Where messages live. Ids are made by the store, unique within a maildrop forever.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Every committed message of the maildrop, oldest first. Never reads bodies.
    async fn list(&self, maildrop: &AccountName) -> Result<Vec<StoredMessage>, StoreError>;

    /// Up to `limit` messages with ids after `after` (from the start when empty), in id order,
    /// and whether more follow: one page of an operator's listing. The default reads the whole
    /// maildrop; a store that can start a listing at any key reads only the page.
    async fn list_page(
        &self,
        maildrop: &AccountName,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        let mut page: Vec<StoredMessage> =
            self.list(maildrop).await?.into_iter().filter(|m| m.id.as_str() > after).take(limit + 1).collect();
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    /// [`list`](Self::list) for a lease holder, with what the store asks of it.
    async fn view(&self, maildrop: &AccountName) -> Result<MaildropView, StoreError> {
        Ok(MaildropView { messages: self.list(maildrop).await?, upkeep: Upkeep::None, index: IndexSeen::Unknown })
    }

    /// Called by the holder of the maildrop's lease (with the lease's fencing number) as
    /// [`MaildropView::upkeep`] says: before it removes `removing`, or before it lets go. After it
    /// returns, nothing lists `removing` again even if removing them then fails half-way. A
    /// store without an index has nothing to do.
    ///
    /// `seen` is the index the holder's view was read through: an index with a lower fence that
    /// appeared since was written by a holder that had already lost the maildrop (its write was
    /// delayed past its lease), and is discarded instead of trusted.
    async fn upkeep(
        &self,
        _maildrop: &AccountName,
        _fence: u64,
        _removing: &[String],
        _seen: IndexSeen,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Opens a message for streaming.
    async fn open(&self, maildrop: &AccountName, id: &str) -> Result<Opened, StoreError>;

    /// Starts a new message with a fresh id. Nothing is visible to `list` until
    /// [`NewMessage::commit`].
    async fn create(&self, maildrop: &AccountName) -> Result<Box<dyn NewMessage>, StoreError> {
        self.create_with_id(maildrop, &ids::new_message_id()).await
    }

    /// Starts a new message with a given id (made by [`ids::new_message_id`] earlier, for an
    /// idempotent retry). Committing over an existing message with that id leaves it as it is.
    async fn create_with_id(&self, maildrop: &AccountName, id: &str) -> Result<Box<dyn NewMessage>, StoreError>;

    /// Whether a committed message with this id exists.
    async fn exists(&self, maildrop: &AccountName, id: &str) -> Result<bool, StoreError> {
        match self.open(maildrop, id).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a small marker stored beside a maildrop (idempotency keys map to message ids).
    async fn get_marker(&self, maildrop: &AccountName, key: &MarkerKey) -> Result<Option<String>, StoreError>;

    /// Stores a marker durably, replacing any earlier value.
    async fn put_marker(&self, maildrop: &AccountName, key: &MarkerKey, value: &str) -> Result<(), StoreError>;

    /// The maildrop's retention ledger (when each retrieved message was first retrieved, for
    /// RFC 2449 EXPIRE), if it has one. Ledgers live apart from markers so that the sweeper
    /// finds every maildrop with one by listing them, without reading any account.
    async fn get_ledger(&self, maildrop: &AccountName) -> Result<Option<String>, StoreError>;

    /// Stores the ledger durably, replacing the earlier one; an empty ledger is removed.
    async fn put_ledger(&self, maildrop: &AccountName, text: &str) -> Result<(), StoreError>;

    /// Every maildrop that has a ledger, sorted.
    async fn ledgers(&self) -> Result<Vec<AccountName>, StoreError>;

    /// Removes messages; ids that are already gone count as removed.
    async fn remove(&self, maildrop: &AccountName, ids: &[String]) -> Result<RemoveReport, StoreError>;

    /// Removes the maildrop: every message, marker and its ledger.
    async fn remove_maildrop(&self, maildrop: &AccountName) -> Result<(), StoreError>;

    /// The cheapest request that proves the store answers (readiness probes run it every few
    /// seconds on every frontend, so it never lists or reads a body).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A message being written. Dropping it without `commit` discards it.
#[async_trait]
pub trait NewMessage: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;

    /// Keeps the delivering call's trace context with the message (before `commit`).
    fn set_trace_parent(&mut self, traceparent: &TraceParent);

    /// Makes the message durable and visible, all at once.
    async fn commit(self: Box<Self>) -> Result<StoredMessage, StoreError>;
}

/// One account as stored durably.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountRecord {
    pub name: String,
    /// Argon2id PHC string; never the password itself.
    pub password_hash: String,
    #[serde(default)]
    pub disabled: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Largest total mailbox size accepted at delivery, in octets; 0 means unlimited.
    #[serde(default)]
    pub quota_bytes: u64,
    /// Most messages accepted in the mailbox; 0 means unlimited.
    #[serde(default)]
    pub quota_messages: u64,
    /// Minimum seconds between two logins (RFC 2449 LOGIN-DELAY); 0 means none.
    #[serde(default)]
    pub login_delay_secs: u64,
    /// Days after first retrieval when messages are deleted (RFC 2449 EXPIRE); `None` keeps them.
    #[serde(default)]
    pub expire_days: Option<u32>,
    /// Set while the account is being deleted: logins and deliveries treat it as gone, and no
    /// account of that name can be created until the deletion has finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// Set between the record's creation and the removal of anything an earlier account of the
    /// same name left behind: logins and deliveries wait (`[SYS/TEMP]`, 451).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creating: bool,
    /// Random, fixed at creation: tells a re-created account from the one deleted before it.
    #[serde(default)]
    pub incarnation: u64,
    /// SCRAM-SHA-256 credentials derived from the same password (`scram = true`), in the form
    /// of [`crate::protocol::scram::StoredCredentials`]; never the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<String>,
}

impl AccountRecord {
    /// Whether a login to this account may succeed at all (not disabled, not being deleted or
    /// created).
    pub fn can_log_in(&self) -> bool {
        !self.disabled && !self.deleting && !self.creating
    }
}

impl fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRecord")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("quota_bytes", &self.quota_bytes)
            .field("quota_messages", &self.quota_messages)
            .field("login_delay_secs", &self.login_delay_secs)
            .field("expire_days", &self.expire_days)
            .field("deleting", &self.deleting)
            .field("creating", &self.creating)
            .field("incarnation", &self.incarnation)
            .field("scram_sha256", &self.scram_sha256.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A stored account record's version (an S3 ETag, a digest of the file), for conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// What a record write expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No record: the write creates it.
    Absent,
    /// The record as it was at this version.
    Unchanged(Version),
}

/// Where account records live. Every write is conditional, so concurrent read-modify-writes
/// (a login's hash upgrade and an operator's SetEnabled, two first deliveries to a new
/// directory user) cannot undo each other: the loser gets [`StoreError::Conflict`] and reads
/// again.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// The record and its version.
    async fn get_versioned(&self, name: &AccountName) -> Result<Option<(AccountRecord, Version)>, StoreError>;

    async fn get(&self, name: &AccountName) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.get_versioned(name).await?.map(|(record, _)| record))
    }

    /// Writes the record if what is stored meets `expect` (else [`StoreError::Conflict`]),
    /// atomically; the new version.
    async fn put(&self, record: &AccountRecord, expect: Precondition) -> Result<Version, StoreError>;

    /// A random 32-byte secret named `name`, the same for every process on this store (made by
    /// the first that asks, kept for good).
    async fn pool_secret(&self, name: &str) -> Result<[u8; 32], StoreError>;

    /// Deletes the record; returns whether it existed.
    async fn delete(&self, name: &AccountName) -> Result<bool, StoreError>;

    /// Every account name, sorted.
    async fn list(&self) -> Result<Vec<AccountName>, StoreError>;
}
