//! Open sessions of this process only (the embedded default).

use super::{SessionInfo, SessionRegistry};
use crate::coord::CoordError;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<String, (SessionInfo, Instant)>>,
    ending: Mutex<HashSet<String>>,
}

#[async_trait]
impl SessionRegistry for MemorySessions {
    async fn register(&self, info: &SessionInfo, ttl: Duration) -> Result<(), CoordError> {
        let mut sessions = crate::sync::lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, (_, expiry)| *expiry > now);
        sessions.insert(info.id.clone(), (info.clone(), now + ttl));
        Ok(())
    }

    async fn unregister(&self, id: &str) -> Result<(), CoordError> {
        crate::sync::lock(&self.sessions).remove(id);
        crate::sync::lock(&self.ending).remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SessionInfo>, CoordError> {
        let now = Instant::now();
        let sessions = crate::sync::lock(&self.sessions);
        let mut list: Vec<SessionInfo> =
            sessions.values().filter(|(_, expiry)| *expiry > now).map(|(info, _)| info.clone()).collect();
        list.sort_by_key(|s| (s.started_unix, s.id.clone()));
        Ok(list)
    }

    async fn request_end(&self, id: &str) -> Result<bool, CoordError> {
        let sessions = crate::sync::lock(&self.sessions);
        let known = sessions.get(id).is_some_and(|(_, expiry)| *expiry > Instant::now());
        drop(sessions);
        if known {
            crate::sync::lock(&self.ending).insert(id.to_owned());
        }
        Ok(known)
    }

    async fn end_requested(&self, id: &str) -> Result<bool, CoordError> {
        Ok(crate::sync::lock(&self.ending).contains(id))
    }
}
