//! Session ids: 256 bits from the operating system's CSPRNG (OWASP Session Management Cheat
//! Sheet asks for at least 64 bits of entropy; the contract for at least 128), base64url without
//! padding. `uuid` v4 was not used: it carries only 122 random bits.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const RANDOM_BYTES: usize = 32;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// The length of every id we issue: 32 bytes in unpadded base64.
    pub const LEN: usize = 43;

    /// A fresh id. Fails only if the OS cannot provide randomness, in which case no session
    /// may be created at all (fail closed).
    pub fn generate() -> Result<SessionId, getrandom::Error> {
        let mut bytes = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(SessionId(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts exactly the shape we issue; anything else is "no session" without a store
    /// round trip, so garbage cookies cost nothing and never reach Redis.
    pub fn parse(raw: &[u8]) -> Option<SessionId> {
        let well_formed = raw.len() == Self::LEN
            && raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if !well_formed {
            return None;
        }
        std::str::from_utf8(raw)
            .ok()
            .map(|s| SessionId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids are bearer credentials: never print one, not even in debug output.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = SessionId::generate().expect("randomness");
        let b = SessionId::generate().expect("randomness");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), SessionId::LEN);
        assert_eq!(SessionId::parse(a.as_str().as_bytes()), Some(a));
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            &b""[..],
            b"short",
            &[b'a'; 44],
            &[b'a'; 42],
            "é".repeat(22).as_bytes(),
        ] {
            assert_eq!(SessionId::parse(bad), None);
        }
        let mut with_dot = [b'a'; 43];
        with_dot[3] = b'.';
        assert_eq!(SessionId::parse(&with_dot), None);
    }

    #[test]
    fn debug_never_shows_the_id() {
        let id = SessionId::generate().expect("randomness");
        assert!(!format!("{id:?}").contains(id.as_str()));
    }
}
