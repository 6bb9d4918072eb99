//! One POP3 connection: drives the pure [`Machine`] with real IO.
//!
//! The loop is generic over the stream, so plain TCP, STLS-upgraded and implicit-TLS
//! connections share one code path. After STLS the loop starts again over the TLS stream with a
//! fresh parser: nothing read before the handshake survives it.
//!
//! Layout: this file (the connection, its span and the read loop), [`login`] (credentials,
//! lock, snapshot), [`retrieve`] (RETR/TOP streaming and UPDATE), [`proxied`] (PROXY
//! headers). The held maildrop lock is [`crate::coord::lock::held::HeldLease`].

mod login;
pub mod proxied;
mod retrieve;
mod settings;

pub use settings::Pop3Settings;

use crate::backends::Backends;
use crate::coord::lock::held::HeldLease;
use crate::metrics::{GaugeGuard, VerbLabels, metrics};
use crate::protocol::framing::{Frame, LineFramer};
use crate::protocol::machine::{self, Machine, Settings, Step};
use crate::protocol::response::{self, Code};
use crate::store::Upkeep;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, debug, info, info_span};

/// Output is sent once this much has accumulated: while streaming a message or a listing, and
/// between replies to pipelined commands.
const WRITE_CHUNK: usize = 64 * 1024;

/// Most buffer capacity a session keeps while it waits for its client.
const IDLE_BUFFER: usize = 1024;

/// Largest single read of client input.
const READ_CHUNK: usize = 4096;

/// Reads what the client has sent (up to [`READ_CHUNK`]) onto the end of `buf`.
async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    let spare = buf.capacity() - buf.len();
    let mut limited = (&mut *stream).take(spare.min(READ_CHUNK) as u64);
    limited.read_buf(buf).await
}

/// Everything a session needs, shared by all sessions of a process.
pub struct Context {
    pub settings: Pop3Settings,
    pub backends: Backends,
    /// Present when TLS is configured (always, with the self-signed default).
    pub tls: Option<TlsAcceptor>,
    /// Cancelled when the listeners close during a graceful shutdown: sessions still in
    /// AUTHORIZATION are refused at their next command; sessions in TRANSACTION go on.
    pub closing: CancellationToken,
    /// Cancelled when the shutdown grace ends (or at once on a fast shutdown): every session
    /// closes now, and none enters UPDATE.
    pub cut: CancellationToken,
}

/// How a connection arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 110 role: plaintext with STLS.
    Plain,
    /// Port 995 role: TLS from the first byte.
    ImplicitTls,
}

impl Listener {
    /// The listener's name in logs, metrics and traces.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Plain => "pop3",
            Listener::ImplicitTls => "pop3s",
        }
    }
}

