//! `cloudpop check`: a running deployment checked as its clients would see it.

use anyhow::anyhow;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(true).args(["pop3", "api"]))]
pub struct CheckArgs {
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

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let limit = Duration::from_secs(args.timeout_secs);
    for addr in &args.pop3 {
        let capabilities = cloudpop::check::pop3_capa(addr, limit).await?;
        println!("ok: POP3 at {addr} greets and lists {}", capabilities.join(", "));
    }
    if let Some(url) = &args.api {
        tokio::time::timeout(limit, cloudpop::client::health(url, args.api_ca.as_deref()))
            .await
            .map_err(|_| anyhow!("the API at {url} did not answer within {} s", limit.as_secs()))??;
        println!("ok: the API at {url} is SERVING");
    }
    Ok(())
}
