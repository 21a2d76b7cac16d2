//! Real applications on their real runtimes (php, node, gunicorn, Tomcat, Jetty) as child
//! processes behind the proxy, and a browser-like client with a cookie jar, for the adapter
//! tests.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RawRequest, RawResponse};

/// The repository's root, where `adapters/` lives.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/thirdparty/<stack>.sh` installs the third-party applications of a stack.
pub fn thirdparty(stack: &str) -> PathBuf {
    repo().join("target").join("thirdparty").join(stack)
}

/// Whether a runtime the adapter tests need is present. Missing, the test skips with a
/// message, except under CI (`CI` set, as `.ci/run` does), where it fails: CI installs every
/// runtime, so a skip there would hide a broken install.
pub fn have(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing; .ci/run installs it");
    }
    eprintln!("skipped: {what} is missing (.ci/run installs it)");
    false
}

/// Whether `program` runs at all (`program --version`-style probe given by the caller).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command to completion (a unit-test runner, a build script), failing the test with
/// its output when it does not succeed within `limit`.
pub fn run_to_end(command: &mut Command, limit: Duration) -> String {
    let dir = scratch("run");
    let out = dir.join("output.log");
    let file = std::fs::File::create(&out).expect("output file");
    let err = file.try_clone().expect("output file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still running after {limit:?}:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "{command:?} failed ({status}):\n{output}");
    output
}

/// A fresh directory for one test's files (logs, a container's base), under the system temp
/// dir, named for the test process so a failed run can be inspected.
pub fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("stickless-apps-{}/{name}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One application instance: a child process in its own process group, serving HTTP on
/// `port`. Its stdout and stderr go to a log file (what the adapter writes to the
/// application's log shows there). Killed, with its whole group, on drop.
pub struct App {
    pub name: String,
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl App {
    /// Spawns `command` (already told to listen on `port`) and waits until the port accepts
    /// connections, for at most `limit` (Tomcat and Jetty take seconds). A process that exits
    /// first fails the test with its log.
    pub fn spawn(name: &str, command: &mut Command, port: u16, limit: Duration) -> App {
        use std::os::unix::process::CommandExt;
        let dir = scratch(name);
        let log = dir.join("app.log");
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({command:?}): {e}"));
        let mut app = App {
            name: name.to_owned(),
            port,
            child,
            log,
        };
        let deadline = Instant::now() + limit;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(status) = app.child.try_wait().expect("wait") {
                panic!("{name} exited ({status}) before listening:\n{}", app.log());
            }
            if StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return app;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} not listening on {port} after {limit:?}:\n{}",
                    app.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything the application wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // The whole group: php -S, gunicorn and catalina start workers of their own.
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy configuration: one catch-all route, round-robin over `upstreams` (no stickiness),
/// plain-http cookies, and `session_extra` appended under `session:` (each line indented by
/// four spaces by the caller, e.g. `"    max_bytes: 32768\n"`).
pub fn round_robin_config(store: &str, upstreams: &[String], session_extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "listen: \"127.0.0.1:0\"\n\
         store:\n  url: \"{store}\"\n  timeout: \"2s\"\n\
         session:\n  cookie:\n    secure: false\n{session_extra}\
         timeouts:\n  upstream_response: \"30s\"\n\
         routes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [{}]\n",
        ups.join(", ")
    )
}

/// A browser as far as sessions go: it keeps the cookies it is given (any name, `Max-Age=0`
/// removes) and sends them back, follows no redirects, and speaks HTTP/1.1 over a fresh
/// connection per request.
#[derive(Clone)]
pub struct Browser {
    addr: SocketAddr,
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            cookies: BTreeMap::new(),
        }
    }

    /// The session cookie's value, when the browser holds one.
    pub fn session(&self) -> Option<&str> {
        self.cookies.get("SESSION").map(String::as_str)
    }

    /// A request with the jar's cookies; add headers or a body, then [`Browser::send`] it.
    pub fn request(&self, method: &str, path: &str) -> RawRequest {
        let request = RawRequest::new(self.addr, method, path);
        if self.cookies.is_empty() {
            return request;
        }
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        request.header("Cookie", &jar.join("; "))
    }

    pub async fn send(&mut self, request: RawRequest) -> RawResponse {
        let response = request.send().await;
        self.keep_cookies(&response);
        response
    }

    pub async fn get(&mut self, path: &str) -> RawResponse {
        let request = self.request("GET", path);
        self.send(request).await
    }

    /// POSTs `fields` as `application/x-www-form-urlencoded`.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> RawResponse {
        let request = form(self, path, fields);
        self.send(request).await
    }

    /// POSTs a JSON document.
    pub async fn post_json(&mut self, path: &str, json: &str) -> RawResponse {
        let request = self
            .request("POST", path)
            .header("Content-Type", "application/json")
            .body(json.as_bytes());
        self.send(request).await
    }

    fn keep_cookies(&mut self, response: &RawResponse) {
        for line in response.all("set-cookie") {
            let mut parts = line.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let removed = value.trim().is_empty()
                || parts.any(|attr| {
                    let attr = attr.trim().to_ascii_lowercase();
                    attr == "max-age=0" || attr.starts_with("expires=thu, 01 jan 1970")
                });
            if removed {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }
}

/// A POST of `fields` as `application/x-www-form-urlencoded`, with the browser's cookies, to
/// send with [`Browser::send`].
pub fn form(browser: &Browser, path: &str, fields: &[(&str, &str)]) -> RawRequest {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    browser
        .request("POST", path)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.join("&").as_bytes())
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Redis, two instances `A` and `B` of one application, and the proxy in front of them,
/// round-robin: the rig every adapter suite runs its scenarios on.
pub struct Pair {
    pub redis: super::RedisServer,
    pub a: App,
    pub b: App,
    pub proxy: super::Proxy,
}

impl Pair {
    pub async fn start(a: App, b: App) -> Pair {
        let redis = super::RedisServer::start();
        let yaml = round_robin_config(&redis.url(), &[a.url(), b.url()], "");
        let proxy = super::Proxy::start(&yaml).await;
        Pair { redis, a, b, proxy }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self.proxy.addr)
    }

    /// Another browser, holding session cookie `id` (an old one, say: what does it reach?).
    pub fn browser_holding(&self, id: &str) -> Browser {
        let mut browser = self.browser();
        browser.cookies.insert("SESSION".to_owned(), id.to_owned());
        browser
    }

    /// Both instances' logs, for assertion messages.
    pub fn logs(&self) -> String {
        format!("--- A ---\n{}\n--- B ---\n{}", self.a.log(), self.b.log())
    }

    /// The session hashes in Redis.
    pub fn sessions(&self) -> Vec<String> {
        self.redis
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("stickless:session:"))
            .collect()
    }

    /// Session writes: the proxy writes a session with one script call (`EVAL`/`EVALSHA`)
    /// and ends one with `DEL`. (Redis also counts the `HSET`s a script runs, so those are
    /// not counted again.)
    pub fn writes(&self) -> u64 {
        self.redis
            .proxy_commands()
            .iter()
            .filter(|(name, _)| name.starts_with("eval") || name == "del")
            .map(|(_, calls)| calls)
            .sum()
    }
}
