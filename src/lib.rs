//! cloudpop: a POP3 mailbox retrieval service built from stateless frontends.
//!
//! ## Layers
//! The house is drawn from the bottom up: a module uses only modules on its own floor or below,
//! and no two modules use each other. `scripts/check-layers` reads this list and fails the test
//! command on a use that climbs or a circle. A lower module that needs something from above
//! takes it as an argument (a trait object, a closure, a settings value).
//!
//! 1. Leaves, no IO of their own beyond what they name: [`protocol`] (POP3, SASL and LMTP as
//!    pure logic: the line buffer, parsers, state machines, encoders, PROXY header),
//!    [`names`] (validated account names), [`secret`] (secrets from env or files), [`limits`]
//!    (per-address connection slots), [`metrics`] (every Prometheus family, usable from
//!    anywhere), [`tls`] (certificates, acceptors, the reloading certificate store, the shared
//!    handshake), [`clock`] (Unix time), [`sync`] (poison-tolerant mutex locking).
//! 2. Settings: [`config`] (the flat TOML keys and `CLOUDPOP_*` variables, checked without
//!    knowing any component).
//! 3. Storage and coordination: [`store`] (messages and account records: filesystem, S3, the
//!    maildrop index) and [`coord`] (maildrop leases, login throttle, session registry, usage
//!    counters, the Redis link), each behind narrow traits with one conformance suite.
//! 4. Domain services: [`accounts`] (records, argon2id, caches), [`auth`] (local, LDAP, HTTP
//!    directories, bearer tokens), [`backends`] (the bundle of both stores and services),
//!    [`delivery`] (spooling and idempotent storing), [`sweeper`] (retention after retrieval),
//!    [`maintenance`] (operator deletions under the maildrop lock), [`telemetry`] (logs,
//!    traces, W3C trace context).
//! 5. Protocol drivers: [`session`] (one POP3 connection over real IO), [`lmtp`] (RFC 2033
//!    for MTAs), [`api`] (the gRPC Admin and Ingest services), [`ops`] (`/metrics`,
//!    `/healthz`, `/readyz`, readiness), [`import`] (moving users in), [`client`] (the command
//!    line's API client), [`check`] (`cloudpop check` against a running deployment).
//! 6. Wiring: [`settings`] (the configuration resolved once into each component's settings),
//!    [`reload`] (files checked again while running), [`server`] (start-up, the accept loop
//!    every listener shares, shutdown). The command line (`main.rs` and `src/cli/`, one file
//!    per command group) is the binary on top of the library.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod backends;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod coord;
pub mod delivery;
pub mod import;
pub mod limits;
pub mod lmtp;
pub mod maintenance;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod protocol;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod settings;
pub mod store;
pub mod sweeper;
pub mod sync;
pub mod telemetry;
pub mod tls;
