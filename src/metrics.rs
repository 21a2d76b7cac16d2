//! Prometheus metrics: every family registered once at start-up, in one registry that
//! outlives reloads, and handles taken up front so that the request path only touches
//! atomics (and a histogram's own short lock), never a map of label sets.
//!
//! No label ever holds a session id, cookie or attribute value: labels are route names,
//! status codes, upstream addresses and fixed words.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of what `encode` writes (the Prometheus text format, 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteResult {
    route: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReason {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamReason {
    upstream: String,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latencies: from half a millisecond (a proxied hit on a warm pool) to a minute
/// (the default upstream response timeout).
fn request_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ])
}

/// Store time per request: a round trip is well under a millisecond on a healthy network;
/// the top buckets show timeouts (500 ms by default).
fn store_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ])
}

/// `open_tunnels` and `tunnels_closed_total{reason}`.
#[derive(Clone)]
pub struct TunnelMetrics {
    pub open: Gauge,
    closed: Family<ReasonLabel, Counter>,
}

impl TunnelMetrics {
    /// A tunnel closed; `reason` is one of a fixed set of words (`tunnel::Closed`).
    pub fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Every family, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteCode, Counter>,
    durations: HistogramFamily<RouteLabel>,
    store_durations: HistogramFamily<RouteLabel>,
    lookups: Family<RouteResult, Counter>,
    incomplete: Family<RouteReason, Counter>,
    bodies_spilled: Family<RouteLabel, Counter>,
    pub sessions_created: Counter,
    pub sessions_rotated: Counter,
    pub sessions_invalidated: Counter,
    pub open_connections: Gauge,
    /// Upgraded connections (WebSocket) open now.
    pub open_tunnels: Gauge,
    tunnels_closed: Family<ReasonLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    pub store_up: Gauge,
    upstream_up: Family<UpstreamLabel, Gauge>,
    upstream_failures: Family<UpstreamReason, Counter>,
    upstream_ejections: Family<UpstreamLabel, Counter>,
    /// With `tls`: handshakes that failed (`error`) or did not finish in time (`timeout`).
    tls_handshake_failures: Family<ReasonLabel, Counter>,
    /// With `tls`: the served certificate's notAfter (Unix seconds).
    tls_certificate_expiry: Gauge,
    /// Requests that matched no route, made on first use so that a proxy that never sees
    /// one shows no series for them.
    unrouted: OnceLock<RouteMetrics>,
}

/// The `route` label of requests that matched no route.
pub const UNROUTED: &str = "-";

