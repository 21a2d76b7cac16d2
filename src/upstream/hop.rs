//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and must not be
//! forwarded, nor may anything the `Connection` header names.

use http::header::{
    CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers and the ones `Connection` names. Runs before session headers are
/// injected, so naming an injected header in `Connection` cannot remove it. `Host` is never
/// removed: it names the resource, not the connection (RFC 9112 §3.2), and without it the
/// backend would see the upstream's address instead of the client's host.
pub fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.into_iter().filter(|name| name != HOST) {
        headers.remove(name);
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The protocol a request asks to switch to (RFC 9110 §7.8): an `Upgrade` header, with
/// `upgrade` among the `Connection` tokens. Read before `strip`, which removes both.
///
/// Protocols that would carry HTTP itself (`h2c`, `HTTP/…`, and `TLS/…`, RFC 2817) are never
/// asked for: through such a tunnel the client would send further requests straight to the
/// backend, past the stripping of forged session headers ("h2c smuggling"). Those requests
/// go on as plain requests, their `Upgrade` removed as before.
pub fn upgrade_asked(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let mut protocols = headers.get_all(UPGRADE).iter();
    let protocol = protocols.next()?;
    // One `Upgrade` line: a list spread over several lines is too odd to pass on.
    if !wants || protocols.next().is_some() {
        return None;
    }
    let carries_http = protocol.to_str().map_or(true, |list| {
        list.split(',').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p.is_empty() || p.starts_with("h2") || p.starts_with("http") || p.starts_with("tls")
        })
    });
    (!carries_http).then(|| protocol.clone())
}

/// Puts back exactly the upgrade headers after `strip`: `Upgrade: <protocol>` and
/// `Connection: upgrade`, nothing else the client's `Connection` named.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(UPGRADE, protocol);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn upgrade_needs_both_headers_and_no_http_inside() {
        let asked = |pairs| upgrade_asked(&headers(pairs));
        assert_eq!(
            asked(&[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket")
            ]),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(asked(&[("upgrade", "websocket")]), None);
        assert_eq!(asked(&[("connection", "upgrade")]), None);
        assert_eq!(
            asked(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            None
        );
        assert_eq!(
            asked(&[
                ("connection", "upgrade"),
                ("upgrade", "websocket, HTTP/2.0")
            ]),
            None
        );
        assert_eq!(
            asked(&[("connection", "upgrade"), ("upgrade", "TLS/1.0")]),
            None
        );
    }

    #[test]
    fn keeps_only_the_upgrade_headers() {
        let mut h = headers(&[
            ("connection", "Upgrade, X-Custom"),
            ("upgrade", "websocket"),
            ("x-custom", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        let protocol = upgrade_asked(&h).expect("asked");
        strip(&mut h);
        keep_upgrade(&mut h, protocol);
        let mut left: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                ("connection", "upgrade"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("upgrade", "websocket")
            ]
        );
    }

    #[test]
    fn removes_listed_and_named() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, X-Custom, x-session-user, Host"),
            ("host", "app.example.com"),
            ("keep-alive", "timeout=5"),
            ("x-custom", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip(&mut h);
        // Removal reorders a HeaderMap's keys; only which ones are left matters.
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "host"]);
    }
}
