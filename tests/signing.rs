//! Signed session cookies: forged, unsigned or tampered ids are refused without a store
//! round trip, and keys rotate without logging anyone out.

mod support;

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
