//! What a delivery's markers say before anything is stored: the caller's idempotency record
//! and a kept UIDL's marker name the id an earlier attempt used, and whether it got as far as
//! storing. Attempts that died half-way are finished under the same id, never repeated.
//!
//! Record formats: an idempotency record is `<id> pending` before storing and `<id> stored
//! <secs>` after (a bare `<id>` is an older pending record); a UIDL marker is `<id> pending`
//! before storing and the bare `<id>` after, and stays for ever (DESIGN.md promise 5).

use crate::names::AccountName;
use crate::store::{MarkerKey, MessageStore, StoreError};

/// What the markers say about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored before under this id: store nothing.
    Duplicate(String),
    /// An earlier attempt chose this id but never finished storing: finish it now.
    Resume(String),
    /// Nothing was tried before.
    Fresh,
}

/// An idempotency record: the id its delivery uses, and whether it was stored.
fn parse_record(value: &str) -> Option<(String, bool)> {
    let mut words = value.split_whitespace();
    let id = words.next()?.to_owned();
    Some((id, words.next() == Some("stored")))
}

/// The idempotency record of a stored message, with when it was stored.
pub fn stored_record(id: &str) -> String {
    format!("{id} stored {}", crate::clock::unix_secs())
}

/// Reads the caller's idempotency record (`key`) and the kept UIDL's marker; where an earlier
/// attempt stored the message but died before saying so, says so now.
pub async fn read(
    store: &dyn MessageStore,
    name: &AccountName,
    key: Option<&MarkerKey>,
    uidl: Option<&MarkerKey>,
) -> Result<Verdict, StoreError> {
    let by_key = match key {
        Some(key) => by_key(store, name, key).await?,
        None => Verdict::Fresh,
    };
    if let Verdict::Duplicate(_) = by_key {
        return Ok(by_key);
    }
    let by_uidl = match uidl {
        Some(marker) => by_uidl(store, name, marker).await?,
        None => Verdict::Fresh,
    };
    Ok(match (by_key, by_uidl) {
        (_, duplicate @ Verdict::Duplicate(_)) => duplicate,
        // The key's choice wins: both were written with the same id by one attempt.
        (resume @ Verdict::Resume(_), _) | (Verdict::Fresh, resume) => resume,
        (Verdict::Duplicate(_), _) => unreachable!("returned above"),
    })
}

async fn by_key(store: &dyn MessageStore, name: &AccountName, key: &MarkerKey) -> Result<Verdict, StoreError> {
    Ok(match store.get_marker(name, key).await?.as_deref().and_then(parse_record) {
        None => Verdict::Fresh,
        // Stored once: a duplicate, even if the user has deleted it since (promise 4).
        Some((id, true)) => Verdict::Duplicate(id),
        // Stored by an attempt that died before recording it.
        Some((id, false)) if store.exists(name, &id).await? => {
            store.put_marker(name, key, &stored_record(&id)).await?;
            Verdict::Duplicate(id)
        }
        Some((id, false)) => Verdict::Resume(id),
    })
}

async fn by_uidl(store: &dyn MessageStore, name: &AccountName, marker: &MarkerKey) -> Result<Verdict, StoreError> {
    let Some(value) = store.get_marker(name, marker).await? else { return Ok(Verdict::Fresh) };
    Ok(match value.split_once(' ') {
        None => Verdict::Duplicate(value),
        Some((id, _)) if store.exists(name, id).await? => {
            store.put_marker(name, marker, id).await?;
            Verdict::Duplicate(id.to_owned())
        }
        Some((id, _)) => Verdict::Resume(id.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_their_id_and_whether_it_was_stored() {
        assert_eq!(parse_record("abc pending"), Some(("abc".into(), false)));
        assert_eq!(parse_record("abc"), Some(("abc".into(), false)));
        assert_eq!(parse_record(&stored_record("abc")), Some(("abc".into(), true)));
        assert_eq!(parse_record(""), None);
    }
}
