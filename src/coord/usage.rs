//! Per-maildrop usage counters (messages and octets), so a delivery checks a quota without
//! listing the mailbox.
//!
//! A counter is made from a listing when a delivery to a mailbox with a quota finds none, and
//! then follows every change: each stored message adds to it, each QUIT and operator deletion
//! takes away what it removed, and a sweep that expired messages drops it (the next delivery
//! counts again). A counter only changes while it exists, so a change that raced its making
//! is the most it can miss, and every counter is remade from a listing at least once every
//! [`RECOUNT_EVERY`], which bounds how long such a miss lives. Quotas are therefore enforced to
//! within the deliveries that race each other, as they always were. The counters live in
//! Redis (`usage:{<name>}`), shared by the pool; without Redis there are none ([`Uncounted`]).

use crate::coord::CoordError;
use crate::coord::redis_link::unavailable;
use crate::coord::redis_link::{RedisConn, span};
use crate::names::AccountName;
use crate::store::StoredMessage;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::Instrument;

/// How long a counter lives before a listing makes it again.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What a maildrop holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub messages: u64,
    pub octets: u64,
}

impl Usage {
    /// The usage of a listing.
    pub fn of(listing: &[StoredMessage]) -> Self {
        Self { messages: listing.len() as u64, octets: listing.iter().map(|m| m.size).sum() }
    }
}

/// Where usage counters live.
#[async_trait]
pub trait UsageCounters: Send + Sync + 'static {
    /// The counter, if there is one.
    async fn get(&self, maildrop: &AccountName) -> Result<Option<Usage>, CoordError>;

    /// Makes the counter from a listing, unless one exists already.
    async fn start(&self, maildrop: &AccountName, usage: Usage) -> Result<(), CoordError>;

    /// Adds to the counter (negative to take away), if it exists; never below zero.
    async fn add(&self, maildrop: &AccountName, messages: i64, octets: i64) -> Result<(), CoordError>;

    /// Drops the counter: the next delivery that needs it counts again.
    async fn forget(&self, maildrop: &AccountName) -> Result<(), CoordError>;
}

/// No counters: every quota check lists the mailbox. The embedded default and in-process
/// locks use this, because `cloudpop deliver` and `cloudpop account` write the store from
/// other processes, which in-process counters would never hear of; listing a local directory
/// is cheap.
pub struct Uncounted;

#[async_trait]
impl UsageCounters for Uncounted {
    async fn get(&self, _: &AccountName) -> Result<Option<Usage>, CoordError> {
        Ok(None)
    }

    async fn start(&self, _: &AccountName, _: Usage) -> Result<(), CoordError> {
        Ok(())
    }

    async fn add(&self, _: &AccountName, _: i64, _: i64) -> Result<(), CoordError> {
        Ok(())
    }

    async fn forget(&self, _: &AccountName) -> Result<(), CoordError> {
        Ok(())
    }
}

/// KEYS: the counter. ARGV: messages, octets, lifetime ms.
static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
         redis.call('HSET', KEYS[1], 'messages', ARGV[1], 'octets', ARGV[2]) \
         redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 1",
    )
});

/// KEYS: the counter. ARGV: messages, octets (signed).
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
         for i, field in ipairs({'messages', 'octets'}) do \
           if redis.call('HINCRBY', KEYS[1], field, ARGV[i]) < 0 then redis.call('HSET', KEYS[1], field, 0) end \
         end return 1",
    )
});

/// Counters in Redis, shared by the pool.
pub struct RedisUsage {
    conn: RedisConn,
    prefix: String,
}

impl RedisUsage {
    pub fn new(conn: RedisConn, key_prefix: &str) -> Self {
        Self { conn, prefix: key_prefix.to_owned() }
    }

    fn key(&self, maildrop: &AccountName) -> String {
        format!("{}usage:{{{maildrop}}}", self.prefix)
    }
}

#[async_trait]
impl UsageCounters for RedisUsage {
    async fn get(&self, maildrop: &AccountName) -> Result<Option<Usage>, CoordError> {
        let mut conn = self.conn.clone();
        let (messages, octets): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key(maildrop))
            .arg("messages")
            .arg("octets")
            .query_async(&mut conn)
            .instrument(span("HMGET", "usage.get"))
            .await
            .map_err(unavailable)?;
        Ok(messages.zip(octets).map(|(messages, octets)| Usage { messages, octets }))
    }

    async fn start(&self, maildrop: &AccountName, usage: Usage) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = START
            .key(self.key(maildrop))
            .arg(usage.messages)
            .arg(usage.octets)
            .arg(RECOUNT_EVERY.as_millis() as u64)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "usage.start"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn add(&self, maildrop: &AccountName, messages: i64, octets: i64) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = ADD
            .key(self.key(maildrop))
            .arg(messages)
            .arg(octets)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "usage.add"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn forget(&self, maildrop: &AccountName) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.key(maildrop))
            .query_async::<()>(&mut conn)
            .instrument(span("DEL", "usage.forget"))
            .await
            .map_err(unavailable)
    }
}
