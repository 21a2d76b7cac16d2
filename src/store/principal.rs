//! Who a session belongs to: the value of `session.principal_attribute`, for the principal
//! index (logout everywhere, the admin API) and the lifecycle events.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// A principal value and its index tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The attribute's value, byte for byte as the backend set it (never sealed): events carry
    /// it, so consumers see the user, not a hash.
    pub value: Bytes,
    /// The first 128 bits of the value's SHA-256, in hex: names the index key, so values of
    /// any length and bytes make a short key that is safe inside a cluster hash tag `{…}`.
    /// Also stored in the session hash (`_principal`), so that an extension (which reads the
    /// session, possibly sealed) can refresh the index without opening the record.
    pub tag: String,
}

impl Principal {
    pub fn new(value: Bytes) -> Principal {
        let digest = Sha256::digest(&value);
        let tag = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Principal { value, tag }
    }
}

/// The principal of a session before and after one write (update or rotation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Owners<'a> {
    pub old: Option<&'a Principal>,
    pub new: Option<&'a Principal>,
}

impl Owners<'_> {
    /// The index the old id must leave: the old principal's, unless it stays in it.
    pub fn leaving(&self) -> Option<&Principal> {
        self.old
            .filter(|old| self.new.is_none_or(|new| new.tag != old.tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_hex_and_stable() {
        let a = Principal::new(Bytes::from_static(b"alice"));
        assert_eq!(a.tag.len(), 32);
        assert!(a.tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, Principal::new(Bytes::from_static(b"alice")));
        assert_ne!(a.tag, Principal::new(Bytes::from_static(b"bob")).tag);
    }

    #[test]
    fn leaving_only_on_a_change() {
        let a = Principal::new(Bytes::from_static(b"a"));
        let b = Principal::new(Bytes::from_static(b"b"));
        let same = Owners {
            old: Some(&a),
            new: Some(&a),
        };
        assert!(same.leaving().is_none());
        let moved = Owners {
            old: Some(&a),
            new: Some(&b),
        };
        assert_eq!(moved.leaving(), Some(&a));
        let dropped = Owners {
            old: Some(&a),
            new: None,
        };
        assert_eq!(dropped.leaving(), Some(&a));
    }
}
