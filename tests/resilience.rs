//! Failures with defined outcomes: upstreams down or slow, Redis stopped, frozen or restarted,
//! sessions expiring, a full embedded store.

mod support;

use std::time::{Duration, Instant};

use support::{config, eventually, free_port, login, Backend, Proxy, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_fail_over_on_refused_connections() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&config("memory://", &[&a, &b])).await;
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(proxy.get("/").send().await.instance().expect("instance"));
    }
    assert_eq!(instances, ["a", "b", "a", "b"]);

    // One upstream refuses connections: every request, with or without a body, still lands.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let yaml = format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{dead}\", \"{}\"]\n",
        b.url()
    );
    let proxy = Proxy::start(&yaml).await;
    for _ in 0..4 {
        let response = proxy.request("POST", "/").body(b"payload").send().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.instance().as_deref(), Some("b"));
        assert_eq!(response.backend_saw("content-length").as_deref(), Some("7"));
    }

    // None answers: 502.
    let dead2 = format!("http://127.0.0.1:{}", free_port());
    let yaml = format!("store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{dead}\", \"{dead2}\"]\n");
    let proxy = Proxy::start(&yaml).await;
    assert_eq!(proxy.get("/").send().await.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504() {
    let a = Backend::start("a").await;
    let yaml = format!(
        "{}timeouts:\n  upstream_response: 300ms\n",
        config("memory://", &[&a])
    );
    let proxy = Proxy::start(&yaml).await;
    let started = Instant::now();
    let response = proxy
        .get("/")
        .header("X-Reply-Delay-Ms", "2000")
        .send()
        .await;
    assert_eq!(response.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(proxy.get("/").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_gives_503_then_recovers_without_restarting_the_proxy() {
    let dir = std::env::temp_dir().join(format!("stickless-aof-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dir_arg = dir.to_string_lossy().into_owned();
    // Durable Redis (AOF, fsync always), so a session survives the restart.
    let mut redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]);
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config(&redis.url(), &[&backend])).await;
    let id = login(&proxy, &[("user", "alice")]).await;

    redis.stop();
    for request in [
        proxy.get("/").session(Some(&id)),
        proxy.get("/").reply("X-Session-Set-User", "bob"),
    ] {
        let started = Instant::now();
        let response = request.send().await;
        let took = started.elapsed();
        assert_eq!(response.status, 503);
        assert_eq!(response.header("retry-after").as_deref(), Some("2"));
        assert!(took < Duration::from_millis(1500), "503 took {took:?}");
        response.assert_no_session_headers();
    }
    // Anonymous requests that write nothing need no store and are still served.
    assert_eq!(proxy.get("/").send().await.status, 200);

    redis.restart();
    let back = eventually(Duration::from_secs(10), async || {
        proxy.get("/").session(Some(&id)).send().await.status == 200
    })
    .await;
    assert!(back, "the proxy recovers once Redis is back");
    let response = proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice"),
        "nobody logged out"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_answers_within_the_timeout_and_recovers_on_sigcont() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config(&redis.url(), &[&backend])).await;
    let id = login(&proxy, &[("user", "alice")]).await;
    redis.freeze();
    let started = Instant::now();
    let response = proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(response.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    redis.thaw();
    let back = eventually(Duration::from_secs(10), async || {
        let response = proxy.get("/").session(Some(&id)).send().await;
        response.backend_saw("x-session-user").as_deref() == Some("alice")
    })
    .await;
    assert!(back, "recovers by itself after SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_reads_as_anonymous_but_refuses_writes() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let yaml = config(&redis.url(), &[&backend]).replace(
        "  timeout: \"500ms\"\n",
        "  timeout: \"300ms\"\n  on_unavailable: fail_open\n",
    );
    let proxy = Proxy::start(&yaml).await;
    let id = login(&proxy, &[("user", "alice")]).await;
    redis.freeze();
    let response = proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.backend_saw("x-session-id"),
        None,
        "served as anonymous"
    );
    let response = proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Set-Cart", "1")
        .send()
        .await;
    assert_eq!(response.status, 503, "writes are never silently dropped");
    // Nor is a logout reported as done while the store cannot delete the session.
    let response = proxy
        .get("/logout")
        .session(Some(&id))
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert_eq!(response.status, 503);
    assert!(!response.clears_session());
    redis.thaw();
    let alive = eventually(Duration::from_secs(10), async || {
        let response = proxy.get("/").session(Some(&id)).send().await;
        response.backend_saw("x-session-user").as_deref() == Some("alice")
    })
    .await;
    assert!(alive, "the session outlived the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_slides_and_expires() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}session:\n  idle_timeout: 2s\n  absolute_timeout: 1h\n",
        config(&redis.url(), &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let id = login(&proxy, &[("user", "alice")]).await;
    // Used every ~0.7 s (more often than every half idle timeout) for 4 s: stays alive.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let response = proxy.get("/").session(Some(&id)).send().await;
        assert_eq!(
            response.backend_saw("x-session-user").as_deref(),
            Some("alice")
        );
    }
    let key = format!("stickless:session:{id}");
    let ttl: i64 = redis.cmd(&["PTTL", &key]);
    assert!(
        ttl > 0 && ttl <= 2000,
        "TTL follows the idle timeout: {ttl}"
    );
    // Left alone longer than the idle timeout: gone, from Redis too.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let response = proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.backend_saw("x-session-id"), None);
    assert_eq!(redis.keys(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_timeout_is_never_extended() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}session:\n  idle_timeout: 10s\n  absolute_timeout: 2s\n",
        config(&redis.url(), &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let id = login(&proxy, &[("user", "alice")]).await;
    let key = format!("stickless:session:{id}");
    let ttl: i64 = redis.cmd(&["PTTL", &key]);
    assert!(ttl <= 2000, "TTL capped by the absolute timeout: {ttl}");
    let started = Instant::now();
    let mut alive = true;
    while started.elapsed() < Duration::from_millis(2600) {
        let response = proxy
            .get("/")
            .session(Some(&id))
            .reply("X-Session-Set-Seen", "1")
            .send()
            .await;
        assert_eq!(response.status, 200);
        alive = response.backend_saw("x-session-user").is_some();
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !alive,
        "busy but past its absolute timeout: the session must end"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_embedded_store_refuses_new_sessions_only() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config("memory://?max_sessions=1", &[&backend])).await;
    let id = login(&proxy, &[("user", "alice")]).await;
    let response = proxy
        .get("/login")
        .reply("X-Session-Set-User", "bob")
        .send()
        .await;
    assert_eq!(response.status, 503);
    assert_eq!(response.issued_session(), None);
    let response = proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Set-Cart", "2")
        .send()
        .await;
    assert_eq!(
        response.status, 200,
        "existing sessions still read and write"
    );
    assert_eq!(
        proxy
            .get("/")
            .session(Some(&id))
            .send()
            .await
            .backend_saw("x-session-cart")
            .as_deref(),
        Some("2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_graceful_shutdown() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&config("memory://", &[&backend])).await;
    let addr = proxy.addr;
    let slow = tokio::spawn(proxy.get("/").header("X-Reply-Delay-Ms", "700").send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.shutdown().await;
    assert_eq!(slow.await.expect("task").status, 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_at_the_header_deadline_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}timeouts:\n  header_read: 500ms\n",
        config("memory://", &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
            .await
            .expect("write");
        slow.push(stream);
    }
    // Meanwhile, a normal client is served.
    assert_eq!(proxy.get("/").send().await.status, 200);
    let started = Instant::now();
    for stream in &mut slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was not cut off");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_is_not_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("a").await;
    let yaml = format!(
        "{}timeouts:\n  header_read: 400ms\n  keepalive_idle: 1500ms\n  upstream_response: 5s\n",
        config("memory://", &[&backend])
    );
    let proxy = Proxy::start(&yaml).await;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    assert_eq!(support::read_response(&mut stream).await, Some(200));
    // Idle for longer than the header deadline: still open, and serves the next request.
    tokio::time::sleep(Duration::from_millis(900)).await;
    stream.write_all(request).await.expect("write");
    assert_eq!(support::read_response(&mut stream).await, Some(200));
    // A slow response keeps the connection busy, past both deadlines.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Reply-Delay-Ms: 2000\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(support::read_response(&mut stream).await, Some(200));
    // Idle past keepalive_idle: closed by the proxy.
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle connection was not closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_millis(3000),
        "{waited:?}"
    );
}
