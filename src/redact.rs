//! What debug logs may show of headers: names always; values except where they are secrets
//! or user data. `Cookie`, `Set-Cookie`, `Authorization` and `Proxy-Authorization` keep only
//! their shape (cookie names, the auth scheme); the session id header shows its fingerprint;
//! session attributes show only their length.

use std::fmt;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::session::fingerprint::Fingerprints;
use crate::session::prefix::HeaderPrefix;

/// `Debug` of a header map, redacted; for `debug!(headers = ?Redacted::new(...))`.
pub struct Redacted<'a> {
    headers: &'a HeaderMap,
    prefix: &'a HeaderPrefix,
    fingerprints: &'a Fingerprints,
}

impl<'a> Redacted<'a> {
    pub fn new(
        headers: &'a HeaderMap,
        prefix: &'a HeaderPrefix,
        fingerprints: &'a Fingerprints,
    ) -> Redacted<'a> {
        Redacted {
            headers,
            prefix,
            fingerprints,
        }
    }

    fn value(&self, name: &HeaderName, value: &HeaderValue) -> String {
        let bytes = value.as_bytes();
        if name == COOKIE {
            return cookie_names(bytes, "; ");
        }
        if name == SET_COOKIE {
            // The attributes after the first `;` (Path, Max-Age, ...) are not secret.
            let (pair, attributes) = match bytes.iter().position(|b| *b == b';') {
                Some(at) => bytes.split_at(at),
                None => (bytes, &b""[..]),
            };
            return format!(
                "{}{}",
                cookie_names(pair, ""),
                String::from_utf8_lossy(attributes)
            );
        }
        if name == AUTHORIZATION || name == PROXY_AUTHORIZATION {
            let scheme = bytes.split(|b| *b == b' ').next().unwrap_or_default();
            return format!("{} <redacted>", String::from_utf8_lossy(scheme));
        }
        if self.prefix.matches(name) {
            if self.prefix.control_suffix(name) == Some("id") {
                return format!("<session {}>", self.fingerprints.of(bytes));
            }
            return format!("<{} bytes>", bytes.len());
        }
        String::from_utf8_lossy(bytes).into_owned()
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), self.value(name, value))),
            )
            .finish()
    }
}

/// `a=<redacted>; b=<redacted>`: which cookies were there, not what they hold.
fn cookie_names(bytes: &[u8], separator: &str) -> String {
    bytes
        .split(|b| *b == b';')
        .filter_map(|pair| {
            let name = pair.split(|b| *b == b'=').next()?.trim_ascii();
            (!name.is_empty()).then(|| format!("{}=<redacted>", String::from_utf8_lossy(name)))
        })
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_session_data_never_show() {
        let mut headers = HeaderMap::new();
        let secrets = [
            ("cookie", "SESSION=s3cr3t-id; theme=dark-secret"),
            ("set-cookie", "SESSION=n3w-id; Path=/; HttpOnly"),
            ("authorization", "Bearer tok-3n"),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("x-session-id", "the-session-id"),
            ("x-session-user", "alice@example.com"),
        ];
        for (name, value) in secrets {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers.insert("accept", HeaderValue::from_static("text/html"));
        let fingerprints = Fingerprints::keyed(&[1; 32]);
        let prefix = HeaderPrefix::default();
        let shown = format!("{:?}", Redacted::new(&headers, &prefix, &fingerprints));
        for leaked in [
            "s3cr3t",
            "dark",
            "n3w",
            "tok-3n",
            "dXNl",
            "the-session-id",
            "alice",
        ] {
            assert!(!shown.contains(leaked), "{leaked} in {shown}");
        }
        for kept in [
            "SESSION=<redacted>; theme=<redacted>",
            "SESSION=<redacted>; Path=/; HttpOnly",
            "Bearer <redacted>",
            "Basic <redacted>",
            &fingerprints.of(b"the-session-id"),
            "<17 bytes>",
            "text/html",
        ] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
    }
}