/// Serves one accepted connection to the end. Errors are logged, never propagated.
pub async fn serve<S>(stream: S, peer: SocketAddr, listener: Listener, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = session_id();
    let span = info_span!(
        "pop3.session",
        otel.kind = "server",
        session = %id,
        %peer,
        listener = listener.name(),
        tls.version = Empty,
        account = Empty,
        trace_id = Empty,
    );
    crate::telemetry::record_trace_id(&span);
    let login_deadline = Instant::now() + ctx.settings.login_deadline;
    let conn = Connection { ctx: &ctx, id: &id, peer, span: span.clone(), listener, login_deadline };
    async {
        let result = match (listener, ctx.tls.clone()) {
            (Listener::ImplicitTls, Some(tls)) => match Box::pin(conn.handshake(&tls, stream)).await {
                Ok(tls_stream) => {
                    let binding = login::channel_binding(&tls_stream);
                    Box::pin(conn.session(true, binding).run(tls_stream, true)).await.map(|_| ())
                }
                Err(e) => Err(e),
            },
            (Listener::ImplicitTls, None) => Err(io::Error::other("implicit TLS listener without TLS configuration")),
            (Listener::Plain, tls) => match Box::pin(conn.session(false, None).run(stream, true)).await {
                Ok(Some(plain)) => match tls {
                    Some(tls) => match Box::pin(conn.handshake(&tls, plain)).await {
                        Ok(tls_stream) => {
                            debug!("STLS handshake complete");
                            let binding = login::channel_binding(&tls_stream);
                            Box::pin(conn.session(true, binding).run(tls_stream, false)).await.map(|_| ())
                        }
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => debug!("connection closed"),
            Err(e) => debug!(error = %e, "connection ended"),
        }
    }
    .instrument(span)
    .await
}

/// What the streams of one connection (two after STLS) share.
struct Connection<'a> {
    ctx: &'a Context,
    id: &'a str,
    peer: SocketAddr,
    /// The `pop3.session` span: the account is recorded on it after login.
    span: tracing::Span,
    listener: Listener,
    /// The connection must reach TRANSACTION by then (STLS does not restart the clock).
    login_deadline: Instant,
}

impl<'a> Connection<'a> {
    fn session(&self, tls_active: bool, channel_binding: Option<Vec<u8>>) -> Session<'a> {
        let mut session = Session::new(self.ctx, self.id, self.peer, tls_active, self.span.clone());
        session.machine.set_channel_binding(channel_binding);
        session.login_deadline = self.login_deadline;
        session
    }

    async fn handshake<S>(&self, tls: &TlsAcceptor, stream: S) -> io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.ctx.settings.login_timeout;
        crate::tls::handshake::accept(tls, stream, timeout, self.listener.name(), &self.span).await
    }
}

/// The protocol state of one stream (a connection has two after STLS).
struct Session<'a> {
    ctx: &'a Context,
    /// The connection's id, as in its log span and the session registry.
    id: String,
    peer: SocketAddr,
    span: tracing::Span,
    machine: Machine,
    lease: Option<HeldLease>,
    /// What the holder of `lease` owes the store's index (from the login's view).
    upkeep: Upkeep,
    /// Counts this session in `cloudpop_sessions_in_transaction` while it holds the maildrop.
    in_transaction: Option<GaugeGuard>,
    out: Vec<u8>,
    /// Whether a command is being carried out (false while waiting for the client).
    busy: bool,
    /// The account's retention policy, the messages RETR sent in this session (for EXPIRE; a
    /// set, so repeated RETRs of one message take no more room), and those UPDATE removed.
    expire_days: Option<u32>,
    retrieved: BTreeSet<String>,
    deleted: Vec<String>,
    /// When a session still in AUTHORIZATION is closed, however active.
    login_deadline: Instant,
    /// The RETR or TOP reply being sent, whose pace the client must keep up.
    transfer: Option<Transfer>,
}

/// A reply the client must take at `min_rate` octets per second on average, after `grace`.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    started: Instant,
    sent: u64,
    min_rate: u64,
    grace: Duration,
}

impl Transfer {
    fn new(settings: &Pop3Settings) -> Self {
        Self { started: Instant::now(), sent: 0, min_rate: settings.retr_min_bytes_per_sec, grace: settings.retr_grace }
    }

    /// When `more` further octets must have been taken.
    fn deadline(&self, more: usize) -> Instant {
        let octets = self.sent + more as u64;
        self.started + self.grace + Duration::from_secs_f64(octets as f64 / self.min_rate as f64)
    }
}

