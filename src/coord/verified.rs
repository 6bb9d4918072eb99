//! Password checks remembered across the pool: a set of opaque tags with an expiry each.
//!
//! A tag is made by the caller (the accounts' pool-wide verified-credential cache) as an HMAC
//! under a key Redis never sees, so what Redis holds cannot be checked against a password without
//! that key. An entry is the key `{prefix}verified:{tag}` with a PX expiry and no value worth
//! reading. Losing entries (a Redis restart, eviction) costs full checks, nothing else.

use crate::coord::CoordError;
use crate::coord::redis_link::{RedisConn, span, unavailable};
use async_trait::async_trait;
use std::time::Duration;
use tracing::Instrument;

/// Where the pool's remembered checks live.
#[async_trait]
pub trait VerifiedTags: Send + Sync + 'static {
    /// Whether `tag` was remembered and has not expired.
    async fn contains(&self, tag: &str) -> Result<bool, CoordError>;

    /// Remembers `tag` for `ttl`.
    async fn insert(&self, tag: &str, ttl: Duration) -> Result<(), CoordError>;
}

/// Tags in Redis, shared by the pool.
pub struct RedisVerified {
    conn: RedisConn,
    prefix: String,
}

impl RedisVerified {
    pub fn new(conn: RedisConn, key_prefix: &str) -> Self {
        Self { conn, prefix: key_prefix.to_owned() }
    }

    fn key(&self, tag: &str) -> String {
        format!("{}verified:{tag}", self.prefix)
    }
}

#[async_trait]
impl VerifiedTags for RedisVerified {
    async fn contains(&self, tag: &str) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.key(tag))
            .query_async(&mut conn)
            .instrument(span("EXISTS", "verified.contains"))
            .await
            .map_err(unavailable)
    }

    async fn insert(&self, tag: &str, ttl: Duration) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let millis = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        redis::cmd("SET")
            .arg(self.key(tag))
            .arg("1")
            .arg("PX")
            .arg(millis)
            .query_async::<()>(&mut conn)
            .instrument(span("SET", "verified.insert"))
            .await
            .map_err(unavailable)
    }
}

/// Tags in this process: what an embedded server or a test uses in place of Redis.
#[derive(Default)]
pub struct MemoryVerified(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

#[async_trait]
impl VerifiedTags for MemoryVerified {
    async fn contains(&self, tag: &str) -> Result<bool, CoordError> {
        let now = std::time::Instant::now();
        Ok(crate::sync::lock(&self.0).get(tag).is_some_and(|until| *until > now))
    }

    async fn insert(&self, tag: &str, ttl: Duration) -> Result<(), CoordError> {
        let now = std::time::Instant::now();
        let mut tags = crate::sync::lock(&self.0);
        if tags.len() >= 100_000 {
            tags.retain(|_, until| *until > now);
        }
        tags.insert(tag.to_owned(), now + ttl);
        Ok(())
    }
}
