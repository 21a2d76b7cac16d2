//! Per-connection deadlines that hyper cannot tell apart.
//!
//! hyper's `header_read_timeout` starts as soon as it waits for a request head, so on a
//! keep-alive connection it also ends idle time. Behind a load balancer that is wrong: the
//! balancer keeps idle connections open (60 s on an AWS ALB) and expects its targets to keep
//! them longer, or it sends a request into a closing socket and answers 502. So, like nginx
//! (`client_header_timeout` / `keepalive_timeout`) and HAProxy (`timeout http-request` /
//! `timeout http-keep-alive`), we keep two deadlines:
//!
//! - a request head must arrive completely within `header_read` of its first byte
//!   (slowloris);
//! - a connection with nothing in flight is closed after `keepalive_idle` without a byte.
//!
//! A connection busy with a request (including a long response body) has no deadline here;
//! the upstream timeouts bound that, and a third deadline bounds the client's side of it:
//!
//! - a client that leaves a write pending (its socket buffer full, it reads nothing) for
//!   `client_write_idle` is disconnected (nginx's `send_timeout`). HTTP/2 streams stalled by
//!   a flow-control window the client does not open are watched by `streams`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::streams::StreamWatch;
use crate::context::LoggedBody;
use crate::metrics::Ending;
use crate::stall::StallTimer;
use crate::upstream::body::Cut;

#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
}

/// A write error of our own: the connection is closed, and the response it carried is logged
/// as the client's failure.
pub fn client_stalled(idle: Duration) -> String {
    format!("the client took no response bytes for {idle:?}; disconnected")
}

const NEVER: u64 = u64::MAX;

/// What one connection is doing, shared by its socket, its requests and its watchdog.
#[derive(Clone)]
pub struct Activity(Arc<State>);

struct State {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the first byte of a not yet complete request head arrived (ms since `opened`).
    head_started: AtomicU64,
    /// When the last request finished (ms since `opened`).
    idle_since: AtomicU64,
    /// Wakes the watchdog when a head starts: its deadline is the only one that comes sooner
    /// than the one the watchdog is sleeping towards.
    head_began: Notify,
    /// Set when the client was disconnected for taking no bytes (`client_write_idle`).
    write_stalled: AtomicBool,
    /// Wakes the watchdog to close the connection: an HTTP/2 client read nothing on any
    /// stream for `client_write_idle` (`streams`).
    client_stalled: Notify,
    /// When an HTTP/2 stream last got bytes through to the client (µs since `opened`).
    stream_progress: AtomicU64,
    /// Set while hyper is being made to let go of an idle connection (`parking`): its
    /// shutdown of the socket is then skipped.
    parking: AtomicBool,
}

impl Activity {
    pub fn new() -> Activity {
        Activity(Arc::new(State {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(NEVER),
            idle_since: AtomicU64::new(0),
            head_began: Notify::new(),
            write_stalled: AtomicBool::new(false),
            client_stalled: Notify::new(),
            stream_progress: AtomicU64::new(0),
            parking: AtomicBool::new(false),
        }))
    }

    pub fn set_parking(&self, parking: bool) {
        self.0.parking.store(parking, Ordering::Release);
    }

    fn is_parking(&self) -> bool {
        self.0.parking.load(Ordering::Acquire)
    }

    /// Since when (ms since it opened) the connection has had nothing in flight and no byte
    /// of a next request head, if it has not.
    pub fn quiet_since(&self) -> Option<u64> {
        let state = &self.0;
        let quiet = state.in_flight.load(Ordering::Acquire) == 0
            && state.head_started.load(Ordering::Acquire) == NEVER;
        quiet.then(|| state.idle_since.load(Ordering::Acquire))
    }

    /// Wakes when an HTTP/2 client is disconnected for reading nothing.
    pub async fn client_stalled(&self) {
        self.0.client_stalled.notified().await;
    }

    /// An HTTP/2 stream's client took bytes (its window opened, or the body went out whole).
    pub fn stream_progressed(&self) {
        self.0
            .stream_progress
            .fetch_max(self.micros(), Ordering::AcqRel);
    }

    /// Whether any stream got bytes through after `since` (`micros`).
    pub fn streams_progressed_after(&self, since: u64) -> bool {
        self.0.stream_progress.load(Ordering::Acquire) > since
    }

    /// Closes the connection: its client has taken no bytes for `client_write_idle`.
    pub fn disconnect_stalled(&self) {
        self.0.write_stalled.store(true, Ordering::Release);
        self.0.client_stalled.notify_one();
    }

    pub fn write_stalled(&self) -> bool {
        self.0.write_stalled.load(Ordering::Acquire)
    }

