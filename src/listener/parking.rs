//! Plain HTTP/1.1 connections parked between requests.
//!
//! hyper holds an 8 KiB read buffer and an 8 KiB write buffer for each connection for as long
//! as it serves it, so 10,000 idle keep-alive connections (a load balancer's pool, or an
//! attacker's) cost 200 MB and more. nginx frees its buffers when a connection goes idle; we
//! do the same by letting hyper go: once a connection has had nothing in flight and no byte
//! of a new request for `PARK_AFTER`, hyper is asked to end it gracefully without closing the
//! socket (`Activity::set_parking` makes `WatchedIo` skip the shutdown), and hands back the
//! socket and whatever it had read but not yet used. The parked connection is then just the
//! socket, waiting to become readable under the keep-alive deadline; its next request gets a
//! fresh hyper connection, which first reads the bytes handed back.
//!
//! A busy connection (requests less than `PARK_AFTER` apart) is never parked, so a steady
//! load pays nothing for this. An HTTP/2 (h2c) connection is served as before, unparked.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::deadline::{Activity, Deadlines, WatchedIo};
use super::ConnectionService;
use crate::context::Connection;
use crate::proxy::Proxy;
use crate::worker::Worker;

/// How long a connection must be quiet before hyper lets go of it. Far above the gaps of a
/// connection under load, far below a load balancer's idle keep-alive.
const PARK_AFTER: Duration = Duration::from_millis(500);

/// The first bytes of the HTTP/2 connection preface, which no HTTP/1.1 method begins with.
const H2_PREFACE: &[u8] = b"PRI";

/// Serves one plain-TCP client connection: HTTP/1.1 with parking, or h2c as before.
pub(super) fn serve(
    proxy: Arc<Proxy>,
    worker: Arc<Worker>,
    watcher: Watcher,
    drain: CancellationToken,
    stream: TcpStream,
    connection: Connection,
) {
    tokio::spawn(async move {
        let live = proxy.live();
        let timeouts = live.settings.timeouts;
        let deadlines = Deadlines {
            header_read: timeouts.header_read,
            keepalive_idle: timeouts.keepalive_idle,
        };
        let mut http1 = hyper::server::conn::http1::Builder::new();
        super::configure_http1(&mut http1, &live.settings);
        drop(live);
        let activity = Activity::new();
        let peer = connection.peer;

        // Only the first bytes tell HTTP/1.1 from h2c; they are peeked, not read.
        let mut first = [0u8; 3];
        let peeked = tokio::select! {
            peeked = stream.peek(&mut first) => peeked,
            () = until_deadline(&activity, &deadlines) => return,
            () = drain.cancelled() => return,
        };
        let seen = match peeked {
            Ok(0) | Err(_) => return,
            Ok(seen) => seen,
        };
        if H2_PREFACE.starts_with(&first[..seen]) {
            // h2c, or too few bytes to tell: hyper's own detection, unparked.
            super::serve_connection(&proxy, worker, watcher, stream, connection, false);
            return;
        }
        // Counted by the graceful shutdown until this task ends; `drain` says when it begins.
        let _counted = watcher;

        let write_idle = timeouts.client_write_idle;
        let mut service =
            ConnectionService::new(proxy, worker, connection, activity.clone(), write_idle);
        let mut io = WatchedIo::new(Replay::new(stream), activity.clone(), write_idle);
        loop {
            if !io.get_ref().has_replay() {
                // Parked: nothing held but the socket, a timer and this task.
                tokio::select! {
                    ready = io.get_ref().inner.readable() => if ready.is_err() { return },
                    () = until_deadline(&activity, &deadlines) => return,
                    () = drain.cancelled() => return,
                }
            }
            // Bytes are waiting (or the end): a head has begun, so the connection is not quiet
            // and `drive` does not park it again before hyper has read them.
            activity.saw_bytes();
            activity.set_parking(false);
            let conn = http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            // Boxed, so that the hyper connection and its timers take no room in this task
            // while it is parked.
            let (ended, conn) = Box::pin(async {
                let mut conn = conn;
                let ended = drive(&mut conn, &activity, &deadlines, &drain).await;
                (ended, conn)
            })
            .await;
            match ended {
                Ended::Parked => {}
                Ended::Closed => return,
                Ended::Failed(err) => {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                    return;
                }
            }
            // `None` once upgraded: the tunnel has the socket.
            let Some(parts) = conn.into_parts() else {
                return;
            };
            io = parts.io.into_inner();
            io.get_mut().replay(parts.read_buf);
            service = parts.service;
        }
    });
}

