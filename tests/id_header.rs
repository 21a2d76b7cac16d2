//! `session.id_header`: the session id in a request header (here `X-Auth-Token`) for clients
//! without a cookie jar. Each case states what the client sends, what the backend sees and
//! what the client gets back.

mod support;

use support::{config, Backend, Proxy, RawRequest, RawResponse, RedisServer};

const HEADER: &str = "x-auth-token";
const KEY: &str = "id-header-signing-key-0123456789abcdefghijklmnop";

fn yaml(store: &str, backend: &Backend, extra: &str) -> String {
    format!(
        "{}session:\n  id_header: \"X-Auth-Token\"\n{extra}",
        config(store, &[backend])
    )
}

/// A file of signing keys, removed when the test process ends its use of it.
fn keys_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "stickless-id-header-{}-{name}.keys",
        std::process::id()
    ));
    std::fs::write(&path, format!("{KEY}\n")).expect("write keys");
    path
}

fn get(proxy: &Proxy, path: &str) -> RawRequest {
    proxy.get(path)
}

/// The request with the id header.
fn with_token(request: RawRequest, token: &str) -> RawRequest {
    request.header("X-Auth-Token", token)
}

/// What the client got in the id header, if anything.
fn token(response: &RawResponse) -> Option<String> {
    response.header(HEADER)
}

/// The backend saw no id header and the session `id` (or none).
fn assert_backend_session(response: &RawResponse, id: Option<&str>) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.backend_saw(HEADER),
        None,
        "the backend saw the id header"
    );
    assert_eq!(response.backend_saw("x-session-id").as_deref(), id);
}

