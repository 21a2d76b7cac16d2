//! The per-request context: what one request did (route, upstream, attempts, store time,
//! session outcome), filled in by the phases of `proxy` and written out in one place, the
//! `log` phase, as the access log line and the metrics.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};
use tracing::info;

use crate::metrics::{Lookup, Metrics, RouteMetrics};
use crate::session::fingerprint::Fingerprints;
use crate::session::id::SessionId;
use crate::session::persist::Change;
use crate::upstream::Attempts;

/// Facts about the client connection a request came on, from the listener.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
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

    /// The log phase: the access line and the metrics, once per request.
    pub fn log(&self, status: u16, fingerprints: &Fingerprints, metrics: &Metrics) {
        let elapsed = self.started.elapsed();
        let route = self.route.unwrap_or_else(|| metrics.unrouted());
        route.answered(status, elapsed, self.store_time);
        if let Some(lookup) = self.lookup {
            route.looked_up(lookup);
        }
        let upstream = self.attempts.upstream.map(|a| a.as_str());
        info!(
            target: "stickless::access",
            request_id = %Text(self.request_id.to_str().unwrap_or("-")),
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            route = %Text(route.name()),
            upstream = %Text(upstream.unwrap_or("-")),
            attempts = self.attempts.count,
            status,
            duration_ms = ms(elapsed),
            upstream_ms = self.upstream_time.map_or(0.0, ms),
            store_ms = self.store_time.map_or(0.0, ms),
            session = %fingerprints.show(self.session.as_ref()),
            session_change = %Text(self.change.unwrap_or("-")),
            error = %Text(self.error.as_deref().unwrap_or("-")),
            "request"
        );
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
