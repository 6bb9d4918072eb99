//! The checks every configuration passes before anything starts.

use super::{Config, ConfigError, LocksKind, RedisMode, StoreKind};
use std::net::SocketAddr;
use std::path::Path;

impl Config {
    /// Checks every setting; nothing starts with a configuration that fails here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listeners()?;
        self.validate_ranges()?;
        self.validate_backends()?;
        if self.store == StoreKind::S3 {
            self.validate_s3()?;
        }
        if self.locks == LocksKind::Redis {
            self.validate_redis()?;
        }
        let networks = self.proxy_networks()?;
        if self.proxy_protocol && networks.is_empty() {
            return fail("proxy_protocol needs proxy_trusted_networks: the load balancers' addresses".into());
        }
        if self.drain_delay_secs > self.shutdown_grace_secs {
            return fail(format!(
                "drain_delay_secs = {} exceeds shutdown_grace_secs = {}",
                self.drain_delay_secs, self.shutdown_grace_secs
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return fail(format!("log = {:?} is not a valid filter", self.log));
        }
        Ok(())
    }

    /// The listeners (POP3, LMTP, API, operations) and the files they serve.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        for (key, value) in [("pop3_listen", &self.pop3_listen), ("pop3s_listen", &self.pop3s_listen)] {
            if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
                return fail(format!("{key} = {value:?} is not an address like 127.0.0.1:110 or [::]:995"));
            }
        }
        if self.pop3_listen.is_empty() && self.pop3s_listen.is_empty() {
            return fail("pop3_listen and pop3s_listen are both empty: nothing to serve".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => return fail("tls_cert and tls_key must be given together".into()),
            (Some(cert), Some(key)) => {
                readable_file("tls_cert", Some(cert))?;
                readable_file("tls_key", Some(key))?;
            }
            (None, None) => {}
        }
        self.validate_lmtp()?;
        if !self.api_listen.is_empty() && self.api_listen.parse::<SocketAddr>().is_err() {
            return fail(format!("api_listen = {:?} is not an address like 127.0.0.1:7110", self.api_listen));
        }
        readable_file("api_admin_tokens_file", self.api_admin_tokens_file.as_deref())?;
        readable_file("api_ingest_tokens_file", self.api_ingest_tokens_file.as_deref())?;
        readable_file("api_client_ca", self.api_client_ca.as_deref())?;
        if self.api_client_ca.is_some() && !self.api_tls {
            return fail("api_client_ca (mutual TLS) needs api_tls = true".into());
        }
        if !self.ops_listen.is_empty() && self.ops_listen.parse::<SocketAddr>().is_err() {
            return fail(format!("ops_listen = {:?} is not an address like 127.0.0.1:9110", self.ops_listen));
        }
        Ok(())
    }

    fn validate_lmtp(&self) -> Result<(), ConfigError> {
        if !self.lmtp_listen.is_empty() && self.lmtp_listen.parse::<SocketAddr>().is_err() {
            return fail(format!("lmtp_listen = {:?} is not an address like 127.0.0.1:24", self.lmtp_listen));
        }
        super::networks("lmtp_trusted_networks", &self.lmtp_trusted_networks)?;
        if !self.lmtp_hostname.bytes().all(|b| b.is_ascii_graphic()) || self.lmtp_hostname.len() > 255 {
            return fail("lmtp_hostname must be a host name (printable ASCII, no spaces)".into());
        }
        if !self.lmtp_subaddress_separator.bytes().all(|b| b"+-_=.#~".contains(&b)) {
            return fail("lmtp_subaddress_separator may hold only the characters + - _ = . # ~".into());
        }
        if !(1..=100_000).contains(&self.lmtp_max_connections) {
            return fail("lmtp_max_connections must be between 1 and 100000".into());
        }
        Ok(())
    }

    /// Numbers that must lie within what the service can honour.
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 35] = [
            ("blocking_threads", self.blocking_threads.into(), 0, 4096),
            ("retr_read_ahead_kib", self.retr_read_ahead_kib, 0, 1 << 20),
            ("retr_read_ahead_total_mib", self.retr_read_ahead_total_mib.into(), 1, 1 << 20),
            ("credential_cache_secs", self.credential_cache_secs, 0, 86_400),
            ("credential_cache_shared_secs", self.credential_cache_shared_secs, 0, 86_400),
            ("credential_cache_entries", self.credential_cache_entries.into(), 1, 10_000_000),
            ("account_cache_secs", self.account_cache_secs, 0, 86_400),
            ("account_cache_entries", self.account_cache_entries.into(), 1, 10_000_000),
            ("retr_grace_secs", self.retr_grace_secs, 1, 3600),
            ("max_pending_logins", self.max_pending_logins.into(), 1, 1_000_000),
            ("hashing_threads", self.hashing_threads.into(), 0, 1024),
            ("legacy_hash_memory_mib", self.legacy_hash_memory_mib.into(), 64, 65_536),
            ("retr_min_bytes_per_sec", self.retr_min_bytes_per_sec, 1, 1 << 30),
            ("max_connections_per_address", self.max_connections_per_address.into(), 1, 1_000_000),
            ("login_deadline_secs", self.login_deadline_secs, 1, 3600),
            ("s3_timeout_secs", self.s3_timeout_secs, 1, 600),
            ("s3_max_attempts", self.s3_max_attempts.into(), 1, 20),
            ("redis_timeout_ms", self.redis_timeout_ms, 50, 60_000),
            ("throttle_window_secs", self.throttle_window_secs, 1, 86_400),
            ("throttle_account_failures", self.throttle_account_failures.into(), 1, 1_000_000),
            ("throttle_known_address_failures", self.throttle_known_address_failures.into(), 1, 1_000_000),
            ("throttle_address_failures", self.throttle_address_failures.into(), 1, 1_000_000),
            ("max_bad_commands", self.max_bad_commands.into(), 1, 1000),
            ("max_connections", self.max_connections as u64, 1, 1_000_000),
            ("max_line_length", self.max_line_length as u64, 512, 65_536),
            ("max_line_violations", self.max_line_violations.into(), 1, 1000),
            ("login_timeout_secs", self.login_timeout_secs, 1, 3600),
            ("idle_timeout_secs", self.idle_timeout_secs, 600, 86_400),
            ("auth_failure_delay_ms", self.auth_failure_delay_ms, 0, 60_000),
            ("max_auth_failures", self.max_auth_failures.into(), 1, 100),
            ("lock_lease_secs", self.lock_lease_secs, 3, 3600),
            ("shutdown_grace_secs", self.shutdown_grace_secs, 0, 3600),
            ("sweep_interval_secs", self.sweep_interval_secs, 1, 86_400),
            ("drain_delay_secs", self.drain_delay_secs, 0, 600),
            ("reload_interval_secs", self.reload_interval_secs, 1, 3600),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                return fail(format!("{key} = {value} is outside {min}..={max}"));
            }
        }
        if self.max_message_size < 1024 {
            return fail(format!("max_message_size = {} is below 1024 octets", self.max_message_size));
        }
        if !(1..=1_048_576).contains(&self.max_spool_mib) {
            return fail(format!("max_spool_mib = {} must be between 1 and 1048576", self.max_spool_mib));
        }
        if self.max_spool_mib * 1024 * 1024 < self.max_message_size {
            return fail(format!(
                "max_spool_mib = {} cannot hold one message of max_message_size = {} octets",
                self.max_spool_mib, self.max_message_size
            ));
        }
        Ok(())
    }

    fn validate_backends(&self) -> Result<(), ConfigError> {
        if self.credential_cache_shared_secs > 0 {
            if self.locks != LocksKind::Redis {
                return fail(
                    "credential_cache_shared_secs keeps its entries in Redis: it needs locks = \"redis\"".into(),
                );
            }
            if self.credential_cache_shared_key.is_none() && self.credential_cache_shared_key_file.is_none() {
                return fail(
                    "credential_cache_shared_secs needs credential_cache_shared_key (or _file), the pool's secret key"
                        .into(),
                );
            }
            readable_file("credential_cache_shared_key_file", self.credential_cache_shared_key_file.as_deref())?;
        }
        if self.store == StoreKind::S3 && self.locks == LocksKind::Memory && !self.single_frontend {
            return fail(
                "store = \"s3\" with locks = \"memory\" gives no maildrop exclusivity across frontends: use \
                 locks = \"redis\", or set single_frontend = true if this is the only frontend of the bucket"
                    .into(),
            );
        }
        Ok(())
    }

    fn validate_s3(&self) -> Result<(), ConfigError> {
        if self.s3_bucket.is_empty() {
            return fail("store = \"s3\" needs s3_bucket".into());
        }
        if !self.s3_endpoint.is_empty()
            && !self.s3_endpoint.starts_with("http://")
            && !self.s3_endpoint.starts_with("https://")
        {
            return fail(format!("s3_endpoint = {:?} must start with http:// or https://", self.s3_endpoint));
        }
        let id_given = self.s3_access_key_id.is_some() || self.s3_access_key_id_file.is_some();
        let key_given = self.s3_secret_access_key.is_some() || self.s3_secret_access_key_file.is_some();
        if id_given != key_given {
            return fail("an S3 access key id and a secret access key (each inline or _file) go together".into());
        }
        readable_file("s3_access_key_id_file", self.s3_access_key_id_file.as_deref())?;
        readable_file("s3_secret_access_key_file", self.s3_secret_access_key_file.as_deref())?;
        if !self.s3_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)) {
            return fail(format!("s3_prefix = {:?} may only hold letters, digits and - _ . /", self.s3_prefix));
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let urls: Vec<&str> = self.redis_urls().collect();
        for url in &urls {
            let Some(parsed) = redis::parse_redis_url(url).filter(|u| matches!(u.scheme(), "redis" | "rediss")) else {
                return fail(format!(
                    "redis_url: {url:?} must look like redis://host:port/db or rediss://host:port/db"
                ));
            };
            if self.redis_mode == RedisMode::Cluster && !matches!(parsed.path(), "" | "/" | "/0") {
                return fail("redis_url: Redis Cluster has only database 0".into());
            }
        }
        match (self.redis_mode, urls.len()) {
            (_, 0) => return fail("redis_url is empty".into()),
            (RedisMode::Standalone, 2..) => {
                return fail("redis_url names several servers: set redis_mode = \"cluster\" or \"sentinel\"".into());
            }
            _ => {}
        }
        if self.redis_mode == RedisMode::Sentinel && self.redis_sentinel_master.is_empty() {
            return fail("redis_mode = \"sentinel\" needs redis_sentinel_master, the monitored name".into());
        }
        if self.redis_key_prefix.contains(['{', '}']) {
            // The braces of hash tags are cloudpop's: one in the prefix would move keys
            // that scripts use together to different Redis Cluster slots.
            return fail(format!("redis_key_prefix = {:?} may not contain {{ or }}", self.redis_key_prefix));
        }
        readable_file("redis_password_file", self.redis_password_file.as_deref())?;
        readable_file("redis_tls_ca_file", self.redis_tls_ca_file.as_deref())?;
        Ok(())
    }
}

fn fail(message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message))
}

/// Checks that an optional file setting names a file.
pub fn readable_file(key: &str, path: Option<&Path>) -> Result<(), ConfigError> {
    match path {
        Some(path) if !path.is_file() => {
            Err(ConfigError::Invalid(format!("{key} = {} is not a readable file", path.display())))
        }
        _ => Ok(()),
    }
}
