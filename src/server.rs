//! Listeners, the accept loops and the shutdown sequence: builds the backends from
//! configuration, serves POP3 on the plain (STLS) and implicit-TLS listeners, the gRPC API and
//! the operations endpoints, and drains gracefully for rolling updates.
//!
//! SIGTERM, in order: readiness turns off at once; the listeners keep accepting for
//! `drain_delay_secs` so load balancers notice; then they close and sessions still in
//! AUTHORIZATION are told `-ERR [SYS/TEMP]` at their next command; sessions in TRANSACTION may
//! finish (a RETR in flight completes) until `shutdown_grace_secs` after the signal, when the
//! rest are cut without applying deletions. A second SIGTERM or a SIGINT cuts at once.

use crate::backends::{BackendError, Backends};
use crate::config::Config;
use crate::limits::AddressSlots;
use crate::metrics::{GaugeGuard, ListenerLabels, RefusedLabels, metrics};
use crate::ops::readiness::Readiness;
use crate::reload;
use crate::session::{self, Context, Listener};
use crate::settings::Settings;
use crate::tls::CertStore;
use crate::tls::TlsError;
use ipnet::IpNet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
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
async fn remove_leftovers(config: Arc<Config>) {
    let spool = crate::store::fs::remove_older_than(&config.spool_dir(), LEFTOVER_AGE).await;
    let store = match config.store {
        crate::config::StoreKind::Fs => match crate::store::fs::FsStore::open(&config.data_dir).await {
            Ok(store) => store.remove_leftovers(LEFTOVER_AGE).await,
            Err(e) => Err(e),
        },
        crate::config::StoreKind::S3 => Ok(0),
    };
    match (spool, store) {
        (Ok(0), Ok(0)) => {}
        (Ok(spool), Ok(store)) => info!(spool, store, "removed files left by a crash"),
        (spool, store) => warn!(?spool, ?store, "could not remove every file left by a crash"),
    }
}

