//! Logout everywhere (`X-Session-Invalidate-All`), the principal index, the events stream and
//! the admin session API, over real sockets against real Redis (standalone and cluster) and
//! the memory store.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::topology::Cluster;
use support::{config, eventually, login, Backend, Proxy, RawRequest, RawResponse, RedisServer};

const TOKEN: &str = "an-admin-token-0123456789";

/// One catch-all route, sessions indexed by `user`, plus `extra` top-level YAML.
fn yaml(store: &str, backend: &Backend, session: &str, extra: &str) -> String {
    format!(
        "{}session:\n  principal_attribute: user\n{session}{extra}",
        config(store, &[backend])
    )
}

/// Whether `id` names a live session on `proxy` (the backend is told its id).
async fn alive(proxy: &Proxy, id: &str) -> bool {
    let response = proxy.get("/whoami").session(Some(id)).send().await;
    assert_eq!(response.status, 200);
    response.backend_saw("x-session-id").is_some()
}

async fn logout_everywhere(proxy: &Proxy, id: &str) -> RawResponse {
    let response = proxy
        .get("/logout-everywhere")
        .session(Some(id))
        .reply("X-Session-Invalidate-All", "true")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert!(response.clears_session(), "the cookie is cleared");
    response.assert_no_session_headers();
    response
}

