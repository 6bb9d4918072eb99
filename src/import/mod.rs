//! `cloudpop import`: moves a provider's existing accounts and mailboxes in without making any
//! POP3 client download its mail again.
//!
//! Every message keeps the UIDL its clients saw on the old server (as a kept-UIDL delivery,
//! [`crate::delivery::Options::uidl`]), in the old order, so a client that left mail on the
//! server sees the same UIDLs after the switch and downloads nothing. Running an import twice
//! stores nothing twice: a UIDL once imported into a mailbox stays imported, even after the
//! user deletes the message. A crashed import therefore resumes by running it again.
//!
//! Sources: Dovecot maildirs ([`maildir`]), mbox files ([`mbox`]) and any live POP3 server
//! ([`pop3`]); accounts from a Dovecot-style passwd file with their password hashes. The
//! destination ([`Sink`]) is the configured store, or a running server's gRPC API.

mod error;
pub mod maildir;
pub mod mbox;
pub mod pop3;
mod progress;

use crate::api::proto::{self, DeliveryStatus, Envelope, ImportStatus};
use crate::backends::Backends;
use crate::client::ApiClient;
use crate::delivery::{self, DeliveryError, Outcome, Spooled, Spooler, Via};
use crate::names::AccountName;
use crate::store::{MarkerKey, ids};
use std::path::{Path, PathBuf};
use tokio::io::AsyncRead;

pub use error::ImportError;
pub use progress::Progress;

/// `cloudpop import`'s sources.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Accounts with their existing password hashes, from a passwd-file export
    /// (`name:{SCHEME}hash[:...]` per line, as Dovecot's passwd-file reads it).
    Accounts {
        file: PathBuf,
        /// Accept {PLAIN} passwords (hashed with argon2id at once; never stored as they came).
        #[arg(long)]
        allow_plain: bool,
    },
    /// Dovecot maildirs, keeping the UIDLs Dovecot's POP3 showed: NAME=DIR for each mailbox,
    /// DIR being the INBOX maildir (with cur/, new/ and dovecot-uidlist).
    Maildir {
        #[arg(required = true, value_name = "NAME=DIR")]
        mailboxes: Vec<String>,
        /// The old server's pop3_uidl_format (%u %v %f %g, width and X/x for hex).
        #[arg(long, default_value = "%08Xu%08Xv")]
        uidl_format: String,
    },
    /// mbox files, with UIDLs assigned (X-UIDL fields are kept): NAME=FILE for each mailbox.
    Mbox {
        #[arg(required = true, value_name = "NAME=FILE")]
        mailboxes: Vec<String>,
    },
    /// A live POP3 server, read as a client reads it (nothing is deleted there).
    Pop3 {
        /// host:port of the old server.
        #[arg(long)]
        server: String,
        #[arg(long, value_enum, default_value = "starttls")]
        security: pop3::Security,
        /// PEM CA certificates to trust for the old server instead of the system's.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// `login:password[:mailbox]` per line (tab-separated for passwords with a colon);
        /// the mailbox defaults to the login.
        #[arg(long)]
        users: PathBuf,
    },
}

/// Runs one import into `sink`, `jobs` mailboxes at a time; `allow_cleartext` lets POP3
/// passwords go to another host without TLS.
pub async fn run(
    command: ImportCommand,
    sink: &Sink,
    jobs: usize,
    allow_cleartext: bool,
) -> Result<Report, ImportError> {
    use futures::StreamExt;
    let mut report = Report::default();
    let tally = Tally::default();
    let jobs = jobs.max(1);
    match command {
        ImportCommand::Accounts { file, allow_plain } => {
            let text = std::fs::read_to_string(&file).map_err(ImportError::file(&file))?;
            for (line, name, password) in passwd_entries(&text) {
                let put = if password.is_empty() {
                    Ok(AccountPut::Refused(format!("line {line}: no password field")))
                } else {
                    sink.account(name, password, allow_plain).await
                };
                report.count_account(name, put);
            }
        }
        ImportCommand::Maildir { mailboxes, uidl_format } => {
            let format = maildir::UidlFormat::parse(&uidl_format)?;
            futures::stream::iter(pairs(&mailboxes)?)
                .for_each_concurrent(jobs, |(mailbox, dir)| {
                    let (format, tally) = (&format, &tally);
                    async move {
                        if let Err(e) = maildir::import(sink, mailbox, Path::new(dir), format, tally).await {
                            tally.failed(format!("{mailbox}: {e}"));
                        }
                    }
                })
                .await;
        }
        ImportCommand::Mbox { mailboxes } => {
            futures::stream::iter(pairs(&mailboxes)?)
                .for_each_concurrent(jobs, |(mailbox, file)| {
                    let tally = &tally;
                    async move {
                        if let Err(e) = mbox::import(sink, mailbox, Path::new(file), tally).await {
                            tally.failed(format!("{mailbox}: {e}"));
                        }
                    }
                })
                .await;
        }
        ImportCommand::Pop3 { server, security, ca, users } => {
            let source = pop3_source(&server, security, ca, allow_cleartext)?;
            futures::stream::iter(pop3::users_from(&users)?)
                .for_each_concurrent(jobs, |user| {
                    let (source, tally) = (&source, &tally);
                    async move {
                        if let Err(e) = pop3::import(sink, source, &user, tally).await {
                            tally.failed(format!("{} (login {}): {e}", user.mailbox, user.login));
                        }
                    }
                })
                .await;
        }
    }
    let messages = tally.into_report();
    report.messages = messages.messages;
    report.octets = messages.octets;
    report.already_imported = messages.already_imported;
    report.skipped.extend(messages.skipped);
    report.failed.extend(messages.failed);
    Ok(report)
}

