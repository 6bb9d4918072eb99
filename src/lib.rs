//! cloudpop: a POP3 mailbox retrieval service built from stateless frontends.
//!
//! Layout:
//! - [`protocol`]: POP3 as pure logic (parser, state machine, encoders); no IO
//! - [`protocol`]-driving IO lives in [`session`] (one connection) and [`server`] (listeners)
//! - [`store`]: the narrow storage traits and their backends (messages, accounts)
//! - [`lock`]: maildrop leases and their backends
//! - [`accounts`]: names, password hashing, login checks
//! - [`delivery`]: storing new mail with CRLF normalisation
//! - [`tls`]: rustls configuration and the self-signed default certificate
//! - [`config`]: the one configuration struct, its sources and validation

pub mod accounts;
pub mod api;
pub mod backends;
pub mod client;
pub mod config;
pub mod delivery;
pub mod lock;
pub mod names;
pub mod protocol;
pub mod redis_conn;
pub mod secret;
pub mod server;
pub mod session;
pub mod sessions;
pub mod store;
pub mod sweeper;
pub mod throttle;
pub mod tls;
