//! The session's view of a maildrop: the snapshot taken at login, with DELE marks.
//!
//! Message numbers index this snapshot and never shift during a session (RFC 1939 section 5).

/// One message as listed at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The unique id (UIDL) the client sees.
    pub uid: String,
    /// The message's key in the store (equal to `uid` except for migrated messages).
    pub key: String,
    /// Exact size in octets, as RETR sends it before dot-stuffing.
    pub size: u64,
}

/// Why a message number does not name a retrievable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    NoSuchMessage,
    Deleted,
}

impl Lookup {
    pub fn text(self) -> &'static str {
        match self {
            Lookup::NoSuchMessage => "No such message",
            Lookup::Deleted => "Message already deleted",
        }
    }
}

/// The snapshot plus the deletion marks of the current session.
#[derive(Debug, Default)]
pub struct MaildropView {
    messages: Vec<Listing>,
    deleted: Vec<bool>,
}

impl MaildropView {
    pub fn new(messages: Vec<Listing>) -> Self {
        let deleted = vec![false; messages.len()];
        Self { messages, deleted }
    }

    /// Number and total octets of the messages not marked deleted.
    pub fn stat(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, sum), (_, m)| (n + 1, sum + m.size))
    }

    /// The messages not marked deleted, with their 1-based numbers.
    pub fn live(&self) -> impl Iterator<Item = (u64, &Listing)> {
        self.live_after(0)
    }

    /// As [`MaildropView::live`], from the first message numbered above `number` on.
    pub fn live_after(&self, number: u64) -> impl Iterator<Item = (u64, &Listing)> {
        let start = usize::try_from(number).unwrap_or(usize::MAX).min(self.messages.len());
        self.messages[start..]
            .iter()
            .zip(&self.deleted[start..])
            .enumerate()
            .filter(|(_, (_, d))| !**d)
            .map(move |(i, (m, _))| ((start + i) as u64 + 1, m))
    }

    pub fn get(&self, number: u64) -> Result<&Listing, Lookup> {
        let index = self.index(number)?;
        if self.deleted[index] { Err(Lookup::Deleted) } else { Ok(&self.messages[index]) }
    }

    pub fn delete(&mut self, number: u64) -> Result<(), Lookup> {
        self.get(number)?;
        let index = self.index(number)?;
        self.deleted[index] = true;
        Ok(())
    }

    pub fn reset(&mut self) {
        self.deleted.fill(false);
    }

    /// The store keys to remove when the session reaches UPDATE, and their octets.
    pub fn deleted_keys(&self) -> (Vec<String>, u64) {
        let doomed = self.messages.iter().zip(&self.deleted).filter(|(_, d)| **d).map(|(m, _)| m);
        doomed.fold((Vec::new(), 0), |(mut keys, octets), m| {
            keys.push(m.key.clone());
            (keys, octets + m.size)
        })
    }

    fn index(&self, number: u64) -> Result<usize, Lookup> {
        match usize::try_from(number) {
            Ok(n) if n >= 1 && n <= self.messages.len() => Ok(n - 1),
            _ => Err(Lookup::NoSuchMessage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> MaildropView {
        MaildropView::new(
            (1..=3).map(|i| Listing { uid: format!("u{i}"), key: format!("k{i}"), size: i * 10 }).collect(),
        )
    }

    #[test]
    fn numbers_do_not_shift_after_delete() {
        let mut v = view();
        v.delete(2).unwrap();
        assert_eq!(v.stat(), (2, 40));
        assert_eq!(v.get(3).unwrap().uid, "u3");
        assert_eq!(v.get(2), Err(Lookup::Deleted));
        assert_eq!(v.delete(2), Err(Lookup::Deleted));
        assert_eq!(v.live().map(|(n, _)| n).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(v.live_after(1).map(|(n, _)| n).collect::<Vec<_>>(), [3]);
        assert_eq!(v.live_after(3).count(), 0);
        assert_eq!(v.live_after(u64::MAX).count(), 0);
        assert_eq!(v.deleted_keys().0, ["k2"]);
        v.reset();
        assert_eq!(v.stat(), (3, 60));
        assert!(v.deleted_keys().0.is_empty());
    }

    #[test]
    fn out_of_range_numbers() {
        let v = view();
        for n in [0, 4, u64::MAX] {
            assert_eq!(v.get(n), Err(Lookup::NoSuchMessage));
        }
    }
}
