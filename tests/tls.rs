//! HTTPS at the front (`tls:`): real sockets, certificates made here with rcgen, rustls and
//! hyper clients (and the `openssl` command for what rustls will not speak).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use support::binary::{write_config, Instance, BIN};
use support::{config, eventually, Backend, Proxy};

/// A self-signed certificate for `localhost` and its key, as PEM files in their own folder.
struct Cert {
    der: CertificateDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Cert {
    /// Valid until `days` from now (negative: already expired), from some days before.
    fn make(name: &str, days: i64) -> Cert {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(days.abs() + 1);
        params.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().expect("key pair");
        let cert = params.self_signed(&key).expect("self-signed");
        let dir = std::env::temp_dir().join(format!("stickless-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let cert_file = dir.join("fullchain.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Cert {
            der: cert.der().clone(),
            cert_file,
            key_file,
        }
    }

    fn yaml(&self) -> String {
        tls_yaml(&self.cert_file, &self.key_file)
    }
}

fn tls_yaml(cert: &Path, key: &Path) -> String {
    format!(
        "tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// One route to `backend`, HTTPS with `cert`, and an admin listener for the metrics.
fn tls_config(backend: &Backend, tls: &str) -> String {
    format!(
        "{}{tls}admin:\n  listen: \"127.0.0.1:0\"\n",
        config("memory://", &[backend])
    )
}

/// A TLS connection to `addr` offering `alpn`, trusting exactly `trusted`; TLS 1.2 only
/// when `tls12_only`.
async fn connect(
    addr: std::net::SocketAddr,
    trusted: &[&Cert],
    alpn: &[&[u8]],
    tls12_only: bool,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// A response as the tests need it.
struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    body: String,
}

impl Answer {
    /// The value the backend saw for a request header (from the echo body).
    fn backend_saw(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }
}

/// An HTTP client on one TLS connection: HTTP/2 or HTTP/1.1 as negotiated.
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    async fn over(stream: TlsStream<TcpStream>) -> Client {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("http/1.1 handshake");
            tokio::spawn(conn);
            Client::H1(send)
        }
    }

    /// GET `path`, with the session cookie when given, and these reply instructions.
    async fn get(&mut self, path: &str, cookie: Option<&str>, reply: &[&str]) -> Answer {
        let uri = match self {
            // HTTP/2 carries the authority in the request line; HTTP/1.1 in `Host`.
            Client::H2(_) => format!("https://localhost{path}"),
            Client::H1(_) => path.to_owned(),
        };
        let mut request = Request::get(uri).header("host", "localhost");
        if let Some(id) = cookie {
            request = request.header("cookie", format!("SESSION={id}"));
        }
        for instruction in reply {
            request = request.header("x-reply-header", *instruction);
        }
        let request = request.body(Empty::new()).expect("request");
        let response = match self {
            Client::H1(send) => send.send_request(request).await,
            Client::H2(send) => send.send_request(request).await,
        }
        .expect("response");
        let status = response.status();
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.strip_prefix("SESSION="))
            .and_then(|c| c.split(';').next())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            set_cookie,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// `stickless_<name>` from the admin listener's metrics, 0 when absent.
async fn metric(proxy: &Proxy, name: &str) -> f64 {
    let text = proxy.admin_get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Logs in on one connection and uses the session on it, through HTTPS with `alpn`.
async fn session_round_trip(alpn: &[u8], expected: &[u8]) {
    let backend = Backend::start("a").await;
    let cert = Cert::make(&format!("alpn-{}", String::from_utf8_lossy(alpn)), 90);
    let proxy = Proxy::start(&tls_config(&backend, &cert.yaml())).await;

    let stream = connect(proxy.addr, &[&cert], &[alpn], false)
        .await
        .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(expected));
    let mut client = Client::over(stream).await;
    let login = client
        .get("/login", None, &["X-Session-Set-user: alice"])
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let id = login.set_cookie.clone().expect("a session cookie");
    // Our own TLS listener: the backend learns the client used HTTPS.
    assert_eq!(
        login.backend_saw("x-forwarded-proto").as_deref(),
        Some("https")
    );

    let next = client.get("/account", Some(&id), &[]).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.backend_saw("x-session-user").as_deref(), Some("alice"));
    assert_eq!(
        next.backend_saw("x-session-id").as_deref(),
        Some(id.as_str())
    );
}

#[tokio::test]
async fn alpn_h2_serves_a_session_round_trip_over_http2() {
    session_round_trip(b"h2", b"h2").await;
}

#[tokio::test]
async fn alpn_http11_serves_a_session_round_trip_over_http1() {
    session_round_trip(b"http/1.1", b"http/1.1").await;
}

#[tokio::test]
async fn a_trusted_balancers_forwarded_proto_is_kept() {
    let backend = Backend::start("a").await;
    let cert = Cert::make("trusted", 90);
    let yaml = format!(
        "{}trusted_proxies: [\"127.0.0.1\"]\n",
        tls_config(&backend, &cert.yaml())
    );
    let proxy = Proxy::start(&yaml).await;
    let stream = connect(proxy.addr, &[&cert], &[b"http/1.1"], false)
        .await
        .expect("TLS handshake");
    let mut client = Client::over(stream).await;
    // A balancer that terminated plain HTTP itself and re-encrypts to us says so.
    let uri = "/x";
    let Client::H1(send) = &mut client else {
        panic!("http/1.1 was asked for");
    };
    let request = Request::get(uri)
        .header("host", "localhost")
        .header("x-forwarded-proto", "http")
        .body(Empty::new())
        .expect("request");
    let response = send.send_request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("x-forwarded-proto: http\n"),
        "{body:?}"
    );
}

#[tokio::test]
async fn tls_1_2_is_the_floor_and_tls_1_1_is_refused() {
    let backend = Backend::start("a").await;
    let cert = Cert::make("versions", 90);
    let proxy = Proxy::start(&tls_config(&backend, &cert.yaml())).await;

    // TLS 1.2 is served (what an ALB speaks to its targets).
    let stream = connect(proxy.addr, &[&cert], &[b"http/1.1"], true)
        .await
        .expect("a TLS 1.2 handshake");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut client = Client::over(stream).await;
    assert_eq!(client.get("/", None, &[]).await.status, StatusCode::OK);

    // TLS 1.1, which rustls cannot speak: openssl, at the security level that lets it try.
    let addr = proxy.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-tls1_1"])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "localhost"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl on PATH (.ci/run installs it)")
    })
    .await
    .expect("openssl ran");
    assert!(
        !output.status.success(),
        "openssl made a TLS 1.1 connection"
    );
    // The refusal was the proxy's, not the client's own: it saw a handshake and counted it.
    let failures = "stickless_tls_handshake_failures_total{reason=\"error\"}";
    assert!(
        eventually(Duration::from_secs(10), async || metric(&proxy, failures)
            .await
            == 1.0)
        .await,
        "the TLS 1.1 attempt reached the proxy and failed there: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn a_silent_client_is_cut_at_the_handshake_timeout() {
    let backend = Backend::start("a").await;
    let cert = Cert::make("silent", 90);
    let yaml = format!(
        "{}timeouts:\n  tls_handshake: \"200ms\"\n",
        tls_config(&backend, &cert.yaml())
    );
    let proxy = Proxy::start(&yaml).await;
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("closed by the proxy");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let timeouts = "stickless_tls_handshake_failures_total{reason=\"timeout\"}";
    assert!(
        eventually(Duration::from_secs(10), async || metric(&proxy, timeouts)
            .await
            == 1.0)
        .await
    );
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_connections_only() {
    let backend = Backend::start("a").await;
    let old = Cert::make("swap-old", 90);
    let new = Cert::make("swap-new", 200);
    let proxy = Proxy::start(&tls_config(&backend, &old.yaml())).await;
    let expiry = "stickless_tls_certificate_expiry_timestamp_seconds";
    let old_expiry = metric(&proxy, expiry).await;

    let before = connect(proxy.addr, &[&old, &new], &[b"http/1.1"], false)
        .await
        .expect("handshake before the reload");
    assert_eq!(presented(&before), old.der);
    let mut kept = Client::over(before).await;
    assert_eq!(kept.get("/", None, &[]).await.status, StatusCode::OK);

    proxy
        .reload(&tls_config(&backend, &new.yaml()))
        .expect("reload with the new certificate");

    // The connection made before goes on, with the certificate it was made with.
    assert_eq!(kept.get("/again", None, &[]).await.status, StatusCode::OK);
    let after = connect(proxy.addr, &[&old, &new], &[b"h2"], false)
        .await
        .expect("handshake after the reload");
    assert_eq!(
        presented(&after),
        new.der,
        "a new connection gets the new certificate"
    );
    let mut fresh = Client::over(after).await;
    assert_eq!(fresh.get("/", None, &[]).await.status, StatusCode::OK);
    assert_eq!(kept.get("/still", None, &[]).await.status, StatusCode::OK);

    let new_expiry = metric(&proxy, expiry).await;
    assert!(
        new_expiry - old_expiry > 100.0 * 86_400.0,
        "the expiry metric follows the reload: {old_expiry} then {new_expiry}"
    );
}

/// `stickless check` on `text`: exit code and stderr.
fn check(name: &str, text: &str) -> (Option<i32>, String) {
    let path = write_config(name, text);
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_refuses_a_key_that_is_not_the_certificates_and_bad_pem() {
    let backend = Backend::start("a").await;
    let a = Cert::make("check-a", 90);
    let b = Cert::make("check-b", 90);

    let (code, stderr) = check(
        "tls-mismatch.yaml",
        &tls_config(&backend, &tls_yaml(&a.cert_file, &b.key_file)),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );

    let garbage = a.cert_file.with_file_name("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let (code, stderr) = check(
        "tls-garbage.yaml",
        &tls_config(&backend, &tls_yaml(&garbage, &a.key_file)),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.cert_file") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );

    let missing = a.cert_file.with_file_name("missing.pem");
    let (code, stderr) = check(
        "tls-missing.yaml",
        &tls_config(&backend, &tls_yaml(&a.cert_file, &missing)),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tls.key_file: cannot read"), "{stderr}");

    let (code, stderr) = check("tls-good.yaml", &tls_config(&backend, &a.yaml()));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn check_warns_about_a_certificate_near_or_past_its_end() {
    let backend = Backend::start("a").await;
    let soon = Cert::make("expiry-soon", 3);
    let (code, stderr) = check("tls-soon.yaml", &tls_config(&backend, &soon.yaml()));
    assert_eq!(code, Some(0), "a warning, not a refusal: {stderr}");
    assert!(
        stderr.contains("warning")
            && stderr.contains("tls.cert_file")
            && stderr.contains("expires on"),
        "{stderr}"
    );

    let expired = Cert::make("expiry-past", -2);
    let (code, stderr) = check("tls-expired.yaml", &tls_config(&backend, &expired.yaml()));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("expired on"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_mismatched_key_and_turning_tls_off() {
    let backend = Backend::start("a").await;
    let a = Cert::make("sighup-a", 90);
    let b = Cert::make("sighup-b", 90);
    let path = write_config("tls-sighup.yaml", &tls_config(&backend, &a.yaml()));
    let instance = Instance::start(&path);

    let mismatched = tls_config(&backend, &tls_yaml(&a.cert_file, &b.key_file));
    std::fs::write(&path, &mismatched).expect("rewrite");
    let (_, said) = check("tls-sighup-check.yaml", &mismatched);
    let said = said.lines().next().unwrap_or_default().to_owned();
    let said = said
        .split_once("tls.key_file")
        .map(|(_, m)| m)
        .unwrap_or_default();
    assert!(!said.is_empty());
    instance.signal("-HUP");
    let line = instance
        .wait_for_log("reload refused")
        .expect("refusal logged");
    assert!(line.contains(said), "{line:?} lacks {said:?}");

    // Still serving, with the certificate it had.
    let stream = connect(instance.addr, &[&a, &b], &[b"http/1.1"], false)
        .await
        .expect("handshake after the refusal");
    assert_eq!(presented(&stream), a.der);
    let mut client = Client::over(stream).await;
    assert_eq!(client.get("/", None, &[]).await.status, StatusCode::OK);

    // Plain HTTP needs a restart: refused, named.
    std::fs::write(&path, config("memory://", &[&backend])).expect("rewrite");
    instance.signal("-HUP");
    assert!(
        eventually(Duration::from_secs(10), async || instance
            .count_log("reload refused")
            == 2)
        .await
    );
    let line = instance
        .log()
        .into_iter()
        .rfind(|l| l.contains("reload refused"))
        .unwrap_or_default();
    assert!(line.contains("tls cannot change while running"), "{line}");
    assert_eq!(client.get("/", None, &[]).await.status, StatusCode::OK);
}
