//! Read-ahead for sequential retrieval from an object store.
//!
//! Most POP3 clients log in, list, and fetch every message in order (RETR 1, RETR 2, ...). From
//! an object store each RETR is a GET whose first byte takes a round trip (tens of milliseconds
//! against a real store), and fetched one after another a 20-message download waits 20 of
//! them. So when a RETR starts, the messages that follow it are fetched at once, concurrently,
//! into memory, and the RETRs that come for them are answered from there. A TOP scan (TOP 1 0,
//! TOP 2 0, ..., as some clients do to show headers first) reads ahead the same way, but only
//! messages up to [`LARGEST_FOR_TOP`]: a TOP of a large message sends a fraction of it.
//!
//! Memory stays bounded: a session holds at most `retr_read_ahead_kib` of messages read ahead
//! (a message bigger than that is never read ahead and streams as before), and the whole
//! process at most `retr_read_ahead_total_mib`, taken from a semaphore before each fetch (when
//! it is exhausted, sessions simply stop reading ahead). What was read ahead for a message the
//! client deleted, and everything when the session ends, is dropped and its fetch cancelled.

use crate::names::AccountName;
use crate::store::{MessageStore, TraceParent};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Messages read ahead at most at once, however small.
pub(super) const MAX_MESSAGES: usize = 64;

/// The largest message a TOP reads ahead: a TOP needs only the head of a message, and a GET of
/// up to this much takes about as long as one of its first few kilobytes.
pub(super) const LARGEST_FOR_TOP: u64 = 64 * 1024;

/// A message read ahead, whole.
pub(super) struct Prefetched {
    pub body: Vec<u8>,
    pub delivered_by: Option<TraceParent>,
    /// Its share of the process's read-ahead memory, to hold until the message is sent.
    pub permit: OwnedSemaphorePermit,
}

struct Ahead {
    number: u64,
    key: String,
    size: u64,
    task: JoinHandle<Option<Prefetched>>,
}

/// The messages one session has read ahead, or is reading.
pub(super) struct ReadAhead {
    /// Octets this session may hold read ahead (0: read-ahead is off).
    budget: u64,
    /// The process's read-ahead memory, in KiB permits.
    pool: Arc<Semaphore>,
    ahead: Vec<Ahead>,
}

impl ReadAhead {
    pub fn new(budget: u64, pool: Arc<Semaphore>) -> Self {
        Self { budget, pool, ahead: Vec::new() }
    }

    /// What was read ahead for `key`, once its fetch is done; `None` if it was not read ahead
    /// or the fetch failed (the caller then reads it from the store as usual).
    pub async fn take(&mut self, key: &str) -> Option<Prefetched> {
        let at = self.ahead.iter().position(|a| a.key == key)?;
        let ahead = self.ahead.remove(at);
        let taken = ahead.task.await.ok().flatten();
        crate::metrics::metrics().read_ahead.get_or_create(&read_ahead_outcome(taken.is_some())).inc();
        taken
    }

    /// Starts fetching `next` (the messages after the one being sent, in order) as far as the
    /// session's budget and the process's allow, stopping at the first message larger than
    /// `largest`; what is already read ahead stays.
    pub fn schedule(
        &mut self,
        store: &Arc<dyn MessageStore>,
        maildrop: &AccountName,
        next: impl IntoIterator<Item = (u64, String, u64)>,
        largest: u64,
    ) {
        if self.budget == 0 {
            return;
        }
        let mut held: u64 = self.ahead.iter().map(|a| a.size).sum();
        for (number, key, size) in next {
            if self.ahead.len() >= MAX_MESSAGES || held + size > self.budget || size > largest {
                return;
            }
            if self.ahead.iter().any(|a| a.key == key) {
                continue;
            }
            let kib = u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
            let Ok(permit) = self.pool.clone().try_acquire_many_owned(kib) else { return };
            held += size;
            let (store, maildrop, fetched) = (store.clone(), maildrop.clone(), key.clone());
            let task = tokio::spawn(async move { fetch(store, maildrop, fetched, size, permit).await });
            self.ahead.push(Ahead { number, key, size, task });
        }
    }

    /// Drops (and cancels) what was read ahead for the messages (by number) `keep` no longer
    /// wants: those the client deleted.
    pub fn keep_only(&mut self, keep: impl Fn(u64) -> bool) {
        self.ahead.retain(|a| {
            let kept = keep(a.number);
            if !kept {
                a.task.abort();
                crate::metrics::metrics().read_ahead.get_or_create(&read_ahead_outcome(false)).inc();
            }
            kept
        });
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for ahead in &self.ahead {
            ahead.task.abort();
        }
        if !self.ahead.is_empty() {
            let unused = self.ahead.len() as u64;
            crate::metrics::metrics().read_ahead.get_or_create(&read_ahead_outcome(false)).inc_by(unused);
        }
    }
}

fn read_ahead_outcome(used: bool) -> crate::metrics::OutcomeLabels {
    crate::metrics::OutcomeLabels { outcome: if used { "used" } else { "unused" } }
}

/// Reads one message whole; `None` if the store failed or the message is not the size the
/// listing gave (then it is read again, normally, when asked for).
async fn fetch(
    store: Arc<dyn MessageStore>,
    maildrop: AccountName,
    key: String,
    size: u64,
    permit: OwnedSemaphorePermit,
) -> Option<Prefetched> {
    let opened = store.open(&maildrop, &key).await.ok()?;
    let mut body = Vec::with_capacity(usize::try_from(size).ok()?);
    // One octet more than expected shows a size mismatch without reading on.
    opened.body.take(size + 1).read_to_end(&mut body).await.ok()?;
    (body.len() as u64 == size).then_some(Prefetched { body, delivered_by: opened.delivered_by, permit })
}
