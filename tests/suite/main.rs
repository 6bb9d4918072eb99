//! The integration suite: one test binary, so the real `cloudpop` binary, the real servers and
//! the real clients are exercised without linking the whole dependency tree once per file.
//! Each module is one area; `common` starts servers and speaks POP3, `conformance` is the suite
//! every store and lock backend must pass.

mod common;
mod conformance;

mod adversarial;
mod api;
mod api_python;
mod auth_directories;
mod auth_mechanisms;
mod backend_conformance;
mod cli;
mod clients;
mod docs;
mod docs_examples;
mod kubernetes;
mod kubernetes_auth;
mod lmtp;
mod login_cache;
mod maildrop_index;
mod migration;
mod operations;
mod pool;
mod pop3_commands;
mod promises;
mod proxy_protocol;
mod read_ahead;
mod redis_topologies;
mod tls;
mod tracing;
