//! The embedded backend: messages and accounts as files under one data directory.
//!
//! Layout (every name is an [`AccountName`], so nothing can point outside the directory):
//! ```text
//! DATA/accounts/<name>.json          account record, replaced atomically
//! DATA/accounts/.lock                held (flock) while a record is compared and written
//! DATA/secrets/<name>                secrets shared by every process on this directory
//! DATA/maildrops/<name>/cur/<id>     committed messages, CRLF line endings
//! DATA/maildrops/<name>/tmp/<id>     messages being written, invisible to `list`
//! DATA/maildrops/<name>/markers/<k>  small markers (idempotency keys -> message ids)
//! DATA/retention/<name>              the maildrop's retention ledger, if it has one
//! ```
//! A message becomes visible by a hard link from `tmp/` into `cur/`, which never replaces an
//! existing file and is atomic, after the data has been fsynced.

use super::ids::{MessageId, is_message_id, new_message_id};
use super::{
    AccountRecord, AccountStore, MarkerKey, MessageStore, NewMessage, Opened, Precondition, RemoveReport, StoreError,
    StoredMessage, TraceParent, Version,
};
use crate::names::AccountName;
use async_trait::async_trait;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use tokio::fs;
use tokio::io::AsyncWriteExt;

/// Messages and accounts in a directory tree.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Uses `root`, creating it if needed. Mail and password hashes are nobody else's business:
    /// the root is made private (0700) even if it existed, and everything below is created
    /// private too (directories 0700, files 0600).
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in ["accounts", "maildrops", "retention", "secrets"] {
            private_dir(&root.join(dir)).await?;
        }
        use std::os::unix::fs::PermissionsExt;
        match fs::set_permissions(&root, std::fs::Permissions::from_mode(PRIVATE_DIR)).await {
            // A volume's mount point may belong to root (Kubernetes with fsGroup): what the
            // store creates inside is private all the same.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                tracing::warn!(dir = %root.display(), "cannot make the data directory private (not its owner)");
            }
            result => result?,
        }
        Ok(Self { root })
    }

    /// Removes what crashed writers left behind: temporary message files in every maildrop
    /// older than `age` (younger ones may belong to a delivery in progress in another process).
    /// Returns how many were removed.
    pub async fn remove_leftovers(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut maildrops = fs::read_dir(self.root.join("maildrops")).await?;
        while let Some(maildrop) = maildrops.next_entry().await? {
            removed += remove_older_than(&maildrop.path().join("tmp"), age).await?;
        }
        Ok(removed)
    }

    fn maildrop_dir(&self, maildrop: &AccountName) -> PathBuf {
        self.root.join("maildrops").join(maildrop.as_str())
    }

    fn ledger_path(&self, name: &AccountName) -> PathBuf {
        self.root.join("retention").join(name.as_str())
    }

    fn account_path(&self, name: &AccountName) -> PathBuf {
        self.root.join("accounts").join(format!("{name}.json"))
    }
}

#[async_trait]
impl MessageStore for FsStore {
    async fn ping(&self) -> Result<(), StoreError> {
        fs::metadata(self.root.join("maildrops")).await?;
        Ok(())
    }

