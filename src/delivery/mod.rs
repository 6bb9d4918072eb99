//! Storing new mail: the one delivery service that every way in (the gRPC Ingest API, LMTP,
//! `cloudpop import` and `cloudpop deliver`) calls.
//!
//! A message is first normalised to CRLF, size-capped, sanity-checked and spooled to a local
//! temporary file (bounded memory, whatever its size); then it is stored for each recipient
//! from the spool. Idempotency: the message id is chosen and recorded under the caller's key
//! *before* the message is stored, so a retry after a lost answer finds the id and stores
//! nothing new, and a retry after a crash half-way stores the message under the same id.
//!
//! Layout: this file (the service and its per-recipient loop), [`spool`] (the message on its
//! way in), [`markers`] (what the idempotency and UIDL markers say), [`store`] (storing for one
//! mailbox), [`crlf`] and [`headers`] (normalising and checking).

pub mod crlf;
pub mod headers;
pub mod markers;
pub mod spool;
mod store;

pub use crlf::CrlfNormalizer;
pub use headers::HeaderCheck;
pub use spool::{Spooled, Spooler};

use crate::accounts::Accounts;
use crate::coord::lock::MaildropLocks;
use crate::coord::usage::UsageCounters;
use crate::metrics::{IngestLabels, ListenerLabels, metrics};
use crate::names::InvalidName;
use crate::store::{MarkerKey, MessageStore, StoreError, StoredMessage, TraceParent};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

/// Where and how much mail is received, for every ingest path.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Where incoming messages wait while they are received.
    pub spool_dir: PathBuf,
    /// Largest message accepted, in octets after CRLF normalisation.
    pub max_message_size: u64,
    /// Octets every delivery in progress may hold in the spool together.
    pub max_spool_bytes: u64,
}

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
    #[error("the spool is full with other deliveries; try again later")]
    SpoolFull,
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

/// The way a message came in, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The gRPC Ingest API.
    Grpc,
    Lmtp,
    /// `cloudpop import` into the store.
    Import,
    /// `cloudpop deliver` into the store.
    Cli,
}

impl Via {
    /// The `via` label of `cloudpop_ingest_deliveries_total`.
    pub fn label(self) -> &'static str {
        match self {
            Via::Grpc => "grpc",
            Via::Lmtp => "lmtp",
            Via::Import => "import",
            Via::Cli => "cli",
        }
    }

    /// The `listener` label of `cloudpop_ingest_bytes_total`.
    fn listener(self) -> &'static str {
        match self {
            Via::Grpc => "api",
            Via::Lmtp => "lmtp",
            Via::Import => "import",
            Via::Cli => "cli",
        }
    }
}

/// One recipient of a message: the mailbox, the address as the sender gave it (for the log
/// line; the mailbox name where there is no other), and how to store it there.
pub struct Recipient<'a> {
    pub mailbox: &'a str,
    pub address: &'a str,
    pub options: Options,
}

/// Stores mail. Cheap to clone.
#[derive(Clone)]
pub struct DeliveryService {
    store: Arc<dyn MessageStore>,
    accounts: Accounts,
    claims: Arc<dyn MaildropLocks>,
    usage: Arc<dyn UsageCounters>,
    settings: Arc<DeliverySettings>,
    /// The spool's room, in KiB, shared by every delivery of the process.
    spool_room: Arc<tokio::sync::Semaphore>,
}

impl DeliveryService {
    /// Attempts that share an idempotency key or a kept UIDL run one at a time through `claims`.
    pub fn new(
        store: Arc<dyn MessageStore>,
        accounts: Accounts,
        claims: Arc<dyn MaildropLocks>,
        usage: Arc<dyn UsageCounters>,
        settings: DeliverySettings,
    ) -> Self {
        let room_kib = usize::try_from(settings.max_spool_bytes / 1024).unwrap_or(usize::MAX);
        let spool_room = Arc::new(tokio::sync::Semaphore::new(room_kib.min(tokio::sync::Semaphore::MAX_PERMITS)));
        Self { store, accounts, claims, usage, settings: Arc::new(settings), spool_room }
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// An empty spool for one message; `check_headers` refuses input that does not look like
    /// mail (the API insists on it; the operator's tools store what they are given).
    pub async fn spooler(&self, check_headers: bool) -> Result<Spooler, DeliveryError> {
        let (dir, max) = (&self.settings.spool_dir, self.settings.max_message_size);
        Spooler::new(dir, max, check_headers, self.spool_room.clone()).await
    }

    /// Stores `message` for each recipient in turn, counting and logging each outcome.
    pub async fn deliver(&self, message: &Spooled, via: Via, recipients: &[Recipient<'_>]) -> Vec<Outcome> {
        metrics().ingest_bytes.get_or_create(&ListenerLabels { listener: via.listener() }).inc_by(message.size);
        let mut outcomes = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let outcome = self.store_for(message, recipient.mailbox, &recipient.options).await;
            let status = outcome.label();
            metrics().ingest_deliveries.get_or_create(&IngestLabels { via: via.label(), status }).inc();
            info!(recipient = %recipient.address.escape_debug(), mailbox = %recipient.mailbox.escape_debug(), status, "recipient");
            if let Outcome::Failed(e) = &outcome {
                warn!(error = %e, via = via.label(), "delivery failed for a recipient");
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Stores `message` for one recipient, honouring quota, idempotency and kept UIDLs.
    pub async fn store_for(&self, message: &Spooled, mailbox: &str, options: &Options) -> Outcome {
        let parts = store::Parts {
            store: self.store.as_ref(),
            accounts: &self.accounts,
            claims: &self.claims,
            usage: self.usage.as_ref(),
        };
        store::store_for(&parts, message, mailbox, options).await
    }
}

/// How a delivery wants its message stored.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Makes retries safe: an earlier delivery with this key is not repeated.
    pub idempotency_key: Option<MarkerKey>,
    /// A UIDL kept from another server (already validated with [`ids::is_valid_kept_uidl`]).
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
