//! The request path, top to bottom, one phase per step:
//!
//! route → strip → resolve → inject → forward → apply updates → persist → respond → log
//!
//! `handle` never fails; `handle_inner` returns `Result` and every error becomes its response
//! in one place (`ProxyError::to_response`). Each request takes the live configuration once
//! (`live`), and everything it did is gathered in its `RequestContext`; the log phase turns it
//! into the access line and the metrics when the response body has ended (`LoggedBody`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{CACHE_CONTROL, HOST, LOCATION, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::{debug, warn};

use crate::config::{OnUnavailable, SessionMode, Settings};
use crate::context::{Connection, LoggedBody, RequestContext};
use crate::error::{plain, status_line, Origin, ProxyError};
use crate::live::Live;
use crate::metrics::{Lookup, Metrics};
use crate::redact::Redacted;
use crate::report::chain;
use crate::request_id::{self, X_REQUEST_ID};
use crate::routing::{is_safe_path, Route};
use crate::session::cookie;
use crate::session::id_header;
use crate::session::persist::{persist, Change};
use crate::session::record::Session;
use crate::session::resolve::resolve;
use crate::session::update::{take_update, Update};
use crate::store::{Store, StoreError};
use crate::tunnel::{self, Tunnels};
use crate::upstream::body::{self, ProxyBody, Refusal, RetryableBody};
use crate::upstream::health::HealthRegistry;
use crate::upstream::{buffer, forwarded, hop, UpstreamClient};
use crate::worker::Worker;

/// The proxy: the live configuration, and what outlives reloads beside it.
pub struct Proxy {
    live: ArcSwap<Live>,
    store: Store,
    upstream: Arc<UpstreamClient>,
    health: HealthRegistry,
    metrics: Metrics,
    /// Open upgraded connections, and the sessions they keep alive.
    tunnels: Tunnels,
    /// Set when the drain starts: readiness then answers 503.
    draining: AtomicBool,
}

impl Proxy {
    /// Needs a Tokio runtime (health checks are started).
    pub fn new(settings: Settings, store: Store) -> Proxy {
        let mut metrics = Metrics::new(store.error_counter());
        if let Some(tls) = &settings.tls {
            metrics.register_tls();
            metrics.tls_certificate_expires(tls.not_after);
        }
        let health = HealthRegistry::new();
        let upstream = Arc::new(UpstreamClient::new(settings.timeouts.upstream_connect));
        let live = Live::new(settings, &metrics, &health, &upstream);
        let tunnels = Tunnels::new(store.clone(), metrics.tunnels());
        Proxy {
            live: ArcSwap::from_pointee(live),
            tunnels,
            store,
            upstream,
            health,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The pool for health checks; requests use their worker's (`Worker::upstream`).
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// The configuration new requests and connections get.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Makes `settings` the live configuration. Requests already running keep theirs.
    pub fn replace(&self, settings: Settings) {
        self.upstream
            .set_connect_timeout(settings.timeouts.upstream_connect);
        let live = Live::new(settings, &self.metrics, &self.health, &self.upstream);
        self.live.store(Arc::new(live));
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Serves one request; never fails.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        connection: &Connection,
        worker: &Worker,
    ) -> Response<LoggedBody> {
        let live = self.live.load_full();
        let mut ctx = RequestContext::new(
            request_id::take_or_make(request.headers()),
            request.method().clone(),
            request.uri().path(),
            connection,
        );
        let result = self
            .handle_inner(&live, request, connection, worker, &mut ctx)
            .await;
        let session = &live.settings.session;
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                let cause = chain(&err);
                if err.origin() != Origin::Client {
                    let request_id = ctx.request_id.to_str().unwrap_or("-");
                    let session = session.fingerprints.show(ctx.session.as_ref());
                    warn!(request_id, method = %ctx.method, path = %ctx.path, %session, error = %cause, "failed");
                }
                ctx.error = Some(cause);
                err.to_response()
            }
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID, ctx.request_id.clone());
        let tunnel = ctx.tunnel.take();
        let record = ctx.answered(response.status(), &session.fingerprints, &self.metrics);
        match tunnel {
            // The tunnel writes the access line when it closes.
            Some(tunnel) => {
                self.tunnels.open(tunnel, record);
                response.map(LoggedBody::unlogged)
            }
            None => response.map(|body| LoggedBody::new(body, record)),
        }
    }

    async fn handle_inner<'a>(
        &self,
        live: &'a Live,
        request: Request<Incoming>,
        connection: &Connection,
        worker: &Worker,
        ctx: &mut RequestContext<'a>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let settings = &live.settings;
        let session_settings = &settings.session;

