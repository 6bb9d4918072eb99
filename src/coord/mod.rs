//! Coordination across the frontend pool: everything the frontends must agree on that is not a
//! message or an account record. Each service is a narrow trait with an in-process backend (the
//! embedded default) and a Redis backend (the pool), and all of them fail with [`CoordError`].
//!
//! - [`lock`]: maildrop leases (RFC 1939 exclusive access) and delivery claims
//! - [`throttle`]: failed logins per account and per address, and LOGIN-DELAY
//! - [`registry`]: the POP3 sessions open across the pool, so operators can list and end them
//! - [`usage`]: per-maildrop message and octet counters for quotas
//! - [`verified`]: password checks remembered across the pool (opt-in)
//! - [`redis_link`]: the one Redis connection they share (standalone, Cluster or Sentinel)

pub mod lock;
pub mod redis_link;
pub mod registry;
pub mod throttle;
pub mod usage;
pub mod verified;

/// A coordination service did not answer. Sessions turn it into `-ERR [SYS/TEMP]`, the gRPC
/// API into `UNAVAILABLE`, LMTP into `451 4.3.0`; the text names no key or account.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("coordination service unavailable: {0}")]
    Unavailable(String),
}
