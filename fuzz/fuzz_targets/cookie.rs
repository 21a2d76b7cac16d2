//! `session::cookie::session_id` on arbitrary `Cookie` headers, unsigned and signed.
//!
//! Input: one `Cookie` header value per line (`\n`); lines that are not valid header values
//! are skipped, as hyper would have refused them.

#![no_main]

use std::sync::OnceLock;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stickless::session::cookie::session_id;
use stickless::session::id::SessionId;
use stickless::session::signing::Signer;

/// Seeds under `fuzz/seeds/cookie/` that carry a valid signature were signed with this key.
fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::new(&[vec![7u8; 32]]).expect("a 32-byte key is valid"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check(data: &[u8], id: &SessionId) {
    let s = id.as_str();
    assert_eq!(s.len(), SessionId::LEN, "id length");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "id is not base64url"
    );
    assert!(
        contains(data, s.as_bytes()),
        "id does not appear in the input"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }

    let unsigned = session_id(&headers, "SESSION", None);
    if let Some(id) = &unsigned {
        check(data, id);
        // Round trip: what we sign, we verify, and only as the same id.
        let signed = signer().sign(id);
        assert_eq!(signer().verify(signed.as_bytes()).as_ref(), Some(id));
    }

    let signed = session_id(&headers, "SESSION", Some(signer()));
    if let Some(id) = &signed {
        check(data, id);
        assert_eq!(
            signer().verify(signer().sign(id).as_bytes()).as_ref(),
            Some(id)
        );
    }
});
