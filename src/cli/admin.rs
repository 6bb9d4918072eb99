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

/// The commands that change an account and show it afterwards.
async fn change_account(a: &mut AdminClient<Authed>, command: AdminCommand) -> anyhow::Result<proto::Account> {
    let reply = match command {
        AdminCommand::Enable { name } => a.set_enabled(proto::SetEnabledRequest { name, enabled: true }).await,
        AdminCommand::Disable { name } => a.set_enabled(proto::SetEnabledRequest { name, enabled: false }).await,
        AdminCommand::Quota { name, max_bytes, max_messages } => {
            let quota = Some(proto::Quota { max_bytes, max_messages });
            a.set_quota(proto::SetQuotaRequest { name, quota }).await
        }
        AdminCommand::Policy { name, login_delay, expire_days } => {
            let policy = Some(proto::Policy { login_delay_secs: login_delay, expire_days });
            a.set_policy(proto::SetPolicyRequest { name, policy }).await
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
