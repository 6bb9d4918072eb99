//! Open sessions of the whole pool, in Redis: two hashes under one hash tag (one Redis Cluster
//! slot, so listing needs no scan of every node). `{prefix}{sessions}` maps a session id to its
//! expiry (Redis's clock, in ms) and its JSON; `{prefix}{sessions}:end` holds the ids an
//! operator asked to end. Entries of a frontend that died expire: listing skips and removes
//! them.

use super::{SessionInfo, SessionRegistry};
use crate::coord::CoordError;
use crate::coord::redis_link::unavailable;
use crate::coord::redis_link::{RedisConn, span};
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::Instrument;

/// The current time on the Redis server, in ms, as a Lua expression.
const NOW_MS: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";

/// KEYS: sessions. ARGV: id, ttl ms, JSON.
static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS} redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + tonumber(ARGV[2])) .. ' ' .. ARGV[3]) return 1"
    ))
});

/// KEYS: sessions, end requests. ARGV: id.
static UNREGISTER: LazyLock<Script> =
    LazyLock::new(|| Script::new("redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[1]) return 1"));

/// Whether an entry's expiry (the number before the space) is still ahead, as a Lua function.
const LIVE: &str = "local function live(v, now) local sp = string.find(v, ' ', 1, true) \
                    return sp ~= nil and tonumber(string.sub(v, 1, sp - 1)) > now end";

/// KEYS: sessions, end requests. Returns the live entries' JSON; removes expired entries and
/// end requests of sessions that are gone.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS} {LIVE}
        local all = redis.call('HGETALL', KEYS[1])
        local found = {{}}
        local alive = {{}}
        for i = 1, #all, 2 do
            local v = all[i + 1]
            if live(v, now) then
                alive[all[i]] = true
                found[#found + 1] = string.sub(v, string.find(v, ' ', 1, true) + 1)
            else
                redis.call('HDEL', KEYS[1], all[i])
            end
        end
        for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
            if not alive[id] then redis.call('HDEL', KEYS[2], id) end
        end
        return found"
    ))
});

/// KEYS: sessions, end requests. ARGV: id. Returns 1 if the session is registered and live.
static REQUEST_END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{NOW_MS} {LIVE}
        local v = redis.call('HGET', KEYS[1], ARGV[1])
        if not v or not live(v, now) then return 0 end
        redis.call('HSET', KEYS[2], ARGV[1], '1')
        return 1"
    ))
});

pub struct RedisSessions {
    conn: RedisConn,
    sessions: String,
    ends: String,
}

impl RedisSessions {
    pub fn new(conn: RedisConn, key_prefix: &str) -> Self {
        Self { conn, sessions: format!("{key_prefix}{{sessions}}"), ends: format!("{key_prefix}{{sessions}}:end") }
    }
}

#[async_trait]
impl SessionRegistry for RedisSessions {
    async fn register(&self, info: &SessionInfo, ttl: Duration) -> Result<(), CoordError> {
        let json = serde_json::to_string(info).map_err(|e| CoordError::Unavailable(e.to_string()))?;
        let mut conn = self.conn.clone();
        let _: i64 = REGISTER
            .key(&self.sessions)
            .arg(&info.id)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(json)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "sessions.register"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unregister(&self, id: &str) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let _: i64 = UNREGISTER
            .key(&self.sessions)
            .key(&self.ends)
            .arg(id)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "sessions.unregister"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SessionInfo>, CoordError> {
        let mut conn = self.conn.clone();
        let found: Vec<String> = LIST
            .key(&self.sessions)
            .key(&self.ends)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "sessions.list"))
            .await
            .map_err(unavailable)?;
        let mut list: Vec<SessionInfo> = found.iter().filter_map(|v| serde_json::from_str(v).ok()).collect();
        list.sort_by_key(|s| (s.started_unix, s.id.clone()));
        Ok(list)
    }

    async fn request_end(&self, id: &str) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let found: i64 = REQUEST_END
            .key(&self.sessions)
            .key(&self.ends)
            .arg(id)
            .invoke_async(&mut conn)
            .instrument(span("EVALSHA", "sessions.request_end"))
            .await
            .map_err(unavailable)?;
        Ok(found == 1)
    }

    async fn end_requested(&self, id: &str) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        redis::cmd("HEXISTS")
            .arg(&self.ends)
            .arg(id)
            .query_async(&mut conn)
            .instrument(span("HEXISTS", "sessions.end_requested"))
            .await
            .map_err(unavailable)
    }
}
