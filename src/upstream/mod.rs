//! Forwarding to upstreams: one pooled keep-alive client shared by every configuration,
//! round-robin that skips failed upstreams (`health`), fail-over on a failed connect, and a
//! deadline for the response head.

pub mod balance;
pub mod body;
pub mod buffer;
pub mod check;
pub mod connect;
pub mod forwarded;
pub mod health;
pub mod hop;

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, Error as ClientError};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use balance::UpstreamSet;
use body::RetryableBody;
use connect::{classify, ConnectFailure, Connector};
use health::{Failure, Health};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream accepted a connection")]
    Unreachable(#[source] Option<ClientError>),
    #[error("the upstream sent no response head within {0:?}")]
    Timeout(Duration),
    #[error("the upstream exchange failed")]
    Failed(#[source] ClientError),
}

/// Which upstreams a request went to, for the access log. Borrowed from the configuration
/// the request runs under: nothing is cloned per request.
#[derive(Debug, Default)]
pub struct Attempts<'a> {
    /// The last upstream tried: the one that answered, or the last that failed.
    pub upstream: Option<&'a Authority>,
    pub count: u32,
}

/// The most a backend connection reads ahead of the client, as nginx's `proxy_buffer_size`
/// and `proxy_buffers` together (4 KiB + 8 × 4 KiB on most systems) in order of size.
const READ_BUFFER: usize = 64 * 1024;

/// Idle keep-alive connections kept per upstream, as nginx's `keepalive` directive: enough for
/// the steady concurrency of one proxy instance; more are closed when they go idle.
const MAX_IDLE_PER_UPSTREAM: usize = 64;

pub struct UpstreamClient {
    client: Client<Connector, RetryableBody>,
    connector: Connector,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> UpstreamClient {
        UpstreamClient::with_connector(Connector::new(connect_timeout))
    }

    /// Another pool, whose connections (and their tasks) belong to the runtime that uses it,
    /// with this one's connector: a reload's connect timeout reaches both.
    pub fn sibling(&self) -> UpstreamClient {
        UpstreamClient::with_connector(self.connector.clone())
    }

    fn with_connector(connector: Connector) -> UpstreamClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Below the usual 60–75 s keep-alive of backends, so we close first and never
            // send a request on a connection the backend is closing.
            .pool_idle_timeout(Duration::from_secs(50))
            // A burst (h2load: 100 clients × 10 streams) otherwise leaves hundreds of idle
            // connections holding buffers here and workers or threads on the backend.
            .pool_max_idle_per_host(MAX_IDLE_PER_UPSTREAM)
            // Body chunks are slices of this buffer, and a slow client keeps the ones queued
            // for it alive: hyper's 400 KiB default let 1,000 slow readers hold 650 MB.
            .http1_max_buf_size(READ_BUFFER)
            .build(connector.clone());
        UpstreamClient { client, connector }
    }

    /// A reload changed `timeouts.upstream_connect`: new connects use the new value.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.connector.set_timeout(timeout);
    }

    /// Sends the request to the route's next upstream; a refused or timed-out connect falls
    /// over to the next one while the body is untouched. 502 when none accepts, 504 when the
    /// one that accepted does not answer within `response_timeout`. Connect failures and
    /// timeouts count against the upstream's health; a response head puts it back.
    pub async fn forward<'a>(
        &self,
        set: &'a UpstreamSet,
        mut parts: Parts,
        body: RetryableBody,
        response_timeout: Duration,
        attempts: &mut Attempts<'a>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut order = set.order().peekable();
        let mut last = None;
        while let Some(upstream) = order.next() {
            attempts.count += 1;
            attempts.upstream = Some(upstream.authority());
            let final_try = order.peek().is_none();
            let mut request = Request::new(body.attempt());
            *request.method_mut() = parts.method.clone();
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = if final_try {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            *request.uri_mut() = upstream_uri(upstream.authority(), path.clone())
                .ok_or(UpstreamError::Unreachable(None))?;
            let exchange = self.client.request(request);
            match tokio::time::timeout(response_timeout, exchange).await {
                Err(_) => {
                    upstream.failed(Failure::ResponseTimeout, &set.policy);
                    return Err(UpstreamError::Timeout(response_timeout));
                }
                Ok(Ok(response)) => {
                    upstream.succeeded();
                    return Ok(response);
                }
                Ok(Err(err)) if err.is_connect() => {
                    note_connect_failure(upstream, &err, set);
                    if !body.can_retry() {
                        return Err(UpstreamError::Unreachable(Some(err)));
                    }
                    last = Some(err);
                }
                Ok(Err(err)) => return Err(UpstreamError::Failed(err)),
            }
        }
        Err(UpstreamError::Unreachable(last))
    }

    /// One active health check: `GET path` answered 2xx or 3xx within `timeout`.
    pub async fn check(
        &self,
        authority: &Authority,
        path: &PathAndQuery,
        timeout: Duration,
    ) -> bool {
        let Some(uri) = upstream_uri(authority, path.clone()) else {
            return false;
        };
        let mut request = Request::new(RetryableBody::empty());
        *request.uri_mut() = uri;
        if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        request.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("stickless-health-check"),
        );
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                // Drain the body so the connection goes back to the pool.
                let _ = tokio::time::timeout(
                    timeout,
                    http_body_util::BodyExt::collect(response.into_body()),
                )
                .await;
                status.is_success() || status.is_redirection()
            }
            _ => false,
        }
    }
}

fn upstream_uri(authority: &Authority, path: PathAndQuery) -> Option<Uri> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .ok()
}

/// Logs and counts a failed connect, saying whether it was refused or timed out.
fn note_connect_failure(upstream: &Arc<Health>, err: &ClientError, set: &UpstreamSet) {
    let failure = match classify(err) {
        Some(ConnectFailure::Timeout(_)) => Failure::ConnectTimeout,
        _ => Failure::Refused,
    };
    tracing::debug!(upstream = %upstream.authority(), error = %crate::report::chain(err), "connect failed");
    upstream.failed(failure, &set.policy);
}
