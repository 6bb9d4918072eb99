//! Message ids: unique within a maildrop forever, ordered by arrival, usable as UIDLs.
//!
//! 12 hex digits of milliseconds since the epoch, 4 of a per-process sequence, 12 random: 28
//! characters in 0-9a-f, well inside RFC 1939's 1-70 characters in 0x21-0x7E.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of every id this module makes.
pub const ID_LEN: usize = 28;

static LAST: Mutex<(u64, u16)> = Mutex::new((0, 0));

/// A fresh id, greater than every id made before it by this process.
pub fn new_message_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let (ms, seq) = {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        *last = if now > last.0 {
            (now, 0)
        } else if last.1 == u16::MAX {
            (last.0 + 1, 0)
        } else {
            (last.0, last.1 + 1)
        };
        *last
    };
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("operating system random source");
    let random = random.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    format!("{:012x}{:04x}{:012x}", ms & 0xffff_ffff_ffff, seq, random)
}

/// Whether `s` has the shape of an id (used to ignore foreign files and keys).
pub fn is_message_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_unique_and_ordered() {
        let ids: Vec<String> = (0..5000).map(|_| new_message_id()).collect();
        assert!(ids.iter().all(|id| is_message_id(id)));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
