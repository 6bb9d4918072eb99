//! Open sessions of the whole pool, in Redis: one expiring key per session, and an expiring
//! "please end" key an operator sets.

use super::{SessionInfo, SessionRegistry};
use crate::lock::LockError;
use crate::lock::redis::unavailable;
use crate::redis_conn::span;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use std::time::Duration;
use tracing::Instrument;

pub struct RedisSessions {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisSessions {
    pub fn new(conn: ConnectionManager, key_prefix: &str) -> Self {
        Self { conn, prefix: key_prefix.to_owned() }
    }

    fn key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn end_key(&self, id: &str) -> String {
        format!("{}session-end:{id}", self.prefix)
    }
}

#[async_trait]
impl SessionRegistry for RedisSessions {
    async fn register(&self, info: &SessionInfo, ttl: Duration) -> Result<(), LockError> {
        let json = serde_json::to_string(info).map_err(|e| LockError::Unavailable(e.to_string()))?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(&info.id))
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut conn)
            .instrument(span("SET", "sessions.register"))
            .await
            .map_err(unavailable)
    }

    async fn unregister(&self, id: &str) -> Result<(), LockError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.key(id))
            .arg(self.end_key(id))
            .query_async::<()>(&mut conn)
            .instrument(span("DEL", "sessions.unregister"))
            .await
            .map_err(unavailable)
    }

    async fn list(&self) -> Result<Vec<SessionInfo>, LockError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}session:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .instrument(span("SCAN", "sessions.list"))
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Result<Vec<Option<String>>, _> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).instrument(span("MGET", "sessions.list")).await;
        let values = values.map_err(unavailable)?;
        let mut list: Vec<SessionInfo> =
            values.into_iter().flatten().filter_map(|v| serde_json::from_str(&v).ok()).collect();
        list.sort_by_key(|s| (s.started_unix, s.id.clone()));
        Ok(list)
    }

    async fn request_end(&self, id: &str) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.key(id))
            .query_async(&mut conn)
            .instrument(span("EXISTS", "sessions.request_end"))
            .await
            .map_err(unavailable)?;
        if exists {
            redis::cmd("SET")
                .arg(self.end_key(id))
                .arg("1")
                .arg("EX")
                .arg(3600)
                .query_async::<()>(&mut conn)
                .instrument(span("SET", "sessions.request_end"))
                .await
                .map_err(unavailable)?;
        }
        Ok(exists)
    }

    async fn end_requested(&self, id: &str) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.end_key(id))
            .query_async(&mut conn)
            .instrument(span("EXISTS", "sessions.end_requested"))
            .await
            .map_err(unavailable)
    }
}
