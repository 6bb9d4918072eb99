//! Listeners, the accept loops and the shutdown sequence: builds the backends from the
//! settings, serves POP3 on the plain (STLS) and implicit-TLS listeners, LMTP, the gRPC API and
//! the operations endpoints, and drains gracefully for rolling updates.
//!
//! SIGTERM, in order: readiness turns off at once; the listeners keep accepting for
//! `drain_delay_secs` so load balancers notice; then they close and sessions still in
//! AUTHORIZATION are told `-ERR [SYS/TEMP]` at their next command; sessions in TRANSACTION may
//! finish (a RETR in flight completes) until `shutdown_grace_secs` after the signal, when the
//! rest are cut without applying deletions. A second SIGTERM or a SIGINT cuts at once.
//!
//! Layout: this file (start-up and shutdown), [`acceptor`] (the accept loop and admission
//! rules every listener shares), [`listeners`] (what each protocol's listener admits).

pub mod acceptor;
mod listeners;

use crate::api::tokens::TokenStore;
use crate::backends::{BackendError, Backends};
use crate::ops::readiness::Readiness;
use crate::reload;
use crate::session::Context;
use crate::tls::{CertStore, TlsError};
use ipnet::IpNet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// What the listeners and the process around the sessions are configured with.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// POP3 with STLS; empty: off.
    pub pop3_listen: String,
    /// POP3 over implicit TLS; empty: off.
    pub pop3s_listen: String,
    /// LMTP; empty: off.
    pub lmtp_listen: String,
    /// `/metrics`, `/healthz`, `/readyz`; empty: off.
    pub ops_listen: String,
    /// The certificate chain and key files; `None`: a self-signed one under `data_dir`.
    pub certificate: Option<(PathBuf, PathBuf)>,
    pub data_dir: PathBuf,
    /// The embedded store (its crash leftovers are cleaned at start).
    pub embedded_store: bool,
    /// The store and lock backends' names, for logs and `GetServerInfo`.
    pub store: &'static str,
    pub locks: &'static str,
    pub max_connections: usize,
    pub max_connections_per_address: u32,
    /// POP3 connections start with a PROXY header from one of `proxy_trusted`.
    pub proxy_protocol: bool,
    pub proxy_trusted: Vec<IpNet>,
    pub drain_delay: Duration,
    pub shutdown_grace: Duration,
    /// How often certificate and token files are checked for changes.
    pub reload_interval: Duration,
    /// How often the retention sweeper runs.
    pub sweep_interval: Duration,
}

/// Everything `cloudpop serve` runs with, resolved.
pub struct ServeSettings {
    pub server: ServerSettings,
    pub backends: crate::backends::BackendSettings,
    pub pop3: crate::session::Pop3Settings,
    /// `None` when `lmtp_listen` is empty.
    pub lmtp: Option<crate::lmtp::Settings>,
    pub api: crate::api::ApiSettings,
    /// The maildrop lease POP3 sessions, operators' deletions and the sweeper hold.
    pub lock_lease: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("cannot listen on {addr} ({setting}): {source}{}", in_use_hint(source, setting))]
    Bind { setting: &'static str, addr: String, source: std::io::Error },
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM: drain, then let sessions finish within `shutdown_grace_secs`.
    Graceful,
    /// SIGINT, or a second SIGTERM: cut every session now; none enters UPDATE.
    Fast,
}

/// How long cut sessions get to release their locks before the process exits.
const CUT_GRACE: Duration = Duration::from_millis(500);

/// Files a crashed process may leave: spooled deliveries and, in the embedded store, temporary
/// message files. Only ones older than this are removed (a `cloudpop deliver` in another
/// process may be writing younger ones).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Cleans crash leftovers in the background at startup; failures are only logged.
async fn remove_leftovers(spool_dir: PathBuf, embedded_store: Option<PathBuf>) {
    let spool = crate::store::fs::remove_older_than(&spool_dir, LEFTOVER_AGE).await;
    let store = match embedded_store {
        Some(dir) => match crate::store::fs::FsStore::open(&dir).await {
            Ok(store) => store.remove_leftovers(LEFTOVER_AGE).await,
            Err(e) => Err(e),
        },
        None => Ok(0),
    };
    match (spool, store) {
        (Ok(0), Ok(0)) => {}
        (Ok(spool), Ok(store)) => info!(spool, store, "removed files left by a crash"),
        (spool, store) => warn!(?spool, ?store, "could not remove every file left by a crash"),
    }
}

