//! Real parts for the integration tests: `redis-server` processes on free ports, upstream HTTP
//! servers that obey instructions sent in the request, the proxy in-process, and a raw HTTP/1.1
//! client over real sockets. Nothing here is a mock.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use stickless::config::Settings;
use stickless::listener::Server;

pub mod apps;
pub mod binary;
pub mod topology;

/// Sends `signal` (`-STOP`, `-TERM`, …) to process `pid`, asserting it was delivered.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A real `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    /// Its own working directory: never the repository, where a stray `dump.rdb` would be
    /// loaded into the test's server.
    dir: std::path::PathBuf,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = topology::server_port();
            let dir =
                std::env::temp_dir().join(format!("stickless-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("redis temp dir");
            let mut server = RedisServer {
                port,
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                dir,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// Starts the process and waits until it, and not some other process that took the port
    /// meanwhile, answers. False if it could not have the port.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                self.child = None;
                return false;
            }
            let info = self.try_cmd(&["INFO", "server"]).ok();
            if let Some(info) = info.and_then(|v| redis::from_redis_value::<String>(v).ok()) {
                return info.contains(&format!("process_id:{pid}\r")) || self.stop_and_fail();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn stop_and_fail(&mut self) -> bool {
        self.stop();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (with an empty data set unless `--appendonly yes`).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server could not have port {} again",
            self.port
        );
    }

    /// SIGSTOP: the server keeps its sockets and data but answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let value = self.try_cmd(args).expect("redis command");
        redis::from_redis_value(value).expect("reply type")
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.cmd(&["KEYS", "*"]);
        keys.sort();
        keys
    }

    /// Total calls per command since the last `CONFIG RESETSTAT`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        info.lines()
            .filter_map(|l| l.strip_prefix("cmdstat_"))
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    /// `command_calls` without the commands tests themselves send (stats, key listing,
    /// connection set-up), i.e. what the proxy sent.
    pub fn proxy_commands(&self) -> Vec<(String, u64)> {
        self.command_calls()
            .into_iter()
            .filter(|(name, _)| {
                !(name.starts_with("config")
                    || name.starts_with("client")
                    || matches!(name.as_str(), "info" | "keys" | "ping" | "hello"))
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream

/// A real upstream HTTP server. It answers every request with a body listing the headers it
/// received (`name: value` lines after `instance: <name>`), and obeys instructions in the
/// request, so each test states its case in one place:
///
/// - `x-reply-header: Name: value` (repeatable): add this header to the response;
/// - `x-reply-status: 418`: answer with this status;
/// - `x-reply-delay-ms: 500`: wait before answering.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (name_owned, seen_task) = (name.to_owned(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, seen) = (name_owned.clone(), seen_task.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (name, seen) = (name.clone(), seen.clone());
                        async move { Ok::<_, Infallible>(answer(&name, &seen, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_owned(),
            seen,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Headers of every request received so far.
    pub fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn last(&self) -> HeaderMap {
        self.seen().pop().expect("a request reached the backend")
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &str,
    seen: &Mutex<Vec<HeaderMap>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let headers = req.headers().clone();
    seen.lock().expect("lock").push(headers.clone());
    let mut body = format!("instance: {name}\n").into_bytes();
    for (n, v) in &headers {
        body.extend_from_slice(format!("{n}: ").as_bytes());
        body.extend_from_slice(v.as_bytes());
        body.push(b'\n');
    }
    if let Some(ms) = headers
        .get("x-reply-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // Read the request body so uploads complete.
    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if let Some(status) = headers
        .get("x-reply-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        *response.status_mut() = status;
    }
    for instruction in headers.get_all("x-reply-header") {
        let raw = instruction.as_bytes();
        if let Some(colon) = raw.iter().position(|b| *b == b':') {
            let name = HeaderName::from_bytes(raw[..colon].trim_ascii());
            let value = HeaderValue::from_bytes(raw[colon + 1..].trim_ascii());
            if let (Ok(name), Ok(value)) = (name, value) {
                response.headers_mut().append(name, value);
            }
        }
    }
    response
}

/// A backend that answers every request with `response`, verbatim.
pub async fn raw_backend(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Proxy

/// The proxy, in-process on a free port, stopped (gracefully) on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener, when the configuration has one.
    pub admin: Option<SocketAddr>,
    pub reloader: stickless::reload::Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy from YAML; `listen` is forced to a free loopback port.
    pub async fn start(yaml: &str) -> Proxy {
        let settings =
            Settings::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("test config: {e}"));
        Proxy::from_settings(settings).await
    }

    pub async fn from_settings(mut settings: Settings) -> Proxy {
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        if let Some(admin) = &mut settings.admin {
            admin.listen = "127.0.0.1:0".parse().expect("addr");
        }
        let server = Server::bind(&settings).await.expect("bind proxy");
        let addr = server.local_addr().expect("addr");
        let admin = server.admin_addr();
        let reloader = server.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin,
            reloader,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts the drain without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Applies new configuration text as a reload would (listen addresses as running).
    pub fn reload(&self, yaml: &str) -> Result<(), stickless::reload::ReloadError> {
        let mut settings =
            Settings::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("test config: {e}"));
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        if let Some(admin) = &mut settings.admin {
            admin.listen = "127.0.0.1:0".parse().expect("addr");
        }
        self.reloader.apply(settings, "test.yaml")
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> RawResponse {
        let admin = self.admin.expect("the configuration has an admin listener");
        RawRequest::new(admin, "GET", path).send().await
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn request(&self, method: &str, path: &str) -> RawRequest {
        RawRequest::new(self.addr, method, path)
    }

    pub fn get(&self, path: &str) -> RawRequest {
        self.request("GET", path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Logs in through the proxy (the backend sets the given attributes) and returns the id.
pub async fn login(proxy: &Proxy, attributes: &[(&str, &str)]) -> String {
    let mut request = proxy.get("/login");
    for (name, value) in attributes {
        request = request.reply(&format!("X-Session-Set-{name}"), value);
    }
    let response = request.send().await;
    assert_eq!(response.status, 200);
    response.issued_session().expect("a session cookie")
}

/// A proxy config with one catch-all route to the given upstreams; `extra` is appended under
/// `session:` (indented by the caller), `store` is the store URL.
pub fn config(store: &str, upstreams: &[&Backend]) -> String {
    let ups: Vec<String> = upstreams
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  url: \"{store}\"\n  timeout: \"500ms\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [{}]\n",
        ups.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Client

/// One HTTP/1.1 request written byte for byte, so tests can send what a well-behaved client
/// library would refuse to (odd header spellings, raw bytes, duplicate cookies).
pub struct RawRequest {
    addr: SocketAddr,
    head: Vec<u8>,
    body: Vec<u8>,
}

impl RawRequest {
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> RawRequest {
        RawRequest {
            addr,
            head: format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\n").into_bytes(),
            body: Vec::new(),
        }
    }

    pub fn header(self, name: &str, value: &str) -> RawRequest {
        self.raw_header(name.as_bytes(), value.as_bytes())
    }

    pub fn raw_header(mut self, name: &[u8], value: &[u8]) -> RawRequest {
        self.head.extend_from_slice(name);
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value);
        self.head.extend_from_slice(b"\r\n");
        self
    }

    /// Sends the session cookie, when there is one.
    pub fn session(self, cookie: Option<&str>) -> RawRequest {
        match cookie {
            Some(id) => self.header("Cookie", &format!("SESSION={id}")),
            None => self,
        }
    }

    /// Asks the backend to add this header to its response.
    pub fn reply(self, name: &str, value: &str) -> RawRequest {
        self.header("X-Reply-Header", &format!("{name}: {value}"))
    }

    pub fn body(mut self, body: &[u8]) -> RawRequest {
        self.body = body.to_vec();
        self
    }

    pub async fn send(self) -> RawResponse {
        let mut request = self.head;
        request.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(&self.body);
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("connect to proxy");
        stream.write_all(&request).await.expect("write request");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
            .await
            .expect("response within 20s")
            .expect("read response");
        RawResponse::parse(&raw)
    }
}

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn parse(raw: &[u8]) -> RawResponse {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let mut headers = Vec::new();
        for line in raw[..split].split(|b| *b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                headers.push((
                    String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase(),
                    line[colon + 1..].trim_ascii().to_vec(),
                ));
            }
        }
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"))
        {
            body = dechunk(&body);
        }
        RawResponse {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The session id a `Set-Cookie: SESSION=…` issues, if any (not a removal).
    pub fn issued_session(&self) -> Option<String> {
        self.all("set-cookie").into_iter().find_map(|c| {
            let value = c.strip_prefix("SESSION=")?.split(';').next()?.to_owned();
            (!value.is_empty() && !c.contains("Max-Age=0")).then_some(value)
        })
    }

    pub fn clears_session(&self) -> bool {
        self.all("set-cookie")
            .iter()
            .any(|c| c.starts_with("SESSION=") && c.contains("Max-Age=0"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value the backend saw for a request header (from the echo body), lower-case name.
    pub fn backend_saw(&self, name: &str) -> Option<String> {
        let prefix = format!("{}: ", name.to_ascii_lowercase());
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }

    /// Every header name the backend saw.
    pub fn backend_header_names(&self) -> Vec<String> {
        self.text()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": ").map(|(n, _)| n.to_owned()))
            .collect()
    }

    pub fn instance(&self) -> Option<String> {
        self.backend_saw("instance")
    }

    /// No header the client received starts with the session prefix, in any spelling.
    pub fn assert_no_session_headers(&self) {
        for (name, _) in &self.headers {
            let normalized = name.to_ascii_lowercase().replace('_', "-");
            assert!(
                !normalized.starts_with("x-session-"),
                "client received {name}"
            );
        }
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        body = &body[eol + 2..];
        if size == 0 || body.len() < size {
            break;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[(size + 2).min(body.len())..];
    }
    out
}

/// Reads one response from a connection that stays open (keep-alive): its status once the
/// head and a `content-length` body (none if absent) have arrived; `None` if the proxy closed
/// the connection first.
pub async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    read_whole_response(stream).await.map(|r| r.status)
}

/// The same, the whole response.
pub async fn read_whole_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let response = RawResponse::parse(&raw);
            let length: usize = response
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return Some(RawResponse::parse(&raw[..end + 4 + length]));
            }
        }
    }
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