/// The old POP3 server named by `--server host:port`; its users' passwords go to another host
/// without TLS only with `allow_cleartext`.
fn pop3_source(
    server: &str,
    security: pop3::Security,
    ca: Option<PathBuf>,
    allow_cleartext: bool,
) -> Result<pop3::Source, ImportError> {
    let (host, port) = server
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?)))
        .ok_or_else(|| ImportError::NotHostPort(server.to_owned()))?;
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if security == pop3::Security::None && !loopback && !allow_cleartext {
        return Err(ImportError::Cleartext);
    }
    Ok(pop3::Source { host, port, security, ca })
}

/// `NAME=PATH` arguments.
fn pairs(args: &[String]) -> Result<Vec<(&str, &str)>, ImportError> {
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| ImportError::NotPair(arg.clone()))
        })
        .collect()
}

/// Where imported accounts and messages go.
pub enum Sink {
    /// Straight into the configured store (embedded or S3), as `cloudpop deliver` does.
    Store { backends: Box<Backends> },
    /// Through a running server's API: accounts with an admin token, messages (Ingest) with an
    /// ingest token. Messages wait in `spool`, at most `max_size` octets.
    Api { client: Box<ApiClient>, spool: PathBuf, max_size: u64 },
}

/// What happened to one message.
#[derive(Debug)]
pub enum Put {
    Stored(u64),
    /// An earlier import stored this UIDL in this mailbox.
    AlreadyImported,
    /// Not stored, for good (no such account, too large, ...).
    Refused(String),
}

/// What happened to one account.
#[derive(Debug)]
pub enum AccountPut {
    Created,
    Exists,
    Refused(String),
}

