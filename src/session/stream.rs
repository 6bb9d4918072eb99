//! One stream of a POP3 connection (a connection has two after STLS): the loop that answers
//! what the client has sent and then waits for more, and the IO each machine step asks for.

use super::{Context, Pop3Settings};
use crate::coord::lock::held::HeldLease;
use crate::metrics::{GaugeGuard, VerbLabels, metrics};
use crate::protocol::framing::Frame;
use crate::protocol::lines::LineBuffer;
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
use tracing::{debug, info};

/// Output is sent once this much has accumulated: while streaming a message or a listing, and
/// between replies to pipelined commands.
pub(super) const WRITE_CHUNK: usize = 64 * 1024;

/// Most buffer capacity a session keeps while it waits for its client.
const IDLE_BUFFER: usize = 1024;

/// Largest single read of client input.
const READ_CHUNK: usize = 4096;

/// The protocol state of one stream (a connection has two after STLS).
pub(super) struct Session<'a> {
    pub(super) ctx: &'a Context,
    /// The connection's id, as in its log span and the session registry.
    pub(super) id: String,
    pub(super) peer: SocketAddr,
    pub(super) span: tracing::Span,
    pub(super) machine: Machine,
    pub(super) lease: Option<HeldLease>,
    /// What the holder of `lease` owes the store's index (from the login's view).
    pub(super) upkeep: Upkeep,
    /// Counts this session in `cloudpop_sessions_in_transaction` while it holds the maildrop.
    pub(super) in_transaction: Option<GaugeGuard>,
    pub(super) out: Vec<u8>,
    /// Whether a command is being carried out (false while waiting for the client).
    pub(super) busy: bool,
    /// The account's retention policy, the messages RETR sent in this session (for EXPIRE; a
    /// set, so repeated RETRs of one message take no more room), and those UPDATE removed.
    pub(super) expire_days: Option<u32>,
    pub(super) retrieved: BTreeSet<String>,
    pub(super) deleted: Vec<String>,
    /// When a session still in AUTHORIZATION is closed, however active.
    pub(super) login_deadline: Instant,
    /// The RETR or TOP reply being sent, whose pace the client must keep up.
    pub(super) transfer: Option<Transfer>,
    /// The connection's per-address slot, given back at login.
    pub(super) address_slot: Arc<crate::limits::UntilLogin>,
    /// Messages fetched ahead of the RETRs likely to ask for them.
    pub(super) read_ahead: super::read_ahead::ReadAhead,
}

/// A reply the client must take at `min_rate` octets per second on average, after `grace`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Transfer {
    pub(super) started: Instant,
    pub(super) sent: u64,
    pub(super) min_rate: u64,
    pub(super) grace: Duration,
}

impl Transfer {
    pub(super) fn new(settings: &Pop3Settings) -> Self {
        Self { started: Instant::now(), sent: 0, min_rate: settings.retr_min_bytes_per_sec, grace: settings.retr_grace }
    }

    /// When `more` further octets must have been taken.
    fn deadline(&self, more: usize) -> Instant {
        let octets = self.sent + more as u64;
        self.started + self.grace + Duration::from_secs_f64(octets as f64 / self.min_rate as f64)
    }
}

impl<'a> Session<'a> {
    pub(super) fn new(ctx: &'a Context, id: &str, peer: SocketAddr, tls_active: bool, span: tracing::Span) -> Self {
        let cfg = &ctx.settings;
        let plaintext_allowed =
            plaintext_allowed(peer, tls_active, cfg.allow_plaintext_auth, cfg.plaintext_auth_loopback);
        let settings = Settings {
            tls_active,
            stls_available: ctx.tls.is_some() && !tls_active,
            plaintext_allowed,
            max_auth_failures: cfg.max_auth_failures,
            max_line_violations: cfg.max_line_violations,
            max_bad_commands: cfg.max_bad_commands,
            scram: ctx.backends.auth.offers_scram() && (tls_active || plaintext_allowed || cfg.scram_cleartext),
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
            address_slot: Arc::default(),
            read_ahead: super::read_ahead::ReadAhead::new(cfg.retr_read_ahead, ctx.read_ahead_pool.clone()),
        }
    }

