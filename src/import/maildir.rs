//! Dovecot maildirs: the messages of a mailbox's INBOX in the order, with the sizes and the
//! UIDLs Dovecot's POP3 server showed.
//!
//! The UIDL of a message is, as Dovecot makes it: the `P` (saved POP3 UIDL) field of its
//! `dovecot-uidlist` line when there is one; else `pop3_uidl_format` (default `%08Xu%08Xv`)
//! filled in with its UID, the UIDVALIDITY, its file name and its GUID. A message without a
//! uidlist line (a maildir Dovecot never opened, as Courier or qmail left it, or mail Dovecot
//! has not seen yet) keeps the maildir base name as its UIDL, as those servers showed it, after
//! the listed ones, in name order. The order is the `O` (POP3 order) field when present, else
//! the UID.

use super::{ImportError, Sink, Tally};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One message of a maildir, ready to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub path: PathBuf,
    pub uidl: String,
    /// From the file name's delivery time (seconds), made strictly increasing in POP3 order.
    pub received_ms: u64,
}

/// A `pop3_uidl_format` string: `%u %v %f %g` (or `%{uid}` ...), with an optional zero-padded
/// width and `X` for hex, e.g. `%08Xu%08Xv`. Dovecot writes that hex in lowercase.
#[derive(Debug, Clone)]
pub struct UidlFormat(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Var { var: Var, width: usize, hex: bool },
}

#[derive(Debug, Clone, Copy)]
enum Var {
    Uid,
    UidValidity,
    Filename,
    Guid,
}

/// The values a UIDL is made of, for one message.
struct Values<'a> {
    uid: u32,
    uidvalidity: u32,
    filename: &'a str,
    guid: &'a str,
}

/// A `pop3_uidl_format` cloudpop cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidlFormatError {
    #[error("pop3_uidl_format {0:?} ends with '%'")]
    Dangling(String),
    #[error("pop3_uidl_format variable %{0} is not supported (use %u %v %f %g)")]
    Variable(String),
}

/// A `dovecot-uidlist` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidlistError {
    #[error("dovecot-uidlist is empty")]
    Empty,
    #[error("bad UIDVALIDITY in dovecot-uidlist")]
    UidValidity,
    #[error("bad dovecot-uidlist header")]
    Header,
    #[error("dovecot-uidlist version not supported: {0:?}")]
    Version(String),
    #[error("bad dovecot-uidlist line {0:?}")]
    Line(String),
    #[error("bad UID in {0:?}")]
    Uid(String),
}

impl UidlFormat {
    pub fn parse(format: &str) -> Result<Self, UidlFormatError> {
        let mut parts = Vec::new();
        let mut chars = format.chars().peekable();
        let mut text = String::new();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            if chars.peek() == Some(&'%') {
                chars.next();
                text.push('%');
                continue;
            }
            let mut width = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                width.push(d);
                chars.next();
            }
            let hex = chars.peek() == Some(&'X');
            if hex {
                chars.next();
            }
            let name: String = match chars.next() {
                Some('{') => chars.by_ref().take_while(|&c| c != '}').collect(),
                Some(c) => c.to_string(),
                None => return Err(UidlFormatError::Dangling(format.to_owned())),
            };
            let var = match name.as_str() {
                "u" | "uid" => Var::Uid,
                "v" | "uidvalidity" => Var::UidValidity,
                "f" | "filename" => Var::Filename,
                "g" | "guid" => Var::Guid,
                other => return Err(UidlFormatError::Variable(other.to_owned())),
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var { var, width: width.parse().unwrap_or(0), hex });
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self(parts))
    }

    fn render(&self, values: &Values) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var { var, width, hex } => {
                    let number = match var {
                        Var::Uid => Some(values.uid),
                        Var::UidValidity => Some(values.uidvalidity),
                        Var::Filename | Var::Guid => None,
                    };
                    let value = match (number, hex) {
                        (Some(n), true) => format!("{n:0width$x}"),
                        (Some(n), false) => format!("{n:0width$}"),
                        (None, _) if matches!(var, Var::Filename) => values.filename.to_owned(),
                        (None, _) => values.guid.to_owned(),
                    };
                    out.push_str(&value);
                }
            }
        }
        out
    }
}