/// The serving certificate: the configured files, or the generated self-signed one.
fn certificate(settings: &ServerSettings) -> Result<CertStore, TlsError> {
    let (cert, key) = match &settings.certificate {
        Some(files) => files.clone(),
        None => crate::tls::self_signed_paths(&settings.data_dir)?,
    };
    CertStore::load(cert, key)
}

/// What to try when a port is taken.
fn in_use_hint(source: &std::io::Error, setting: &str) -> String {
    if source.kind() != std::io::ErrorKind::AddrInUse {
        return String::new();
    }
    format!(
        "; another process (another cloudpop on this host?) has it: give each one its own {setting}, or \"\" to turn it off"
    )
}

async fn bind(setting: &'static str, addr: &str) -> Result<(TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind { setting, addr: addr.to_owned(), source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Logs a listener, and prints a machine-readable line on stdout for scripts and tests that
/// bind port 0.
fn announce(name: &str, local: SocketAddr) {
    info!(%local, listener = name, "listening");
    println!("cloudpop: {name} listening on {local}");
}

/// Every listener but the API's, bound (and announced only once every one is).
struct Listeners {
    pop3: Option<TcpListener>,
    pop3s: Option<TcpListener>,
    lmtp: Option<(TcpListener, Arc<crate::lmtp::Settings>)>,
    ops: Option<TcpListener>,
    /// What was bound where, to announce.
    bound: Vec<(&'static str, SocketAddr)>,
}

impl Listeners {
    async fn bind(server: &ServerSettings, lmtp: Option<crate::lmtp::Settings>) -> Result<Self, ServerError> {
        let mut bound = Vec::new();
        let mut bind_named =
            async |name: &'static str, setting, addr: &str| -> Result<Option<TcpListener>, ServerError> {
                if addr.is_empty() {
                    return Ok(None);
                }
                let (listener, local) = bind(setting, addr).await?;
                bound.push((name, local));
                Ok(Some(listener))
            };
        let pop3 = bind_named("pop3", "pop3_listen", &server.pop3_listen).await?;
        let pop3s = bind_named("pop3s", "pop3s_listen", &server.pop3s_listen).await?;
        let lmtp = match lmtp {
            Some(lmtp) => bind_named("lmtp", "lmtp_listen", &server.lmtp_listen).await?.map(|l| (l, Arc::new(lmtp))),
            None => None,
        };
        let ops_err = |source| ServerError::Bind { setting: "ops_listen", addr: server.ops_listen.clone(), source };
        let ops = crate::ops::bind(&server.ops_listen).await.map_err(ops_err)?.map(|(listener, local)| {
            bound.push(("ops", local));
            listener
        });
        Ok(Self { pop3, pop3s, lmtp, ops, bound })
    }
}

/// The API, ready to serve: everything that can be wrong with it fails before any listener
/// reports ready.
struct Api {
    listener: Option<(TcpListener, SocketAddr)>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tokens: TokenStore,
}

impl Api {
    async fn prepare(settings: &crate::api::ApiSettings, certs: &CertStore) -> Result<Self, ServerError> {
        let tls = crate::api::tls_acceptor(settings, certs)?;
        let tokens = TokenStore::load(settings.tokens.clone()).map_err(crate::api::ApiError::Tokens)?;
        let listener = crate::api::bind(settings, &tokens.current()).await?;
        Ok(Self { listener, tls, tokens })
    }
}

/// Runs the service with `settings` until the signals in `signals` (see [`Shutdown`]) have
/// stopped it.
pub async fn run(settings: ServeSettings, mut signals: mpsc::UnboundedReceiver<Shutdown>) -> Result<(), ServerError> {
    let server = settings.server;
    let backends = Backends::open(settings.backends).await?;
    info!(store = server.store, locks = server.locks, "backends ready");
    let embedded = server.embedded_store.then(|| server.data_dir.clone());
    tokio::spawn(remove_leftovers(backends.delivery.settings().spool_dir.clone(), embedded));
    let certs = certificate(&server)?;
    let read_ahead_pool = Arc::new(tokio::sync::Semaphore::new(settings.pop3.retr_read_ahead_total_kib));
    let ctx = Arc::new(Context {
        settings: settings.pop3,
        backends: backends.clone(),
        tls: Some(certs.acceptor()),
        closing: CancellationToken::new(),
        cut: CancellationToken::new(),
        read_ahead_pool,
    });
    let api = Api::prepare(&settings.api, &certs).await?;
    let Listeners { pop3, pop3s, lmtp, ops, bound } = Listeners::bind(&server, settings.lmtp).await?;
    // Every setting was accepted and every port bound: only now is anything announced.
    for (name, local) in api.listener.iter().map(|(_, local)| ("api", *local)).chain(bound) {
        announce(name, local);
    }
    let _ = std::io::stdout().flush();

    let readiness = Readiness::default();
    let (background, stop_background) = (TaskTracker::new(), CancellationToken::new());
    start_background(
        &background,
        &stop_background,
        &readiness,
        &backends,
        ops,
        reloadables(&certs, &api.tokens),
        &server,
    );
    let sessions = TaskTracker::new();
    sessions.spawn(crate::sweeper::run(
        backends.clone(),
        server.sweep_interval,
        settings.lock_lease,
        ctx.closing.clone(),
    ));
    if let Some((listener, _)) = api.listener {
        let facts = Arc::new(crate::api::ServerFacts {
            store: server.store,
            locks: server.locks,
            lock_lease: settings.lock_lease,
        });
        let (closing, readiness) = (ctx.closing.clone(), readiness.clone());
        sessions.spawn(async move {
            if let Err(e) = crate::api::serve(listener, facts, backends, api.tls, api.tokens, readiness, closing).await
            {
                warn!(error = %e, "API stopped");
            }
        });
    }
    let stop_accepting = CancellationToken::new();
    let spawn = listeners::Spawner { ctx: &ctx, tasks: &sessions, stop: &stop_accepting, settings: &server };
    spawn.pop3(pop3, pop3s);
    if let Some((listener, lmtp)) = lmtp {
        spawn.lmtp(listener, lmtp);
    }

    let first = signals.recv().await.unwrap_or(Shutdown::Fast);
    info!(how = ?first, "shutting down");
    readiness.start_draining();
    sessions.close();
    if first == Shutdown::Graceful {
        drain(&server, &ctx, &sessions, &stop_accepting, &mut signals).await;
    }
    stop_accepting.cancel();
    ctx.closing.cancel();
    ctx.cut.cancel();
    if tokio::time::timeout(CUT_GRACE, sessions.wait()).await.is_err() {
        warn!(open = sessions.len(), "tasks still running at exit");
    }
    stop_background.cancel();
    background.close();
    let _ = tokio::time::timeout(CUT_GRACE, background.wait()).await;
    Ok(())
}

/// The tasks that run until the very end: readiness probes, the operations endpoints, reloads.
fn start_background(
    tasks: &TaskTracker,
    stop: &CancellationToken,
    readiness: &Readiness,
    backends: &Backends,
    ops: Option<TcpListener>,
    reloadables: Vec<reload::Reloadable>,
    settings: &ServerSettings,
) {
    let probed = backends.clone();
    let probe = move || {
        let backends = probed.clone();
        async move { backends.ping().await }
    };
    tasks.spawn(readiness.clone().probe_forever(probe, stop.clone()));
    if let Some(listener) = ops {
        tasks.spawn(crate::ops::serve(listener, readiness.clone(), stop.clone()));
    }
    tasks.spawn(reload::watch(settings.reload_interval, reloadables, stop.clone()));
}

/// The certificate and the API token files, checked for changes while running.
fn reloadables(certs: &CertStore, tokens: &TokenStore) -> Vec<reload::Reloadable> {
    let (certs, tokens) = (certs.clone(), tokens.clone());
    vec![
        Box::new(move || {
            certs.reload();
        }),
        Box::new(move || {
            tokens.reload();
        }),
    ]
}

/// The graceful part of a shutdown; returns when the rest may be cut.
async fn drain(
    settings: &ServerSettings,
    ctx: &Context,
    sessions: &TaskTracker,
    stop_accepting: &CancellationToken,
    signals: &mut mpsc::UnboundedReceiver<Shutdown>,
) {
    let signalled = Instant::now();
    let accept_until = signalled + settings.drain_delay;
    let grace_until = signalled + settings.shutdown_grace;
    tokio::select! {
        () = tokio::time::sleep_until(accept_until) => {}
        _ = signals.recv() => {
            info!("second signal: stopping now");
            return;
        }
    }
    info!("no longer accepting connections");
    stop_accepting.cancel();
    ctx.closing.cancel();
    tokio::select! {
        () = sessions.wait() => debug!("every session has finished"),
        () = tokio::time::sleep_until(grace_until) => {
            warn!(open = sessions.len(), "sessions still open after the grace period; cutting them off");
        }
        _ = signals.recv() => info!("second signal: stopping now"),
    }
}
