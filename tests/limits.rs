//! Limits with defined answers: oversized request heads (431), oversized bodies (413), a cap
//! on concurrent connections that makes the excess wait while the process stays healthy, and
//! the HTTP/2 rapid-reset cap.

mod support;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::{config, Backend, Proxy};

/// Sends `request` (possibly empty) on a kept-alive connection and reads one response.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    support::read_response(stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_the_proxy_stays_healthy() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}limits:\n  max_request_headers: 50\n  max_request_head_bytes: 16384\n",
        config("memory://", &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let before = backend.seen().len();

    let mut many = proxy.get("/");
    for i in 0..80 {
        many = many.header(&format!("X-Filler-{i}"), "1");
    }
    assert_eq!(many.send().await.status, 431);

    let big = "a".repeat(20_000);
    assert_eq!(
        proxy.get("/").header("X-Big", &big).send().await.status,
        431
    );
    let big_cookie = format!("SESSION={}", "b".repeat(20_000));
    assert_eq!(
        proxy
            .get("/")
            .header("Cookie", &big_cookie)
            .send()
            .await
            .status,
        431
    );

    assert_eq!(
        backend.seen().len(),
        before,
        "nothing oversized reached the backend"
    );
    assert_eq!(
        proxy.get("/").header("X-Normal", "1").send().await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_body_limit_answers_413() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/upload\" }}\n    upstreams: [\"{b}\"]\n    max_body_bytes: 1000\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{b}\"]\n",
        b = backend.url()
    );
    let proxy = Proxy::start(&yaml).await;

    // Announced with Content-Length: refused before anything is forwarded.
    let before = backend.seen().len();
    let response = proxy
        .request("POST", "/upload")
        .body(&[b'x'; 1001])
        .send()
        .await;
    assert_eq!(response.status, 413);
    assert_eq!(backend.seen().len(), before);

    // At the limit, and on another route, bodies pass.
    assert_eq!(
        proxy
            .request("POST", "/upload")
            .body(&[b'x'; 1000])
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        proxy
            .request("POST", "/other")
            .body(&[b'x'; 5000])
            .send()
            .await
            .status,
        200
    );

    // Chunked, with no length announced: cut off once past the limit.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut request = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'y'; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(exchange(&mut stream, &request).await, Some(413));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_their_turn() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}limits:\n  max_connections: 2\n",
        config("memory://", &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

    let mut first = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut second = TcpStream::connect(proxy.addr).await.expect("connect");
    assert_eq!(exchange(&mut first, request).await, Some(200));
    assert_eq!(exchange(&mut second, request).await, Some(200));

    // Both slots are held by idle keep-alive connections: a third waits.
    let mut third = TcpStream::connect(proxy.addr)
        .await
        .expect("the kernel accepts it");
    let waiting =
        tokio::time::timeout(Duration::from_millis(700), exchange(&mut third, request)).await;
    assert!(waiting.is_err(), "served past the cap: {waiting:?}");

    // One leaves; the waiting one is served.
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), exchange(&mut third, b"")).await;
    assert_eq!(served.ok().flatten(), Some(200));
    assert_eq!(exchange(&mut second, request).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_body_gets_408_while_others_are_served() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}timeouts:\n  body_idle: 400ms\n",
        config("memory://", &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
    slow.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .expect("write");
    // Meanwhile another client is served.
    assert_eq!(proxy.get("/").send().await.status, 200);
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange(&mut slow, b"")).await;
    assert_eq!(answer.ok().flatten(), Some(408));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A client that pauses less than the limit between chunks is fine.
    let mut steady = TcpStream::connect(proxy.addr).await.expect("connect");
    steady
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\n\r\nabc")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(exchange(&mut steady, b"def").await, Some(200));
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and cancels them at once
/// makes the proxy start work it never finishes. Past `max_pending_accept_reset_streams` the
/// connection is closed with GOAWAY, only a handful of requests reach the backend, and other
/// clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_closes_the_connection_and_others_are_served() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config("memory://", &[&backend])).await;
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let closed = tokio::spawn(connection);

    const STREAMS: usize = 5_000;
    let mut sent = 0;
    for _ in 0..STREAMS {
        let request = http::Request::get(format!("http://{}/", proxy.addr))
            .body(())
            .expect("request");
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let Ok((_response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the proxy closes an abusive connection")
        .expect("connection task");
    let reason = ended.as_ref().err().and_then(|e| e.reason());
    assert_eq!(
        reason,
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "GOAWAY after {sent} reset streams: {ended:?}"
    );
    assert!(
        sent < STREAMS,
        "cut off before all {STREAMS} streams: {sent}"
    );

    let mut other = TcpStream::connect(proxy.addr).await.expect("connect");
    assert_eq!(
        exchange(&mut other, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await,
        Some(200)
    );
    let reached = backend.seen().len();
    eprintln!("rapid reset: GOAWAY after {sent} cancelled streams; {reached} reached the backend");
    assert!(
        reached < 200,
        "{reached} of {sent} cancelled requests reached the backend"
    );
}
