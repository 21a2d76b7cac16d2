//! The request path, top to bottom, one phase per step:
//!
//! route → strip → resolve → inject → forward → apply updates → persist → respond
//!
//! `handle` never fails; `handle_inner` returns `Result` and every error becomes its response
//! in one place (`ProxyError::to_response`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::{CACHE_CONTROL, HOST, LOCATION, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::{debug, info, warn};

use crate::config::{OnUnavailable, SessionMode, SessionSettings, Settings};
use crate::error::{Origin, ProxyError};
use crate::redact::Redacted;
use crate::routing::{is_safe_path, Route, Router};
use crate::session::cookie;
use crate::session::id::SessionId;
use crate::session::persist::{persist, CookieChange};
use crate::session::record::Session;
use crate::session::resolve::resolve;
use crate::session::update::{take_update, Update};
use crate::store::{Store, StoreError};
use crate::upstream::body::{self, full, ProxyBody, Refusal, RetryableBody};
use crate::upstream::forwarded::TrustedProxies;
use crate::upstream::{forwarded, hop, UpstreamClient};

pub struct Proxy {
    router: Router,
    store: Store,
    upstream: UpstreamClient,
    session: SessionSettings,
    on_unavailable: OnUnavailable,
    trusted_proxies: TrustedProxies,
    /// `timeouts.body_idle`: how long a client may pause while sending a body.
    body_idle: Duration,
}

