//! Failed-login counts in Redis, shared by every frontend of a pool.

use super::{Limits, LoginThrottle, address_key};
use crate::lock::LockError;
use crate::lock::redis::unavailable;
use crate::names::AccountName;
use crate::redis_conn::span;
use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use std::net::IpAddr;
use std::sync::LazyLock;
use tracing::Instrument;

/// Increments a counter, starting its window on the first failure.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n",
    )
});

pub struct RedisThrottle {
    conn: ConnectionManager,
    prefix: String,
    limits: Limits,
}

impl RedisThrottle {
    pub fn new(conn: ConnectionManager, key_prefix: &str, limits: Limits) -> Self {
        Self { conn, prefix: key_prefix.to_owned(), limits }
    }

    fn keys(&self, account: Option<&AccountName>, addr: IpAddr) -> Vec<(String, u32)> {
        let mut keys = vec![(format!("{}fail:ip:{}", self.prefix, address_key(addr)), self.limits.per_address)];
        if let Some(account) = account {
            keys.push((format!("{}fail:user:{account}", self.prefix), self.limits.per_account));
        }
        keys
    }
}

#[async_trait]
impl LoginThrottle for RedisThrottle {
    async fn allowed(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<bool, LockError> {
        let keys = self.keys(account, addr);
        let mut conn = self.conn.clone();
        let counts: Vec<Option<u32>> = redis::cmd("MGET")
            .arg(keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .query_async(&mut conn)
            .instrument(span("MGET", "throttle.check"))
            .await
            .map_err(unavailable)?;
        Ok(counts.iter().zip(&keys).all(|(count, (_, limit))| count.unwrap_or(0) < *limit))
    }

    async fn failed(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<(), LockError> {
        let window = self.limits.window.as_millis().max(1) as u64;
        let mut conn = self.conn.clone();
        for (key, _) in self.keys(account, addr) {
            let mut count = COUNT.key(key);
            count.arg(window);
            let counting = count.invoke_async::<i64>(&mut conn).instrument(span("EVALSHA", "throttle.count"));
            counting.await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn begin_login(&self, account: &AccountName, min_interval: std::time::Duration) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}login:{account}", self.prefix))
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
