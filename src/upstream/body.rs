//! Bodies streamed through the proxy, never buffered whole.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::session::prefix::HeaderPrefix;

/// What the proxy answers with: the backend's streamed body or a short one of our own.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The backend's response body, with session headers removed from its trailers.
pub fn from_backend(body: Incoming, prefix: HeaderPrefix) -> ProxyBody {
    body.map_frame(move |frame| strip_trailers(frame, &prefix))
        .boxed()
}

fn strip_trailers(frame: Frame<Bytes>, prefix: &HeaderPrefix) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            prefix.strip(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// The client's request body, shared between attempts so that when an upstream refuses the
/// connection, the untouched body can go to the next one. Once any upstream has read from it,
/// it is spent and no further attempt is made.
pub struct RetryableBody {
    state: Arc<Mutex<State>>,
    prefix: HeaderPrefix,
}

struct State {
    body: Option<Incoming>,
    started: bool,
}

impl RetryableBody {
    pub fn new(body: Incoming, prefix: HeaderPrefix) -> RetryableBody {
        RetryableBody {
            state: Arc::new(Mutex::new(State {
                body: Some(body),
                started: false,
            })),
            prefix,
        }
    }

    /// A handle for one attempt.
    pub fn attempt(&self) -> RetryableBody {
        RetryableBody {
            state: self.state.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// True while no upstream has read a byte of the body.
    pub fn can_retry(&self) -> bool {
        !self.state().started
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a single poll or flag read: a poisoned lock holds no
        // half-made change.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Body for RetryableBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut state = this.state();
        state.started = true;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                Poll::Ready(Some(Ok(strip_trailers(frame, &this.prefix))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state().body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.state()
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
