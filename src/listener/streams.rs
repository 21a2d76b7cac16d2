//! HTTP/2 streams under the client's write deadline.
//!
//! An HTTP/2 client that stops reading need not fill any socket buffer: it just stops opening
//! its flow-control windows, and hyper then waits for window space without polling the
//! response body, or anything of ours, again. Nothing on the request path runs to notice. So
//! each stream hyper spawns runs beside a watch: the response body marks when it handed hyper
//! a frame and when hyper came back for the next; a stream left waiting for the client for
//! `client_write_idle` is dropped, which makes h2 reset it (`RST_STREAM`, `CANCEL`) and frees
//! what it held, while the connection's other streams go on.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

tokio::task_local! {
    static STREAM: StreamWatch;
}

/// Spawns hyper's HTTP/2 stream tasks, each under its watch.
#[derive(Clone, Copy)]
pub struct StreamExecutor {
    pub client_write_idle: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = StreamWatch::new();
        let idle = self.client_write_idle;
        tokio::spawn(async move {
            let served = STREAM.scope(watch.clone(), stream);
            tokio::select! {
                _ = served => {}
                () = watch.expiry(idle) => {}
            }
        });
    }
}

const NOT_WAITING: u64 = u64::MAX;

/// When one stream's response started waiting for the client, if it is.
#[derive(Clone)]
pub struct StreamWatch(Arc<Watch>);

struct Watch {
    born: Instant,
    /// Milliseconds since `born`, or `NOT_WAITING`.
    waiting_since: AtomicU64,
    expired: AtomicBool,
}

impl StreamWatch {
    fn new() -> StreamWatch {
        StreamWatch(Arc::new(Watch {
            born: Instant::now(),
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
        let now = u64::try_from(self.0.born.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1);
        self.0.waiting_since.store(now, Ordering::Release);
    }

    /// hyper is back for more: the client is not holding the stream up.
    pub fn resumed(&self) {
        self.0.waiting_since.store(NOT_WAITING, Ordering::Release);
    }

    /// True once the stream was dropped for its client's stall.
    pub fn expired(&self) -> bool {
        self.0.expired.load(Ordering::Acquire)
    }

    /// Completes when the stream has waited for its client for `idle` in one stretch. While it
    /// is not waiting, it looks again every `idle`: a stretch that starts in between is seen
    /// before it can have lasted `idle`, so none is caught late.
    async fn expiry(&self, idle: Duration) {
        loop {
            let since = self.0.waiting_since.load(Ordering::Acquire);
            if since == NOT_WAITING {
                tokio::time::sleep(idle).await;
                continue;
            }
            let at = self.0.born + Duration::from_millis(since) + idle;
            tokio::time::sleep_until(at.into()).await;
            if self.0.waiting_since.load(Ordering::Acquire) == since {
                self.0.expired.store(true, Ordering::Release);
                return;
            }
        }
    }
}
