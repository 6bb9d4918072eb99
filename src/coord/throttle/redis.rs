//! Failed-login counts in Redis, shared by every frontend of a pool.

use super::{Attempt, Limits, LoginThrottle, TRUSTED_FOR, address_key};
use crate::coord::CoordError;
use crate::coord::redis_link::RedisConn;
use crate::coord::redis_link::span;
use crate::coord::redis_link::unavailable;
use crate::names::AccountName;
use async_trait::async_trait;
use redis::Script;
use std::net::IpAddr;
use std::sync::LazyLock;
use tracing::Instrument;

/// Admits and counts an attempt against one counter. KEYS: the counter. ARGV: window ms,
/// limit. Returns 0 (at the limit, nothing counted) or 1 (counted).
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then return 0 end
        if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        return 1
        ",
    )
});

/// The account's side of an attempt. KEYS: the account's counter, the address's trusted marker
/// for the account (one hash tag: one slot). ARGV: window ms, account limit. Returns 0 (at the
/// limit, nothing counted), 1 (trusted: not counted) or 2 (counted).
static COUNT_ACCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
        if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then return 0 end
        if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        return 2
        ",
    )
});

/// Takes back one count. KEYS: the counter.
static TAKE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end return 1")
});

/// The account's side of a refund. KEYS as for COUNT_ACCOUNT. ARGV: whether the attempt was
/// counted, whether it succeeded, trust ms. A success marks the address trusted.
static REFUND_ACCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[1] == '1' and tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
        if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) end
        return 1
        ",
    )
});

/// Failed-login counts in Redis. An attempt is counted against the account and against the
/// client address by two scripts, one per key slot, so the layout works on Redis Cluster: the
/// account's counter and its trusted addresses share the account's hash tag, the address's
/// counter lives wherever the address hashes. Each count is checked and raised atomically, so
/// parallel attempts still cannot pass a limit together; an attempt the address refuses after
/// the account counted it is taken back from the account.
pub struct RedisThrottle {
    conn: RedisConn,
    prefix: String,
    limits: Limits,
}

impl RedisThrottle {
    pub fn new(conn: RedisConn, key_prefix: &str, limits: Limits) -> Self {
        Self { conn, prefix: key_prefix.to_owned(), limits }
    }

    fn address_key(&self, addr: IpAddr) -> String {
        format!("{}fail:ip:{{{}}}", self.prefix, address_key(addr))
    }

    /// The account's counter and the address's trusted marker for it, in one slot.
    fn account_keys(&self, account: &AccountName, addr: IpAddr) -> [String; 2] {
        let p = &self.prefix;
        [format!("{p}fail:user:{{{account}}}"), format!("{p}trusted:{{{account}}}:{}", address_key(addr))]
    }

    fn window_ms(&self) -> u64 {
        self.limits.window.as_millis().max(1) as u64
    }

    async fn count_address(&self, addr: IpAddr) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let counted: i64 = COUNT
            .key(self.address_key(addr))
            .arg(self.window_ms())
            .arg(self.limits.per_address)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "throttle.reserve"))
            .await
            .map_err(unavailable)?;
        Ok(counted == 1)
    }

    async fn take_back(&self, key: String) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = TAKE_BACK
            .key(key)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "throttle.refund"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl LoginThrottle for RedisThrottle {
    async fn reserve(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<Option<Attempt>, CoordError> {
        let Some(account) = account else {
            return Ok(self.count_address(addr).await?.then_some(Attempt { counted: true }));
        };
        let [counter, trusted] = self.account_keys(account, addr);
        let mut conn = self.conn.clone();
        let admitted: i64 = COUNT_ACCOUNT
            .key(&counter)
            .key(trusted)
            .arg(self.window_ms())
            .arg(self.limits.per_account)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "throttle.reserve"))
            .await
            .map_err(unavailable)?;
        match admitted {
            0 => Ok(None),
            1 => Ok(Some(Attempt { counted: false })),
            _ if self.count_address(addr).await? => Ok(Some(Attempt { counted: true })),
            _ => {
                self.take_back(counter).await?;
                Ok(None)
            }
        }
    }

    async fn refund(
        &self,
        account: &AccountName,
        addr: IpAddr,
        attempt: Attempt,
        success: bool,
    ) -> Result<(), CoordError> {
        let [counter, trusted] = self.account_keys(account, addr);
        let mut conn = self.conn.clone();
        let account_side = async {
            if !attempt.counted && !success {
                return Ok(());
            }
            let _: i64 = REFUND_ACCOUNT
                .key(counter)
                .key(trusted)
                .arg(u8::from(attempt.counted))
                .arg(u8::from(success))
                .arg(TRUSTED_FOR.as_millis() as u64)
                .invoke_async(&mut conn)
                .instrument(span("EVALSHA", "throttle.refund"))
                .await
                .map_err(unavailable)?;
            Ok(())
        };
        let address_side = async {
            match attempt.counted {
                true => self.take_back(self.address_key(addr)).await,
                false => Ok(()),
            }
        };
        // Two slots, two commands; sent together, so one round trip.
        let (account_side, address_side) = tokio::join!(account_side, address_side);
        account_side.and(address_side)
    }

    async fn begin_login(&self, account: &AccountName, min_interval: std::time::Duration) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}login:{{{account}}}", self.prefix))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(min_interval.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .instrument(span("SET", "login_delay"))
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
}
