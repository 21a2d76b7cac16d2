//! The admin listener, for operators and their tools: liveness, readiness and metrics, and,
//! with `admin.token_file`, the session API (`sessions`). It runs beside the proxy listener,
//! keeps answering while the proxy drains (so readiness can say so), and none of its requests
//! reaches the access log (the session API logs each call itself).

mod sessions;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::error::plain as text;
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::proxy::Proxy;
use crate::upstream::body::ProxyBody;

/// A health checker or scraper that stops sending is cut off after this.
const HEADER_READ: Duration = Duration::from_secs(10);

/// How often the store is pinged for `stickless_store_up` between scrapes.
const STORE_PROBE: Duration = Duration::from_secs(5);

/// Serves until the task is aborted (at the end of the drain).
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    let mut connections = JoinSet::new();
    // Owned by the set, so it ends with the listener.
    connections.spawn(probe_store(proxy.clone()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "admin: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow with every scrape.
        while connections.try_join_next().is_some() {}
        let proxy = proxy.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(answer(&proxy, request, peer).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                debug!(%peer, error = %err, "admin connection ended with an error");
            }
        });
    }
}

async fn answer(
    proxy: &Proxy,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    if let Some(call) = sessions::route(request.uri().path()) {
        return sessions::answer(proxy, &request, call, peer).await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(proxy).await,
        "/metrics" => {
            let mut response = text(StatusCode::OK, proxy.metrics().encode());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "404 Not Found\n"),
    }
}

/// Keeps `stickless_store_up` current even when nobody asks `/readyz`.
async fn probe_store(proxy: Arc<Proxy>) {
    let mut ticks = tokio::time::interval(STORE_PROBE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        store_answers(&proxy).await;
    }
}

/// Pings the store within `store.timeout` and records the result in `stickless_store_up`.
async fn store_answers(proxy: &Proxy) -> bool {
    let timeout = proxy.live().settings.store.timeout;
    let reached = tokio::time::timeout(timeout, proxy.store().ping()).await;
    let up = matches!(reached, Ok(Ok(())));
    proxy.metrics().store_up.set(i64::from(up));
    up
}

/// Ready: not draining, and the store answers within `store.timeout`. The answer says
/// which check failed, for the operator reading it with curl.
async fn readiness(proxy: &Proxy) -> Response<ProxyBody> {
    if proxy.is_draining() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    if store_answers(proxy).await {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
    }
}
