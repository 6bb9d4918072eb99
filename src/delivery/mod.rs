//! Storing new mail, for `cloudpop deliver` and the gRPC ingest API alike.
//!
//! A message is first normalised to CRLF, size-capped, sanity-checked and spooled to a local
//! temporary file (bounded memory, whatever its size); then it is stored for each recipient
//! from the spool. Idempotency: the message id is chosen and recorded under the caller's key
//! *before* the message is stored, so a retry after a lost answer finds the id and stores
//! nothing new, and a retry after a crash half-way stores the message under the same id.

pub mod crlf;
pub mod headers;

pub use crlf::CrlfNormalizer;
pub use headers::HeaderCheck;

use crate::accounts::Accounts;
use crate::coord::lock::MaildropLocks;
use crate::coord::usage::{Usage, UsageCounters};
use crate::names::{AccountName, InvalidName};
use crate::store::{MarkerKey, MessageStore, StoreError, StoredMessage, TraceParent, ids};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Why a message could not be taken at all. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("message is empty")]
    Empty,
    #[error("message exceeds the maximum size of {0} octets")]
    TooLarge(u64),
    #[error("not an RFC 5322 message: {0}")]
    Malformed(&'static str),
    #[error("reading the message failed: {0}")]
    Read(std::io::Error),
    #[error("spooling the message failed: {0}")]
    Spool(std::io::Error),
}

/// What happened for one recipient.
#[derive(Debug)]
pub enum Outcome {
    Stored(StoredMessage),
    /// An earlier delivery with the same idempotency key stored this id.
    Duplicate(String),
    UnknownMailbox,
    InvalidName(InvalidName),
    Disabled,
    OverQuota(&'static str),
    Failed(StoreError),
}

impl Outcome {
    /// The name of the outcome in metrics and traces.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Stored(_) => "stored",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::UnknownMailbox | Outcome::InvalidName(_) => "unknown_mailbox",
            Outcome::Disabled => "disabled",
            Outcome::OverQuota(_) => "over_quota",
            Outcome::Failed(_) => "temporary_failure",
        }
    }
}

/// Receives a message chunk by chunk into a temporary file.
pub struct Spooler {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    normalizer: CrlfNormalizer,
    /// The RFC 5322 check, for callers that want it (the API); `None` takes any bytes.
    headers: Option<HeaderCheck>,
    buf: Vec<u8>,
    size: u64,
    max_size: u64,
}

/// A complete, normalised, checked message waiting in the spool.
pub struct Spooled {
    path: tempfile::TempPath,
    pub size: u64,
}

impl Spooled {
    /// The message, from its first byte.
    pub async fn open(&self) -> std::io::Result<tokio::fs::File> {
        tokio::fs::File::open(&self.path).await
    }
}

impl Spooler {
    /// A spool for one message; `check_headers` refuses input that does not look like mail.
    pub async fn new(spool_dir: &Path, max_size: u64, check_headers: bool) -> Result<Self, DeliveryError> {
        // The spool holds mail: private like the store (tempfile creates its files 0600).
        crate::store::fs::private_dir(spool_dir).await.map_err(DeliveryError::Spool)?;
        let named = tempfile::Builder::new().prefix("msg-").tempfile_in(spool_dir).map_err(DeliveryError::Spool)?;
        let (file, path) = named.into_parts();
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path,
            normalizer: CrlfNormalizer::default(),
            headers: check_headers.then(HeaderCheck::default),
            buf: Vec::with_capacity(70 * 1024),
            size: 0,
            max_size,
        })
    }

    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), DeliveryError> {
        self.buf.clear();
        self.normalizer.push(chunk, &mut self.buf);
        self.write_buf().await
    }

    async fn write_buf(&mut self) -> Result<(), DeliveryError> {
        self.size += self.buf.len() as u64;
        if self.size > self.max_size {
            return Err(DeliveryError::TooLarge(self.max_size));
        }
        if let Some(headers) = &mut self.headers {
            headers.push(&self.buf);
        }
        self.file.write_all(&self.buf).await.map_err(DeliveryError::Spool)
    }

    /// Reads a whole stream into the spool.
    pub async fn read_from(&mut self, mut input: impl AsyncRead + Unpin) -> Result<(), DeliveryError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut chunk).await.map_err(DeliveryError::Read)?;
            if n == 0 {
                return Ok(());
            }
            self.push(&chunk[..n]).await?;
        }
    }

    pub async fn finish(mut self) -> Result<Spooled, DeliveryError> {
        self.buf.clear();
        self.normalizer.finish(&mut self.buf);
        self.write_buf().await?;
        if self.size == 0 {
            return Err(DeliveryError::Empty);
        }
        if let Some(headers) = self.headers.take() {
            headers.finish().map_err(DeliveryError::Malformed)?;
        }
        self.file.flush().await.map_err(DeliveryError::Spool)?;
        Ok(Spooled { path: self.path, size: self.size })
    }
}

