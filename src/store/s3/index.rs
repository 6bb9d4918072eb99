//! The maildrop index: what a login reads instead of listing a whole maildrop.
//!
//! Listing a maildrop costs one ListObjectsV2 call per thousand messages, so a 100,000-message
//! maildrop took 100 sequential calls at every login. Instead, a login reads:
//!
//! 1. the first page of the maildrop's index keys (the newest index sorts first),
//! 2. that index: every message whose id is at most its watermark, with sizes, and
//! 3. the maildrop's keys after the watermark: what arrived since, plus late-arrival markers.
//!
//! Three requests, whatever the size of the maildrop. Step 1 goes out together with the first
//! page of the maildrop's own listing, which is all a maildrop without an index needs, and
//! which stands in for step 3 when it holds every key (up to 1,000): a login waits one round
//! trip of the store without an index, two with one, and three (four requests, one of them
//! spent) only on an indexed maildrop of more than 1,000 keys. The rules that keep this exact:
//!
//! - **Only the lease holder writes an index**, stamped with its lease's fence in the key. A
//!   holder that lost its lease without noticing can at worst write an index with a smaller
//!   fence, which no reader takes for the newest; a writer that sees a newer index stops.
//! - **Deliveries never write an index.** Ids start with the time they were made, so a new
//!   message sorts after any watermark, which is taken [`LAG`] before the writer's listing.
//!   A message committed more than [`LATE`] after its id was made (a slow upload, a migrated
//!   message keeping its old time) could sort under a watermark written meanwhile, so its
//!   delivery leaves a marker after every id (`~late/{id}.{size}`), which step 3 lists. The
//!   marker is written *before* the message: a delivery cut off between the two (a deadline, a
//!   reset stream, a crash) leaves a marker, never an unmarked message its retry would call a
//!   duplicate. A reader lists a marked message only once its object exists (one HEAD per
//!   marker; markers are rare and live until the next rewrite), and a rewrite keeps markers
//!   whose message has not arrived yet unless they are older than [`ABANDONED`].
//!   `LAG` is twice `LATE`, so clocks may disagree by up to `LATE` without losing a message.
//! - **Removal writes first**: the holder writes an index without the messages it is about to
//!   remove and with them as tombstones, then removes them; a removal that fails half-way
//!   cannot bring a message back, and the next writer removes the tombstones again.
//! - **Anything unreadable is rebuilt**: a missing or damaged index (bad checksum, truncated)
//!   means a full listing, and the next holder writes a fresh one.
//!
//! Small maildrops (under [`INDEX_FROM`] messages) get no index: their listing is one request.

use super::{S3Store, sdk_error};
use crate::names::AccountName;
use crate::store::ids::{ID_LEN, MessageId, is_message_id, received_ms};
use crate::store::s3::KeyLayout;
use crate::store::{MaildropView, StoreError, StoredMessage, Upkeep};
use md5::{Digest, Md5};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tracing::warn;

/// How far behind its writer's listing an index's watermark is.
pub const LAG: Duration = Duration::from_secs(10 * 60);

/// A commit this long after its id was made leaves a late-arrival marker.
pub const LATE: Duration = Duration::from_secs(5 * 60);

/// A late-arrival marker whose message has not arrived after this was left by a delivery that
/// failed for good; its retry, if any, writes it again.
pub const ABANDONED: Duration = Duration::from_secs(3600);

/// Maildrops with at least this many messages under the watermark get an index.
pub const INDEX_FROM: usize = 100;

/// The first line of every index; a different one is a format this version cannot read.
const MAGIC: &str = "cloudpop-maildrop-index 1";

/// A decoded index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// Every message with an id up to here is listed in `messages` (unless removed).
    pub watermark: String,
    pub messages: Vec<StoredMessage>,
    /// Ids being removed: listed nowhere, removed again by the next writer.
    pub tombstones: Vec<String>,
}