        // 1. Route.
        if !is_safe_path(request.uri().path()) {
            return Err(ProxyError::UnsafePath);
        }
        let route = live.router.route(&request).ok_or(ProxyError::NoRoute)?;
        ctx.route = Some(&route.metrics);
        if let Some(limit) = route.body_limit() {
            // Refused before anything is read or forwarded when the length is announced.
            let announced = request.headers().get(http::header::CONTENT_LENGTH);
            let length = announced.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if length.is_some_and(|length| length > limit) {
                return Err(Refusal::TooLarge.into());
            }
        }
        let (mut parts, body) = request.into_parts();
        // HTTP/2's `:authority` and an absolute-form target name the host the request was
        // routed by; HTTP/1.1 backends learn it from `Host` (RFC 9112 §3.2.2: the target's
        // authority replaces any `Host` sent with it).
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, host);
        }

        // An HTTP/1.1 request asking to switch protocols, with hyper ready to hand over its
        // connection. (HTTP/2 has no `Upgrade`; RFC 8441's extended CONNECT is not served.)
        let upgrade = hop::upgrade_asked(&parts.headers)
            .filter(|_| parts.version == http::Version::HTTP_11)
            .and_then(|protocol| Some((protocol, parts.extensions.remove::<OnUpgrade>()?)));

        // 2. Strip: connection-level headers first, then every spelling of ours. An upgrade
        // keeps exactly its own two headers.
        hop::strip(&mut parts.headers);
        if let Some((protocol, _)) = &upgrade {
            hop::keep_upgrade(&mut parts.headers, protocol.clone());
        }
        session_settings.prefix.strip(&mut parts.headers);
        cookie::join_cookie_fields(&mut parts.headers);
        // The id header never reaches the backend, whatever the route (it gets `X-Session-Id`).
        let id_fields = session_settings
            .id_header
            .as_ref()
            .and_then(|name| id_header::take(&mut parts.headers, name));
        parts.headers.insert(X_REQUEST_ID, ctx.request_id.clone());

        // 3. Resolve the session the id header names, or else the cookie.
        let (session, degraded) = match route.session {
            SessionMode::Off => (None, None),
            SessionMode::On | SessionMode::Required => {
                self.resolve_session(&worker.store, settings, &parts.headers, id_fields, ctx)
                    .await?
            }
        };
        if let Some(session) = &session {
            ctx.session = Some(session.id.clone());
        }
        if route.session == SessionMode::Required && session.is_none() {
            return Ok(deny_anonymous(route));
        }

        // 4. Inject.
        if let Some(session) = &session {
            session_settings.prefix.inject(&mut parts.headers, session);
        }
        forwarded::apply(
            &mut parts.headers,
            connection.peer.ip(),
            connection.tls,
            &settings.trusted_proxies,
        );
        debug!(headers = ?redacted(live, &parts.headers), "to upstream");

        // 5. Forward. A route that buffers reads the whole body before it asks an upstream,
        // so that a slow client holds no backend worker meanwhile.
        let body = match &route.buffering {
            None => RetryableBody::new(
                body,
                session_settings.prefix.clone(),
                route.max_body_bytes,
                settings.timeouts.body_idle,
            ),
            Some(buffering) => {
                let idle = settings.timeouts.body_idle;
                let spilled = || route.metrics.body_spilled();
                let buffered =
                    buffer::collect(body, buffering, route.max_body_bytes, idle, spilled).await?;
                buffered.set_framing(&mut parts.headers);
                RetryableBody::buffered(buffered)
            }
        };
        let watch = body.attempt();
        let sent = Instant::now();
        let forwarded = worker
            .upstream
            .forward(
                &route.upstreams,
                parts,
                body,
                settings.timeouts.upstream_response,
                &mut ctx.attempts,
            )
            .await;
        ctx.upstream_time = Some(sent.elapsed());
        let response = match forwarded {
            Ok(response) => response,
            // A body the proxy stopped reading is the client's failure, and one it could not
            // read back from disk its own, whatever the upstream side made of it.
            Err(err) => return Err(watch.failure().map_or_else(|| err.into(), ProxyError::from)),
        };

        // 6. Apply updates: read the backend's control headers and remove them.
        let (mut head, body) = response.into_parts();
        debug!(status = head.status.as_u16(), headers = ?redacted(live, &head.headers), "from upstream");
        if has_both_framings(&head.headers) {
            return Err(ProxyError::AmbiguousResponse);
        }
        // A `101` relayed to a client that did not ask for an upgrade would leave it with a
        // protocol it never asked for (h2 clients call it an error; an h1 pipeline is lost).
        let switched = if head.status == StatusCode::SWITCHING_PROTOCOLS {
            let (Some((asked, client)), Some(backend)) =
                (upgrade, head.extensions.remove::<OnUpgrade>())
            else {
                return Err(ProxyError::UnaskedUpgrade);
            };
            let protocol = head.headers.get(http::header::UPGRADE).cloned();
            Some((protocol.unwrap_or(asked), client, backend))
        } else {
            None
        };
        hop::strip(&mut head.headers);
        if let Some((protocol, _, _)) = &switched {
            hop::keep_upgrade(&mut head.headers, protocol.clone());
        }
        cookie::drop_backend_session_cookie(&mut head.headers, &session_settings.cookie.name);
        if let Some(name) = &session_settings.id_header {
            // Only the proxy issues session ids, in the header as in the cookie.
            head.headers.remove(name);
        }
        let update = match route.session {
            SessionMode::Off => {
                session_settings.prefix.strip(&mut head.headers);
                Update::default()
            }
            SessionMode::On | SessionMode::Required => {
                take_update(&mut head.headers, &session_settings.prefix)
                    .map_err(ProxyError::BadUpdate)?
            }
        };

        // 7. Persist before a byte of the response leaves.
        if let Some(err) = degraded.filter(|_| !update.is_empty()) {
            return Err(ProxyError::Store(err));
        }
        let tunnel_session = session.as_ref().map(|s| s.id.clone());
        let change = if update.is_empty() {
            Change::None
        } else {
            let started = Instant::now();
            let persisted = persist(&worker.store, session_settings, session, &update).await;
            ctx.waited_for_store(started);
            persisted?
        };
        ctx.changed(&change, &self.metrics);
        if let Some((_, client, backend)) = switched {
            // The session as this `101`'s own update left it.
            let id = match &change {
                Change::None | Change::Updated => tunnel_session,
                Change::Created(id) | Change::Rotated(id) => Some(id.clone()),
                Change::Invalidated { .. } => None,
            };
            ctx.tunnel = Some(tunnel::Pending {
                client,
                backend,
                slot: connection.slot.clone(),
                session: id.map(|id| (id, session_settings.lifetime)),
                idle: settings.timeouts.tunnel_idle,
            });
        }

        // 8. Respond.
        let cookie_settings = &session_settings.cookie;
        let set_cookie = match &change {
            Change::None | Change::Updated => None,
            Change::Created(id) | Change::Rotated(id) => cookie::set_cookie(cookie_settings, id),
            Change::Invalidated { .. } => cookie::clear_cookie(cookie_settings),
        };
        if let Some(value) = set_cookie {
            head.headers.append(SET_COOKIE, value);
            // A session id must never be stored by a shared cache and served to someone else.
            head.headers
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let Some(name) = &session_settings.id_header {
            let signer = cookie_settings.signer.as_ref();
            let value = match &change {
                Change::None | Change::Updated => None,
                Change::Created(id) | Change::Rotated(id) => id_header::value(id, signer),
                Change::Invalidated { .. } => Some(HeaderValue::from_static("")),
            };
            if let Some(value) = value {
                head.headers.insert(name.clone(), value);
                head.headers
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        Ok(Response::from_parts(
            head,
            body::from_backend(
                body,
                session_settings.prefix.clone(),
                settings.timeouts.upstream_read_idle,
            ),
        ))
    }

    /// A store failure on read follows `store.on_unavailable`: fail closed answers 503; fail
    /// open serves the request as anonymous and hands back the error, because nothing may be
    /// written for such a request: we do not know what its session holds, or whether it
    /// exists, so a logout or an update must not be reported as done.
    ///
    /// `id_fields` are the request's id header fields, if it had any: then they alone name
    /// the session, even if they name none that lives.
    async fn resolve_session(
        &self,
        store: &Store,
        settings: &Settings,
        headers: &http::HeaderMap,
        id_fields: Option<Vec<HeaderValue>>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(Option<Session>, Option<StoreError>), ProxyError> {
        let cookie = &settings.session.cookie;
        let signer = cookie.signer.as_ref();
        let named = match id_fields {
            Some(fields) => id_header::session_id(&fields, signer),
            None => cookie::session_id(headers, &cookie.name, signer),
        };
        let Some(id) = named else {
            return Ok((None, None));
        };
        let started = Instant::now();
        let resolved = resolve(store, &settings.session, Some(id)).await;
        ctx.waited_for_store(started);
        match resolved {
            Ok(session) => {
                ctx.lookup = Some(if session.is_some() {
                    Lookup::Found
                } else {
                    Lookup::Missing
                });
                Ok((session, None))
            }
            Err(err) => {
                ctx.lookup = Some(Lookup::Unavailable);
                if settings.store.on_unavailable == OnUnavailable::FailOpen {
                    warn!(error = %chain(&err), "session store unavailable; serving as anonymous (fail_open)");
                    Ok((None, Some(err)))
                } else {
                    Err(ProxyError::Store(err))
                }
            }
        }
    }
}

fn redacted<'a>(live: &'a Live, headers: &'a http::HeaderMap) -> Redacted<'a> {
    let session = &live.settings.session;
    Redacted::new(headers, &session.prefix, &session.fingerprints)
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
    let status = match location {
        Some(_) => StatusCode::FOUND,
        None => StatusCode::UNAUTHORIZED,
    };
    let mut response = plain(status, status_line(status));
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}
