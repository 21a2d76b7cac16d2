//! What logs say instead of a session id: a short keyed hash. Ids are bearer credentials and
//! never appear in a log; the fingerprint lets an operator follow one session through the
//! logs without being able to use it, or to recover the id from it.
//!
//! With signing (or encryption) keys, the hash key is derived from the newest of them, so
//! every instance of a fleet prints the same fingerprint for a session; without, it is random
//! per process, and fingerprints only correlate within one process's logs.

use std::fmt::Write;

use hmac::{Hmac, Mac};
use sha2::Sha256;

const CONTEXT: &[u8] = b"stickless log fingerprint v1";
/// 48 bits: plenty to tell the sessions in a log apart, far too few to stand in for an id.
const BYTES: usize = 6;

#[derive(Clone)]
pub struct Fingerprints {
    key: Hmac<Sha256>,
}

impl Fingerprints {
    /// Keyed by `material` (a configured key), or by fresh randomness when there is none.
    pub fn new(material: Option<&[u8]>) -> Result<Fingerprints, getrandom::Error> {
        let mut random = [0u8; 32];
        let material = match material {
            Some(material) => material,
            None => {
                getrandom::fill(&mut random)?;
                &random
            }
        };
        let mut kdf = Hmac::<Sha256>::new_from_slice(material)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        kdf.update(CONTEXT);
        let key = Hmac::<Sha256>::new_from_slice(&kdf.finalize().into_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Ok(Fingerprints { key })
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

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprints(<key>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_short_stable_per_key_and_keyed() {
        let a = Fingerprints::new(Some(&[1; 32])).expect("key");
        let again = Fingerprints::new(Some(&[1; 32])).expect("key");
        let other = Fingerprints::new(Some(&[2; 32])).expect("key");
        let random = Fingerprints::new(None).expect("randomness");
        let fp = a.of(b"some-session-id");
        assert_eq!(fp.len(), 12);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, again.of(b"some-session-id"));
        assert_ne!(fp, a.of(b"another-session-id"));
        assert_ne!(fp, other.of(b"some-session-id"));
        assert_ne!(fp, random.of(b"some-session-id"));
    }
}
