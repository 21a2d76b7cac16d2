//! Backend responses a well-behaved HTTP library would not produce: control headers in 1xx
//! responses and in trailers, written byte for byte by a raw TCP backend.

mod support;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{login, raw_backend, Backend, Proxy, RedisServer};

async fn raw_exchange(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    raw
}

fn contains_ignore_case(haystack: &[u8], needle: &str) -> bool {
    let haystack = String::from_utf8_lossy(haystack).to_ascii_lowercase();
    haystack.contains(&needle.to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_headers_in_1xx_and_trailers_are_removed_and_ignored() {
    let redis = RedisServer::start();
    let normal = Backend::start("normal").await;
    let raw = raw_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nX-Session-Set-User: mallory\r\nX-Session-Invalidate: true\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Session-Set-Role, X-Checksum\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Session-Set-Role: admin\r\nX-Session-Invalidate: true\r\nX-Checksum: 1\r\n\r\n",
    )
    .await;
    let yaml = format!(
        "store:\n  url: \"{}\"\nroutes:\n  - match: {{ path_prefix: \"/raw\" }}\n    upstreams: [\"http://{raw}\"]\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n",
        redis.url(),
        normal.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let id = login(&proxy, &[("user", "alice")]).await;

    let request = format!(
        "GET /raw HTTP/1.1\r\nHost: app.test\r\nTE: trailers\r\nCookie: SESSION={id}\r\nConnection: close\r\n\r\n"
    );
    let raw_response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(
        contains_ignore_case(&raw_response, "200 OK"),
        "{}",
        String::from_utf8_lossy(&raw_response)
    );
    assert!(contains_ignore_case(&raw_response, "hello"));
    assert!(
        !contains_ignore_case(&raw_response, "x-session"),
        "{}",
        String::from_utf8_lossy(&raw_response)
    );

    // Nothing in the 1xx or the trailers was applied: same user, no role, not invalidated.
    let after = proxy.get("/").session(Some(&id)).send().await;
    assert_eq!(
        after.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
    assert_eq!(after.backend_saw("x-session-role"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_trailers_with_the_prefix_never_reach_the_backend() {
    // The backend echoes the raw request it received, body and trailers included.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        // Until the end of the chunked body: "0\r\n" then trailers then "\r\n\r\n".
        while !(raw.windows(5).any(|w| w == b"\r\n0\r\n") && raw.ends_with(b"\r\n\r\n")) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let _ = seen_tx.send(raw);
    });
    let yaml = format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://{addr}\"]\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let request = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        3\r\nabc\r\n0\r\nX-Session-User: mallory\r\nx_session_role: admin\r\nX-Sum: 7\r\n\r\n";
    let response = raw_exchange(proxy.addr, request).await;
    assert!(
        contains_ignore_case(&response, "200 OK"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let seen = seen_rx.await.expect("backend saw the request");
    assert!(contains_ignore_case(&seen, "abc"));
    assert!(
        !contains_ignore_case(&seen, "mallory"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        !contains_ignore_case(&seen, "admin"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_on_host_then_path_first_match_wins() {
    let admin = Backend::start("admin").await;
    let api = Backend::start("api").await;
    let web = Backend::start("web").await;
    let yaml = format!(
        "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ host: \"admin.example.com\", path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n  - match: {{ path_prefix: \"/api/\" }}\n    upstreams: [\"{}\"]\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n",
        admin.url(),
        api.url(),
        web.url()
    );
    let proxy = Proxy::start(&yaml).await;
    let cases = [
        ("ADMIN.example.com:443", "/api/x", "admin"),
        ("www.example.com", "/api/x", "api"),
        ("www.example.com", "/apix", "web"),
        ("www.example.com", "/", "web"),
    ];
    for (host, path, expected) in cases {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = support::RawResponse::parse(&raw_exchange(proxy.addr, raw.as_bytes()).await);
        assert_eq!(
            response.instance().as_deref(),
            Some(expected),
            "{host}{path}"
        );
    }
}
