//! What a POP3 session is configured with.

use std::time::Duration;

/// The POP3 sessions' settings, shared by every session of a process.
#[derive(Debug, Clone, PartialEq)]
pub struct Pop3Settings {
    /// Idle time allowed before login.
    pub login_timeout: Duration,
    /// Longest time from connecting to logging in, however busy the client keeps the connection.
    pub login_deadline: Duration,
    /// Idle time allowed after login (RFC 1939 asks for ten minutes at least).
    pub idle_timeout: Duration,
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
    pub max_line_violations: u32,
    pub max_bad_commands: u32,
    pub max_auth_failures: u32,
    /// Pause before answering a failed login.
    pub auth_failure_delay: Duration,
    /// USER/PASS and AUTH PLAIN/LOGIN without TLS from anywhere (`allow_plaintext_auth`).
    pub allow_plaintext_auth: bool,
    /// ... or from loopback only (`plaintext_auth_loopback`).
    pub plaintext_auth_loopback: bool,
    /// SCRAM is offered on unencrypted connections only where plaintext is allowed, or with this.
    pub scram_cleartext: bool,
    /// Named in the RFC 7628 error for a refused bearer token.
    pub oauth_scope: String,
    /// The slowest average pace a client must take a RETR or TOP reply at, after `retr_grace`.
    pub retr_min_bytes_per_sec: u64,
    pub retr_grace: Duration,
    /// Lifetime of the maildrop lease a session holds (renewed while it lives).
    pub lock_lease: Duration,
    /// Octets of messages one session may read ahead of its RETRs (0: none), and KiB the whole
    /// process may (see `read_ahead`).
    pub retr_read_ahead: u64,
    pub retr_read_ahead_total_kib: usize,
}