    /// Runs until the connection ends; returns the stream when the client asked for STLS.
    /// `greet` is false only after STLS, where RFC 2595 sends no second greeting.
    pub(super) async fn run<S>(mut self, mut stream: S, greet: bool) -> io::Result<Option<S>>
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
        let mut input = LineBuffer::new(self.ctx.settings.max_line_length);
        loop {
            if let Some(ending) = self.answer_buffered(stream, &mut input).await? {
                return Ok(ending == Ending::StartTls);
            }
            self.flush(stream).await?;
            // About to wait for the client: give back what a burst of input or output grew, so
            // an idle session costs little (its snapshot aside).
            input.shrink_idle(IDLE_BUFFER);
            if self.out.capacity() > IDLE_BUFFER {
                self.out = Vec::new();
            }
            if let Some(ending) = self.wait_for_input(stream, &mut input).await? {
                return Ok(ending == Ending::StartTls);
            }
        }
    }

    /// Answers every complete command already buffered (pipelining), in order; `Some` when the
    /// stream is done.
    async fn answer_buffered<S>(&mut self, stream: &mut S, input: &mut LineBuffer) -> io::Result<Option<Ending>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let step = match input.next_line() {
                Frame::Line(_) if self.ctx.closing.is_cancelled() && !self.machine.in_transaction() => {
                    // Shutting down: no new logins; sessions in TRANSACTION may finish.
                    self.out.extend(machine::shutdown_reply());
                    self.flush(stream).await?;
                    return Ok(Some(Ending::Close));
                }
                Frame::Line(line) => {
                    // Arguments never reach a log, a trace or a metric: PASS carries a
                    // password, and SASL responses are not commands at all.
                    if self.machine.expects_command() {
                        let verb = verb_of(line);
                        metrics().commands.get_or_create(&VerbLabels { verb }).inc();
                        debug!(verb, "command");
                    }
                    self.machine.on_line(line)
                }
                Frame::TooLong => self.machine.on_line_too_long(),
                Frame::NeedMore => return Ok(None),
            };
            self.busy = true;
            let flow = self.execute(step, stream).await?;
            self.busy = false;
            match flow {
                // Backpressure: replies to pipelined commands are written once they fill a
                // chunk, and no more input is read until they are.
                Flow::Continue if self.out.len() >= WRITE_CHUNK => self.flush(stream).await?,
                Flow::Continue => {}
                Flow::Close => {
                    // The maildrop is free before the client reads the last reply, so a client
                    // that reconnects at once gets in.
                    self.leave_maildrop().await;
                    self.flush(stream).await?;
                    return Ok(Some(Ending::Close));
                }
                Flow::StartTls => {
                    self.flush(stream).await?;
                    return Ok(Some(Ending::StartTls));
                }
            }
        }
    }

    /// Waits for more input, within the idle or login timeout; `Some` when the stream is done
    /// (the client left or was too slow, an operator ended the session, the lease was lost).
    async fn wait_for_input<S>(&mut self, stream: &mut S, input: &mut LineBuffer) -> io::Result<Option<Ending>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let in_transaction = self.machine.in_transaction();
        let now = Instant::now();
        if !in_transaction && now >= self.login_deadline {
            info!("no login before the deadline");
            return self
                .close_with(stream, response::err(None, "Too long without logging in, closing connection"))
                .await;
        }
        let idle = if in_transaction {
            self.ctx.settings.idle_timeout
        } else {
            self.ctx.settings.login_timeout.min(self.login_deadline - now)
        };
        tokio::select! {
            read = tokio::time::timeout(idle, read_into(stream, input, READ_CHUNK)) => match read {
                Ok(Ok(0)) => Ok(Some(Ending::Close)),
                Ok(Ok(_)) => Ok(None),
                Ok(Err(e)) => Err(e),
                Err(_) if !in_transaction && Instant::now() >= self.login_deadline => Ok(None),
                Err(_) => {
                    info!(in_transaction, "idle timeout");
                    self.close_with(stream, machine::idle_timeout_reply()).await
                }
            },
            () = lease_ended(self.lease.as_ref()) => {
                info!("session ended by an operator");
                let reply = response::err(Some(Code::SysTemp), "Session ended by an administrator; nothing was changed");
                self.close_with(stream, reply).await
            }
            () = lease_lost(self.lease.as_ref()) => {
                let reply = response::err(Some(Code::SysTemp), "Lost the maildrop lock; closing without changes");
                self.close_with(stream, reply).await
            }
        }
    }

    /// Sends `reply` as the last words of the stream.
    async fn close_with<S>(&mut self, stream: &mut S, reply: Vec<u8>) -> io::Result<Option<Ending>>
    where
        S: AsyncWrite + Unpin,
    {
        self.out.extend(reply);
        self.flush(stream).await?;
        Ok(Some(Ending::Close))
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
                    // A DELE: what was read ahead for a deleted message is of no use now.
                    let machine = &self.machine;
                    self.read_ahead.keep_only(|number| machine.is_live(number));
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
                Step::Send { header, number, key, top } => {
                    Box::pin(self.send_message(stream, header, number, &key, top)).await?;
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
    pub(super) async fn flush<S>(&mut self, stream: &mut S) -> io::Result<()>
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

/// How a stream's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    /// The client asked for STLS: the connection goes on over TLS.
    StartTls,
}

/// Reads what the peer has sent, at most `chunk` bytes, onto the end of `input` (into reserved
/// room: nothing is written, so nothing becomes resident, until data arrives). Cancel-safe.
pub(crate) async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    input: &mut LineBuffer,
    chunk: usize,
) -> io::Result<usize> {
    (&mut *stream).take(chunk as u64).read_buf(input.tail(chunk)).await
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
    let known = crate::metrics::known::VERBS.into_iter().find(|v| v.as_bytes().eq_ignore_ascii_case(word));
    known.unwrap_or(crate::metrics::known::UNKNOWN_VERB)
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
