//! Bodies through the proxy: streamed as they arrive, except a request body that its route
//! has read whole first (`buffer`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::buffer::{Buffered, Replay, SpillError};
use crate::report::chain;
use crate::session::prefix::HeaderPrefix;
use crate::stall::StallTimer;

/// What the proxy answers with: the backend's streamed body or a short one of our own.
pub type ProxyBody = BoxBody<Bytes, Cut>;

/// Why a response body stopped before its end. The head has gone out by then, so the client
/// learns it only from the connection being closed (HTTP/1.1) or the stream reset (HTTP/2).
#[derive(Debug, thiserror::Error)]
pub enum Cut {
    #[error("the upstream sent no body bytes for {0:?}; the response was cut short")]
    UpstreamIdle(Duration),
    #[error("the upstream's response body broke off")]
    Upstream(#[source] hyper::Error),
}

pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The backend's response body, with session headers removed from its trailers, ended with
/// an error when the backend pauses longer than `read_idle` (`timeouts.upstream_read_idle`).
pub fn from_backend(body: Incoming, prefix: HeaderPrefix, read_idle: Duration) -> ProxyBody {
    BackendBody {
        body,
        prefix,
        stall: StallTimer::new(read_idle),
    }
    .boxed()
}

struct BackendBody {
    body: Incoming,
    prefix: HeaderPrefix,
    /// Only the backend's pauses count: we are not polled while the client is slow to take
    /// what we sent.
    stall: StallTimer,
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall.progressed();
                Poll::Ready(frame.map(|frame| {
                    frame
                        .map(|frame| strip_trailers(frame, &this.prefix))
                        .map_err(Cut::Upstream)
                }))
            }
            Poll::Pending => match this.stall.stalled(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Some(Err(Cut::UpstreamIdle(this.stall.limit())))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
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
/// connection, the body can go to the next one. A streamed body must be untouched for that:
/// once any upstream has read from it, it is spent and no further attempt is made. A buffered
/// one is read from its start by every attempt.
pub struct RetryableBody {
    source: Source,
    prefix: HeaderPrefix,
}

enum Source {
    /// Read from the client as the upstream takes it: one pass, shared by every attempt.
    Streamed(Arc<Mutex<State>>),
    /// Read whole before any upstream was asked.
    Buffered {
        replay: Replay,
        /// A failure to read the body back, kept for the proxy: the disk failed, not the
        /// upstream that was being sent the body.
        failed: Arc<Mutex<Option<SpillError>>>,
    },
}

/// Why an attempt's body failed on the proxy's side, when it did: the upstream is then not to
/// blame.
#[derive(Debug)]
pub enum BodyFailure {
    Refused(Refusal),
    /// The client's connection broke (closed or reset) while it sent the body: its failure,
    /// not the backend's, although the backend saw the request cut short.
    Broken(String),
    Spill(SpillError),
}

/// Why the proxy stopped reading a client's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Past the route's `max_body_bytes` (413).
    #[error("the request body is larger than the route allows")]
    TooLarge,
    /// No byte for `timeouts.body_idle` (408): a slow-POST client holds nothing longer.
    #[error("the client sent no body bytes for too long")]
    Idle,
}

struct State {
    body: Option<Incoming>,
    started: bool,
    /// Bytes still allowed, when the route has a limit.
    allowance: Option<u64>,
    /// Runs while the client keeps us waiting for the next frame.
    stall: StallTimer,
    refused: Option<Refusal>,
    broken: Option<String>,
}

impl RetryableBody {
    /// `limit`: the most bytes the body may have (the route's `max_body_bytes`); `idle`: the
    /// longest the client may keep us waiting for the next bytes.
    pub fn new(
        body: Incoming,
        prefix: HeaderPrefix,
        limit: Option<u64>,
        idle: Duration,
    ) -> RetryableBody {
        RetryableBody {
            source: Source::Streamed(Arc::new(Mutex::new(State {
                body: Some(body),
                started: false,
                allowance: limit,
                stall: StallTimer::new(idle),
                refused: None,
                broken: None,
            }))),
            prefix,
        }
    }

