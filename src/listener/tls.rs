//! HTTPS on the proxy listener (`tls:`): the handshake, under `timeouts.tls_handshake` and
//! holding the connection's slot, then the connection is served as a plain one is, over the
//! TLS stream, HTTP/2 directly when the client chose `h2` by ALPN.
//!
//! Handshake failures are the internet's background noise (scanners, old clients, port
//! probes), so they are logged at debug and counted, never warned about.

use std::sync::Arc;

use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::certificate::{self, CertResolver, ServerCertificate};
use crate::context::{Connection, ConnectionSlot};
use crate::proxy::Proxy;
use crate::worker::Worker;

/// ALPN: HTTP/2 first, as browsers and an ALB's HTTPS target group (with HTTP/2 as its
/// protocol version) prefer it; HTTP/1.1 for everyone else.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The listener's TLS side: one rustls configuration for its whole life, whose certificate
/// comes from `resolver` (swapped by reloads).
#[derive(Clone)]
pub struct TlsFront {
    acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
}

impl TlsFront {
    pub fn new(certificate: &ServerCertificate) -> Result<TlsFront, rustls::Error> {
        let resolver = Arc::new(CertResolver::new(certificate.key.clone()));
        // TLS 1.2 is the floor (RFC 8996 deprecates 1.0 and 1.1; an ALB negotiates 1.2 with its
        // targets); rustls speaks nothing older anyway.
        let mut config = rustls::ServerConfig::builder_with_provider(certificate::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(TlsFront {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
        })
    }

    /// Where reloads put a new certificate.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// Runs the handshake on its own task (the accept loop goes on meanwhile), then serves the
    /// connection. The slot is held from the accept on: a client mid-handshake counts against
    /// `limits.max_connections` like any other.
    pub fn accept(
        &self,
        proxy: &Arc<Proxy>,
        worker: Arc<Worker>,
        watcher: Watcher,
        stream: TcpStream,
        connection: Connection,
        slot: OwnedSemaphorePermit,
    ) {
        let acceptor = self.acceptor.clone();
        let proxy = proxy.clone();
        let limit = proxy.live().settings.timeouts.tls_handshake;
        tokio::spawn(async move {
            let peer = connection.peer;
            let stream = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    debug!(%peer, error = %err, "TLS handshake failed");
                    proxy.metrics().tls_handshake_failed("error");
                    return;
                }
                Err(_) => {
                    debug!(%peer, ?limit, "TLS handshake timed out");
                    proxy.metrics().tls_handshake_failed("timeout");
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
            // Counted open from here: a handshake that fails never served anything.
            let open = proxy.metrics().open_connections.clone();
            let connection = Connection {
                tls: true,
                slot: Some(ConnectionSlot::new(slot, open)),
                ..connection
            };
            super::serve_connection(&proxy, worker, watcher, stream, connection, h2);
        });
    }
}
