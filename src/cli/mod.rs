//! The `cloudpop` command line: one file per command group, each written once against
//! [`target::Target`] where it can act on the store or through the API.
//!
//! Layout: this file (the commands and the options every one takes), [`serve`], [`account`],
//! [`deliver`], [`admin`], [`check`], [`import`], and [`target`] (the store or the API).

mod account;
mod admin;
mod check;
mod deliver;
mod import;
mod serve;
mod target;

use clap::{Args, Parser, Subcommand};
use cloudpop::config::Config;
use cloudpop::settings::Settings;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cloudpop", version, about = "POP3 mailbox retrieval service")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POP3 and the gRPC API.
    Serve(serve::ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Store each FILE (or standard input) as one message in NAME's maildrop. Bare LF line
    /// endings become CRLF. Safe while the server runs.
    Deliver(deliver::DeliverArgs),
    /// Check a running deployment as its clients would: each POP3 listener greets and answers
    /// CAPA, and the API's grpc.health.v1 says SERVING. For `helm test` and smoke tests.
    Check(check::CheckArgs),
    /// Bring existing accounts and mailboxes in from another server, keeping every message's
    /// UIDL (clients that left mail on the server download nothing again). Safe to run again:
    /// nothing is imported twice, and a crashed run resumes where it stopped.
    Import(import::ImportArgs),
    /// Operate a running server through its API (needs --api).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Options every command takes.
#[derive(Args, Clone)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "CLOUDPOP_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory of the embedded store (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Talk to a running server's gRPC API instead of the store, e.g. http://127.0.0.1:7110.
    /// The token comes from CLOUDPOP_API_TOKEN or --token-file.
    #[arg(long, env = "CLOUDPOP_API_URL", global = true)]
    api: Option<String>,
    /// File holding the API bearer token.
    #[arg(long, env = "CLOUDPOP_API_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// PEM CA to trust for an https:// API.
    #[arg(long, env = "CLOUDPOP_API_CA", global = true)]
    api_ca: Option<PathBuf>,
    /// Allow an http:// API on another host (the token and passwords then cross the network in
    /// clear): only where something else encrypts the traffic.
    #[arg(long, global = true)]
    allow_cleartext: bool,
}

/// Runs one command.
impl Cli {
    /// Most threads of the runtime's blocking pool: `serve`'s `blocking_threads`, and tokio's
    /// own default elsewhere. A configuration that does not load gives the default here and
    /// its error from the command itself.
    pub fn blocking_threads(&self) -> usize {
        const TOKIO_DEFAULT: usize = 512;
        match &self.command {
            Command::Serve(args) => match load_config(args.config()) {
                Ok((config, _)) => config.blocking_threads(),
                Err(_) => TOKIO_DEFAULT,
            },
            _ => TOKIO_DEFAULT,
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Account(command) => account::run(command).await,
        Command::Deliver(args) => deliver::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Admin { command, common } => admin::run(command, &common).await,
        Command::Import(args) => import::run(args).await,
    }
}

/// The configuration file and `CLOUDPOP_*` variables, warnings printed.
fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<(Config, Vec<String>)> {
    Ok(Config::load_with_warnings(file, std::env::vars())?)
}

/// The settings of a command that acts on the store.
fn settings(common: &CommonArgs) -> anyhow::Result<Settings> {
    let (mut config, warnings) = load_config(common.config.as_deref())?;
    for warning in warnings {
        eprintln!("cloudpop: warning: {warning}");
    }
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(cloudpop::settings::resolve(&config)?)
}

/// The first line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| anyhow::anyhow!("reading the password: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password.to_owned())
}
