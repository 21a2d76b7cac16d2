//! `X-Request-Id`: the client's (or the load balancer's) when it is 1 to 128 visible ASCII
//! characters, otherwise one we make. The backend receives it, the client gets it back, and
//! the access log carries it, so one request can be followed across the fleet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 128;

/// The id to use for a request with these headers.
pub fn take_or_make(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|value| is_valid(value.as_bytes()))
        .cloned()
        .unwrap_or_else(make)
}

fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// 32 hex digits: a random per-process half, so ids from different instances never collide,
/// and a counter, so making one costs no system call.
fn make() -> HeaderValue {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without the OS's randomness, fall back to what differs between instances anyway.
        if getrandom::fill(&mut bytes).is_err() {
            let pid = u64::from(std::process::id());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            return pid.rotate_left(32) ^ now;
        }
        u64::from_le_bytes(bytes)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Hex by hand: this runs for every request that came without an id.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, byte) in process
        .to_be_bytes()
        .iter()
        .chain(&n.to_be_bytes())
        .enumerate()
    {
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_when_valid_made_otherwise() {
        let mut headers = HeaderMap::new();
        let made = take_or_make(&headers);
        assert_eq!(made.len(), 32);
        assert!(
            made.as_bytes().iter().all(u8::is_ascii_hexdigit),
            "{made:?}"
        );
        assert_ne!(made, take_or_make(&headers), "unique");
        for (given, kept) in [
            ("abc-123", true),
            (&"x".repeat(128), true),
            (&"x".repeat(129), false),
            ("has space", false),
            ("", false),
            ("caf\u{e9}", false),
        ] {
            headers.insert(
                X_REQUEST_ID,
                HeaderValue::from_bytes(given.as_bytes()).expect("header value"),
            );
            assert_eq!(take_or_make(&headers) == given, kept, "{given:?}");
        }
    }
}
