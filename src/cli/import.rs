//! `cloudpop import`: into the configured store, or through the API with `--api` (accounts
//! need an admin token, messages an ingest token).

use super::CommonArgs;
use anyhow::{Context as _, bail};
use clap::Args;
use cloudpop::backends::Backends;
use cloudpop::import::{ImportCommand, Sink};

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: ImportCommand,
    /// Mailboxes imported at once.
    #[arg(long, default_value_t = 4, global = true)]
    jobs: usize,
    #[command(flatten)]
    common: CommonArgs,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let settings = super::settings(common)?;
    // Through the API, messages wait in a private scratch directory removed at the end.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let sink = match super::target::api_client(common).await? {
        Some(client) => Sink::Api {
            client: Box::new(client),
            spool: scratch.path().join("spool"),
            max_size: settings.serve.backends.delivery.max_message_size,
        },
        None => Sink::Store { backends: Box::new(Backends::open(settings.serve.backends).await?) },
    };
    let report = cloudpop::import::run(args.command, &sink, args.jobs, common.allow_cleartext).await?;
    print!("{}", report.summary());
    if !report.failed.is_empty() {
        bail!("{} items failed; run the same import again to retry them", report.failed.len());
    }
    Ok(())
}