impl Sink {
    /// Imports one account of an export (`password_field` as the old server stored it).
    pub async fn account(
        &self,
        name: &str,
        password_field: &str,
        allow_plain: bool,
    ) -> Result<AccountPut, ImportError> {
        use crate::accounts::{AccountError, Imported};
        match self {
            Sink::Store { backends, .. } => {
                match backends.accounts.import(name, password_field, allow_plain, backends.messages.as_ref()).await {
                    Ok(Imported::Created(_)) => Ok(AccountPut::Created),
                    Ok(Imported::Exists(_)) => Ok(AccountPut::Exists),
                    Ok(Imported::Refused(why)) => Ok(AccountPut::Refused(why)),
                    Err(e @ (AccountError::InvalidName(_) | AccountError::BeingDeleted(_))) => {
                        Ok(AccountPut::Refused(e.to_string()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Sink::Api { client, .. } => {
                let account =
                    proto::ImportedAccount { name: name.to_owned(), password_hash: password_field.to_owned() };
                let request = proto::ImportAccountsRequest { accounts: vec![account], allow_plain };
                let reply = client
                    .admin
                    .clone()
                    .import_accounts(request)
                    .await
                    .map_err(|s| ImportError::Api(s.message().to_owned()))?;
                let result = reply.into_inner().results.pop().ok_or(ImportError::NoResult)?;
                Ok(match result.status() {
                    ImportStatus::Created => AccountPut::Created,
                    ImportStatus::Exists => AccountPut::Exists,
                    _ => AccountPut::Refused(result.detail),
                })
            }
        }
    }

    /// Whether `uidl` was already imported into `mailbox` (so a resumed import need not even
    /// fetch it). Through the API this is not known in advance; the server still stores
    /// nothing twice.
    pub async fn known(&self, mailbox: &str, uidl: &str) -> bool {
        let Sink::Store { backends, .. } = self else { return false };
        let (Ok(name), Some(marker)) =
            (AccountName::parse(mailbox), MarkerKey::parse(&format!("uidl.{}", ids::uidl_hex(uidl))))
        else {
            return false;
        };
        // A pending marker is an attempt that died: the import finishes it.
        matches!(backends.messages.get_marker(&name, &marker).await, Ok(Some(value)) if !value.contains(' '))
    }

    /// Stores one message read from `input` in `mailbox`, keeping `uidl`, at `received_ms`.
    pub async fn message(
        &self,
        mailbox: &str,
        uidl: &str,
        received_ms: u64,
        input: impl AsyncRead + Unpin,
    ) -> Result<Put, ImportError> {
        let mut spooler = self.spooler().await?;
        let read = spooler.read_from(input).await.map(|()| spooler);
        self.finish(mailbox, uidl, received_ms, read).await
    }

    /// An empty spool for one message on its way in (bounded memory whatever its size).
    pub async fn spooler(&self) -> Result<Spooler, ImportError> {
        Ok(match self {
            Sink::Store { backends } => backends.delivery.spooler(false).await?,
            // One message at a time on this side: the server's own spool is what is bounded.
            Sink::Api { spool, max_size, .. } => {
                let room = std::sync::Arc::new(tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS));
                Spooler::new(spool, *max_size, false, room).await?
            }
        })
    }

    /// Stores the message in `spooled` (or reports why spooling it failed).
    pub async fn finish(
        &self,
        mailbox: &str,
        uidl: &str,
        received_ms: u64,
        spooled: Result<Spooler, DeliveryError>,
    ) -> Result<Put, ImportError> {
        if !ids::is_valid_kept_uidl(uidl) {
            return Ok(Put::Refused(format!(
                "UIDL {uidl:?} is not 1-70 printable characters, or has the form of this server's own UIDLs"
            )));
        }
        let message = match spooled {
            Ok(spooler) => spooler.finish().await,
            Err(e) => Err(e),
        };
        let message = match message {
            Ok(message) => message,
            Err(e @ (DeliveryError::Read(_) | DeliveryError::Spool(_))) => return Err(e.into()),
            Err(e) => return Ok(Put::Refused(e.to_string())),
        };
        self.put(mailbox, uidl, received_ms, &message).await
    }

    async fn put(&self, mailbox: &str, uidl: &str, received_ms: u64, message: &Spooled) -> Result<Put, ImportError> {
        match self {
            Sink::Store { backends } => {
                let options = delivery::Options {
                    uidl: Some(uidl.to_owned()),
                    received_ms: Some(received_ms),
                    ..Default::default()
                };
                let recipient = delivery::Recipient { mailbox, address: mailbox, options };
                let outcome = backends.delivery.deliver(message, Via::Import, &[recipient]).await.pop();
                match outcome.ok_or(ImportError::NoResult)? {
                    Outcome::Stored(stored) => Ok(Put::Stored(stored.size)),
                    Outcome::Duplicate(_) => Ok(Put::AlreadyImported),
                    Outcome::Failed(e) => Err(e.into()),
                    Outcome::UnknownMailbox => Err(ImportError::NoAccount(mailbox.to_owned())),
                    other => Ok(Put::Refused(format!("{other:?}"))),
                }
            }
            Sink::Api { client, .. } => put_through_api(client, mailbox, uidl, received_ms, message).await,
        }
    }
}

/// Stores one message through the Ingest API, keeping its UIDL and receipt time.
async fn put_through_api(
    client: &ApiClient,
    mailbox: &str,
    uidl: &str,
    received_ms: u64,
    message: &Spooled,
) -> Result<Put, ImportError> {
    let envelope = Envelope {
        recipients: vec![mailbox.to_owned()],
        uidl: uidl.to_owned(),
        received_unix_ms: received_ms as i64,
        ..Envelope::default()
    };
    let file = message.open().await.map_err(DeliveryError::Spool)?;
    let reply = match ApiClient::clone(client).deliver_envelope(envelope, file).await {
        Ok(reply) => reply,
        Err(status) if status.code() == tonic::Code::Unavailable => {
            return Err(ImportError::Api(status.message().to_owned()));
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            return Err(ImportError::NoAccount(mailbox.to_owned()));
        }
        Err(status) => return Ok(Put::Refused(status.message().to_owned())),
    };
    let result = reply.results.into_iter().next().ok_or(ImportError::NoResult)?;
    Ok(match result.status() {
        DeliveryStatus::Stored => Put::Stored(reply.size),
        DeliveryStatus::Duplicate => Put::AlreadyImported,
        DeliveryStatus::TemporaryFailure => return Err(ImportError::Api(result.detail)),
        DeliveryStatus::UnknownMailbox => return Err(ImportError::NoAccount(mailbox.to_owned())),
        _ => Put::Refused(result.detail),
    })
}

/// Counts of a whole import, printed at the end.
#[derive(Debug, Default)]
pub struct Report {
    pub accounts_created: u64,
    pub accounts_existing: u64,
    pub messages: u64,
    pub octets: u64,
    pub already_imported: u64,
    /// What was left out, and why; also counted in `skipped`.
    pub skipped: Vec<String>,
    /// Failures that a later run may get past (the store or the old server was unreachable).
    pub failed: Vec<String>,
}

/// Lines of the skipped and failed lists printed at the end; the rest are counted.
const LISTED: usize = 50;

/// The report and the progress display, shared by the mailboxes imported at once.
#[derive(Default)]
pub struct Tally(std::sync::Mutex<(Report, Progress)>);

impl Tally {
    fn with<T>(&self, f: impl FnOnce(&mut Report, &mut Progress) -> T) -> T {
        let mut guard = crate::sync::lock(&self.0);
        let (report, progress) = &mut *guard;
        f(report, progress)
    }

    /// More messages are now known to be coming.
    pub fn expect(&self, more: u64) {
        self.with(|_, progress| progress.expect(more));
    }

    /// One message's outcome.
    pub fn count(&self, what: &str, put: Result<Put, ImportError>) {
        self.with(|report, progress| {
            match put {
                Ok(Put::Stored(size)) => {
                    report.messages += 1;
                    report.octets += size;
                }
                Ok(Put::AlreadyImported) => report.already_imported += 1,
                Ok(Put::Refused(why)) => report.skipped.push(format!("{what}: {why}")),
                Err(why) => report.failed.push(format!("{what}: {why}")),
            }
            progress.step(report);
        });
    }

    /// A mailbox that could not be imported (or not to the end).
    pub fn failed(&self, what: String) {
        self.with(|report, _| report.failed.push(what));
    }

    pub fn into_report(self) -> Report {
        self.0.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).0
    }
}

impl Report {
    pub fn count_account(&mut self, name: &str, put: Result<AccountPut, ImportError>) {
        match put {
            Ok(AccountPut::Created) => self.accounts_created += 1,
            Ok(AccountPut::Exists) => self.accounts_existing += 1,
            Ok(AccountPut::Refused(why)) => self.skipped.push(format!("account {name}: {why}")),
            Err(why) => self.failed.push(format!("account {name}: {why}")),
        }
    }

    /// The final report, for people and scripts alike.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "imported: {} accounts created ({} already there), {} messages, {} octets; {} messages already imported \
             earlier; {} skipped; {} failed\n",
            self.accounts_created,
            self.accounts_existing,
            self.messages,
            self.octets,
            self.already_imported,
            self.skipped.len(),
            self.failed.len()
        );
        for (label, list) in [("skipped", &self.skipped), ("failed", &self.failed)] {
            for line in list.iter().take(LISTED) {
                out.push_str(&format!("{label}: {line}\n"));
            }
            if list.len() > LISTED {
                out.push_str(&format!("{label}: ... and {} more\n", list.len() - LISTED));
            }
        }
        if !self.failed.is_empty() {
            out.push_str("run the same import again to retry what failed; nothing is imported twice\n");
        }
        out
    }
}

/// The accounts of a passwd-file export (Dovecot's `passwd-file`, `/etc/passwd`-like):
/// `name:password-field[:more fields ignored]` per line; blank lines and `#` comments skipped.
/// Returns `(line number, name, password field)`.
pub fn passwd_entries(text: &str) -> Vec<(usize, &str, &str)> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(n, line)| {
            let (name, rest) = line.split_once(':').unwrap_or((line, ""));
            // The password field ends at the next ':' unless it is a scheme-prefixed hash whose
            // own text has none; every scheme cloudpop reads is free of ':'.
            let password = rest.split(':').next().unwrap_or("");
            (n, name.trim(), password)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_files_are_read_like_dovecot_reads_them() {
        let text = "# users\nalice@example.com:{SHA512-CRYPT}$6$salt$hash:1000:1000::/home/alice::\n\n  \
                    bob:{PLAIN}secret\r\ncarol\n";
        assert_eq!(
            passwd_entries(text),
            vec![(2, "alice@example.com", "{SHA512-CRYPT}$6$salt$hash"), (4, "bob", "{PLAIN}secret"), (5, "carol", ""),]
        );
    }
}