    /// A body read whole beforehand; its trailers were dropped then, so no prefix is needed.
    pub fn buffered(body: Buffered) -> RetryableBody {
        RetryableBody {
            source: Source::Buffered {
                replay: Replay::new(Arc::new(body)),
                failed: Arc::default(),
            },
            prefix: HeaderPrefix::default(),
        }
    }

    /// No body, for requests the proxy makes itself (health checks).
    pub fn empty() -> RetryableBody {
        RetryableBody {
            source: Source::Streamed(Arc::new(Mutex::new(State {
                body: None,
                started: false,
                allowance: None,
                stall: StallTimer::new(Duration::MAX),
                refused: None,
                broken: None,
            }))),
            prefix: HeaderPrefix::default(),
        }
    }

    /// Set once the proxy stopped reading a streamed body (the failure is the client's) or
    /// could not read a buffered one back (ours). A read-back failure is handed out once.
    pub fn failure(&self) -> Option<BodyFailure> {
        match &self.source {
            Source::Streamed(state) => {
                let mut state = lock(state);
                match state.refused {
                    Some(refusal) => Some(BodyFailure::Refused(refusal)),
                    None => state.broken.take().map(BodyFailure::Broken),
                }
            }
            Source::Buffered { failed, .. } => lock(failed).take().map(BodyFailure::Spill),
        }
    }

    /// A handle for one attempt.
    pub fn attempt(&self) -> RetryableBody {
        let source = match &self.source {
            Source::Streamed(state) => Source::Streamed(state.clone()),
            Source::Buffered { replay, failed } => Source::Buffered {
                replay: replay.restart(),
                failed: failed.clone(),
            },
        };
        RetryableBody {
            source,
            prefix: self.prefix.clone(),
        }
    }

    /// True while the body can still be sent whole: a streamed one until an upstream has read
    /// a byte of it, a buffered one always.
    pub fn can_retry(&self) -> bool {
        match &self.source {
            Source::Streamed(state) => !lock(state).started,
            Source::Buffered { .. } => true,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single poll, flag read or swap: a poisoned lock holds no
    // half-made change.
    crate::sync::lock(mutex)
}

impl Body for RetryableBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let state = match &mut this.source {
            Source::Streamed(state) => state,
            Source::Buffered { replay, failed } => {
                return replay.poll_next(cx).map(|piece| match piece? {
                    Ok(data) => Some(Ok(Frame::data(data))),
                    Err(err) => {
                        // The upstream is told only that the body failed; the proxy learns why.
                        *lock(failed) = Some(err);
                        Some(Err(
                            "the buffered request body could not be read back".into()
                        ))
                    }
                });
            }
        };
        let mut state = lock(state);
        state.started = true;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                state.stall.progressed();
                frame
            }
            Poll::Ready(Some(Err(err))) => {
                state.broken = Some(chain(&err));
                state.body = None;
                return Poll::Ready(Some(Err(err.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                if state.stall.stalled(cx).is_pending() {
                    return Poll::Pending;
                }
                state.refused = Some(Refusal::Idle);
                state.body = None;
                return Poll::Ready(Some(Err(Box::new(Refusal::Idle))));
            }
        };
        if let (Some(data), Some(allowance)) = (frame.data_ref(), state.allowance) {
            let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            match allowance.checked_sub(len) {
                Some(left) => state.allowance = Some(left),
                None => {
                    // Stop here: the upstream request is abandoned and the client gets 413.
                    state.refused = Some(Refusal::TooLarge);
                    state.body = None;
                    return Poll::Ready(Some(Err(Box::new(Refusal::TooLarge))));
                }
            }
        }
        Poll::Ready(Some(Ok(strip_trailers(frame, &this.prefix))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Streamed(state) => lock(state).body.as_ref().is_none_or(|b| b.is_end_stream()),
            Source::Buffered { replay, .. } => replay.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Streamed(state) => lock(state)
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
            Source::Buffered { replay, .. } => replay.size_hint(),
        }
    }
}
