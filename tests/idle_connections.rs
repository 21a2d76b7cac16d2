//! Idle HTTP/1.1 keep-alive connections are parked: hyper lets go of them (and of its
//! buffers) after half a second without a request, and a fresh hyper connection serves the
//! next one. Nothing of that may show: bytes read ahead are kept, the deadlines still hold,
//! the drain closes parked connections at once. Real sockets, a real backend.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{config, read_whole_response, Backend, Proxy};

/// Longer than the proxy waits before it parks a quiet connection (500 ms).
const PARKED: Duration = Duration::from_millis(1200);

async fn connect(proxy: &Proxy) -> TcpStream {
    TcpStream::connect(proxy.addr).await.expect("connect")
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests() {
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&config("memory://", &[&backend])).await;
    let mut stream = connect(&proxy).await;
    for round in 0..3 {
        let round = round.to_string();
        stream
            .write_all(
                format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Round: {round}\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
        let response = read_whole_response(&mut stream).await.expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.backend_saw("x-round").as_deref(),
            Some(round.as_str())
        );
        tokio::time::sleep(PARKED).await;
    }
}

/// The client sent the start of its next request with the previous one (pipelining): hyper
/// had read those bytes when the connection was parked, and they are read again first.
#[tokio::test]
async fn bytes_read_ahead_survive_parking() {
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&config("memory://", &[&backend])).await;
    let mut stream = connect(&proxy).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Round: first\r\n\r\nGET / HTTP/1.1\r\nX-Round: second\r\nHo")
        .await
        .expect("write");
    let first = read_whole_response(&mut stream).await.expect("a response");
    assert_eq!(first.backend_saw("x-round").as_deref(), Some("first"));
    tokio::time::sleep(PARKED).await;
    stream
        .write_all(b"st: app.test\r\n\r\n")
        .await
        .expect("write");
    let second = read_whole_response(&mut stream).await.expect("a response");
    assert_eq!(second.status, 200);
    assert_eq!(second.backend_saw("x-round").as_deref(), Some("second"));
}

#[tokio::test]
async fn the_drain_closes_parked_connections_at_once() {
    let backend = Backend::start("app").await;
    let yaml = format!(
        "{}timeouts:\n  shutdown_grace: 20s\n",
        config("memory://", &[&backend])
    );
    let mut proxy = Proxy::start(&yaml).await;
    let mut stream = connect(&proxy).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    assert!(read_whole_response(&mut stream).await.is_some());
    tokio::time::sleep(PARKED).await;
    proxy.begin_shutdown();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a parked connection outlived the drain's start"
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}
