//! The listener: accepts connections, serves each with hyper (HTTP/1.1 and h2c) under the
//! connection deadlines of `deadline`, and drains gracefully on shutdown.

mod deadline;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::config::{Limits, Settings, Timeouts};
use crate::proxy::Proxy;
use crate::store::{Store, StoreError};
use deadline::{Activity, Deadlines, TrackedBody, WatchedIo};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the session store")]
    Store(#[source] StoreError),
}

/// A bound proxy, ready to serve.
pub struct Server {
    listener: TcpListener,
    proxy: Arc<Proxy>,
    timeouts: Timeouts,
    limits: Limits,
}

impl Server {
    /// Opens the store and binds the listener; nothing is served until `run`.
    pub async fn bind(settings: &Settings) -> Result<Server, StartError> {
        let store = Store::open(&settings.store).map_err(StartError::Store)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            proxy: Arc::new(Proxy::new(settings, store)),
            timeouts: settings.timeouts,
            limits: settings.limits,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        self.proxy.store()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish for up to `timeouts.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        // No hyper header timeout: `deadline` keeps header-read and keep-alive idle apart.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Heads past these limits get 431 from hyper before any of our code runs.
        builder
            .http1()
            .max_headers(self.limits.max_request_headers)
            .max_buf_size(self.limits.max_request_head_bytes);
        // HTTP/2 abuse: streams reset by the client before we accept them (CVE-2023-44487,
        // "rapid reset") and streams we had to reset are capped; past that the connection is
        // closed. hyper's defaults, made explicit so they are part of our contract.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024)
            .max_concurrent_streams(250)
            .max_header_list_size(
                u32::try_from(self.limits.max_request_head_bytes).unwrap_or(u32::MAX),
            );
        // At the cap, the next connection waits in the kernel's listen backlog until one
        // ends: the process stays within its file descriptors and memory.
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let limits = Deadlines {
            header_read: self.timeouts.header_read,
            keepalive_idle: self.timeouts.keepalive_idle,
        };
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let proxy = self.proxy.clone();
                        let activity = Activity::new();
                        let busy = activity.clone();
                        let service = service_fn(move |request| {
                            let proxy = proxy.clone();
                            let in_flight = busy.request_started();
                            async move {
                                let response = proxy.handle(request, peer).await;
                                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_flight)))
                            }
                        });
                        let io = TokioIo::new(WatchedIo::new(stream, activity.clone()));
                        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
                        tokio::spawn(async move {
                            let _slot = slot;
                            match deadline::serve(connection, &activity, limits).await {
                                Some(Err(err)) => tracing::debug!(%peer, error = %err, "connection ended with an error"),
                                Some(Ok(())) => {}
                                None => tracing::debug!(%peer, "connection closed: header or keep-alive deadline"),
                            }
                        });
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        info!(
            connections = graceful.count(),
            "shutting down: draining in-flight requests"
        );
        match tokio::time::timeout(self.timeouts.shutdown_grace, graceful.shutdown()).await {
            Ok(()) => info!("drained"),
            Err(_) => {
                warn!(grace = ?self.timeouts.shutdown_grace, "grace period over; cutting remaining connections")
            }
        }
    }
}
