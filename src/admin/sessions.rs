//! The admin session API: read or end a session by id, list or end a principal's sessions.
//!
//! - Only with `admin.token_file` (otherwise these paths answer 404 as if they did not exist),
//!   and only with `Authorization: Bearer <token>`; anything else answers 401. The token is
//!   the live configuration's, so a reload that re-reads the file changes it at once.
//! - Tokens are compared as SHA-256 digests, byte by byte without an early exit, so the time
//!   taken says nothing about how much of a guess was right (OWASP: "compare secrets in
//!   constant time"); hashing first also hides the token's length.
//! - Every call is logged with the caller's address, the operation and its status; never the
//!   token, and session ids only as their fingerprints (they are bearer credentials).
//! - Malformed ids are 404 (they cannot name a session); a store that does not answer is 503.

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::config::{AdminToken, Settings};
use crate::error::plain as text;
use crate::proxy::Proxy;
use crate::session::id::SessionId;
use crate::session::lifetime::now_millis;
use crate::session::persist::principal_of;
use crate::session::sealing::open_record;
use crate::store::{Principal, SessionStore, StoreError};
use crate::upstream::body::{full, ProxyBody};

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Call<'p> {
    /// `/sessions/<id>`, the id as written.
    Session(&'p str),
    /// `/principals/<value>/sessions`, the value still percent-encoded.
    Principal(&'p str),
}

/// Which session API path this is, if any.
pub fn route(path: &str) -> Option<Call<'_>> {
    if let Some(id) = path.strip_prefix("/sessions/") {
        return Some(Call::Session(id));
    }
    let value = path
        .strip_prefix("/principals/")?
        .strip_suffix("/sessions")?;
    Some(Call::Principal(value))
}