/// Runs the service with `settings` (resolved from `config`) until the signals in `signals` (see [`Shutdown`]) have stopped it.
pub async fn run(
    config: Config,
    settings: Settings,
    mut signals: mpsc::UnboundedReceiver<Shutdown>,
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let backends = Backends::from_config(&config).await?;
    info!(store = ?config.store, locks = ?config.locks, "backends ready");
    tokio::spawn(remove_leftovers(config.clone()));
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => crate::tls::self_signed_paths(&config.data_dir)?,
    };
    let certs = CertStore::load(cert, key)?;
    let ctx = Arc::new(Context {
        config: config.clone(),
        backends: backends.clone(),
        tls: Some(certs.acceptor()),
        closing: CancellationToken::new(),
        cut: CancellationToken::new(),
    });
    let trusted = Arc::new(config.proxy_networks()?);

    // Everything that can be wrong with the configuration fails here, before any readiness line.
    let api_tls = crate::api::tls_acceptor(&settings.api, &certs)?;
    let api_tokens =
        crate::api::tokens::TokenStore::load(settings.api.tokens.clone()).map_err(crate::api::ApiError::Tokens)?;
    let mut listeners = Vec::new();
    for (addr, role) in [(&config.pop3_listen, Listener::Plain), (&config.pop3s_listen, Listener::ImplicitTls)] {
        if addr.is_empty() {
            continue;
        }
        let (listener, local) = bind(addr).await?;
        announce(role.name(), local);
        listeners.push((listener, role));
    }
    let lmtp = match config.lmtp_listen.as_str() {
        "" => None,
        addr => {
            let settings = Arc::new(crate::lmtp::Settings::from_config(&config)?);
            let (listener, local) = bind(addr).await?;
            announce("lmtp", local);
            Some((listener, settings))
        }
    };
    let api = crate::api::bind(&settings.api, &api_tokens.current()).await?;
    if let Some((_, local)) = &api {
        announce("api", *local);
    }
    let ops = crate::ops::bind(&config.ops_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.ops_listen.clone(), source })?;
    if let Some((_, local)) = &ops {
        announce("ops", *local);
    }
    let _ = std::io::stdout().flush();

    let readiness = Readiness::default();
    let (background, stop_background) = (TaskTracker::new(), CancellationToken::new());
    let probed = backends.clone();
    let probe = move || {
        let backends = probed.clone();
        async move { backends.ping().await }
    };
    background.spawn(readiness.clone().probe_forever(probe, stop_background.clone()));
    if let Some((listener, _)) = ops {
        background.spawn(crate::ops::serve(listener, readiness.clone(), stop_background.clone()));
    }
    let reloadables: Vec<reload::Reloadable> = vec![
        Box::new({
            let certs = certs.clone();
            move || {
                certs.reload();
            }
        }),
        Box::new({
            let tokens = api_tokens.clone();
            move || {
                tokens.reload();
            }
        }),
    ];
    let interval = Duration::from_secs(config.reload_interval_secs);
    background.spawn(reload::watch(interval, reloadables, stop_background.clone()));
    let sessions = TaskTracker::new();
    sessions.spawn(crate::sweeper::run(
        backends.clone(),
        Duration::from_secs(config.sweep_interval_secs),
        config.lock_lease(),
        ctx.closing.clone(),
    ));
    if let Some((listener, _)) = api {
        let facts = Arc::new(crate::api::ServerFacts {
            store: config.store.name(),
            locks: config.locks.name(),
            lock_lease: config.lock_lease(),
            spool_dir: config.spool_dir(),
            max_message_size: config.max_message_size,
        });
        let (closing, readiness) = (ctx.closing.clone(), readiness.clone());
        sessions.spawn(async move {
            if let Err(e) = crate::api::serve(listener, facts, backends, api_tls, api_tokens, readiness, closing).await
            {
                warn!(error = %e, "API stopped");
            }
        });
    }
    let stop_accepting = CancellationToken::new();
    if let Some((listener, settings)) = lmtp {
        sessions.spawn(crate::lmtp::accept_loop(
            listener,
            ctx.clone(),
            settings,
            sessions.clone(),
            stop_accepting.clone(),
        ));
    }
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_address = AddressSlots::new(config.max_connections_per_address);
    for (listener, role) in listeners {
        let accept = Acceptor {
            ctx: ctx.clone(),
            slots: slots.clone(),
            per_address: per_address.clone(),
            trusted: trusted.clone(),
        };
        sessions.spawn(accept.run(listener, role, sessions.clone(), stop_accepting.clone()));
    }

    let first = signals.recv().await.unwrap_or(Shutdown::Fast);
    let signalled = Instant::now();
    info!(how = ?first, "shutting down");
    readiness.start_draining();
    sessions.close();
    if first == Shutdown::Graceful {
        drain(&config, &ctx, &sessions, &stop_accepting, &mut signals, signalled).await;
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

/// The graceful part of a shutdown; returns when the rest may be cut.
async fn drain(
    config: &Config,
    ctx: &Context,
    sessions: &TaskTracker,
    stop_accepting: &CancellationToken,
    signals: &mut mpsc::UnboundedReceiver<Shutdown>,
    signalled: Instant,
) {
    let accept_until = signalled + Duration::from_secs(config.drain_delay_secs);
    let grace_until = signalled + Duration::from_secs(config.shutdown_grace_secs);
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

async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind { addr: addr.to_owned(), source };
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

/// What every accept loop shares.
struct Acceptor {
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    /// Connections per client address (IPv6: per /64).
    per_address: Arc<AddressSlots>,
    /// Load balancers allowed to send PROXY headers.
    trusted: Arc<Vec<IpNet>>,
}

impl Acceptor {
    async fn run(self, listener: TcpListener, role: Listener, tasks: TaskTracker, stop: CancellationToken) {
        let name = role.name();
        let labels = ListenerLabels { listener: name };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            metrics().connections_accepted.get_or_create(&labels).inc();
            let _ = stream.set_nodelay(true);
            let proxied = self.ctx.config.proxy_protocol;
            if proxied && !self.trusted.iter().any(|net| net.contains(&peer.ip().to_canonical())) {
                // Only a trusted balancer may name the client: anyone else could claim to be
                // 127.0.0.1 or dodge throttles by inventing addresses.
                metrics()
                    .connections_refused
                    .get_or_create(&RefusedLabels { listener: name, reason: "proxy_untrusted" })
                    .inc();
                debug!(%peer, "connection from outside proxy_trusted_networks refused");
                continue;
            }
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                refuse(&stream, peer, role, "limit");
                continue;
            };
            // Behind a load balancer the client's address is known only from its PROXY header.
            let address_slot = if proxied {
                None
            } else {
                match self.per_address.try_acquire(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        refuse(&stream, peer, role, "address_limit");
                        continue;
                    }
                }
            };
            let ctx = self.ctx.clone();
            let per_address = self.per_address.clone();
            tasks.spawn(async move {
                let _open = GaugeGuard::hold(&metrics().connections_open.get_or_create(&labels));
                if proxied {
                    match Box::pin(session::proxied::accept(stream, peer, ctx.config.login_timeout())).await {
                        Ok((stream, client)) => match per_address.try_acquire(client.ip()) {
                            Some(_slot) => Box::pin(session::serve(stream, client, role, ctx)).await,
                            None => refuse(stream.get_ref(), client, role, "address_limit"),
                        },
                        // Garbled or missing: no reply, it is not our client.
                        Err(e) => {
                            metrics()
                                .connections_refused
                                .get_or_create(&RefusedLabels { listener: name, reason: "proxy_invalid" })
                                .inc();
                            warn!(%peer, error = %e, "connection without a valid PROXY header dropped");
                        }
                    }
                } else {
                    Box::pin(session::serve(stream, peer, role, ctx)).await;
                }
                drop(address_slot);
                drop(permit);
            });
        }
    }
}

/// Turns away a connection over a limit, counted by `reason`. On the plain port the client is
/// told to come back later; the reply is written without waiting (a fresh socket's send buffer
/// always has room for one line) and no task is spawned, so a flood of refused connections
/// costs nothing that lasts. On the implicit-TLS port a plaintext reply would be noise.
fn refuse(stream: &TcpStream, peer: SocketAddr, role: Listener, reason: &'static str) {
    metrics().connections_refused.get_or_create(&RefusedLabels { listener: role.name(), reason }).inc();
    debug!(%peer, reason, "connection refused");
    if role == Listener::Plain {
        let reply = crate::protocol::response::err(
            Some(crate::protocol::response::Code::SysTemp),
            "Too many connections, try again later",
        );
        let _ = stream.try_write(&reply);
    }
}
