//! The per-request context: what one request did (route, upstream, attempts, store time,
//! session outcome), filled in by the phases of `proxy`. When the response head is ready it
//! becomes a `Record`, carried by the response body (`LoggedBody`) to the log phase: the
//! access line and the metrics, written once the body has ended, however it ended.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use crate::metrics::{Ending, Lookup, Metrics, RouteMetrics};
use crate::report::chain;
use crate::session::fingerprint::Fingerprints;
use crate::session::id::SessionId;
use crate::session::persist::Change;
use crate::upstream::body::{Cut, ProxyBody};
use crate::upstream::Attempts;

/// Facts about the client connection a request came on, from the listener.
#[derive(Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Its place under `limits.max_connections`; none for connections outside the cap.
    pub slot: Option<ConnectionSlot>,
    /// The client connected over TLS to our listener (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

/// A client connection's place under `limits.max_connections` and its count in
/// `open_connections`. The listener holds it while hyper serves the connection, in the
/// connection's `Connection`; a request that becomes a tunnel takes a clone, because hyper's
/// connection future ends at the upgrade while the socket stays open.
/// The slot is given back when the last holder lets go.
#[derive(Clone)]
pub struct ConnectionSlot {
    _held: Arc<SlotHeld>,
}

struct SlotHeld {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl ConnectionSlot {
    pub fn new(permit: OwnedSemaphorePermit, open: Gauge) -> ConnectionSlot {
        open.inc();
        ConnectionSlot {
            _held: Arc::new(SlotHeld {
                _permit: permit,
                open,
            }),
        }
    }
}

impl Drop for SlotHeld {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Borrows from the configuration the request runs under (`'a`), so filling it in clones
/// nothing shared between threads.
pub struct RequestContext<'a> {
    pub started: Instant,
    pub request_id: HeaderValue,
    pub method: Method,
    /// The path without its query, which may carry tokens.
    pub path: String,
    pub peer: SocketAddr,
    /// The matched route, when one matched.
    pub route: Option<&'a RouteMetrics>,
    pub attempts: Attempts<'a>,
    /// Time spent waiting for upstreams, up to the response head.
    pub upstream_time: Option<Duration>,
    /// Time spent waiting for the store on the request path.
    pub store_time: Option<Duration>,
    pub lookup: Option<Lookup>,
    /// The session the request was served with, or the one its response issued.
    pub session: Option<SessionId>,
    pub change: Option<&'static str>,
    /// Why the request failed, when it did: the whole error chain.
    pub error: Option<String>,
    /// A relayed `101`: the tunnel to open once the head has gone, which takes over the
    /// access line.
    pub tunnel: Option<crate::tunnel::Pending>,
}

impl<'a> RequestContext<'a> {
    pub fn new(
        request_id: HeaderValue,
        method: Method,
        path: &str,
        connection: &Connection,
    ) -> RequestContext<'a> {
        RequestContext {
            started: Instant::now(),
            request_id,
            method,
            path: path.to_owned(),
            peer: connection.peer,
            route: None,
            attempts: Attempts::default(),
            upstream_time: None,
            store_time: None,
            lookup: None,
            session: None,
            change: None,
            error: None,
            tunnel: None,
        }
    }

    /// Adds the time since `since` to the store time.
    pub fn waited_for_store(&mut self, since: Instant) {
        let spent = since.elapsed();
        self.store_time = Some(self.store_time.unwrap_or_default() + spent);
    }

    /// Records what a response's update did.
    pub fn changed(&mut self, change: &Change, metrics: &Metrics) {
        self.change = match change {
            Change::None => None,
            Change::Updated => Some("updated"),
            Change::Created(id) => {
                metrics.sessions_created.inc();
                self.session = Some(id.clone());
                Some("created")
            }
            Change::Rotated(id) => {
                metrics.sessions_rotated.inc();
                self.session = Some(id.clone());
                Some("rotated")
            }
            Change::Invalidated { existed: true } => {
                metrics.sessions_invalidated.inc();
                Some("invalidated")
            }
            Change::Invalidated { existed: false } => Some("cleared"),
        };
    }

    /// The response head is ready: counts it, and keeps what the access line needs until its
    /// body has ended.
    pub fn answered(
        self,
        status: StatusCode,
        fingerprints: &Fingerprints,
        metrics: &Metrics,
    ) -> Record {
        let route = self.route.unwrap_or_else(|| metrics.unrouted()).clone();
        route.answered(status.as_u16(), self.started.elapsed(), self.store_time);
        if let Some(lookup) = self.lookup {
            route.looked_up(lookup);
        }
        Record {
            started: self.started,
            request_id: self.request_id,
            head_only: self.method == Method::HEAD
                || status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED,
            method: self.method,
            path: self.path,
            peer: self.peer,
            route,
            upstream: self.attempts.upstream.cloned(),
            attempts: self.attempts.count,
            upstream_time: self.upstream_time,
            store_time: self.store_time,
            session: self.session,
            fingerprints: fingerprints.clone(),
            change: self.change,
            error: self.error,
            status: status.as_u16(),
        }
    }
}