    /// Milliseconds since the connection opened: the clock of the connection's deadlines.
    pub fn now(&self) -> u64 {
        millis(self.0.opened.elapsed())
    }

    /// Microseconds since the connection opened: the clock of its HTTP/2 streams' stamps,
    /// fine enough that a stream served after another stalled is never stamped the same.
    pub fn micros(&self) -> u64 {
        u64::try_from(self.0.opened.elapsed().as_micros()).unwrap_or(NEVER - 1)
    }

    /// The instant `micros` microseconds after the connection opened.
    pub fn instant_at(&self, micros: u64) -> Instant {
        self.0.opened + Duration::from_micros(micros)
    }

    pub fn saw_bytes(&self) {
        if self.0.in_flight.load(Ordering::Acquire) == 0 {
            let began = self.0.head_started.compare_exchange(
                NEVER,
                self.now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            if began.is_ok() {
                self.0.head_began.notify_one();
            }
        }
    }

    /// A request head is complete; the connection is busy until the guard is dropped (when
    /// its response body has been sent, or the exchange abandoned).
    pub fn request_started(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.0.head_started.store(NEVER, Ordering::Release);
        InFlight(self.clone())
    }

    /// When the connection must be closed (ms since it opened), if it is not busy.
    pub fn deadline(&self, limits: &Deadlines) -> Option<u64> {
        if self.0.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.0.head_started.load(Ordering::Acquire);
        Some(if head != NEVER {
            head.saturating_add(millis(limits.header_read))
        } else {
            self.0
                .idle_since
                .load(Ordering::Acquire)
                .saturating_add(millis(limits.keepalive_idle))
        })
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NEVER - 1)
}

/// Marks its connection busy while alive.
pub struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0 .0;
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            state.idle_since.store(self.0.now(), Ordering::Release);
        }
    }
}

/// Drives `connection` until it ends or one of the deadlines passes; `None` when the
/// connection was closed for a deadline.
pub async fn serve<F: Future>(
    connection: F,
    activity: &Activity,
    limits: Deadlines,
) -> Option<F::Output> {
    tokio::pin!(connection);
    loop {
        let now = activity.now();
        let wait = match activity.deadline(&limits) {
            Some(at) if at <= now => return None,
            Some(at) => Duration::from_millis(at - now),
            // Busy: look again later; a new head or idle period starts from its own event.
            None => limits.header_read.min(limits.keepalive_idle),
        };
        tokio::select! {
            output = &mut connection => return Some(output),
            () = tokio::time::sleep(wait) => {}
            () = activity.0.head_began.notified() => {}
            () = activity.client_stalled() => return None,
        }
    }
}

/// The connection's socket, noting when bytes arrive, and failing a write the client has
/// left pending for `write_idle`.
pub struct WatchedIo<T> {
    inner: T,
    activity: Activity,
    /// Runs while a write is pending.
    stall: StallTimer,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, activity: Activity, write_idle: Duration) -> WatchedIo<T> {
        WatchedIo {
            inner,
            activity,
            stall: StallTimer::new(write_idle),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Passes a write's outcome on; a pending one starts (or goes on with) the stall timer,
    /// and past `client_write_idle` becomes an error that ends the connection.
    fn watch_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stall.progressed();
            return polled;
        }
        if self.stall.stalled(cx).is_pending() {
            return Poll::Pending;
        }
        self.activity.0.write_stalled.store(true, Ordering::Release);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            client_stalled(self.stall.limit()),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.saw_bytes();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.is_parking() {
            // hyper is letting go of an idle connection that stays open (`parking`).
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its connection marked busy until it has been sent, and tells
/// its log record when the connection gave up on it because the client stopped reading.
pub struct TrackedBody {
    body: LoggedBody,
    in_flight: InFlight,
    /// The HTTP/2 stream's watch (`streams`); none on HTTP/1.1.
    stream: Option<StreamWatch>,
    write_idle: Duration,
}

impl TrackedBody {
    pub fn new(body: LoggedBody, in_flight: InFlight, write_idle: Duration) -> TrackedBody {
        TrackedBody {
            body,
            in_flight,
            stream: StreamWatch::current(),
            write_idle,
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        let stalled = self.in_flight.0.write_stalled()
            || self.stream.as_ref().is_some_and(StreamWatch::expired);
        if stalled {
            let cause = client_stalled(self.write_idle);
            self.body.abandon(Ending::ClientStalled, &cause);
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let this = self.get_mut();
        if let Some(stream) = &this.stream {
            stream.resumed();
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(stream) = &this.stream {
            match &polled {
                Poll::Ready(None) => stream.finished(),
                Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => stream.finished(),
                // hyper polls again once the client's window has room for more.
                Poll::Ready(Some(Ok(frame))) if frame.is_data() => stream.waiting_for_client(),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