impl<'a> Session<'a> {
    fn new(ctx: &'a Context, id: &str, peer: SocketAddr, tls_active: bool, span: tracing::Span) -> Self {
        let cfg = &ctx.settings;
        let settings = Settings {
            tls_active,
            stls_available: ctx.tls.is_some() && !tls_active,
            plaintext_allowed: plaintext_allowed(
                peer,
                tls_active,
                cfg.allow_plaintext_auth,
                cfg.plaintext_auth_loopback,
            ),
            max_auth_failures: cfg.max_auth_failures,
            max_line_violations: cfg.max_line_violations,
            max_bad_commands: cfg.max_bad_commands,
            scram: ctx.backends.auth.offers_scram(),
            channel_binding: None,
            bearer: ctx.backends.auth.offers_bearer(),
            oauth_scope: cfg.oauth_scope.clone(),
            implementation: format!("cloudpop-{}", env!("CARGO_PKG_VERSION")),
            expire: "NEVER".into(),
            login_delay_secs: 0,
        };
        Self {
            ctx,
            id: id.to_owned(),
            peer,
            span,
            machine: Machine::new(settings),
            lease: None,
            upkeep: Upkeep::None,
            in_transaction: None,
            out: Vec::new(),
            busy: false,
            expire_days: None,
            retrieved: BTreeSet::new(),
            deleted: Vec::new(),
            login_deadline: Instant::now() + cfg.login_deadline,
            transfer: None,
        }
    }

