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
    // The guard only turns a hang into a failure: the 408 comes at `body_idle`.
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange(&mut slow, b"")).await;
    assert_eq!(answer.ok().flatten(), Some(408));
    // A client that pauses less than the limit between chunks is fine. Its own proxy, with a
    // limit far above the pause, so that a loaded machine cannot stretch one into the other.
    let yaml = format!(
        "{}timeouts:\n  body_idle: 10s\n",
        config("memory://", &[&backend])
    );
    let patient = Proxy::start(&yaml).await;
    let mut steady = TcpStream::connect(patient.addr).await.expect("connect");
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
///
/// The client writes its frames by hand and reads what the server sends on a task of its own.
/// The server closes right after its GOAWAY: a client that reads only when it is not writing
/// (as an HTTP/2 library does) can have its next write fail with a broken pipe first and never
/// see the GOAWAY. Here the reader takes every byte that arrived, whatever the writer meets,
/// and the writer waits for the server to answer each burst before it sends the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_closes_the_connection_and_others_are_served() {
    use raw_h2::{Heard, FRAME_PING, FRAME_SETTINGS, PREFACE};

    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config("memory://", &[&backend])).await;
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (read, mut write) = tcp.into_split();
    let (tell, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(raw_h2::read(read, tell));
    let mut hello = PREFACE.to_vec();
    hello.extend(raw_h2::frame(FRAME_SETTINGS, 0, 0, &[]));
    write.write_all(&hello).await.expect("h2c preface");

    const STREAMS: usize = 5_000;
    // Opened and cancelled in one write, so that the server reads them together, before it
    // can accept any: that is the attack.
    const BURST: usize = 100;
    let mut sent = 0;
    'attack: while sent < STREAMS {
        let mut burst = Vec::new();
        for n in sent..sent + BURST {
            let id = u32::try_from(2 * n + 1).expect("stream id");
            burst.extend(raw_h2::get(id, "app.test"));
            burst.extend(raw_h2::reset(id, h2::Reason::CANCEL.into()));
        }
        // The server answers a PING after every frame before it: once it has, it has taken
        // the whole burst.
        burst.extend(raw_h2::frame(FRAME_PING, 0, 0, b"stickles"));
        if write.write_all(&burst).await.is_err() {
            break;
        }
        sent += BURST;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), heard.recv())
                .await
                .expect("the server answers a PING or ends the connection");
            match event {
                Some(Heard::Settings) => {
                    let ack = raw_h2::frame(FRAME_SETTINGS, raw_h2::FLAG_ACK, 0, &[]);
                    if write.write_all(&ack).await.is_err() {
                        break 'attack;
                    }
                }
                Some(Heard::PingAck) => continue 'attack,
                // Nothing more to send on a connection that is going away or gone.
                Some(Heard::GoAway) | None => break 'attack,
            }
        }
    }
    // The write half stays open: the proxy, not the client, has to end the connection.
    let goaway = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the proxy closes an abusive connection")
        .expect("reader task");
    drop(write);
    assert_eq!(
        goaway,
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "GOAWAY after {sent} reset streams"
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

/// Just enough HTTP/2 (RFC 9113) to open and cancel streams by hand and read the answers.
mod raw_h2 {
    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::OwnedReadHalf;
    use tokio::sync::mpsc::UnboundedSender;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const FRAME_HEADERS: u8 = 0x1;
    const FRAME_RST_STREAM: u8 = 0x3;
    pub const FRAME_SETTINGS: u8 = 0x4;
    pub const FRAME_PING: u8 = 0x6;
    const FRAME_GOAWAY: u8 = 0x7;
    pub const FLAG_ACK: u8 = 0x1;
    const FLAG_END_STREAM: u8 = 0x1;
    const FLAG_END_HEADERS: u8 = 0x4;

    /// What the reader passes on to the writer.
    #[derive(Debug)]
    pub enum Heard {
        /// The server's SETTINGS, which want an ACK.
        Settings,
        PingAck,
        GoAway,
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len())
            .expect("frame length")
            .to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    /// `GET /` for `authority`, over and done with (END_STREAM): HPACK static-table entries
    /// for `:method GET`, `:scheme http` and `:path /`, and `:authority` as a literal.
    pub fn get(stream: u32, authority: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x01];
        block.push(u8::try_from(authority.len()).expect("short authority"));
        block.extend(authority.as_bytes());
        frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            stream,
            &block,
        )
    }

    pub fn reset(stream: u32, code: u32) -> Vec<u8> {
        frame(FRAME_RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// Reads frames until the connection ends, telling the writer what it needs to know;
    /// returns the error code of the last GOAWAY. A connection reset ends it like a close:
    /// the kernel hands out what arrived before the reset first.
    pub async fn read(mut read: OwnedReadHalf, tell: UnboundedSender<Heard>) -> Option<h2::Reason> {
        let mut buffer = Vec::new();
        let mut goaway = None;
        loop {
            while let Some(header) = buffer.get(..9) {
                let len = usize::from(header[0]) << 16
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]);
                let (kind, flags) = (header[3], header[4]);
                let Some(payload) = buffer.get(9..9 + len) else {
                    break;
                };
                let heard = match kind {
                    FRAME_SETTINGS if flags & FLAG_ACK == 0 => Some(Heard::Settings),
                    FRAME_PING if flags & FLAG_ACK != 0 => Some(Heard::PingAck),
                    FRAME_GOAWAY => payload.get(4..8).map(|code| {
                        let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
                        goaway = Some(h2::Reason::from(code));
                        Heard::GoAway
                    }),
                    _ => None,
                };
                if let Some(heard) = heard {
                    // The writer may have stopped listening; the GOAWAY's code is returned.
                    let _ = tell.send(heard);
                }
                buffer.drain(..9 + len);
            }
            match read.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return goaway,
                Ok(_) => {}
            }
        }
    }
}
