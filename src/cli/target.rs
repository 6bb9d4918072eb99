//! Where `account` and `deliver` act: the configured store directly (no server needed), or a
//! running server's gRPC API (`--api URL`). Each command is written once against [`Target`],
//! and prints the same thing either way.

use super::CommonArgs;
use anyhow::{Context as _, anyhow, bail};
use cloudpop::api::proto;
use cloudpop::backends::Backends;
use cloudpop::client::ApiClient;
use cloudpop::delivery::{self, Outcome, Recipient, Via};
use cloudpop::secret::Secret;
use std::time::Duration;
use tokio::io::AsyncRead;

/// The configured store, or a running server.
pub enum Target {
    Store { backends: Box<Backends>, lock_lease: Duration },
    Api(Box<ApiClient>),
}

/// A message delivered.
pub struct Delivered {
    pub id: String,
    pub size: u64,
    /// An earlier delivery with the same idempotency key stored it.
    pub duplicate: bool,
}

/// Turns a gRPC failure into a message that says what the server said.
pub fn grpc(status: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", status.message(), status.code())
}

/// Connects to the API named by `--api`, or `None` when the command should use the store.
pub async fn api_client(common: &CommonArgs) -> anyhow::Result<Option<ApiClient>> {
    let Some(url) = &common.api else { return Ok(None) };
    let token = match (&common.token_file, std::env::var("CLOUDPOP_API_TOKEN")) {
        (Some(file), _) => Secret::inline_or_file(None, Some(file))
            .with_context(|| format!("reading {}", file.display()))?
            .ok_or_else(|| anyhow!("empty token file"))?,
        (None, Ok(token)) => Secret::new(token),
        (None, Err(_)) => bail!("--api needs a token: set CLOUDPOP_API_TOKEN or --token-file"),
    };
    Ok(Some(ApiClient::connect(url, token, common.api_ca.as_deref(), common.allow_cleartext).await?))
}

impl Target {
    /// The API with `--api`, else the configured store.
    pub async fn open(common: &CommonArgs) -> anyhow::Result<Self> {
        if let Some(client) = api_client(common).await? {
            return Ok(Target::Api(Box::new(client)));
        }
        let settings = super::settings(common)?.serve;
        let lock_lease = settings.lock_lease;
        Ok(Target::Store { backends: Box::new(Backends::open(settings.backends).await?), lock_lease })
    }

    /// Creates an account; its name as stored.
    pub async fn create_account(&mut self, name: &str, password: String) -> anyhow::Result<String> {
        Ok(match self {
            Target::Store { backends, .. } => {
                backends.accounts.create(name, &password, backends.messages.as_ref()).await?.to_string()
            }
            Target::Api(api) => {
                let req = proto::CreateAccountRequest { name: name.to_owned(), password, quota: None, policy: None };
                api.admin.create_account(req).await.map_err(grpc)?.into_inner().name
            }
        })
    }

    /// Changes an account's password; its name as stored.
    pub async fn set_password(&mut self, name: &str, password: String) -> anyhow::Result<String> {
        Ok(match self {
            Target::Store { backends, .. } => backends.accounts.set_password(name, &password).await?.name,
            Target::Api(api) => {
                let req = proto::SetPasswordRequest { name: name.to_owned(), password };
                api.admin.set_password(req).await.map_err(grpc)?.into_inner().name
            }
        })
    }

    /// Deletes an account and every message in its maildrop.
    pub async fn delete_account(&mut self, name: &str) -> anyhow::Result<()> {
        match self {
            Target::Store { backends, lock_lease } => {
                cloudpop::maintenance::delete_account(backends, name, *lock_lease).await?;
            }
            Target::Api(api) => {
                api.admin.delete_account(proto::DeleteAccountRequest { name: name.to_owned() }).await.map_err(grpc)?;
            }
        }
        Ok(())
    }

    /// Every account name, in order.
    pub async fn list_accounts(&mut self) -> anyhow::Result<Vec<String>> {
        let api = match self {
            Target::Store { backends, .. } => {
                return Ok(backends.accounts.list().await?.iter().map(ToString::to_string).collect());
            }
            Target::Api(api) => api,
        };
        let (mut names, mut page_token) = (Vec::new(), String::new());
        loop {
            let req = proto::ListAccountsRequest { page_size: 1000, page_token };
            let page = api.admin.list_accounts(req).await.map_err(grpc)?.into_inner();
            names.extend(page.accounts.into_iter().map(|a| a.name));
            if page.next_page_token.is_empty() {
                return Ok(names);
            }
            page_token = page.next_page_token;
        }
    }

    /// Stores one message from `input` in `mailbox`; `key` makes a retry safe.
    pub async fn deliver(
        &mut self,
        mailbox: &str,
        key: Option<&str>,
        input: impl AsyncRead + Unpin + Send + 'static,
    ) -> anyhow::Result<Delivered> {
        match self {
            Target::Store { backends, .. } => deliver_to_store(backends, mailbox, key, input).await,
            Target::Api(api) => {
                let key = key.unwrap_or_default().to_owned();
                let reply = api.deliver(vec![mailbox.to_owned()], key, input).await.map_err(grpc)?;
                let result = reply.results.first().ok_or_else(|| anyhow!("the server sent no result"))?;
                if result.message_id.is_empty() {
                    bail!("not delivered: {}", result.detail);
                }
                let duplicate = result.status == proto::DeliveryStatus::Duplicate as i32;
                Ok(Delivered { id: result.message_id.clone(), size: reply.size, duplicate })
            }
        }
    }
}

/// The operator's tool stores what it is given (after CRLF normalisation); only the API
/// insists on a header section.
async fn deliver_to_store(
    backends: &Backends,
    mailbox: &str,
    key: Option<&str>,
    input: impl AsyncRead + Unpin,
) -> anyhow::Result<Delivered> {
    let idempotency_key = match key {
        Some(raw) => Some(
            delivery::idempotency_marker(raw)
                .ok_or_else(|| anyhow!("--idempotency-key must be 1-128 characters from A-Z a-z 0-9 . _ - :"))?,
        ),
        None => None,
    };
    let mut spooler = backends.delivery.spooler(false).await?;
    spooler.read_from(input).await?;
    let message = spooler.finish().await?;
    let options = delivery::Options { idempotency_key, ..Default::default() };
    let recipient = Recipient { mailbox, address: mailbox, options };
    let outcome = backends.delivery.deliver(&message, Via::Cli, &[recipient]).await.pop();
    let name = mailbox.to_ascii_lowercase();
    match outcome.ok_or_else(|| anyhow!("no outcome"))? {
        Outcome::Stored(stored) => Ok(Delivered { id: stored.id, size: stored.size, duplicate: false }),
        Outcome::Duplicate(id) => Ok(Delivered { id, size: message.size, duplicate: true }),
        Outcome::UnknownMailbox => bail!("unknown mailbox {name}"),
        Outcome::InvalidName(e) => bail!("{e}"),
        Outcome::Disabled => bail!("mailbox {name} is disabled"),
        Outcome::OverQuota(why) => bail!("over quota: {why}"),
        Outcome::Failed(e) => Err(e.into()),
    }
}
