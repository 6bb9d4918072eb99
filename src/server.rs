//! Listeners and the accept loops: builds the backends from configuration, serves POP3 on the
//! plain (STLS) and implicit-TLS listeners, and shuts down gracefully.

use crate::backends::{BackendError, Backends};
use crate::config::Config;
use crate::session::{self, Context, Listener};
use crate::tls::{self, TlsError};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

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

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM: stop accepting, let sessions finish within `shutdown_grace_secs`.
    Graceful,
    /// SIGINT: stop now; sessions end without entering UPDATE.
    Fast,
}

/// Runs the POP3 service until `stop` resolves.
pub async fn run(config: Config, stop: impl Future<Output = Shutdown>) -> Result<(), ServerError> {
    config.validate()?;
    let config = Arc::new(config);
    let backends = Backends::from_config(&config).await?;
    info!(store = ?config.store, locks = ?config.locks, "backends ready");
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => tls::self_signed_paths(&config.data_dir)?,
    };
    let acceptor = tls::acceptor_from_pem(&cert, &key)?;
    let ctx = Arc::new(Context {
        config: config.clone(),
        backends: backends.clone(),
        tls: Some(acceptor),
        shutdown: CancellationToken::new(),
    });

    // Everything that can be wrong with the configuration fails here, before any readiness line.
    let api_tls = crate::api::tls_config(&config, &cert, &key)?;
    let mut listeners = Vec::new();
    for (addr, role, name) in
        [(&config.pop3_listen, Listener::Plain, "pop3"), (&config.pop3s_listen, Listener::ImplicitTls, "pop3s")]
    {
        if addr.is_empty() {
            continue;
        }
        let listener = TcpListener::bind(addr.as_str())
            .await
            .map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
        info!(%local, listener = name, "listening");
        // Machine-readable readiness line on stdout, for scripts and tests that bind port 0.
        println!("cloudpop: {name} listening on {local}");
        listeners.push((listener, role));
    }
    let api = crate::api::bind(&config).await?;
    if let Some((_, local)) = &api {
        info!(%local, listener = "api", "listening");
        println!("cloudpop: api listening on {local}");
    }
    let _ = std::io::stdout().flush();

    let tracker = TaskTracker::new();
    tracker.spawn(crate::sweeper::run(
        backends.clone(),
        Duration::from_secs(config.sweep_interval_secs),
        ctx.shutdown.clone(),
    ));
    if let Some((listener, _)) = api {
        let (config, shutdown) = (config.clone(), ctx.shutdown.clone());
        tracker.spawn(async move {
            if let Err(e) = crate::api::serve(listener, config, backends, api_tls, shutdown).await {
                warn!(error = %e, "API stopped");
            }
        });
    }
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let stop_accepting = CancellationToken::new();
    for (listener, role) in listeners {
        tracker.spawn(accept_loop(listener, role, ctx.clone(), slots.clone(), tracker.clone(), stop_accepting.clone()));
    }

    let how = stop.await;
    info!(?how, "shutting down");
    stop_accepting.cancel();
    ctx.shutdown.cancel();
    tracker.close();
    let grace = match how {
        Shutdown::Graceful => Duration::from_secs(config.shutdown_grace_secs),
        Shutdown::Fast => Duration::from_millis(200),
    };
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "sessions still open after the grace period; cutting them off");
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    role: Listener,
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
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
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    if ctx.config.proxy_protocol {
                        match session::proxied::accept(stream, peer, ctx.config.login_timeout()).await {
                            Ok((stream, client)) => session::serve(stream, client, role, ctx).await,
                            // Not from the balancer, or garbled: no reply, it is not our client.
                            Err(e) => warn!(%peer, error = %e, "connection without a valid PROXY header dropped"),
                        }
                    } else {
                        session::serve(stream, peer, role, ctx).await;
                    }
                    drop(permit);
                });
            }
            // On the implicit-TLS port a plaintext reply would be noise: just close.
            Err(_) if role == Listener::ImplicitTls => warn!(%peer, "connection limit reached; refusing"),
            Err(_) => {
                tracker.spawn(refuse(stream, peer));
            }
        }
    }
}

/// Tells a client over the connection cap to come back later.
async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    warn!(%peer, "connection limit reached; refusing");
    let reply = crate::protocol::response::err(
        Some(crate::protocol::response::Code::SysTemp),
        "Too many connections, try again later",
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&reply)).await;
    let _ = stream.shutdown().await;
}
