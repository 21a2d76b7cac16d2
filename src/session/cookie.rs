//! The session cookie: finding our id in a request, and writing `Set-Cookie`.

use cookie::{Cookie, SameSite as CookieSameSite};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

use super::id::SessionId;
use super::signing::Signer;
use crate::config::{CookieSettings, SameSite};

/// Several `Cookie` fields become one, joined with `"; "`: HTTP/2 clients split cookies into
/// separate fields (RFC 9113 §8.2.3), and HTTP/1.1 backends expect a single line (PHP, for
/// one, reads only part of several).
pub fn join_cookie_fields(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for field in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(field.as_bytes());
    }
    // Each part was a valid field value, and "; " is too, so this cannot fail; if it did,
    // the fields are left as they came.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// The first well-formed session id among the request's cookies of our name.
///
/// Parsed on bytes rather than with the `cookie` crate, which needs `&str`: one non-UTF-8
/// cookie set by some other application must not make the whole header unreadable. Malformed,
/// oversized or unknown values are simply "no session" (never a 5xx).
///
/// With a `signer`, only values it vouches for count: a forged, guessed or unsigned id is "no
/// session" without a store round trip.
pub fn session_id(headers: &HeaderMap, name: &str, signer: Option<&Signer>) -> Option<SessionId> {
    let name = name.as_bytes();
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name).then(|| unquote(pair[eq + 1..].trim_ascii()))
        })
        .find_map(|value| match signer {
            Some(signer) => signer.verify(value),
            None => SessionId::parse(value),
        })
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

/// `Set-Cookie` for a session id: `Path=/`, `HttpOnly`, `Secure` and `SameSite` as configured.
/// No `Max-Age`: the browser keeps it for its session and the store decides when it expires,
/// so an idle or absolute timeout is enforced on the server, where a client cannot extend it.
pub fn set_cookie(settings: &CookieSettings, id: &SessionId) -> Option<HeaderValue> {
    let value = match &settings.signer {
        Some(signer) => signer.sign(id),
        None => id.as_str().to_owned(),
    };
    let cookie = base(settings, value);
    HeaderValue::from_str(&cookie.to_string()).ok()
}

/// `Set-Cookie` that makes the browser drop the session cookie (`Max-Age=0`).
pub fn clear_cookie(settings: &CookieSettings) -> Option<HeaderValue> {
    let mut cookie = base(settings, String::new());
    cookie.make_removal();
    HeaderValue::from_str(&cookie.to_string()).ok()
}

fn base(settings: &CookieSettings, value: String) -> Cookie<'static> {
    Cookie::build((settings.name.clone(), value))
        .path("/")
        .http_only(settings.http_only)
        .secure(settings.secure)
        .same_site(match settings.same_site {
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::None => CookieSameSite::None,
        })
        .build()
}

/// Drops the backend's own `Set-Cookie` for our cookie name: only the proxy issues session ids,
/// so a backend (or an attacker who controls one response) cannot fix a session.
pub fn drop_backend_session_cookie(headers: &mut HeaderMap, name: &str) {
    let ours = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        let end = bytes.iter().position(|b| *b == b'=').unwrap_or(bytes.len());
        bytes[..end].trim_ascii() == name.as_bytes()
    };
    if !headers.get_all(SET_COOKIE).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| !ours(v))
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for value in kept {
        headers.append(SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_cookie_fields_become_one_line() {
        let mut h = HeaderMap::new();
        join_cookie_fields(&mut h);
        assert!(h.is_empty());
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        join_cookie_fields(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        h.append(COOKIE, HeaderValue::from_static("b=2; c=3"));
        h.append(COOKIE, HeaderValue::from_static("SESSION=x"));
        join_cookie_fields(&mut h);
        let fields: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(fields, ["a=1; b=2; c=3; SESSION=x"]);
    }

    fn settings() -> CookieSettings {
        CookieSettings {
            name: "SESSION".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            signer: None,
        }
    }

    fn cookies(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).expect("value"));
        }
        h
    }

    #[test]
    fn finds_the_first_well_formed_id() {
        let id = SessionId::generate().expect("randomness");
        let line = format!("a=1; SESSION=junk; SESSION={}; b=\u{e9}", id.as_str());
        assert_eq!(
            session_id(&cookies(&[line.as_bytes()]), "SESSION", None),
            Some(id.clone())
        );
        let quoted = format!("SESSION=\"{}\"", id.as_str());
        assert_eq!(
            session_id(&cookies(&[b"x=\xff", quoted.as_bytes()]), "SESSION", None),
            Some(id)
        );
    }

    #[test]
    fn garbage_is_no_session() {
        let big = vec![b'a'; 8192];
        for v in [&b"SESSION="[..], b"SESSION", b"session=abc", b"=;;=", &big] {
            assert_eq!(session_id(&cookies(&[v]), "SESSION", None), None);
        }
    }

    #[test]
    fn set_cookie_has_the_attributes() {
        let id = SessionId::generate().expect("randomness");
        let v = set_cookie(&settings(), &id).expect("header");
        let s = v.to_str().expect("ascii");
        for part in ["Path=/", "HttpOnly", "Secure", "SameSite=Lax"] {
            assert!(s.contains(part), "{s}");
        }
        let cleared = clear_cookie(&settings()).expect("header");
        assert!(cleared.to_str().expect("ascii").contains("Max-Age=0"));
    }

    #[test]
    fn backend_session_cookies_are_dropped() {
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("SESSION=fixed; Path=/"),
        );
        h.append(SET_COOKIE, HeaderValue::from_static("theme=dark"));
        h.append(SET_COOKIE, HeaderValue::from_static(" SESSION =x"));
        drop_backend_session_cookie(&mut h, "SESSION");
        let left: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(left, [HeaderValue::from_static("theme=dark")]);
    }
}
