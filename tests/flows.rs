//! Every flow bounded: a backend that stalls in the middle of a body, and a client that stops
//! reading, over real sockets, on HTTP/1.1 and HTTP/2. Each ends within its deadline
//! (`timeouts.upstream_read_idle`, `timeouts.client_write_idle`) as a truncated response,
//! frees the backend connection it held, and is counted and logged as failed, while other
//! clients are served.
//!
//! The deadlines are 1 s here; the tests wait for events (end of stream, a counter), and the
//! `GUARD` on each wait only turns a hang into a failure.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use support::binary::{write_config, Instance};
use support::{eventually, Backend, Proxy, RawRequest};

const GUARD: Duration = Duration::from_secs(30);

/// A backend that reads each request head, then runs `serve` on the connection; it reports on
/// the returned channel each time `serve` ends, which the two below arrange to mean that the
/// proxy let go of the connection.
async fn backend<F, Fut>(serve: F) -> (SocketAddr, mpsc::UnboundedReceiver<()>)
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (released, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (released, serve) = (released.clone(), serve.clone());
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                serve(stream).await;
                let _ = released.send(());
            });
        }
    });
    (addr, rx)
}

/// Answers every request with `response`, then neither sends another byte nor closes: only
/// the proxy closing the connection ends it.
async fn stalling_backend(response: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    backend(move |mut stream: TcpStream| async move {
        let _ = stream.write_all(response).await;
        let mut rest = [0u8; 64];
        while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Answers with a body far larger than any buffer on the way, written as fast as the proxy
/// takes it, until a write fails because the proxy closed the connection.
async fn endless_backend() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    backend(|mut stream: TcpStream| async move {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        while stream.write_all(&chunk).await.is_ok() {}
    })
    .await
}

async fn read_head(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(())
}

/// Routes `/stall` (or any path) to `upstream`, `/other` to a well-behaved backend.
fn flows_config(upstream: SocketAddr, other: &Backend) -> String {
    format!(
        "listen: \"127.0.0.1:0\"
store:
  url: \"memory://\"
admin:
  listen: \"127.0.0.1:0\"
timeouts:
  upstream_read_idle: \"1s\"
  client_write_idle: \"1s\"
routes:
  - name: \"other\"
    match: {{ path_prefix: \"/other\" }}
    upstreams: [\"{}\"]
  - name: \"app\"
    match: {{ path_prefix: \"/\" }}
    upstreams: [\"http://{upstream}\"]
",
        other.url()
    )
}

/// The value of one `stickless_responses_incomplete_total` series.
async fn incomplete(proxy: &Proxy, reason: &str) -> f64 {
    let text = proxy.admin_get("/metrics").await.text();
    let series =
        format!("stickless_responses_incomplete_total{{route=\"app\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

async fn counted(proxy: &Proxy, reason: &str, expected: f64) {
    let mut last = 0.0;
    let seen = eventually(GUARD, async || {
        last = incomplete(proxy, reason).await;
        last == expected
    })
    .await;
    assert!(
        seen,
        "responses_incomplete_total{{reason={reason}}}: {last}, expected {expected}"
    );
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("the proxy ended the response instead of hanging");
    all
}

/// Sends `request` on a new connection and reads until the proxy ends it.
async fn get_to_end(proxy: &Proxy, request: &str) -> String {
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client.write_all(request.as_bytes()).await.expect("send");
    String::from_utf8_lossy(&read_to_end(&mut client).await).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_body_ends_the_http1_response() {
    let (stall, mut released) =
        stalling_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(stall, &other)).await;

    let text = get_to_end(&proxy, "GET /stall HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-length: 100"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n0123456789"),
        "ten bytes, then the connection closed: {text}"
    );

    tokio::time::timeout(GUARD, released.recv())
        .await
        .expect("the backend connection was closed");
    counted(&proxy, "upstream_idle", 1.0).await;
    assert_eq!(proxy.get("/other/ok").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_chunked_body_ends_the_http1_response_unterminated() {
    let (stall, _released) = stalling_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    )
    .await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(stall, &other)).await;

    let text = get_to_end(&proxy, "GET /stall HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("0123456789"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "no last chunk: the client can tell the body is cut: {text}"
    );
    counted(&proxy, "upstream_idle", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_body_resets_the_http2_stream() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let (stall, mut released) =
        stalling_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(stall, &other)).await;

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = client
        .get(format!("http://{}/stall", proxy.addr).parse().expect("uri"))
        .await
        .expect("a response head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(GUARD, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                Err(err) => return Err(err),
            }
        }
        Ok(())
    })
    .await
    .expect("the stream ended instead of hanging");
    assert!(outcome.is_err(), "the stream was reset, not ended cleanly");
    assert_eq!(got, b"0123456789");

    tokio::time::timeout(GUARD, released.recv())
        .await
        .expect("the backend connection was closed");
    counted(&proxy, "upstream_idle", 1.0).await;
    // The connection goes on serving.
    let ok = client
        .get(
            format!("http://{}/other/ok", proxy.addr)
                .parse()
                .expect("uri"),
        )
        .await
        .expect("a response");
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_stops_reading_is_disconnected_while_others_are_served() {
    let (endless, mut released) = endless_backend().await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(endless, &other)).await;

    // A small receive buffer, so the proxy's writes block soon after we stop reading.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut slow = socket.connect(proxy.addr).await.expect("connect");
    slow.write_all(b"GET /endless HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 1024];
    let n = slow.read(&mut first).await.expect("the head");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    // We read nothing more; meanwhile others are served, until the proxy gives up on us.
    let mut served = 0;
    let mut last = 0.0;
    let gone = eventually(GUARD, async || {
        assert_eq!(proxy.get("/other/ok").send().await.status, 200);
        served += 1;
        last = incomplete(&proxy, "client_stalled").await;
        last == 1.0
    })
    .await;
    assert!(gone, "client_stalled counted: {last}");
    assert!(served > 0);
    tokio::time::timeout(GUARD, released.recv())
        .await
        .expect("the backend connection was closed");
    // What was in flight drains, then the connection ends.
    let rest = read_to_end(&mut slow).await;
    assert!(rest.len() < 100_000_000, "cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_reading_a_stream_gets_it_reset_while_its_others_are_served() {
    let (endless, mut released) = endless_backend().await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(endless, &other)).await;

    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    // A stream window of 64 KiB we never reopen for the endless stream, and a connection
    // window wide enough that the other streams still get their bytes.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(65_535)
        .initial_connection_window_size(16 * 1024 * 1024)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let get = |path: &str| {
        http::Request::get(format!("http://app.test{path}"))
            .body(())
            .expect("request")
    };
    let (response, _) = client.send_request(get("/endless"), true).expect("send");
    let response = response.await.expect("head");
    assert_eq!(response.status(), 200);
    let mut stalled = response.into_body();
    // Take what the window allows, never releasing it.
    let mut received = 0;
    while received < 65_535 {
        match stalled.data().await {
            Some(Ok(data)) => received += data.len(),
            other => panic!("the stream ended early: {other:?}"),
        }
    }

    // Other streams on the same connection are served meanwhile.
    let mut client = client.ready().await.expect("ready");
    let (response, _) = client.send_request(get("/other/ok"), true).expect("send");
    let response = response.await.expect("head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the other stream's body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }

    let reset = tokio::time::timeout(GUARD, async {
        loop {
            match stalled.data().await {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return err.reason(),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream was reset instead of hanging");
    assert_eq!(reset, Some(h2::Reason::CANCEL));
    counted(&proxy, "client_stalled", 1.0).await;
    tokio::time::timeout(GUARD, released.recv())
        .await
        .expect("the backend connection was closed");

    // And the connection is still open for more.
    let mut client = client.ready().await.expect("the connection is still open");
    let (response, _) = client
        .send_request(get("/other/again"), true)
        .expect("send");
    assert_eq!(response.await.expect("head").status(), 200);
}

/// The access line of a cut response says so: the status that went out, the outcome, the
/// cause, and the time to the cut, not to the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_records_a_cut_response_as_failed() {
    let (stall, _released) =
        stalling_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let other = Backend::start("other").await;
    let config = write_config("flows-log.yaml", &flows_config(stall, &other));
    let proxy = Instance::start(&config);

    let fine = RawRequest::new(proxy.addr, "GET", "/other/fine")
        .header("X-Request-Id", "fine-one")
        .send()
        .await;
    assert_eq!(fine.status, 200);
    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client
        .write_all(b"GET /stall HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: cut-one\r\n\r\n")
        .await
        .expect("send");
    read_to_end(&mut client).await;

    let line = proxy
        .wait_for_log("request_id=cut-one")
        .expect("an access line");
    for field in [
        "status=200",
        "outcome=upstream_idle",
        "the response was cut short",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let duration: f64 = line
        .split("duration_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .expect("duration_ms");
    assert!(duration >= 1000.0, "measured to the cut: {line}");
    let fine = proxy
        .wait_for_log("request_id=fine-one")
        .expect("an access line");
    assert!(fine.contains("outcome=complete"), "{fine}");
    assert!(fine.contains("error=-"), "{fine}");
}

/// A client whose connection breaks while it streams a body is the client's failure (`400`,
/// no `failed` warning), not the backend's (`502`), and the backend connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_is_counted_as_its_failure() {
    let (silent, mut released) = stalling_backend(b"").await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(silent, &other)).await;

    let mut client = TcpStream::connect(proxy.addr).await.expect("connect");
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .expect("send");
    // The backend has the head: the body is on its way through the proxy.
    drop(client);
    tokio::time::timeout(GUARD, released.recv())
        .await
        .expect("the backend connection was closed");
    let mut codes = String::new();
    let counted = eventually(GUARD, async || {
        let text = proxy.admin_get("/metrics").await.text();
        codes = text
            .lines()
            .filter(|l| l.starts_with("stickless_requests_total{route=\"app\""))
            .collect::<Vec<_>>()
            .join("\n");
        !codes.is_empty()
    })
    .await;
    assert!(counted, "no request counted");
    assert_eq!(
        codes, "stickless_requests_total{route=\"app\",code=\"400\"} 1",
        "{codes}"
    );
}

/// An HTTP/2 client that reads nothing at all (its only stream's window stays shut) is
/// disconnected, as an HTTP/1.1 client would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_reads_nothing_is_disconnected() {
    let (endless, mut released) = endless_backend().await;
    let other = Backend::start("other").await;
    let proxy = Proxy::start(&flows_config(endless, &other)).await;

    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get("http://app.test/endless")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("head");
    assert_eq!(response.status(), 200);
    let _stalled = response.into_body();

    // Ended, cleanly or with an error: either way the proxy closed it.
    let _ended = tokio::time::timeout(GUARD, connection)
        .await
        .expect("the proxy closed the connection instead of keeping it")
        .expect("the connection task");
    counted(&proxy, "client_stalled", 1.0).await;
    tokio::time::timeout(GUARD, released.recv())
        .await
        .expect("the backend connection was closed");
    assert_eq!(proxy.get("/other/ok").send().await.status, 200);
}
