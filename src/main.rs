//! The `cloudpop` command: `serve`, `account ...` and `deliver`.

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use cloudpop::backends::Backends;
use cloudpop::config::Config;
use cloudpop::delivery;
use cloudpop::server::{self, Shutdown};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cloudpop", version, about = "POP3 mailbox retrieval service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POP3 (embedded default: files under the data directory, locks in this process).
    Serve(ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Store each FILE (or standard input) as one message in NAME's maildrop. Bare LF line
    /// endings become CRLF. Safe while the server runs.
    Deliver {
        /// Mailbox (account) name.
        name: String,
        /// Message files; standard input when none are given.
        files: Vec<PathBuf>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Options every command takes.
#[derive(Args, Clone)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "CLOUDPOP_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the embedded store (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Plain POP3 listener with STLS, e.g. 0.0.0.0:110 ("" disables it).
    #[arg(long)]
    pop3: Option<String>,
    /// Implicit-TLS POP3 listener, e.g. 0.0.0.0:995 ("" disables it).
    #[arg(long)]
    pop3s: Option<String>,
    /// gRPC API listener, e.g. 127.0.0.1:7110 ("" disables it).
    #[arg(long)]
    api: Option<String>,
    /// PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account.
    Add(PasswordArgs),
    /// Change an account's password.
    Passwd(PasswordArgs),
    /// Delete an account and every message in its maildrop.
    Del {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List account names.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
struct PasswordArgs {
    name: String,
    /// Read the password from the first line of standard input (required: never on the
    /// command line, where other users could see it).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn load_config(common: &CommonArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(common.config.as_deref(), std::env::vars())?;
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Account(cmd) => account(cmd).await,
        Command::Deliver { name, files, common } => deliver(&name, &files, &common).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.common)?;
    if let Some(addr) = args.pop3 {
        config.pop3_listen = addr;
    }
    if let Some(addr) = args.pop3s {
        config.pop3s_listen = addr;
    }
    if let Some(addr) = args.api {
        config.api_listen = addr;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    config.validate()?;
    init_logging(&config.log);
    server::run(config, wait_for_signal()).await?;
    Ok(())
}

async fn wait_for_signal() -> Shutdown {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => Shutdown::Graceful,
        _ = int.recv() => Shutdown::Fast,
    }
}

async fn account(cmd: AccountCommand) -> anyhow::Result<()> {
    let common = match &cmd {
        AccountCommand::Add(a) | AccountCommand::Passwd(a) => &a.common,
        AccountCommand::Del { common, .. } | AccountCommand::List { common } => common,
    };
    let config = load_config(common)?;
    config.validate()?;
    let Backends { messages, accounts, .. } = Backends::from_config(&config).await?;
    match cmd {
        AccountCommand::Add(a) => {
            let name = accounts.create(&a.name, &read_password()?).await?;
            println!("created account {name}");
        }
        AccountCommand::Passwd(a) => {
            accounts.set_password(&a.name, &read_password()?).await?;
            println!("password changed for {}", a.name.to_ascii_lowercase());
        }
        AccountCommand::Del { name, .. } => {
            accounts.delete(&name, messages.as_ref()).await?;
            println!("deleted account {} and its messages", name.to_ascii_lowercase());
        }
        AccountCommand::List { .. } => {
            for name in accounts.list().await? {
                println!("{name}");
            }
        }
    }
    Ok(())
}

async fn deliver(name: &str, files: &[PathBuf], common: &CommonArgs) -> anyhow::Result<()> {
    let config = load_config(common)?;
    config.validate()?;
    let Backends { messages, accounts, .. } = Backends::from_config(&config).await?;
    let store = messages.as_ref();
    let spool = config.spool_dir();
    if files.is_empty() {
        let stored = delivery::deliver(store, &accounts, &spool, name, tokio::io::stdin(), config.max_message_size)
            .await
            .map_err(anyhow::Error::msg)?;
        println!("delivered {} ({} octets)", stored.id, stored.size);
    }
    for file in files {
        let input = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
        let stored = delivery::deliver(store, &accounts, &spool, name, input, config.max_message_size)
            .await
            .map_err(|e| anyhow::anyhow!("delivering {}: {e}", file.display()))?;
        println!("delivered {} ({} octets) from {}", stored.id, stored.size, file.display());
    }
    Ok(())
}
