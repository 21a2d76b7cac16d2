//! Running it as a service: live reload, systemd notifications, the admin listener
//! (health, readiness, metrics), JSON logs with request ids and fleet-wide session
//! fingerprints, and upstream health (ejection and return).

mod support;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use support::binary::{write_config, Instance, BIN};
use support::{eventually, read_whole_response, Backend, Proxy, RawRequest, RedisServer};

/// One route per `(name, prefix, backend)`, in order, and an admin listener.
fn routes_config(store: &str, routes: &[(&str, &str, &Backend)], extra: &str) -> String {
    let mut text = format!(
        "listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\nstore:\n  url: \"{store}\"\n{extra}routes:\n"
    );
    for (name, prefix, backend) in routes {
        text.push_str(&format!(
            "  - name: \"{name}\"\n    match: {{ path_prefix: \"{prefix}\" }}\n    upstreams: [\"{}\"]\n",
            backend.url()
        ));
    }
    text
}

/// The samples of a `/metrics` page, parsed by a Prometheus text-format parser, keyed by
/// metric name and sorted label pairs.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        let mut samples = HashMap::new();
        for sample in scrape.samples {
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count)
                }
                prometheus_parse::Value::Summary(_) => continue,
            };
            samples.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
        }
        Scrape(samples)
    }

    /// A sample's value; 0 when it is not (yet) there.
    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

async fn scrape(proxy: &Proxy) -> Scrape {
    let response = proxy.admin_get("/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.header("content-type")
    );
    Scrape::parse(&response.text())
}

