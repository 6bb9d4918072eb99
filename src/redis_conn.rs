//! The shared Redis connection of a frontend: one multiplexed connection that reconnects by
//! itself, with timeouts on every command so a dead Redis gives an error, never a hang.

use crate::config::Config;
use crate::secret::Secret;
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// The span of one Redis command, a child of whatever the session is doing (`db.operation` is
/// the command, `purpose` what cloudpop used it for). Keys are never recorded: they hold names.
pub fn span(operation: &'static str, purpose: &'static str) -> tracing::Span {
    tracing::info_span!("redis", otel.kind = "client", db.system = "redis", db.operation = operation, purpose)
}

/// Redis failures, for every user of the connection.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid redis_url: {0}")]
    Url(String),
    #[error("cannot read redis_password_file: {0}")]
    PasswordFile(std::io::Error),
    #[error("cannot read redis_tls_ca_file: {0}")]
    CaFile(std::io::Error),
}

/// Builds a lazily connecting, self-healing connection from the configuration.
pub fn connect(config: &Config) -> Result<ConnectionManager, RedisSetupError> {
    let client = client(config)?;
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|e| RedisSetupError::Url(e.to_string()))
}

/// The client (address, credentials, TLS) from the configuration; connects nothing yet.
pub fn client(config: &Config) -> Result<redis::Client, RedisSetupError> {
    let mut info = config.redis_url.as_str().into_connection_info().map_err(|e| RedisSetupError::Url(e.to_string()))?;
    let password = Secret::inline_or_file(config.redis_password.as_ref(), config.redis_password_file.as_deref())
        .map_err(RedisSetupError::PasswordFile)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.redis_username {
        settings = settings.set_username(user);
    }
    if let Some(password) = password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    match &config.redis_tls_ca_file {
        // A private CA (the usual case inside a cluster) instead of the system trust store.
        Some(ca) => {
            let root_cert = Some(std::fs::read(ca).map_err(RedisSetupError::CaFile)?);
            redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert })
        }
        None => redis::Client::open(info),
    }
    .map_err(|e| RedisSetupError::Url(e.to_string()))
}
