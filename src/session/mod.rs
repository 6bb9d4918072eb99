//! One POP3 connection: drives the pure [`Machine`] with real IO.
//!
//! The loop is generic over the stream, so plain TCP, STLS-upgraded and implicit-TLS
//! connections share one code path. After STLS the loop starts again over the TLS stream with a
//! fresh parser: nothing read before the handshake survives it.

mod lease;
pub mod proxied;

use crate::backends::Backends;
use crate::config::Config;
use crate::names::AccountName;
use crate::protocol::dotstuff::{DotStuffer, TopCut};
use crate::protocol::framing::{Frame, LineFramer};
use crate::protocol::machine::{self, LoginOutcome, Machine, Settings, Step, UpdateOutcome};
use crate::protocol::maildrop::Listing;
use crate::protocol::response::{self, Code};
use crate::protocol::sasl::Credentials;
use crate::store::StoreError;
use lease::HeldLease;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// Output is sent once this much has accumulated while streaming a message.
const WRITE_CHUNK: usize = 64 * 1024;

/// Everything a session needs, shared by all sessions of a process.
pub struct Context {
    pub config: Arc<Config>,
    pub backends: Backends,
    /// Present when TLS is configured (always, with the self-signed default).
    pub tls: Option<TlsAcceptor>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

/// How a connection arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 110 role: plaintext with STLS.
    Plain,
    /// Port 995 role: TLS from the first byte.
    ImplicitTls,
}

