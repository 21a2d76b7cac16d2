//! Secrets: signed session cookies (forged, unsigned or tampered ids are refused without a
//! store round trip) and attribute values sealed at rest (a Redis dump or `MONITOR` shows none
//! of them); both kinds of key rotate without logging anyone out.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{config, login, Backend, Proxy, RedisServer};

const KEY_1: &str = "first-key-0123456789abcdefghijklmnopqrstuvwxyz";
const KEY_2: &str = "second-key-0123456789abcdefghijklmnopqrstuvwxy";

fn keys_file(name: &str, keys: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("stickless-signing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, format!("# newest first\n{}\n", keys.join("\n"))).expect("write keys");
    path.to_string_lossy().into_owned()
}

const SEAL_1: &str = "sealing-key-one-0123456789abcdefghijklmnopqrstu";
const SEAL_2: &str = "sealing-key-two-0123456789abcdefghijklmnopqrstu";

/// A proxy that signs with KEY_1 and seals with `sealing` (none: values stored as sent).
async fn sealing_proxy(
    redis: &RedisServer,
    backend: &Backend,
    sealing: &[&str],
    name: &str,
) -> Proxy {
    let mut yaml = format!(
        "{}session:\n  cookie:\n    signing_keys_file: \"{}\"\n",
        config(&redis.url(), &[backend]),
        keys_file(&format!("{name}.signing"), &[KEY_1])
    );
    if !sealing.is_empty() {
        yaml.push_str(&format!(
            "  encryption_keys_file: \"{}\"\n",
            keys_file(&format!("{name}.sealing"), sealing)
        ));
    }
    Proxy::start(&yaml).await
}

/// The stored hash of the session a (signed) cookie names, as raw bytes.
fn stored(redis: &RedisServer, cookie: &str) -> Vec<(String, Vec<u8>)> {
    let id = cookie.split('.').next().unwrap_or_default();
    let fields: Vec<Vec<u8>> = redis.cmd(&["HGETALL", &format!("stickless:session:{id}")]);
    fields
        .chunks(2)
        .map(|pair| {
            (
                String::from_utf8_lossy(&pair[0]).into_owned(),
                pair[1].clone(),
            )
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_values_never_show_in_redis_or_monitor() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let proxy = sealing_proxy(&redis, &backend, &[SEAL_1], "monitor").await;
    // Everything the proxy sends to Redis, as `MONITOR` shows it.
    let mut monitor = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli on PATH (apt-get install redis-tools)");
    std::thread::sleep(Duration::from_millis(200));

    let cookie = login(
        &proxy,
        &[("user", "alice-secret"), ("role", "admin-secret")],
    )
    .await;
    let response = proxy
        .get("/")
        .session(Some(&cookie))
        .reply("X-Session-Set-Cart", "cart-secret")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let response = proxy
        .get("/")
        .session(Some(&cookie))
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    let cookie = response.issued_session().expect("rotated");
    let response = proxy.get("/").session(Some(&cookie)).send().await;
    for (name, value) in [
        ("x-session-user", "alice-secret"),
        ("x-session-role", "admin-secret"),
        ("x-session-cart", "cart-secret"),
    ] {
        assert_eq!(
            response.backend_saw(name).as_deref(),
            Some(value),
            "backends see plaintext"
        );
    }

    let fields = stored(&redis, &cookie);
    assert_eq!(fields.len(), 4, "three attributes and _created");
    for (name, value) in &fields {
        assert!(!contains(value, "secret"), "{name} stored in the clear");
        if name != "_created" {
            assert!(value.starts_with(&[0, 1]), "{name} sealed");
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = monitor.kill();
    let output = monitor.wait_with_output().expect("monitor output");
    let seen = String::from_utf8_lossy(&output.stdout);
    assert!(
        seen.contains("EVALSHA") || seen.contains("EVAL"),
        "MONITOR saw the writes"
    );
    assert!(!seen.contains("secret"), "MONITOR shows no value: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_values_cannot_be_moved_and_the_wrong_kind_is_no_session() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let sealing = sealing_proxy(&redis, &backend, &[SEAL_1], "moved").await;
    let plain = sealing_proxy(&redis, &backend, &[], "moved-plain").await;
    let alice = login(&sealing, &[("user", "alice")]).await;
    let mallory = login(&sealing, &[("user", "mallory"), ("role", "guest")]).await;

    // Someone with write access to Redis copies alice's sealed `user` into mallory's session,
    // and into mallory's `role`: neither opens there.
    let alice_user = stored(&redis, &alice)
        .into_iter()
        .find(|(name, _)| name == "user")
        .map(|(_, value)| value)
        .expect("stored user");
    let mallory_key = format!(
        "stickless:session:{}",
        mallory.split('.').next().unwrap_or_default()
    );
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let _: () = redis::cmd("HSET")
        .arg(&mallory_key)
        .arg("user")
        .arg(&alice_user)
        .query(&mut conn)
        .expect("HSET");
    let response = sealing.get("/").session(Some(&mallory)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.backend_saw("x-session-id"),
        None,
        "moved value: no session"
    );
    assert_eq!(response.backend_saw("x-session-user"), None);

    // A plain value written straight into Redis is refused too.
    redis.cmd::<i64>(&["HSET", &mallory_key, "user", "admin"]);
    let response = sealing.get("/").session(Some(&mallory)).send().await;
    assert_eq!(
        response.backend_saw("x-session-id"),
        None,
        "plain value: no session"
    );

    // A proxy without encryption keys never injects ciphertext.
    let response = plain.get("/").session(Some(&alice)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.backend_saw("x-session-id"), None);
    let response = sealing.get("/").session(Some(&alice)).send().await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_keys_rotate_without_logging_anyone_out() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let old = sealing_proxy(&redis, &backend, &[SEAL_1], "enc-old").await;
    let rotating = sealing_proxy(&redis, &backend, &[SEAL_2, SEAL_1], "enc-rotating").await;
    let retired = sealing_proxy(&redis, &backend, &[SEAL_2], "enc-retired").await;

    let cookie = login(&old, &[("user", "alice")]).await;
    let response = rotating.get("/").session(Some(&cookie)).send().await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice"),
        "older keys still open"
    );
    // A rotation rewrites every value, sealed with the newest key.
    let response = rotating
        .get("/")
        .session(Some(&cookie))
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    let rotated = response.issued_session().expect("rotated");
    let response = retired.get("/").session(Some(&rotated)).send().await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );

    let untouched = login(&old, &[("user", "bob")]).await;
    let response = retired.get("/").session(Some(&untouched)).send().await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.backend_saw("x-session-id"),
        None,
        "a removed key no longer opens"
    );
}

async fn proxy(redis: &RedisServer, backend: &Backend, keys: &[&str], name: &str) -> Proxy {
    let yaml = format!(
        "{}session:\n  cookie:\n    signing_keys_file: \"{}\"\n",
        config(&redis.url(), &[backend]),
        keys_file(name, keys)
    );
    Proxy::start(&yaml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_tampered_ids_cost_no_store_round_trip() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let proxy = proxy(&redis, &backend, &[KEY_1], "one.keys").await;
    let cookie = login(&proxy, &[("user", "alice")]).await;
    let (id, signature) = cookie.split_once('.').expect("a signed value");
    assert_eq!(id.len(), 43);
    assert!(!signature.is_empty());
    assert_eq!(
        redis.keys(),
        vec![format!("stickless:session:{id}")],
        "the key holds the bare id"
    );

    let response = proxy.get("/").session(Some(&cookie)).send().await;
    assert_eq!(
        response.backend_saw("x-session-id").as_deref(),
        Some(id),
        "backends see the bare id"
    );
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );

    redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let mut tampered = cookie.clone();
    let last = tampered.pop().expect("a character");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let forged = format!("{}.{signature}", "A".repeat(43));
    for value in [
        id.to_owned(),
        tampered,
        forged,
        format!("{id}."),
        format!("{id}.!!"),
    ] {
        let response = proxy.get("/").session(Some(&value)).send().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.backend_saw("x-session-id"), None, "{value}");
    }
    assert_eq!(
        redis.proxy_commands(),
        vec![],
        "refused without asking the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_logging_anyone_out() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let old = proxy(&redis, &backend, &[KEY_1], "old.keys").await;
    let rotating = proxy(&redis, &backend, &[KEY_2, KEY_1], "rotating.keys").await;
    let retired = proxy(&redis, &backend, &[KEY_2], "retired.keys").await;

    let signed_with_old = login(&old, &[("user", "alice")]).await;
    let response = rotating
        .get("/")
        .session(Some(&signed_with_old))
        .send()
        .await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice"),
        "older keys still verify"
    );

    let signed_with_new = login(&rotating, &[("user", "bob")]).await;
    let response = retired
        .get("/")
        .session(Some(&signed_with_new))
        .send()
        .await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("bob"),
        "new cookies use the newest key"
    );
    let response = old.get("/").session(Some(&signed_with_new)).send().await;
    assert_eq!(response.backend_saw("x-session-user"), None);

    let response = retired
        .get("/")
        .session(Some(&signed_with_old))
        .send()
        .await;
    assert_eq!(
        response.backend_saw("x-session-user"),
        None,
        "a removed key no longer verifies"
    );
}

#[test]
fn bad_key_configuration_is_reported() {
    let base = "store:\n  url: \"memory://\"\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9\"]\n";
    let short = keys_file("short.keys", &["too-short"]);
    let cases = [
        (
            format!("{base}session:\n  cookie:\n    signing_keys_file: \"{short}\"\n"),
            "signing_keys_file",
        ),
        (
            format!("{base}session:\n  cookie:\n    signing_keys_file: \"/nonexistent/keys\"\n"),
            "cannot read",
        ),
        (
            format!(
                "{base}session:\n  cookie:\n    signing_keys_env: STICKLESS_TEST_NO_SUCH_VAR\n"
            ),
            "signing_keys_env",
        ),
        (
            format!("{base}session:\n  encryption_keys_file: \"{short}\"\n  cookie:\n    signing_keys_file: \"{short}\"\n"),
            "session.encryption_keys_file: key 1 is shorter",
        ),
        (
            format!("{base}session:\n  encryption_keys_file: \"{short}\"\n  encryption_keys_env: X\n"),
            "encryption_keys_file and encryption_keys_env: choose one",
        ),
        (
            format!(
                "{base}session:\n  encryption_keys_file: \"{}\"\n",
                keys_file("alone.keys", &[SEAL_1])
            ),
            "need signed cookies too",
        ),
    ];
    for (yaml, expected) in cases {
        let err = stickless::config::Settings::from_yaml(&yaml, "t.yaml")
            .map(|_| ())
            .expect_err("invalid");
        assert!(err.to_string().contains(expected), "{err}");
        assert!(
            !err.to_string().contains("too-short"),
            "a key leaked: {err}"
        );
    }
}
