//! Request smuggling: ambiguous framing is refused in both directions, and what reaches the
//! backend is always framed one way. Raw bytes on real sockets.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{config, Backend, Proxy, RawResponse};

async fn send_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut raw),
    )
    .await;
    raw
}

fn statuses(raw: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(raw)
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| String::from_utf8_lossy(&raw[i + 9..i + 12]).parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_request_framing_is_refused() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config("memory://", &[&backend])).await;
    // CL.TE / TE.CL: both framings at once. Read by Transfer-Encoding alone (RFC 9112 §6.1),
    // answered once, and the connection closed: what a front end that went by Content-Length
    // would take for a second request is never read.
    let before = backend.seen().len();
    let raw = send_raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&raw).len(), 1, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(
        backend.seen().len(),
        before + 1,
        "the smuggled request reached the backend"
    );
    let before = backend.seen().len();

    let cases: &[&[u8]] = &[
        // Two different lengths.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        // A transfer coding that is not chunked last.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        // Obfuscated transfer-encoding names.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        // Obsolete line folding.
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        // A NUL in a header value. (A bare LF is accepted as a line end, as RFC 9112 §2.2
        // allows and hyper does; see the README's limits.)
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Evil: a\0b\r\n\r\n",
        // A malformed chunk size.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
    ];
    for case in cases {
        let raw = send_raw(proxy.addr, case).await;
        let seen = statuses(&raw);
        let printable = String::from_utf8_lossy(case).into_owned();
        assert!(!seen.is_empty(), "no answer to {printable:?}");
        assert!(seen.iter().all(|s| *s >= 400), "{printable:?} got {seen:?}");
    }
    for headers in backend.seen() {
        assert!(!headers.contains_key("x-evil") && !headers.contains_key("x-folded"));
    }
    assert_eq!(
        backend.seen().len(),
        before,
        "a refused request reached the backend"
    );
}

/// A backend that answers with the given bytes and records the raw request it received.
async fn raw_backend(response: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 65536];
                let mut raw = Vec::new();
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                // Give a body a moment to arrive, then record everything.
                if let Ok(Ok(n)) = tokio::time::timeout(
                    std::time::Duration::from_millis(100),
                    stream.read(&mut buf),
                )
                .await
                {
                    raw.extend_from_slice(&buf[..n]);
                }
                if let Ok(mut sink) = sink.lock() {
                    sink.extend_from_slice(&raw);
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_response_framing_from_a_backend_is_refused() {
    let cases: &[&'static [u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    ];
    for case in cases {
        let (addr, _) = raw_backend(case).await;
        let yaml = format!(
            "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://{addr}\"]\n"
        );
        let proxy = Proxy::start(&yaml).await;
        let response = proxy.get("/").send().await;
        let printable = String::from_utf8_lossy(case).into_owned();
        assert_eq!(response.status, 502, "{printable:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_receives_one_unambiguous_framing() {
    let (addr, received) = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let yaml = format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://{addr}\"]\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let raw = send_raw(
        proxy.addr,
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(RawResponse::parse(&raw).status, 200);
    let seen = String::from_utf8_lossy(&received.lock().expect("lock")).to_ascii_lowercase();
    let framings =
        seen.matches("transfer-encoding:").count() + seen.matches("content-length:").count();
    assert_eq!(framings, 1, "{seen}");
    assert!(seen.contains("abc"));
}
