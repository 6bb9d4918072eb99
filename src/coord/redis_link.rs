//! The shared Redis connection of a frontend, in any of the three shapes Redis is deployed in:
//! one server (`redis_mode = "standalone"`), Redis Cluster (`"cluster"`: commands go to the
//! shard that owns their keys) or a Sentinel-managed primary (`"sentinel"`: the primary is
//! looked up through the sentinels, and looked up again when it stops answering or turns into
//! a replica). Every shape is multiplexed, reconnects by itself and has timeouts on every
//! command, so a dead Redis gives an error, never a hang.
//!
//! Key layout for Cluster: a script's keys always share a hash tag (`{…}`), so every script
//! runs on one shard; commands that touch keys of several slots (`DEL`, `MGET`) are split by
//! the cluster client.

use crate::config::RedisMode;
use crate::secret::Secret;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The span of one Redis command, a child of whatever the session is doing (`db.operation` is
/// the command, `purpose` what cloudpop used it for). Keys are never recorded: they hold names.
pub fn span(operation: &'static str, purpose: &'static str) -> tracing::Span {
    tracing::info_span!("redis", otel.kind = "client", db.system = "redis", db.operation = operation, purpose)
}

/// A failed Redis command, as every coordination service reports it: only the error's
/// category, which names no key (keys hold account names).
pub(crate) fn unavailable(e: RedisError) -> crate::coord::CoordError {
    crate::coord::CoordError::Unavailable(format!("redis: {}", e.category()))
}

/// Redis failures, for every user of the connection.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid redis_url: {0}")]
    Url(String),
}

/// One logical connection to the pool's Redis, cheap to clone (clones share it).
#[derive(Clone)]
pub enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(Arc<LazyCluster>),
    Sentinel(Arc<SentinelPrimary>),
}

/// Builds a lazily connecting, self-healing connection.
pub fn connect(settings: &RedisSettings) -> Result<RedisConn, RedisSetupError> {
    Ok(match settings.mode {
        RedisMode::Standalone => {
            let client = settings.client(settings.urls[0].clone())?;
            let manager = ConnectionManager::new_lazy_with_config(client, settings.manager_config())
                .map_err(|e| RedisSetupError::Url(e.to_string()))?;
            RedisConn::Standalone(manager)
        }
        RedisMode::Cluster => RedisConn::Cluster(Arc::new(LazyCluster {
            client: settings.cluster_client()?,
            conn: tokio::sync::OnceCell::new(),
        })),
        RedisMode::Sentinel => {
            RedisConn::Sentinel(Arc::new(SentinelPrimary::new(settings, &settings.sentinel_master)?))
        }
    })
}

/// Where the account change feed subscribes: any node hears a PUBLISH (Cluster forwards
/// classic pub/sub to every node), so the feed takes the nodes in turn after a failure.
pub enum Subscriber {
    Nodes { clients: Vec<redis::Client>, next: usize },
    Sentinel(Box<SentinelPrimary>),
}

impl Subscriber {
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisSetupError> {
        Ok(match settings.mode {
            RedisMode::Standalone | RedisMode::Cluster => Subscriber::Nodes {
                clients: settings.urls.iter().map(|url| settings.client(url.clone())).collect::<Result<_, _>>()?,
                next: 0,
            },
            RedisMode::Sentinel => {
                Subscriber::Sentinel(Box::new(SentinelPrimary::new(settings, &settings.sentinel_master)?))
            }
        })
    }

    /// A client for the next node to subscribe on.
    pub async fn client(&mut self) -> RedisResult<redis::Client> {
        match self {
            Subscriber::Nodes { clients, next } => {
                let client = clients[*next % clients.len()].clone();
                *next = next.wrapping_add(1);
                Ok(client)
            }
            Subscriber::Sentinel(primary) => primary.lookup().await,
        }
    }
}

/// The connection settings of the three shapes (`redis_*`), parsed, with the password and the
/// CA already read.
#[derive(Clone)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// The server, the Cluster's seed nodes, or the sentinels; never empty.
    pub urls: Vec<ConnectionInfo>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM of a private CA for `rediss://`.
    pub ca: Option<Vec<u8>>,
    pub timeout: Duration,
    /// The primary's name among the sentinels (`sentinel` mode).
    pub sentinel_master: String,
}

/// Parses `redis_url`'s addresses; at least one.
pub fn parse_urls<'a>(urls: impl Iterator<Item = &'a str>) -> Result<Vec<ConnectionInfo>, RedisSetupError> {
    let urls = urls
        .map(|url| url.into_connection_info().map_err(|e| RedisSetupError::Url(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(RedisSetupError::Url("no address given".into()));
    }
    Ok(urls)
}

impl RedisSettings {
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        // A private CA (the usual case inside a cluster) instead of the system trust store.
        self.ca.as_ref().map(|ca| redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) })
    }

    /// A client for one data node, with the configured credentials and CA.
    fn client(&self, info: ConnectionInfo) -> Result<redis::Client, RedisSetupError> {
        let mut redis_settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &self.password {
            redis_settings = redis_settings.set_password(password.expose());
        }
        let info = info.set_redis_settings(redis_settings);
        match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
        .map_err(|e| RedisSetupError::Url(e.to_string()))
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    fn cluster_client(&self) -> Result<ClusterClient, RedisSetupError> {
        let mut builder = ClusterClientBuilder::new(self.urls.clone())
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if let Some(user) = &self.username {
            builder = builder.username(user);
        }
        if let Some(password) = &self.password {
            builder = builder.password(password.expose());
        }
        if let Some(certificates) = self.certificates() {
            builder = builder.certs(certificates);
        }
        builder.build().map_err(|e| RedisSetupError::Url(e.to_string()))
    }
}

