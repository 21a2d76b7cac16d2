//! The session id in a request header (`session.id_header`, e.g. `X-Auth-Token`), for API
//! clients that keep no cookie jar. The header carries exactly what the cookie would (the
//! bare id, or `<id>.<signature>` with signing keys) and follows the cookie's rules: anything
//! but a well-formed (and, when signing, correctly signed) id is "no session", without a store
//! round trip and never a 5xx.
//!
//! When the request has the header, it alone names the session, even if it names none that
//! lives: a client that sends a token means that token, and an old cookie next to it must not
//! quietly stand in for it.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::id::SessionId;
use super::signing::Signer;

/// Headers the id may not travel in: hop-by-hop ones (RFC 9110 §7.6.1), which never reach
/// the proxy's request handling intact; and the ones the proxy itself reads or writes
/// (routing, framing, the cookie, caching of session responses, request ids, forwarding),
/// which would then mean two things. `Authorization` is the application's own credential.
const RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
    "cookie",
    "set-cookie",
    "cache-control",
    "authorization",
    "location",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "retry-after",
    "origin",
    "vary",
];

/// The configured name, or why it cannot be one. `starts_with_prefix` tells whether it
/// belongs to the session header protocol (which is stripped and rebuilt by the proxy).
pub fn validate(
    raw: &str,
    starts_with_prefix: impl Fn(&HeaderName) -> bool,
) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| format!("`{raw}` is not a valid HTTP header name"))?;
    if starts_with_prefix(&name) {
        return Err(format!(
            "`{raw}` starts with session.header_prefix: those headers are the proxy's own"
        ));
    }
    let lower = name.as_str();
    if RESERVED.contains(&lower)
        || lower.starts_with("access-control-")
        || lower.starts_with("sec-")
    {
        return Err(format!(
            "`{raw}` is a hop-by-hop or reserved header; choose a name of your own, such as X-Auth-Token"
        ));
    }
    Ok(name)
}

/// Removes every `name` field from the request (the backend never sees it) and returns their
/// values; `None` when there was none.
pub fn take(headers: &mut HeaderMap, name: &HeaderName) -> Option<Vec<HeaderValue>> {
    match headers.entry(name) {
        http::header::Entry::Occupied(entry) => Some(entry.remove_entry_mult().1.collect()),
        http::header::Entry::Vacant(_) => None,
    }
}

/// The first well-formed (with a `signer`: correctly signed) id among the values.
pub fn session_id(values: &[HeaderValue], signer: Option<&Signer>) -> Option<SessionId> {
    values.iter().find_map(|value| {
        let value = value.as_bytes().trim_ascii();
        match signer {
            Some(signer) => signer.verify(value),
            None => SessionId::parse(value),
        }
    })
}

/// The response header value for a new or rotated id: what the cookie carries.
pub fn value(id: &SessionId, signer: Option<&Signer>) -> Option<HeaderValue> {
    let value = match signer {
        Some(signer) => signer.sign(id),
        None => id.as_str().to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::prefix::HeaderPrefix;

    fn check(raw: &str) -> Result<HeaderName, String> {
        let prefix = HeaderPrefix::default();
        validate(raw, |name| prefix.matches(name))
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(
            check("X-Auth-Token").map(|n| n.to_string()),
            Ok("x-auth-token".into())
        );
        for bad in [
            "X-Session-Token",
            "x_session_token",
            "Connection",
            "Transfer-Encoding",
            "Cookie",
            "Authorization",
            "Host",
            "X-Request-Id",
            "Access-Control-Allow-Origin",
            "bad name",
            "",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_follow_the_cookie_rules() {
        let id = SessionId::generate().expect("randomness");
        let signer = Signer::new(&[vec![7; 32]]).expect("signer");
        let bare = HeaderValue::from_str(id.as_str()).expect("value");
        let signed = value(&id, Some(&signer)).expect("value");
        assert_eq!(
            session_id(std::slice::from_ref(&bare), None),
            Some(id.clone())
        );
        assert_eq!(
            session_id(std::slice::from_ref(&bare), Some(&signer)),
            None,
            "unsigned"
        );
        assert_eq!(
            session_id(std::slice::from_ref(&signed), Some(&signer)),
            Some(id.clone())
        );
        let junk = HeaderValue::from_bytes(b"\xff\x80junk").expect("value");
        let big = HeaderValue::from_bytes(&[b'a'; 9000]).expect("value");
        assert_eq!(session_id(&[junk.clone(), big], None), None);
        assert_eq!(session_id(&[junk, bare], None), Some(id));
        assert_eq!(session_id(&[HeaderValue::from_static("")], None), None);
    }

    #[test]
    fn take_removes_every_field() {
        let name = HeaderName::from_static("x-auth-token");
        let mut h = HeaderMap::new();
        assert_eq!(take(&mut h, &name), None);
        h.append(&name, HeaderValue::from_static("a"));
        h.append(&name, HeaderValue::from_static("b"));
        assert_eq!(take(&mut h, &name).map(|v| v.len()), Some(2));
        assert!(h.is_empty());
    }
}
