//! What logs say instead of a session id: a short keyed hash. Ids are bearer credentials and
//! never appear in a log; the fingerprint lets an operator follow one session through the
//! logs without being able to use it, or to recover the id from it.
//!
//! The hash is keyed by a fixed label, not by a configured key, so every instance of a fleet
//! prints the same fingerprint for a session with or without keys, and across key rotations.
//! That reveals nothing: an id holds 256 random bits, so 48 bits of its hash cannot be turned
//! back into it, nor guessed into a working id.

use std::fmt::{self, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::id::SessionId;

const CONTEXT: &[u8] = b"stickless log fingerprint v1";
/// 48 bits: plenty to tell the sessions in a log apart, far too few to stand in for an id.
const BYTES: usize = 6;

#[derive(Clone)]
pub struct Fingerprints {
    key: Hmac<Sha256>,
}

impl Fingerprints {
    /// The fleet-wide fingerprints: the same on every instance.
    pub fn new() -> Fingerprints {
        Fingerprints::keyed(&[])
    }

    /// Keyed by `material`.
    pub fn keyed(material: &[u8]) -> Fingerprints {
        let mut kdf = Hmac::<Sha256>::new_from_slice(material)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        kdf.update(CONTEXT);
        let key = Hmac::<Sha256>::new_from_slice(&kdf.finalize().into_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Fingerprints { key }
    }

    /// `id` as a log line shows it (`-` for none). The hash is computed only if a line is
    /// actually written, so filtered-out logs cost nothing on the request path.
    pub fn show<'a>(&'a self, id: Option<&'a SessionId>) -> Shown<'a> {
        Shown {
            fingerprints: self,
            id,
        }
    }

    /// Twelve hex digits for the id (or cookie value) `id`.
    pub fn of(&self, id: &[u8]) -> String {
        let mut mac = self.key.clone();
        mac.update(id);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(BYTES * 2);
        for byte in &digest[..BYTES] {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

impl Default for Fingerprints {
    fn default() -> Self {
        Fingerprints::new()
    }
}

impl fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprints(<key>)")
    }
}

/// A session in a log line; see `Fingerprints::show`.
pub struct Shown<'a> {
    fingerprints: &'a Fingerprints,
    id: Option<&'a SessionId>,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => f.write_str(&self.fingerprints.of(id.as_str().as_bytes())),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_short_stable_per_key_and_keyed() {
        let a = Fingerprints::keyed(&[1; 32]);
        let again = Fingerprints::keyed(&[1; 32]);
        let other = Fingerprints::keyed(&[2; 32]);
        let fleet = Fingerprints::new();
        let fp = a.of(b"some-session-id");
        assert_eq!(fp.len(), 12);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, again.of(b"some-session-id"));
        assert_ne!(fp, a.of(b"another-session-id"));
        assert_ne!(fp, other.of(b"some-session-id"));
        assert_ne!(fp, fleet.of(b"some-session-id"));
        assert_eq!(
            fleet.of(b"some-session-id"),
            Fingerprints::new().of(b"some-session-id"),
            "the same on every instance"
        );
        let id = SessionId::generate().expect("randomness");
        assert_eq!(a.show(Some(&id)).to_string(), a.of(id.as_str().as_bytes()));
        assert_eq!(a.show(None).to_string(), "-");
    }
}