    /// Runs until the connection ends; returns the stream when the client asked for STLS.
    /// `greet` is false only after STLS, where RFC 2595 sends no second greeting.
    async fn run<S>(mut self, mut stream: S, greet: bool) -> io::Result<Option<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let cut = self.ctx.cut.clone();
        let result = tokio::select! {
            result = self.run_inner(&mut stream, greet) => result,
            () = cut.cancelled() => {
                // Whatever was under way is abandoned; a client waiting for its next reply is
                // told why. Nothing marked for deletion is removed.
                info!(in_transaction = self.machine.in_transaction(), "closed by shutdown");
                if !self.busy {
                    let bye = machine::shutdown_reply();
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bye)).await;
                }
                Ok(false)
            }
        };
        self.leave_maildrop().await;
        match result {
            Ok(true) => Ok(Some(stream)),
            Ok(false) => {
                let _ = stream.shutdown().await;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `Ok(true)` means: upgrade to TLS.
    async fn run_inner<S>(&mut self, stream: &mut S, greet: bool) -> io::Result<bool>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if greet {
            self.out.extend(self.machine.greeting());
        }
        let mut framer = LineFramer::new(self.ctx.settings.max_line_length);
        // Input is read straight into `buf`; an idle session keeps at most IDLE_BUFFER of it.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // Answer every complete command already buffered (pipelining), in order.
            loop {
                let (used, frame) = framer.next_frame(&buf);
                let step = match frame {
                    Frame::Line(_) if self.ctx.closing.is_cancelled() && !self.machine.in_transaction() => {
                        // Shutting down: no new logins; sessions in TRANSACTION may finish.
                        self.out.extend(machine::shutdown_reply());
                        self.flush(stream).await?;
                        return Ok(false);
                    }
                    Frame::Line(line) => {
                        // Arguments never reach a log, a trace or a metric: PASS carries a
                        // password, and SASL responses are not commands at all.
                        if self.machine.expects_command() {
                            let verb = verb_of(line);
                            metrics().commands.get_or_create(&VerbLabels { verb }).inc();
                            debug!(verb, "command");
                        }
                        Some(self.machine.on_line(line))
                    }
                    Frame::TooLong => Some(self.machine.on_line_too_long()),
                    Frame::NeedMore => None,
                };
                buf.drain(..used);
                match step {
                    Some(step) => {
                        self.busy = true;
                        let flow = self.execute(step, stream).await?;
                        self.busy = false;
                        match flow {
                            // Backpressure: replies to pipelined commands are written once
                            // they fill a chunk, and no more input is read until they are.
                            Flow::Continue if self.out.len() >= WRITE_CHUNK => self.flush(stream).await?,
                            Flow::Continue => {}
                            Flow::Close => {
                                // The maildrop is free before the client reads the last
                                // reply, so a client that reconnects at once gets in.
                                self.leave_maildrop().await;
                                self.flush(stream).await?;
                                return Ok(false);
                            }
                            Flow::StartTls => {
                                self.flush(stream).await?;
                                return Ok(true);
                            }
                        }
                    }
                    None if used == 0 || buf.is_empty() => break,
                    None => {}
                }
            }
            self.flush(stream).await?;
            // About to wait for the client: give back what a burst of input or output grew, so
            // an idle session costs little (its snapshot aside).
            if buf.is_empty() && buf.capacity() > IDLE_BUFFER {
                buf = Vec::new();
            }
            if self.out.capacity() > IDLE_BUFFER {
                self.out = Vec::new();
            }
            let in_transaction = self.machine.in_transaction();
            let now = Instant::now();
            if !in_transaction && now >= self.login_deadline {
                info!("no login before the deadline");
                self.out.extend(response::err(None, "Too long without logging in, closing connection"));
                self.flush(stream).await?;
                return Ok(false);
            }
            let idle = if in_transaction {
                self.ctx.settings.idle_timeout
            } else {
                self.ctx.settings.login_timeout.min(self.login_deadline - now)
            };
            tokio::select! {
                read = tokio::time::timeout(idle, read_some(stream, &mut buf)) => match read {
                    Ok(Ok(0)) => return Ok(false),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) if !in_transaction && Instant::now() >= self.login_deadline => {}
                    Err(_) => {
                        info!(in_transaction, "idle timeout");
                        self.out.extend(machine::idle_timeout_reply());
                        self.flush(stream).await?;
                        return Ok(false);
                    }
                },
                () = lease_ended(self.lease.as_ref()) => {
                    info!("session ended by an operator");
                    self.out.extend(response::err(Some(Code::SysTemp), "Session ended by an administrator; nothing was changed"));
                    self.flush(stream).await?;
                    return Ok(false);
                }
                () = lease_lost(self.lease.as_ref()) => {
                    self.out.extend(response::err(Some(Code::SysTemp), "Lost the maildrop lock; closing without changes"));
                    self.flush(stream).await?;
                    return Ok(false);
                }
            }
        }
    }

    /// Records the session's retrievals for EXPIRE and releases the maildrop lock (once).
    async fn leave_maildrop(&mut self) {
        self.in_transaction = None;
        if let Some(lease) = self.lease.take() {
            let changed = !self.retrieved.is_empty() || !self.deleted.is_empty();
            // Only while the lease is ours: the ledger is read, changed and written back.
            if self.expire_days.is_some() && changed && lease.confirm().await {
                let backends = &self.ctx.backends;
                crate::sweeper::record_session(backends, lease.maildrop(), &self.retrieved, &self.deleted).await;
            }
            lease.release().await;
        }
    }

    /// Carries out one step of the machine, and the steps that follow from it.
    async fn execute<S>(&mut self, mut step: Step, stream: &mut S) -> io::Result<Flow>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            step = match step {
                Step::Reply(reply) => {
                    self.out.extend(reply);
                    return Ok(Flow::Continue);
                }
                Step::Listing { header, kind } => {
                    self.out.extend(header);
                    let mut cursor = 0;
                    while !self.machine.write_listing(kind, &mut cursor, &mut self.out, WRITE_CHUNK) {
                        self.flush(stream).await?;
                    }
                    return Ok(Flow::Continue);
                }
                Step::Login(creds) => {
                    let outcome = Box::pin(self.login(creds)).await;
                    self.machine.login_finished(outcome)
                }
                Step::ScramLookup { user } => {
                    let found = self.scram_lookup(&user).await;
                    self.machine.scram_lookup_finished(found)
                }
                Step::AuthFailed { reply, close } => {
                    self.flush(stream).await?;
                    tokio::time::sleep(self.ctx.settings.auth_failure_delay).await;
                    self.out.extend(reply);
                    return Ok(if close { Flow::Close } else { Flow::Continue });
                }
                Step::StartTls(reply) => {
                    self.out.extend(reply);
                    return Ok(Flow::StartTls);
                }
                Step::Send { header, key, top } => {
                    Box::pin(self.send_message(stream, header, &key, top)).await?;
                    if top.is_none() && self.expire_days.is_some() {
                        self.retrieved.insert(key);
                    }
                    return Ok(Flow::Continue);
                }
                Step::Update(keys, octets) => {
                    let outcome = Box::pin(self.update(&keys, octets)).await;
                    self.machine.update_finished(outcome)
                }
                Step::Close(reply) => {
                    self.out.extend(reply);
                    return Ok(Flow::Close);
                }
            }
        }
    }

    /// Writes pending output. A client that stops reading is cut off after the idle timeout,
    /// or before login after the (much shorter) login timeout.
    async fn flush<S>(&mut self, stream: &mut S) -> io::Result<()>
    where
        S: AsyncWrite + Unpin,
    {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut limit = if self.machine.in_transaction() {
            self.ctx.settings.idle_timeout
        } else {
            self.ctx.settings.login_timeout
        };
        if let Some(transfer) = &self.transfer {
            limit = limit.min(transfer.deadline(self.out.len()).saturating_duration_since(Instant::now()));
        }
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        tokio::time::timeout(limit, write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading or reads too slowly"))??;
        if let Some(transfer) = &mut self.transfer {
            transfer.sent += self.out.len() as u64;
        }
        self.out.clear();
        if self.out.capacity() > 4 * WRITE_CHUNK {
            self.out.shrink_to(WRITE_CHUNK);
        }
        Ok(())
    }
}

