//! The listener: accepts connections, serves each with hyper (HTTP/1.1 and h2c, or HTTPS
//! through `tls`) under the connection deadlines of `deadline` and the limits of the live
//! configuration, runs the admin listener beside it, and drains gracefully on shutdown.

mod deadline;
mod parking;
mod streams;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::admin;
use crate::config::{Settings, Timeouts};
use crate::context::{Connection, ConnectionSlot};
use crate::notify;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::store::{Store, StoreError};
use deadline::{Activity, Deadlines, TrackedBody, WatchedIo};
use streams::StreamExecutor;
use tls::TlsFront;

use crate::worker::{Worker, Workers};

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
    #[error("cannot set up TLS on the listener")]
    Tls(#[source] rustls::Error),
    #[error("cannot start the worker threads")]
    Workers(#[source] io::Error),
}

/// A bound proxy (and admin listener, when configured), ready to serve.
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    proxy: Arc<Proxy>,
    /// One permit per client connection (`limits.max_connections`).
    slots: Arc<Semaphore>,
    /// With `tls`: every connection is a TLS one.
    tls: Option<TlsFront>,
    /// Where accepted connections are served.
    workers: Workers,
}

/// Binds with our own backlog (tokio's `TcpListener::bind` uses a fixed one), and with
/// `SO_REUSEADDR` as std and tokio set it, so a restart does not wait out `TIME_WAIT`.
fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, StartError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    socket
        .and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(backlog)
        })
        .map_err(|source| StartError::Bind { addr, source })
}