impl Proxy {
    pub fn new(settings: &Settings, store: Store) -> Proxy {
        Proxy {
            router: Router::new(&settings.routes),
            store,
            upstream: UpstreamClient::new(&settings.timeouts),
            session: settings.session.clone(),
            on_unavailable: settings.store.on_unavailable,
            trusted_proxies: settings.trusted_proxies.clone(),
            body_idle: settings.timeouts.body_idle,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves one request; never fails.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut seen = None;
        let result = self.handle_inner(request, peer, &mut seen).await;
        let session = self.session.fingerprints.show(seen.as_ref());
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                let cause = std::error::Error::source(&err)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                match err.origin() {
                    Origin::Client => debug!(%method, %path, %session, error = %err, "refused"),
                    _ => warn!(%method, %path, %session, error = %err, cause, "failed"),
                }
                err.to_response()
            }
        };
        info!(target: "stickless::access", %peer, %method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, %session);
        response
    }

    /// `seen` is the session the request was served with or issued, for the logs.
    async fn handle_inner(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        seen: &mut Option<SessionId>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // 1. Route.
        if !is_safe_path(request.uri().path()) {
            return Err(ProxyError::UnsafePath);
        }
        let route = self.router.route(&request).ok_or(ProxyError::NoRoute)?;
        if let Some(limit) = route.max_body_bytes {
            // Refused before anything is read or forwarded when the length is announced.
            let announced = request.headers().get(http::header::CONTENT_LENGTH);
            let length = announced.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if length.is_some_and(|length| length > limit) {
                return Err(Refusal::TooLarge.into());
            }
        }
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key(HOST) {
            // HTTP/2 carries the host in `:authority`; HTTP/1.1 backends need `Host`.
            if let Some(host) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(HOST, host);
            }
        }

        // 2. Strip: connection-level headers first, then every spelling of ours.
        hop::strip(&mut parts.headers);
        self.session.prefix.strip(&mut parts.headers);

        // 3. Resolve the session the cookie names.
        let (session, degraded) = match route.session {
            SessionMode::Off => (None, None),
            SessionMode::On | SessionMode::Required => self.resolve_session(&parts.headers).await?,
        };
        if let Some(session) = &session {
            *seen = Some(session.id.clone());
        }
        if route.session == SessionMode::Required && session.is_none() {
            return Ok(deny_anonymous(route));
        }

        // 4. Inject.
        if let Some(session) = &session {
            self.session.prefix.inject(&mut parts.headers, session);
        }
        forwarded::apply(&mut parts.headers, peer.ip(), &self.trusted_proxies);
        debug!(headers = ?self.redacted(&parts.headers), "to upstream");

        // 5. Forward.
        let body = RetryableBody::new(
            body,
            self.session.prefix.clone(),
            route.max_body_bytes,
            self.body_idle,
        );
        let watch = body.attempt();
        let response = match self.upstream.forward(&route.upstreams, parts, body).await {
            Ok(response) => response,
            // A body the proxy stopped reading is the client's failure, whatever the upstream
            // side made of it.
            Err(err) => return Err(watch.refusal().map_or_else(|| err.into(), ProxyError::Body)),
        };

        // 6. Apply updates: read the backend's control headers and remove them.
        let (mut head, body) = response.into_parts();
        debug!(status = head.status.as_u16(), headers = ?self.redacted(&head.headers), "from upstream");
        if has_both_framings(&head.headers) {
            return Err(ProxyError::AmbiguousResponse);
        }
        hop::strip(&mut head.headers);
        cookie::drop_backend_session_cookie(&mut head.headers, &self.session.cookie.name);
        let update = match route.session {
            SessionMode::Off => {
                self.session.prefix.strip(&mut head.headers);
                Update::default()
            }
            SessionMode::On | SessionMode::Required => {
                take_update(&mut head.headers, &self.session.prefix)
                    .map_err(ProxyError::BadUpdate)?
            }
        };

        // 7. Persist before a byte of the response leaves.
        if let Some(err) = degraded.filter(|_| !update.is_empty()) {
            return Err(ProxyError::Store(err));
        }
        let change = persist(&self.store, &self.session, session, &update).await?;

        // 8. Respond.
        let set_cookie = match change {
            CookieChange::Keep => None,
            CookieChange::Issue(id) => {
                let value = cookie::set_cookie(&self.session.cookie, &id);
                *seen = Some(id);
                value
            }
            CookieChange::Clear => cookie::clear_cookie(&self.session.cookie),
        };
        if let Some(value) = set_cookie {
            head.headers.append(SET_COOKIE, value);
            // A session id must never be stored by a shared cache and served to someone else.
            head.headers
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        Ok(Response::from_parts(
            head,
            body::from_backend(body, self.session.prefix.clone()),
        ))
    }

    fn redacted<'a>(&'a self, headers: &'a http::HeaderMap) -> Redacted<'a> {
        Redacted::new(headers, &self.session.prefix, &self.session.fingerprints)
    }

    /// A store failure on read follows `store.on_unavailable`: fail closed answers 503; fail
    /// open serves the request as anonymous and hands back the error, because nothing may be
    /// written for such a request: we do not know what its session holds, or whether it
    /// exists, so a logout or an update must not be reported as done.
    async fn resolve_session(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<(Option<Session>, Option<StoreError>), ProxyError> {
        let cookie = &self.session.cookie;
        let id = cookie::session_id(headers, &cookie.name, cookie.signer.as_ref());
        match resolve(&self.store, &self.session, id).await {
            Ok(session) => Ok((session, None)),
            Err(err) if self.on_unavailable == OnUnavailable::FailOpen => {
                warn!(error = %err, "session store unavailable; serving as anonymous (fail_open)");
                Ok((None, Some(err)))
            }
            Err(err) => Err(ProxyError::Store(err)),
        }
    }
}

/// A response framed by both `Content-Length` and `Transfer-Encoding`. RFC 9112 §6.1 lets a
/// recipient go by `Transfer-Encoding` alone, but then we may disagree with the backend about
/// where the response ends, and so about what the next one on that connection is: refused
/// (502) instead. (Requests need no check here: hyper drops the `Content-Length`, reads the
/// body as chunked and closes the connection after answering, so nothing that follows on it
/// is ever read.)
fn has_both_framings(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::CONTENT_LENGTH)
        && headers.contains_key(http::header::TRANSFER_ENCODING)
}

/// `session: required` without a live session: a redirect to the login page when the route
/// has one, otherwise 401.
fn deny_anonymous(route: &Route) -> Response<ProxyBody> {
    let location = route
        .login_url
        .as_deref()
        .and_then(|url| HeaderValue::from_str(url).ok());
    let (status, text) = match location {
        Some(_) => (StatusCode::FOUND, "302 Found\n"),
        None => (StatusCode::UNAUTHORIZED, "401 Unauthorized\n"),
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}