fn blocking_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let response = support::RawResponse::parse(&raw);
    (response.status, response.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_requests_sent() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&routes_config(
        "memory://",
        &[("app", "/app", &backend)],
        "",
    ))
    .await;
    let before = scrape(&proxy).await;

    for _ in 0..5 {
        assert_eq!(proxy.get("/app/page").send().await.status, 200);
    }
    for _ in 0..2 {
        let response = proxy
            .get("/app/missing")
            .header("X-Reply-Status", "404")
            .send()
            .await;
        assert_eq!(response.status, 404);
    }
    assert_eq!(proxy.get("/elsewhere").send().await.status, 404, "no route");
    let login = proxy
        .get("/app/login")
        .reply("X-Session-Set-user", "alice")
        .send()
        .await;
    let id = login.issued_session().expect("a session");
    let rotated = proxy
        .get("/app/rotate")
        .session(Some(&id))
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    let id = rotated.issued_session().expect("a new id");
    let logout = proxy
        .get("/app/logout")
        .session(Some(&id))
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert!(logout.clears_session());
    let gone = proxy.get("/app/page").session(Some(&id)).send().await;
    assert_eq!(gone.status, 200);

    let after = scrape(&proxy).await;
    let delta = |key: &str| after.get(key) - before.get(key);
    // 5 pages, login, rotate, logout, the page after it.
    assert_eq!(delta("stickless_requests_total{code=200,route=app}"), 9.0);
    assert_eq!(delta("stickless_requests_total{code=404,route=app}"), 2.0);
    assert_eq!(delta("stickless_requests_total{code=404,route=-}"), 1.0);
    assert_eq!(
        delta("stickless_request_duration_seconds{route=app}"),
        11.0,
        "histogram count"
    );
    assert_eq!(delta("stickless_sessions_created_total{}"), 1.0);
    assert_eq!(delta("stickless_sessions_rotated_total{}"), 1.0);
    assert_eq!(delta("stickless_sessions_invalidated_total{}"), 1.0);
    assert_eq!(
        delta("stickless_session_lookups_total{result=found,route=app}"),
        2.0
    );
    assert_eq!(
        delta("stickless_session_lookups_total{result=missing,route=app}"),
        1.0
    );
    assert_eq!(after.get("stickless_store_errors_total{}"), 0.0);
    assert!(after.0.contains_key("stickless_open_connections{}"));
    assert_eq!(
        after.get("stickless_config_reloads_total{result=success}"),
        0.0
    );

    // A reload counts, and a route's new name is a new series.
    let renamed = routes_config("memory://", &[("shop", "/app", &backend)], "");
    proxy.reload(&renamed).expect("reload");
    assert_eq!(proxy.get("/app/page").send().await.status, 200);
    let reloaded = scrape(&proxy).await;
    assert_eq!(
        reloaded.get("stickless_config_reloads_total{result=success}"),
        1.0
    );
    assert_eq!(
        reloaded.get("stickless_requests_total{code=200,route=shop}"),
        1.0
    );
    assert_eq!(
        reloaded.get("stickless_requests_total{code=200,route=app}"),
        after.get("stickless_requests_total{code=200,route=app}")
    );

    // Nothing on the page ever holds a session id.
    let page = proxy.admin_get("/metrics").await.text();
    assert!(!page.contains(&id), "a session id in the metrics");
    // The admin listener is not a way into the proxy.
    assert_eq!(proxy.admin_get("/app/page").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_store_and_the_drain() {
    let mut redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let mut proxy = Proxy::start(&routes_config(&redis.url(), &[("app", "/", &backend)], "")).await;
    assert_eq!(proxy.admin_get("/healthz").await.status, 200);
    assert_eq!(proxy.admin_get("/readyz").await.status, 200);

    redis.stop();
    let ready = proxy.admin_get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("store"), "{}", ready.text());
    assert_eq!(
        proxy.admin_get("/healthz").await.status,
        200,
        "liveness never touches the store"
    );
    let metrics = scrape(&proxy).await;
    assert_eq!(metrics.get("stickless_store_up{}"), 0.0);

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), async || {
            proxy.admin_get("/readyz").await.status == 200
        })
        .await,
        "ready again once Redis answers"
    );
    assert_eq!(scrape(&proxy).await.get("stickless_store_up{}"), 1.0);

    // A request in flight keeps the drain going; meanwhile readiness says 503.
    let addr = proxy.addr;
    let slow = tokio::spawn(async move {
        RawRequest::new(addr, "GET", "/slow")
            .header("X-Reply-Delay-Ms", "1500")
            .send()
            .await
    });
    assert!(
        eventually(Duration::from_secs(5), async || !backend.seen().is_empty()).await,
        "the slow request reached the backend"
    );
    proxy.begin_shutdown();
    assert!(
        eventually(Duration::from_secs(5), async || {
            proxy.admin_get("/readyz").await.status == 503
        })
        .await,
        "not ready once draining"
    );
    let draining = proxy.admin_get("/readyz").await;
    assert_eq!(draining.text(), "draining\n");
    assert_eq!(proxy.admin_get("/healthz").await.status, 200);
    assert_eq!(
        slow.await.expect("slow request").status,
        200,
        "drained, not cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_travel_both_ways() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&support::config("memory://", &[&backend])).await;

    let kept = proxy
        .get("/")
        .header("X-Request-Id", "lb-trace-42")
        .send()
        .await;
    assert_eq!(kept.header("x-request-id").as_deref(), Some("lb-trace-42"));
    assert_eq!(
        kept.backend_saw("x-request-id").as_deref(),
        Some("lb-trace-42")
    );

    for bad in ["has space", &"x".repeat(129)] {
        let replaced = proxy.get("/").header("X-Request-Id", bad).send().await;
        let id = replaced.header("x-request-id").expect("an id");
        assert_ne!(id, bad);
        assert_eq!(replaced.backend_saw("x-request-id"), Some(id));
    }

    let made = proxy.get("/").send().await;
    let id = made.header("x-request-id").expect("an id");
    assert_eq!(id.len(), 32);
    assert_eq!(made.backend_saw("x-request-id"), Some(id.clone()));
    let next = proxy.get("/").send().await;
    assert_ne!(next.header("x-request-id"), Some(id), "one id per request");

    // Answers the proxy makes itself carry it too.
    let failed = proxy
        .get("/a/../b")
        .header("X-Request-Id", "abc")
        .send()
        .await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.header("x-request-id").as_deref(), Some("abc"));
}

