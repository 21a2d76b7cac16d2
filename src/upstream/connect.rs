//! Opening upstream connections: hyper-util's TCP connector under a connect timeout that a
//! reload can change, and that says whether a connect was refused or timed out.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Clone)]
pub struct Connector {
    inner: HttpConnector,
    /// `timeouts.upstream_connect` in milliseconds, as the current configuration says.
    timeout_ms: Arc<AtomicU64>,
}

impl Connector {
    pub fn new(timeout: Duration) -> Connector {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        let connector = Connector {
            inner,
            timeout_ms: Arc::new(AtomicU64::new(0)),
        };
        connector.set_timeout(timeout);
        connector
    }

    pub fn set_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.timeout_ms.store(ms, Ordering::Relaxed);
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| ConnectFailure::Refused(err.into()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(err)) => Err(ConnectFailure::Refused(err.into())),
                Err(_) => Err(ConnectFailure::Timeout(timeout)),
            }
        })
    }
}

/// Whether a client error was a connect timeout, a refused connect, or neither.
pub fn classify<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectFailure> {
    let mut source: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if let Some(failure) = err.downcast_ref::<ConnectFailure>() {
            return Some(failure);
        }
        source = err.source();
    }
    None
}