impl Index {
    pub fn encode(&self, fence: u64) -> String {
        let mut out = format!("{MAGIC}\nfence {fence}\nwatermark {}\n", self.watermark);
        for m in &self.messages {
            out.push_str(&format!("m {} {}\n", m.id, m.size));
        }
        for id in &self.tombstones {
            out.push_str(&format!("t {id}\n"));
        }
        let sum = hex(&Md5::digest(out.as_bytes()));
        out.push_str(&format!("end {} {} {sum}\n", self.messages.len(), self.tombstones.len()));
        out
    }

    /// The index and the fence it was written with; `None` for anything damaged.
    pub fn decode(text: &str) -> Option<(u64, Self)> {
        // Written whole, so anything short of the final newline is a cut-off copy.
        let body_end = text.strip_suffix('\n')?.rfind('\n')? + 1;
        let (body, end) = text.split_at(body_end);
        let mut end = end.strip_suffix('\n')?.split(' ');
        let (Some("end"), Some(count), Some(tombs), Some(sum), None) =
            (end.next(), end.next(), end.next(), end.next(), end.next())
        else {
            return None;
        };
        if hex(&Md5::digest(body.as_bytes())) != sum {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let fence = lines.next()?.strip_prefix("fence ")?.parse().ok()?;
        let watermark = lines.next()?.strip_prefix("watermark ")?.to_owned();
        let mut index = Index { watermark, ..Default::default() };
        for line in lines {
            match line.split_once(' ')? {
                ("m", rest) => {
                    let (id, size) = rest.split_once(' ')?;
                    index.messages.push(StoredMessage { id: id.to_owned(), size: size.parse().ok()? });
                }
                ("t", id) => index.tombstones.push(id.to_owned()),
                _ => return None,
            }
        }
        let all_ids = index.messages.iter().map(|m| m.id.as_str()).chain(index.tombstones.iter().map(String::as_str));
        let sound = index.messages.len() == count.parse::<usize>().ok()?
            && index.tombstones.len() == tombs.parse::<usize>().ok()?
            && all_ids.into_iter().all(is_message_id);
        sound.then_some((fence, index))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The watermark for a listing taken at `now_ms`: an id-shaped string above every id made up to
/// [`LAG`] before it.
pub fn watermark_at(now_ms: u64) -> String {
    let ms = now_ms.saturating_sub(LAG.as_millis() as u64);
    format!("{:012x}{}", ms & 0xffff_ffff_ffff, "f".repeat(ID_LEN - 12))
}

/// Whether a message with this id committed now must leave a late-arrival marker.
pub fn is_late(id: &str, now_ms: u64) -> bool {
    now_ms.saturating_sub(received_ms(id)) > LATE.as_millis() as u64
}

/// The late-arrival marker's name (after the late prefix) for a message.
pub fn late_name(message: &StoredMessage) -> String {
    format!("{}.{}", message.id, message.size)
}

fn parse_late(name: &str) -> Option<StoredMessage> {
    let (id, size) = name.rsplit_once('.')?;
    let id = MessageId::parse(id)?;
    Some(StoredMessage { id: id.into_string(), size: size.parse().ok()? })
}

/// What one read of a maildrop found, with what a writer needs to replace it.
#[derive(Debug, Default)]
pub struct Read {
    pub messages: Vec<StoredMessage>,
    /// The newest index, with its fence, if one was readable.
    pub index: Option<(u64, Index)>,
    /// Every index key seen (the newest and any left behind).
    pub index_keys: Vec<String>,
    /// Late-arrival marker keys whose message is there (a rewrite folds them into the index).
    pub late_keys: Vec<String>,
    /// Late-arrival marker keys whose message is not there (yet).
    pub waiting_late_keys: Vec<String>,
    /// Listed messages an index written now would cover.
    pub coverable: usize,
    /// An index key was there but could not be read.
    pub damaged: bool,
}

impl Read {
    /// What the lease holder owes the index: a rewrite before it lets go when the index fell
    /// behind (or is missing on a large maildrop, damaged, doubled, or late markers wait).
    pub fn upkeep(&self) -> Upkeep {
        let stray_keys = self.index_keys.len() > usize::from(self.index.is_some());
        let behind = if self.index.is_some() { self.coverable >= INDEX_FROM / 2 } else { self.coverable >= INDEX_FROM };
        if self.damaged || stray_keys || !self.late_keys.is_empty() || behind {
            Upkeep::Due
        } else if self.index.is_some() {
            Upkeep::BeforeRemoval
        } else {
            Upkeep::None
        }
    }
}

/// The first page of a maildrop's listing.
struct FirstPage {
    keys: Vec<(String, u64)>,
    /// The last key of the page when more follow it.
    truncated_after: Option<String>,
}

impl S3Store {
    /// Reads the maildrop through its index (three or four requests) or, without one, a full
    /// listing.
    pub(super) async fn read_maildrop(&self, maildrop: &AccountName) -> Result<Read, StoreError> {
        // An index removed between our listing and our read was replaced by a newer one.
        for _ in 0..3 {
            if let Some(read) = self.try_read(maildrop).await? {
                return Ok(read);
            }
        }
        Err(StoreError::Unavailable("the maildrop index kept changing while being read".into()))
    }

    async fn try_read(&self, maildrop: &AccountName) -> Result<Option<Read>, StoreError> {
        let now = crate::clock::pool_millis();
        let index_prefix = self.keys.indexes(maildrop);
        let prefix = self.keys.maildrop(maildrop);
        // Both at once: the index keys, and the maildrop's first page of keys.
        let (index_keys, first) = tokio::join!(self.list_page(&index_prefix, 100), self.first_page(&prefix));
        let index_keys: Vec<String> = index_keys?.into_iter().map(|(key, _)| key).collect();
        let first = first?;
        let mut read = Read { index_keys, ..Default::default() };
        // The newest readable index. A damaged one is passed over for the one before it, whose
        // tombstones still hold (a full listing would bring back every message whose removal
        // failed); the next writer replaces them all.
        for key in &read.index_keys {
            let Some(bytes) = self.get_small(key).await? else { return Ok(None) };
            let fence = KeyLayout::fence_of(&index_prefix, key);
            match std::str::from_utf8(&bytes).ok().and_then(Index::decode) {
                Some((written, index)) if Some(written) == fence => {
                    read.index = Some((written, index));
                    break;
                }
                _ => {
                    warn!(maildrop = %maildrop, key = %key, "maildrop index is damaged; using the one before it");
                    read.damaged = true;
                }
            }
        }
        // What step 3 lists: the keys after the index's watermark (every key without an index).
        let after = read.index.as_ref().map(|(_, index)| format!("{prefix}{}", index.watermark)).unwrap_or_default();
        let mut listed: Vec<(String, u64)> = first.keys.into_iter().filter(|(key, _)| *key > after).collect();
        if let Some(last) = first.truncated_after {
            // The first page did not hold every key: list on from where it, or the watermark,
            // ended (whichever is later).
            listed.extend(self.list_after(&prefix, last.max(after).as_str()).await?);
        }
        let late_prefix = self.keys.late_prefix(maildrop);
        let mut messages: BTreeMap<String, u64> = BTreeMap::new();
        let mut tombstones = BTreeSet::new();
        if let Some((_, index)) = &read.index {
            messages.extend(index.messages.iter().map(|m| (m.id.clone(), m.size)));
            tombstones.extend(index.tombstones.iter().cloned());
        }
        let mut late = Vec::new();
        for (key, size) in listed {
            if let Some(name) = key.strip_prefix(&late_prefix) {
                match parse_late(name) {
                    Some(m) => late.push((key, m)),
                    None => read.late_keys.push(key),
                }
            } else if let Some(id) = key.strip_prefix(&prefix).and_then(MessageId::parse) {
                messages.insert(id.into_string(), size);
            }
        }
        // A marker is written before its message: list the message only once it is there.
        let objects: Vec<String> = late.iter().map(|(_, m)| self.keys.message(maildrop, &m.id)).collect();
        let arrived = futures::future::join_all(objects.iter().map(|key| self.last_modified(key))).await;
        for ((key, m), arrived) in late.into_iter().zip(arrived) {
            match arrived? {
                Some(_) => {
                    messages.insert(m.id, m.size);
                    read.late_keys.push(key);
                }
                None => read.waiting_late_keys.push(key),
            }
        }
        let watermark = watermark_at(now);
        let covered = read.index.as_ref().map(|(_, index)| index.watermark.as_str()).unwrap_or("");
        read.coverable =
            messages.keys().filter(|id| id.as_str() > covered && id.as_str() <= watermark.as_str()).count();
        read.messages = messages
            .into_iter()
            .filter(|(id, _)| !tombstones.contains(id))
            .map(|(id, size)| StoredMessage { id, size })
            .collect();
        Ok(Some(read))
    }

    pub(super) async fn view_maildrop(&self, maildrop: &AccountName) -> Result<MaildropView, StoreError> {
        let read = self.read_maildrop(maildrop).await?;
        let upkeep = read.upkeep();
        let index = crate::store::IndexSeen::At(read.index.as_ref().map(|(fence, _)| *fence));
        Ok(MaildropView { messages: read.messages, upkeep, index })
    }

    /// The lease holder's rewrite: see the module documentation.
    pub(super) async fn rewrite_index(
        &self,
        maildrop: &AccountName,
        fence: u64,
        removing: &[String],
        seen: crate::store::IndexSeen,
    ) -> Result<(), StoreError> {
        let now = crate::clock::pool_millis();
        let index_prefix = self.keys.indexes(maildrop);
        let mut read = self.read_maildrop(maildrop).await?;
        for _ in 0..3 {
            if read.index_keys.iter().filter_map(|k| KeyLayout::fence_of(&index_prefix, k)).any(|f| f > fence) {
                return Err(StoreError::Failed("a later holder of the maildrop lock has rewritten its index".into()));
            }
            // An index with a lower fence than ours that appeared after our view was read was
            // written by a holder that had lost the maildrop (its write delayed past its
            // lease): its tombstones would remove messages of our view. It is discarded.
            let late = match (seen, &read.index) {
                (crate::store::IndexSeen::At(seen), Some((written, _))) => *written < fence && Some(*written) != seen,
                _ => false,
            };
            if !late {
                break;
            }
            let key = self.keys.index(maildrop, read.index.as_ref().map_or(0, |(f, _)| *f));
            warn!(maildrop = %maildrop, key = %key, "discarding an index written by a holder that had lost the maildrop");
            self.delete_all(std::slice::from_ref(&key)).await?;
            read = self.read_maildrop(maildrop).await?;
        }
        // The previous writer's tombstones: removed again (gone ones count as removed).
        let mut tombstones: Vec<String> = Vec::new();
        if let Some((_, index)) = &read.index
            && !index.tombstones.is_empty()
        {
            let report = crate::store::MessageStore::remove(self, maildrop, &index.tombstones).await?;
            tombstones.extend(report.failed.into_iter().map(|(id, _)| id));
        }
        let removing_set: BTreeSet<&str> = removing.iter().map(String::as_str).collect();
        let watermark = watermark_at(now);
        let covered: Vec<StoredMessage> = read
            .messages
            .iter()
            .filter(|m| m.id.as_str() <= watermark.as_str() && !removing_set.contains(m.id.as_str()))
            .cloned()
            .collect();
        let own_key = self.keys.index(maildrop, fence);
        let mut obsolete: Vec<String> = read.late_keys.clone();
        for key in &read.waiting_late_keys {
            let written = self.last_modified(key).await?;
            if written.is_some_and(|at| crate::clock::unix_secs().saturating_sub(at) > ABANDONED.as_secs()) {
                warn!(maildrop = %maildrop, key = %key, "removing a late-arrival marker whose message never arrived");
                obsolete.push(key.clone());
            }
        }
        if read.index.is_some() || covered.len() >= INDEX_FROM {
            tombstones.extend(removing.iter().cloned());
            let index = Index { watermark, messages: covered, tombstones };
            self.put_small(&own_key, &index.encode(fence)).await?;
            obsolete.extend(read.index_keys.iter().filter(|k| **k != own_key).cloned());
        } else {
            // Too small for an index: the full listing stays the truth, and any index left from
            // when it was larger goes.
            obsolete.extend(read.index_keys.iter().cloned());
        }
        self.delete_all(&obsolete).await
    }

    /// When `key` was written (seconds since the epoch, by the store's clock), or `None` if it
    /// does not exist.
    async fn last_modified(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await.map_err(sdk_error) {
            Ok(head) => Ok(Some(head.last_modified().map_or(0, |at| at.secs().max(0) as u64))),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The first page (up to 1,000) of keys under `prefix`, and whether more follow.
    async fn first_page(&self, prefix: &str) -> Result<FirstPage, StoreError> {
        let page = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).send().await.map_err(sdk_error)?;
        let keys: Vec<(String, u64)> = page
            .contents()
            .iter()
            .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0).max(0) as u64)))
            .collect();
        let truncated_after = match page.is_truncated() {
            Some(true) => Some(keys.last().map(|(key, _)| key.clone()).unwrap_or_default()),
            _ => None,
        };
        Ok(FirstPage { keys, truncated_after })
    }