/// Serves one accepted connection to the end. Errors are logged, never propagated.
pub async fn serve<S>(stream: S, peer: SocketAddr, listener: Listener, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = session_id();
    let span = info_span!("pop3", %peer, session = %id, tls = listener == Listener::ImplicitTls);
    async move {
        let result = match (listener, ctx.tls.clone()) {
            (Listener::ImplicitTls, Some(tls)) => match handshake(&tls, stream, &ctx).await {
                Ok(tls_stream) => Session::new(&ctx, &id, peer, true).run(tls_stream, true).await.map(|_| ()),
                Err(e) => Err(e),
            },
            (Listener::ImplicitTls, None) => Err(io::Error::other("implicit TLS listener without TLS configuration")),
            (Listener::Plain, tls) => match Session::new(&ctx, &id, peer, false).run(stream, true).await {
                Ok(Some(plain)) => match tls {
                    Some(tls) => match handshake(&tls, plain, &ctx).await {
                        Ok(tls_stream) => {
                            debug!("STLS handshake complete");
                            Session::new(&ctx, &id, peer, true).run(tls_stream, false).await.map(|_| ())
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

async fn handshake<S>(tls: &TlsAcceptor, stream: S, ctx: &Context) -> io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(ctx.config.login_timeout(), tls.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The protocol state of one stream (a connection has two after STLS).
struct Session<'a> {
    ctx: &'a Context,
    /// The connection's id, as in its log span and the session registry.
    id: String,
    peer: SocketAddr,
    machine: Machine,
    lease: Option<HeldLease>,
    out: Vec<u8>,
    /// The account's retention policy, and the messages RETR sent in this session (for EXPIRE).
    expire_days: Option<u32>,
    retrieved: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(ctx: &'a Context, id: &str, peer: SocketAddr, tls_active: bool) -> Self {
        let cfg = &ctx.config;
        let settings = Settings {
            tls_active,
            stls_available: ctx.tls.is_some() && !tls_active,
            plaintext_allowed: plaintext_allowed(peer, tls_active, cfg.allow_plaintext_auth),
            max_auth_failures: cfg.max_auth_failures,
            max_line_violations: cfg.max_line_violations,
            max_bad_commands: cfg.max_bad_commands,
            implementation: format!("cloudpop-{}", env!("CARGO_PKG_VERSION")),
            expire: "NEVER".into(),
            login_delay_secs: 0,
        };
        Self {
            ctx,
            id: id.to_owned(),
            peer,
            machine: Machine::new(settings),
            lease: None,
            out: Vec::with_capacity(4096),
            expire_days: None,
            retrieved: Vec::new(),
        }
    }

    /// Runs until the connection ends; returns the stream when the client asked for STLS.
    /// `greet` is false only after STLS, where RFC 2595 sends no second greeting.
    async fn run<S>(mut self, mut stream: S, greet: bool) -> io::Result<Option<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.run_inner(&mut stream, greet).await;
        if let Some(lease) = self.lease.take() {
            if self.expire_days.is_some() && !self.retrieved.is_empty() {
                crate::sweeper::mark_seen(&self.ctx.backends, lease.maildrop(), &self.retrieved).await;
            }
            lease.release().await;
        }
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
        let mut framer = LineFramer::new(self.ctx.config.max_line_length);
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            // Answer every complete command already buffered (pipelining), in order.
            loop {
                let (used, frame) = framer.next_frame(&buf);
                let step = match frame {
                    Frame::Line(line) => {
                        // The verb is worked out only when debug logging is on.
                        debug!(verb = if self.machine.expects_command() { verb_of(line) } else { "(sasl)" }, "command");
                        Some(self.machine.on_line(line))
                    }
                    Frame::TooLong => Some(self.machine.on_line_too_long()),
                    Frame::NeedMore => None,
                };
                buf.drain(..used);
                match step {
                    Some(step) => match self.execute(step, stream).await? {
                        Flow::Continue => {}
                        Flow::Close => {
                            self.flush(stream).await?;
                            return Ok(false);
                        }
                        Flow::StartTls => {
                            self.flush(stream).await?;
                            return Ok(true);
                        }
                    },
                    None if used == 0 || buf.is_empty() => break,
                    None => {}
                }
            }
            self.flush(stream).await?;
            let idle = if self.machine.in_transaction() {
                self.ctx.config.idle_timeout()
            } else {
                self.ctx.config.login_timeout()
            };
            tokio::select! {
                read = tokio::time::timeout(idle, stream.read(&mut chunk)) => match read {
                    Ok(Ok(0)) => return Ok(false),
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        info!(in_transaction = self.machine.in_transaction(), "idle timeout");
                        self.out.extend(machine::idle_timeout_reply());
                        self.flush(stream).await?;
                        return Ok(false);
                    }
                },
                () = self.ctx.shutdown.cancelled() => {
                    self.out.extend(machine::shutdown_reply());
                    self.flush(stream).await?;
                    return Ok(false);
                }
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
                Step::Login(creds) => {
                    let outcome = self.login(creds).await;
                    self.machine.login_finished(outcome)
                }
                Step::AuthFailed { reply, close } => {
                    self.flush(stream).await?;
                    tokio::time::sleep(Duration::from_millis(self.ctx.config.auth_failure_delay_ms)).await;
                    self.out.extend(reply);
                    return Ok(if close { Flow::Close } else { Flow::Continue });
                }
                Step::StartTls(reply) => {
                    self.out.extend(reply);
                    return Ok(Flow::StartTls);
                }
                Step::Send { header, key, top } => {
                    self.send_message(stream, header, &key, top).await?;
                    if top.is_none() && self.expire_days.is_some() {
                        self.retrieved.push(key);
                    }
                    return Ok(Flow::Continue);
                }
                Step::Update(keys) => {
                    let outcome = self.update(&keys).await;
                    self.machine.update_finished(outcome)
                }
                Step::Close(reply) => {
                    self.out.extend(reply);
                    return Ok(Flow::Close);
                }
            }
        }
    }

    async fn login(&mut self, creds: Credentials) -> LoginOutcome {
        let ctx = self.ctx;
        let claimed = AccountName::parse(&creds.user).ok();
        let addr = self.peer.ip();
        let throttle = &ctx.backends.throttle;
        match throttle.allowed(claimed.as_ref(), addr).await {
            Ok(true) => {}
            Ok(false) => {
                info!(user = %creds.user.escape_debug(), "login refused: too many recent failures");
                return LoginOutcome::Throttled;
            }
            Err(e) => {
                warn!(error = %e, "login throttle unavailable");
                return LoginOutcome::Unavailable("coordination service unavailable".into());
            }
        }
        let account = match ctx.backends.accounts.authenticate(&creds.user, &creds.password).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                info!(user = %creds.user.escape_debug(), "login failed");
                if let Err(e) = throttle.failed(claimed.as_ref(), addr).await {
                    warn!(error = %e, "cannot count a failed login");
                }
                return LoginOutcome::BadCredentials;
            }
            Err(e) => {
                warn!(error = %e, "account lookup failed");
                return LoginOutcome::Unavailable("account store unavailable".into());
            }
        };
        let Ok(name) = AccountName::parse(&account.name) else {
            return LoginOutcome::Unavailable("corrupt account record".into());
        };
        let token = match ctx.backends.locks.acquire(&name, ctx.config.lock_lease()).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                info!(user = %name, "maildrop in use");
                return LoginOutcome::InUse;
            }
            Err(e) => {
                warn!(error = %e, "maildrop lock failed");
                return LoginOutcome::Unavailable("lock service unavailable".into());
            }
        };
        let info = crate::sessions::SessionInfo {
            id: self.id.clone(),
            account: name.to_string(),
            peer: self.peer.to_string(),
            frontend: crate::sessions::frontend_name(),
            tls: self.machine.tls_active(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let registration = Some((ctx.backends.sessions.clone(), info));
        let lease =
            HeldLease::hold(ctx.backends.locks.clone(), name.clone(), token, ctx.config.lock_lease(), registration)
                .await;
        // LOGIN-DELAY is checked only once the maildrop is ours, so a refused `[IN-USE]` login
        // does not count as a login.
        let delay = Duration::from_secs(account.login_delay_secs);
        if !delay.is_zero() {
            match throttle.begin_login(&name, delay).await {
                Ok(true) => {}
                Ok(false) => {
                    info!(user = %name, "login refused: LOGIN-DELAY");
                    lease.release().await;
                    return LoginOutcome::TooSoon(account.login_delay_secs);
                }
                Err(e) => {
                    warn!(error = %e, "login delay check failed");
                    lease.release().await;
                    return LoginOutcome::Unavailable("coordination service unavailable".into());
                }
            }
        }
        match ctx.backends.messages.list(&name).await {
            Ok(list) => {
                info!(user = %name, messages = list.len(), "logged in");
                self.lease = Some(lease);
                self.expire_days = account.expire_days;
                LoginOutcome::LoggedIn {
                    listing: list
                        .into_iter()
                        .map(|m| Listing { uid: crate::store::ids::uidl_of(&m.id), key: m.id, size: m.size })
                        .collect(),
                    login_delay_secs: account.login_delay_secs,
                    expire_days: account.expire_days,
                }
            }
            Err(e) => {
                warn!(error = %e, "listing maildrop failed");
                lease.release().await;
                LoginOutcome::Unavailable("message store unavailable".into())
            }
        }
    }

    /// UPDATE state: confirm the lease is still ours, then remove the marked messages.
    async fn update(&mut self, uids: &[String]) -> UpdateOutcome {
        let Some(lease) = &self.lease else { return UpdateOutcome::Applied };
        if uids.is_empty() {
            return UpdateOutcome::Applied;
        }
        if !lease.confirm().await {
            return UpdateOutcome::Failed("the maildrop lock was lost; nothing was removed".into());
        }
        match self.ctx.backends.messages.remove(lease.maildrop(), uids).await {
            Ok(report) if report.failed.is_empty() => {
                self.retrieved.retain(|id| !uids.contains(id));
                info!(removed = report.removed, "update applied");
                UpdateOutcome::Applied
            }
            Ok(report) => {
                warn!(removed = report.removed, failed = report.failed.len(), "update partly applied");
                UpdateOutcome::Failed(format!("{} of {} could not be removed", report.failed.len(), uids.len()))
            }
            Err(e) => {
                warn!(error = %e, "update failed");
                UpdateOutcome::Failed("message store unavailable".into())
            }
        }
    }

    /// RETR and TOP: streams the message through the dot-stuffer in bounded memory.
    async fn send_message<S>(&mut self, stream: &mut S, header: Vec<u8>, key: &str, top: Option<u64>) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(lease) = &self.lease else { return Ok(()) };
        let mut body = match self.ctx.backends.messages.open(lease.maildrop(), key).await {
            Ok(body) => body,
            Err(StoreError::NotFound) => {
                self.out.extend(response::err(None, "Message was removed by another process"));
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, "opening message failed");
                let code = if e.is_temporary() { Code::SysTemp } else { Code::SysPerm };
                self.out.extend(response::err(Some(code), "Cannot read the message now, try again later"));
                return Ok(());
            }
        };
        self.out.extend(header);
        let mut stuffer = DotStuffer::new();
        let mut cut = top.map(TopCut::new);
        let mut chunk = vec![0u8; WRITE_CHUNK];
        loop {
            // A read failure after "+OK" cannot be reported in-band: the connection is dropped.
            let n = body.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            let data = match &mut cut {
                Some(cut) => cut.take(&chunk[..n]),
                None => &chunk[..n],
            };
            stuffer.encode(data, &mut self.out);
            if self.out.len() >= WRITE_CHUNK {
                self.flush(stream).await?;
            }
            if cut.as_ref().is_some_and(TopCut::is_done) {
                break;
            }
        }
        stuffer.finish(&mut self.out);
        Ok(())
    }

    /// Writes pending output; a client that stops reading is cut off after the idle timeout.
    async fn flush<S>(&mut self, stream: &mut S) -> io::Result<()>
    where
        S: AsyncWrite + Unpin,
    {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.ctx.config.idle_timeout(), write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
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

/// The command keyword for traces; arguments never reach a log (PASS carries a password).
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
fn plaintext_allowed(peer: SocketAddr, tls_active: bool, allow_configured: bool) -> bool {
    tls_active || allow_configured || peer.ip().to_canonical().is_loopback()
}

fn session_id() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_over_tls_loopback_or_when_configured() {
        let remote: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert!(!plaintext_allowed(remote, false, false));
        assert!(plaintext_allowed(remote, true, false));
        assert!(plaintext_allowed(remote, false, true));
        for local in ["127.0.0.1:1", "127.8.9.10:1", "[::1]:1"] {
            assert!(plaintext_allowed(local.parse().unwrap(), false, false), "{local}");
        }
        assert!(plaintext_allowed(mapped, false, false));
    }

    #[test]
    fn verbs_never_include_arguments() {
        assert_eq!(verb_of(b"pass hunter2"), "PASS");
        assert_eq!(verb_of(b"AGFsaWNlAHNlY3JldA=="), "(unknown)");
    }
}
