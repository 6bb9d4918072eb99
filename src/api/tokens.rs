//! Where the API's bearer tokens come from, and the set in use: token files are read again when
//! they change (a rotated Kubernetes Secret), and a file that no longer reads keeps the tokens
//! accepted until then.

use super::auth::Tokens;
use crate::metrics::count_reload;
use crate::secret::Secret;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The tokens of one scope: inline (from the environment) or a file, one token per line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSource {
    pub inline: Option<Secret>,
    pub file: Option<PathBuf>,
}

impl TokenSource {
    fn read(&self) -> std::io::Result<Vec<Secret>> {
        let secret = Secret::inline_or_file(self.inline.as_ref(), self.file.as_deref())?;
        Ok(secret.map(|s| Tokens::parse_list(s.expose())).unwrap_or_default())
    }

    /// The file's bytes now, to notice a change cheaply; `None` without a file or unreadable.
    fn snapshot(&self) -> Option<Vec<u8>> {
        self.file.as_deref().and_then(|f: &Path| std::fs::read(f).ok())
    }
}

/// Where the tokens of both scopes come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSources {
    pub admin: TokenSource,
    pub ingest: TokenSource,
}

impl TokenSources {
    /// Reads the tokens of both scopes.
    pub fn read(&self) -> std::io::Result<Tokens> {
        Ok(Tokens::new(self.admin.read()?, self.ingest.read()?))
    }

    fn snapshot(&self) -> [Option<Vec<u8>>; 2] {
        [self.admin.snapshot(), self.ingest.snapshot()]
    }
}

/// The API tokens in use.
#[derive(Clone)]
pub struct TokenStore {
    sources: Arc<TokenSources>,
    current: Arc<ArcSwap<Tokens>>,
    seen: Arc<Mutex<[Option<Vec<u8>>; 2]>>,
}

impl TokenStore {
    pub fn load(sources: TokenSources) -> std::io::Result<Self> {
        let tokens = sources.read()?;
        let seen = sources.snapshot();
        Ok(Self {
            sources: Arc::new(sources),
            current: Arc::new(ArcSwap::from_pointee(tokens)),
            seen: Arc::new(Mutex::new(seen)),
        })
    }

    /// The tokens to check a call against now.
    pub fn current(&self) -> Arc<Tokens> {
        self.current.load_full()
    }

    /// Reads the token files again if they changed; `true` when new tokens are now accepted.
    pub fn reload(&self) -> bool {
        let now = self.sources.snapshot();
        {
            let mut seen = crate::sync::lock(&self.seen);
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match self.sources.read() {
            Ok(tokens) => {
                self.current.store(Arc::new(tokens));
                count_reload("api_tokens", "ok");
                info!("API tokens reloaded");
                true
            }
            Err(e) => {
                count_reload("api_tokens", "failed");
                warn!(error = %e, "API token file unreadable; still accepting the previous tokens");
                false
            }
        }
    }
}