/// How a delivery wants its message stored.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Makes retries safe: an earlier delivery with this key is not repeated.
    pub idempotency_key: Option<MarkerKey>,
    /// A UIDL kept from another server (already validated with [`ids::is_valid_uidl`]).
    pub uidl: Option<String>,
    /// The original receipt time, milliseconds since the epoch.
    pub received_ms: Option<u64>,
    /// The trace context of the delivering call, kept with the message for retrieval to link to.
    pub traceparent: Option<TraceParent>,
    /// Header fields stored in front of the message for this recipient (LMTP's trace fields),
    /// CRLF-terminated; empty for none.
    pub header: Vec<u8>,
}

/// The marker that records a caller's idempotency key. Callers' keys live under their own
/// prefix, so no key can name one of the server's own markers (`uidl.*`, `trace.*`,
/// `retention`). `None` unless `raw` is 1-128 characters from `A-Z a-z 0-9 . _ - :`.
pub fn idempotency_marker(raw: &str) -> Option<MarkerKey> {
    let valid =
        (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if valid { MarkerKey::parse(&format!("key:{raw}")) } else { None }
}

/// How long one attempt may hold its delivery's claims. A crashed attempt's claims block
/// retries (which get a temporary failure) for at most this long.
const CLAIM_TTL: Duration = Duration::from_secs(15 * 60);

/// Stores a spooled message for one recipient, honouring quota, idempotency and kept UIDLs.
/// Attempts that share an idempotency key or a kept UIDL run one at a time (`claims`), so two
/// racing attempts cannot both find no record and both store.
pub async fn store_for(
    store: &dyn MessageStore,
    accounts: &Accounts,
    claims: &dyn MaildropLocks,
    usage: &dyn UsageCounters,
    message: &Spooled,
    recipient: &str,
    options: &Options,
) -> Outcome {
    let name = match AccountName::parse(recipient) {
        Ok(name) => name,
        Err(e) => return Outcome::InvalidName(e),
    };
    let uidl_marker =
        options.uidl.as_deref().and_then(|uidl| MarkerKey::parse(&format!("uidl.{}", ids::uidl_hex(uidl))));
    let scopes: Vec<&MarkerKey> = options.idempotency_key.iter().chain(uidl_marker.iter()).collect();
    let mut held = Vec::with_capacity(scopes.len());
    let mut refused = None;
    for scope in &scopes {
        match claims.claim(&name, scope.as_str(), CLAIM_TTL).await {
            Ok(Some(token)) => held.push((scope.as_str(), token)),
            Ok(None) => {
                refused = Some(StoreError::Unavailable("another attempt of this delivery is in progress".into()));
                break;
            }
            Err(e) => {
                refused = Some(StoreError::Unavailable(e.to_string()));
                break;
            }
        }
    }
    let outcome = match refused {
        Some(e) => Outcome::Failed(e),
        None => match store_checked(store, accounts, usage, message, &name, options, uidl_marker.as_ref()).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        },
    };
    for (scope, token) in held {
        if let Err(e) = claims.unclaim(&name, scope, &token).await {
            tracing::warn!(error = %e, "cannot give up a delivery claim; it expires by itself");
        }
    }
    outcome
}

/// What an idempotency record says: the id its delivery uses, and whether it was stored.
/// `<id> pending` is written before storing, `<id> stored <secs>` after (a bare `<id>` is an
/// older pending record).
fn parse_record(value: &str) -> Option<(String, bool)> {
    let mut words = value.split_whitespace();
    let id = words.next()?.to_owned();
    Some((id, words.next() == Some("stored")))
}

