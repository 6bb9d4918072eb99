//! The POP3 state machine: AUTHORIZATION -> TRANSACTION -> UPDATE (RFC 1939 section 3).
//!
//! It is fed lines and the outcomes of the IO it asked for, and answers with [`Step`]s. This is
//! the one place that says which command is legal in which state. It does no IO and reads no
//! clock, so every behaviour here is unit-tested without a socket.

use super::command::{self, Command};
use super::maildrop::{Listing, MaildropView};
use super::response::{self, Code};
use super::sasl::{self, Credentials, Mechanism};
use crate::protocol::scram;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Facts about the connection that decide what is offered on it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The connection is encrypted (implicit TLS, or after STLS).
    pub tls_active: bool,
    /// STLS can be offered: TLS is configured and not yet active.
    pub stls_available: bool,
    /// USER/PASS and the plaintext-equivalent SASL mechanisms (PLAIN, LOGIN, OAUTHBEARER,
    /// XOAUTH2) may be used on this connection.
    pub plaintext_allowed: bool,
    /// SCRAM-SHA-256 is available (the local backend keeps SCRAM credentials).
    pub scram: bool,
    /// The connection's `tls-exporter` channel binding (TLS 1.3 only): SCRAM-SHA-256-PLUS is
    /// offered with it.
    pub channel_binding: Option<Vec<u8>>,
    /// OAUTHBEARER and XOAUTH2 are available (an identity provider is configured).
    pub bearer: bool,
    /// The scope named in the error a refused token gets.
    pub oauth_scope: String,
    /// Failed logins tolerated before the connection is closed.
    pub max_auth_failures: u32,
    /// Overlong lines tolerated before the connection is closed.
    pub max_line_violations: u32,
    /// Unparseable commands tolerated before the connection is closed.
    pub max_bad_commands: u32,
    /// Value of the IMPLEMENTATION capability.
    pub implementation: String,
    /// Value of the EXPIRE capability ("NEVER" or days).
    pub expire: String,
    /// The server-wide minimum of the LOGIN-DELAY capability, in seconds (accounts may set more).
    pub login_delay_secs: u64,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and read the next line.
    Reply(Vec<u8>),
    /// Verify the credentials and lock the maildrop, then call [`Machine::login_finished`].
    Login(Credentials),
    /// Look up the SCRAM credentials of `user` (a decoy's for an unknown user), make a fresh
    /// server nonce, then call [`Machine::scram_lookup_finished`].
    ScramLookup { user: String },
    /// Send the reply, discard anything buffered, and run the TLS handshake.
    StartTls(Vec<u8>),
    /// Send `header`, then message `number`, stored under `key`, dot-stuffed, cut after `top`
    /// body lines when set.
    Send { header: Vec<u8>, number: u64, key: String, top: Option<u64> },
    /// Send `header`, then the listing's lines piece by piece through
    /// [`Machine::write_listing`], so no reply of a large maildrop is ever whole in memory.
    Listing { header: Vec<u8>, kind: ListKind },
    /// Enter UPDATE: remove the messages stored under these keys (this many octets in all),
    /// then call [`Machine::update_finished`].
    Update(Vec<String>, u64),
    /// Wait the failed-login delay, send the reply, and close the connection if `close`.
    AuthFailed { reply: Vec<u8>, close: bool },
    /// Send the reply and close the connection.
    Close(Vec<u8>),
}

/// Which multi-line listing a [`Step::Listing`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// LIST: number and size.
    Sizes,
    /// UIDL: number and unique id.
    Uids,
}

/// The result of a [`Step::Login`].
#[derive(Debug)]
pub enum LoginOutcome {
    /// Credentials good, maildrop locked; the snapshot and the account's LOGIN-DELAY and EXPIRE.
    LoggedIn {
        listing: Vec<Listing>,
        login_delay_secs: u64,
        expire_days: Option<u32>,
    },
    BadCredentials,
    /// Too many recent failures for this account or client address.
    Throttled,
    /// Another session holds the maildrop.
    InUse,
    /// Logged in again before the account's minimum delay (in seconds) passed.
    TooSoon(u64),
    /// A dependency failed; the text says which, without secrets.
    Unavailable(String),
}

/// The result of a [`Step::Update`].
#[derive(Debug)]
pub enum UpdateOutcome {
    Applied,
    /// Some deletions were not applied (RFC 1939 allows `-ERR` from QUIT).
    Failed(String),
}

