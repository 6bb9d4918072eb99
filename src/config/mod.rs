//! The one configuration struct: defaults, then the TOML file, then `CLOUDPOP_*` environment
//! variables, then command-line flags; validated before anything starts.

mod defaults;
mod derived;
mod env;
mod kinds;
mod validate;

pub use env::ENV_PREFIX;
pub use kinds::{AuthBackend, LocksKind, LogFormat, RedisMode, StoreKind};
pub use validate::readable_file;

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every setting of the service. Each field is also a TOML key and a `CLOUDPOP_<KEY>` variable.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where messages and accounts live: `fs` (the embedded default, under `data_dir`) or `s3`.
    pub store: StoreKind,
    /// Where maildrop locks and login throttles live: `memory` (this process only) or `redis`
    /// (shared by every frontend of a pool).
    pub locks: LocksKind,
    /// The promise that this process is the only frontend of its bucket. Only then may
    /// `store = "s3"` run with `locks = "memory"`: with two frontends and in-process locks, two
    /// sessions could hold one maildrop, so that combination is refused without it.
    pub single_frontend: bool,
    /// Directory of the embedded store: messages, accounts, the generated TLS certificate.
    pub data_dir: PathBuf,
    /// Address of the POP3 listener with STLS (production: `0.0.0.0:110`). Empty disables it.
    pub pop3_listen: String,
    /// Address of the implicit-TLS POP3 listener (production: `0.0.0.0:995`). Empty disables it.
    pub pop3s_listen: String,
    /// PEM certificate chain. Without it (and `tls_key`) a self-signed certificate is generated
    /// once into `data_dir/tls/` and reused.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Allow USER/PASS and AUTH PLAIN/LOGIN on unencrypted connections from non-loopback
    /// addresses. Off by default: passwords would cross the network in clear text.
    pub allow_plaintext_auth: bool,
    /// Let loopback connections (127.0.0.0/8, ::1) use USER/PASS and AUTH PLAIN/LOGIN without
    /// TLS: convenient on a laptop. Turn it off wherever something else connects from loopback
    /// on clients' behalf (service-mesh sidecars, local proxies); the container image and the
    /// Helm chart do.
    pub plaintext_auth_loopback: bool,
    /// Expect a PROXY protocol header (v1 or v2) at the start of every POP3 connection, from a
    /// load balancer, and use the client address it names (for logs, throttling and the
    /// loopback rule). Connections without one are dropped. Needs `proxy_trusted_networks`.
    pub proxy_protocol: bool,
    /// The load balancers' addresses (CIDR list, e.g. `10.0.0.0/8, 2001:db8::/32`): only
    /// connections from these may send a PROXY header; with `proxy_protocol` every other
    /// connection is refused, so no client can claim another address.
    #[serde(deserialize_with = "string_or_list")]
    pub proxy_trusted_networks: Vec<String>,
    /// Most simultaneous POP3 connections per process; more are refused with `[SYS/TEMP]`.
    pub max_connections: usize,
    /// Most simultaneous POP3 connections from one client address (IPv6: one /64), so one host
    /// cannot take every slot. Behind a load balancer with PROXY protocol, the client's address
    /// counts. Raise it for large NATs.
    pub max_connections_per_address: u32,
    /// Longest time from connecting to logging in, in seconds, however busy the client keeps
    /// the connection (CAPA loops, failed AUTH attempts); then the connection is closed.
    pub login_deadline_secs: u64,
    /// Longest accepted command line in octets, CRLF included (RFC 2449 requires 255 at least).
    pub max_line_length: usize,
    /// Overlong lines tolerated on one connection before it is closed.
    pub max_line_violations: u32,
    /// Unknown or malformed commands tolerated on one connection before it is closed.
    pub max_bad_commands: u32,
    /// Idle time allowed before login, in seconds.
    pub login_timeout_secs: u64,
    /// Idle time allowed after login, in seconds; RFC 1939 requires at least 600.
    pub idle_timeout_secs: u64,
    /// Pause before answering a failed login, in milliseconds (slows down password guessing).
    pub auth_failure_delay_ms: u64,
    /// Slowest average rate, in octets per second, at which a client must take a RETR or TOP
    /// reply (after `retr_grace_secs`); a slower one is disconnected with no deletions, so a
    /// stalled reader cannot hold its maildrop's lock for days.
    pub retr_min_bytes_per_sec: u64,
    /// Seconds a RETR or TOP reply may take before `retr_min_bytes_per_sec` applies.
    pub retr_grace_secs: u64,
    /// Logins that may wait for, or be in, a password check at once; more get `[SYS/TEMP]` at
    /// once instead of queueing without limit behind a login storm.
    pub max_pending_logins: u32,
    /// Password hashes checked at once (threads of the hashing pool, 7 MiB each); 0: as many as
    /// the process may use cores (the container's CPU limit where one is set).
    pub hashing_threads: u32,
    /// Memory the legacy queue (imported hashes beyond a slot of the pool, such as Dovecot's
    /// 64 MiB ARGON2ID) may allocate at once, in MiB.
    pub legacy_hash_memory_mib: u32,
    /// Most threads for blocking work (file store operations and password hashing, which has
    /// its own `hashing_threads`); 0 (the default) means 64 plus `hashing_threads`' worth of
    /// cores. Operations beyond it wait for a thread.
    pub blocking_threads: u32,
    /// Seconds a successful password check is remembered, so a client that polls every minute
    /// does not pay a full argon2id verification each time; 0 turns the cache off. Entries are
    /// keyed by a keyed hash of user and password (never the password) and die at once when the
    /// account's password hash changes; a disabled or deleted account is refused regardless.
    pub credential_cache_secs: u64,
    /// Most remembered verifications at once.
    pub credential_cache_entries: u32,
    /// KiB of messages one session may fetch ahead of its RETRs from S3 (0: off): a client
    /// fetching in order then waits for the store's round trip about once, not once a message.
    pub retr_read_ahead_kib: u64,
    /// MiB of messages read ahead that the whole process may hold.
    pub retr_read_ahead_total_mib: u32,
    /// Seconds a successful password check is also remembered pool-wide, in Redis, so a
    /// client whose polls a balancer spreads over the pool does not pay a full argon2id check
    /// on nearly every login; 0 (the default) turns it off. Needs `locks = "redis"` and
    /// `credential_cache_shared_key`. docs/accounts.md states the trade-off.
    pub credential_cache_shared_secs: u64,
    /// The pool's key for the shared cache's entries: at least 32 characters, the same on every
    /// frontend, kept apart from Redis and the store (a mounted Secret).
    pub credential_cache_shared_key: Option<Secret>,
    pub credential_cache_shared_key_file: Option<PathBuf>,
    /// Seconds an account record (or the absence of one) is kept for logins and deliveries in
    /// a pool; changes drop it pool-wide at once through Redis, and nothing is served while
    /// that feed is down. 0 turns the cache off; the embedded deployment never caches.
    pub account_cache_secs: u64,
    /// Most cached account records at once.
    pub account_cache_entries: u32,
    /// Failed logins allowed on one connection before it is closed.
    pub max_auth_failures: u32,
    /// Lifetime of a maildrop lock lease in seconds; renewed every third of it while the session
    /// lives. A crashed server's locks free themselves after this long.
    pub lock_lease_secs: u64,
    /// Largest message accepted for delivery, in octets after CRLF normalisation.
    pub max_message_size: u64,
    /// Where incoming messages wait while they are received; default `data_dir/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Octets all deliveries in progress may hold in the spool at once, in MiB (LMTP and the
    /// Ingest API together); beyond it a delivery is refused for now (452 4.3.1,
    /// RESOURCE_EXHAUSTED). Size the spool's volume above it.
    pub max_spool_mib: u64,
    /// How often the retention sweeper (RFC 2449 EXPIRE policies) runs, in seconds; one frontend
    /// of the pool sweeps per interval.
    pub sweep_interval_secs: u64,
    /// After SIGTERM, seconds during which the listeners still accept connections while
    /// readiness already reports draining, so load balancers stop sending traffic first.
    pub drain_delay_secs: u64,
    /// Seconds from SIGTERM until sessions still open are closed (a RETR in flight may finish
    /// until then; deletions of sessions that did not QUIT are never applied).
    pub shutdown_grace_secs: u64,
    /// Log filter in `tracing` syntax, e.g. `info` or `cloudpop=debug`; `RUST_LOG` overrides it.
    pub log: String,
    /// Log line format: `text` (for people) or `json` (one object per line, for log pipelines).
    pub log_format: LogFormat,
    /// Address of the operations HTTP listener (`/metrics`, `/healthz`, `/readyz`). Empty
    /// disables it.
    pub ops_listen: String,
    /// How often certificate and token files are checked for changes, in seconds (SIGHUP checks
    /// at once).
    pub reload_interval_secs: u64,

    /// OTLP/gRPC collector for traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g.
    /// `http://otel-collector:4317`. Tracing is off while neither endpoint is set.
    pub otel_endpoint: String,
    /// Collector for traces only (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); wins over `otel_endpoint`.
    pub otel_traces_endpoint: String,
    /// Extra gRPC metadata for the collector, `key=value,key2=value2`
    /// (`OTEL_EXPORTER_OTLP_HEADERS`); often holds an API key, so it is kept secret.
    pub otel_headers: Option<Secret>,
    /// `service.name` of the traces (`OTEL_SERVICE_NAME`).
    pub otel_service_name: String,
    /// More resource attributes, `key=value,...` (`OTEL_RESOURCE_ATTRIBUTES`).
    pub otel_resource_attributes: String,
    /// Sampler (`OTEL_TRACES_SAMPLER`): `always_on`, `always_off`, `traceidratio`,
    /// `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`.
    pub otel_traces_sampler: String,
    /// The ratio for the `*traceidratio` samplers, 0.0-1.0 (`OTEL_TRACES_SAMPLER_ARG`).
    pub otel_traces_sampler_arg: String,
    /// Turns tracing off whatever else is set (`OTEL_SDK_DISABLED`).
    pub otel_sdk_disabled: bool,

    /// S3 endpoint URL; empty means AWS itself (then `s3_region` picks the endpoint).
    pub s3_endpoint: String,
    /// S3 region (any non-empty value works for most self-hosted stores).
    pub s3_region: String,
    /// Bucket holding messages and accounts; required with `store = "s3"`.
    pub s3_bucket: String,
    /// Key prefix inside the bucket, so several deployments can share one bucket.
    pub s3_prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO, Garage, Ceph RGW setups
    /// without wildcard DNS.
    pub s3_path_style: bool,
    /// Access key id. Without it the standard AWS chain is used: environment, profile, web
    /// identity (IRSA), container and instance metadata.
    pub s3_access_key_id: Option<String>,
    /// File holding the access key id (a mounted Secret keeps both halves of the key together).
    pub s3_access_key_id_file: Option<PathBuf>,
    /// Secret access key; prefer `CLOUDPOP_S3_SECRET_ACCESS_KEY` or the `_file` form.
    pub s3_secret_access_key: Option<Secret>,
    /// File holding the secret access key.
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Time allowed for one S3 call attempt, and for each chunk of a body being read, in seconds.
    pub s3_timeout_secs: u64,
    /// Attempts per S3 call (with exponential backoff) before giving up with `[SYS/TEMP]`.
    pub s3_max_attempts: u32,

    /// How Redis is deployed: `standalone` (one server, or a managed endpoint that fails over
    /// behind one address), `cluster` (Redis Cluster) or `sentinel` (a primary named by Redis
    /// Sentinel).
    pub redis_mode: RedisMode,
    /// Redis URL, `redis://host:port/db` or `rediss://` for TLS. In `cluster` mode, one or
    /// more seed nodes; in `sentinel` mode, the sentinels (their own credentials in the URL);
    /// several URLs are separated by commas.
    pub redis_url: String,
    /// In `sentinel` mode, the name the sentinels monitor the primary under.
    pub redis_sentinel_master: String,
    /// Redis ACL user name.
    pub redis_username: Option<String>,
    /// Redis password; prefer `CLOUDPOP_REDIS_PASSWORD` or the `_file` form.
    pub redis_password: Option<Secret>,
    /// File holding the Redis password.
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for `rediss://` instead of the system trust store.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Prefix of every key cloudpop writes in Redis.
    pub redis_key_prefix: String,
    /// Time allowed for one Redis command or connection attempt, in milliseconds.
    pub redis_timeout_ms: u64,

    /// Address of the gRPC API (Admin, Ingest, health, reflection). Loopback by default; empty
    /// disables it.
    pub api_listen: String,
    /// Admin-scope bearer tokens, comma- or newline-separated; prefer `CLOUDPOP_API_ADMIN_TOKENS`
    /// or the `_file` form.
    pub api_admin_tokens: Option<Secret>,
    /// File with admin-scope tokens, one per line.
    pub api_admin_tokens_file: Option<PathBuf>,
    /// Ingest-scope bearer tokens, comma- or newline-separated.
    pub api_ingest_tokens: Option<Secret>,
    /// File with ingest-scope tokens, one per line.
    pub api_ingest_tokens_file: Option<PathBuf>,
    /// Serve the API over TLS, with `tls_cert`/`tls_key` (or the generated certificate).
    pub api_tls: bool,
    /// Serve the API without TLS on a non-loopback address. Off by default: bearer tokens and
    /// the passwords of CreateAccount/SetPassword would cross the network in clear. Set it only
    /// where something else encrypts the traffic (a service mesh with mutual TLS).
    pub api_allow_cleartext: bool,
    /// PEM CA whose client certificates the API requires (mutual TLS); needs `api_tls`.
    pub api_client_ca: Option<PathBuf>,

    /// Address of the LMTP listener (RFC 2033) for the provider's MTAs, e.g. `127.0.0.1:24` or
    /// a cluster-internal address. Empty (the default) disables it.
    pub lmtp_listen: String,
    /// Clients allowed to deliver over LMTP (CIDR list); every other connection is refused
    /// at once with `554 5.7.1`. Loopback only by default.
    #[serde(deserialize_with = "string_or_list")]
    pub lmtp_trusted_networks: Vec<String>,
    /// Offer STARTTLS on the LMTP listener, with the POP3 certificate.
    pub lmtp_starttls: bool,
    /// Map recipient addresses to mailboxes by their local part only (`alice@example.com` ->
    /// `alice`); off, the whole address is the mailbox name.
    pub lmtp_strip_domain: bool,
    /// Characters that start a subaddress in a recipient's local part (`alice+news@...` ->
    /// `alice@...`); empty turns subaddresses off.
    pub lmtp_subaddress_separator: String,
    /// Add `Return-Path`, `Delivered-To` and `Received` in front of each message delivered over
    /// LMTP (RFC 5321 section 4.4).
    pub lmtp_trace_headers: bool,
    /// The host name in the LMTP greeting and `Received` fields; empty means this host's name.
    pub lmtp_hostname: String,
    /// Refuse mail to a full mailbox temporarily (`452 4.2.2`: the MTA retries, and the mail
    /// gets in once the user has made room) rather than for good (`552 5.2.2`: it bounces).
    pub lmtp_quota_tempfail: bool,
    /// Most simultaneous LMTP connections per process; more get `421 4.3.2`.
    pub lmtp_max_connections: usize,

    /// Where logins are checked: `local` (cloudpop's own argon2id records), `ldap` or `http`
    /// (a directory; see docs/authentication.md). Never a fallback from one
    /// to another: a directory that does not answer makes logins `[SYS/TEMP]`.
    pub auth_backend: AuthBackend,
    /// How a login name (from a directory without a mailbox attribute, or a token's user
    /// claim) becomes a mailbox name: `%u` the whole name, `%n` its local part, `%d` its domain.
    pub auth_mailbox_format: String,
    /// Directory failures in a row that open the circuit breaker: further logins get
    /// `[SYS/TEMP]` at once, without calling the directory, for `auth_breaker_secs`.
    pub auth_breaker_failures: u32,
    /// Seconds the circuit breaker stays open before one trial call is let through.
    pub auth_breaker_secs: u64,
    /// LDAP server, `ldap://host:389` or `ldaps://host:636`.
    pub ldap_url: String,
    /// Upgrade `ldap://` connections with StartTLS before anything is sent.
    pub ldap_starttls: bool,
    /// PEM CA certificate(s) to trust for LDAPS/StartTLS instead of the system trust store.
    pub ldap_ca_file: Option<PathBuf>,
    /// The service account that searches for users (search-then-bind); empty searches
    /// anonymously.
    pub ldap_bind_dn: String,
    /// The service account's password; prefer `CLOUDPOP_LDAP_BIND_PASSWORD` or the `_file` form.
    pub ldap_bind_password: Option<Secret>,
    /// File holding the service account's password.
    pub ldap_bind_password_file: Option<PathBuf>,
    /// Where users are searched for.
    pub ldap_base_dn: String,
    /// Finds the user with `%u`, `%n`, `%d` (each escaped, RFC 4515); write the "enabled"
    /// condition into it, e.g. `(&(uid=%u)(!(pwdAccountLockedTime=*)))`.
    pub ldap_user_filter: String,
    /// Bind directly as this DN (`%u`, `%n`, `%d` escaped, RFC 4514), e.g.
    /// `uid=%n,ou=people,dc=example,dc=com`, instead of searching first.
    pub ldap_dn_template: String,
    /// LDAP attributes for the mailbox name and per-user policy, as `field=attribute` pairs:
    /// `mailbox`, `login_delay_secs`, `expire_days` (days or `never`), `quota_bytes`,
    /// `quota_messages`.
    pub ldap_attributes: String,
    /// Time allowed for connecting and for each LDAP operation, in milliseconds.
    pub ldap_timeout_ms: u64,
    /// LDAP connections per pool (one pool searches, one binds as users).
    pub ldap_pool_size: u32,
    /// The HTTP directory's URL (HTTPS; plain HTTP only to loopback).
    pub auth_http_url: String,
    /// Bearer token sent to the HTTP directory; prefer `CLOUDPOP_AUTH_HTTP_TOKEN` or the
    /// `_file` form.
    pub auth_http_token: Option<Secret>,
    /// File holding the HTTP directory's bearer token.
    pub auth_http_token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for the HTTP directory instead of the system trust store.
    pub auth_http_ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) for mutual TLS with the HTTP directory.
    pub auth_http_client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub auth_http_client_key: Option<PathBuf>,
    /// Time allowed for one HTTP directory call, connecting included, in milliseconds.
    pub auth_http_timeout_ms: u64,
    /// Offer SCRAM-SHA-256 (and -PLUS over TLS 1.3) with the local backend, and keep SCRAM
    /// credentials (PBKDF2-SHA256, weaker against offline guessing than argon2id) beside each
    /// password set or used from now on.
    pub scram: bool,
    /// Also offer SCRAM-SHA-256 on unencrypted connections where plaintext authentication is
    /// refused. Off by default: an eavesdropper who records the exchange can guess the password
    /// offline against its salt and iteration count, and an active attacker can strip STLS.
    pub scram_cleartext: bool,
    /// PBKDF2 iterations of new SCRAM credentials (RFC 7677 asks for 4096 at least); every
    /// client login computes them once.
    pub scram_iterations: u32,
    /// The identity provider's JSON Web Key Set URL; set, OAUTHBEARER and XOAUTH2 are offered
    /// wherever plaintext authentication is allowed.
    pub oauth_jwks_url: String,
    /// The `iss` tokens must carry.
    pub oauth_issuer: String,
    /// The `aud` tokens must carry (one of, if a list).
    pub oauth_audience: String,
    /// The claim naming the user, mapped to a mailbox by `auth_mailbox_format`. With `email`,
    /// tokens must also carry `email_verified: true`.
    pub oauth_user_claim: String,
    /// Domains a token's user must be in (the part after its last `@`); empty: any. Required
    /// when `auth_mailbox_format` drops the domain (uses neither `%u` nor `%d`), or an account
    /// elsewhere at a shared identity provider with the same local part would open the mailbox.
    #[serde(deserialize_with = "string_or_list")]
    pub oauth_domains: Vec<String>,
    /// PEM CA certificate(s) to trust for the JWKS URL instead of the system trust store.
    pub oauth_ca_file: Option<PathBuf>,
    /// Seconds between fetches of the key set (a token signed by an unknown key fetches it
    /// at once, at most every 10 s).
    pub oauth_jwks_refresh_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub oauth_leeway_secs: u64,
    /// The scope named in the RFC 7628 error a client gets for a refused token.
    pub oauth_scope: String,

    /// Window over which failed logins are counted, in seconds.
    pub throttle_window_secs: u64,
    /// Failed logins per account within the window before further logins are refused.
    pub throttle_account_failures: u32,
    /// Failed logins per client address within the window before its logins are refused.
    pub throttle_address_failures: u32,
    /// Failed logins per account within the window from the addresses it logged in from in the
    /// last 30 days, all together (they count against neither the account's nor the address's
    /// budget).
    pub throttle_known_address_failures: u32,
}

