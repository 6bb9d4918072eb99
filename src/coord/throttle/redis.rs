//! Failed-login counts in Redis, shared by every frontend of a pool.
//!
//! Each budget is a failure counter (expiring with its window) and a sorted set of the
//! attempts in flight, scored by the time (Redis's own clock) they stop counting. The account's
//! budgets and its known addresses share the account's hash tag, the address's budget lives
//! wherever the address hashes, so the layout works on Redis Cluster: an attempt is admitted by
//! one script per slot, and one the address refuses after the account admitted it is taken
//! back from the account. Every script is keyed by the attempt's id, so a retried call counts
//! once.

use super::address_key;
use super::{Admission, Attempt, AttemptId, IN_FLIGHT_FOR, Limits, LoginThrottle, Settlement, Subject, TRUSTED_FOR};
use crate::coord::CoordError;
use crate::coord::redis_link::RedisConn;
use crate::coord::redis_link::span;
use crate::coord::redis_link::unavailable;
use crate::names::AccountName;
use async_trait::async_trait;
use redis::Script;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::Instrument;

/// Longest LOGIN-DELAY kept (Redis refuses expiries past about 292 million years; a directory
/// may say anything).
const MAX_LOGIN_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// The rule of [`super::verdict`] in Lua, with the in-flight set pruned by Redis's clock.
/// Defines `budget(counter, inflight, limit, id, now)`: 0 refused, 1 wait, 2 admit, 3 already in.
const BUDGET: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function budget(counter, inflight, limit, id, now)
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
  if redis.call('ZSCORE', inflight, id) then return 3 end
  local failures = tonumber(redis.call('GET', counter) or '0')
  if failures >= limit then return 0 end
  if failures + redis.call('ZCARD', inflight) >= limit then return 1 end
  return 2
end
local function enter(inflight, id, now, ttl)
  redis.call('ZADD', inflight, now + ttl, id)
  redis.call('PEXPIRE', inflight, ttl)
end
";

/// The account's side of an attempt. KEYS: counter and in-flight set of unknown addresses,
/// counter and in-flight set of known addresses, the address's known marker (one hash tag).
/// ARGV: id, account limit, known limit, in-flight ms. Returns 0 refused, 1 wait, 2 admitted
/// (unknown address), 3 admitted (known address).
static ADMIT_ACCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{BUDGET}
        local now = now_ms()
        local known = redis.call('EXISTS', KEYS[5]) == 1
        local counter, inflight, limit = KEYS[1], KEYS[2], tonumber(ARGV[2])
        if known then counter, inflight, limit = KEYS[3], KEYS[4], tonumber(ARGV[3]) end
        local verdict = budget(counter, inflight, limit, ARGV[1], now)
        if verdict == 2 then enter(inflight, ARGV[1], now, tonumber(ARGV[4])) end
        if verdict >= 2 then return known and 3 or 2 end
        return verdict
        "
    ))
});

/// The address's side. KEYS: counter, in-flight set. ARGV: id, limit, in-flight ms. Returns 0
/// refused, 1 wait, 2 admitted.
static ADMIT_ADDRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{BUDGET}
        local now = now_ms()
        local verdict = budget(KEYS[1], KEYS[2], tonumber(ARGV[2]), ARGV[1], now)
        if verdict == 2 then enter(KEYS[2], ARGV[1], now, tonumber(ARGV[3])) end
        return math.min(verdict, 2)
        "
    ))
});

/// Ends an attempt on one budget. KEYS: counter, in-flight set, and (account side) the known
/// marker. ARGV: id, failed (1/0), window ms, succeeded (1/0), trust ms. A failure is counted
/// only if the attempt was still in flight, so a repeated call counts once.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and ARGV[2] == '1' then
          if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
        end
        if KEYS[3] and ARGV[4] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[5]) end
        return 1
        ",
    )
});

pub struct RedisThrottle {
    conn: RedisConn,
    prefix: String,
    limits: Limits,
}

impl RedisThrottle {
    pub fn new(conn: RedisConn, key_prefix: &str, limits: Limits) -> Self {
        Self { conn, prefix: key_prefix.to_owned(), limits }
    }

