//! Message ids: unique within a maildrop forever, ordered by arrival, usable as UIDLs.
//!
//! 12 hex digits of milliseconds since the epoch, 4 of a per-process sequence, 12 random: 28
//! characters in 0-9a-f, well inside RFC 1939's 1-70 characters in 0x21-0x7E. The id is the
//! message's UIDL, unless the message was migrated from another server with its old UIDL: then
//! the id is followed by `-` and the old UIDL in hex (safe in any file name or object key), and
//! POP3 shows the old UIDL, so clients do not download the mailbox again.

use std::sync::Mutex;

/// Length of every id this module makes.
pub const ID_LEN: usize = 28;

static LAST: Mutex<(u64, u16)> = Mutex::new((0, 0));

/// Longest UIDL a client may supply (RFC 1939).
pub const MAX_UIDL_LEN: usize = 70;

/// A fresh id, greater than every id made before it by this process.
pub fn new_message_id() -> String {
    let now = crate::clock::pool_millis();
    id_at(now)
}

/// A fresh id whose time part is `received_ms` (a migrated message keeps its place in the
/// mailbox's order); still unique through its random part.
pub fn new_message_id_at(received_ms: u64) -> String {
    // The sequence part belongs to this process's clock; for a time of the caller's, it is
    // random too.
    let mut seq = [0u8; 2];
    getrandom::fill(&mut seq).expect("operating system random source");
    format_id(received_ms, u16::from_be_bytes(seq))
}

fn id_at(now: u64) -> String {
    let (ms, seq) = {
        let mut last = crate::sync::lock(&LAST);
        *last = if now > last.0 {
            (now, 0)
        } else if last.1 == u16::MAX {
            (last.0 + 1, 0)
        } else {
            (last.0, last.1 + 1)
        };
        *last
    };
    format_id(ms, seq)
}

fn format_id(ms: u64, seq: u16) -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("operating system random source");
    let random = random.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    format!("{:012x}{:04x}{:012x}", ms & 0xffff_ffff_ffff, seq, random)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `uidl` is a valid POP3 unique id: 1-70 characters in 0x21-0x7E.
pub fn is_valid_uidl(uidl: &str) -> bool {
    (1..=MAX_UIDL_LEN).contains(&uidl.len()) && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Whether `uidl` may be kept for a migrated message: a valid UIDL that cannot be the UIDL of
/// a message delivered here (those are message ids), so no two messages ever share one.
pub fn is_valid_kept_uidl(uidl: &str) -> bool {
    is_valid_uidl(uidl) && !is_message_id(uidl)
}

/// `uidl` in lowercase hex: safe in any file name, object key or marker name.
pub fn uidl_hex(uidl: &str) -> String {
    uidl.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The id of a migrated message that keeps `uidl`.
pub fn with_uidl(id: &str, uidl: &str) -> String {
    format!("{id}-{}", uidl_hex(uidl))
}

/// A message id read back from the store (a file or object name, an index entry): only what
/// has the shape of an id becomes one, so a foreign file or key is ignored and nothing can
/// name another path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// The id `s` names, if it has the shape of one.
    pub fn parse(s: &str) -> Option<Self> {
        is_message_id(s).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` has the shape of an id, plain or with a kept UIDL (used to ignore foreign files
/// and keys, and to refuse anything that could name another path).
pub fn is_message_id(s: &str) -> bool {
    let (id, kept) = match s.split_once('-') {
        Some((id, hex)) => (id, Some(hex)),
        None => (s, None),
    };
    id.len() == ID_LEN && is_lower_hex(id) && kept.is_none_or(|hex| decode_uidl(hex).is_some())
}

fn decode_uidl(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !is_lower_hex(hex) {
        return None;
    }
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect::<Option<_>>()?;
    String::from_utf8(bytes).ok().filter(|u| is_valid_uidl(u))
}

/// What POP3 shows as the message's UIDL: the kept one, or the id itself.
pub fn uidl_of(id: &str) -> String {
    id.split_once('-').and_then(|(_, hex)| decode_uidl(hex)).unwrap_or_else(|| id.to_owned())
}

/// When the message was received, in milliseconds since the epoch (from its id).
pub fn received_ms(id: &str) -> u64 {
    id.get(..12).and_then(|hex| u64::from_str_radix(hex, 16).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_uidl_cannot_be_a_native_one() {
        let native = new_message_id();
        assert_eq!(uidl_of(&native), native);
        assert!(!is_valid_kept_uidl(&native), "a kept UIDL could copy a delivered message's");
        assert!(is_valid_kept_uidl("00000001aabbccdd"));
    }

    #[test]
    fn kept_uidls_round_trip_and_nothing_else_passes() {
        let id = new_message_id();
        let kept = with_uidl(&id, "old-server:42/x");
        assert!(is_message_id(&kept));
        assert_eq!(uidl_of(&kept), "old-server:42/x");
        assert_eq!(uidl_of(&id), id);
        for bad in ["", "../x", &format!("{id}-"), &format!("{id}-2f2"), &format!("{id}-20"), &format!("{id}/x"), "ABC"]
        {
            assert!(!is_message_id(bad), "{bad:?}");
        }
        assert!(is_valid_uidl(&"x".repeat(70)) && !is_valid_uidl(&"x".repeat(71)) && !is_valid_uidl("a b"));
        let at = new_message_id_at(1_600_000_000_000);
        assert_eq!(received_ms(&at), 1_600_000_000_000);
        assert_ne!(new_message_id_at(1_600_000_000_000), at);
    }

    #[test]
    fn ids_are_well_formed_unique_and_ordered() {
        let ids: Vec<String> = (0..5000).map(|_| new_message_id()).collect();
        assert!(ids.iter().all(|id| is_message_id(id)));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
