//! HTTP at the edges, as the contract fixes them: HTTP/2 cookie fields joined for HTTP/1.1
//! backends, `Host` kept whatever `Connection` names, a `101` nobody asked for refused, and
//! absolute-form targets routed by their authority.

mod support;

use support::{login, raw_backend, Backend, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_http2_cookie_fields_reach_the_backend_as_one_line() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&support::config("memory://", &[&backend])).await;
    let id = login(&proxy, &[("user", "alice")]).await;

    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut request = http::Request::new(Empty::new());
    *request.uri_mut() = format!("http://{}/h2", proxy.addr).parse().expect("uri");
    *request.version_mut() = http::Version::HTTP_2;
    for field in ["csrf=t0k3n", &format!("SESSION={id}"), "theme=dark"] {
        request
            .headers_mut()
            .append(http::header::COOKIE, field.parse().expect("cookie"));
    }
    let response = client.request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;

    let seen = backend.last();
    let cookies: Vec<_> = seen.get_all(http::header::COOKIE).iter().collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(
        cookies[0].to_str().ok(),
        Some(format!("csrf=t0k3n; SESSION={id}; theme=dark").as_str())
    );
    assert_eq!(
        seen.get("x-session-user").and_then(|v| v.to_str().ok()),
        Some("alice"),
        "the session was found in the joined line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_host_does_not_remove_it() {
    let backend = Backend::start("a").await;
    let proxy = Proxy::start(&support::config("memory://", &[&backend])).await;
    let response = proxy
        .get("/")
        .header("Connection", "host, x-custom")
        .header("X-Custom", "gone")
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.backend_saw("host").as_deref(), Some("app.test"));
    assert_eq!(response.backend_saw("x-custom"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_nobody_asked_for_becomes_502() {
    let switching = raw_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://{switching}\"]\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let response = proxy.get("/").send().await;
    assert_eq!(response.status, 502);
    assert_eq!(response.header("upgrade"), None);
    // A client that asked for an upgrade gets the backend's `101` (tests/websocket.rs).
    let asked = proxy
        .get("/chat")
        .header("Connection", "upgrade")
        .header("Upgrade", "websocket")
        .send()
        .await;
    assert_eq!(asked.status, 101);
    assert_eq!(asked.header("upgrade").as_deref(), Some("websocket"));
    // One asking for h2c (a tunnel to send requests past the proxy's stripping) does not.
    let smuggled = proxy
        .get("/")
        .header("Connection", "upgrade")
        .header("Upgrade", "h2c")
        .send()
        .await;
    assert_eq!(smuggled.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_routes_by_its_authority() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  url: \"memory://\"\nroutes:\n\
         \x20 - match: {{ path_prefix: \"/\", host: \"a.example\" }}\n    upstreams: [\"{}\"]\n\
         \x20 - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n",
        a.url(),
        b.url()
    );
    let proxy = Proxy::start(&yaml).await;
    // RawRequest sends `Host: app.test`; the target's authority wins (RFC 9112 §3.2.2).
    let absolute = proxy.get("http://a.example/page").send().await;
    assert_eq!(absolute.status, 200);
    assert_eq!(absolute.instance().as_deref(), Some("a"));
    assert_eq!(absolute.backend_saw("host").as_deref(), Some("a.example"));
    let origin = proxy.get("/page").send().await;
    assert_eq!(origin.instance().as_deref(), Some("b"));
    assert_eq!(origin.backend_saw("host").as_deref(), Some("app.test"));
}