impl Metrics {
    /// `store_errors` is the store's own counter: every failed store operation counts,
    /// including those off the request path (sliding extensions).
    pub fn new(store_errors: Counter) -> Metrics {
        let mut registry = Registry::with_prefix("stickless");
        let requests = Family::<RouteCode, Counter>::default();
        let durations: HistogramFamily<RouteLabel> = Family::new_with_constructor(request_buckets);
        let store_durations: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(store_buckets);
        let lookups = Family::<RouteResult, Counter>::default();
        let incomplete = Family::<RouteReason, Counter>::default();
        let bodies_spilled = Family::<RouteLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let upstream_up = Family::<UpstreamLabel, Gauge>::default();
        let upstream_failures = Family::<UpstreamReason, Counter>::default();
        let upstream_ejections = Family::<UpstreamLabel, Counter>::default();
        let metrics = Metrics {
            requests: requests.clone(),
            durations: durations.clone(),
            store_durations: store_durations.clone(),
            lookups: lookups.clone(),
            incomplete: incomplete.clone(),
            bodies_spilled: bodies_spilled.clone(),
            sessions_created: Counter::default(),
            sessions_rotated: Counter::default(),
            sessions_invalidated: Counter::default(),
            open_connections: Gauge::default(),
            open_tunnels: Gauge::default(),
            tunnels_closed: Family::default(),
            reloads: reloads.clone(),
            store_up: Gauge::default(),
            upstream_up: upstream_up.clone(),
            upstream_failures: upstream_failures.clone(),
            upstream_ejections: upstream_ejections.clone(),
            tls_handshake_failures: Family::default(),
            tls_certificate_expiry: Gauge::default(),
            unrouted: OnceLock::new(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by route and status code",
            requests,
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the response head, by route",
            durations,
        );
        registry.register(
            "store_duration_seconds",
            "Store time on the critical path of a request that used the store, by route",
            store_durations,
        );
        registry.register(
            "session_lookups",
            "Session cookies resolved, by route and result (found, missing, unavailable)",
            lookups,
        );
        registry.register(
            "responses_incomplete",
            "Responses whose body did not reach its end, by route and reason (upstream_idle, upstream_failed, client_stalled, client_gone)",
            incomplete,
        );
        registry.register(
            "request_bodies_spilled",
            "Request bodies buffered past memory_bytes into a temporary file, by route",
            bodies_spilled,
        );
        registry.register(
            "store_errors",
            "Store operations that failed or timed out",
            store_errors,
        );
        registry.register(
            "sessions_created",
            "Sessions created",
            metrics.sessions_created.clone(),
        );
        registry.register(
            "sessions_rotated",
            "Sessions given a new id",
            metrics.sessions_rotated.clone(),
        );
        registry.register(
            "sessions_invalidated",
            "Sessions ended by a backend",
            metrics.sessions_invalidated.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open on the proxy listener",
            metrics.open_connections.clone(),
        );
        registry.register(
            "open_tunnels",
            "Upgraded connections (WebSocket) open on the proxy listener",
            metrics.open_tunnels.clone(),
        );
        registry.register(
            "tunnels_closed",
            "Upgraded connections closed, by reason",
            metrics.tunnels_closed.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result",
            reloads,
        );
        registry.register(
            "store_up",
            "1 when the last store ping (every 5 s with an admin listener, and on each /readyz) answered within store.timeout, else 0",
            metrics.store_up.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while an upstream is in rotation, 0 while it is skipped after failures",
            upstream_up,
        );
        registry.register(
            "upstream_failures",
            "Connect failures and timeouts, by upstream and reason",
            upstream_failures,
        );
        registry.register(
            "upstream_ejections",
            "Times an upstream was taken out of rotation",
            upstream_ejections,
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build);
        // Both failure results are shown from the start, so an alert on them has a series.
        for result in ["success", "failure"] {
            let _ = metrics.reloads.get_or_create(&ResultLabel { result });
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The whole registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Registers the TLS families: only a proxy that serves HTTPS shows them, so that an alert
    /// on the expiry (`expiry - time() < 14 days`) never fires on a plain listener's zero.
    /// Turning TLS on or off needs a restart, so this is decided once.
    pub fn register_tls(&mut self) {
        self.registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the proxy listener that failed (error) or did not finish within timeouts.tls_handshake (timeout)",
            self.tls_handshake_failures.clone(),
        );
        for reason in ["error", "timeout"] {
            let _ = self
                .tls_handshake_failures
                .get_or_create(&ReasonLabel { reason });
        }
        self.registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate new TLS handshakes get, as Unix time (updated on reload)",
            self.tls_certificate_expiry.clone(),
        );
    }

    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn tls_certificate_expires(&self, not_after: i64) {
        self.tls_certificate_expiry.set(not_after);
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The handles of one route, made when a configuration is loaded.
    /// The handles tunnels update, which outlive the request that opened them.
    pub fn tunnels(&self) -> TunnelMetrics {
        TunnelMetrics {
            open: self.open_tunnels.clone(),
            closed: self.tunnels_closed.clone(),
        }
    }

    pub fn route(&self, name: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: name.to_owned(),
        };
        let lookup = |result| {
            self.lookups
                .get_or_create(&RouteResult {
                    route: name.to_owned(),
                    result,
                })
                .clone()
        };
        let incomplete = |reason: Ending| {
            self.incomplete
                .get_or_create(&RouteReason {
                    route: name.to_owned(),
                    reason: reason.as_str(),
                })
                .clone()
        };
        RouteMetrics(Arc::new(RouteHandles {
            name: name.into(),
            codes: std::iter::repeat_with(OnceLock::new).take(CODES).collect(),
            requests: self.requests.clone(),
            duration: self.durations.get_or_create(&label).clone(),
            store_duration: self.store_durations.get_or_create(&label).clone(),
            found: lookup("found"),
            missing: lookup("missing"),
            unavailable: lookup("unavailable"),
            incomplete: Ending::CUT.map(incomplete),
            spilled: self.bodies_spilled.get_or_create(&label).clone(),
        }))
    }

    pub fn unrouted(&self) -> &RouteMetrics {
        self.unrouted.get_or_init(|| self.route(UNROUTED))
    }

    /// The handles of one upstream address.
    pub fn upstream(&self, authority: &str) -> UpstreamMetrics {
        let label = UpstreamLabel {
            upstream: authority.to_owned(),
        };
        let failure = |reason| {
            self.upstream_failures
                .get_or_create(&UpstreamReason {
                    upstream: authority.to_owned(),
                    reason,
                })
                .clone()
        };
        let up = self.upstream_up.get_or_create(&label).clone();
        up.set(1);
        UpstreamMetrics {
            up,
            refused: failure("refused"),
            connect_timeout: failure("connect_timeout"),
            response_timeout: failure("response_timeout"),
            check_failed: failure("check_failed"),
            ejections: self.upstream_ejections.get_or_create(&label).clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

/// Status codes 100 to 599.
const CODES: usize = 500;

/// One route's handles; cheap to clone.
#[derive(Clone)]
pub struct RouteMetrics(Arc<RouteHandles>);

struct RouteHandles {
    name: Arc<str>,
    /// The counter of each status code, made on its first use: a route's series are the codes
    /// it answered, and after the first the request path takes no lock.
    codes: Box<[OnceLock<Counter>]>,
    requests: Family<RouteCode, Counter>,
    duration: Histogram,
    store_duration: Histogram,
    found: Counter,
    missing: Counter,
    unavailable: Counter,
    /// One counter per `Ending::CUT`, in that order.
    incomplete: [Counter; 4],
    spilled: Counter,
}

/// How a response's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    /// The backend paused longer than `timeouts.upstream_read_idle`.
    UpstreamIdle,
    /// The backend's body broke off (closed early, malformed chunk).
    UpstreamFailed,
    /// The client took no bytes for `timeouts.client_write_idle`.
    ClientStalled,
    /// The client closed its connection or reset the stream first.
    ClientGone,
}

impl Ending {
    pub const CUT: [Ending; 4] = [
        Ending::UpstreamIdle,
        Ending::UpstreamFailed,
        Ending::ClientStalled,
        Ending::ClientGone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::UpstreamIdle => "upstream_idle",
            Ending::UpstreamFailed => "upstream_failed",
            Ending::ClientStalled => "client_stalled",
            Ending::ClientGone => "client_gone",
        }
    }
}

/// How the session cookie of a request resolved, for the lookup counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found,
    Missing,
    Unavailable,
}

impl RouteMetrics {
    pub fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    pub fn answered(&self, code: u16, elapsed: Duration, store: Option<Duration>) {
        let handles = &self.0;
        let counter = usize::from(code)
            .checked_sub(100)
            .and_then(|i| handles.codes.get(i))
            .map(|slot| {
                slot.get_or_init(|| {
                    handles
                        .requests
                        .get_or_create(&RouteCode {
                            route: handles.name.to_string(),
                            code,
                        })
                        .clone()
                })
            });
        if let Some(counter) = counter {
            counter.inc();
        }
        handles.duration.observe(elapsed.as_secs_f64());
        if let Some(store) = store {
            handles.store_duration.observe(store.as_secs_f64());
        }
    }