pub async fn answer<B>(
    proxy: &Proxy,
    request: &Request<B>,
    call: Call<'_>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let live = proxy.live();
    let settings = &live.settings;
    let method = request.method().clone();
    let Some(token) = settings.admin.as_ref().and_then(|a| a.token.as_ref()) else {
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    let (op, response) = if !authorized(request.headers().get(AUTHORIZATION), token) {
        let mut response = text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        ("unauthorized".to_owned(), response)
    } else {
        match call {
            Call::Session(raw) => {
                let id = SessionId::parse(raw.as_bytes());
                let shown = settings.session.fingerprints.show(id.as_ref()).to_string();
                let response = match (&method, id) {
                    (_, None) if method == Method::GET || method == Method::DELETE => not_found(),
                    (&Method::GET, Some(id)) => outcome(read_session(proxy, settings, &id).await),
                    (&Method::DELETE, Some(id)) => outcome(end_session(proxy, settings, &id).await),
                    _ => not_allowed(),
                };
                (format!("session {shown}"), response)
            }
            Call::Principal(raw) => {
                let value = Bytes::from(percent_decode_str(raw).collect::<Vec<u8>>());
                let principal = Principal::new(value);
                let response = if settings.session.principal_attribute.is_none()
                    || principal.value.is_empty()
                {
                    not_found()
                } else if method == Method::GET {
                    outcome(list(proxy, &principal).await)
                } else if method == Method::DELETE {
                    outcome(
                        proxy
                            .store()
                            .end_all(&principal)
                            .await
                            .map(|_| no_content()),
                    )
                } else {
                    not_allowed()
                };
                // The tag, not the value: a user name is personal data.
                (format!("principal {}", principal.tag), response)
            }
        }
    };
    info!(%peer, %method, subject = %op, status = response.status().as_u16(), "admin session API");
    response
}

/// Fail closed: no header, another scheme, or another token is 401.
fn authorized(header: Option<&HeaderValue>, token: &AdminToken) -> bool {
    let Some(given) = header
        .map(HeaderValue::as_bytes)
        .and_then(|h| h.strip_prefix(b"Bearer "))
    else {
        return false;
    };
    constant_time_eq(&Sha256::digest(given), &Sha256::digest(token.0.as_bytes()))
}

/// Equal-length digests compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn outcome(result: Result<Response<ProxyBody>, StoreError>) -> Response<ProxyBody> {
    result.unwrap_or_else(|err| {
        tracing::warn!(error = %crate::report::chain(&err), "admin session API: the store failed");
        text(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n")
    })
}

fn not_found() -> Response<ProxyBody> {
    text(StatusCode::NOT_FOUND, "404 Not Found\n")
}

fn not_allowed() -> Response<ProxyBody> {
    text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n")
}

fn no_content() -> Response<ProxyBody> {
    let mut response = text(StatusCode::NO_CONTENT, "");
    response.headers_mut().remove(CONTENT_TYPE);
    response
}

fn json_response(value: &Value) -> Response<ProxyBody> {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// The session as the proxy would serve it: opened when sealed; 404 for one it would serve
/// as no session (past its absolute deadline, or unreadable with the configured keys).
async fn read_session(
    proxy: &Proxy,
    settings: &Settings,
    id: &SessionId,
) -> Result<Response<ProxyBody>, StoreError> {
    let Some(loaded) = proxy.store().load(id).await? else {
        return Ok(not_found());
    };
    let session = &settings.session;
    if session
        .lifetime
        .ttl(loaded.record.created, now_millis())
        .is_none()
    {
        return Ok(not_found());
    }
    let Ok(record) = open_record(session.sealer.as_ref(), id, loaded.record) else {
        return Ok(not_found());
    };
    let attributes: Map<String, Value> = record
        .attributes
        .iter()
        .map(|(name, value)| (name.clone(), shown(value)))
        .collect();
    let expires_in_ms = u64::try_from(loaded.ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(json_response(&json!({
        "id": id.as_str(),
        "attributes": attributes,
        "expires_in_ms": expires_in_ms,
    })))
}

/// A value as JSON: a string when it is UTF-8 (every value a backend sends as a plain
/// header), otherwise `{"base64": "…"}` with its bytes in standard base64.
fn shown(value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": STANDARD.encode(value) }),
    }
}

/// Reads the session first, for the principal its index and its event need.
async fn end_session(
    proxy: &Proxy,
    settings: &Settings,
    id: &SessionId,
) -> Result<Response<ProxyBody>, StoreError> {
    let store = proxy.store();
    let principal = store.load(id).await?.and_then(|loaded| {
        open_record(settings.session.sealer.as_ref(), id, loaded.record)
            .ok()
            .and_then(|record| principal_of(&settings.session, &record))
    });
    Ok(if store.delete(id, principal.as_ref()).await? {
        no_content()
    } else {
        not_found()
    })
}

async fn list(proxy: &Proxy, principal: &Principal) -> Result<Response<ProxyBody>, StoreError> {
    let ids = proxy.store().sessions_of(principal).await?;
    let ids: Vec<&str> = ids.iter().map(SessionId::as_str).collect();
    Ok(json_response(&json!(ids)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/sessions/abc"), Some(Call::Session("abc")));
        assert_eq!(
            route("/principals/a%2Fb/sessions"),
            Some(Call::Principal("a%2Fb"))
        );
        assert_eq!(route("/principals/a"), None);
        assert_eq!(route("/metrics"), None);
    }

    #[test]
    fn bearer_tokens() {
        let token = AdminToken("0123456789abcdef".into());
        let header = |v: &str| HeaderValue::from_str(v).expect("header");
        assert!(authorized(Some(&header("Bearer 0123456789abcdef")), &token));
        for bad in [
            "Bearer 0123456789abcdeF",
            "Basic 0123456789abcdef",
            "Bearer ",
            "",
        ] {
            assert!(!authorized(Some(&header(bad)), &token), "{bad}");
        }
        assert!(!authorized(None, &token));
    }

    #[test]
    fn values_are_strings_or_base64() {
        assert_eq!(shown(b"alice"), json!("alice"));
        assert_eq!(shown(b"\xff\x00"), json!({"base64": "/wA="}));
    }
}
