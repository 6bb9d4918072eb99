//! `cloudpop account add|passwd|del|list`, on the store or through the API.

use super::CommonArgs;
use super::target::Target;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum AccountCommand {
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
pub struct PasswordArgs {
    name: String,
    /// Read the password from the first line of standard input (required: never on the
    /// command line, where other users could see it).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub async fn run(command: AccountCommand) -> anyhow::Result<()> {
    let common = match &command {
        AccountCommand::Add(a) | AccountCommand::Passwd(a) => &a.common,
        AccountCommand::Del { common, .. } | AccountCommand::List { common } => common,
    };
    let mut target = Target::open(common).await?;
    match command {
        AccountCommand::Add(a) => {
            let name = target.create_account(&a.name, super::read_password()?).await?;
            println!("created account {name}");
        }
        AccountCommand::Passwd(a) => {
            let name = target.set_password(&a.name, super::read_password()?).await?;
            println!("password changed for {name}");
        }
        AccountCommand::Del { name, .. } => {
            target.delete_account(&name).await?;
            println!("deleted account {} and its messages", name.to_ascii_lowercase());
        }
        AccountCommand::List { .. } => {
            for name in target.list_accounts().await? {
                println!("{name}");
            }
        }
    }
    Ok(())
}