/// What the access line of a request needs once its response head has gone: owned, because
/// the body outlives the request handler.
pub struct Record {
    started: Instant,
    request_id: HeaderValue,
    method: Method,
    /// No body goes out whatever the response holds (HEAD, 1xx, 204, 304): hyper drops it
    /// unread, and that is a complete response.
    head_only: bool,
    path: String,
    peer: SocketAddr,
    route: RouteMetrics,
    upstream: Option<Authority>,
    attempts: u32,
    upstream_time: Option<Duration>,
    store_time: Option<Duration>,
    session: Option<SessionId>,
    fingerprints: Fingerprints,
    change: Option<&'static str>,
    error: Option<String>,
    status: u16,
}

impl Record {
    /// The log phase: the access line, and the count of responses cut short. `cause`: why
    /// the body ended early, when we know.
    fn write(self, ending: Ending, cause: Option<String>) {
        self.route.ended(ending);
        self.log(ending.as_str(), cause);
    }

    /// The log phase of an upgraded request, when its tunnel closes: the line then carries
    /// the tunnel's whole life as its duration, and why it closed as its outcome. Tunnels are
    /// counted by `tunnel`, not as responses cut short.
    pub fn tunnel_closed(self, outcome: &str, cause: Option<String>) {
        self.log(outcome, cause);
    }

    fn log(self, outcome: &str, cause: Option<String>) {
        let elapsed = self.started.elapsed();
        let error = match (&self.error, &cause) {
            (Some(error), _) => Some(error.as_str()),
            (None, Some(cause)) => Some(cause.as_str()),
            (None, None) => None,
        };
        info!(
            target: "stickless::access",
            request_id = %Text(self.request_id.to_str().unwrap_or("-")),
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            route = %Text(self.route.name()),
            upstream = %Text(self.upstream.as_ref().map_or("-", Authority::as_str)),
            attempts = self.attempts,
            status = self.status,
            outcome = %Text(outcome),
            duration_ms = ms(elapsed),
            upstream_ms = self.upstream_time.map_or(0.0, ms),
            store_ms = self.store_time.map_or(0.0, ms),
            session = %self.fingerprints.show(self.session.as_ref()),
            session_change = %Text(self.change.unwrap_or("-")),
            error = %Text(error.unwrap_or("-")),
            "request"
        );
    }
}

/// A response body that writes its request's access line when it ends: complete, cut short
/// by either side, or dropped by the connection. A status alone would call a truncated
/// download a success.
pub struct LoggedBody {
    body: ProxyBody,
    record: Option<Record>,
}

impl LoggedBody {
    pub fn new(body: ProxyBody, record: Record) -> LoggedBody {
        LoggedBody {
            body,
            record: Some(record),
        }
    }

    /// The body of a `101` whose record went to its tunnel, to be written when that closes.
    pub fn unlogged(body: ProxyBody) -> LoggedBody {
        LoggedBody { body, record: None }
    }

    /// The connection gave up on this response (see `listener`), before its end.
    pub fn abandon(&mut self, ending: Ending, cause: &str) {
        if let Some(record) = self.record.take() {
            if self.body.is_end_stream() || record.head_only {
                record.write(Ending::Complete, None);
            } else {
                let request_id = record.request_id.to_str().unwrap_or("-");
                debug!(request_id, cause, "response abandoned");
                record.write(ending, Some(cause.to_owned()));
            }
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.abandon(
            Ending::ClientGone,
            "the client went away before the response ended",
        );
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(record) = this.record.take() {
                    record.write(Ending::Complete, None);
                }
            }
            Poll::Ready(Some(Err(cut))) => {
                if let Some(record) = this.record.take() {
                    let cause = chain(cut);
                    let request_id = record.request_id.to_str().unwrap_or("-");
                    warn!(request_id, error = %cause, "response cut short");
                    let ending = match cut {
                        Cut::UpstreamIdle(_) => Ending::UpstreamIdle,
                        Cut::Upstream(_) => Ending::UpstreamFailed,
                    };
                    record.write(ending, Some(cause));
                }
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// A string field shown as is, without the quotes `?` would add in text logs.
struct Text<'a>(&'a str);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
