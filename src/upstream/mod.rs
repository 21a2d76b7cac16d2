//! Forwarding to upstreams: one pooled keep-alive client, round-robin with fail-over on a
//! refused connection, and a deadline for the response head.

pub mod balance;
pub mod body;
pub mod forwarded;
pub mod hop;

use std::time::Duration;

use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error as ClientError};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Timeouts;
use balance::UpstreamSet;
use body::RetryableBody;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream accepted a connection")]
    Unreachable(#[source] Option<ClientError>),
    #[error("the upstream sent no response head within {0:?}")]
    Timeout(Duration),
    #[error("the upstream exchange failed")]
    Failed(#[source] ClientError),
}

pub struct UpstreamClient {
    client: Client<HttpConnector, RetryableBody>,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(timeouts: &Timeouts) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Below the usual 60–75 s keep-alive of backends, so we close first and never
            // send a request on a connection the backend is closing.
            .pool_idle_timeout(Duration::from_secs(50))
            .build(connector);
        UpstreamClient {
            client,
            response_timeout: timeouts.upstream_response,
        }
    }

    /// Sends the request to the route's next upstream; a refused or timed-out connect falls
    /// over to the next one while the body is untouched. 502 when none accepts, 504 when the
    /// one that accepted does not answer in time.
    pub async fn forward(
        &self,
        set: &UpstreamSet,
        mut parts: Parts,
        body: RetryableBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let order = set.order();
        let attempts = order.len();
        let mut last = None;
        for (i, authority) in order.enumerate() {
            let uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority.clone())
                .path_and_query(path.clone());
            let mut request = Request::new(body.attempt());
            *request.method_mut() = parts.method.clone();
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = if i + 1 == attempts {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            *request.uri_mut() = uri.build().map_err(|_| UpstreamError::Unreachable(None))?;
            match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
                Err(_) => return Err(UpstreamError::Timeout(self.response_timeout)),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(err)) if err.is_connect() => {
                    tracing::warn!(upstream = %authority, error = %err, "upstream refused the connection");
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
}
