//! The Admin service: accounts, quotas, policies, mailboxes, locks, server info.

use super::proto::{self, *};
use super::status;
use crate::backends::Backends;
use crate::maintenance::{self, Which};
use crate::names::AccountName;
use crate::store::{AccountRecord, ids};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::info;

pub struct AdminService {
    pub backends: Backends,
    pub facts: Arc<super::ServerFacts>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn page_size(requested: u32) -> Result<usize, Status> {
    match requested as usize {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        _ => Err(Status::invalid_argument(format!("page_size must be at most {MAX_PAGE}"))),
    }
}

/// One page of `items` (sorted by `key`) after `token`, and the token of the next page.
fn paginate<T>(items: Vec<T>, key: impl Fn(&T) -> &str, token: &str, size: usize) -> (Vec<T>, String) {
    let mut page: Vec<T> = items.into_iter().filter(|item| key(item) > token).take(size + 1).collect();
    let more = page.len() > size;
    page.truncate(size);
    let next = if more { page.last().map(|item| key(item).to_owned()).unwrap_or_default() } else { String::new() };
    (page, next)
}

fn name(raw: &str) -> Result<AccountName, Status> {
    AccountName::parse(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Refuses a policy outside the bounds every account keeps.
fn check_policy(policy: &Policy) -> Result<(), Status> {
    use crate::accounts::policy::{MAX_EXPIRE_DAYS, MAX_LOGIN_DELAY_SECS};
    if policy.login_delay_secs > MAX_LOGIN_DELAY_SECS {
        return Err(Status::invalid_argument(format!("login_delay_secs must be at most {MAX_LOGIN_DELAY_SECS}")));
    }
    if policy.expire_days.is_some_and(|d| d > MAX_EXPIRE_DAYS) {
        return Err(Status::invalid_argument(format!("expire_days must be at most {MAX_EXPIRE_DAYS}")));
    }
    Ok(())
}

/// The fields an update changes (AIP-134): those its `update_mask` names, or every one when
/// the mask is unset or empty.
struct Mask(Option<Vec<String>>);

impl Mask {
    /// Reads a mask whose paths must be among `known`.
    fn read(mask: Option<&prost_types::FieldMask>, known: &[&str]) -> Result<Self, Status> {
        let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
        if let Some(unknown) = paths.iter().find(|p| !known.contains(&p.as_str())) {
            return Err(Status::invalid_argument(format!(
                "update_mask: no field {unknown:?} (known: {})",
                known.join(", ")
            )));
        }
        Ok(Self((!paths.is_empty()).then(|| paths.to_vec())))
    }

    fn names(&self, field: &str) -> bool {
        self.0.as_ref().is_none_or(|paths| paths.iter().any(|p| p == field))
    }
}

/// The domain record as the API shows it (never with the hash).
fn account(record: AccountRecord) -> Account {
    Account {
        name: record.name,
        enabled: !record.disabled && !record.deleting,
        created_unix: record.created_at as i64,
        quota: Some(Quota { max_bytes: record.quota_bytes, max_messages: record.quota_messages }),
        policy: Some(Policy { login_delay_secs: record.login_delay_secs, expire_days: record.expire_days }),
    }
}

impl AdminService {
    async fn update(&self, raw: &str, change: impl Fn(&mut AccountRecord)) -> Result<Response<Account>, Status> {
        let record = self.backends.accounts.update(raw, change).await.map_err(status::account)?;
        Ok(Response::new(account(record)))
    }

    /// Deletes messages under the maildrop's lock (refused while a session holds it).
    async fn remove(&self, raw: &str, which: Which) -> Result<Response<DeleteMessagesResponse>, Status> {
        let lease = self.facts.lock_lease;
        let report = maintenance::delete_messages(&self.backends, raw, which, lease).await.map_err(status::account)?;
        if let Some((id, why)) = report.failed.first() {
            return Err(Status::unavailable(format!(
                "{} of {} messages not deleted (first: {id}: {why})",
                report.failed.len(),
                report.removed + report.failed.len()
            )));
        }
        info!(account = %raw.to_ascii_lowercase(), deleted = report.removed, "messages deleted by an operator");
        Ok(Response::new(DeleteMessagesResponse { deleted: report.removed as u64 }))
    }

    async fn existing(&self, raw: &str) -> Result<AccountName, Status> {
        let name = name(raw)?;
        match self.backends.accounts.get(&name).await.map_err(status::store)? {
            Some(_) => Ok(name),
            None => Err(Status::not_found(format!("account {name} does not exist"))),
        }
    }
}

/// Most accounts in one ImportAccounts call.
const MAX_IMPORT_BATCH: usize = 1000;

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn import_accounts(
        &self,
        request: Request<ImportAccountsRequest>,
    ) -> Result<Response<ImportAccountsResponse>, Status> {
        use crate::accounts::{AccountError, Imported};
        let req = request.into_inner();
        if req.accounts.len() > MAX_IMPORT_BATCH {
            return Err(Status::invalid_argument(format!("at most {MAX_IMPORT_BATCH} accounts per call")));
        }
        let mut results = Vec::with_capacity(req.accounts.len());
        for imported in req.accounts {
            let outcome = self
                .backends
                .accounts
                .import(&imported.name, &imported.password_hash, req.allow_plain, self.backends.messages.as_ref())
                .await;
            let (status, detail) = match outcome {
                Ok(Imported::Created(name)) => {
                    info!(account = %name, "account imported");
                    (ImportStatus::Created, String::new())
                }
                Ok(Imported::Exists(_)) => (ImportStatus::Exists, "already exists; left as it is".into()),
                Ok(Imported::Refused(why)) => (ImportStatus::Refused, why),
                Err(e @ (AccountError::InvalidName(_) | AccountError::BeingDeleted(_))) => {
                    (ImportStatus::Refused, e.to_string())
                }
                Err(e) => return Err(status::account(e)),
            };
            results.push(ImportAccountResult { name: imported.name, status: status as i32, detail });
        }
        Ok(Response::new(ImportAccountsResponse { results }))
    }

    async fn create_account(&self, request: Request<CreateAccountRequest>) -> Result<Response<Account>, Status> {
        let req = request.into_inner();
        // The same bounds as SetPolicy, checked before anything is created.
        check_policy(&req.policy.unwrap_or_default())?;
        let accounts = &self.backends.accounts;
        let created = accounts
            .create(&req.name, &req.password, self.backends.messages.as_ref())
            .await
            .map_err(status::account)?;
        info!(account = %created, "account created");
        let (quota, policy) = (req.quota.unwrap_or_default(), req.policy.unwrap_or_default());
        self.update(created.as_str(), |r| {
            r.quota_bytes = quota.max_bytes;
            r.quota_messages = quota.max_messages;
            r.login_delay_secs = policy.login_delay_secs;
            r.expire_days = policy.expire_days;
        })
        .await
    }

    async fn get_account(&self, request: Request<GetAccountRequest>) -> Result<Response<Account>, Status> {
        let name = name(&request.into_inner().name)?;
        match self.backends.accounts.get(&name).await.map_err(status::store)? {
            Some(record) => Ok(Response::new(account(record))),
            None => Err(Status::not_found(format!("account {name} does not exist"))),
        }
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let names = self.backends.accounts.list().await.map_err(status::account)?;
        let (page, next_page_token) = paginate(names, |n| n.as_str(), &req.page_token, size);
        let mut accounts = Vec::with_capacity(page.len());
        for n in &page {
            // An account deleted between listing and reading is simply left out.
            if let Some(record) = self.backends.accounts.get(n).await.map_err(status::store)? {
                accounts.push(account(record));
            }
        }
        Ok(Response::new(ListAccountsResponse { accounts, next_page_token }))
    }

    async fn set_password(&self, request: Request<SetPasswordRequest>) -> Result<Response<Account>, Status> {
        let req = request.into_inner();
        let record = self.backends.accounts.set_password(&req.name, &req.password).await.map_err(status::account)?;
        info!(account = %record.name, "password changed");
        Ok(Response::new(account(record)))
    }

    async fn set_enabled(&self, request: Request<SetEnabledRequest>) -> Result<Response<Account>, Status> {
        let req = request.into_inner();
        self.update(&req.name, |r| r.disabled = !req.enabled).await
    }

    async fn set_quota(&self, request: Request<SetQuotaRequest>) -> Result<Response<Account>, Status> {
        let req = request.into_inner();
        let quota = req.quota.unwrap_or_default();
        let change = Mask::read(req.update_mask.as_ref(), &["max_bytes", "max_messages"])?;
        self.update(&req.name, |r| {
            if change.names("max_bytes") {
                r.quota_bytes = quota.max_bytes;
            }
            if change.names("max_messages") {
                r.quota_messages = quota.max_messages;
            }
        })
        .await
    }

    async fn set_policy(&self, request: Request<SetPolicyRequest>) -> Result<Response<Account>, Status> {
        let req = request.into_inner();
        let policy = req.policy.unwrap_or_default();
        check_policy(&policy)?;
        let change = Mask::read(req.update_mask.as_ref(), &["login_delay_secs", "expire_days"])?;
        self.update(&req.name, |r| {
            if change.names("login_delay_secs") {
                r.login_delay_secs = policy.login_delay_secs;
            }
            if change.names("expire_days") {
                r.expire_days = policy.expire_days;
            }
        })
        .await
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        let raw = request.into_inner().name;
        maintenance::delete_account(&self.backends, &raw, self.facts.lock_lease).await.map_err(status::account)?;
        info!(account = %raw.to_ascii_lowercase(), "account deleted");
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn get_mailbox_stats(
        &self,
        request: Request<GetMailboxStatsRequest>,
    ) -> Result<Response<MailboxStats>, Status> {
        let name = self.existing(&request.into_inner().name).await?;
        let messages = self.backends.messages.list(&name).await.map_err(status::store)?;
        let bytes = messages.iter().map(|m| m.size).sum();
        Ok(Response::new(MailboxStats { messages: messages.len() as u64, bytes }))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let name = self.existing(&req.name).await?;
        // One page read from the store, not the whole maildrop per page.
        let (page, more) =
            self.backends.messages.list_page(&name, &req.page_token, size).await.map_err(status::store)?;
        let next_page_token = if more { page.last().map(|m| m.id.clone()).unwrap_or_default() } else { String::new() };
        let messages = page
            .into_iter()
            .map(|m| MessageInfo {
                received_unix_ms: ids::received_ms(&m.id) as i64,
                uidl: ids::uidl_of(&m.id),
                id: m.id,
                size: m.size,
            })
            .collect();
        Ok(Response::new(ListMessagesResponse { messages, next_page_token }))
    }

    async fn delete_messages(
        &self,
        request: Request<DeleteMessagesRequest>,
    ) -> Result<Response<DeleteMessagesResponse>, Status> {
        let req = request.into_inner();
        self.remove(&req.name, Which::Ids(req.ids)).await
    }

    async fn purge_mailbox(
        &self,
        request: Request<PurgeMailboxRequest>,
    ) -> Result<Response<DeleteMessagesResponse>, Status> {
        self.remove(&request.into_inner().name, Which::All).await
    }

    async fn list_sessions(&self, _: Request<ListSessionsRequest>) -> Result<Response<ListSessionsResponse>, Status> {
        let list = self.backends.sessions.list().await.map_err(status::coord)?;
        let sessions = list
            .into_iter()
            .map(|s| Session {
                id: s.id,
                account: s.account,
                peer: s.peer,
                frontend: s.frontend,
                tls: s.tls,
                started_unix: s.started_unix as i64,
            })
            .collect();
        Ok(Response::new(ListSessionsResponse { sessions }))
    }

    async fn end_session(&self, request: Request<EndSessionRequest>) -> Result<Response<EndSessionResponse>, Status> {
        let id = request.into_inner().id;
        let found = self.backends.sessions.request_end(&id).await.map_err(status::coord)?;
        if !found {
            return Err(Status::not_found(format!("no session {id:?}")));
        }
        info!(session = %id, "session end requested by an operator");
        Ok(Response::new(EndSessionResponse {}))
    }

    async fn release_lock(
        &self,
        request: Request<ReleaseLockRequest>,
    ) -> Result<Response<ReleaseLockResponse>, Status> {
        let name = name(&request.into_inner().name)?;
        let released = self.backends.locks.force_release(&name).await.map_err(status::coord)?;
        info!(account = %name, released, "maildrop lock released by an operator");
        Ok(Response::new(ReleaseLockResponse { released }))
    }

    async fn get_server_info(&self, _: Request<GetServerInfoRequest>) -> Result<Response<ServerInfo>, Status> {
        Ok(Response::new(ServerInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            store: self.facts.store.into(),
            locks: self.facts.locks.into(),
            build: format!(
                "{}-{}{}",
                std::env::consts::ARCH,
                std::env::consts::OS,
                if cfg!(debug_assertions) { " debug" } else { "" }
            ),
        }))
    }
}