async fn store_checked(
    store: &dyn MessageStore,
    accounts: &Accounts,
    usage: &dyn UsageCounters,
    message: &Spooled,
    name: &AccountName,
    options: &Options,
    uidl_marker: Option<&MarkerKey>,
) -> Result<Outcome, StoreError> {
    let key = options.idempotency_key.as_ref();
    let account = match accounts.get_cached(name).await? {
        Some(account) if !account.deleting => account,
        _ => return Ok(Outcome::UnknownMailbox),
    };
    if account.disabled {
        return Ok(Outcome::Disabled);
    }
    let earlier = match key {
        Some(key) => store.get_marker(name, key).await?.as_deref().and_then(parse_record),
        None => None,
    };
    match &earlier {
        // Stored once: a duplicate, even if the user has deleted it since (promise 4).
        Some((id, true)) => return Ok(Outcome::Duplicate(id.clone())),
        // Stored by an attempt that died before recording it.
        Some((id, false)) if store.exists(name, id).await? => {
            if let Some(key) = key {
                store.put_marker(name, key, &stored_record(id)).await?;
            }
            return Ok(Outcome::Duplicate(id.clone()));
        }
        _ => {}
    }
    // A kept UIDL, once used, stays used even after its message is deleted (DESIGN.md promise
    // 5). Its marker names the id before the message is stored (`<id> pending`) and is made
    // final after (the bare id), so an attempt that died in between is finished, not repeated.
    let kept = match uidl_marker {
        Some(marker) => match store.get_marker(name, marker).await? {
            Some(value) => match value.split_once(' ') {
                Some((id, _)) if store.exists(name, id).await? => {
                    store.put_marker(name, marker, id).await?;
                    return Ok(Outcome::Duplicate(id.to_owned()));
                }
                Some((id, _)) => Some(id.to_owned()),
                None => return Ok(Outcome::Duplicate(value)),
            },
            None => None,
        },
        None => None,
    };
    if account.quota_bytes > 0 || account.quota_messages > 0 {
        let now = current_usage(store, usage, name).await?;
        if account.quota_messages > 0 && now.messages >= account.quota_messages {
            return Ok(Outcome::OverQuota("message count quota reached"));
        }
        if account.quota_bytes > 0 && now.octets + message.size + options.header.len() as u64 > account.quota_bytes {
            return Ok(Outcome::OverQuota("byte quota would be exceeded"));
        }
    }
    let fresh = || {
        let id = options.received_ms.map_or_else(ids::new_message_id, ids::new_message_id_at);
        options.uidl.as_deref().map_or_else(|| id.clone(), |uidl| ids::with_uidl(&id, uidl))
    };
    let id = match (earlier, kept, key) {
        // An earlier attempt chose this id but never finished storing: finish it now.
        (Some((id, _)), _, _) | (None, Some(id), _) => id,
        (None, None, Some(key)) => {
            let id = fresh();
            store.put_marker(name, key, &format!("{id} pending")).await?;
            id
        }
        (None, None, None) => fresh(),
    };
    if let Some(marker) = uidl_marker {
        store.put_marker(name, marker, &format!("{id} pending")).await?;
    }
    let mut new = store.create_with_id(name, &id).await?;
    if let Some(traceparent) = &options.traceparent {
        new.set_trace_parent(traceparent);
    }
    if !options.header.is_empty() {
        new.write(&options.header).await?;
    }
    let mut file = message.open().await?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        new.write(&chunk[..n]).await?;
    }
    let stored = new.commit().await?;
    // The account may have been deleted (and even re-created) while the message was being
    // stored: a re-created account starts empty, so the message is taken back.
    match accounts.get(name).await? {
        Some(now) if now.incarnation == account.incarnation && !now.deleting => {}
        _ => {
            store.remove(name, std::slice::from_ref(&stored.id)).await?;
            return Ok(Outcome::UnknownMailbox);
        }
    }
    if let Some(marker) = uidl_marker {
        store.put_marker(name, marker, &stored.id).await?;
    }
    if let Some(key) = key {
        store.put_marker(name, key, &stored_record(&stored.id)).await?;
    }
    // Stored whatever the counter says; a counter that missed it is remade within a day.
    if let Err(e) = usage.add(name, 1, stored.size as i64).await {
        tracing::warn!(error = %e, "cannot count a delivery in the mailbox's usage");
    }
    Ok(Outcome::Stored(stored))
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

/// The idempotency record of a stored message, with when it was stored.
fn stored_record(id: &str) -> String {
    let secs = crate::clock::unix_secs();
    format!("{id} stored {secs}")
}

/// `cloudpop deliver`: one message from a stream to one mailbox. The operator's tool stores
/// what it is given (after CRLF normalisation); only the API insists on a header section.
pub async fn deliver(
    store: &dyn MessageStore,
    accounts: &Accounts,
    usage: &dyn UsageCounters,
    spool_dir: &Path,
    mailbox: &str,
    input: impl AsyncRead + Unpin,
    max_size: u64,
) -> Result<StoredMessage, String> {
    let mut spooler = Spooler::new(spool_dir, max_size, false).await.map_err(|e| e.to_string())?;
    spooler.read_from(input).await.map_err(|e| e.to_string())?;
    let message = spooler.finish().await.map_err(|e| e.to_string())?;
    // No idempotency key and no kept UIDL: nothing to claim.
    let claims = crate::coord::lock::memory::MemoryLocks::new();
    match store_for(store, accounts, &claims, usage, &message, mailbox, &Options::default()).await {
        Outcome::Stored(stored) => Ok(stored),
        Outcome::Duplicate(id) => Err(format!("already delivered as {id}")),
        Outcome::UnknownMailbox => Err(format!("unknown mailbox {}", mailbox.to_ascii_lowercase())),
        Outcome::InvalidName(e) => Err(e.to_string()),
        Outcome::Disabled => Err(format!("mailbox {} is disabled", mailbox.to_ascii_lowercase())),
        Outcome::OverQuota(why) => Err(format!("over quota: {why}")),
        Outcome::Failed(e) => Err(e.to_string()),
    }
}
