//! HTTP/2 streams under the client's write deadline.
//!
//! An HTTP/2 client that stops reading need not fill any socket buffer: it just stops opening
//! its flow-control windows, and hyper then waits for window space without polling the
//! response body, or anything of ours, again. Nothing on the request path runs to notice. So
//! each stream hyper spawns runs beside a watch: the response body marks when it handed hyper
//! a frame and when hyper came back for the next. A stream left waiting for the client for
//! `client_write_idle` is dropped, which makes h2 reset it (`RST_STREAM`, `CANCEL`) and frees
//! what it held. If no other stream of the connection got bytes through meanwhile, the client
//! is reading nothing at all, and the connection is closed, as an HTTP/1.1 client's would be.
//! A client that keeps reading its other streams keeps them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::deadline::Activity;

tokio::task_local! {
    static STREAM: StreamWatch;
}

/// Spawns hyper's HTTP/2 stream tasks of one connection, each under its watch.
#[derive(Clone)]
pub struct StreamExecutor {
    pub client_write_idle: Duration,
    pub connection: Activity,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = StreamWatch::new(self.connection.clone());
        let idle = self.client_write_idle;
        tokio::spawn(async move {
            let served = STREAM.scope(watch.clone(), stream);
            tokio::select! {
                _ = served => {}
                since = watch.expiry(idle) => {
                    if !watch.0.connection.streams_progressed_after(since) {
                        watch.0.connection.disconnect_stalled();
                    }
                }
            }
        });
    }
}

const NOT_WAITING: u64 = u64::MAX;

/// When one stream's response started waiting for the client, if it is.
#[derive(Clone)]
pub struct StreamWatch(Arc<Watch>);

struct Watch {
    connection: Activity,
    /// On the connection's clock (`Activity::micros`), or `NOT_WAITING`.
    waiting_since: AtomicU64,
    expired: AtomicBool,
}

impl StreamWatch {
    fn new(connection: Activity) -> StreamWatch {
        StreamWatch(Arc::new(Watch {
            connection,
            waiting_since: AtomicU64::new(NOT_WAITING),
            expired: AtomicBool::new(false),
        }))
    }

    /// The watch of the HTTP/2 stream this task serves; none on HTTP/1.1, whose slow clients
    /// fill the socket and meet `WatchedIo`'s deadline.
    pub fn current() -> Option<StreamWatch> {
        STREAM.try_with(StreamWatch::clone).ok()
    }

    /// A frame went to hyper; the next poll comes when the client has room for more.
    pub fn waiting_for_client(&self) {
        let now = self.0.connection.micros();
        self.0.waiting_since.store(now, Ordering::Release);
    }

    /// hyper is back for more: the client is not holding the stream up.
    pub fn resumed(&self) {
        if self.0.waiting_since.swap(NOT_WAITING, Ordering::AcqRel) != NOT_WAITING {
            self.0.connection.stream_progressed();
        }
    }

    /// The whole body went to hyper: nothing more waits on this client for this stream.
    pub fn finished(&self) {
        self.0.waiting_since.store(NOT_WAITING, Ordering::Release);
        self.0.connection.stream_progressed();
    }

    /// True once the stream was dropped for its client's stall.
    pub fn expired(&self) -> bool {
        self.0.expired.load(Ordering::Acquire)
    }

    /// Completes when the stream has waited for its client for `idle` in one stretch, with
    /// when that stretch began. While it is not waiting, it looks again every `idle`: a
    /// stretch that starts in between is seen before it can have lasted `idle`, so none is
    /// caught late.
    async fn expiry(&self, idle: Duration) -> u64 {
        loop {
            let since = self.0.waiting_since.load(Ordering::Acquire);
            if since == NOT_WAITING {
                tokio::time::sleep(idle).await;
                continue;
            }
            let at = self.0.connection.instant_at(since) + idle;
            tokio::time::sleep_until(at.into()).await;
            if self.0.waiting_since.load(Ordering::Acquire) == since {
                self.0.expired.store(true, Ordering::Release);
                return since;
            }
        }
    }
}