    /// Counts a response whose body did not reach its end.
    pub fn ended(&self, ending: Ending) {
        if let Some(i) = Ending::CUT.iter().position(|&cut| cut == ending) {
            self.0.incomplete[i].inc();
        }
    }

    /// A buffered request body outgrew `memory_bytes` and went to a temporary file.
    pub fn body_spilled(&self) {
        self.0.spilled.inc();
    }

    pub fn looked_up(&self, lookup: Lookup) {
        match lookup {
            Lookup::Found => self.0.found.inc(),
            Lookup::Missing => self.0.missing.inc(),
            Lookup::Unavailable => self.0.unavailable.inc(),
        };
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteMetrics({})", self.0.name)
    }
}

/// One upstream's handles.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    pub up: Gauge,
    pub refused: Counter,
    pub connect_timeout: Counter,
    pub response_timeout: Counter,
    pub check_failed: Counter,
    pub ejections: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_as_the_contract_says() {
        let metrics = Metrics::new(Counter::default());
        let route = metrics.route("app");
        route.answered(200, Duration::from_millis(3), None);
        route.answered(
            200,
            Duration::from_millis(3),
            Some(Duration::from_micros(300)),
        );
        route.answered(503, Duration::from_millis(3), None);
        route.answered(42, Duration::from_millis(3), None);
        route.ended(Ending::Complete);
        route.ended(Ending::UpstreamIdle);
        metrics.reloaded(true);
        let text = metrics.encode();
        for line in [
            "stickless_requests_total{route=\"app\",code=\"200\"} 2",
            "stickless_requests_total{route=\"app\",code=\"503\"} 1",
            "stickless_request_duration_seconds_count{route=\"app\"} 4",
            "stickless_store_duration_seconds_count{route=\"app\"} 1",
            "stickless_store_errors_total 0",
            "stickless_responses_incomplete_total{route=\"app\",reason=\"upstream_idle\"} 1",
            "stickless_responses_incomplete_total{route=\"app\",reason=\"client_gone\"} 0",
            "stickless_request_bodies_spilled_total{route=\"app\"} 0",
            "stickless_sessions_created_total 0",
            "stickless_sessions_rotated_total 0",
            "stickless_sessions_invalidated_total 0",
            "stickless_open_connections 0",
            "stickless_config_reloads_total{result=\"success\"} 1",
            "stickless_config_reloads_total{result=\"failure\"} 0",
            "# TYPE stickless_requests_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