/// One line of `dovecot-uidlist`.
#[derive(Debug)]
struct Entry {
    uid: u32,
    fields: HashMap<char, String>,
    filename: String,
}

/// `dovecot-uidlist`: the header's UIDVALIDITY, and the entries.
#[derive(Debug, Default)]
struct Uidlist {
    uidvalidity: u32,
    entries: Vec<Entry>,
}

fn parse_uidlist(text: &str) -> Result<Uidlist, UidlistError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or(UidlistError::Empty)?;
    let mut words = header.split_whitespace();
    let mut list = Uidlist::default();
    match words.next() {
        Some("3") => {
            if let Some(value) = words.find_map(|word| word.strip_prefix('V')) {
                list.uidvalidity = value.parse().map_err(|_| UidlistError::UidValidity)?;
            }
        }
        Some("1") => {
            list.uidvalidity = words.next().and_then(|v| v.parse().ok()).ok_or(UidlistError::Header)?;
        }
        _ => return Err(UidlistError::Version(header.to_owned())),
    }
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (head, filename) = match line.split_once(" :") {
            Some((head, filename)) => (head, filename),
            // Version 1: `<uid> <filename>`.
            None => line.split_once(' ').ok_or_else(|| UidlistError::Line(line.to_owned()))?,
        };
        let mut words = head.split_whitespace();
        let uid = words.next().and_then(|u| u.parse().ok()).ok_or_else(|| UidlistError::Uid(line.to_owned()))?;
        let fields = words.filter_map(|w| w.chars().next().map(|key| (key, w[key.len_utf8()..].to_owned()))).collect();
        list.entries.push(Entry { uid, fields, filename: filename.to_owned() });
    }
    Ok(list)
}

/// The base name of a maildir file: without the `:2,FLAGS` info part.
fn base_name(file: &str) -> &str {
    file.split_once(':').map_or(file, |(base, _)| base)
}

