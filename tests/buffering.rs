//! Request buffering (`routes[i].request_buffering`): the proxy reads the whole body before it
//! contacts an upstream, and forwards it with `Content-Length`. Each case states what the
//! client sends, what the backend receives (a raw socket that records the bytes and when it
//! was connected to), and what the client gets.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use stickless::config::Settings;
use support::binary::{write_config, BIN};
use support::{free_port, read_whole_response, Proxy, RawResponse};

/// A backend on a raw socket: it records each request as it arrived on the wire, and for
/// each connection whether it came before the client had sent its last byte.
struct Recorder {
    addr: SocketAddr,
    /// Set by the test just before the client's last byte goes out, so that a connection
    /// recorded without it certainly came earlier.
    client_done: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    /// Told of every connection.
    accepted: Arc<Notify>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Log {
    /// Per connection: whether it came before the client's last byte.
    early: Vec<bool>,
    requests: Vec<Received>,
}

#[derive(Clone, Debug)]
struct Received {
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client_done = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let accepted = Arc::new(Notify::new());
        let (done, kept, told) = (client_done.clone(), log.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let early = !done.load(Ordering::SeqCst);
                kept.lock().expect("log").early.push(early);
                told.notify_one();
                let kept = kept.clone();
                tokio::spawn(async move {
                    let Some(received) = receive(&mut stream).await else {
                        return;
                    };
                    kept.lock().expect("log").requests.push(received);
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Recorder {
            addr,
            client_done,
            log,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.log.lock().expect("log").early.len()
    }

    fn early_connections(&self) -> usize {
        let log = self.log.lock().expect("log");
        log.early.iter().filter(|early| **early).count()
    }

    fn requests(&self) -> Vec<Received> {
        self.log.lock().expect("log").requests.clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request as it came: the head, then the body by its `Content-Length` (or, should it
/// come chunked, up to the last chunk, so that the test fails on the framing, not a hang).
async fn receive(stream: &mut TcpStream) -> Option<Received> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers.iter().any(|(n, _)| n == "transfer-encoding");
    let mut body = raw[end..].to_vec();
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None => !chunked || chunked_end(&body),
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received { headers, body })
}

/// Whether a chunked body is complete: its last chunk and trailer section have come.
fn chunked_end(mut body: &[u8]) -> bool {
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            return true;
        };
        body = &body[eol + 2..];
        if size == 0 {
            return body == b"\r\n" || body.windows(4).any(|w| w == b"\r\n\r\n");
        }
        match body.get(size + 2..) {
            Some(rest) => body = rest,
            None => return false,
        }
    }
}

/// `/upload` buffers with `buffering` (a YAML flow mapping), `/stream` streams; both go to
/// `upstreams`. `extra` is appended at the top level.
fn yaml(upstreams: &[String], buffering: &str, extra: &str) -> String {
    let upstreams: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    let upstreams = upstreams.join(", ");
    format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - name: upload\n    match: {{ path_prefix: \"/upload\" }}\n    upstreams: [{upstreams}]\n    request_buffering: {buffering}\n  - name: stream\n    match: {{ path_prefix: \"/stream\" }}\n    upstreams: [{upstreams}]\n{extra}"
    )
}

/// Bytes that show any reordering or loss: no two 4 KiB stretches alike.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

async fn answer(stream: &mut TcpStream) -> RawResponse {
    tokio::time::timeout(Duration::from_secs(20), read_whole_response(stream))
        .await
        .expect("an answer within 20 s")
        .expect("an answer before the connection closed")
}

/// Sends a chunked upload's head with `Expect: 100-continue` and waits for the `100 Continue`:
/// from then on the proxy is reading the body.
async fn start_upload(proxy: &Proxy, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nTrailer: x-checksum\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte))
            .await
            .expect("100 Continue within 20 s")
            .expect("read");
        assert_eq!(n, 1, "closed before 100 Continue: {interim:?}");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_chunked_upload_reaches_the_backend_whole_with_content_length() {
    let backend = Recorder::start().await;
    let proxy = Proxy::start(&yaml(&[backend.url()], "{}", "")).await;
    let pieces: [&[u8]; 4] = [b"name=alice", b"&bio=", b"likes+slow+uploads", b"&end=1"];

    let mut upload = start_upload(&proxy, "/upload").await;
    for piece in &pieces[..3] {
        upload.write_all(&chunk(piece)).await.expect("write");
        // The client is slow: well within timeouts.body_idle (30 s), far longer than a connect.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    backend.client_done.store(true, Ordering::SeqCst);
    let mut last = chunk(pieces[3]);
    last.extend_from_slice(b"0\r\nx-checksum: 1234\r\n\r\n");
    upload.write_all(&last).await.expect("write");
    let response = answer(&mut upload).await;

    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "ok");
    assert_eq!(
        (backend.connections(), backend.early_connections()),
        (1, 0),
        "the backend is connected to once, after the client's last byte"
    );
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    let received = &requests[0];
    let whole = pieces.concat();
    assert_eq!(received.body, whole);
    let length = whole.len().to_string();
    assert_eq!(received.header("content-length"), Some(length.as_str()));
    for absent in ["transfer-encoding", "trailer", "expect", "x-checksum"] {
        assert_eq!(received.header(absent), None, "{absent}: {received:?}");
    }
}

/// The same upload on a streaming route reaches the backend while the client still sends:
/// what the case above rules out is what happens without buffering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_buffering_the_backend_is_connected_to_mid_upload() {
    let backend = Recorder::start().await;
    let proxy = Proxy::start(&yaml(&[backend.url()], "{}", "")).await;
    let mut upload = start_upload(&proxy, "/stream").await;
    upload.write_all(&chunk(b"first")).await.expect("write");
    tokio::time::timeout(Duration::from_secs(20), backend.accepted.notified())
        .await
        .expect("the backend is connected to before the body is complete");
    backend.client_done.store(true, Ordering::SeqCst);
    upload
        .write_all(&[chunk(b"last"), b"0\r\n\r\n".to_vec()].concat())
        .await
        .expect("write");
    assert_eq!(answer(&mut upload).await.status, 200);
    assert_eq!(backend.early_connections(), 1);
    let received = &backend.requests()[0];
    assert_eq!(received.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_memory_bytes_spills_and_arrives_byte_for_byte() {
    let backend = Recorder::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let buffering = format!(
        "{{ memory_bytes: 4096, temp_dir: \"{}\" }}",
        dir.path().display()
    );
    let admin = "admin:\n  listen: \"127.0.0.1:0\"\n";
    let proxy = Proxy::start(&yaml(&[backend.url()], &buffering, admin)).await;
    let body = pattern(1024 * 1024);

    let response = proxy.request("POST", "/upload").body(&body).send().await;

    assert_eq!(response.status, 200, "{}", response.text());
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].body == body,
        "the backend received {} bytes that differ from the {} sent",
        requests[0].body.len(),
        body.len()
    );
    assert_eq!(requests[0].header("content-length"), Some("1048576"));
    // The temporary file was never named: nothing is left in the directory.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "{left:?}");
    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "stickless_request_bodies_spilled_total{route=\"upload\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_bytes_gets_413_and_the_backend_is_never_contacted() {
    let backend = Recorder::start().await;
    let buffering = "{ memory_bytes: 100, max_bytes: 1000 }";
    let proxy = Proxy::start(&yaml(&[backend.url()], buffering, "")).await;

    // Announced: refused on the head alone, before a byte of the body is sent.
    let mut announced = TcpStream::connect(proxy.addr).await.expect("connect");
    announced
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1001\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(answer(&mut announced).await.status, 413);

    // Chunked, past the limit in one piece.
    let mut chunked = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend(chunk(&[b'x'; 1001]));
    chunked.write_all(&request).await.expect("write");
    assert_eq!(answer(&mut chunked).await.status, 413);

    // Chunked, in memory and then on disk before it passes the limit.
    let mut spilled = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend(chunk(&[b'y'; 600]));
    request.extend(chunk(&[b'z'; 401]));
    spilled.write_all(&request).await.expect("write");
    assert_eq!(answer(&mut spilled).await.status, 413);

    // At the limit it passes.
    let at_limit = proxy
        .request("POST", "/upload")
        .body(&[b'a'; 1000])
        .send()
        .await;
    assert_eq!(at_limit.status, 200);
    assert_eq!(backend.connections(), 1, "only the body within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smaller_of_max_bytes_and_max_body_bytes_applies() {
    let backend = Recorder::start().await;
    let text = yaml(
        &[backend.url()],
        "{ memory_bytes: 100, max_bytes: 1000 }",
        "",
    )
    .replacen(
        "    request_buffering:",
        "    max_body_bytes: 500\n    request_buffering:",
        1,
    );
    let proxy = Proxy::start(&text).await;
    let over = proxy
        .request("POST", "/upload")
        .body(&[b'a'; 501])
        .send()
        .await;
    assert_eq!(over.status, 413);
    let within = proxy
        .request("POST", "/upload")
        .body(&[b'a'; 500])
        .send()
        .await;
    assert_eq!(within.status, 200);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pausing_past_body_idle_gets_408_and_the_backend_is_never_contacted() {
    let backend = Recorder::start().await;
    let timeouts = "timeouts:\n  body_idle: 300ms\n";
    let proxy = Proxy::start(&yaml(&[backend.url()], "{}", timeouts)).await;
    let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
    slow.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .expect("write");
    // The rest never comes.
    assert_eq!(answer(&mut slow).await.status, 408);
    assert_eq!(backend.connections(), 0);
}

/// The directory passed `check`, then turned into a file (as root, permissions would not stop
/// the proxy from writing; a directory that is gone does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_file_that_cannot_be_made_gets_500_and_nothing_is_forwarded() {
    let backend = Recorder::start().await;
    let parent = tempfile::tempdir().expect("temp dir");
    let spill_dir = parent.path().join("spill");
    std::fs::create_dir(&spill_dir).expect("mkdir");
    let buffering = format!(
        "{{ memory_bytes: 1024, temp_dir: \"{}\" }}",
        spill_dir.display()
    );
    let settings =
        Settings::from_yaml(&yaml(&[backend.url()], &buffering, ""), "test.yaml").expect("valid");
    std::fs::remove_dir(&spill_dir).expect("rmdir");
    std::fs::write(&spill_dir, b"not a directory").expect("write");
    let proxy = Proxy::from_settings(settings).await;

    let spilling = proxy
        .request("POST", "/upload")
        .body(&pattern(10_000))
        .send()
        .await;
    assert_eq!(spilling.status, 500);
    assert_eq!(backend.connections(), 0);

    // A body that fits in memory needs no file.
    let small = proxy.request("POST", "/upload").body(b"a=1").send().await;
    assert_eq!(small.status, 200);
    assert_eq!(backend.requests()[0].body, b"a=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_falls_over_and_the_next_upstream_gets_the_whole_body() {
    let backend = Recorder::start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let admin = "admin:\n  listen: \"127.0.0.1:0\"\n";
    let upstreams = [format!("http://{dead}"), backend.url()];
    let proxy = Proxy::start(&yaml(&upstreams, "{ memory_bytes: 1024 }", admin)).await;
    let body = pattern(200_000);

    // The route's first request tries its first upstream first.
    let response = proxy.request("POST", "/upload").body(&body).send().await;

    assert_eq!(response.status, 200, "{}", response.text());
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].body == body, "the body differs after fail-over");
    let metrics = proxy.admin_get("/metrics").await.text();
    let refused =
        format!("stickless_upstream_failures_total{{upstream=\"{dead}\",reason=\"refused\"}} 1");
    assert!(
        metrics.lines().any(|l| l == refused),
        "{refused} in\n{metrics}"
    );
}

#[test]
fn check_refuses_bad_request_buffering_with_key_paths_and_lines() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let upstream = ["http://127.0.0.1:9000".to_owned()];
    let cases = [
        (
            "{ memory_bytes: 0 }".to_owned(),
            "check.yaml:7: routes[0].request_buffering.memory_bytes: must be greater than zero",
        ),
        (
            "{ memory_bytes: 2048, max_bytes: 1024 }".to_owned(),
            "routes[0].request_buffering.memory_bytes: must not exceed max_bytes (1024)",
        ),
        (
            "{ max_bytes: 0 }".to_owned(),
            "routes[0].request_buffering.max_bytes: must be greater than zero",
        ),
        (
            "{ temp_dir: \"/nonexistent/stickless\" }".to_owned(),
            "routes[0].request_buffering.temp_dir: `/nonexistent/stickless` does not exist",
        ),
        (
            format!("{{ temp_dir: \"{}\" }}", file.path().display()),
            "routes[0].request_buffering.temp_dir",
        ),
        (
            "{ memory: 1 }".to_owned(),
            "routes[0].request_buffering.memory: unknown field `memory`",
        ),
    ];
    for (n, (buffering, expected)) in cases.iter().enumerate() {
        let path = write_config(
            &format!("buffering-{n}/check.yaml"),
            &yaml(&upstream, buffering, ""),
        );
        let output = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run stickless check");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{buffering}: {stderr}");
        assert!(stderr.contains(expected), "{buffering}: {stderr}");
    }

    let path = write_config(
        "buffering-ok/check.yaml",
        &yaml(&upstream, "{ temp_dir: \"/tmp\" }", ""),
    );
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run stickless check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("request bodies read whole first: 65536 bytes in memory, the rest up to 10485760 in /tmp"),
        "{stdout}"
    );
}
