//! Attribute values sealed at rest (optional): XChaCha20-Poly1305 under keys from
//! `session.encryption_keys_file`/`_env`, so a Redis dump, a backup or a `MONITOR` session shows
//! no attribute value. The associated data binds each value to its session id and attribute
//! name: a value copied to another session or attribute does not open.
//!
//! A sealed value is `00 01 | nonce (24) | ciphertext | tag (16)`. It starts with a NUL byte,
//! which no header value (and so no plaintext value a backend set) can hold, so a sealed value
//! is never mistaken for a plain one, whichever way the proxy is configured. The nonce is
//! random: 192 bits make collisions negligible however many values one key seals, which AES-GCM's
//! 96-bit nonces would not.
//!
//! Keys are a list, newest first, like the signing keys: values are sealed with the first and
//! opened with any. Each key file line is key material of at least 32 bytes; the cipher key is
//! HMAC-SHA256(material, CONTEXT), so the same line can never act as both kinds of key.

use std::fmt;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::id::SessionId;
use super::keys;
use super::record::Record;

const MARKER: [u8; 2] = [0x00, 0x01];
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const CONTEXT: &[u8] = b"stickless attribute encryption v1";
const AAD_CONTEXT: &[u8] = b"stickless attribute v1\0";

#[derive(Clone)]
pub struct Sealer {
    keys: Vec<XChaCha20Poly1305>,
}

/// Why a stored session cannot be used as it is. Either way it counts as "no session": a
/// session of which only some attributes can be read must not be injected (a missing
/// attribute can mean more privilege, not less).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the session holds encrypted values but no session.encryption_keys are configured")]
    SealedWithoutKeys,
    #[error("the session holds unencrypted values although encryption is on")]
    Plain,
    #[error("a value does not open with any of the encryption keys (retired key, or tampered)")]
    NoKeyOpens,
}

impl Sealer {
    /// `keys`, newest first; each at least `keys::MIN_KEY_BYTES` of key material.
    pub fn new(keys: &[Vec<u8>]) -> Result<Sealer, String> {
        let keys = keys::each(keys, "encryption", |material| {
            let mut kdf = <Hmac<Sha256> as Mac>::new_from_slice(material).ok()?;
            kdf.update(CONTEXT);
            Some(XChaCha20Poly1305::new(&kdf.finalize().into_bytes()))
        })?;
        Ok(Sealer { keys })
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// `value` sealed with the newest key for attribute `name` of session `id`.
    pub fn seal(&self, id: &SessionId, name: &str, value: &[u8]) -> Result<Bytes, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(SealError::Random)?;
        let aad = associated_data(id, name);
        let ciphertext = self.keys[0]
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Cipher)?;
        let mut sealed = Vec::with_capacity(MARKER.len() + NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&MARKER);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(Bytes::from(sealed))
    }

    /// The plaintext of a sealed value, if any key opens it.
    pub fn open(&self, id: &SessionId, name: &str, sealed: &[u8]) -> Option<Bytes> {
        let rest = sealed.strip_prefix(&MARKER)?;
        if rest.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let aad = associated_data(id, name);
        self.keys.iter().find_map(|key| {
            key.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
            .map(Bytes::from)
        })
    }

    /// Every value of `record` sealed for session `id`.
    pub fn seal_record(&self, id: &SessionId, record: &Record) -> Result<Record, SealError> {
        let mut sealed = Record::new(record.created);
        for (name, value) in &record.attributes {
            sealed
                .attributes
                .insert(name.clone(), self.seal(id, name, value)?);
        }
        Ok(sealed)
    }

    /// The values being set, sealed for session `id`.
    pub fn seal_values(
        &self,
        id: &SessionId,
        values: &[(String, Bytes)],
    ) -> Result<Vec<(String, Bytes)>, SealError> {
        values
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.seal(id, name, value)?)))
            .collect()
    }
}