impl Server {
    /// Opens the store and binds the listeners; nothing is served until `run`.
    pub async fn bind(settings: &Settings) -> Result<Server, StartError> {
        let store = Store::open(&settings.store).map_err(StartError::Store)?;
        let backlog = settings.limits.listen_backlog;
        let listener = bind(settings.listen, backlog)?;
        let admin = match &settings.admin {
            Some(admin) => Some(bind(admin.listen, backlog)?),
            None => None,
        };
        let tls = match &settings.tls {
            Some(certificate) => Some(TlsFront::new(certificate).map_err(StartError::Tls)?),
            None => None,
        };
        let proxy = Arc::new(Proxy::new(settings.clone(), store));
        let workers = Workers::start(&proxy, &settings.store).map_err(StartError::Workers)?;
        Ok(Server {
            tls,
            listener,
            admin,
            slots: Arc::new(Semaphore::new(settings.limits.max_connections)),
            proxy,
            workers,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    pub fn store(&self) -> &Store {
        self.proxy.store()
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Applies new configurations while `run` serves.
    pub fn reloader(&self) -> Reloader {
        Reloader::new(
            self.proxy.clone(),
            self.slots.clone(),
            self.tls.as_ref().map(TlsFront::resolver),
        )
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish for up to `timeouts.shutdown_grace`. Readiness answers 503 from that moment.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let admin = self
            .admin
            .map(|listener| tokio::spawn(admin::serve(listener, self.proxy.clone())));
        let graceful = GracefulShutdown::new();
        // Tells parked HTTP/1.1 connections (`parking`) that the drain began; hyper's own
        // connections hear it from `graceful`.
        let drain = tokio_util::sync::CancellationToken::new();
        tokio::pin!(shutdown);
        loop {
            // At the cap, the next connection waits in the kernel's listen backlog until one
            // ends: the process stays within its file descriptors and memory.
            let slot = tokio::select! {
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let local = stream.local_addr().unwrap_or(peer);
                        let _ = stream.set_nodelay(true);
                        // Handed over as a plain socket: it joins the worker's own reactor.
                        let stream = match stream.into_std() {
                            Ok(stream) => stream,
                            Err(err) => {
                                warn!(error = %err, "cannot hand a connection to a worker");
                                continue;
                            }
                        };
                        let connection = Connection { peer, local, slot: None, tls: false };
                        let (proxy, tls, watcher) = (self.proxy.clone(), self.tls.clone(), graceful.watcher());
                        let drain = drain.clone();
                        self.workers.spawn(move |worker| async move {
                            let stream = match TcpStream::from_std(stream) {
                                Ok(stream) => stream,
                                Err(err) => {
                                    warn!(error = %err, "a worker cannot take a connection");
                                    return;
                                }
                            };
                            match tls {
                                None => {
                                    let open = proxy.metrics().open_connections.clone();
                                    let connection = Connection {
                                        slot: Some(ConnectionSlot::new(slot, open)),
                                        ..connection
                                    };
                                    parking::serve(proxy, worker, watcher, drain, stream, connection);
                                }
                                Some(tls) => tls.accept(&proxy, worker, watcher, stream, connection, slot),
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
        drain.cancel();
        self.proxy.start_draining();
        notify::stopping();
        info!(
            connections = graceful.count(),
            "shutting down: draining in-flight requests"
        );
        let grace = self.proxy.live().settings.timeouts.shutdown_grace;
        // Upgraded connections are no longer hyper's: they are waited for beside it.
        let tunnels = self.proxy.tunnels();
        let drained = async {
            graceful.shutdown().await;
            tunnels.closed().await;
        };
        match tokio::time::timeout(grace, drained).await {
            Ok(()) => info!("drained"),
            Err(_) => {
                warn!(
                    ?grace,
                    tunnels = tunnels.len(),
                    "grace period over; cutting remaining connections and tunnels"
                );
                // Closed tunnels write their access lines; a moment for them to do so.
                tunnels.close_all();
                let _ = tokio::time::timeout(Duration::from_secs(1), tunnels.closed()).await;
            }
        }
        if let Some(admin) = admin {
            admin.abort();
        }
    }
}

/// Serves one client connection under the limits and deadlines of the configuration live
/// when it opened. `h2`: the client chose HTTP/2 by ALPN, so no protocol detection.
fn serve_connection<S>(
    proxy: &Arc<Proxy>,
    worker: Arc<Worker>,
    graceful: Watcher,
    stream: S,
    connection: Connection,
    h2: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let live = proxy.live();
    let builder = http_builder(&live.settings, &activity);
    let builder = if h2 { builder.http2_only() } else { builder };
    let timeouts = live.settings.timeouts;
    let deadlines = Deadlines {
        header_read: timeouts.header_read,
        keepalive_idle: timeouts.keepalive_idle,
    };
    drop(live);
    let write_idle = timeouts.client_write_idle;
    let peer = connection.peer;
    let service = ConnectionService::new(
        proxy.clone(),
        worker,
        connection,
        activity.clone(),
        write_idle,
    );
    let io = TokioIo::new(WatchedIo::new(stream, activity.clone(), write_idle));
    let served = graceful.watch(
        builder
            .serve_connection_with_upgrades(io, service)
            .into_owned(),
    );
    tokio::spawn(async move {
        match deadline::serve(served, &activity, deadlines).await {
            Some(Err(err)) => {
                tracing::debug!(%peer, error = %err, "connection ended with an error")
            }
            Some(Ok(())) => {}
            None => tracing::debug!(%peer, "connection closed: header or keep-alive deadline"),
        }
    });
}

/// What hyper calls for each request of one connection.
#[derive(Clone)]
struct ConnectionService {
    proxy: Arc<Proxy>,
    worker: Arc<Worker>,
    /// Shared by the connection's requests; its slot is released when hyper drops the
    /// service at the connection's end, or later by a tunnel that took a clone.
    connection: Arc<Connection>,
    activity: Activity,
    write_idle: Duration,
}

impl ConnectionService {
    fn new(
        proxy: Arc<Proxy>,
        worker: Arc<Worker>,
        connection: Connection,
        activity: Activity,
        write_idle: Duration,
    ) -> ConnectionService {
        ConnectionService {
            proxy,
            worker,
            connection: Arc::new(connection),
            activity,
            write_idle,
        }
    }
}

type Served = Result<Response<TrackedBody>, Infallible>;

impl Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    // Boxed: hyper keeps room for the service's future for the connection's whole life, and
    // the request path's future is large. Boxed, an idle connection holds a pointer instead,
    // and each request allocates its own.
    type Future = Pin<Box<dyn Future<Output = Served> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let proxy = self.proxy.clone();
        let connection = self.connection.clone();
        let worker = self.worker.clone();
        let in_flight = self.activity.request_started();
        let write_idle = self.write_idle;
        Box::pin(async move {
            let response = proxy.handle(request, &connection, &worker).await;
            Ok(response.map(|body| TrackedBody::new(body, in_flight, write_idle)))
        })
    }
}

/// HTTP/1.1 server settings for hyper's own builder (`parking`). `http_builder` sets the
/// same two limits on the detecting builder, whose HTTP/1.1 half is another type: change
/// them together.
fn configure_http1(http1: &mut hyper::server::conn::http1::Builder, settings: &Settings) {
    let limits = &settings.limits;
    http1
        .max_headers(limits.max_request_headers)
        .max_buf_size(limits.max_request_head_bytes);
}

/// The HTTP/1.1 and HTTP/2 server settings for a connection. No hyper header timeout:
/// `deadline` keeps header-read and keep-alive idle apart.
///
/// Memory per connection is bounded by these buffers and windows, whatever the client does:
/// hyper stops reading the backend while the client's side is full, so a slow reader holds at
/// most one write buffer and one backend read buffer (`upstream`), and an HTTP/2 client can
/// make us hold at most a connection window of request body it sent ahead.
fn http_builder(settings: &Settings, connection: &Activity) -> auto::Builder<StreamExecutor> {
    let limits = &settings.limits;
    let Timeouts {
        client_write_idle, ..
    } = settings.timeouts;
    let mut builder = auto::Builder::new(StreamExecutor {
        client_write_idle,
        connection: connection.clone(),
    });
    // Heads past these limits get 431 from hyper before any of our code runs. The same size
    // caps what hyper queues for writing before it stops pulling the response body. Parked
    // HTTP/1.1 connections get the same from `configure_http1`.
    builder
        .http1()
        .max_headers(limits.max_request_headers)
        .max_buf_size(limits.max_request_head_bytes);
    // HTTP/2 abuse: streams reset by the client before we accept them (CVE-2023-44487,
    // "rapid reset") and streams we had to reset are capped; past that the connection is
    // closed. Windows as nginx's (64 KiB a stream, as the protocol's default; hyper's are
    // 1 MiB), so a client's unread request bodies cost at most a connection window.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(SEND_BUFFER)
        .max_header_list_size(u32::try_from(limits.max_request_head_bytes).unwrap_or(u32::MAX));
    builder
}

const MAX_CONCURRENT_STREAMS: u32 = 128;
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes queued per stream ahead of the client's window.
const SEND_BUFFER: usize = 64 * 1024;
