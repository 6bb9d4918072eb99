//! Failed-login counts in Redis, shared by every frontend of a pool.

use super::{Attempt, Limits, LoginThrottle, TRUSTED_FOR, address_key};
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

/// Admits and counts an attempt in one step. KEYS: address counter, account counter, trusted
/// marker (the last two unused without an account). ARGV: window ms, address limit, account
/// limit, whether there is an account. Returns 0 (refused, nothing counted), 1 (trusted: not
/// counted) or 2 (counted against the address and the account).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local account = ARGV[4] == '1'
        if account and redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
        if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then return 0 end
        if account then
            if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[3]) then return 0 end
            if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
        end
        if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        return 2
        ",
    )
});

/// Takes back an attempt's counts; on success marks the address trusted for the account.
/// KEYS as for RESERVE. ARGV: whether the attempt was counted, whether it succeeded, trust ms.
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local function take_back(key)
            if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
        end
        if ARGV[1] == '1' then
            take_back(KEYS[1])
            take_back(KEYS[2])
        end
        if ARGV[2] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[3]) end
        return 1
        ",
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

    /// Address counter, account counter and trusted marker (placeholders without an account).
    fn keys(&self, account: Option<&AccountName>, addr: IpAddr) -> [String; 3] {
        let p = &self.prefix;
        let address = address_key(addr);
        match account {
            Some(account) => [
                format!("{p}fail:ip:{address}"),
                format!("{p}fail:user:{account}"),
                format!("{p}trusted:{account}:{address}"),
            ],
            None => [format!("{p}fail:ip:{address}"), format!("{p}fail:none"), format!("{p}trusted:none")],
        }
    }
}

#[async_trait]
impl LoginThrottle for RedisThrottle {
    async fn reserve(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<Option<Attempt>, LockError> {
        let mut call = RESERVE.prepare_invoke();
        for key in self.keys(account, addr) {
            call.key(key);
        }
        call.arg(self.limits.window.as_millis().max(1) as u64)
            .arg(self.limits.per_address)
            .arg(self.limits.per_account)
            .arg(u8::from(account.is_some()));
        let mut conn = self.conn.clone();
        let admitted: i64 =
            call.invoke_async(&mut conn).instrument(span("EVALSHA", "throttle.reserve")).await.map_err(unavailable)?;
        Ok((admitted > 0).then_some(Attempt { counted: admitted == 2 }))
    }

    async fn refund(
        &self,
        account: &AccountName,
        addr: IpAddr,
        attempt: Attempt,
        success: bool,
    ) -> Result<(), LockError> {
        let mut call = REFUND.prepare_invoke();
        for key in self.keys(Some(account), addr) {
            call.key(key);
        }
        call.arg(u8::from(attempt.counted)).arg(u8::from(success)).arg(TRUSTED_FOR.as_millis() as u64);
        let mut conn = self.conn.clone();
        let _: i64 =
            call.invoke_async(&mut conn).instrument(span("EVALSHA", "throttle.refund")).await.map_err(unavailable)?;
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
