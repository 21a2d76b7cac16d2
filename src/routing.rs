//! Routing: the first route whose host and path prefix match wins.

use std::sync::Arc;

use http::header::HOST;
use http::Request;

use crate::config::{RequestBuffering, RouteSettings, SessionMode};
use crate::metrics::{Metrics, RouteMetrics};
use crate::upstream::balance::UpstreamSet;
use crate::upstream::health::HealthRegistry;

#[derive(Debug)]
pub struct Route {
    host: Option<String>,
    path_prefix: String,
    /// The route's name and its metric handles.
    pub metrics: RouteMetrics,
    pub upstreams: Arc<UpstreamSet>,
    pub session: SessionMode,
    pub login_url: Option<String>,
    pub max_body_bytes: Option<u64>,
    /// `None`: bodies stream to the backend as they arrive.
    pub buffering: Option<RequestBuffering>,
}

impl Route {
    /// The most bytes a request body may have here: `max_body_bytes`, or a buffering route's
    /// `max_bytes` when that is smaller.
    pub fn body_limit(&self) -> Option<u64> {
        let buffered = self.buffering.as_ref().map(|b| b.max_bytes);
        match (self.max_body_bytes, buffered) {
            (Some(route), Some(buffered)) => Some(route.min(buffered)),
            (route, buffered) => route.or(buffered),
        }
    }
}

#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Upstreams get their health from `health`, shared with earlier configurations.
    pub fn new(settings: &[RouteSettings], metrics: &Metrics, health: &HealthRegistry) -> Router {
        Router {
            routes: settings
                .iter()
                .map(|r| Route {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    metrics: metrics.route(&r.name),
                    upstreams: Arc::new(UpstreamSet::new(
                        r.upstreams.iter().map(|a| health.of(a, metrics)).collect(),
                        r.health.clone(),
                    )),
                    session: r.session,
                    login_url: r.login_url.clone(),
                    max_body_bytes: r.max_body_bytes,
                    buffering: r.request_buffering.clone(),
                })
                .collect(),
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The target's own authority wins over `Host`: an absolute-form target (RFC 9112
    /// §3.2.2) or HTTP/2's `:authority`; the proxy forwards that authority as `Host`.
    pub fn route<B>(&self, request: &Request<B>) -> Option<&Route> {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()));
        let destination = Destination::new(authority, request.uri().path());
        self.routes
            .iter()
            .find(|route| destination.taken_by(route.host.as_deref(), &route.path_prefix))
    }
}

/// Where a request goes, as routing sees it. Also what `check` routes a login URL with, so
/// that both agree on which route a path reaches.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    host: Option<&'a str>,
    path: &'a str,
}

impl<'a> Destination<'a> {
    /// `authority` as in `Host` (a port and a trailing dot are ignored); `None` is a request
    /// that names no host, which only routes without a host take.
    pub fn new(authority: Option<&'a str>, path: &'a str) -> Destination<'a> {
        Destination {
            host: authority.map(host_without_port),
            path,
        }
    }

    pub fn host(&self) -> Option<&'a str> {
        self.host
    }

    /// Whether a route with this host (`None`: any) and path prefix takes the request.
    pub fn taken_by(&self, host: Option<&str>, path_prefix: &str) -> bool {
        self.path.starts_with(path_prefix)
            && host.is_none_or(|want| self.host.is_some_and(|got| got.eq_ignore_ascii_case(want)))
    }
}

fn host_without_port(authority: &str) -> &str {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Whether the path is free of dot segments in any spelling (`..`, `%2e%2e`, `..;` as Tomcat
/// reads it, with `\` or `%2f` as separators). Routing decides which routes require a session,
/// so a path the backend would normalise into another route (`/public/../admin`) must never
/// be routed as written: such requests are refused (400), as most servers refuse them too.
pub fn is_safe_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return true;
    }
    let decoded = path
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    decoded.split('/').all(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        name != "." && name != ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthSettings;
    use http::uri::Authority;
    use prometheus_client::metrics::counter::Counter;
    use std::time::Duration;

    fn router() -> Router {
        let route = |host: Option<&str>, prefix: &str, up: &'static str| RouteSettings {
            name: prefix.into(),
            health: HealthSettings {
                max_fails: 1,
                fail_timeout: Duration::from_secs(1),
                check: None,
            },
            host: host.map(str::to_owned),
            path_prefix: prefix.into(),
            upstreams: vec![Authority::from_static(up)],
            session: SessionMode::On,
            login_url: None,
            max_body_bytes: None,
            request_buffering: None,
        };
        Router::new(
            &[
                route(Some("admin.example.com"), "/", "a:1"),
                route(None, "/api", "b:1"),
                route(None, "/", "c:1"),
            ],
            &Metrics::new(Counter::default()),
            &HealthRegistry::new(),
        )
    }

    fn pick(host: &str, path: &str) -> String {
        let request = Request::builder()
            .uri(path)
            .header(HOST, host)
            .body(())
            .expect("request");
        let route = router().route(&request).map(|r| {
            r.upstreams
                .order()
                .next()
                .map(|a| a.authority().to_string())
        });
        route.flatten().unwrap_or_default()
    }

    #[test]
    fn first_match_wins() {
        assert_eq!(pick("ADMIN.example.com:8080", "/api/x"), "a:1");
        assert_eq!(pick("admin.example.com.", "/"), "a:1");
        assert_eq!(pick("www.example.com", "/api/x"), "b:1");
        assert_eq!(pick("www.example.com", "/apix"), "b:1");
        assert_eq!(pick("www.example.com", "/other"), "c:1");
        assert_eq!(pick("[::1]:80", "/"), "c:1");
    }

    #[test]
    fn dot_segments_are_unsafe() {
        for bad in [
            "/a/../b",
            "/..",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a/..;/b",
            "/a\\..\\b",
            "/a%2f..%2fb",
            "*",
            "",
        ] {
            assert!(!is_safe_path(bad), "{bad}");
        }
        for ok in ["/", "/a.b/c", "/a/...", "/a/.hidden", "/%41", "/a..b"] {
            assert!(is_safe_path(ok), "{ok}");
        }
    }
}