/// The stream's entries, oldest first, as field maps.
fn events(redis: &RedisServer, key: &str) -> Vec<HashMap<String, String>> {
    let entries: Vec<(String, Vec<String>)> = redis.cmd(&["XRANGE", key, "-", "+"]);
    entries
        .into_iter()
        .map(|(_, fields)| {
            fields
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_across_two_proxies() {
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let text = yaml(&redis.url(), &backend, "", "events:\n  max_len: 1000\n");
    let (a, b) = (Proxy::start(&text).await, Proxy::start(&text).await);

    let alice = [
        login(&a, &[("User", "alice")]).await,
        login(&a, &[("User", "alice")]).await,
        login(&b, &[("User", "alice")]).await,
    ];
    let bob = login(&b, &[("User", "bob")]).await;
    let anonymous_attrs = login(&a, &[("Cart", "3")]).await;
    for id in alice.iter().chain([&bob, &anonymous_attrs]) {
        assert!(alive(&a, id).await && alive(&b, id).await);
    }

    logout_everywhere(&b, &alice[0]).await;
    for id in &alice {
        assert!(!alive(&a, id).await, "ended on the other instance too");
        assert!(!alive(&b, id).await);
    }
    assert!(
        alive(&a, &bob).await,
        "another principal's session lives on"
    );
    assert!(alive(&a, &anonymous_attrs).await);

    // One `invalidated` per ended session, with the principal.
    let ended: Vec<_> = events(&redis, "stickless:events")
        .into_iter()
        .filter(|e| e["type"] == "invalidated")
        .collect();
    assert_eq!(ended.len(), 3, "{ended:?}");
    let mut ids: Vec<&str> = ended.iter().map(|e| e["id"].as_str()).collect();
    ids.sort();
    let mut expected: Vec<&str> = alice.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(ended.iter().all(|e| e["principal"] == "alice"));
    // Alice's index is gone with her sessions; Bob's has a TTL.
    let keys = redis.keys();
    let indexes: Vec<&String> = keys.iter().filter(|k| k.contains(":principal:")).collect();
    assert_eq!(indexes.len(), 1, "{keys:?}");
    let pttl: i64 = redis.cmd(&["PTTL", indexes[0]]);
    assert!(pttl > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_principal_invalidate_all_ends_the_current_session() {
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&yaml(&redis.url(), &backend, "", "")).await;
    let one = login(&proxy, &[("Cart", "1")]).await;
    let two = login(&proxy, &[("Cart", "2")]).await;
    logout_everywhere(&proxy, &one).await;
    assert!(proxy
        .get("/")
        .session(Some(&one))
        .send()
        .await
        .backend_saw("x-session-cart")
        .is_none());
    let other = proxy.get("/").session(Some(&two)).send().await;
    assert_eq!(other.backend_saw("x-session-cart").as_deref(), Some("2"));

    // No `principal_attribute` at all: the same.
    let plain = config(&redis.url(), &[&backend]);
    let proxy = Proxy::start(&plain).await;
    let alice = login(&proxy, &[("User", "alice")]).await;
    let again = login(&proxy, &[("User", "alice")]).await;
    logout_everywhere(&proxy, &alice).await;
    let left = proxy.get("/").session(Some(&again)).send().await;
    assert_eq!(left.backend_saw("x-session-user").as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_across_cluster_slots() {
    let cluster = Cluster::start();
    let backend = Backend::start("app").await;
    let text = yaml(&cluster.url(), &backend, "", "events:\n  max_len: 1000\n");
    let (a, b) = (Proxy::start(&text).await, Proxy::start(&text).await);
    let mut alice = Vec::new();
    for i in 0..6 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        alice.push(login(proxy, &[("User", "alice")]).await);
    }
    let bob = login(&a, &[("User", "bob")]).await;
    let slots: std::collections::HashSet<u16> = alice
        .iter()
        .map(|id| cluster.slot_of(&format!("stickless:session:{id}")))
        .collect();
    let owners: std::collections::HashSet<usize> =
        slots.iter().map(|s| cluster.owner_of(*s)).collect();
    assert!(owners.len() > 1, "the sessions span several primaries");

    logout_everywhere(&a, &alice[3]).await;
    for id in &alice {
        assert!(!alive(&a, id).await && !alive(&b, id).await);
    }
    assert!(alive(&b, &bob).await);
    let events = cluster.on_owner(
        "stickless:events",
        &["XRANGE", "stickless:events", "-", "+"],
    );
    let invalidated = events.lines().filter(|l| l.trim() == "invalidated").count();
    assert_eq!(invalidated, 6, "{events}");
    let created = events.lines().filter(|l| l.trim() == "created").count();
    assert_eq!(created, 7, "{events}");
    // Every key but the stream has a TTL, on whichever node it lives; alice's index is gone.
    for key in cluster.all_keys() {
        if key != "stickless:events" {
            let pttl = cluster.on_owner(&key, &["PTTL", &key]);
            assert_ne!(pttl.trim(), "-1", "{key} has no TTL");
        }
    }
    let indexes = cluster
        .all_keys()
        .into_iter()
        .filter(|k| k.contains(":principal:"))
        .count();
    assert_eq!(indexes, 1, "only bob's index is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_without_a_ttl_and_none_after_expiry() {
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let text = yaml(
        &redis.url(),
        &backend,
        "  idle_timeout: 1s\n",
        "events:\n  max_len: 1000\n",
    );
    let proxy = Proxy::start(&text).await;
    let sample = |step: &str| {
        for key in redis.keys() {
            if key == "stickless:events" {
                continue; // Bounded by its length (MAXLEN), not by time: the one exception.
            }
            // -1: no TTL. (-2: expired between KEYS and PTTL; 0: expiring now.)
            let pttl: i64 = redis.cmd(&["PTTL", &key]);
            assert_ne!(pttl, -1, "{step}: {key} has no TTL");
            if key.contains(":principal:") {
                // The index outlives every session it lists.
                let members: Vec<String> = redis.cmd(&["ZRANGE", &key, "0", "-1"]);
                for id in members {
                    let session: i64 = redis.cmd(&["PTTL", &format!("stickless:session:{id}")]);
                    let index: i64 = redis.cmd(&["PTTL", &key]);
                    assert!(index >= session, "{step}: {key} {index} < {session}");
                }
            }
        }
    };
    let alice = login(&proxy, &[("User", "alice")]).await;
    sample("login");
    let bob = login(&proxy, &[("User", "bob")]).await;
    sample("second login");
    // The principal changes (alice → carol), then is removed, then rotated back in.
    let r = proxy
        .get("/")
        .session(Some(&alice))
        .reply("X-Session-Set-User", "carol")
        .send()
        .await;
    assert_eq!(r.status, 200);
    sample("principal changed");
    let r = proxy
        .get("/")
        .session(Some(&alice))
        .reply("X-Session-Remove", "user")
        .send()
        .await;
    assert_eq!(r.status, 200);
    sample("principal removed");
    let r = proxy
        .get("/")
        .session(Some(&bob))
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    let rotated = r.issued_session().expect("rotated");
    sample("rotated");
    assert!(alive(&proxy, &rotated).await);
    sample("read");
    let keys = redis.keys();
    assert!(
        keys.iter().filter(|k| k.contains(":principal:")).count() == 1,
        "only bob's index is left (carol's and alice's emptied): {keys:?}"
    );
    // Everything but the stream goes by itself: the sessions after the idle timeout, the
    // indexes within store.timeout + 2s after their last member.
    let gone = eventually(Duration::from_secs(10), async || {
        sample("expiring");
        redis.keys().iter().all(|k| k == "stickless:events")
    })
    .await;
    assert!(gone, "left: {:?}", redis.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_order_with_their_fields_and_capped() {
    // Small stream nodes, so `MAXLEN ~` trims close to the cap.
    let redis = RedisServer::start_with(&["--stream-node-max-entries", "10"]);
    let backend = Backend::start("app").await;
    let text = yaml(&redis.url(), &backend, "", "events:\n  max_len: 20\n");
    let proxy = Proxy::start(&text).await;
    let before = stickless::session::lifetime::now_millis();
    let first = login(&proxy, &[("User", "alice")]).await;
    let r = proxy
        .get("/")
        .session(Some(&first))
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    let second = r.issued_session().expect("rotated");
    // An update is not a lifecycle change.
    proxy
        .get("/")
        .session(Some(&second))
        .reply("X-Session-Set-Cart", "1")
        .send()
        .await;
    let r = proxy
        .get("/")
        .session(Some(&second))
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert!(r.clears_session());
    let anonymous = login(&proxy, &[("Cart", "2")]).await;

    let got = events(&redis, "stickless:events");
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["created", "rotated", "invalidated", "created"]);
    assert_eq!(got[0]["id"], first);
    assert_eq!(got[1]["id"], second);
    assert_eq!(got[1]["old_id"], first);
    assert_eq!(got[2]["id"], second);
    assert_eq!(got[3]["id"], anonymous);
    assert!(got[..3].iter().all(|e| e["principal"] == "alice"));
    assert!(!got[3].contains_key("principal"));
    let mut last = before;
    for event in &got {
        let at: u64 = event["at"].parse().expect("Unix ms");
        assert!(at >= last, "in order");
        last = at;
    }

    // Capped near max_len.
    for _ in 0..100 {
        login(&proxy, &[("User", "bob")]).await;
    }
    let len: u64 = redis.cmd(&["XLEN", "stickless:events"]);
    assert!((20..=30).contains(&len), "XLEN {len}");
}

async fn admin(proxy: &Proxy, method: &str, path: &str, token: Option<&str>) -> RawResponse {
    let mut request = RawRequest::new(proxy.admin.expect("admin listener"), method, path);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    request.send().await
}

fn json(response: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).expect("JSON")
}

async fn admin_api(store: &str, redis: Option<&mut RedisServer>) {
    let dir = std::env::temp_dir().join(format!("stickless-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join(format!("token-{}", store.len()));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let backend = Backend::start("app").await;
    let admin_yaml = format!(
        "admin:\n  listen: \"127.0.0.1:0\"\n  token_file: \"{}\"\n",
        token_file.display()
    );
    let text = yaml(store, &backend, "", &admin_yaml);
    let proxy = Proxy::start(&text).await;

    let alice = login(&proxy, &[("User", "a b@c"), ("Blob", "x")]).await;
    let other = login(&proxy, &[("User", "a b@c")]).await;
    let bob = login(&proxy, &[("User", "bob")]).await;

    // 401 without the token, with another one, or another scheme.
    for token in [None, Some("wrong-token-0123456789")] {
        let r = admin(&proxy, "GET", &format!("/sessions/{alice}"), token).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    let basic = RawRequest::new(
        proxy.admin.expect("admin"),
        "GET",
        "/principals/bob/sessions",
    )
    .header("Authorization", &format!("Basic {TOKEN}"))
    .send()
    .await;
    assert_eq!(basic.status, 401);

    // GET /sessions/<id>
    let r = admin(&proxy, "GET", &format!("/sessions/{alice}"), Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = json(&r);
    assert_eq!(body["id"], alice.as_str());
    assert_eq!(body["attributes"]["user"], "a b@c");
    assert_eq!(body["attributes"]["blob"], "x");
    let left = body["expires_in_ms"].as_u64().expect("ms");
    assert!(left > 0 && left <= 30 * 60 * 1000);
    for missing in [
        "nope".to_owned(),
        "A".repeat(43),
        "%00".to_owned(),
        format!("{alice}/x"),
    ] {
        let r = admin(&proxy, "GET", &format!("/sessions/{missing}"), Some(TOKEN)).await;
        assert_eq!(r.status, 404, "{missing}");
    }

    // GET /principals/<value>/sessions, percent-decoded.
    let r = admin(&proxy, "GET", "/principals/a%20b%40c/sessions", Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    let mut ids: Vec<String> = serde_json::from_slice(&r.body).expect("array");
    ids.sort();
    let mut expected = vec![alice.clone(), other.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let r = admin(&proxy, "GET", "/principals/nobody/sessions", Some(TOKEN)).await;
    assert_eq!((r.status, r.text().trim()), (200, "[]"));

    // DELETE /sessions/<id>: 204, then 404; the index follows.
    let r = admin(&proxy, "DELETE", &format!("/sessions/{alice}"), Some(TOKEN)).await;
    assert_eq!(r.status, 204);
    let r = admin(&proxy, "DELETE", &format!("/sessions/{alice}"), Some(TOKEN)).await;
    assert_eq!(r.status, 404);
    assert!(!alive(&proxy, &alice).await);
    let r = admin(&proxy, "GET", "/principals/a%20b%40c/sessions", Some(TOKEN)).await;
    assert_eq!(json(&r), serde_json::json!([other.as_str()]));

    // DELETE /principals/<value>/sessions: 204, all of them ended.
    let r = admin(
        &proxy,
        "DELETE",
        "/principals/a%20b%40c/sessions",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(!alive(&proxy, &other).await);
    assert!(alive(&proxy, &bob).await);
    let r = admin(&proxy, "GET", "/principals/a%20b%40c/sessions", Some(TOKEN)).await;
    assert_eq!(r.text().trim(), "[]");
    let r = admin(&proxy, "PUT", &format!("/sessions/{bob}"), Some(TOKEN)).await;
    assert_eq!(r.status, 405);

    // The token file is re-read on reload.
    let new_token = "a-new-admin-token-9876543210";
    std::fs::write(&token_file, new_token).expect("token");
    proxy.reload(&text).expect("reload");
    let r = admin(&proxy, "GET", &format!("/sessions/{bob}"), Some(TOKEN)).await;
    assert_eq!(r.status, 401);
    let r = admin(&proxy, "GET", &format!("/sessions/{bob}"), Some(new_token)).await;
    assert_eq!(r.status, 200);

    // Without a token file the API does not exist.
    let no_token = yaml(store, &backend, "", "admin:\n  listen: \"127.0.0.1:0\"\n");
    proxy.reload(&no_token).expect("reload");
    let r = admin(&proxy, "GET", &format!("/sessions/{bob}"), Some(new_token)).await;
    assert_eq!(r.status, 404);
    proxy.reload(&text).expect("reload");

    // The store down: 503, never a 5xx of another kind.
    if let Some(redis) = redis {
        redis.stop();
        for (method, path) in [
            ("GET", format!("/sessions/{bob}")),
            ("DELETE", format!("/sessions/{bob}")),
            ("GET", "/principals/bob/sessions".to_owned()),
            ("DELETE", "/principals/bob/sessions".to_owned()),
        ] {
            let r = admin(&proxy, method, &path, Some(new_token)).await;
            assert_eq!(r.status, 503, "{method} {path}");
        }
    }
    let _ = std::fs::remove_file(&token_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_session_api_on_redis() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    admin_api(&url, Some(&mut redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_session_api_on_the_memory_store() {
    admin_api("memory://", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_on_the_memory_store() {
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&yaml("memory://", &backend, "", "")).await;
    let one = login(&proxy, &[("User", "alice")]).await;
    let two = login(&proxy, &[("User", "alice")]).await;
    let bob = login(&proxy, &[("User", "bob")]).await;
    logout_everywhere(&proxy, &two).await;
    assert!(!alive(&proxy, &one).await && !alive(&proxy, &two).await);
    assert!(alive(&proxy, &bob).await);
}

#[test]
fn events_need_a_redis_store() {
    let text = "store:\n  url: \"memory://\"\nevents:\n  max_len: 10\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:1\"]\n";
    let err = stickless::config::Settings::from_yaml(text, "t.yaml").expect_err("refused");
    assert!(format!("{err}").contains("events"), "{err}");
    let text = "store:\n  url: \"memory://\"\nsession:\n  principal_attribute: \"User Name\"\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:1\"]\n";
    let err = stickless::config::Settings::from_yaml(text, "t.yaml").expect_err("refused");
    assert!(format!("{err}").contains("principal_attribute"), "{err}");
}

/// What the index and the events cost in Redis commands (each proxy operation is still one
/// round trip outside a cluster; see the README's Redis key layout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_login_request_and_logout() {
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let text = yaml(&redis.url(), &backend, "", "events:\n  max_len: 1000\n");
    let proxy = Proxy::start(&text).await;
    let count = |redis: &RedisServer| -> HashMap<String, u64> {
        let calls = redis.proxy_commands().into_iter().collect();
        redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
        calls
    };
    count(&redis);
    let id = login(&proxy, &[("User", "alice")]).await;
    let login_calls = count(&redis);
    for name in [
        "zadd",
        "zremrangebyscore",
        "zrange",
        "pexpireat",
        "hset",
        "pexpire",
        "xadd",
    ] {
        assert_eq!(login_calls.get(name), Some(&1), "login: {login_calls:?}");
    }
    assert!(alive(&proxy, &id).await);
    let read_calls = count(&redis);
    assert!(
        read_calls.keys().all(|c| c == "hgetall" || c == "pttl"),
        "a read without an extension writes nothing: {read_calls:?}"
    );
    let r = proxy
        .get("/logout")
        .session(Some(&id))
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert!(r.clears_session());
    let logout_calls = count(&redis);
    for name in ["del", "zrem", "zremrangebyscore", "zrange", "xadd"] {
        assert_eq!(logout_calls.get(name), Some(&1), "logout: {logout_calls:?}");
    }
}

/// With values sealed at rest, the index and the session hash hold only the principal's tag;
/// logout everywhere and the admin API still work (the admin API shows values opened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_sessions_are_indexed_by_tag_only() {
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let dir = std::env::temp_dir().join(format!("stickless-sealed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (signing, sealing, token) = (dir.join("signing"), dir.join("sealing"), dir.join("token"));
    std::fs::write(
        &signing,
        "signing-key-0123456789abcdefghijklmnopqrstuvwxyz\n",
    )
    .expect("w");
    std::fs::write(
        &sealing,
        "sealing-key-0123456789abcdefghijklmnopqrstuvwxyz\n",
    )
    .expect("w");
    std::fs::write(&token, TOKEN).expect("w");
    let session = format!(
        "  cookie:\n    signing_keys_file: \"{}\"\n  encryption_keys_file: \"{}\"\n",
        signing.display(),
        sealing.display()
    );
    let admin_yaml = format!(
        "admin:\n  listen: \"127.0.0.1:0\"\n  token_file: \"{}\"\n",
        token.display()
    );
    let proxy = Proxy::start(&yaml(&redis.url(), &backend, &session, &admin_yaml)).await;
    let one = login(&proxy, &[("User", "alice-secret")]).await;
    let two = login(&proxy, &[("User", "alice-secret")]).await;
    let bare = |cookie: &str| cookie.split('.').next().unwrap_or_default().to_owned();

    let keys = redis.keys();
    assert_eq!(keys.iter().filter(|k| k.contains(":principal:")).count(), 1);
    for key in keys.iter().filter(|k| k.contains(":session:")) {
        assert!(!key.contains("alice"));
        let fields: Vec<Vec<u8>> = redis.cmd(&["HGETALL", key]);
        assert!(
            fields.iter().all(|f| !f.windows(5).any(|w| w == b"alice")),
            "{key} holds the value in the clear"
        );
    }
    let r = admin(
        &proxy,
        "GET",
        &format!("/sessions/{}", bare(&one)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(json(&r)["attributes"]["user"], "alice-secret");
    let r = admin(
        &proxy,
        "GET",
        "/principals/alice-secret/sessions",
        Some(TOKEN),
    )
    .await;
    let mut ids: Vec<String> = serde_json::from_slice(&r.body).expect("array");
    ids.sort();
    let mut expected = vec![bare(&one), bare(&two)];
    expected.sort();
    assert_eq!(ids, expected);

    logout_everywhere(&proxy, &one).await;
    assert!(!alive(&proxy, &one).await && !alive(&proxy, &two).await);
    assert!(redis.keys().is_empty(), "{:?}", redis.keys());
}
