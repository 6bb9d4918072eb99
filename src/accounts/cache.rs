//! Account records cached in memory, dropped pool-wide through Redis pub/sub.
//!
//! Without it every login attempt (and every delivery) fetches the account record from the
//! object store: a request each time, and one any client can cause with made-up names. With it
//! a record, or the fact that there is none, is kept for `account_cache_secs`.
//!
//! Staleness is bounded by invalidation, not by the TTL. Every change of a record (created,
//! password, policy, enabled, deleted), on any frontend or from the command line, publishes the
//! name on `{redis_key_prefix}accounts`; every frontend listens and drops its entry, so the
//! change holds pool-wide within a round trip. Entries are served only while that subscription
//! is up: when it drops, the cache is cleared and bypassed until it is back (a frontend that
//! cannot hear changes must not trust what it remembers). A read that raced an invalidation is
//! not cached. The embedded deployment has no cache (records are local files, and the command
//! line writes them from another process).
//!
//! Pub/sub is fire-and-forget, so staleness is also bounded when a message is lost (a failed
//! PUBLISH, a message dropped on a Cluster bus): every announcement first counts itself in
//! `{redis_key_prefix}accounts:changes`, and each feed compares that count with the messages it
//! heard every [`PING_EVERY`]: a change it missed clears its whole cache. A publish is retried
//! before it is given up, a write that failed (it may have applied anyway: a timed-out PUT) is
//! announced all the same, and a remembered absence lives at most [`NEGATIVE_TTL`] (and a
//! delivery reads the store again before it bounces).

use crate::coord::redis_link::Subscriber;
use crate::names::AccountName;
use crate::store::AccountRecord;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Longest time a remembered absence ("no such account") is served.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Remembered records, with the epoch that tells a racing read from a safe one.
pub struct RecordCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<AccountName, (Option<AccountRecord>, Instant)>>,
    /// Bumped by every invalidation and every change of `live`.
    epoch: AtomicU64,
    /// Whether entries may be served (the invalidation feed is connected).
    live: AtomicBool,
}

/// A record read from the cache: `None` is a miss, `Some(None)` a remembered absence.
pub type Cached = Option<Option<AccountRecord>>;