enum Flow {
    Continue,
    Close,
    StartTls,
}

async fn lease_ended(lease: Option<&HeldLease>) {
    match lease {
        Some(lease) => lease.ended().await,
        None => std::future::pending().await,
    }
}

async fn lease_lost(lease: Option<&HeldLease>) {
    match lease {
        Some(lease) => lease.lost().await,
        None => std::future::pending().await,
    }
}

/// The command keyword for logs and metrics; arguments never reach either (PASS carries a
/// password). Anything else is `(unknown)`, so the metric has a bounded set of labels.
fn verb_of(line: &[u8]) -> &'static str {
    let word = line.split(|&b| b == b' ').next().unwrap_or_default();
    const VERBS: [&str; 16] = [
        "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "UTF8", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP",
        "UIDL", "QUIT",
    ];
    VERBS.into_iter().find(|v| v.as_bytes().eq_ignore_ascii_case(word)).unwrap_or("(unknown)")
}

/// Passwords may travel only over TLS or loopback, unless the operator explicitly allows more
/// (for example behind a TLS-terminating load balancer on a private network).
fn plaintext_allowed(peer: SocketAddr, tls_active: bool, allow_configured: bool, loopback_exempt: bool) -> bool {
    tls_active || allow_configured || (loopback_exempt && peer.ip().to_canonical().is_loopback())
}

pub(crate) fn session_id() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_over_tls_from_exempt_loopback_or_when_configured() {
        let remote: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert!(!plaintext_allowed(remote, false, false, true));
        assert!(plaintext_allowed(remote, true, false, false));
        assert!(plaintext_allowed(remote, false, true, false));
        for local in ["127.0.0.1:1", "127.8.9.10:1", "[::1]:1"] {
            assert!(plaintext_allowed(local.parse().unwrap(), false, false, true), "{local}");
            // A sidecar proxy connects from loopback: without the exemption it gets no pass.
            assert!(!plaintext_allowed(local.parse().unwrap(), false, false, false), "{local}");
        }
        assert!(plaintext_allowed(mapped, false, false, true));
        assert!(!plaintext_allowed(mapped, false, false, false));
    }

    #[test]
    fn verbs_never_include_arguments() {
        assert_eq!(verb_of(b"pass hunter2"), "PASS");
        assert_eq!(verb_of(b"AGFsaWNlAHNlY3JldA=="), "(unknown)");
    }
}
