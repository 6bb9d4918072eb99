//! `cloudpop deliver NAME [FILE...]`, into the store or through the API.

use super::CommonArgs;
use super::target::Target;
use anyhow::{Context as _, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DeliverArgs {
    /// Mailbox (account) name.
    name: String,
    /// Message files; standard input when none are given.
    files: Vec<PathBuf>,
    /// Makes a retry safe: a second delivery with the same key stores nothing.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

pub async fn run(args: DeliverArgs) -> anyhow::Result<()> {
    let key = args.idempotency_key.as_deref();
    if key.is_some() && args.files.len() > 1 {
        // One key names one message: the second file would be taken for a retry of the first.
        bail!("--idempotency-key names one message: deliver each file with its own key");
    }
    let mut target = Target::open(&args.common).await?;
    if args.files.is_empty() {
        let delivered = target.deliver(&args.name, key, tokio::io::stdin()).await?;
        report(&delivered, None);
    }
    for file in &args.files {
        let input = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
        let delivered =
            target.deliver(&args.name, key, input).await.with_context(|| format!("delivering {}", file.display()))?;
        report(&delivered, Some(file));
    }
    Ok(())
}

fn report(delivered: &super::target::Delivered, file: Option<&PathBuf>) {
    let from = file.map(|f| format!(" from {}", f.display())).unwrap_or_default();
    if delivered.duplicate {
        println!("delivered {} (already, by an earlier attempt with this key){from}", delivered.id);
    } else {
        println!("delivered {} ({} octets){from}", delivered.id, delivered.size);
    }
}