/// A stored record as it may be injected: opened when encryption is on; refused when it holds
/// values of the other kind than the configuration expects.
pub fn open_record(
    sealer: Option<&Sealer>,
    id: &SessionId,
    mut record: Record,
) -> Result<Record, Unreadable> {
    match sealer {
        None => {
            if record.attributes.values().any(|v| is_sealed(v)) {
                return Err(Unreadable::SealedWithoutKeys);
            }
        }
        Some(sealer) => {
            for (name, value) in record.attributes.iter_mut() {
                if !is_sealed(value) {
                    return Err(Unreadable::Plain);
                }
                *value = sealer.open(id, name, value).ok_or(Unreadable::NoKeyOpens)?;
            }
        }
    }
    Ok(record)
}

pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(&MARKER)
}

fn associated_data(id: &SessionId, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + SessionId::LEN + 1 + name.len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(id.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the operating system's random source failed")]
    Random(#[source] getrandom::Error),
    #[error("the cipher refused the value")]
    Cipher,
}

/// Keys are secrets: never printed.
impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({} keys)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(bytes: &[u8]) -> Sealer {
        Sealer::new(&bytes.iter().map(|b| vec![*b; 32]).collect::<Vec<_>>()).expect("sealer")
    }

    fn id() -> SessionId {
        SessionId::generate().expect("randomness")
    }

    #[test]
    fn sealed_values_open_only_for_their_session_and_attribute() {
        let s = sealer(&[1]);
        let (a, b) = (id(), id());
        let value: &[u8] = b"caf\xc3\xa9 \xff";
        let sealed = s.seal(&a, "user", value).expect("seal");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(value.len()).any(|w| w == value));
        assert_eq!(s.open(&a, "user", &sealed).as_deref(), Some(value));
        assert_eq!(s.open(&b, "user", &sealed), None, "other session");
        assert_eq!(s.open(&a, "role", &sealed), None, "other attribute");
        let mut tampered = sealed.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(s.open(&a, "user", &tampered), None);
        for junk in [&b""[..], b"\x00\x01", b"\x00\x01short", b"plain"] {
            assert_eq!(s.open(&a, "user", junk), None);
        }
        assert_ne!(
            sealed,
            s.seal(&a, "user", value).expect("seal"),
            "fresh nonce"
        );
    }

    #[test]
    fn rotation_opens_with_older_keys_and_seals_with_the_newest() {
        let (old, rotated, retired) = (sealer(&[1]), sealer(&[2, 1]), sealer(&[2]));
        let a = id();
        let from_old = old.seal(&a, "user", b"alice").expect("seal");
        assert_eq!(
            rotated.open(&a, "user", &from_old).as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(retired.open(&a, "user", &from_old), None);
        let from_rotated = rotated.seal(&a, "user", b"bob").expect("seal");
        assert_eq!(
            retired.open(&a, "user", &from_rotated).as_deref(),
            Some(&b"bob"[..])
        );
    }

    #[test]
    fn records_of_the_wrong_kind_are_unreadable() {
        let s = sealer(&[1]);
        let a = id();
        let mut plain = Record::new(7);
        plain
            .attributes
            .insert("user".into(), Bytes::from_static(b"alice"));
        let sealed = s.seal_record(&a, &plain).expect("seal");
        assert_eq!(open_record(Some(&s), &a, sealed.clone()), Ok(plain.clone()));
        assert_eq!(open_record(None, &a, plain.clone()), Ok(plain.clone()));
        assert_eq!(
            open_record(None, &a, sealed.clone()),
            Err(Unreadable::SealedWithoutKeys)
        );
        assert_eq!(open_record(Some(&s), &a, plain), Err(Unreadable::Plain));
        assert_eq!(
            open_record(Some(&sealer(&[9])), &a, sealed),
            Err(Unreadable::NoKeyOpens)
        );
    }

    #[test]
    fn short_or_missing_keys_are_refused() {
        assert!(Sealer::new(&[]).is_err());
        assert!(Sealer::new(&[vec![0; 31]]).is_err());
        assert!(!format!("{:?}", sealer(&[7])).contains('7'));
    }
}