/// A configuration that could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, overlaid by `file` (if any) and then by `CLOUDPOP_*` (and `OTEL_*`) variables
    /// from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Self::load_with_warnings(file, env).map(|(config, _)| config)
    }

    /// As [`Config::load`], with warnings about environment variables that look like misspelt
    /// keys (and were ignored).
    pub fn load_with_warnings(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            let parse_error = |message| ConfigError::Parse { path: path.into(), message };
            table = text.parse().map_err(|e: toml::de::Error| {
                let line = e.span().map(|span| text[..span.start].lines().count().max(1));
                parse_error(match line {
                    Some(line) => format!("line {line}: {}", env::one_line(e.message())),
                    None => env::one_line(&e.to_string()),
                })
            })?;
            // Unknown keys in a file are mistakes the operator wrote: they stop startup.
            let known = env::known_keys();
            if let Some(unknown) = table.keys().find(|k| !known.contains(k)) {
                let hint = match env::closest_key(&known, unknown) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => "docs/configuration.md lists every key".into(),
                };
                return Err(parse_error(format!("unknown key `{unknown}`; {hint}")));
            }
            Self::deserialize(table.clone()).map_err(|e| parse_error(env::one_line(&e.to_string())))?;
        }
        let warnings = env::overlay(&mut table, env.into_iter().collect())?;
        let config = Self::deserialize(table).map_err(|e| ConfigError::Invalid(env::one_line(&e.to_string())))?;
        Ok((config, warnings))
    }

    /// `proxy_trusted_networks` parsed; a bare address means just that host.
    pub fn proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        networks("proxy_trusted_networks", &self.proxy_trusted_networks)
    }
}

/// A list of networks (the setting `key`) parsed; a bare address means just that host.
pub fn networks(key: &str, list: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.iter()
        .map(|raw| {
            let raw = raw.trim();
            raw.parse::<ipnet::IpNet>()
                .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    ConfigError::Invalid(format!("{key}: {raw:?} is not a network like 10.0.0.0/8 or an address"))
                })
        })
        .collect()
}

/// A list given as a TOML array or as one comma-separated string (the form environment
/// variables can carry).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    let items = match Either::deserialize(d)? {
        Either::One(text) => text.split(',').map(str::to_owned).collect(),
        Either::Many(items) => items,
    };
    Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests;