/// A cluster connection made on first use, so a cluster that is down at start gives
/// `[SYS/TEMP]` until it is back instead of stopping the process. Once made, the cluster
/// client follows slot moves and failovers by itself.
pub struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn conn(&self) -> RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

/// The primary a set of sentinels names, behind a self-healing connection that is replaced
/// when the primary stops answering or answers as a replica (after a failover).
pub struct SentinelPrimary {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the primary last looked up, and a number telling lookups apart.
    current: Mutex<(u64, Option<ConnectionManager>)>,
    config: ConnectionManagerConfig,
    timeout: Duration,
}

impl SentinelPrimary {
    fn new(settings: &RedisSettings, master: &str) -> Result<Self, RedisSetupError> {
        let invalid = |e: RedisError| RedisSetupError::Url(e.to_string());
        let first = &settings.urls[0];
        let tls = settings.urls.iter().any(|u| matches!(u.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let mut builder = SentinelClientBuilder::new(
            settings.urls.iter().map(|u| u.addr().clone()),
            master,
            SentinelServerType::Master,
        )
        .map_err(invalid)?
        .set_client_to_redis_db(first.redis_settings().db())
        // RESP3: the connection hears its server go away and reconnects at once, so after a
        // crash of the primary the next command finds the connection refused (and looks the
        // primary up again) instead of failing on the dead connection.
        .set_client_to_redis_protocol(redis::ProtocolVersion::RESP3);
        // The sentinels' own credentials come from their URLs; the primary's from the
        // configuration, as in the other modes.
        if let Some(user) = first.redis_settings().username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = first.redis_settings().password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some(user) = &settings.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &settings.password {
            builder = builder.set_client_to_redis_password(password.expose());
        }
        if tls {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(certificates) = settings.certificates() {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates);
            }
        }
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(builder.build().map_err(invalid)?),
            current: Mutex::new((0, None)),
            config: settings.manager_config(),
            timeout: settings.timeout,
        })
    }

    /// A client for the primary the sentinels name now (checked to be a primary).
    async fn lookup(&self) -> RedisResult<redis::Client> {
        let mut sentinels = self.sentinels.lock().await;
        match tokio::time::timeout(self.timeout * 2, sentinels.async_get_client()).await {
            Ok(found) => found,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no sentinel named the primary in time",
            ))),
        }
    }

    /// The connection to the current primary, looking it up if there is none.
    async fn manager(&self) -> RedisResult<(u64, ConnectionManager)> {
        if let (generation, Some(manager)) = &*self.current.lock().expect("poisoned") {
            return Ok((*generation, manager.clone()));
        }
        let client = self.lookup().await?;
        let mut current = self.current.lock().expect("poisoned");
        if let (generation, Some(manager)) = &*current {
            // Someone else looked it up meanwhile.
            return Ok((*generation, manager.clone()));
        }
        let manager = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        current.0 += 1;
        current.1 = Some(manager.clone());
        Ok((current.0, manager))
    }

    /// Forgets the connection of lookup `generation`, so the next command looks again.
    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().expect("poisoned");
        if current.0 == generation {
            current.1 = None;
        }
    }

    /// Runs `request` on the primary. When the primary may have moved, the connection is
    /// dropped so the next command looks it up again; a command that certainly did not run
    /// there (refused connection, READONLY from a demoted primary) is retried once at once.
    async fn run<'a, T: Replies>(&self, request: impl Fn(ConnectionManager) -> RedisFuture<'a, T>) -> RedisResult<T> {
        let mut retried = false;
        loop {
            let (generation, manager) = self.manager().await?;
            let reply = request(manager).await.and_then(|reply| match reply.refused_as_replica() {
                // Server errors come back as values; a demoted primary's READONLY is one.
                Some(refusal) => Err(RedisError::from(refusal)),
                None => Ok(reply),
            });
            match reply {
                Err(e) if primary_may_have_moved(&e) => {
                    self.forget(generation);
                    if retried || !certainly_not_run(&e) {
                        return Err(e);
                    }
                    retried = true;
                }
                other => return other,
            }
        }
    }
}

/// Replies of a command or a pipeline, as the connection hands them back.
trait Replies {
    /// The READONLY error among them: the server is a replica now.
    fn refused_as_replica(&self) -> Option<redis::ServerError>;
}

fn readonly(value: &Value) -> Option<redis::ServerError> {
    match value {
        Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::ReadOnly) => Some(e.clone()),
        _ => None,
    }
}

impl Replies for Value {
    fn refused_as_replica(&self) -> Option<redis::ServerError> {
        readonly(self)
    }
}

impl Replies for Vec<Value> {
    fn refused_as_replica(&self) -> Option<redis::ServerError> {
        self.iter().find_map(readonly)
    }
}

fn primary_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() || certainly_not_run(e)
}

fn certainly_not_run(e: &RedisError) -> bool {
    e.is_connection_refusal() || matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Standalone(manager) => manager.req_packed_command(cmd),
            RedisConn::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster.conn().await?;
                conn.req_packed_command(cmd).await
            }),
            RedisConn::Sentinel(primary) => {
                Box::pin(primary.run(move |mut manager| Box::pin(async move { manager.req_packed_command(cmd).await })))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Standalone(manager) => manager.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster.conn().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
            RedisConn::Sentinel(primary) => Box::pin(primary.run(move |mut manager| {
                Box::pin(async move { manager.req_packed_commands(pipeline, offset, count).await })
            })),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Standalone(manager) => manager.get_db(),
            RedisConn::Cluster(_) => 0,
            RedisConn::Sentinel(primary) => {
                primary.current.lock().expect("poisoned").1.as_ref().map_or(0, ConnectionLike::get_db)
            }
        }
    }
}