enum Ended {
    /// hyper let go of the connection at our request; it stays open.
    Parked,
    /// The client closed it, a deadline passed, or the drain ended it.
    Closed,
    Failed(hyper::Error),
}

/// Serves requests until the connection ends, a deadline passes, or it has been quiet for
/// `PARK_AFTER` (then hyper is asked to let go, and does so at once: nothing is in flight).
///
/// Nothing wakes this loop when a request starts or ends: under load that would be two
/// wake-ups (and two timers) per request. It looks at the connection at least every `step`
/// instead, and sleeps exactly until a deadline or the parking time once it has seen them.
async fn drive<C>(
    conn: &mut C,
    activity: &Activity,
    deadlines: &Deadlines,
    drain: &CancellationToken,
) -> Ended
where
    C: std::future::Future<Output = hyper::Result<()>> + GracefulShutdown + Unpin,
{
    let step = millis(
        PARK_AFTER
            .min(deadlines.header_read)
            .min(deadlines.keepalive_idle),
    );
    let park_after = millis(PARK_AFTER);
    let mut parking = false;
    let mut draining = false;
    loop {
        let now = activity.now();
        let deadline = activity.deadline(deadlines);
        if deadline.is_some_and(|at| at <= now) {
            return Ended::Closed;
        }
        let quiet = activity.quiet_since().filter(|_| !parking && !draining);
        if quiet.is_some_and(|since| since.saturating_add(park_after) <= now) {
            parking = true;
            activity.set_parking(true);
            Pin::new(&mut *conn).shut_down();
        }
        let mut wake = now.saturating_add(step);
        if let Some(at) = deadline {
            wake = wake.min(at);
        }
        if let Some(since) = quiet.filter(|_| !parking) {
            wake = wake.min(since.saturating_add(park_after));
        }
        tokio::select! {
            done = &mut *conn => return match done {
                Ok(()) if parking => Ended::Parked,
                Ok(()) => Ended::Closed,
                Err(err) => Ended::Failed(err),
            },
            () = tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now).max(1))) => {}
            () = activity.client_stalled() => return Ended::Closed,
            () = drain.cancelled(), if !draining => {
                // In-flight requests finish; the socket is then shut down, not parked.
                draining = true;
                parking = false;
                activity.set_parking(false);
                Pin::new(&mut *conn).shut_down();
            }
        }
    }
}

/// hyper's graceful shutdown, for `drive`.
trait GracefulShutdown {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulShutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Completes when the connection's header-read or keep-alive deadline passes.
async fn until_deadline(activity: &Activity, deadlines: &Deadlines) {
    loop {
        let now = activity.now();
        match activity.deadline(deadlines) {
            Some(at) if at <= now => return,
            Some(at) => tokio::time::sleep(Duration::from_millis(at - now)).await,
            None => tokio::time::sleep(deadlines.keepalive_idle).await,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The socket, with bytes hyper read but did not use given back to be read first.
pub struct Replay {
    pending: Bytes,
    inner: TcpStream,
}

impl Replay {
    fn new(inner: TcpStream) -> Replay {
        Replay {
            pending: Bytes::new(),
            inner,
        }
    }

    fn has_replay(&self) -> bool {
        !self.pending.is_empty()
    }

    fn replay(&mut self, unread: Bytes) {
        if unread.is_empty() {
            return;
        }
        self.pending = if self.pending.is_empty() {
            unread
        } else {
            let mut both = BytesMut::with_capacity(unread.len() + self.pending.len());
            both.extend_from_slice(&unread);
            both.extend_from_slice(&self.pending);
            both.freeze()
        };
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
