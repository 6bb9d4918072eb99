//! Why an import, one mailbox of it or one item of it could not go on. An item refused for
//! good (too large, not mail) is not an error but a [`super::Put::Refused`] with its reason;
//! these are what a later run may get past (a missing account), or a mistake in the command or
//! the source. Any of them makes the import exit non-zero.

use std::path::PathBuf;

/// A failed import step.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("{0:?} is not NAME=PATH")]
    NotPair(String),
    #[error("--server {0:?} is not host:port")]
    NotHostPort(String),
    #[error(
        "--security none would send the users' passwords in clear to another host; use starttls or implicit, or \
         --allow-cleartext on a trusted network"
    )]
    Cleartext,
    #[error("users file line {0}: expected login:password[:mailbox]")]
    UsersLine(usize),
    #[error(transparent)]
    Uidl(#[from] super::maildir::UidlFormatError),
    #[error(transparent)]
    Uidlist(#[from] super::maildir::UidlistError),
    #[error(transparent)]
    Pop3(#[from] super::pop3::SourceError),
    #[error(transparent)]
    Spool(#[from] crate::delivery::DeliveryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Account(#[from] crate::accounts::AccountError),
    /// The API refused or failed a call; its message.
    #[error("{0}")]
    Api(String),
    #[error("the server sent no result")]
    NoResult,
    /// The mailbox has no account (yet): create it, then run the import again.
    #[error("no account {0}: create it, then run the import again")]
    NoAccount(String),
    /// The old server lists this UIDL for more than one message; the later ones are not imported.
    #[error("the old server gives UIDL {0:?} to more than one message; only the first was imported")]
    RepeatedUidl(String),
}

impl ImportError {
    /// A file that could not be read.
    pub fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| ImportError::File { path: path.to_path_buf(), source }
    }
}
