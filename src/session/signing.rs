//! Signed session cookies: `<id>.<HMAC-SHA256(key, id)>`, so a forged or guessed id is refused
//! without a store round trip. Keys are a list, newest first: new cookies are signed with the
//! first, and any key in the list verifies, so keys can be rotated without logging anyone out
//! (add the new key first; drop the old one once every session signed with it has expired,
//! i.e. after the absolute timeout).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::id::SessionId;
use super::keys;

type HmacSha256 = Hmac<Sha256>;

/// Separates the signed message from anything else this key might ever sign.
const CONTEXT: &[u8] = b"stickless session cookie v1\0";

#[derive(Clone)]
pub struct Signer {
    keys: Vec<HmacSha256>,
}

impl Signer {
    /// `keys`, newest first; each at least `keys::MIN_KEY_BYTES` long.
    pub fn new(keys: &[Vec<u8>]) -> Result<Signer, String> {
        let keys = keys::each(keys, "signing", |key| HmacSha256::new_from_slice(key).ok())?;
        Ok(Signer { keys })
    }

    /// The cookie value for `id`, signed with the newest key.
    pub fn sign(&self, id: &SessionId) -> String {
        let mac = self.mac(&self.keys[0], id.as_str().as_bytes());
        format!(
            "{}.{}",
            id.as_str(),
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The id in a signed cookie value, if any key vouches for it. The comparison is
    /// constant-time (`verify_slice`).
    pub fn verify(&self, value: &[u8]) -> Option<SessionId> {
        let dot = value.iter().position(|b| *b == b'.')?;
        let (id, signature) = (&value[..dot], &value[dot + 1..]);
        let id = SessionId::parse(id)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.keys
            .iter()
            .any(|key| {
                self.mac(key, id.as_str().as_bytes())
                    .verify_slice(&signature)
                    .is_ok()
            })
            .then_some(id)
    }

    fn mac(&self, key: &HmacSha256, id: &[u8]) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(CONTEXT);
        mac.update(id);
        mac
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Keys are secrets: never printed.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Vec<u8> {
        vec![byte; 32]
    }

    #[test]
    fn signed_values_verify_and_tampering_does_not() {
        let signer = Signer::new(&[key(1)]).expect("signer");
        let id = SessionId::generate().expect("randomness");
        let value = signer.sign(&id);
        assert_eq!(signer.verify(value.as_bytes()), Some(id.clone()));
        let mut tampered = value.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer.verify(&tampered), None);
        assert_eq!(signer.verify(id.as_str().as_bytes()), None, "unsigned");
        let other = SessionId::generate().expect("randomness");
        let swapped = format!(
            "{}.{}",
            other.as_str(),
            value.split('.').nth(1).unwrap_or_default()
        );
        assert_eq!(
            signer.verify(swapped.as_bytes()),
            None,
            "a signature belongs to its id"
        );
        for junk in [&b""[..], b".", b"a.b", b"\xff.\xff"] {
            assert_eq!(signer.verify(junk), None);
        }
    }

    #[test]
    fn rotation_accepts_older_keys_and_signs_with_the_newest() {
        let old = Signer::new(&[key(1)]).expect("signer");
        let rotated = Signer::new(&[key(2), key(1)]).expect("signer");
        let retired = Signer::new(&[key(2)]).expect("signer");
        let id = SessionId::generate().expect("randomness");
        let from_old = old.sign(&id);
        assert_eq!(rotated.verify(from_old.as_bytes()), Some(id.clone()));
        assert_eq!(retired.verify(from_old.as_bytes()), None);
        assert_eq!(retired.verify(rotated.sign(&id).as_bytes()), Some(id));
    }

    #[test]
    fn short_or_missing_keys_are_refused() {
        assert!(Signer::new(&[]).is_err());
        assert!(Signer::new(&[vec![0; 31]]).is_err());
        assert!(!format!("{:?}", Signer::new(&[key(7)]).expect("signer")).contains('7'));
    }
}
