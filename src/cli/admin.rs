//! `cloudpop admin ...`: a running server operated through its API.

use super::CommonArgs;
use super::target::{api_client, grpc};
use anyhow::anyhow;
use clap::Subcommand;
use cloudpop::api::proto::{self, admin_client::AdminClient};
use cloudpop::client::Authed;

#[derive(Subcommand)]
pub enum AdminCommand {
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
    /// Change the quota (0 = unlimited); only the limits given change.
    #[command(group(clap::ArgGroup::new("limit").required(true).multiple(true)))]
    Quota {
        name: String,
        /// Largest total size of the mailbox, in octets.
        #[arg(long, group = "limit")]
        max_bytes: Option<u64>,
        /// Most messages in the mailbox.
        #[arg(long, group = "limit")]
        max_messages: Option<u64>,
    },
    /// Change the POP3 policy; only the settings given change.
    #[command(group(clap::ArgGroup::new("setting").required(true).multiple(true)))]
    Policy {
        name: String,
        /// Minimum seconds between logins (RFC 2449 LOGIN-DELAY); 0 for none.
        #[arg(long, group = "setting")]
        login_delay: Option<u64>,
        /// Delete messages this many days after first retrieval (RFC 2449 EXPIRE), or `never`
        /// to keep them until the client deletes them.
        #[arg(long, group = "setting", value_parser = expire_days)]
        expire_days: Option<ExpireDays>,
    },
}

/// One account, with its quota and policy, on one line.
fn show(account: proto::Account) {
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
}

pub async fn run(command: AdminCommand, common: &CommonArgs) -> anyhow::Result<()> {
    let mut api = api_client(common).await?.ok_or_else(|| anyhow!("admin commands need --api URL"))?;
    let a = &mut api.admin;
    match command {
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
        AdminCommand::Messages { name } => messages(a, name).await?,
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
        account_change => show(change_account(a, account_change).await?),
    }
    Ok(())
}

/// `--expire-days`: a number of days, or `never` (`None`).
#[derive(Clone, Copy, Debug)]
pub struct ExpireDays(Option<u32>);

fn expire_days(text: &str) -> Result<ExpireDays, std::num::ParseIntError> {
    if text.eq_ignore_ascii_case("never") { Ok(ExpireDays(None)) } else { text.parse().map(|d| ExpireDays(Some(d))) }
}

/// The update mask naming the fields that were given.
fn mask<const N: usize>(fields: [(&str, bool); N]) -> Option<prost_types::FieldMask> {
    let paths = fields.into_iter().filter(|(_, given)| *given).map(|(path, _)| path.to_owned()).collect();
    Some(prost_types::FieldMask { paths })
}

/// The commands that change an account and show it afterwards.
async fn change_account(a: &mut AdminClient<Authed>, command: AdminCommand) -> anyhow::Result<proto::Account> {
    let reply = match command {
        AdminCommand::Enable { name } => a.set_enabled(proto::SetEnabledRequest { name, enabled: true }).await,
        AdminCommand::Disable { name } => a.set_enabled(proto::SetEnabledRequest { name, enabled: false }).await,
        AdminCommand::Quota { name, max_bytes, max_messages } => {
            let quota = Some(proto::Quota {
                max_bytes: max_bytes.unwrap_or_default(),
                max_messages: max_messages.unwrap_or_default(),
            });
            let update_mask = mask([("max_bytes", max_bytes.is_some()), ("max_messages", max_messages.is_some())]);
            a.set_quota(proto::SetQuotaRequest { name, quota, update_mask }).await
        }
        AdminCommand::Policy { name, login_delay, expire_days } => {
            let policy = Some(proto::Policy {
                login_delay_secs: login_delay.unwrap_or_default(),
                expire_days: expire_days.and_then(|ExpireDays(days)| days),
            });
            let update_mask =
                mask([("login_delay_secs", login_delay.is_some()), ("expire_days", expire_days.is_some())]);
            a.set_policy(proto::SetPolicyRequest { name, policy, update_mask }).await
        }
        _ => unreachable!("only account changes are passed here"),
    };
    Ok(reply.map_err(grpc)?.into_inner())
}

/// Every message of a mailbox, page by page.
async fn messages(a: &mut AdminClient<Authed>, name: String) -> anyhow::Result<()> {
    let mut page_token = String::new();
    loop {
        let req = proto::ListMessagesRequest { name: name.clone(), page_size: 1000, page_token };
        let page = a.list_messages(req).await.map_err(grpc)?.into_inner();
        for m in page.messages {
            println!("{} {} {}", m.id, m.size, m.received_unix_ms);
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}
