//! `cloudpop serve`: the service, until SIGTERM (graceful) or SIGINT (fast).

use clap::Args;
use cloudpop::server::{self, Shutdown};
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CLOUDPOP_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the embedded store (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plain POP3 listener with STLS, e.g. 0.0.0.0:110 ("" disables it).
    #[arg(long)]
    pop3: Option<String>,
    /// Implicit-TLS POP3 listener, e.g. 0.0.0.0:995 ("" disables it).
    #[arg(long)]
    pop3s: Option<String>,
    /// gRPC API listener, e.g. 127.0.0.1:7110 ("" disables it).
    #[arg(long)]
    api_listen: Option<String>,
    /// Operations listener (/metrics, /healthz, /readyz), e.g. 0.0.0.0:9110 ("" disables it).
    #[arg(long)]
    ops: Option<String>,
    /// PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    pub fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, warnings) = super::load_config(args.config.as_deref())?;
    let flags = [
        (args.pop3, &mut config.pop3_listen),
        (args.pop3s, &mut config.pop3s_listen),
        (args.ops, &mut config.ops_listen),
    ];
    for (flag, setting) in flags {
        if let Some(value) = flag {
            *setting = value;
        }
    }
    if let Some(addr) = args.api_listen {
        config.api_listen = addr;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        (config.tls_cert, config.tls_key) = (Some(cert), Some(key));
    }
    let settings = cloudpop::settings::resolve(&config)?;
    let telemetry = cloudpop::telemetry::init(&settings.telemetry)?;
    for warning in warnings.into_iter().chain(config.advice()) {
        tracing::warn!("{warning}");
    }
    let (signals, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(forward_signals(signals));
    let result = server::run(settings.serve, received).await;
    // Export the spans still queued; this blocks for at most a few seconds.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    Ok(result?)
}

/// Passes every SIGTERM (graceful) and SIGINT (fast) on to the server, so a second signal
/// during a graceful shutdown can still cut it short.
async fn forward_signals(to: tokio::sync::mpsc::UnboundedSender<Shutdown>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    loop {
        let how = tokio::select! {
            _ = term.recv() => Shutdown::Graceful,
            _ = int.recv() => Shutdown::Fast,
        };
        if to.send(how).is_err() {
            return;
        }
    }
}
