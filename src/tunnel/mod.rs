//! Upgraded connections (WebSocket and other `Upgrade` protocols): once the backend's `101`
//! has gone to the client, the two connections become one tunnel, and bytes are copied both
//! ways with back-pressure until either side closes.
//!
//! A tunnel also ends when:
//!
//! - no byte went either way for `timeouts.tunnel_idle` (a peer that vanished without a FIN
//!   must not hold its connection slot for ever);
//! - its session ended (`keepalive`: invalidated anywhere, expired, deleted);
//! - the drain reached `timeouts.shutdown_grace` (`Tunnels::close_all`);
//! - the client left the proxy unable to write for `timeouts.client_write_idle` (the client
//!   socket is still the listener's `WatchedIo`).
//!
//! It keeps its client connection's slot under `limits.max_connections` until it closes, and
//! its request's access line is written then, with the tunnel's life as its duration.

mod keepalive;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::context::{ConnectionSlot, Record};
use crate::metrics::TunnelMetrics;
use crate::session::id::SessionId;
use crate::session::lifetime::Lifetime;
use crate::store::Store;
pub use keepalive::Keeper;

/// What the request path hands over when it relays a `101`.
pub struct Pending {
    /// The client's connection, once hyper has written the `101` to it.
    pub client: OnUpgrade,
    /// The backend's connection after its `101`.
    pub backend: OnUpgrade,
    /// The client connection's slot; none when the listener gave none (tests of the proxy
    /// alone).
    pub slot: Option<ConnectionSlot>,
    /// The session the tunnel keeps alive, as the `101`'s own update left it.
    pub session: Option<(SessionId, Lifetime)>,
    pub idle: Duration,
}

/// Why a tunnel closed: the access line's `outcome`, and `tunnels_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// One side closed and the other followed.
    Complete,
    /// No byte either way for `tunnel_idle`.
    Idle,
    /// Its session ended.
    SessionEnded,
    /// The drain's grace ran out.
    Drained,
    /// The client's connection failed (reset, or it stopped reading).
    ClientGone,
    /// The backend's connection failed.
    UpstreamFailed,
    /// A side went away before the upgrade completed.
    NotUpgraded,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Complete => "complete",
            Closed::Idle => "tunnel_idle",
            Closed::SessionEnded => "session_ended",
            Closed::Drained => "drained",
            Closed::ClientGone => "client_gone",
            Closed::UpstreamFailed => "upstream_failed",
            Closed::NotUpgraded => "not_upgraded",
        }
    }
}

/// Every open tunnel of the process, for the drain, and the sessions they keep alive.
pub struct Tunnels {
    tracker: TaskTracker,
    closing: CancellationToken,
    keeper: Keeper,
    metrics: TunnelMetrics,
}

impl Tunnels {
    pub fn new(store: Store, metrics: TunnelMetrics) -> Tunnels {
        Tunnels {
            tracker: TaskTracker::new(),
            closing: CancellationToken::new(),
            keeper: Keeper::new(store),
            metrics,
        }
    }

    /// Tunnels open now.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Sessions kept alive by tunnels now.
    pub fn sessions(&self) -> usize {
        self.keeper.sessions()
    }

    /// Starts the tunnel; `record` is its request's access line, written when it closes.
    pub fn open(&self, pending: Pending, record: Record) {
        let held = pending
            .session
            .as_ref()
            .map(|(id, lifetime)| self.keeper.hold(id.clone(), *lifetime));
        let closing = self.closing.clone();
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            metrics.open.inc();
            let (closed, cause) = run(pending, held, closing).await;
            metrics.open.dec();
            metrics.closed(closed.as_str());
            debug!(outcome = closed.as_str(), "tunnel closed");
            record.tunnel_closed(closed.as_str(), cause);
        });
    }

    /// Completes when every tunnel has closed, once the drain has begun (`close_all` or
    /// not): no tunnel opened later is waited for.
    pub async fn closed(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// The drain's grace is over: every open tunnel closes now.
    pub fn close_all(&self) {
        self.closing.cancel();
    }
}

async fn run(
    pending: Pending,
    held: Option<keepalive::Held>,
    closing: CancellationToken,
) -> (Closed, Option<String>) {
    // Held until the tunnel ends, so the connection keeps its place under the cap.
    let _slot = pending.slot;
    let upgraded = async { tokio::try_join!(pending.client, pending.backend) };
    let (client, backend) = tokio::select! {
        upgraded = upgraded => match upgraded {
            Ok(both) => both,
            Err(err) => return (Closed::NotUpgraded, Some(crate::report::chain(&err))),
        },
        () = closing.cancelled() => return (Closed::Drained, None),
    };
    let traffic = Arc::new(Traffic::new());
    let mut client = Watched::new(TokioIo::new(client), Side::Client, traffic.clone());
    let mut backend = Watched::new(TokioIo::new(backend), Side::Backend, traffic.clone());
    let session_ended = async {
        match &held {
            Some(held) => held.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => match copied {
            Ok(_) => (Closed::Complete, None),
            Err(err) => {
                let closed = match traffic.failed_side() {
                    Some(Side::Backend) => Closed::UpstreamFailed,
                    _ => Closed::ClientGone,
                };
                (closed, Some(err.to_string()))
            }
        },
        () = traffic.idle(pending.idle) => (Closed::Idle, None),
        () = session_ended => (Closed::SessionEnded, None),
        () = closing.cancelled() => (Closed::Drained, None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client = 1,
    Backend = 2,
}

/// When bytes last moved through a tunnel, and which side failed first.
struct Traffic {
    opened: Instant,
    /// Milliseconds since `opened`.
    last: AtomicU64,
    failed: AtomicU8,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            failed: AtomicU8::new(0),
        }
    }

    fn moved(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Release);
    }

    fn failed(&self, side: Side) {
        let _ = self
            .failed
            .compare_exchange(0, side as u8, Ordering::AcqRel, Ordering::Relaxed);
    }

    fn failed_side(&self) -> Option<Side> {
        match self.failed.load(Ordering::Acquire) {
            1 => Some(Side::Client),
            2 => Some(Side::Backend),
            _ => None,
        }
    }

    /// Completes once no byte has moved for `limit`. Sleeps until the deadline the last move
    /// sets, so a busy tunnel costs one timer wake-up per `limit`, not one per byte.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Acquire));
            let at = self.opened + last + limit;
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// One side's connection, noting every byte read from it and its first failure.
struct Watched<T> {
    inner: T,
    side: Side,
    traffic: Arc<Traffic>,
}

impl<T> Watched<T> {
    fn new(inner: T, side: Side, traffic: Arc<Traffic>) -> Watched<T> {
        Watched {
            inner,
            side,
            traffic,
        }
    }

    fn note<R>(&self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = &polled {
            self.traffic.failed(self.side);
        }
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.traffic.moved();
        }
        this.note(polled)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(polled)
    }
}
