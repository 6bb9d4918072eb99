//! The POP3 sessions open across the pool (those holding a maildrop), so operators can see them
//! and end one. Entries expire by themselves when their frontend dies.

pub mod memory;
pub mod redis;

use crate::coord::CoordError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One session in TRANSACTION state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub account: String,
    pub peer: String,
    /// Host name and process id of the frontend serving it.
    pub frontend: String,
    pub tls: bool,
    pub started_unix: u64,
}

/// Where open sessions are registered.
#[async_trait]
pub trait SessionRegistry: Send + Sync + 'static {
    /// Registers or refreshes a session for `ttl`.
    async fn register(&self, info: &SessionInfo, ttl: Duration) -> Result<(), CoordError>;

    async fn unregister(&self, id: &str) -> Result<(), CoordError>;

    /// Every registered session, oldest first.
    async fn list(&self) -> Result<Vec<SessionInfo>, CoordError>;

    /// Asks a session to end; `false` if no such session is registered.
    async fn request_end(&self, id: &str) -> Result<bool, CoordError>;

    /// Whether someone asked this session to end.
    async fn end_requested(&self, id: &str) -> Result<bool, CoordError>;
}

/// This host's name (the pod's name on Kubernetes); empty if it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// This process's name in session listings.
pub fn frontend_name() -> String {
    format!("{}/{}", host_name(), std::process::id())
}
