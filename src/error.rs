//! Every way a request can fail, tagged by where the failure came from, and the one place
//! where a failure becomes an HTTP status.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::session::persist::PersistError;
use crate::session::update::MalformedUpdate;
use crate::store::StoreError;
use crate::upstream::body::{full, BodyFailure, ProxyBody, Refusal};
use crate::upstream::buffer::{BufferError, SpillError};
use crate::upstream::UpstreamError;

/// Where a failure came from: the client, an upstream (backend), the session store, or us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Store,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("the request path has dot segments")]
    UnsafePath,
    #[error(transparent)]
    Body(#[from] Refusal),
    /// While the proxy read the whole body first (request buffering); when the body streams,
    /// the same failure ends the upstream exchange instead.
    #[error("the client's request body broke off")]
    ClientBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The temporary file of a buffered body: our disk, not the client nor the backend.
    #[error(transparent)]
    Spill(#[from] SpillError),
    #[error("the backend's response is framed by both Content-Length and Transfer-Encoding")]
    AmbiguousResponse,
    #[error("the backend switched protocols (101) for a request that did not ask for an upgrade")]
    UnaskedUpgrade,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the backend sent a session update that cannot be applied")]
    BadUpdate(#[source] MalformedUpdate),
    #[error("the session store cannot serve the request")]
    Store(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<BufferError> for ProxyError {
    fn from(err: BufferError) -> ProxyError {
        match err {
            BufferError::Refused(refusal) => ProxyError::Body(refusal),
            BufferError::Client(err) => ProxyError::ClientBody(err),
            BufferError::Spill(err) => ProxyError::Spill(err),
        }
    }
}

impl From<BodyFailure> for ProxyError {
    fn from(failure: BodyFailure) -> ProxyError {
        match failure {
            BodyFailure::Refused(refusal) => ProxyError::Body(refusal),
            BodyFailure::Broken(cause) => ProxyError::ClientBody(cause.into()),
            BodyFailure::Spill(err) => ProxyError::Spill(err),
        }
    }
}

impl From<PersistError> for ProxyError {
    fn from(err: PersistError) -> ProxyError {
        match err {
            PersistError::Store(err) => ProxyError::Store(err),
            PersistError::Malformed(err) => ProxyError::BadUpdate(err),
            PersistError::Random(err) => ProxyError::Internal(Box::new(err)),
            PersistError::Seal(err) => ProxyError::Internal(Box::new(err)),
        }
    }
}

/// Seconds a client should wait before retrying after a store outage: long enough for a
/// reconnect or a failover to complete, short enough that users barely notice.
const STORE_RETRY_AFTER: HeaderValue = HeaderValue::from_static("2");

impl ProxyError {
    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::NoRoute
            | ProxyError::UnsafePath
            | ProxyError::Body(_)
            | ProxyError::ClientBody(_) => Origin::Client,
            ProxyError::Upstream(_)
            | ProxyError::BadUpdate(_)
            | ProxyError::AmbiguousResponse
            | ProxyError::UnaskedUpgrade => Origin::Upstream,
            ProxyError::Store(_) => Origin::Store,
            ProxyError::Spill(_) | ProxyError::Internal(_) => Origin::Internal,
        }
    }

    /// The status for each failure. The only place statuses for failures are chosen.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UnsafePath => StatusCode::BAD_REQUEST,
            ProxyError::Body(Refusal::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Body(Refusal::Idle) => StatusCode::REQUEST_TIMEOUT,
            // As nginx, which answers 400 to a client that closes while it reads the body.
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::AmbiguousResponse | ProxyError::UnaskedUpgrade => StatusCode::BAD_GATEWAY,
            ProxyError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) | ProxyError::BadUpdate(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            // As nginx, when it cannot write a request body to its temporary file.
            ProxyError::Spill(_) | ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short plain-text answer. Details stay in the log: the client learns the status only.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let mut response = plain(status, status_line(status));
        let headers = response.headers_mut();
        if self.origin() == Origin::Store {
            headers.insert(RETRY_AFTER, STORE_RETRY_AFTER);
        }
        response
    }
}

/// `"503 Service Unavailable\n"`: the body of the answers the proxy makes itself.
pub fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// A short plain-text answer of the proxy's own (errors, redirects to log in, the admin
/// endpoints), never to be cached.
pub fn plain(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Pins the status mapping: a change here is a change of the external contract.
    #[test]
    fn status_mapping() {
        let cases = [
            (ProxyError::NoRoute, 404, Origin::Client),
            (ProxyError::UnsafePath, 400, Origin::Client),
            (ProxyError::Body(Refusal::TooLarge), 413, Origin::Client),
            (ProxyError::Body(Refusal::Idle), 408, Origin::Client),
            (ProxyError::ClientBody("reset".into()), 400, Origin::Client),
            (ProxyError::AmbiguousResponse, 502, Origin::Upstream),
            (ProxyError::UnaskedUpgrade, 502, Origin::Upstream),
            (
                ProxyError::Upstream(UpstreamError::Unreachable(None)),
                502,
                Origin::Upstream,
            ),
            (
                ProxyError::Upstream(UpstreamError::Timeout(Duration::from_secs(1))),
                504,
                Origin::Upstream,
            ),
            (
                ProxyError::BadUpdate(MalformedUpdate::Repeated { header: "x".into() }),
                502,
                Origin::Upstream,
            ),
            (
                ProxyError::Store(StoreError::Timeout(Duration::from_millis(500))),
                503,
                Origin::Store,
            ),
            (ProxyError::Store(StoreError::Full), 503, Origin::Store),
            (ProxyError::Internal("boom".into()), 500, Origin::Internal),
            (
                ProxyError::Spill(SpillError::Write(std::io::ErrorKind::StorageFull.into())),
                500,
                Origin::Internal,
            ),
        ];
        for (err, status, origin) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.origin(), origin, "{err}");
            let response = err.to_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers().contains_key(RETRY_AFTER),
                origin == Origin::Store
            );
        }
    }
}
