//! Builds the storage and coordination backends the settings ask for. The rest of the
//! service sees only the traits, so the embedded and the cloud deployment share every other line.

use crate::accounts::cache::{self, Announcer};
use crate::accounts::pool_verified::SharedVerified;
use crate::accounts::{AccountSettings, Accounts};
use crate::auth::{AuthSettings, Authenticator};
use crate::coord::lock::MaildropLocks;
use crate::coord::lock::memory::MemoryLocks;
use crate::coord::lock::redis::RedisLocks;
use crate::coord::redis_link::{self, RedisSettings, RedisSetupError};
use crate::coord::registry::SessionRegistry;
use crate::coord::registry::memory::MemorySessions;
use crate::coord::registry::redis::RedisSessions;
use crate::coord::throttle::memory::MemoryThrottle;
use crate::coord::throttle::redis::RedisThrottle;
use crate::coord::throttle::{Limits, LoginThrottle};
use crate::coord::usage::{RedisUsage, Uncounted, UsageCounters};
use crate::coord::verified::RedisVerified;
use crate::delivery::{DeliveryService, DeliverySettings};
use crate::store::fs::FsStore;
use crate::store::observed::Observed;
use crate::store::s3::{S3Settings, S3Store};
use crate::store::{AccountStore, MessageStore, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// Why the backends could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot open the data directory: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
}

/// Where messages and account records are kept.
pub enum StoreSettings {
    /// The embedded store, under this directory.
    Fs(PathBuf),
    S3(S3Settings),
}

/// Where locks, throttles, sessions and usage counters are shared.
pub enum CoordSettings {
    /// This process only (the embedded default).
    Memory,
    /// The pool's Redis; every key starts with `prefix`.
    Redis { link: RedisSettings, prefix: String },
}

/// What the backends are built from.
pub struct BackendSettings {
    pub store: StoreSettings,
    pub coord: CoordSettings,
    pub throttle: Limits,
    pub accounts: AccountSettings,
    pub auth: AuthSettings,
    pub delivery: DeliverySettings,
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
    /// Stores new mail, for every way in.
    pub delivery: DeliveryService,
}

type Coordination = (Arc<dyn MaildropLocks>, Arc<dyn LoginThrottle>, Arc<dyn SessionRegistry>, Arc<dyn UsageCounters>);

impl Backends {
    /// Sets up the backends. Remote ones connect lazily: a store or Redis that is down now
    /// gives `[SYS/TEMP]` until it comes back, rather than stopping the process.
    pub async fn open(settings: BackendSettings) -> Result<Self, BackendError> {
        let (messages, records): (Arc<dyn MessageStore>, Arc<dyn AccountStore>) = match &settings.store {
            StoreSettings::Fs(dir) => {
                let store = Arc::new(Observed::new(FsStore::open(dir).await?, "fs"));
                (store.clone(), store)
            }
            StoreSettings::S3(s3) => {
                let store = Arc::new(Observed::counting_own_requests(S3Store::new(s3).await, "s3"));
                (store.clone(), store)
            }
        };
        let mut accounts = Accounts::new(records, &settings.accounts);
        let (locks, throttle, sessions, usage) = Self::coordination(&settings, &mut accounts)?;
        let delivery =
            DeliveryService::new(messages.clone(), accounts.clone(), locks.clone(), usage.clone(), settings.delivery);
        let auth = Arc::new(Authenticator::new(settings.auth, accounts.clone(), messages.clone()));
        Ok(Self { messages, accounts, auth, locks, throttle, sessions, usage, delivery })
    }

    /// The coordination services; in a pool, record changes are also announced, and heard,
    /// through Redis.
    fn coordination(settings: &BackendSettings, accounts: &mut Accounts) -> Result<Coordination, BackendError> {
        let limits = settings.throttle;
        Ok(match &settings.coord {
            CoordSettings::Memory => (
                Arc::new(MemoryLocks::new()),
                Arc::new(MemoryThrottle::new(limits)),
                Arc::new(MemorySessions::default()),
                Arc::new(Uncounted),
            ),
            CoordSettings::Redis { link, prefix } => {
                let conn = redis_link::connect(link)?;
                let (channel, changes) = (cache::channel(prefix), cache::changes_key(prefix));
                let announcer =
                    Announcer::Redis { conn: conn.clone(), channel: channel.clone(), changes: changes.clone() };
                accounts.announce_through(announcer);
                if let Some(key) = &settings.accounts.shared_credential_key {
                    let tags = Arc::new(RedisVerified::new(conn.clone(), prefix));
                    let ttl = settings.accounts.shared_credential_cache;
                    accounts.share_checks_through(SharedVerified::new(key.expose().as_bytes(), ttl, tags));
                }
                if !settings.accounts.account_cache.is_zero() {
                    let feed = cache::Feed { channel, changes, conn: conn.clone() };
                    cache::spawn_feed(redis_link::Subscriber::new(link)?, feed, accounts.records());
                }
                (
                    Arc::new(RedisLocks::new(conn.clone(), prefix)),
                    Arc::new(RedisThrottle::new(conn.clone(), prefix, limits)),
                    Arc::new(RedisSessions::new(conn.clone(), prefix)),
                    Arc::new(RedisUsage::new(conn, prefix)),
                )
            }
        })
    }

    /// Checks cheaply that the store and the lock service answer (the readiness probe); the
    /// reason if not, without secrets.
    /// Probes the store and the lock service; a warning when both answered but this host's
    /// clock is far from the pool's.
    pub async fn ping(&self) -> Result<Option<String>, Unreachable> {
        let (store, locks) = tokio::join!(self.messages.ping(), self.locks.ping());
        store.map_err(Unreachable::Store)?;
        locks.map_err(Unreachable::Locks)?;
        let offset = crate::clock::pool_offset_millis();
        crate::metrics::metrics().clock_offset_ms.set(offset);
        Ok((offset.unsigned_abs() > MAX_CLOCK_OFFSET_MS)
            .then(|| format!("this host's clock is {offset} ms off the pool's (Redis) clock; synchronise it")))
    }
}

/// A host clock further than this from the pool's (Redis's) is reported (ids and watermarks
/// use the pool's clock anyway, but the host's clock also stamps logs, traces and leases' ends).
const MAX_CLOCK_OFFSET_MS: u64 = 30_000;

/// Which backend a readiness probe could not reach.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("message store: {0}")]
    Store(crate::store::StoreError),
    #[error("lock service: {0}")]
    Locks(crate::coord::CoordError),
}
