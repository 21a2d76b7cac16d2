//! Workers: one thread per core, each with its own single-threaded Tokio runtime, its own
//! upstream connection pool and its own store connection. The listener hands each accepted
//! connection to one worker, and everything that connection causes (hyper's connection task,
//! the upstream exchange and its connection task, the store round trip and the Redis
//! connection's driver) then runs on that worker's thread.
//!
//! Why not one work-stealing runtime: there, a request's tasks wake one another across
//! threads (the client connection, the pooled upstream connection, the multiplexed Redis
//! connection each have a task of their own, wherever the scheduler put it), and on a loaded
//! two-core machine those cross-thread wake-ups and their futex calls cost about a quarter
//! of the proxy's CPU per request (`perf stat`: CPU, context switches and futex calls per
//! request; see "Benchmarks" in the README). A worker wakes only itself, as an nginx worker
//! does.
//!
//! What outlives reloads and is shared (the live configuration, upstream health, metrics,
//! tunnels) stays in `Proxy`; a worker only holds connections.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tracing::warn;

use crate::config::StoreSettings;
use crate::proxy::Proxy;
use crate::store::Store;
use crate::upstream::UpstreamClient;

/// The connections of one worker thread, used by every request it serves.
pub struct Worker {
    pub upstream: UpstreamClient,
    pub store: Store,
}

impl Worker {
    /// Its own pool and store connection, configured as the proxy's (the upstream connect
    /// timeout follows reloads, as the proxy's does). A Redis store that cannot be opened a
    /// second time (it opened once with the same settings, so this is not expected) falls
    /// back to the proxy's shared connection rather than failing.
    fn new(proxy: &Proxy, store: &StoreSettings) -> Worker {
        let store = proxy.store().sibling(store).unwrap_or_else(|err| {
            warn!(error = %crate::report::chain(&err), "worker: sharing the proxy's store connection");
            proxy.store().clone()
        });
        Worker {
            upstream: proxy.upstream().sibling(),
            store,
        }
    }
}

/// The worker threads; stopped when dropped (their remaining connections are cut, as the
/// end of `Server::run` always did).
pub struct Workers {
    threads: Vec<Thread>,
    next: AtomicUsize,
}

struct Thread {
    runtime: Handle,
    worker: Arc<Worker>,
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// One worker per CPU the process may use (`STICKLESS_WORKERS` overrides it).
    pub fn start(proxy: &Proxy, store: &StoreSettings) -> std::io::Result<Workers> {
        let count = std::env::var("STICKLESS_WORKERS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .or_else(|| thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            // The runtime is made and dropped on its own thread: dropping one inside the
            // caller's async context would panic.
            let (started, handle) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            thread::Builder::new()
                .name(format!("stickless-worker-{index}"))
                .spawn(move || {
                    let runtime = match Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            let _ = started.send(Err(err));
                            return;
                        }
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let runtime = handle
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended at start"))??;
            // Made inside the worker's runtime: a Sentinel store starts its watcher on it.
            let worker = {
                let _entered = runtime.enter();
                Arc::new(Worker::new(proxy, store))
            };
            threads.push(Thread {
                runtime,
                worker,
                _stop: stop,
            });
        }
        Ok(Workers {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `work` on the next worker, in turn: connections from a load balancer are many and
    /// alike, so turns spread them as evenly as counting would.
    pub fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<Worker>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let thread = &self.threads[turn];
        let worker = thread.worker.clone();
        thread.runtime.spawn(async move { work(worker).await });
    }
}
