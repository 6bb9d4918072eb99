//! The `cloudpop` command: `serve`, `account ...`, `deliver` and `admin ...`.
//!
//! `account` and `deliver` work two ways: directly on the configured store (no server needed),
//! or, with `--api URL`, as clients of a running server's gRPC API. `admin` always uses the API.

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use cloudpop::api::proto;
use cloudpop::backends::Backends;
use cloudpop::client::ApiClient;
use cloudpop::config::Config;
use cloudpop::delivery;
use cloudpop::secret::Secret;
use cloudpop::server::{self, Shutdown};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cloudpop", version, about = "POP3 mailbox retrieval service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POP3 and the gRPC API.
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
        /// Makes a retry safe: a second delivery with the same key stores nothing (with --api).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Check a running deployment as its clients would: each POP3 listener greets and answers
    /// CAPA, and the API's grpc.health.v1 says SERVING. For `helm test` and smoke tests.
    Check(CheckArgs),
    /// Bring existing accounts and mailboxes in from another server, keeping every message's
    /// UIDL (clients that left mail on the server download nothing again). Safe to run again:
    /// nothing is imported twice, and a crashed run resumes where it stopped.
    Import {
        #[command(subcommand)]
        command: cloudpop::import::ImportCommand,
        /// Mailboxes imported at once.
        #[arg(long, default_value_t = 4, global = true)]
        jobs: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Operate a running server through its API (needs --api).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Options every command takes.
#[derive(Args, Clone)]
struct CommonArgs {
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

#[derive(Args)]
struct ServeArgs {
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
    /// PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(true).args(["pop3", "api"]))]
struct CheckArgs {
    /// A POP3 listener, host:port (repeat for several).
    #[arg(long)]
    pop3: Vec<String>,
    /// The gRPC API, e.g. http://cloudpop-api:7110.
    #[arg(long)]
    api: Option<String>,
    /// PEM CA to trust for an https:// API.
    #[arg(long)]
    api_ca: Option<PathBuf>,
    /// Seconds each check may take.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
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

#[derive(Subcommand)]
enum AdminCommand {
    /// Version, build and backends of the server.
    Info,
    /// One account, with its quota and policy.
    Get { name: String },
    /// Message count and size of a mailbox.
    Stats { name: String },
    /// The messages of a mailbox (id, size, received time).
    Messages { name: String },
    /// Delete messages by id.
    DeleteMessages { name: String, ids: Vec<String> },
    /// Delete every message of a mailbox, keeping the account.
    Purge { name: String },
    /// Free a maildrop lock left by a crashed or stuck session.
    ReleaseLock { name: String },
    /// The POP3 sessions holding a maildrop, across the pool.
    Sessions,
    /// Ask a session to end without applying its deletions.
    EndSession { id: String },
    /// Allow logins and delivery again.
    Enable { name: String },
    /// Refuse logins and delivery.
    Disable { name: String },
    /// Set the quota (0 = unlimited).
    Quota {
        name: String,
        #[arg(long, default_value_t = 0)]
        max_bytes: u64,
        #[arg(long, default_value_t = 0)]
        max_messages: u64,
    },
    /// Set the POP3 policy.
    Policy {
        name: String,
        /// Minimum seconds between logins (RFC 2449 LOGIN-DELAY); 0 for none.
        #[arg(long, default_value_t = 0)]
        login_delay: u64,
        /// Delete messages this many days after first retrieval (RFC 2449 EXPIRE); omit to keep.
        #[arg(long)]
        expire_days: Option<u32>,
    },
}

fn load_config(common: &CommonArgs) -> anyhow::Result<Config> {
    let (mut config, warnings) = Config::load_with_warnings(common.config.as_deref(), std::env::vars())?;
    for warning in warnings {
        eprintln!("cloudpop: warning: {warning}");
    }
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    cloudpop::settings::resolve(&config)?;
    Ok(config)
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

/// Connects to the API named by `--api`, or `None` when the command should use the store.
async fn api_client(common: &CommonArgs) -> anyhow::Result<Option<ApiClient>> {
    let Some(url) = &common.api else { return Ok(None) };
    let token = match (&common.token_file, std::env::var("CLOUDPOP_API_TOKEN")) {
        (Some(file), _) => Secret::inline_or_file(None, Some(file))
            .with_context(|| format!("reading {}", file.display()))?
            .ok_or_else(|| anyhow!("empty token file"))?,
        (None, Ok(token)) => Secret::new(token),
        (None, Err(_)) => bail!("--api needs a token: set CLOUDPOP_API_TOKEN or --token-file"),
    };
    Ok(Some(
        ApiClient::connect(url, token, common.api_ca.as_deref(), common.allow_cleartext)
            .await
            .map_err(anyhow::Error::msg)?,
    ))
}

/// Turns a gRPC failure into a message that says what the server said.
fn grpc(status: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", status.message(), status.code())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Account(cmd) => account(cmd).await,
        Command::Deliver { name, files, idempotency_key, common } => {
            deliver(&name, &files, idempotency_key, &common).await
        }
        Command::Check(args) => check(args).await,
        Command::Admin { command, common } => admin(command, &common).await,
        Command::Import { command, jobs, common } => import(command, jobs, &common).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what is wrong, whatever RUST_BACKTRACE says: a configuration
            // mistake is not a crash.
            eprintln!("cloudpop: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `cloudpop import`: into the configured store, or through the API with `--api` (accounts
/// need an admin token, messages an ingest token).
async fn import(command: cloudpop::import::ImportCommand, jobs: usize, common: &CommonArgs) -> anyhow::Result<()> {
    use cloudpop::import::Sink;
    let config = load_config(common)?;
    let max_size = config.max_message_size;
    // Through the API, messages wait in a private scratch directory removed at the end.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let sink = match api_client(common).await? {
        Some(client) => Sink::Api { client: Box::new(client), spool: scratch.path().join("spool"), max_size },
        None => Sink::Store { backends: Backends::from_config(&config).await?, spool: config.spool_dir(), max_size },
    };
    let report =
        cloudpop::import::run(command, &sink, jobs, common.allow_cleartext).await.map_err(anyhow::Error::msg)?;
    print!("{}", report.summary());
    if !report.failed.is_empty() {
        bail!("{} items failed; run the same import again to retry them", report.failed.len());
    }
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let limit = Duration::from_secs(args.timeout_secs);
    for addr in &args.pop3 {
        let capabilities = cloudpop::check::pop3_capa(addr, limit).await.map_err(anyhow::Error::msg)?;
        println!("ok: POP3 at {addr} greets and lists {}", capabilities.join(", "));
    }
    if let Some(url) = &args.api {
        tokio::time::timeout(limit, cloudpop::client::health(url, args.api_ca.as_deref()))
            .await
            .map_err(|_| anyhow!("the API at {url} did not answer within {} s", limit.as_secs()))?
            .map_err(anyhow::Error::msg)?;
        println!("ok: the API at {url} is SERVING");
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, warnings) = Config::load_with_warnings(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = args.pop3 {
        config.pop3_listen = addr;
    }
    if let Some(addr) = args.pop3s {
        config.pop3s_listen = addr;
    }
    if let Some(addr) = args.api_listen {
        config.api_listen = addr;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    let settings = cloudpop::settings::resolve(&config)?;
    let telemetry = cloudpop::telemetry::init(&config)?;
    for warning in warnings.into_iter().chain(config.advice()) {
        tracing::warn!("{warning}");
    }
    let (signals, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(forward_signals(signals));
    let result = server::run(config, settings, received).await;
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

async fn account(cmd: AccountCommand) -> anyhow::Result<()> {
    let common = match &cmd {
        AccountCommand::Add(a) | AccountCommand::Passwd(a) => &a.common,
        AccountCommand::Del { common, .. } | AccountCommand::List { common } => common,
    };
    if let Some(mut api) = api_client(common).await? {
        return account_via_api(cmd, &mut api).await;
    }
    let config = load_config(common)?;
    let backends = Backends::from_config(&config).await?;
    let Backends { messages, accounts, .. } = backends.clone();
    match cmd {
        AccountCommand::Add(a) => {
            let name = accounts.create(&a.name, &read_password()?, messages.as_ref()).await?;
            println!("created account {name}");
        }
        AccountCommand::Passwd(a) => {
            let record = accounts.set_password(&a.name, &read_password()?).await?;
            println!("password changed for {}", record.name);
        }
        AccountCommand::Del { name, .. } => {
            cloudpop::maintenance::delete_account(&backends, &name, config.lock_lease()).await?;
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

async fn account_via_api(cmd: AccountCommand, api: &mut ApiClient) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Add(a) => {
            let req =
                proto::CreateAccountRequest { name: a.name, password: read_password()?, quota: None, policy: None };
            let account = api.admin.create_account(req).await.map_err(grpc)?.into_inner();
            println!("created account {}", account.name);
        }
        AccountCommand::Passwd(a) => {
            let req = proto::SetPasswordRequest { name: a.name, password: read_password()? };
            let account = api.admin.set_password(req).await.map_err(grpc)?.into_inner();
            println!("password changed for {}", account.name);
        }
        AccountCommand::Del { name, .. } => {
            api.admin.delete_account(proto::DeleteAccountRequest { name: name.clone() }).await.map_err(grpc)?;
            println!("deleted account {} and its messages", name.to_ascii_lowercase());
        }
        AccountCommand::List { .. } => {
            let mut page_token = String::new();
            loop {
                let req = proto::ListAccountsRequest { page_size: 1000, page_token };
                let page = api.admin.list_accounts(req).await.map_err(grpc)?.into_inner();
                for account in page.accounts {
                    println!("{}", account.name);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}

async fn deliver(name: &str, files: &[PathBuf], key: Option<String>, common: &CommonArgs) -> anyhow::Result<()> {
    if key.is_some() && files.len() > 1 {
        // One key names one message: the second file would be taken for a retry of the first.
        bail!("--idempotency-key names one message: deliver each file with its own key");
    }
    if let Some(mut api) = api_client(common).await? {
        let key = key.unwrap_or_default();
        let inputs: Vec<Option<&PathBuf>> =
            if files.is_empty() { vec![None] } else { files.iter().map(Some).collect() };
        for file in inputs {
            let reply = match file {
                None => api.deliver(vec![name.to_owned()], key.clone(), tokio::io::stdin()).await,
                Some(path) => {
                    let input =
                        tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
                    api.deliver(vec![name.to_owned()], key.clone(), input).await
                }
            }
            .map_err(grpc)?;
            let result = reply.results.first().ok_or_else(|| anyhow!("the server sent no result"))?;
            if result.message_id.is_empty() {
                bail!("not delivered: {}", result.detail);
            }
            if result.status == proto::DeliveryStatus::Duplicate as i32 {
                println!("delivered {} (already, by an earlier attempt with this key)", result.message_id);
            } else {
                println!("delivered {} ({} octets)", result.message_id, reply.size);
            }
        }
        return Ok(());
    }
    if key.is_some() {
        bail!("--idempotency-key needs --api");
    }
    let config = load_config(common)?;
    let Backends { messages, accounts, usage, .. } = Backends::from_config(&config).await?;
    let (store, usage) = (messages.as_ref(), usage.as_ref());
    let spool = config.spool_dir();
    if files.is_empty() {
        let stored =
            delivery::deliver(store, &accounts, usage, &spool, name, tokio::io::stdin(), config.max_message_size)
                .await
                .map_err(anyhow::Error::msg)?;
        println!("delivered {} ({} octets)", stored.id, stored.size);
    }
    for file in files {
        let input = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
        let stored = delivery::deliver(store, &accounts, usage, &spool, name, input, config.max_message_size)
            .await
            .map_err(|e| anyhow!("delivering {}: {e}", file.display()))?;
        println!("delivered {} ({} octets) from {}", stored.id, stored.size, file.display());
    }
    Ok(())
}

async fn admin(cmd: AdminCommand, common: &CommonArgs) -> anyhow::Result<()> {
    let mut api = api_client(common).await?.ok_or_else(|| anyhow!("admin commands need --api URL"))?;
    let a = &mut api.admin;
    let show = |account: proto::Account| {
        let (quota, policy) = (account.quota.unwrap_or_default(), account.policy.unwrap_or_default());
        println!(
            "{} enabled={} created={} max_bytes={} max_messages={} login_delay={} expire_days={}",
            account.name,
            account.enabled,
            account.created_unix,
            quota.max_bytes,
            quota.max_messages,
            policy.login_delay_secs,
            policy.expire_days.map_or("never".to_string(), |d| d.to_string())
        );
    };
    match cmd {
        AdminCommand::Info => {
            let info = a.get_server_info(proto::GetServerInfoRequest {}).await.map_err(grpc)?.into_inner();
            println!("version={} store={} locks={} build={}", info.version, info.store, info.locks, info.build);
        }
        AdminCommand::Get { name } => {
            show(a.get_account(proto::GetAccountRequest { name }).await.map_err(grpc)?.into_inner())
        }
        AdminCommand::Stats { name } => {
            let stats = a.get_mailbox_stats(proto::GetMailboxStatsRequest { name }).await.map_err(grpc)?.into_inner();
            println!("messages={} bytes={}", stats.messages, stats.bytes);
        }
        AdminCommand::Messages { name } => {
            let mut page_token = String::new();
            loop {
                let req = proto::ListMessagesRequest { name: name.clone(), page_size: 1000, page_token };
                let page = a.list_messages(req).await.map_err(grpc)?.into_inner();
                for m in page.messages {
                    println!("{} {} {}", m.id, m.size, m.received_unix_ms);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        AdminCommand::DeleteMessages { name, ids } => {
            let reply = a.delete_messages(proto::DeleteMessagesRequest { name, ids }).await.map_err(grpc)?.into_inner();
            println!("deleted {}", reply.deleted);
        }
        AdminCommand::Purge { name } => {
            let reply = a.purge_mailbox(proto::PurgeMailboxRequest { name }).await.map_err(grpc)?.into_inner();
            println!("deleted {}", reply.deleted);
        }
        AdminCommand::Sessions => {
            let reply = a.list_sessions(proto::ListSessionsRequest {}).await.map_err(grpc)?.into_inner();
            for s in reply.sessions {
                println!("{} {} {} {} tls={} started={}", s.id, s.account, s.peer, s.frontend, s.tls, s.started_unix);
            }
        }
        AdminCommand::EndSession { id } => {
            a.end_session(proto::EndSessionRequest { id: id.clone() }).await.map_err(grpc)?;
            println!("asked session {id} to end");
        }
        AdminCommand::ReleaseLock { name } => {
            let reply = a.release_lock(proto::ReleaseLockRequest { name }).await.map_err(grpc)?.into_inner();
            println!("{}", if reply.released { "released" } else { "no lock was held" });
        }
        AdminCommand::Enable { name } => {
            show(a.set_enabled(proto::SetEnabledRequest { name, enabled: true }).await.map_err(grpc)?.into_inner());
        }
        AdminCommand::Disable { name } => {
            show(a.set_enabled(proto::SetEnabledRequest { name, enabled: false }).await.map_err(grpc)?.into_inner());
        }
        AdminCommand::Quota { name, max_bytes, max_messages } => {
            let quota = Some(proto::Quota { max_bytes, max_messages });
            show(a.set_quota(proto::SetQuotaRequest { name, quota }).await.map_err(grpc)?.into_inner());
        }
        AdminCommand::Policy { name, login_delay, expire_days } => {
            let policy = Some(proto::Policy { login_delay_secs: login_delay, expire_days });
            show(a.set_policy(proto::SetPolicyRequest { name, policy }).await.map_err(grpc)?.into_inner());
        }
    }
    Ok(())
}
