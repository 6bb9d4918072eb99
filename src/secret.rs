//! Secrets (passwords, keys) kept apart from ordinary configuration: read from the environment
//! or from a file, never printed by `Debug`, never logged.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

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

    /// The secret given inline, or else read from `file` (trailing newline removed).
    pub fn inline_or_file(inline: Option<&Secret>, file: Option<&Path>) -> std::io::Result<Option<Secret>> {
        if let Some(secret) = inline {
            return Ok(Some(secret.clone()));
        }
        let Some(file) = file else { return Ok(None) };
        let text = std::fs::read_to_string(file)?;
        Ok(Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())))
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
    fn never_printed_and_read_from_files() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(Secret::inline_or_file(None, Some(&path)).unwrap().unwrap().expose(), "from-file");
        assert_eq!(Secret::inline_or_file(Some(&s), Some(&path)).unwrap().unwrap().expose(), "hunter2");
        assert!(Secret::inline_or_file(None, None).unwrap().is_none());
    }
}
