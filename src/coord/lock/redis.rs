//! Maildrop leases in Redis, shared by every frontend of a pool.
//!
//! A lease is the key `{prefix}lock:{<maildrop>}` holding the owner's token, with a PX expiry.
//! Acquire is a Lua script: if the key is free it stores a token that starts with the lease's
//! fencing number, the larger of the server's clock in microseconds and one more than the last
//! fence of that maildrop (kept in `{prefix}fence:{<maildrop>}` for 30 days, past which the clock
//! alone is larger). Renew and release act only while the key still holds our token, so a
//! frontend that lost its lease can never extend or delete the next holder's. The braces are
//! Redis Cluster hash tags: both keys of a maildrop live in one slot.

use super::{LeaseToken, MaildropLocks};
use crate::coord::CoordError;
use crate::coord::redis_link::RedisConn;
use crate::coord::redis_link::span;
use crate::coord::redis_link::unavailable;
use crate::names::AccountName;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::Instrument;

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    )
});

/// Takes a free lease. Keyed by the request's random part (ARGV[1]): a script the client runs
/// again after losing its reply (a Redis Cluster client retries on a timeout) finds its own
/// lease and answers it, rather than "held".
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
if held then
  local mine = '.' .. ARGV[1]
  if string.sub(held, -string.len(mine)) == mine then return held end
  return false
end
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last and last >= fence then fence = last + 1 end
local token = string.format('%.0f', fence) .. '.' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', ARGV[3])
return token",
    )
});

/// Takes a delivery claim with token ARGV[1]; answers 1 if it is ours (also when this is a
/// retry of a call that took it), 0 if another attempt holds it.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return 1 end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1",
    )
});

/// Deletes a lease whose token ends in `.ARGV[1]`: taking back a lease whose acquire reply was
/// lost, when the fence part of the token is unknown.
static TAKE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
local mine = '.' .. ARGV[1]
if held and string.sub(held, -string.len(mine)) == mine then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

/// How long a maildrop's last fence is remembered: far longer than any lease or clock step.
const FENCE_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
});

/// Leases in Redis.
#[derive(Clone)]
pub struct RedisLocks {
    conn: RedisConn,
    prefix: String,
}

impl RedisLocks {
    pub fn new(conn: RedisConn, key_prefix: &str) -> Self {
        Self { conn, prefix: key_prefix.to_owned() }
    }

    fn key(&self, maildrop: &AccountName) -> String {
        format!("{}lock:{{{maildrop}}}", self.prefix)
    }

    fn fence_key(&self, maildrop: &AccountName) -> String {
        format!("{}fence:{{{maildrop}}}", self.prefix)
    }

    fn claim_key(&self, maildrop: &AccountName, scope: &str) -> String {
        format!("{}claim:{{{maildrop}}}:{scope}", self.prefix)
    }
}

impl RedisLocks {
    /// Releases the lease with `random` as its token's random part in the background, retrying
    /// for a while (the connection that lost the reply is usually being re-established).
    fn take_back(&self, key: String, random: LeaseToken) {
        let mut conn = self.conn.clone();
        tokio::spawn(
            async move {
                let mut pause = Duration::from_millis(250);
                for _ in 0..6 {
                    let released: Result<i64, _> = TAKE_BACK.key(&key).arg(&random.0).invoke_async(&mut conn).await;
                    if released.is_ok() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                tracing::warn!("cannot take back a lease whose acquire failed; it expires by itself");
            }
            .instrument(span("EVALSHA", "lock.take_back")),
        );
    }
}

impl RedisLocks {
    /// [`MaildropLocks::acquire`] as request `random` (the random part of the token): asking
    /// again with the same request, after a lost reply, answers the lease it took.
    pub async fn acquire_as(
        &self,
        maildrop: &AccountName,
        ttl: Duration,
        random: LeaseToken,
    ) -> Result<Option<LeaseToken>, CoordError> {
        let mut conn = self.conn.clone();
        let set: Result<Option<String>, _> = ACQUIRE
            .key(self.key(maildrop))
            .key(self.fence_key(maildrop))
            .arg(&random.0)
            .arg(millis(ttl))
            .arg(millis(FENCE_MEMORY))
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "lock.acquire"))
            .await;
        match set {
            Ok(token) => Ok(token.map(LeaseToken)),
            Err(e) => {
                // The script may have run with only its reply lost (a timeout, a dropped
                // connection): take back the lease we may hold, or the user would be locked
                // out for a whole lease by a lock that nobody holds. Our token is the one whose
                // random part is ours.
                self.take_back(self.key(maildrop), random);
                Err(unavailable(e))
            }
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

#[async_trait]
impl MaildropLocks for RedisLocks {
    async fn claim(
        &self,
        maildrop: &AccountName,
        scope: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseToken>, CoordError> {
        let token = LeaseToken::generate();
        let mut conn = self.conn.clone();
        let ours: i64 = CLAIM
            .key(self.claim_key(maildrop, scope))
            .arg(&token.0)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "delivery.claim"))
            .await
            .map_err(unavailable)?;
        Ok((ours == 1).then_some(token))
    }

    async fn unclaim(&self, maildrop: &AccountName, scope: &str, token: &LeaseToken) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE
            .key(self.claim_key(maildrop, scope))
            .arg(&token.0)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "delivery.unclaim"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Asks Redis for its `TIME` (as cheap as a PING) and records how far the pool's clock is
    /// from this host's (see [`crate::clock::pool_millis`]).
    async fn ping(&self) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let sent = crate::clock::unix_millis();
        let (secs, micros): (u64, u64) =
            redis::cmd("TIME").query_async(&mut conn).instrument(span("TIME", "health")).await.map_err(unavailable)?;
        let received = crate::clock::unix_millis();
        let pool = secs.saturating_mul(1000).saturating_add(micros / 1000);
        // The reply was made somewhere between sending and receiving: take the middle.
        let here = sent + (received.saturating_sub(sent)) / 2;
        crate::clock::set_pool_offset_millis(pool as i64 - here as i64);
        Ok(())
    }

    async fn acquire(&self, maildrop: &AccountName, ttl: Duration) -> Result<Option<LeaseToken>, CoordError> {
        self.acquire_as(maildrop, ttl, LeaseToken::generate()).await
    }

    async fn renew(&self, maildrop: &AccountName, token: &LeaseToken, ttl: Duration) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let renewed: i64 = RENEW
            .key(self.key(maildrop))
            .arg(&token.0)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "lock.renew"))
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn release(&self, maildrop: &AccountName, token: &LeaseToken) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE
            .key(self.key(maildrop))
            .arg(&token.0)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "lock.release"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn force_release(&self, maildrop: &AccountName) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.key(maildrop))
            .query_async(&mut conn)
            .instrument(span("DEL", "lock.force_release"))
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }
}