/// Logs in without a cookie jar: the id comes back in the header (and `Set-Cookie`).
async fn login(proxy: &Proxy, user: &str) -> String {
    let response = get(proxy, "/login")
        .reply("X-Session-Set-User", user)
        .send()
        .await;
    assert_eq!(response.status, 200);
    let issued = token(&response).expect("the id header");
    assert_eq!(
        response.issued_session(),
        Some(issued.clone()),
        "the same value as the cookie"
    );
    assert_eq!(
        response.header("cache-control").as_deref(),
        Some("no-store")
    );
    issued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_sessions_create_resolve_rotate_invalidate() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&yaml(&redis.url(), &backend, "")).await;

    // Create: a client that keeps no cookie reads the id from the header.
    let id = login(&proxy, "alice").await;
    assert_eq!(id.len(), 43);

    // Resolve: the header alone names the session; the backend gets X-Session-Id only.
    let response = with_token(get(&proxy, "/"), &id).send().await;
    assert_backend_session(&response, Some(&id));
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        token(&response),
        None,
        "no id header on a response that changes nothing"
    );

    // Update: no new id.
    let response = with_token(get(&proxy, "/cart"), &id)
        .reply("X-Session-Set-Cart", "3")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(token(&response), None);

    // Rotate: the new id in the header, the old one dead at once.
    let response = with_token(get(&proxy, "/"), &id)
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let rotated = token(&response).expect("the new id");
    assert_ne!(rotated, id);
    assert_eq!(response.issued_session(), Some(rotated.clone()));
    assert_backend_session(&with_token(get(&proxy, "/"), &id).send().await, None);
    let response = with_token(get(&proxy, "/"), &rotated).send().await;
    assert_backend_session(&response, Some(&rotated));
    assert_eq!(response.backend_saw("x-session-cart").as_deref(), Some("3"));

    // Invalidate: the header comes back empty, the cookie cleared, the id dead.
    let response = with_token(get(&proxy, "/logout"), &rotated)
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(token(&response).as_deref(), Some(""));
    assert!(response.clears_session());
    assert_backend_session(&with_token(get(&proxy, "/"), &rotated).send().await, None);
    assert_eq!(redis.keys(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_wins_over_the_cookie() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&yaml("memory://", &backend, "")).await;
    let (a, b) = (login(&proxy, "a").await, login(&proxy, "b").await);

    // Both live: the header's.
    let response = with_token(get(&proxy, "/").session(Some(&a)), &b)
        .send()
        .await;
    assert_backend_session(&response, Some(&b));
    // The cookie alone still works.
    assert_backend_session(&get(&proxy, "/").session(Some(&a)).send().await, Some(&a));

    // A header naming a dead session, garbage, or nothing: no session, the cookie ignored.
    let dead = login(&proxy, "dead").await;
    let response = with_token(get(&proxy, "/logout"), &dead)
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert_eq!(token(&response).as_deref(), Some(""));
    for value in [dead.as_str(), "garbage", ""] {
        let response = with_token(get(&proxy, "/").session(Some(&a)), value)
            .send()
            .await;
        assert_backend_session(&response, None);
    }

    // Several fields: the first well-formed one, as with cookies.
    let response = with_token(with_token(get(&proxy, "/"), "junk"), &b)
        .send()
        .await;
    assert_backend_session(&response, Some(&b));

    // A logout through the header ends the header's session, not the cookie's.
    let response = with_token(get(&proxy, "/logout").session(Some(&a)), &b)
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_backend_session(&with_token(get(&proxy, "/"), &b).send().await, None);
    assert_backend_session(&get(&proxy, "/").session(Some(&a)).send().await, Some(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_header_is_no_session_never_5xx() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&yaml(&redis.url(), &backend, "")).await;
    let live = login(&proxy, "alice").await;
    let unknown = "A".repeat(43);
    let oversized = "a".repeat(6000);
    let quoted = format!("\"{live}\"");
    let joined = format!("{live}, {live}");
    let mut values: Vec<Vec<u8>> = vec![
        unknown.into_bytes(),
        oversized.into_bytes(),
        quoted.into_bytes(),
        joined.into_bytes(),
        format!("Bearer {live}").into_bytes(),
        format!("{live}.c2lnbmF0dXJl").into_bytes(),
        b"\x01\x02\x7f".to_vec(),
        b"\xff\xfe\x80".to_vec(),
        live.as_bytes()[..42].to_vec(),
    ];
    let mut with_nul = live.clone().into_bytes();
    with_nul[10] = b'\t';
    values.push(with_nul);
    for value in values {
        let response = get(&proxy, "/")
            .session(Some(&live))
            .raw_header(b"X-Auth-Token", &value)
            .send()
            .await;
        assert!(response.status < 500, "{value:?}: {}", response.status);
        if response.status == 200 {
            assert_backend_session(&response, None);
        }
    }
    // A write with a garbage header starts a new session rather than touching the cookie's.
    let response = with_token(get(&proxy, "/").session(Some(&live)), "junk")
        .reply("X-Session-Set-User", "mallory")
        .send()
        .await;
    assert_eq!(response.status, 200);
    let created = token(&response).expect("a new session");
    assert_ne!(created, live);
    let response = with_token(get(&proxy, "/"), &live).send().await;
    assert_eq!(
        response.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_never_sees_the_header_nor_sets_it() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  url: \"memory://\"\nsession:\n  id_header: \"X-Auth-Token\"\nroutes:\n  - match: {{ path_prefix: \"/public\" }}\n    session: \"off\"\n    upstreams: [\"{u}\"]\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{u}\"]\n",
        u = backend.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let id = login(&proxy, "alice").await;
    for path in ["/", "/public/x"] {
        let response = with_token(get(&proxy, path), &id)
            .header("x_auth_token", "other-spelling")
            .send()
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.backend_saw(HEADER), None, "{path}");
        // Another spelling is another header name in HTTP; it passes as any header would.
        assert!(!backend
            .last()
            .iter()
            .any(|(name, _)| name.as_str() == HEADER));
    }
    // A backend's own id header never reaches the client (it cannot fix a session).
    let response = with_token(get(&proxy, "/"), &id)
        .reply("X-Auth-Token", "fixed-by-the-backend")
        .send()
        .await;
    assert_eq!(token(&response), None);
    let response = get(&proxy, "/login")
        .reply("X-Auth-Token", "fixed-by-the-backend")
        .reply("X-Session-Set-User", "bob")
        .send()
        .await;
    let issued = token(&response).expect("the proxy's id");
    assert_ne!(issued, "fixed-by-the-backend");
    assert_eq!(response.all(HEADER).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_ids_travel_signed_in_the_header() {
    let backend = Backend::start("a").await;
    let keys = keys_file("signed");
    let extra = format!("  cookie:\n    signing_keys_file: \"{}\"\n", keys.display());
    let proxy = Proxy::start(&yaml("memory://", &backend, &extra)).await;
    let value = login(&proxy, "alice").await;
    let (id, signature) = value.split_once('.').expect("<id>.<signature>");
    assert!(!signature.is_empty());
    // The signed value resolves; the backend sees the bare id.
    assert_backend_session(&with_token(get(&proxy, "/"), &value).send().await, Some(id));
    // The bare id, or a tampered signature, is no session.
    assert_backend_session(&with_token(get(&proxy, "/"), id).send().await, None);
    let tampered = format!("{id}.{}", "A".repeat(signature.len()));
    assert_backend_session(&with_token(get(&proxy, "/"), &tampered).send().await, None);
    // Rotation hands out a signed value too.
    let response = with_token(get(&proxy, "/"), &value)
        .reply("X-Session-Rotate", "true")
        .send()
        .await;
    let rotated = token(&response).expect("new value");
    assert!(rotated.contains('.'));
    assert_eq!(response.issued_session(), Some(rotated.clone()));
    let _ = std::fs::remove_file(keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_config_errors_and_reload_may_change_it() {
    let backend = Backend::start("a").await;
    for (name, why) in [
        ("X-Session-Token", "header_prefix"),
        ("x_session_token", "header_prefix"),
        ("Connection", "hop-by-hop or reserved"),
        ("Transfer-Encoding", "hop-by-hop or reserved"),
        ("Cookie", "hop-by-hop or reserved"),
        ("Bad Name", "not a valid HTTP header name"),
    ] {
        let text = format!(
            "{}session:\n  id_header: \"{name}\"\n",
            config("memory://", &[&backend])
        );
        let err = stickless::config::Settings::from_yaml(&text, "t.yaml")
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(err.contains("session.id_header"), "{err}");
        assert!(err.contains(why), "{name}: {err}");
    }

    let proxy = Proxy::start(&yaml("memory://", &backend, "")).await;
    let id = login(&proxy, "alice").await;
    let renamed = yaml("memory://", &backend, "").replace("X-Auth-Token", "X-Api-Token");
    proxy.reload(&renamed).expect("reload");
    let response = get(&proxy, "/").header("X-Api-Token", &id).send().await;
    assert_eq!(response.backend_saw("x-session-id"), Some(id.clone()));
    assert_eq!(response.backend_saw("x-api-token"), None);
    // The old name is an ordinary header again.
    let response = with_token(get(&proxy, "/"), &id).send().await;
    assert_eq!(response.backend_saw("x-session-id"), None);
    assert_eq!(response.backend_saw(HEADER), Some(id.clone()));
    // Without the setting, no id header anywhere.
    proxy
        .reload(&config("memory://", &[&backend]))
        .expect("reload");
    let response = get(&proxy, "/login")
        .reply("X-Session-Set-User", "bob")
        .send()
        .await;
    assert!(response.issued_session().is_some());
    assert_eq!(response.header("x-api-token"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_the_applications_and_passes_through() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&yaml("memory://", &backend, "")).await;
    // The preflight reaches the backend, and its answer the client, untouched.
    let response = proxy
        .request("OPTIONS", "/api")
        .header("Origin", "https://spa.example")
        .header("Access-Control-Request-Headers", "x-auth-token")
        .reply("Access-Control-Allow-Headers", "X-Auth-Token")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response
            .backend_saw("access-control-request-headers")
            .as_deref(),
        Some("x-auth-token")
    );
    assert_eq!(
        response.header("access-control-allow-headers").as_deref(),
        Some("X-Auth-Token")
    );
    // The proxy adds no CORS header of its own, even when it issues the id.
    let response = get(&proxy, "/login")
        .reply("X-Session-Set-User", "alice")
        .send()
        .await;
    assert!(token(&response).is_some());
    assert!(response
        .headers
        .iter()
        .all(|(name, _)| !name.starts_with("access-control-")));
    let response = get(&proxy, "/login")
        .reply("X-Session-Set-User", "alice")
        .reply("Access-Control-Expose-Headers", "X-Auth-Token")
        .send()
        .await;
    assert!(token(&response).is_some());
    assert_eq!(
        response.header("access-control-expose-headers").as_deref(),
        Some("X-Auth-Token")
    );
}
