//! Secrets (passwords, keys) kept apart from ordinary configuration: read from the environment
//! or from a file, never printed by `Debug`, never logged.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret setting that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{key} and {key}_file are both set: give the secret one way")]
    Both { key: &'static str },
    #[error("{key}_file = {}: {source}", file.display())]
    Read { key: &'static str, file: PathBuf, source: std::io::Error },
}

/// A secret string; `Debug` and `Display` show only `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret setting `key`, given inline or as `key_file` (never both), read now.
    pub fn resolve(
        key: &'static str,
        inline: Option<&Secret>,
        file: Option<&Path>,
    ) -> Result<Option<Secret>, SecretError> {
        if inline.is_some() && file.is_some() {
            return Err(SecretError::Both { key });
        }
        Self::inline_or_file(inline, file).map_err(|source| SecretError::Read {
            key,
            file: file.map(Path::to_path_buf).unwrap_or_default(),
            source,
        })
    }

    /// The secret given inline, or else read from `file` (trailing newline removed). For
    /// files read again while running (token files); settings are read with [`Secret::resolve`].
    pub fn inline_or_file(inline: Option<&Secret>, file: Option<&Path>) -> std::io::Result<Option<Secret>> {
        if let Some(secret) = inline {
            return Ok(Some(secret.clone()));
        }
        let Some(file) = file else { return Ok(None) };
        let text = std::fs::read_to_string(file)?;
        Ok(Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())))
    }
}

/// A secret given inline, or a file read again at every use: a rotated Kubernetes Secret (a
/// directory's bind password or token) takes effect without a restart.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Fixed(Secret),
    File(PathBuf),
}

impl SecretSource {
    /// The secret setting `key`, given inline or as `key_file` (never both); a file must be
    /// readable now.
    pub fn resolve(
        key: &'static str,
        inline: Option<&Secret>,
        file: Option<&Path>,
    ) -> Result<Option<SecretSource>, SecretError> {
        Secret::resolve(key, inline, file)?;
        Ok(match (inline, file) {
            (Some(secret), _) => Some(Self::Fixed(secret.clone())),
            (None, Some(file)) => Some(Self::File(file.to_path_buf())),
            (None, None) => None,
        })
    }

    /// The secret as it is now (a file is read again).
    pub fn current(&self) -> std::io::Result<Secret> {
        match self {
            Self::Fixed(secret) => Ok(secret.clone()),
            Self::File(file) => Ok(Secret::inline_or_file(None, Some(file))?.unwrap_or_else(|| Secret::new(""))),
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("<redacted>"),
            Self::File(file) => write!(f, "file {}", file.display()),
        }
    }
}

/// Serialized only as `<redacted>`: a listing of the configuration never shows a secret.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_read_again_at_every_use() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first\n").unwrap();
        let source = SecretSource::resolve("t", None, Some(&file)).unwrap().unwrap();
        assert_eq!(source.current().unwrap().expose(), "first");
        std::fs::write(&file, "rotated\n").unwrap();
        assert_eq!(source.current().unwrap().expose(), "rotated");
        assert_eq!(format!("{source:?}"), format!("file {}", file.display()));
    }

    #[test]
    fn never_printed_and_read_from_files() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(Secret::inline_or_file(None, Some(&path)).unwrap().unwrap().expose(), "from-file");
        assert_eq!(Secret::inline_or_file(Some(&s), Some(&path)).unwrap().unwrap().expose(), "hunter2");
        assert!(Secret::inline_or_file(None, None).unwrap().is_none());
        let both = Secret::resolve("redis_password", Some(&s), Some(&path)).unwrap_err();
        assert_eq!(both.to_string(), "redis_password and redis_password_file are both set: give the secret one way");
        let missing = Secret::resolve("redis_password", None, Some(&dir.path().join("nope"))).unwrap_err();
        assert!(missing.to_string().starts_with("redis_password_file = "), "{missing}");
    }
}
