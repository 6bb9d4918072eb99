//! cloudpop: a POP3 mailbox retrieval service built from stateless frontends.
//!
//! Layout:
//! - [`protocol`]: POP3 as pure logic (parser, state machine, encoders, PROXY header); no IO
//! - [`session`]: drives the protocol over one connection; [`server`]: listeners and shutdown
//! - [`backends`]: picks the backends below from the configuration
//! - [`store`]: the narrow storage traits and their backends (filesystem, S3)
//! - [`lock`]: maildrop leases (in-process, Redis); [`throttle`]: failed logins and LOGIN-DELAY;
//!   [`sessions`]: the sessions open across the pool; [`redis_conn`]: the shared Redis link
//! - [`accounts`] and [`names`]: account records, validated names, argon2id logins;
//!   [`record_cache`]: records cached in a pool, dropped pool-wide on change
//! - [`delivery`]: spooling, CRLF normalisation, quotas, idempotent storing
//! - [`maintenance`]: operator deletions, under the maildrop lock
//! - [`sweeper`]: retention after retrieval (EXPIRE)
//! - [`api`]: the gRPC Admin and Ingest services; [`client`]: the command line's API client
//! - [`tls`], [`secret`], [`config`]: certificates, secrets, the one configuration struct;
//!   [`reload`]: certificates and token files replaced while running
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz` and readiness; [`telemetry`]: logs and traces

pub mod accounts;
pub mod api;
pub mod auth;
pub mod backends;
pub mod check;
pub mod client;
pub mod config;
pub mod delivery;
pub mod hashing;
pub mod import;
pub mod limits;
pub mod lmtp;
pub mod lock;
pub mod maintenance;
pub mod names;
pub mod ops;
pub mod password_schemes;
pub mod protocol;
pub mod record_cache;
pub mod redis_conn;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod sessions;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod usage;
pub mod verified;