#[derive(Debug)]
enum Phase {
    Authorization {
        user: Option<String>,
    },
    SaslPlain,
    SaslLoginUser,
    SaslLoginPass {
        user: String,
    },
    /// Waiting for SCRAM's client-first message.
    SaslScramFirst {
        plus: bool,
    },
    /// Waiting for the driver to look up SCRAM credentials.
    ScramLookup(scram::ClientFirst, Mechanism),
    /// Waiting for SCRAM's client-final message.
    SaslScramFinal(Box<scram::Pending>, Mechanism),
    /// Logged in with SCRAM: the server-final message was sent, and the client's empty
    /// response completes the login with this reply.
    SaslScramDone(MaildropView, Vec<u8>),
    /// Waiting for an OAUTHBEARER or XOAUTH2 response.
    SaslBearer(Mechanism),
    /// A token was refused and the error challenge sent; the client's answer gets `-ERR`.
    SaslBearerFailed,
    /// Waiting for the driver to finish a login.
    Authenticating,
    Transaction(MaildropView),
    /// QUIT seen; nothing more is read.
    Closed,
}

/// Protocol state of one POP3 connection.
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    phase: Phase,
    auth_failures: u32,
    line_violations: u32,
    bad_commands: u32,
    /// The logged-in account's LOGIN-DELAY, for CAPA after login.
    user_login_delay: Option<u64>,
    /// The logged-in account's EXPIRE (`None` inside: never), for CAPA after login.
    user_expire: Option<Option<u32>>,
    /// The mechanism of the login in flight.
    pending: Option<Mechanism>,
    /// SCRAM's server-final message, sent once the login it proved has succeeded.
    scram_final: Option<String>,
}

