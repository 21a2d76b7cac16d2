//! What a session is: its id, when it was created, and its attributes.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::id::SessionId;
use super::update::Update;

/// The highest `session.max_attributes` accepted: bounds the work and the argument count of
/// every store operation, whatever the configuration says.
pub const MAX_ATTRIBUTES: usize = 1024;

/// A session's stored state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Unix milliseconds; the absolute timeout counts from here.
    pub created: u64,
    /// Lower-case attribute names to values, byte for byte as the backend sent them.
    pub attributes: BTreeMap<String, Bytes>,
}

/// A live session as one request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub record: Record,
}

impl Record {
    pub fn new(created: u64) -> Record {
        Record {
            created,
            attributes: BTreeMap::new(),
        }
    }

    /// The record as it will be once `update` is applied (remove, then set).
    pub fn updated(&self, update: &Update) -> Record {
        let mut next = self.clone();
        for name in &update.remove {
            next.attributes.remove(name);
        }
        for (name, value) in &update.set {
            next.attributes.insert(name.clone(), value.clone());
        }
        next
    }

    /// The bytes the attributes cost as injected header lines: `<prefix><name>: <value>\r\n`.
    pub fn injected_size(&self, prefix_len: usize) -> usize {
        self.attributes
            .iter()
            .map(|(n, v)| prefix_len + n.len() + 2 + v.len() + 2)
            .sum()
    }
}

/// Attribute names: `[a-z0-9][a-z0-9-]{0,63}` (after lower-casing), `id` reserved because
/// `<prefix>Id` carries the session id.
pub fn attribute_name(raw: &str) -> Option<String> {
    let name = raw.to_ascii_lowercase();
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && name != "id";
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names() {
        for ok in ["user", "USER", "a", "0", "cart-items", &"a".repeat(64)] {
            assert!(attribute_name(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "id",
            "ID",
            "-user",
            "user_name",
            "us er",
            "é",
            &"a".repeat(65),
        ] {
            assert!(attribute_name(bad).is_none(), "{bad}");
        }
    }
}