    /// The address's counter and in-flight set.
    fn address_keys(&self, addr: IpAddr) -> [String; 2] {
        let (p, a) = (&self.prefix, address_key(addr));
        [format!("{p}fail:ip:{{{a}}}"), format!("{p}inflight:ip:{{{a}}}")]
    }

    /// The account's budgets and the address's known marker for it, in one slot.
    fn account_keys(&self, subject: &Subject, addr: IpAddr) -> [String; 5] {
        let p = &self.prefix;
        [
            format!("{p}fail:user:{{{subject}}}"),
            format!("{p}inflight:user:{{{subject}}}"),
            format!("{p}fail:known:{{{subject}}}"),
            format!("{p}inflight:known:{{{subject}}}"),
            format!("{p}trusted:{{{subject}}}:{}", address_key(addr)),
        ]
    }

    fn window_ms(&self) -> u64 {
        self.limits.window.as_millis().max(1) as u64
    }

    async fn settle_one(&self, keys: &[String], id: AttemptId, settlement: Settlement) -> Result<(), CoordError> {
        let mut script = SETTLE.prepare_invoke();
        for key in keys {
            script.key(key);
        }
        script
            .arg(id.0)
            .arg(u8::from(settlement == Settlement::Failed))
            .arg(self.window_ms())
            .arg(u8::from(settlement == Settlement::Succeeded))
            .arg(TRUSTED_FOR.as_millis() as u64);
        let mut conn = self.conn.clone();
        let _: i64 =
            script.invoke_async(&mut conn).instrument(span("EVALSHA", "throttle.settle")).await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl LoginThrottle for RedisThrottle {
    async fn admit(&self, subject: &Subject, addr: IpAddr, id: AttemptId) -> Result<Admission, CoordError> {
        let account = self.account_keys(subject, addr);
        let mut conn = self.conn.clone();
        let in_flight_ms = IN_FLIGHT_FOR.as_millis() as u64;
        let verdict: i64 = ADMIT_ACCOUNT
            .key(&account[..])
            .arg(id.0)
            .arg(self.limits.per_account)
            .arg(self.limits.per_known_address)
            .arg(in_flight_ms)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "throttle.admit"))
            .await
            .map_err(unavailable)?;
        match verdict {
            0 => return Ok(Admission::Refused),
            1 => return Ok(Admission::Wait),
            3 => return Ok(Admission::Admitted(Attempt { id, known: true })),
            _ => {}
        }
        let address = self.address_keys(addr);
        let at_address: i64 = ADMIT_ADDRESS
            .key(&address[..])
            .arg(id.0)
            .arg(self.limits.per_address)
            .arg(in_flight_ms)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "throttle.admit"))
            .await
            .map_err(unavailable)?;
        match at_address {
            2 => Ok(Admission::Admitted(Attempt { id, known: false })),
            refused_or_wait => {
                self.settle_one(&account[..2], id, Settlement::Unchecked).await?;
                Ok(if refused_or_wait == 0 { Admission::Refused } else { Admission::Wait })
            }
        }
    }

    async fn settle(
        &self,
        subject: &Subject,
        addr: IpAddr,
        attempt: Attempt,
        settlement: Settlement,
    ) -> Result<(), CoordError> {
        let [counter, inflight, known_counter, known_inflight, marker] = self.account_keys(subject, addr);
        let account = match attempt.known {
            true => [known_counter, known_inflight, marker],
            false => [counter, inflight, marker],
        };
        let account_side = self.settle_one(&account, attempt.id, settlement);
        let address_side = async {
            match attempt.known {
                true => Ok(()),
                false => self.settle_one(&self.address_keys(addr), attempt.id, settlement).await,
            }
        };
        // Two slots, two commands; sent together, so one round trip.
        let (account_side, address_side) = tokio::join!(account_side, address_side);
        account_side.and(address_side)
    }

    async fn begin_login(&self, account: &AccountName, min_interval: Duration) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}login:{{{account}}}", self.prefix))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(min_interval.min(MAX_LOGIN_DELAY).as_millis().max(1) as u64)
            .query_async(&mut conn)
            .instrument(span("SET", "login_delay"))
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn forget_login(&self, account: &AccountName) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{}login:{{{account}}}", self.prefix))
            .query_async(&mut conn)
            .instrument(span("DEL", "login_delay"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