impl Machine {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            phase: Phase::Authorization { user: None },
            auth_failures: 0,
            line_violations: 0,
            bad_commands: 0,
            user_login_delay: None,
            user_expire: None,
            pending: None,
            scram_final: None,
        }
    }

    /// The greeting. It carries no APOP timestamp: APOP is not offered.
    pub fn greeting(&self) -> Vec<u8> {
        response::ok("cloudpop POP3 server ready")
    }

    /// Sets the connection's `tls-exporter` channel binding (known once TLS is up).
    pub fn set_channel_binding(&mut self, binding: Option<Vec<u8>>) {
        self.settings.channel_binding = binding;
    }

    /// Whether the connection is encrypted.
    pub fn tls_active(&self) -> bool {
        self.settings.tls_active
    }

    /// Whether the session is in TRANSACTION state (it holds a maildrop lock).
    pub fn in_transaction(&self) -> bool {
        matches!(self.phase, Phase::Transaction(_))
    }

    /// Whether the next line is a command (not a SASL response, which may be a secret).
    pub fn expects_command(&self) -> bool {
        matches!(self.phase, Phase::Authorization { .. } | Phase::Transaction(_))
    }

    /// The messages after message `number` not marked deleted, in order, as (number, key,
    /// size): what a client fetching in order asks for next (at most `limit`).
    pub fn live_after(&self, number: u64, limit: usize) -> Vec<(u64, String, u64)> {
        let Phase::Transaction(view) = &self.phase else { return Vec::new() };
        view.live_after(number).take(limit).map(|(n, m)| (n, m.key.clone(), m.size)).collect()
    }

    /// Whether message `number` exists and is not marked deleted.
    pub fn is_live(&self, number: u64) -> bool {
        matches!(&self.phase, Phase::Transaction(view) if view.get(number).is_ok())
    }

    /// Handles one complete line from the client.
    pub fn on_line(&mut self, line: &[u8]) -> Step {
        match &self.phase {
            _ if self.in_sasl() => self.on_sasl_line(line),
            Phase::Authenticating | Phase::ScramLookup(..) | Phase::Closed => {
                Step::Close(response::err(None, "Unexpected input"))
            }
            _ => match command::parse(line) {
                Ok(cmd) => self.on_command(cmd),
                Err(e) => {
                    self.bad_commands += 1;
                    if self.bad_commands > self.settings.max_bad_commands {
                        Step::Close(response::err(None, "Too many bad commands, closing connection"))
                    } else {
                        Step::Reply(response::err(None, &e.to_string()))
                    }
                }
            },
        }
    }

    /// Handles a line that exceeded the length limit.
    pub fn on_line_too_long(&mut self) -> Step {
        if matches!(self.phase, Phase::SaslScramDone(..)) {
            // The maildrop is already locked; close rather than leave a half-finished login.
            self.phase = Phase::Closed;
            return Step::Close(response::err(None, "Line too long"));
        }
        if self.in_sasl() {
            self.phase = Phase::Authorization { user: None };
        }
        self.line_violations += 1;
        if self.line_violations > self.settings.max_line_violations {
            Step::Close(response::err(None, "Too many overlong lines, closing connection"))
        } else {
            Step::Reply(response::err(None, "Line too long"))
        }
    }

    fn on_command(&mut self, cmd: Command) -> Step {
        if let Command::Capa = cmd {
            return Step::Reply(self.capabilities());
        }
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Authorization { user } => self.authorization(cmd, user),
            Phase::Transaction(view) => self.transaction(cmd, view),
            other => {
                self.phase = other;
                Step::Close(response::err(None, "Unexpected command"))
            }
        }
    }

    fn authorization(&mut self, cmd: Command, user: Option<String>) -> Step {
        let plaintext_refused = || {
            Step::Reply(response::err(
                Some(Code::Auth),
                "Plaintext authentication disallowed on non-secure connections; use STLS or port 995",
            ))
        };
        self.phase = Phase::Authorization { user: None };
        match cmd {
            Command::User(_) | Command::Pass(_) if !self.settings.plaintext_allowed => plaintext_refused(),
            Command::Auth { mechanism: Some(mech), .. }
                if !self.settings.plaintext_allowed
                    && Mechanism::from_name(&mech).is_some_and(Mechanism::plaintext_equivalent) =>
            {
                plaintext_refused()
            }
            Command::User(name) => {
                self.phase = Phase::Authorization { user: Some(name) };
                Step::Reply(response::ok("Send your password"))
            }
            Command::Pass(password) => match user {
                Some(user) => self.begin_login(Credentials::password(user, password, Mechanism::User)),
                None => Step::Reply(response::err(None, "Send USER first")),
            },
            Command::Auth { mechanism: None, .. } => {
                Step::Reply(response::multiline("Supported SASL mechanisms follow", self.mechanisms()))
            }
            Command::Auth { mechanism: Some(mech), initial_response } => self.begin_sasl(&mech, initial_response),
            Command::Apop => Step::Reply(response::err(
                None,
                "APOP is not supported: passwords are stored only as hashes; use USER/PASS or AUTH over TLS",
            )),
            Command::Stls if self.settings.tls_active => Step::Reply(response::err(None, "TLS already active")),
            Command::Stls if !self.settings.stls_available => Step::Reply(response::err(None, "STLS not available")),
            Command::Stls => Step::StartTls(response::ok("Begin TLS negotiation")),
            // Nothing changes with UTF-8 mode: messages go out as stored either way
            // (docs/clients.md), and passwords are UTF-8 in both modes.
            Command::Utf8 => {
                self.phase = Phase::Authorization { user };
                Step::Reply(response::ok("UTF8 enabled"))
            }
            Command::Quit => {
                self.phase = Phase::Closed;
                Step::Close(response::ok("cloudpop signing off"))
            }
            _ => {
                self.phase = Phase::Authorization { user };
                Step::Reply(response::err(None, "Command not valid before login"))
            }
        }
    }

    fn begin_login(&mut self, creds: Credentials) -> Step {
        self.phase = Phase::Authenticating;
        self.pending = Some(creds.mechanism);
        Step::Login(creds)
    }

    /// Continues after a [`Step::Login`].
    pub fn login_finished(&mut self, outcome: LoginOutcome) -> Step {
        self.phase = Phase::Authorization { user: None };
        let mechanism = self.pending.take();
        let scram_final = self.scram_final.take();
        match outcome {
            LoginOutcome::LoggedIn { listing, login_delay_secs, expire_days } => {
                self.user_login_delay = Some(login_delay_secs);
                self.user_expire = Some(expire_days);
                let view = MaildropView::new(listing);
                let (count, octets) = view.stat();
                let reply = response::ok(&format!("Logged in, maildrop has {count} messages ({octets} octets)"));
                if let Some(server_final) = scram_final {
                    // RFC 5034 section 4: the server-final message goes out as a challenge.
                    self.phase = Phase::SaslScramDone(view, reply);
                    return Step::Reply(response::continuation(&STANDARD.encode(server_final)));
                }
                self.phase = Phase::Transaction(view);
                Step::Reply(reply)
            }
            LoginOutcome::BadCredentials if mechanism.is_some_and(Mechanism::is_bearer) => {
                let mechanism = mechanism.expect("checked");
                self.phase = Phase::SaslBearerFailed;
                Step::Reply(response::continuation(&sasl::bearer_error(mechanism, &self.settings.oauth_scope)))
            }
            LoginOutcome::BadCredentials => self.auth_failed(Code::Auth, "Authentication failed"),
            // Temporary, so that clients retry later instead of asking the user for a password.
            LoginOutcome::Throttled => self.auth_failed(Code::SysTemp, "Too many failed logins, try again later"),
            LoginOutcome::InUse => {
                Step::Reply(response::err(Some(Code::InUse), "Maildrop is locked by another session, try again later"))
            }
            LoginOutcome::TooSoon(secs) => Step::Reply(response::err(
                Some(Code::LoginDelay),
                &format!("Minimum time between logins is {secs} seconds"),
            )),
            LoginOutcome::Unavailable(why) => Step::Reply(response::err(
                Some(Code::SysTemp),
                &format!("Temporary server failure ({why}), try again later"),
            )),
        }
    }

    fn auth_failed(&mut self, code: Code, text: &str) -> Step {
        self.auth_failures += 1;
        let close = self.auth_failures >= self.settings.max_auth_failures;
        if close {
            self.phase = Phase::Closed;
        }
        Step::AuthFailed { reply: response::err(Some(code), text), close }
    }

    fn transaction(&mut self, cmd: Command, mut view: MaildropView) -> Step {
        let step = match cmd {
            Command::Stat => {
                let (count, octets) = view.stat();
                Step::Reply(response::ok(&format!("{count} {octets}")))
            }
            Command::List(None) => {
                let (count, octets) = view.stat();
                let header = response::ok(&format!("{count} messages ({octets} octets)"));
                Step::Listing { header, kind: ListKind::Sizes }
            }
            Command::List(Some(n)) => lookup(&view, n, |m| response::ok(&format!("{n} {}", m.size))),
            Command::Uidl(None) => {
                Step::Listing { header: response::ok("Unique-ID listing follows"), kind: ListKind::Uids }
            }
            Command::Uidl(Some(n)) => lookup(&view, n, |m| response::ok(&format!("{n} {}", m.uid))),
            Command::Retr(n) => match view.get(n) {
                Ok(m) => {
                    let header = response::ok(&format!("{} octets", m.size));
                    Step::Send { header, number: n, key: m.key.clone(), top: None }
                }
                Err(e) => Step::Reply(response::err(None, e.text())),
            },
            Command::Top(n, lines) => match view.get(n) {
                Ok(m) => {
                    let header = response::ok("Top of message follows");
                    Step::Send { header, number: n, key: m.key.clone(), top: Some(lines) }
                }
                Err(e) => Step::Reply(response::err(None, e.text())),
            },
            Command::Dele(n) => match view.delete(n) {
                Ok(()) => Step::Reply(response::ok(&format!("Message {n} deleted"))),
                Err(e) => Step::Reply(response::err(None, e.text())),
            },
            Command::Noop => Step::Reply(response::ok("")),
            Command::Rset => {
                view.reset();
                let (count, octets) = view.stat();
                Step::Reply(response::ok(&format!("Maildrop has {count} messages ({octets} octets)")))
            }
            Command::Quit => {
                let (doomed, octets) = view.deleted_keys();
                self.phase = Phase::Closed;
                return Step::Update(doomed, octets);
            }
            _ => Step::Reply(response::err(None, "Command not valid after login")),
        };
        self.phase = Phase::Transaction(view);
        step
    }

    /// Continues a [`Step::Listing`]: appends the lines of the messages numbered above `*cursor`
    /// to `out` until at least `budget` octets were added or the listing is complete (then with
    /// its terminating line), and advances `cursor`. Returns whether the listing is complete.
    pub fn write_listing(&self, kind: ListKind, cursor: &mut u64, out: &mut Vec<u8>, budget: usize) -> bool {
        let Phase::Transaction(view) = &self.phase else {
            out.extend_from_slice(response::END);
            return true;
        };
        let limit = out.len().saturating_add(budget);
        for (n, m) in view.live_after(*cursor) {
            if out.len() >= limit {
                return false;
            }
            match kind {
                ListKind::Sizes => response::push_line(out, &format!("{n} {}", m.size)),
                ListKind::Uids => response::push_line(out, &format!("{n} {}", m.uid)),
            }
            *cursor = n;
        }
        out.extend_from_slice(response::END);
        true
    }

    /// Finishes QUIT after a [`Step::Update`].
    pub fn update_finished(&mut self, outcome: UpdateOutcome) -> Step {
        self.phase = Phase::Closed;
        match outcome {
            UpdateOutcome::Applied => Step::Close(response::ok("cloudpop signing off")),
            UpdateOutcome::Failed(why) => Step::Close(response::err(
                Some(Code::SysTemp),
                &format!("Some deleted messages were not removed ({why})"),
            )),
        }
    }
}

fn lookup(view: &MaildropView, n: u64, found: impl FnOnce(&Listing) -> Vec<u8>) -> Step {
    Step::Reply(match view.get(n) {
        Ok(m) => found(m),
        Err(e) => response::err(None, e.text()),
    })
}

#[cold]
fn unreachable_phase() -> Step {
    Step::Close(response::err(Some(Code::SysPerm), "Internal state error"))
}

/// The line sent before closing an idle connection.
pub fn idle_timeout_reply() -> Vec<u8> {
    response::err(None, "Disconnected for inactivity")
}

/// The line sent to sessions still open when the server shuts down.
pub fn shutdown_reply() -> Vec<u8> {
    response::err(Some(Code::SysTemp), "Server is shutting down, try again later")
}

// The SASL exchanges (AUTH and its continuation lines).
#[path = "machine_sasl.rs"]
mod sasl_exchange;

// CAPA: what works on this connection.
#[path = "machine_capa.rs"]
mod capa;

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