/// The messages of the maildir at `dir` in the order Dovecot's POP3 showed them.
pub fn scan(dir: &Path, format: &UidlFormat) -> Result<Vec<Message>, ImportError> {
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    for sub in ["cur", "new"] {
        let subdir = dir.join(sub);
        for entry in std::fs::read_dir(&subdir).map_err(ImportError::file(&subdir))? {
            let entry = entry.map_err(ImportError::file(&subdir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_file()) {
                files.insert(base_name(&name).to_owned(), entry.path());
            }
        }
    }
    let list = match std::fs::read_to_string(dir.join("dovecot-uidlist")) {
        Ok(text) => parse_uidlist(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Uidlist::default(),
        Err(e) => return Err(ImportError::file(&dir.join("dovecot-uidlist"))(e)),
    };
    // (order key, uid, uidl, path, filename)
    let mut found = Vec::new();
    for entry in &list.entries {
        let Some(path) = files.remove(&entry.filename) else { continue };
        let guid = entry.fields.get(&'G').map_or(entry.filename.as_str(), String::as_str);
        let values = Values { uid: entry.uid, uidvalidity: list.uidvalidity, filename: &entry.filename, guid };
        let uidl = entry.fields.get(&'P').cloned().unwrap_or_else(|| format.render(&values));
        let order = entry.fields.get(&'O').and_then(|o| o.parse::<u64>().ok());
        found.push((order.unwrap_or(u64::MAX), entry.uid, uidl, path, entry.filename.clone()));
    }
    // Files without a uidlist line keep their base name, after the listed ones, in name order.
    let mut unlisted: Vec<(String, PathBuf)> = files.into_iter().collect();
    unlisted.sort();
    for (filename, path) in unlisted {
        found.push((u64::MAX, u32::MAX, filename.clone(), path, filename));
    }
    // Messages with a POP3 order first, in it; then the rest by UID (stable: unlisted files
    // stay in name order).
    found.sort_by_key(|(order, uid, ..)| (*order, *uid));
    let mut last_ms = 0u64;
    Ok(found
        .into_iter()
        .map(|(_, _, uidl, path, filename)| {
            let secs = filename.split('.').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            last_ms = (secs * 1000).max(last_ms + 1);
            Message { path, uidl, received_ms: last_ms }
        })
        .collect())
}

/// Imports the maildir at `dir` into `mailbox`.
pub async fn import(
    sink: &Sink,
    mailbox: &str,
    dir: &Path,
    format: &UidlFormat,
    tally: &Tally,
) -> Result<(), ImportError> {
    let messages = scan(dir, format)?;
    tally.expect(messages.len() as u64);
    for message in messages {
        let what = format!("{mailbox} {}", message.path.display());
        if sink.known(mailbox, &message.uidl).await {
            tally.count(&what, Ok(super::Put::AlreadyImported));
            continue;
        }
        let put = match tokio::fs::File::open(&message.path).await {
            Ok(file) => sink.message(mailbox, &message.uidl, message.received_ms, file).await,
            Err(e) => Err(ImportError::file(&message.path)(e)),
        };
        tally.count(&what, put);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidl_formats_render_like_dovecot() {
        let values = Values { uid: 1, uidvalidity: 0x6b10_6896, filename: "1700000000.M1P1.host", guid: "g1" };
        let render = |f: &str| UidlFormat::parse(f).unwrap().render(&values);
        // As Dovecot 2.3 showed it for UID 1 of a maildir with that UIDVALIDITY.
        assert_eq!(render("%08Xu%08Xv"), "000000016b106896");
        assert_eq!(render("%u-%v"), "1-1796237462");
        assert_eq!(render("%f"), "1700000000.M1P1.host");
        assert_eq!(render("%{uid}.%{guid}%%"), "1.g1%");
        assert!(UidlFormat::parse("%m").is_err());
    }

    #[test]
    fn scans_keep_pop3_order_saved_uidls_and_base_names_of_unlisted_files() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        for (sub, name) in
            [("cur", "100.a.host:2,S"), ("cur", "200.b.host:2,"), ("cur", "300.c.host:2,"), ("new", "400.d.host")]
        {
            std::fs::write(dir.path().join(sub).join(name), "Subject: x\n\nx\n").unwrap();
        }
        std::fs::write(
            dir.path().join("dovecot-uidlist"),
            "3 V16 N4\n1 :100.a.host\n2 Pkept-uidl :200.b.host\n3 O1 :300.c.host\n",
        )
        .unwrap();
        let scanned = scan(dir.path(), &UidlFormat::parse("%08Xu%08Xv").unwrap()).unwrap();
        let uidls: Vec<&str> = scanned.iter().map(|m| m.uidl.as_str()).collect();
        assert_eq!(uidls, ["0000000300000010", "0000000100000010", "kept-uidl", "400.d.host"]);
        assert!(scanned.windows(2).all(|w| w[0].received_ms < w[1].received_ms), "order by receipt time");
        // A maildir Dovecot never opened: base names, in name order.
        std::fs::remove_file(dir.path().join("dovecot-uidlist")).unwrap();
        let scanned = scan(dir.path(), &UidlFormat::parse("%08Xu%08Xv").unwrap()).unwrap();
        let uidls: Vec<&str> = scanned.iter().map(|m| m.uidl.as_str()).collect();
        assert_eq!(uidls, ["100.a.host", "200.b.host", "300.c.host", "400.d.host"]);
    }

    #[test]
    fn uidlists_of_both_versions_parse() {
        let v3 = parse_uidlist(
            "3 V1796237462 N3 G9171\n1 W26 :1700000000.M1P1.host\n2 W37 P0a0b O1 :1700000001.M2P2.host\n",
        )
        .unwrap();
        assert_eq!((v3.uidvalidity, v3.entries.len()), (1796237462, 2));
        assert_eq!(v3.entries[1].fields.get(&'P').map(String::as_str), Some("0a0b"));
        assert_eq!(v3.entries[1].filename, "1700000001.M2P2.host");
        let v1 = parse_uidlist("1 1796237462 2\n1 1700000000.M1P1.host\n").unwrap();
        assert_eq!(
            (v1.uidvalidity, v1.entries[0].uid, v1.entries[0].filename.as_str()),
            (1796237462, 1, "1700000000.M1P1.host")
        );
        assert!(parse_uidlist("9 weird").is_err());
    }
}
