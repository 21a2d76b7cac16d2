//! The session header prefix and the two request-side operations on it: stripping whatever the
//! client sent, and injecting the resolved session.

use std::sync::Arc;

use http::header::TRAILER;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::record::Session;

/// The configured prefix (`X-Session-` by default), normalised once.
#[derive(Debug, Clone)]
pub struct HeaderPrefix {
    /// Lower-case, with `_` folded to `-`: the form every header name is compared in.
    normalized: Arc<str>,
    id_header: HeaderName,
}

impl Default for HeaderPrefix {
    fn default() -> Self {
        HeaderPrefix::new("X-Session-")
            .unwrap_or_else(|_| unreachable!("the default prefix is valid"))
    }
}

impl HeaderPrefix {
    pub fn new(raw: &str) -> Result<HeaderPrefix, String> {
        let normalized: String = raw
            .chars()
            .map(|c| {
                if c == '_' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        if normalized.is_empty() {
            return Err("must not be empty".into());
        }
        let id_header = HeaderName::from_bytes(format!("{normalized}id").as_bytes())
            .map_err(|_| format!("`{raw}` is not a valid HTTP header name prefix"))?;
        Ok(HeaderPrefix {
            normalized: normalized.into(),
            id_header,
        })
    }

    /// The normalised prefix, e.g. `x-session-`.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// Whether `name` belongs to the session protocol in any spelling: compared lower-case with
    /// `_` read as `-`, because several servers and frameworks (CGI, PHP, Django, Rack) fold
    /// `X_Session_User` and `X-Session-User` into the same variable.
    pub fn matches(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        let prefix = self.normalized.as_bytes();
        name.len() >= prefix.len()
            && name
                .iter()
                .zip(prefix)
                .all(|(n, p)| n.to_ascii_lowercase() == *p || (*n == b'_' && *p == b'-'))
    }

    /// If `name` is spelt exactly `<prefix><rest>` (lower-case, dashes), the rest. Backend
    /// control headers are recognised only in this canonical spelling; other spellings are
    /// removed and ignored.
    pub fn control_suffix<'n>(&self, name: &'n HeaderName) -> Option<&'n str> {
        name.as_str().strip_prefix(&*self.normalized)
    }

    /// Removes every header of the protocol, in any spelling. Fail closed: a client can never
    /// forge a session header, and a backend's stray ones never reach the client.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| self.matches(n))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
        if headers.contains_key(TRAILER) {
            self.strip_trailer_announcement(headers);
        }
    }

    /// `Trailer` announces trailer fields by name; ours are removed from trailers, so they are
    /// removed from the announcement too.
    fn strip_trailer_announcement(&self, headers: &mut HeaderMap) {
        let announced: Vec<String> = headers
            .get_all(TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .filter(|name| HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| !self.matches(&n)))
            .map(str::to_owned)
            .collect();
        headers.remove(TRAILER);
        if let Ok(value) = HeaderValue::from_str(&announced.join(", ")) {
            if !announced.is_empty() {
                headers.insert(TRAILER, value);
            }
        }
    }

    /// Adds `<prefix>Id` and one `<prefix><name>` per attribute. An attribute whose value cannot
    /// be a header value (a control byte written by some other program straight into Redis) is
    /// left out rather than failing the request.
    pub fn inject(&self, headers: &mut HeaderMap, session: &Session) {
        if let Ok(id) = HeaderValue::from_str(session.id.as_str()) {
            headers.insert(self.id_header.clone(), id);
        }
        for (name, value) in &session.record.attributes {
            let header = HeaderName::from_bytes(format!("{}{name}", self.normalized).as_bytes());
            match (header, HeaderValue::from_bytes(value)) {
                (Ok(header), Ok(value)) => {
                    headers.insert(header, value);
                }
                _ => {
                    tracing::warn!(attribute = %name, "attribute cannot be sent as a header; left out")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> HeaderName {
        HeaderName::from_bytes(s.as_bytes()).expect("valid header name")
    }

    #[test]
    fn every_spelling_matches() {
        let p = HeaderPrefix::default();
        for spelling in [
            "X-Session-User",
            "x_session_user",
            "X-SESSION-USER",
            "x-Session_id",
            "x_session-",
        ] {
            assert!(p.matches(&name(spelling)), "{spelling}");
        }
        for other in [
            "x-sessio",
            "x-sessionuser",
            "session-user",
            "x-forwarded-for",
        ] {
            assert!(!p.matches(&name(other)), "{other}");
        }
    }

    #[test]
    fn strip_removes_all_spellings_and_keeps_the_rest() {
        let p = HeaderPrefix::default();
        let mut h = HeaderMap::new();
        for spelling in ["X-Session-User", "x_session_user", "X-SESSION-ID", "accept"] {
            h.append(name(spelling), HeaderValue::from_static("v"));
        }
        p.strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn trailer_announcements_lose_our_names() {
        let p = HeaderPrefix::default();
        let mut h = HeaderMap::new();
        h.insert(
            TRAILER,
            HeaderValue::from_static("X-Session-Set-Role, X-Checksum, x_session_id"),
        );
        p.strip(&mut h);
        assert_eq!(h[TRAILER], "X-Checksum");
        h.insert(TRAILER, HeaderValue::from_static("X-Session-Invalidate"));
        p.strip(&mut h);
        assert!(!h.contains_key(TRAILER));
    }

    #[test]
    fn bad_prefix_is_rejected() {
        assert!(HeaderPrefix::new("").is_err());
        assert!(HeaderPrefix::new("X Session").is_err());
        assert_eq!(
            HeaderPrefix::new("X_App_").map(|p| p.as_str().to_owned()),
            Ok("x-app-".to_owned())
        );
    }
}
