//! Builds the storage and coordination backends the configuration asks for. The rest of the
//! service sees only the traits, so the embedded and the cloud deployment share every other line.

use crate::accounts::Accounts;
use crate::accounts::cache::{self, Announcer};
use crate::auth::Authenticator;
use crate::config::{Config, LocksKind, StoreKind};
use crate::coord::lock::MaildropLocks;
use crate::coord::lock::memory::MemoryLocks;
use crate::coord::lock::redis::RedisLocks;
use crate::coord::redis_link::{self, RedisSetupError};
use crate::coord::registry::SessionRegistry;
use crate::coord::registry::memory::MemorySessions;
use crate::coord::registry::redis::RedisSessions;
use crate::coord::throttle::memory::MemoryThrottle;
use crate::coord::throttle::redis::RedisThrottle;
use crate::coord::throttle::{Limits, LoginThrottle};
use crate::coord::usage::{RedisUsage, Uncounted, UsageCounters};
use crate::store::fs::FsStore;
use crate::store::observed::Observed;
use crate::store::s3::{S3Settings, S3Store};
use crate::store::{MessageStore, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Why the backends could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot open the data directory: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read the S3 key files (s3_access_key_id_file, s3_secret_access_key_file): {0}")]
    S3Secret(std::io::Error),
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
}

/// Every backend of one process.
#[derive(Clone)]
pub struct Backends {
    pub messages: Arc<dyn MessageStore>,
    pub accounts: Accounts,
    /// Checks logins (the configured backend, SCRAM, bearer tokens).
    pub auth: Arc<Authenticator>,
    pub locks: Arc<dyn MaildropLocks>,
    pub throttle: Arc<dyn LoginThrottle>,
    pub sessions: Arc<dyn SessionRegistry>,
    pub usage: Arc<dyn UsageCounters>,
}

impl Backends {
    /// Sets up the configured backends. Remote ones connect lazily: a store or Redis that is
    /// down now gives `[SYS/TEMP]` until it comes back, rather than stopping the process.
    pub async fn from_config(config: &Config) -> Result<Self, BackendError> {
        let (messages, mut accounts): (Arc<dyn MessageStore>, Accounts) = match config.store {
            StoreKind::Fs => {
                let store = Arc::new(Observed::new(FsStore::open(&config.data_dir).await?, "fs"));
                (store.clone(), Accounts::new(store, config))
            }
            StoreKind::S3 => {
                let settings = S3Settings::from_config(config).map_err(BackendError::S3Secret)?;
                let store = Arc::new(Observed::counting_own_requests(S3Store::new(&settings).await, "s3"));
                (store.clone(), Accounts::new(store, config))
            }
        };
        let limits = Limits {
            window: Duration::from_secs(config.throttle_window_secs),
            per_account: config.throttle_account_failures,
            per_address: config.throttle_address_failures,
        };
        type Coordination =
            (Arc<dyn MaildropLocks>, Arc<dyn LoginThrottle>, Arc<dyn SessionRegistry>, Arc<dyn UsageCounters>);
        let (locks, throttle, sessions, usage): Coordination = match config.locks {
            LocksKind::Memory => (
                Arc::new(MemoryLocks::new()),
                Arc::new(MemoryThrottle::new(limits)),
                Arc::new(MemorySessions::default()),
                Arc::new(Uncounted),
            ),
            LocksKind::Redis => {
                let conn = redis_link::connect(config)?;
                let prefix = &config.redis_key_prefix;
                // A pool: record changes are announced, and heard, through Redis.
                let channel = cache::channel(prefix);
                accounts.announce_through(Announcer::Redis { conn: conn.clone(), channel: channel.clone() });
                if config.account_cache_secs > 0 {
                    cache::spawn_feed(redis_link::Subscriber::from_config(config)?, channel, accounts.records());
                }
                (
                    Arc::new(RedisLocks::new(conn.clone(), prefix)),
                    Arc::new(RedisThrottle::new(conn.clone(), prefix, limits)),
                    Arc::new(RedisSessions::new(conn.clone(), prefix)),
                    Arc::new(RedisUsage::new(conn, prefix)),
                )
            }
        };
        let auth = Arc::new(Authenticator::from_config(config, accounts.clone(), messages.clone())?);
        Ok(Self { messages, accounts, auth, locks, throttle, sessions, usage })
    }

    /// Checks cheaply that the store and the lock service answer (the readiness probe); the
    /// reason if not, without secrets.
    pub async fn ping(&self) -> Result<(), Unreachable> {
        let (store, locks) = tokio::join!(self.messages.ping(), self.locks.ping());
        store.map_err(Unreachable::Store)?;
        locks.map_err(Unreachable::Locks)
    }
}

/// Which backend a readiness probe could not reach.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("message store: {0}")]
    Store(crate::store::StoreError),
    #[error("lock service: {0}")]
    Locks(crate::coord::CoordError),
}