/// A listener whose accept queue is full: a connect to it hangs, like one to a terminated
/// EC2 instance.
struct Hanging {
    listener: tokio::net::TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

impl Hanging {
    fn start() -> Hanging {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => fillers.push(stream),
                Err(_) => {
                    return Hanging {
                        listener,
                        _fillers: fillers,
                    }
                }
            }
        }
        panic!("the accept queue never filled: connects to a full listener do not hang here");
    }

    fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().expect("addr"))
    }

    /// The host comes back: every connection, queued or new, is served as instance `name`.
    fn recover(self, name: &'static str) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let _fillers = self._fillers;
            loop {
                let Ok((mut stream, _)) = self.listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    loop {
                        let mut buf = [0u8; 4096];
                        let mut head = Vec::new();
                        loop {
                            use tokio::io::AsyncReadExt;
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                        let body = format!("instance: {name}\n");
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_is_skipped_after_its_first_failure_and_taken_back() {
    let hanging = Hanging::start();
    let good = Backend::start("good").await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\nstore:\n  url: \"memory://\"\n\
         timeouts:\n  upstream_connect: \"300ms\"\nroutes:\n\
         \x20 - name: \"app\"\n    match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\", \"http://{closed}\", \"{}\"]\n\
         \x20   health:\n      max_fails: 1\n      fail_timeout: \"10m\"\n      check: {{ path: \"/health\", interval: \"100ms\", timeout: \"200ms\" }}\n",
        hanging.url(),
        good.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let hang_label = hanging.url().trim_start_matches("http://").to_owned();
    let closed_label = closed.to_string();

    for i in 0..12 {
        let response = proxy.get("/").send().await;
        assert_eq!(response.status, 200, "request {i}");
        assert_eq!(response.instance().as_deref(), Some("good"), "request {i}");
    }
    let metrics = scrape(&proxy).await;
    let key = |name: &str, reason: &str, upstream: &str| {
        format!("{name}{{reason={reason},upstream={upstream}}}")
    };
    assert!(
        metrics.get(&key(
            "stickless_upstream_failures_total",
            "connect_timeout",
            &hang_label
        )) <= 1.0,
        "the hanging upstream cost at most one request its connect timeout"
    );
    assert!(
        metrics.get(&key(
            "stickless_upstream_failures_total",
            "refused",
            &closed_label
        )) <= 1.0,
        "the closed one was tried at most once"
    );
    assert_eq!(
        metrics.get(&format!("stickless_upstream_up{{upstream={hang_label}}}")),
        0.0
    );
    assert_eq!(
        metrics.get(&format!("stickless_upstream_up{{upstream={closed_label}}}")),
        0.0
    );
    assert_eq!(
        metrics.get(&format!("stickless_upstream_up{{upstream={}}}", good.addr)),
        1.0
    );

    // The host answers again: the health check takes it back without waiting out the
    // ten minutes, and requests reach it.
    let _served = hanging.recover("recovered");
    assert!(
        eventually(Duration::from_secs(10), async || {
            proxy.get("/").send().await.instance().as_deref() == Some("recovered")
        })
        .await,
        "taken back once it answers"
    );
    let metrics = scrape(&proxy).await;
    assert_eq!(
        metrics.get(&format!("stickless_upstream_up{{upstream={hang_label}}}")),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_upstreams_are_all_out_still_tries_them() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  url: \"memory://\"\nroutes:\n\
         \x20 - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n    health: {{ max_fails: 1, fail_timeout: \"10m\" }}\n",
        backend.url()
    );
    let proxy = Proxy::start(&yaml).await;
    assert_eq!(proxy.get("/").send().await.status, 200);
    // Answering with a response head counts as healthy, whatever the status.
    assert_eq!(
        proxy
            .get("/")
            .header("X-Reply-Status", "500")
            .send()
            .await
            .status,
        500
    );
    assert_eq!(proxy.get("/").send().await.status, 200);
}

/// The configuration of the reload tests: routes to `backend` under `/` and, when `extra`
/// is given, a second route before it.
fn reload_config(backend: &Backend, extra: Option<(&str, &Backend)>) -> String {
    let mut routes = Vec::new();
    if let Some((prefix, other)) = extra {
        routes.push(("new", prefix, other));
    }
    routes.push(("main", "/", backend));
    routes_config("memory://", &routes, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_under_load_without_dropping_anything() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let path = write_config("reload-load.yaml", &reload_config(&a, None));
    let instance = Instance::start(&path);
    let addr = instance.addr;

    // A keep-alive connection opened before the reload.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    let request = b"GET /before HTTP/1.1\r\nHost: app.test\r\n\r\n";
    kept.write_all(request).await.expect("write");
    let first = read_whole_response(&mut kept).await.expect("response");
    assert_eq!(first.instance().as_deref(), Some("a"));

    // Requests in a loop, on fresh connections and on keep-alive ones, across the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for worker in 0..4 {
        let (stop, errors, served) = (stop.clone(), errors.clone(), served.clone());
        loops.push(tokio::spawn(async move {
            let mut conn: Option<TcpStream> = None;
            while !stop.load(Ordering::Relaxed) {
                let ok = if worker % 2 == 0 {
                    RawRequest::new(addr, "GET", "/loop").send().await.status == 200
                } else {
                    if conn.is_none() {
                        conn = TcpStream::connect(addr).await.ok();
                    }
                    match conn.as_mut() {
                        Some(stream) => {
                            let sent = stream
                                .write_all(b"GET /loop HTTP/1.1\r\nHost: app.test\r\n\r\n")
                                .await
                                .is_ok();
                            let read = read_whole_response(stream);
                            let answer = tokio::time::timeout(Duration::from_secs(10), read).await;
                            sent && matches!(answer, Ok(Some(r)) if r.status == 200)
                        }
                        None => false,
                    }
                };
                if ok {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    assert!(
        eventually(Duration::from_secs(5), async || served
            .load(Ordering::Relaxed)
            > 50)
        .await,
        "the loops run"
    );

    std::fs::write(&path, reload_config(&b, Some(("/new", &a)))).expect("rewrite");
    instance.signal("-HUP");
    assert!(
        instance.wait_for_log("configuration reloaded").is_some(),
        "{:?}",
        instance.log()
    );
    let now = served.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(5), async || served
            .load(Ordering::Relaxed)
            > now + 50)
        .await,
        "the loops go on after the reload"
    );
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.expect("loop");
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "not one request failed");

    // The new routes are in effect for new requests, on new and old connections alike.
    let new_route = RawRequest::new(addr, "GET", "/new/x").send().await;
    assert_eq!(new_route.instance().as_deref(), Some("a"));
    let main = RawRequest::new(addr, "GET", "/x").send().await;
    assert_eq!(main.instance().as_deref(), Some("b"));
    kept.write_all(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("the old connection is still open");
    let after = read_whole_response(&mut kept)
        .await
        .expect("the old connection is still served");
    assert_eq!(after.status, 200);
    assert_eq!(after.instance().as_deref(), Some("b"));

    let admin = instance.admin.expect("admin address in the log");
    let (_, metrics) = blocking_get(admin, "/metrics");
    let metrics = Scrape::parse(&metrics);
    assert_eq!(
        metrics.get("stickless_config_reloads_total{result=success}"),
        1.0
    );
    assert_eq!(
        metrics.get("stickless_config_reloads_total{result=failure}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reloads_are_logged_as_check_says_and_the_old_configuration_serves() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let good = reload_config(&a, None);
    let path = write_config("reload-refused.yaml", &good);
    let instance = Instance::start(&path);
    let addr = instance.addr;
    let admin = instance.admin.expect("admin address");

    let bad_files = [
        // Invalid: what `check` prints is what the log says.
        (good.replace("routes:", "colour: blue\nroutes:"), None),
        (
            reload_config(&b, None).replace("upstreams: [\"", "upstreams: [\"ftp://"),
            None,
        ),
        // Valid, but asks for what cannot change live.
        (
            reload_config(&b, None).replace(
                "listen: \"127.0.0.1:0\"\nadmin",
                "listen: \"127.0.0.1:1\"\nadmin",
            ),
            Some("listen cannot change while running"),
        ),
        (
            reload_config(&b, None).replace("memory://", "redis://127.0.0.1:1"),
            Some("store.url cannot change while running"),
        ),
    ];
    for (i, (text, fixed)) in bad_files.iter().enumerate() {
        std::fs::write(&path, text).expect("rewrite");
        let checked = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        let expected = match fixed {
            None => {
                assert_eq!(checked.status.code(), Some(2), "check still refuses it");
                let stderr = String::from_utf8_lossy(&checked.stderr).into_owned();
                stderr.lines().next().unwrap_or_default().to_owned()
            }
            Some(message) => {
                assert_eq!(checked.status.code(), Some(0), "a valid file for check");
                (*message).to_owned()
            }
        };
        assert!(!expected.is_empty());
        instance.signal("-HUP");
        let refused = "reload refused";
        assert!(
            eventually(Duration::from_secs(10), async || {
                instance.count_log(refused) == i + 1
            })
            .await,
            "refusal {i} logged: {:?}",
            instance.log()
        );
        let line = instance
            .log()
            .into_iter()
            .rfind(|l| l.contains(refused))
            .unwrap_or_default();
        assert!(line.contains(&expected), "{line:?} lacks {expected:?}");

        // Still serving the running configuration.
        let (status, body) = blocking_get(addr, "/x");
        assert_eq!(status, 200);
        assert!(body.contains("instance: a"), "{body}");
    }
    let (_, metrics) = blocking_get(admin, "/metrics");
    let metrics = Scrape::parse(&metrics);
    assert_eq!(
        metrics.get("stickless_config_reloads_total{result=failure}"),
        4.0
    );
    assert_eq!(
        metrics.get("stickless_config_reloads_total{result=success}"),
        0.0
    );

    // And a good file after the bad ones applies.
    std::fs::write(&path, reload_config(&b, None)).expect("rewrite");
    instance.signal("-HUP");
    assert!(instance.wait_for_log("configuration reloaded").is_some());
    assert!(blocking_get(addr, "/x").1.contains("instance: b"));
}

/// Reads notifications until one contains `wanted`; returns every message read.
fn notifications_until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {wanted:?} notification ({e}); got {seen:?}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = message.contains(wanted);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_stopping_and_the_watchdog() {
    let backend = Backend::start("a").await;
    let path = write_config("notify.yaml", &reload_config(&backend, None));
    let socket_path = std::env::temp_dir().join(format!("stickless-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let notify_socket = socket_path.to_string_lossy().into_owned();
    let mut instance = Instance::start_with(
        &path,
        &[
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let ready = notifications_until(&socket, "READY=1");
    assert_eq!(ready.last().map(String::as_str), Some("READY=1\n"));
    // The listener is bound by the time systemd hears it.
    assert_eq!(blocking_get(instance.addr, "/").0, 200);
    notifications_until(&socket, "WATCHDOG=1");

    instance.signal("-HUP");
    let reloading = notifications_until(&socket, "RELOADING=1");
    let message = reloading.last().cloned().unwrap_or_default();
    let usec = message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "MONOTONIC_USEC in {message:?}");
    let after = notifications_until(&socket, "READY=1");
    assert!(after.iter().all(|m| !m.contains("STOPPING")), "{after:?}");

    instance.signal("-TERM");
    notifications_until(&socket, "STOPPING=1");
    assert_eq!(instance.wait(), Some(0));
    let _ = std::fs::remove_file(&socket_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_one_request_and_one_session_across_instances() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let text = routes_config(
        &redis.url(),
        &[("app", "/", &backend)],
        "log:\n  format: json\n",
    );
    let one = Instance::start(&write_config("json-1.yaml", &text));
    let two = Instance::start(&write_config("json-2.yaml", &text));

    let login = RawRequest::new(one.addr, "GET", "/login")
        .header("X-Request-Id", "trace-login")
        .reply("X-Session-Set-user", "alice")
        .send()
        .await;
    let id = login.issued_session().expect("a session");
    let next = RawRequest::new(two.addr, "GET", "/account?token=secret-query")
        .header("X-Request-Id", "trace-next")
        .session(Some(&id))
        .send()
        .await;
    assert_eq!(next.backend_saw("x-session-user").as_deref(), Some("alice"));
    assert_eq!(blocking_get(one.admin.expect("admin"), "/healthz").0, 200);
    assert!(one.wait_for_log("trace-login").is_some());
    assert!(two.wait_for_log("trace-next").is_some());

    let access = |instance: &Instance, request_id: &str| -> serde_json::Value {
        let mut found = None;
        for line in instance.log() {
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            assert!(
                value
                    .as_object()
                    .is_some_and(|o| o.values().all(|v| !v.is_object())),
                "flat: {line}"
            );
            assert!(!line.contains(&id), "a session id in the log: {line}");
            assert!(
                !line.contains("secret-query"),
                "a query string in the log: {line}"
            );
            assert!(
                !line.contains("/healthz"),
                "a health check in the access log: {line}"
            );
            if value["request_id"] == request_id {
                found = Some(value);
            }
        }
        found.unwrap_or_else(|| panic!("no access line for {request_id}"))
    };
    let first = access(&one, "trace-login");
    let second = access(&two, "trace-next");
    for line in [&first, &second] {
        assert_eq!(line["target"], "stickless::access");
        assert_eq!(line["route"], "app");
        assert_eq!(line["status"], 200);
        assert_eq!(line["upstream"], backend.addr.to_string());
        assert!(line["duration_ms"].is_number(), "{line}");
        assert!(line["store_ms"].is_number(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
    assert_eq!(first["session_change"], "created");
    assert_eq!(second["path"], "/account");
    let fingerprint = first["session"].as_str().expect("fingerprint");
    assert_eq!(fingerprint.len(), 12);
    assert_eq!(
        second["session"], fingerprint,
        "the same session has the same fingerprint on every instance"
    );
}
