//! The header protocol of the contract, end to end: a real client, the proxy, a real upstream
//! and a real `redis-server`.

mod support;

use support::{config, login, Backend, Proxy, RedisServer};

struct Rig {
    redis: RedisServer,
    backend: Backend,
    proxy: Proxy,
}

async fn rig_with(extra: &str) -> Rig {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&format!("{}{extra}", config(&redis.url(), &[&backend]))).await;
    Rig {
        redis,
        backend,
        proxy,
    }
}

async fn rig() -> Rig {
    rig_with("").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_traffic_gets_no_session_and_writes_nothing() {
    let rig = rig().await;
    rig.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for path in ["/", "/page?x=1", "/other"] {
        let response = rig.proxy.get(path).send().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.all("set-cookie"), Vec::<String>::new());
        assert!(response
            .backend_header_names()
            .iter()
            .all(|n| !n.starts_with("x-session-")));
    }
    // Responses that change nothing, or only remove/rotate, create nothing either.
    let response = rig
        .proxy
        .get("/")
        .reply("X-Session-Remove", "user")
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.issued_session(), None);
    assert_eq!(rig.redis.keys(), Vec::<String>::new());
    assert_eq!(
        rig.redis.proxy_commands(),
        vec![],
        "anonymous requests sent commands to Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_cookie_and_later_requests_see_the_session() {
    let rig = rig().await;
    let response = rig
        .proxy
        .get("/login")
        .reply("X-Session-Set-User", "alice")
        .reply("X-Session-Set-Role", "admin")
        .send()
        .await;
    assert_eq!(response.status, 200);
    response.assert_no_session_headers();
    let cookie = response
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("SESSION="))
        .expect("cookie");
    for attribute in ["Path=/", "HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert_eq!(
        response.header("cache-control").as_deref(),
        Some("no-store")
    );
    let id = response.issued_session().expect("id");
    assert_eq!(id.len(), 43, "256-bit base64url id");

    let response = rig.proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.backend_saw("x-session-id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        response.backend_saw("x-session-role").as_deref(),
        Some("admin")
    );
    assert_eq!(
        response.issued_session(),
        None,
        "an existing session is not re-issued"
    );
    response.assert_no_session_headers();

    // The Redis layout the README documents.
    let key = format!("stickless:session:{id}");
    assert_eq!(rig.redis.keys(), vec![key.clone()]);
    let user: String = rig.redis.cmd(&["HGET", &key, "user"]);
    assert_eq!(user, "alice");
    let created: u64 = rig.redis.cmd(&["HGET", &key, "_created"]);
    assert!(created > 1_700_000_000_000);
    let ttl: i64 = rig.redis.cmd(&["PTTL", &key]);
    assert!(ttl > 29 * 60 * 1000 && ttl <= 30 * 60 * 1000, "ttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_session_headers_never_reach_the_backend() {
    let rig = rig().await;
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let spellings: [&[u8]; 7] = [
        b"X-Session-User",
        b"x-session-user",
        b"X-SESSION-USER",
        b"x_session_user",
        b"X_Session-Id",
        b"X-Session-Admin",
        b"x-SeSsIoN_rOlE",
    ];
    for cookie in [None, Some(id.as_str())] {
        let mut request = rig.proxy.get("/").session(cookie);
        for name in spellings {
            request = request.raw_header(name, b"mallory");
        }
        // Naming the injected headers in Connection must not remove them.
        let response = request
            .header("Connection", "X-Session-User, x-session-id")
            .send()
            .await;
        assert_eq!(response.status, 200);
        let seen = rig.backend.last();
        for (name, value) in &seen {
            let normalized = name.as_str().replace('_', "-");
            if normalized.starts_with("x-session-") {
                assert_ne!(value, "mallory", "{name} was forged");
            }
        }
        match cookie {
            None => assert!(seen
                .keys()
                .all(|n| !n.as_str().replace('_', "-").starts_with("x-session-"))),
            Some(id) => {
                assert_eq!(
                    seen.get("x-session-user").map(|v| v.as_bytes()),
                    Some(&b"alice"[..])
                );
                assert_eq!(
                    seen.get("x-session-id").map(|v| v.as_bytes()),
                    Some(id.as_bytes())
                );
                assert_eq!(seen.get_all("x-session-user").iter().count(), 1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prefixed_header_ever_reaches_the_client() {
    let rig = rig().await;
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let response = rig
        .proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Id", "forged")
        .reply("X-Session-Unknown", "x")
        .reply("X_Session_Set_User", "mallory")
        .reply("X-SESSION-OTHER", "x")
        .reply("X-Other", "kept")
        .send()
        .await;
    assert_eq!(response.status, 200);
    response.assert_no_session_headers();
    assert_eq!(response.header("x-other").as_deref(), Some("kept"));
    // The odd spelling of a control header is dropped, not applied.
    let after = rig.proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(
        after.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_rotate_invalidate_and_their_precedence() {
    let rig = rig().await;
    let id = login(
        &rig.proxy,
        &[("user", "alice"), ("cart", "3"), ("theme", "dark")],
    )
    .await;

    // Remove (a list, case-insensitive names).
    let response = rig
        .proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Remove", "Cart, theme")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let seen = rig.proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(seen.backend_saw("x-session-cart"), None);
    assert_eq!(seen.backend_saw("x-session-theme"), None);
    assert_eq!(seen.backend_saw("x-session-user").as_deref(), Some("alice"));

    // Rotate + remove + set in one response: new id, attributes kept, old id dead at once.
    let response = rig
        .proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Rotate", "true")
        .reply("X-Session-Set-Role", "admin")
        .reply("X-Session-Remove", "role")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let rotated = response.issued_session().expect("a new id");
    assert_ne!(rotated, id);
    let old = rig.proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(old.status, 200);
    assert_eq!(
        old.backend_saw("x-session-id"),
        None,
        "old id must stop working"
    );
    let new = rig.proxy.get("/").session(Some(&rotated)).send().await;
    assert_eq!(new.backend_saw("x-session-user").as_deref(), Some("alice"));
    assert_eq!(
        new.backend_saw("x-session-role").as_deref(),
        Some("admin"),
        "set applies after remove"
    );
    assert_eq!(
        rig.redis.keys(),
        vec![format!("stickless:session:{rotated}")]
    );

    // Invalidate wins over everything else in the response.
    let response = rig
        .proxy
        .get("/logout")
        .session(Some(&rotated))
        .reply("X-Session-Set-User", "bob")
        .reply("X-Session-Rotate", "true")
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert!(response.clears_session());
    assert_eq!(response.issued_session(), None);
    assert_eq!(rig.redis.keys(), Vec::<String>::new());
    let gone = rig.proxy.get("/").session(Some(&rotated)).send().await;
    assert_eq!(gone.backend_saw("x-session-id"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_updates_get_502_and_leave_the_session_unchanged() {
    let rig = rig_with("session:\n  max_bytes: 100\n").await;
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let big = "x".repeat(200);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("X-Session-Set-Bad_Name", "1")],
        vec![("X-Session-Set-Id", "1")],
        vec![
            ("X-Session-Set-User", "bob"),
            ("X-Session-Remove", "not a name"),
        ],
        vec![("X-Session-Set-User", "bob"), ("X-Session-Rotate", "maybe")],
        vec![("X-Session-Set-User", "a"), ("X-Session-Set-User", "b")],
        vec![
            ("X-Session-Set-User", "bob"),
            ("X-Session-Set-Blob", big.as_str()),
        ],
    ];
    for case in cases {
        let mut request = rig.proxy.get("/").session(Some(&id));
        for (name, value) in &case {
            request = request.reply(name, value);
        }
        let response = request.send().await;
        assert_eq!(response.status, 502, "{case:?}");
        assert_eq!(response.all("set-cookie"), Vec::<String>::new());
        response.assert_no_session_headers();
        let after = rig.proxy.get("/").session(Some(&id)).send().await;
        assert_eq!(
            after.backend_saw("x-session-user").as_deref(),
            Some("alice"),
            "{case:?}"
        );
        assert_eq!(after.backend_saw("x-session-blob"), None);
    }
    // Creating an oversized session is refused too, and creates nothing.
    let response = rig
        .proxy
        .get("/")
        .reply("X-Session-Set-Blob", &big)
        .send()
        .await;
    assert_eq!(response.status, 502);
    assert_eq!(rig.redis.keys().len(), 1);
}

/// Each limit on what a backend may store has its own knob and the same answer: 502, the
/// stored session as it was. Sizes count the header lines the session is injected as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_on_count_value_and_total_size() {
    let rig =
        rig_with("session:\n  max_bytes: 150\n  max_attributes: 3\n  max_value_bytes: 40\n").await;
    // `X-Session-User: alice\r\n` is 23 bytes.
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let (forty, forty_one) = ("v".repeat(40), "v".repeat(41));
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "value over max_value_bytes",
            vec![("X-Session-Set-A", &forty_one)],
        ),
        (
            "a fourth attribute",
            vec![
                ("X-Session-Set-A", "1"),
                ("X-Session-Set-B", "2"),
                ("X-Session-Set-C", "3"),
            ],
        ),
        (
            "168 bytes of headers",
            vec![
                ("X-Session-Set-A", &forty),
                ("X-Session-Set-B", &forty),
                ("X-Session-Set-User", &forty),
            ],
        ),
    ];
    for (why, case) in refused {
        let mut request = rig.proxy.get("/").session(Some(&id));
        for (name, value) in &case {
            request = request.reply(name, value);
        }
        let response = request.send().await;
        assert_eq!(response.status, 502, "{why}");
        response.assert_no_session_headers();
        let after = rig.proxy.get("/").session(Some(&id)).send().await;
        assert_eq!(
            after.backend_saw("x-session-user").as_deref(),
            Some("alice")
        );
        assert_eq!(after.backend_saw("x-session-a"), None, "{why}");
    }
    // Right at the limits (3 attributes, 40-byte values, 133 bytes) is fine.
    let response = rig
        .proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Set-A", &forty)
        .reply("X-Session-Set-B", &forty)
        .send()
        .await;
    assert_eq!(response.status, 200);
    let after = rig.proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(
        after.backend_saw("x-session-b").as_deref(),
        Some(forty.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_stored_and_injected_byte_for_byte() {
    let rig = rig().await;
    let value: &[u8] = b"caf\xc3\xa9 \xff\x80 \"quoted\", ; = tabs\there";
    let response = rig
        .proxy
        .get("/")
        .raw_header(
            b"X-Reply-Header",
            &[&b"X-Session-Set-Name: "[..], value].concat(),
        )
        .send()
        .await;
    let id = response.issued_session().expect("created");
    rig.proxy.get("/").session(Some(&id)).send().await;
    let seen = rig.backend.last();
    assert_eq!(
        seen.get("x-session-name").map(|v| v.as_bytes()),
        Some(value)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_cannot_set_the_session_cookie() {
    let rig = rig().await;
    let response = rig
        .proxy
        .get("/")
        .reply(
            "Set-Cookie",
            "SESSION=attacker-chosen-id-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; Path=/",
        )
        .reply("Set-Cookie", "theme=dark; Path=/")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.all("set-cookie"),
        vec!["theme=dark; Path=/".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_setting_different_attributes_all_persist() {
    let rig = rig().await;
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let request = rig
            .proxy
            .get("/")
            .session(Some(&id))
            .reply(&format!("X-Session-Set-A{i}"), &i.to_string());
        tasks.push(tokio::spawn(request.send()));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").status, 200);
    }
    let response = rig.proxy.get("/").session(Some(&id)).send().await;
    for i in 0..20 {
        assert_eq!(
            response.backend_saw(&format!("x-session-a{i}")),
            Some(i.to_string()),
            "a{i} lost"
        );
    }
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cookies_are_no_session_and_never_5xx() {
    let rig = rig().await;
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let unknown = "A".repeat(43);
    let huge = format!("SESSION={}", "a".repeat(8192));
    let cookies: Vec<Vec<u8>> = vec![
        format!("SESSION={unknown}").into_bytes(),
        b"SESSION=".to_vec(),
        b"SESSION".to_vec(),
        huge.into_bytes(),
        b"SESSION=\xc3\xa9\xff\xfe".to_vec(),
        b"SESSION=..%00..".to_vec(),
        format!("SESSION={unknown}; SESSION={unknown}").into_bytes(),
        b";;;=;SESSION==".to_vec(),
    ];
    for cookie in &cookies {
        let response = rig
            .proxy
            .get("/")
            .raw_header(b"Cookie", cookie)
            .send()
            .await;
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(cookie));
        assert_eq!(response.backend_saw("x-session-id"), None);
    }
    // Duplicates: a junk one next to the real one still finds the session.
    let both = format!("SESSION=junk; other=\u{e9}; SESSION={id}");
    let response = rig.proxy.get("/").header("Cookie", &both).send().await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
    // And in two Cookie header lines.
    let response = rig
        .proxy
        .get("/")
        .header("Cookie", "SESSION=junk")
        .header("Cookie", &format!("SESSION={id}"))
        .send()
        .await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_off_strips_both_ways_and_touches_nothing() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let yaml = format!(
        "store:\n  url: \"{}\"\nroutes:\n  - match: {{ path_prefix: \"/static\" }}\n    upstreams: [\"{}\"]\n    session: \"off\"\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n",
        redis.url(),
        backend.url(),
        backend.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let id = login(&proxy, &[("user", "alice")]).await;
    redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let response = proxy
        .get("/static/app.js")
        .session(Some(&id))
        .header("X-Session-User", "mallory")
        .reply("X-Session-Set-User", "bob")
        .reply("X-Session-Invalidate", "true")
        .reply("Set-Cookie", "SESSION=x")
        .send()
        .await;
    assert_eq!(response.status, 200);
    response.assert_no_session_headers();
    assert_eq!(response.all("set-cookie"), Vec::<String>::new());
    assert!(response
        .backend_header_names()
        .iter()
        .all(|n| !n.starts_with("x-session-")));
    assert_eq!(
        redis.proxy_commands(),
        vec![],
        "session: off must not touch the store"
    );
    let after = proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(
        after.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_required_answers_401_or_redirects() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/admin\" }}\n    upstreams: [\"{b}\"]\n    session: required\n    login_url: \"/login?next=admin\"\n  - match: {{ path_prefix: \"/api\" }}\n    upstreams: [\"{b}\"]\n    session: required\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{b}\"]\n",
        b = backend.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let before = backend.seen().len();
    let response = proxy.get("/api/orders").send().await;
    assert_eq!(response.status, 401);
    let response = proxy
        .get("/admin")
        .header("Cookie", &format!("SESSION={}", "B".repeat(43)))
        .send()
        .await;
    assert_eq!(response.status, 302);
    assert_eq!(
        response.header("location").as_deref(),
        Some("/login?next=admin")
    );
    assert_eq!(
        backend.seen().len(),
        before,
        "anonymous requests must not reach a required route"
    );

    let id = login(&proxy, &[("user", "alice")]).await;
    let response = proxy.get("/api/orders").session(Some(&id)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
    // Dot segments cannot smuggle a request past the required route.
    assert_eq!(proxy.get("/public/../api/orders").send().await.status, 400);
    assert_eq!(
        proxy.get("/public/%2e%2e/api/orders").send().await.status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxying_headers_hop_by_hop_and_forwarded() {
    let rig = rig().await;
    let response = rig
        .proxy
        .get("/")
        .header("Connection", "close, X-Private")
        .header("X-Private", "secret")
        .header("Keep-Alive", "timeout=5")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Custom", "kept")
        .reply("X-Backend", "kept")
        .reply("Keep-Alive", "timeout=99")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.backend_saw("x-private"), None);
    assert_eq!(response.backend_saw("keep-alive"), None);
    assert_eq!(response.backend_saw("x-custom").as_deref(), Some("kept"));
    // The client is no trusted load balancer: its forwarding claims are replaced.
    assert_eq!(
        response.backend_saw("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        response.backend_saw("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        response.backend_saw("x-forwarded-host").as_deref(),
        Some("app.test")
    );
    assert_eq!(response.backend_saw("host").as_deref(), Some("app.test"));
    assert_eq!(response.header("x-backend").as_deref(), Some("kept"));
    assert_eq!(response.header("keep-alive"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_trusted_only_from_configured_balancers() {
    let backend = Backend::start("a").await;
    let claims = |request: support::RawRequest| {
        request
            .header("X-Forwarded-For", "203.0.113.7")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "www.example.com")
            .header("X-Forwarded-Port", "443")
            .header("X-Real-IP", "203.0.113.7")
            .header("Forwarded", "for=203.0.113.7;proto=https")
    };
    // The proxy's peer is 127.0.0.1: trusted in the first config, not in the second.
    for (trusted, trust) in [
        ("[\"127.0.0.0/8\"]", true),
        ("[\"10.0.0.0/8\", \"::1\"]", false),
    ] {
        let yaml = format!(
            "{}trusted_proxies: {trusted}\n",
            config("memory://", &[&backend])
        );
        let proxy = Proxy::start(&yaml).await;
        let response = claims(proxy.get("/")).send().await;
        assert_eq!(response.status, 200);
        let saw = |name: &str| response.backend_saw(name);
        if trust {
            assert_eq!(
                saw("x-forwarded-for").as_deref(),
                Some("203.0.113.7, 127.0.0.1")
            );
            assert_eq!(saw("x-forwarded-proto").as_deref(), Some("https"));
            assert_eq!(saw("x-forwarded-host").as_deref(), Some("www.example.com"));
            assert_eq!(saw("x-forwarded-port").as_deref(), Some("443"));
        } else {
            assert_eq!(saw("x-forwarded-for").as_deref(), Some("127.0.0.1"));
            assert_eq!(saw("x-forwarded-proto").as_deref(), Some("http"));
            assert_eq!(saw("x-forwarded-host").as_deref(), Some("app.test"));
            for gone in ["x-forwarded-port", "x-real-ip", "forwarded"] {
                assert_eq!(saw(gone), None, "{gone}");
            }
        }
    }
    // A bad range is a config error naming its key path.
    let bad = format!(
        "{}trusted_proxies: [\"10.0.0.0/33\"]\n",
        config("memory://", &[&backend])
    );
    let err = stickless::config::Settings::from_yaml(&bad, "t.yaml")
        .map(|_| ())
        .expect_err("invalid");
    assert!(err.to_string().contains("trusted_proxies[0]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_through() {
    let rig = rig().await;
    let body = vec![b'z'; 3 * 1024 * 1024];
    let response = rig
        .proxy
        .request("POST", "/upload")
        .body(&body)
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.backend_saw("content-length"),
        Some(body.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_round_trips_per_request() {
    let rig = rig().await;
    let id = login(&rig.proxy, &[("user", "alice"), ("role", "admin")]).await;
    // Warm: scripts loaded, connection up.
    rig.proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Set-Cart", "1")
        .send()
        .await;

    rig.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..10 {
        assert_eq!(
            rig.proxy.get("/").session(Some(&id)).send().await.status,
            200
        );
    }
    // A read is one pipelined HGETALL + PTTL; the extension is not due yet.
    let mut reads = rig.redis.proxy_commands();
    reads.sort();
    assert_eq!(
        reads,
        vec![("hgetall".to_owned(), 10), ("pttl".to_owned(), 10)]
    );

    rig.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let response = rig
        .proxy
        .get("/")
        .session(Some(&id))
        .reply("X-Session-Set-Cart", "2")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let calls = rig.redis.proxy_commands();
    let top_level: Vec<_> = calls
        .iter()
        .filter(|(n, _)| n.starts_with("eval"))
        .collect();
    assert_eq!(
        top_level,
        vec![&("evalsha".to_owned(), 1)],
        "one script call per write: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served_and_the_backend_gets_a_host() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let rig = rig().await;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut request = http::Request::new(Empty::new());
    *request.uri_mut() = format!("http://{}/h2", rig.proxy.addr)
        .parse()
        .expect("uri");
    *request.version_mut() = http::Version::HTTP_2;
    let response = client.request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!("host: {}", rig.proxy.addr)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sloppy_logout_still_logs_out() {
    let rig = rig().await;
    let id = login(&rig.proxy, &[("user", "alice")]).await;
    let response = rig
        .proxy
        .get("/logout")
        .session(Some(&id))
        .reply("X-Session-Set-Last_Seen", "now")
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert_eq!(
        response.status, 200,
        "invalidate wins over a malformed sibling"
    );
    assert!(response.clears_session());
    assert_eq!(rig.redis.keys(), Vec::<String>::new());
}