    async fn list(&self, maildrop: &AccountName) -> Result<Vec<StoredMessage>, StoreError> {
        let mut entries = match fs::read_dir(self.maildrop_dir(maildrop).join("cur")).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut messages = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Some(id) = entry.file_name().to_str().and_then(MessageId::parse) else {
                continue;
            };
            match entry.metadata().await {
                Ok(meta) => messages.push(StoredMessage { id: id.into_string(), size: meta.len() }),
                // Removed between readdir and stat by a concurrent QUIT or admin call.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        messages.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(messages)
    }

    async fn open(&self, maildrop: &AccountName, id: &str) -> Result<Opened, StoreError> {
        if !is_message_id(id) {
            return Err(StoreError::NotFound);
        }
        let dir = self.maildrop_dir(maildrop);
        let file = fs::File::open(dir.join("cur").join(id)).await?;
        // The trace context is a convenience: a missing or unreadable one never fails a RETR.
        let delivered_by = match fs::read_to_string(dir.join("markers").join(trace_marker(id))).await {
            Ok(text) => TraceParent::parse(&text),
            Err(_) => None,
        };
        Ok(Opened { body: Box::pin(file), delivered_by })
    }

    async fn create_with_id(&self, maildrop: &AccountName, id: &str) -> Result<Box<dyn NewMessage>, StoreError> {
        if !is_message_id(id) {
            return Err(StoreError::Invalid(format!("{id:?} is not a message id")));
        }
        let dir = self.maildrop_dir(maildrop);
        let first = fs::metadata(dir.join("cur")).await.is_err();
        private_dir(&dir.join("tmp")).await?;
        private_dir(&dir.join("cur")).await?;
        if first {
            // A new maildrop: its directory entries must survive a crash like the message will.
            sync_dir(&dir).await?;
            sync_dir(&self.root.join("maildrops")).await?;
        }
        // A unique suffix keeps two concurrent writers of one id (an idempotent retry racing
        // the original) from sharing a temporary file.
        let tmp = dir.join("tmp").join(format!("{id}.{}", new_message_id()));
        let file = private_file().open(&tmp).await?;
        Ok(Box::new(FsNewMessage {
            dir,
            id: id.to_owned(),
            tmp: Some(tmp),
            file: Some(tokio::io::BufWriter::with_capacity(64 * 1024, file)),
            size: 0,
            traceparent: None,
        }))
    }

    async fn remove(&self, maildrop: &AccountName, ids: &[String]) -> Result<RemoveReport, StoreError> {
        let cur = self.maildrop_dir(maildrop).join("cur");
        let mut report = RemoveReport::default();
        let mut unlinked = false;
        for id in ids {
            if !is_message_id(id) {
                report.removed += 1;
                continue;
            }
            match fs::remove_file(cur.join(id)).await {
                Ok(()) => {
                    report.removed += 1;
                    unlinked = true;
                    // The message's own marker goes with it (a leftover only costs space, and
                    // a crash here leaves one at most).
                    let marker = self.maildrop_dir(maildrop).join("markers").join(trace_marker(id));
                    let _ = fs::remove_file(marker).await;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => report.removed += 1,
                Err(e) => report.failed.push((id.clone(), e.to_string())),
            }
        }
        if unlinked {
            sync_dir(&cur).await?;
        }
        Ok(report)
    }

    async fn remove_maildrop(&self, maildrop: &AccountName) -> Result<(), StoreError> {
        self.put_ledger(maildrop, "").await?;
        match fs::remove_dir_all(self.maildrop_dir(maildrop)).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn get_ledger(&self, maildrop: &AccountName) -> Result<Option<String>, StoreError> {
        match fs::read_to_string(self.ledger_path(maildrop)).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put_ledger(&self, maildrop: &AccountName, text: &str) -> Result<(), StoreError> {
        let dir = self.root.join("retention");
        if !text.is_empty() {
            return write_atomically(&dir, maildrop.as_str(), text.as_bytes()).await;
        }
        match fs::remove_file(self.ledger_path(maildrop)).await {
            Ok(()) => sync_dir(&dir).await,
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn ledgers(&self) -> Result<Vec<AccountName>, StoreError> {
        let mut names = Vec::new();
        let mut entries = fs::read_dir(self.root.join("retention")).await?;
        while let Some(entry) = entries.next_entry().await? {
            // Temporary files of an atomic write start with a dot and are no names.
            if let Some(name) = entry.file_name().to_str().and_then(|n| AccountName::parse(n).ok()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn get_marker(&self, maildrop: &AccountName, key: &MarkerKey) -> Result<Option<String>, StoreError> {
        match fs::read_to_string(self.maildrop_dir(maildrop).join("markers").join(key.as_str())).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put_marker(&self, maildrop: &AccountName, key: &MarkerKey, value: &str) -> Result<(), StoreError> {
        let dir = self.maildrop_dir(maildrop).join("markers");
        private_dir(&dir).await?;
        write_atomically(&dir, key.as_str(), value.as_bytes()).await
    }
}

struct FsNewMessage {
    dir: PathBuf,
    id: String,
    /// Set until the message is committed; the temporary file is removed on drop otherwise.
    tmp: Option<PathBuf>,
    file: Option<tokio::io::BufWriter<fs::File>>,
    size: u64,
    traceparent: Option<TraceParent>,
}

/// The marker file that keeps a message's delivery trace context.
fn trace_marker(id: &str) -> String {
    format!("trace.{id}")
}

#[async_trait]
impl NewMessage for FsNewMessage {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().ok_or_else(|| StoreError::Failed("message already committed".into()))?;
        file.write_all(chunk).await?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn set_trace_parent(&mut self, traceparent: &TraceParent) {
        self.traceparent = Some(traceparent.clone());
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredMessage, StoreError> {
        let mut file = self.file.take().ok_or_else(|| StoreError::Failed("message already committed".into()))?;
        file.flush().await?;
        file.get_mut().sync_all().await?;
        drop(file);
        // Written before the message becomes visible, but without fsyncs: it only serves a
        // trace link, so a crash may lose it (a torn one fails to parse and is ignored), and
        // deliveries do not pay two more disk flushes for it.
        if let Some(traceparent) = &self.traceparent {
            let markers = self.dir.join("markers");
            private_dir(&markers).await?;
            let path = markers.join(trace_marker(&self.id));
            let mut file =
                fs::OpenOptions::new().write(true).create(true).truncate(true).mode(PRIVATE_FILE).open(path).await?;
            file.write_all(traceparent.as_str().as_bytes()).await?;
        }
        let tmp = self.tmp.clone().expect("temporary path is set until commit");
        let cur = self.dir.join("cur");
        // A link never replaces a file: if the id exists, an earlier attempt of the same
        // idempotent delivery already stored this message, and that copy stays.
        match fs::hard_link(&tmp, cur.join(&self.id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        sync_dir(&cur).await?;
        let _ = fs::remove_file(&tmp).await;
        self.tmp = None;
        Ok(StoredMessage { id: self.id.clone(), size: self.size })
    }
}

impl Drop for FsNewMessage {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Mode of every directory the store creates.
const PRIVATE_DIR: u32 = 0o700;
/// Mode of every file the store creates.
const PRIVATE_FILE: u32 = 0o600;

/// Creates `path` and its missing parents, each readable by this user only.
pub(crate) async fn private_dir(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(path).await
}

/// Options that create a new file readable by this user only (never an existing one).
fn private_file() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(PRIVATE_FILE);
    options
}

/// Replaces `dir/name` with `bytes` all at once: temporary file, fsync, rename, fsync the dir.
async fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", new_message_id()));
    let result = async {
        let mut file = private_file().open(&tmp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        fs::rename(&tmp, &path).await?;
        sync_dir(dir).await
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&tmp).await;
    }
    result
}

/// Makes a directory's entries (new links, removals) durable.
/// Removes the files in `dir` last modified more than `age` ago; a missing `dir` has none.
pub(crate) async fn remove_older_than(dir: &Path, age: std::time::Duration) -> Result<usize, StoreError> {
    let mut entries = match fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        let meta = entry.metadata().await?;
        let old = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|elapsed| elapsed > age);
        if meta.is_file() && old && fs::remove_file(entry.path()).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

async fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
        .map_err(Into::into)
}

/// The version of a record file: a digest of its bytes.
fn version_of(bytes: &[u8]) -> Version {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    Version(digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect())
}

impl FsStore {
    /// Runs `f` holding the exclusive lock of the account records (an flock, so the server
    /// and command-line tools on the same directory take turns). Record writes are rare.
    async fn with_records_locked<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let lock_path = self.root.join("accounts").join(".lock");
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::OpenOptionsExt as _;
            let lock =
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock_path)?;
            lock.lock()?;
            let result = f();
            drop(lock);
            result
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
    }
}

#[async_trait]
impl AccountStore for FsStore {
    async fn get_versioned(&self, name: &AccountName) -> Result<Option<(AccountRecord, Version)>, StoreError> {
        match fs::read(self.account_path(name)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(|record| Some((record, version_of(&bytes))))
                .map_err(|e| StoreError::Failed(format!("account record for {name} is corrupt: {e}"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put(&self, record: &AccountRecord, expect: Precondition) -> Result<Version, StoreError> {
        let name = AccountName::parse(&record.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Failed(e.to_string()))?;
        let (dir, path) = (self.root.join("accounts"), self.account_path(&name));
        let version = version_of(&bytes);
        self.with_records_locked(move || {
            let current = match std::fs::read(&path) {
                Ok(bytes) => Some(version_of(&bytes)),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            };
            let expected = match expect {
                Precondition::Absent => None,
                Precondition::Unchanged(version) => Some(version),
            };
            if current != expected {
                return Err(StoreError::Conflict);
            }
            let tmp = dir.join(format!(".{name}.json.{}.tmp", new_message_id()));
            let written = (|| {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&dir)?.sync_all()
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
            Ok(version)
        })
        .await
    }

    async fn pool_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let dir = self.root.join("secrets");
        let path = dir.join(name);
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| StoreError::Failed(e.to_string()))?;
                let tmp = dir.join(format!(".{}.tmp", new_message_id()));
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
                file.write_all(&secret)?;
                file.sync_all()?;
                // A hard link never replaces: the first process to make the secret wins.
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => std::fs::File::open(&dir)?.sync_all()?,
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.into()),
                }
            }
            std::fs::read(&path)?
                .try_into()
                .map_err(|_| StoreError::Failed(format!("the secret {} is not 32 bytes", path.display())))
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
    }

    async fn delete(&self, name: &AccountName) -> Result<bool, StoreError> {
        let (dir, path) = (self.root.join("accounts"), self.account_path(name));
        self.with_records_locked(move || match std::fs::remove_file(&path) {
            Ok(()) => {
                std::fs::File::open(&dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn list(&self) -> Result<Vec<AccountName>, StoreError> {
        let mut entries = fs::read_dir(self.root.join("accounts")).await?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if let Ok(name) = AccountName::parse(stem) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}