    /// One page of keys under `prefix`.
    async fn list_page(&self, prefix: &str, max: i32) -> Result<Vec<(String, u64)>, StoreError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(max)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0).max(0) as u64)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ids::{new_message_id, new_message_id_at, with_uidl};

    fn sample() -> Index {
        Index {
            watermark: watermark_at(crate::clock::unix_millis()),
            messages: vec![
                StoredMessage { id: new_message_id_at(1_600_000_000_000), size: 12 },
                StoredMessage { id: with_uidl(&new_message_id_at(1_600_000_000_001), "old-7"), size: 0 },
            ],
            tombstones: vec![new_message_id_at(1_500_000_000_000)],
        }
    }

    #[test]
    fn an_index_round_trips() {
        let index = sample();
        assert_eq!(Index::decode(&index.encode(42)), Some((42, index)));
        let empty = Index { watermark: watermark_at(0), ..Default::default() };
        assert_eq!(Index::decode(&empty.encode(1)), Some((1, empty)));
    }

    #[test]
    fn any_damage_is_detected() {
        let text = sample().encode(42);
        // Every truncation, and every single-byte change, is refused.
        for cut in 0..text.len() {
            assert_eq!(Index::decode(&text[..cut]), None, "truncated at {cut}");
        }
        for at in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            if let Ok(changed) = String::from_utf8(bytes)
                && changed != text
            {
                assert_eq!(Index::decode(&changed), None, "byte {at} changed");
            }
        }
        assert_eq!(Index::decode(""), None);
        assert_eq!(Index::decode("cloudpop-maildrop-index 2\n"), None);
    }

    #[test]
    fn the_watermark_lags_and_orders_like_ids() {
        let now = crate::clock::unix_millis();
        let fresh = new_message_id();
        assert!(watermark_at(now).as_str() < fresh.as_str(), "a new id must sort after the watermark");
        let old = new_message_id_at(now - LAG.as_millis() as u64 - 1);
        assert!(old.as_str() < watermark_at(now).as_str());
        assert!(with_uidl(&old, "zzz").as_str() < watermark_at(now).as_str());
        assert_eq!(watermark_at(now).len(), ID_LEN);
    }

    #[test]
    fn lateness_comes_from_the_id() {
        let now = crate::clock::unix_millis();
        assert!(!is_late(&new_message_id(), now));
        assert!(is_late(&new_message_id_at(now - LATE.as_millis() as u64 - 1000), now));
        let m = StoredMessage { id: with_uidl(&new_message_id(), "a.b"), size: 77 };
        assert_eq!(parse_late(&late_name(&m)), Some(m));
        assert_eq!(parse_late("nonsense.5"), None);
    }
}