impl RecordCache {
    /// A cache that serves nothing until [`Self::set_live`]; `ttl` 0 never serves anything.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<AccountName, (Option<AccountRecord>, Instant)>> {
        crate::sync::lock(&self.entries)
    }

    /// Take before reading the store; hand to [`Self::insert`] with what was read.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, name: &AccountName) -> Cached {
        if !self.live.load(Ordering::Acquire) || self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries();
        let (record, expires) = entries.get(name)?;
        (*expires > Instant::now()).then(|| record.clone())
    }

    /// Remembers what a read that started at `epoch` found, unless anything was invalidated
    /// since (the read may predate the change).
    pub fn insert(&self, name: &AccountName, record: Option<AccountRecord>, epoch: u64) {
        if !self.live.load(Ordering::Acquire) || self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                return;
            }
        }
        let ttl = if record.is_some() { self.ttl } else { self.ttl.min(NEGATIVE_TTL) };
        entries.insert(name.clone(), (record, now + ttl));
    }

    /// Forgets one record (its account changed here or elsewhere).
    pub fn invalidate(&self, name: &AccountName) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(name);
    }

    /// Forgets everything and serves (or stops serving) from now on.
    pub fn set_live(&self, live: bool) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.live.store(live, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where record changes are announced.
#[derive(Clone)]
pub enum Announcer {
    /// One process: dropping the local entry is all there is to do.
    Local,
    /// A pool: every frontend's feed hears the name on `channel`; `changes` counts them.
    Redis { conn: crate::coord::redis_link::RedisConn, channel: String, changes: String },
}

/// Attempts at announcing one change.
const ANNOUNCE_ATTEMPTS: u32 = 3;

impl Announcer {
    /// Tells the pool that `name`'s record changed: counts the change, then publishes the name,
    /// retried a few times. A change that could not be counted or published is logged; feeds
    /// that missed a counted change clear their caches at their next check.
    pub async fn announce(&self, name: &AccountName) {
        let Announcer::Redis { conn, channel, changes } = self else { return };
        let mut conn = conn.clone();
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=ANNOUNCE_ATTEMPTS {
            let counted: Result<i64, _> = redis::cmd("INCR").arg(changes).query_async(&mut conn).await;
            let published = match counted {
                Ok(_) => redis::cmd("PUBLISH").arg(channel).arg(name.as_str()).query_async::<i64>(&mut conn).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(_) => return,
                Err(e) if attempt == ANNOUNCE_ATTEMPTS => {
                    warn!(account = %name, error = %e.category(), "could not announce an account change to the pool");
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
}

/// The channel record changes are announced on.
pub fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}accounts")
}

/// The counter of announced changes.
pub fn changes_key(key_prefix: &str) -> String {
    format!("{key_prefix}accounts:changes")
}

/// How often the feed proves its connection alive, and how long a ping may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What a feed listens to: the channel, and the counter it checks against what it heard.
pub struct Feed {
    pub channel: String,
    pub changes: String,
    pub conn: crate::coord::redis_link::RedisConn,
}

/// Listens for record changes for as long as the process runs, reconnecting after a failure;
/// the cache serves entries only while subscribed.
pub fn spawn_feed(mut nodes: Subscriber, feed: Feed, cache: Arc<RecordCache>) {
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            let listened = match nodes.client().await {
                Ok(client) => listen(&client, &feed, &cache).await,
                Err(e) => Err(FeedError::Redis(e.category().to_owned())),
            };
            match listened {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => warn!(error = %e, "account change feed unavailable; account records are read from the store"),
            }
            cache.set_live(false);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
}

/// Why the change feed stopped; the cache stops serving until it is back.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("timed out subscribing")]
    SubscribeTimeout,
    #[error("{0}")]
    Redis(String),
    #[error("subscription connection closed")]
    Closed,
    #[error("subscription connection stopped answering")]
    Silent,
}

/// The number of announced changes (0 before the first).
async fn changes(feed: &Feed) -> Result<i64, FeedError> {
    let mut conn = feed.conn.clone();
    let mut get = redis::cmd("GET");
    get.arg(&feed.changes);
    match tokio::time::timeout(PING_TIMEOUT, get.query_async::<Option<i64>>(&mut conn)).await {
        Ok(Ok(count)) => Ok(count.unwrap_or(0)),
        Ok(Err(e)) => Err(FeedError::Redis(e.category().to_owned())),
        Err(_) => Err(FeedError::Silent),
    }
}

async fn listen(client: &redis::Client, feed: &Feed, cache: &RecordCache) -> Result<(), FeedError> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&feed.channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(PING_TIMEOUT * 2, connect)
        .await
        .map_err(|_| FeedError::SubscribeTimeout)?
        .map_err(|e| FeedError::Redis(e.category().to_owned()))?;
    let (mut sink, mut messages) = pubsub.split();
    // Changes counted from here on must each be heard, or the cache is cleared.
    let mut counted = changes(feed).await?;
    let mut heard = 0i64;
    cache.set_live(true);
    info!("account change feed subscribed; account records are cached");
    let mut ticks = tokio::time::interval(PING_EVERY);
    ticks.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Err(FeedError::Closed) };
                heard += 1;
                let payload: String = message.get_payload().unwrap_or_default();
                match AccountName::parse(&payload) {
                    Ok(name) => cache.invalidate(&name),
                    // Not a name this version knows: forget everything rather than guess.
                    Err(_) => cache.set_live(true),
                }
            }
            _ = ticks.tick() => {
                // In subscribed mode (RESP2) PING answers ["pong", ""], not +PONG: any reply will do.
                let ping = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return Err(FeedError::Silent);
                }
                let now = changes(feed).await?;
                if now != counted + heard {
                    // More changes than messages (one was lost), or fewer (Redis lost the
                    // counter): what is remembered may be stale.
                    if now > counted + heard {
                        warn!(missed = now - counted - heard, "account change feed missed changes; cache cleared");
                    }
                    cache.set_live(true);
                }
                (counted, heard) = (now, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn record(s: &str) -> AccountRecord {
        AccountRecord { name: s.into(), password_hash: "$argon2id$x".into(), ..Default::default() }
    }

    fn live(ttl: Duration) -> RecordCache {
        let cache = RecordCache::new(ttl, 3);
        cache.set_live(true);
        cache
    }

    #[test]
    fn serves_only_while_live_and_within_ttl() {
        let cache = RecordCache::new(Duration::from_secs(60), 10);
        let epoch = cache.epoch();
        cache.insert(&name("a"), Some(record("a")), epoch);
        assert_eq!(cache.get(&name("a")), None, "served before the feed was up");
        cache.set_live(true);
        cache.insert(&name("a"), Some(record("a")), cache.epoch());
        cache.insert(&name("ghost"), None, cache.epoch());
        assert_eq!(cache.get(&name("a")), Some(Some(record("a"))));
        assert_eq!(cache.get(&name("ghost")), Some(None), "absence is remembered");
        cache.set_live(false);
        assert_eq!(cache.get(&name("a")), None, "served after the feed dropped");
        let expired = live(Duration::ZERO);
        expired.insert(&name("a"), Some(record("a")), expired.epoch());
        assert_eq!(expired.get(&name("a")), None);
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_remembered() {
        let cache = live(Duration::from_secs(60));
        let before = cache.epoch();
        cache.invalidate(&name("a"));
        cache.insert(&name("a"), Some(record("a")), before);
        assert_eq!(cache.get(&name("a")), None);
        cache.insert(&name("a"), Some(record("a")), cache.epoch());
        cache.invalidate(&name("a"));
        assert_eq!(cache.get(&name("a")), None);
    }

    #[test]
    fn stays_within_capacity() {
        let cache = live(Duration::from_secs(60));
        for i in 0..10 {
            cache.insert(&name(&format!("u{i}")), None, cache.epoch());
        }
        assert_eq!(cache.len(), 3);
    }
}
