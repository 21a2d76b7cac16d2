//! WebSocket through the proxy, over real sockets: a tokio-tungstenite client, and an echo
//! backend that reports the handshake headers it saw. The handshake carries the session and
//! never the client's forgeries; messages go both ways intact; an open socket keeps its
//! session alive and is closed when the session ends; sockets keep their connection slots;
//! the drain closes them.
//!
//! Timeouts are short here (session idle of a few seconds); the tests wait for events, and the
//! `GUARD` on each wait only turns a hang into a failure.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use stickless::config::Settings;
use stickless::listener::Server;
use stickless::session::id::SessionId;
use stickless::store::{SessionStore, Store};
use tokio::sync::oneshot;

use support::{eventually, Backend, RawRequest, RedisServer};

const GUARD: Duration = Duration::from_secs(30);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An echo WebSocket server that records each handshake's request headers.
struct EchoBackend {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
}

impl EchoBackend {
    async fn start() -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // tungstenite's callback type fixes the large error variant.
                    #[allow(clippy::result_large_err)]
                    let record = |request: &Request, response: Response| {
                        seen.lock().expect("lock").push(request.headers().clone());
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_close() {
                            break;
                        }
                        if (message.is_text() || message.is_binary())
                            && ws.send(message).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        EchoBackend { addr, handshakes }
    }

    fn last(&self) -> HeaderMap {
        let seen = self.handshakes.lock().expect("lock");
        seen.last()
            .expect("a handshake reached the backend")
            .clone()
    }
}

/// The proxy in-process, with a handle on its store: a `load` there extends nothing, so it is
/// how the tests look at a session without keeping it alive.
struct Proxy {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    async fn start(yaml: &str) -> Proxy {
        let mut settings = Settings::from_yaml(yaml, "test.yaml").expect("test config");
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        if let Some(admin) = &mut settings.admin {
            admin.listen = "127.0.0.1:0".parse().expect("addr");
        }
        let server = Server::bind(&settings).await.expect("bind proxy");
        let (addr, admin) = (server.local_addr().expect("addr"), server.admin_addr());
        let store = server.store().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin,
            store,
            stop: Some(stop),
        }
    }

    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

async fn login(proxy: &Proxy, user: &str) -> String {
    let response = RawRequest::new(proxy.addr, "GET", "/login")
        .reply("X-Session-Set-user", user)
        .send()
        .await;
    assert_eq!(response.status, 200);
    response.issued_session().expect("a session cookie")
}

/// Where the test's pieces are: `/ws` to the echo backend, everything else (log in, log out)
/// to the header-driven test backend.
struct Setup {
    proxy: Proxy,
    echo: EchoBackend,
    _http: Backend,
}

/// `extra`: more top-level YAML (`session:`, `limits:`, `timeouts:`).
async fn setup(store: &str, extra: &str) -> Setup {
    let echo = EchoBackend::start().await;
    let http = Backend::start("app").await;
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nstore:\n  url: \"{store}\"\n  timeout: \"500ms\"\nadmin:\n  listen: \"127.0.0.1:0\"\n{extra}routes:\n  - match: {{ path_prefix: \"/ws\" }}\n    upstreams: [\"http://{}\"]\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"{}\"]\n",
        echo.addr,
        http.url()
    );
    let proxy = Proxy::start(&yaml).await;
    Setup {
        proxy,
        echo,
        _http: http,
    }
}

async fn connect(proxy: &Proxy, headers: &[(&str, &str)]) -> Socket {
    let mut request = format!("ws://{}/ws", proxy.addr)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    let (socket, response) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake within the guard")
        .expect("handshake");
    assert_eq!(response.status(), 101);
    socket
}

async fn connect_as(proxy: &Proxy, session: &str) -> Socket {
    connect(proxy, &[("cookie", &format!("SESSION={session}"))]).await
}

/// One message there and back.
async fn echo(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.expect("send");
    let back = tokio::time::timeout(GUARD, socket.next())
        .await
        .expect("echo within the guard")
        .expect("a message")
        .expect("a good frame");
    assert_eq!(back, Message::text(text));
}

/// Waits for the proxy to close the socket (a close frame, an error, or the end).
async fn closed(socket: &mut Socket) {
    let ended = tokio::time::timeout(GUARD, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket was not closed");
}

/// Whether the session lives, read straight from the store (which extends nothing).
async fn session_exists(proxy: &Proxy, id: &str) -> bool {
    let id = SessionId::parse(id.as_bytes()).expect("an unsigned id");
    proxy.store.load(&id).await.expect("store").is_some()
}

async fn metric(proxy: &Proxy, name: &str) -> Option<f64> {
    let admin = proxy.admin.expect("admin listener");
    let text = RawRequest::new(admin, "GET", "/metrics")
        .send()
        .await
        .text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn handshake_carries_the_session_and_never_a_forgery() {
    let s = setup("memory://", "").await;
    let id = login(&s.proxy, "alice").await;
    let mut socket = connect(
        &s.proxy,
        &[
            ("cookie", &format!("SESSION={id}")),
            ("X-Session-User", "mallory"),
            ("x_session_role", "admin"),
        ],
    )
    .await;
    echo(&mut socket, "hello").await;
    let seen = s.echo.last();
    let all = |name: &str| -> Vec<&str> {
        seen.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect()
    };
    assert_eq!(all("x-session-user"), ["alice"]);
    assert_eq!(all("x-session-id"), [id.as_str()]);
    assert!(all("x-session-role").is_empty());
    assert!(all("x_session_role").is_empty());
    assert_eq!(all("upgrade"), ["websocket"]);
    assert_eq!(all("connection"), ["upgrade"]);
    assert_eq!(all("sec-websocket-version"), ["13"]);
    assert_eq!(all("sec-websocket-key").len(), 1);
    assert_eq!(metric(&s.proxy, "stickless_open_tunnels").await, Some(1.0));
    socket.close(None).await.expect("close");
    // The client closes its connection after the close handshake, as browsers do; until
    // then the tunnel stays open half-closed.
    drop(socket);
    assert!(
        eventually(GUARD, async || metric(&s.proxy, "stickless_open_tunnels")
            .await
            == Some(0.0))
        .await
    );
}

/// A keep-alive connection that served a request and sat idle long enough to be parked
/// (`listener::parking`) still upgrades: the next hyper connection on it takes upgrades.
#[tokio::test]
async fn a_parked_connection_upgrades() {
    use tokio::io::AsyncWriteExt;
    let s = setup("memory://", "").await;
    let id = login(&s.proxy, "alice").await;
    let mut stream = TcpStream::connect(s.proxy.addr).await.expect("connect");
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: app.test\r\nCookie: SESSION={id}\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    assert_eq!(support::read_response(&mut stream).await, Some(200));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut request = format!("ws://{}/ws", s.proxy.addr)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("cookie", format!("SESSION={id}").parse().expect("value"));
    let (socket, response) = tokio::time::timeout(
        GUARD,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake within the guard")
    .expect("handshake");
    assert_eq!(response.status(), 101);
    let mut socket: Socket = socket;
    echo(&mut socket, "after a nap").await;
    let seen = s.echo.last();
    assert_eq!(
        seen.get("x-session-user").and_then(|v| v.to_str().ok()),
        Some("alice")
    );
}

#[tokio::test]
async fn a_thousand_messages_both_ways_and_a_10_mb_one() {
    let s = setup("memory://", "").await;
    let socket = connect(&s.proxy, &[]).await;
    let (mut send, mut receive) = socket.split();
    let sender = tokio::spawn(async move {
        for i in 0..1000 {
            send.send(Message::text(format!("message {i}")))
                .await
                .expect("send");
        }
        let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        send.send(Message::binary(big)).await.expect("send big");
        send
    });
    for i in 0..1000 {
        let message = tokio::time::timeout(GUARD, receive.next())
            .await
            .expect("within the guard")
            .expect("a message")
            .expect("a good frame");
        assert_eq!(message, Message::text(format!("message {i}")));
    }
    let big = tokio::time::timeout(GUARD, receive.next())
        .await
        .expect("within the guard")
        .expect("a message")
        .expect("a good frame");
    let expected: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    assert!(big.is_binary());
    assert!(big.into_data() == expected, "the 10 MB message changed");
    let _send = sender.await.expect("sender");
}

/// A socket held past two idle timeouts keeps its session alive while a session without one
/// expires.
async fn socket_keeps_its_session_alive(store: &str) {
    let idle = Duration::from_secs(4);
    let s = setup(
        store,
        "session:\n  idle_timeout: \"4s\"\n  absolute_timeout: \"1h\"\n  cookie:\n    secure: false\n",
    )
    .await;
    let kept = login(&s.proxy, "alice").await;
    let control = login(&s.proxy, "bob").await;
    let started = Instant::now();
    let mut socket = connect_as(&s.proxy, &kept).await;
    assert!(
        eventually(GUARD, async || !session_exists(&s.proxy, &control).await).await,
        "the control session never expired"
    );
    // The control session is gone; hold on until two idle timeouts have passed in all.
    if let Some(left) = (2 * idle).checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    assert!(
        session_exists(&s.proxy, &kept).await,
        "the socket's session expired"
    );
    echo(&mut socket, "still here").await;
    let plain = RawRequest::new(s.proxy.addr, "GET", "/whoami")
        .session(Some(&kept))
        .send()
        .await;
    assert_eq!(
        plain.backend_saw("x-session-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn socket_keeps_its_session_alive_in_memory() {
    socket_keeps_its_session_alive("memory://").await;
}

#[tokio::test]
async fn socket_keeps_its_session_alive_in_redis() {
    let redis = RedisServer::start();
    socket_keeps_its_session_alive(&redis.url()).await;
}

/// A hundred sockets of one session cost one keeper: a read and at most one extension per
/// interval (half the idle timeout), not a hundred.
#[tokio::test]
async fn keep_alive_is_coalesced_per_session() {
    let redis = RedisServer::start();
    let interval = Duration::from_secs(1);
    let s = setup(
        &redis.url(),
        "session:\n  idle_timeout: \"2s\"\n  absolute_timeout: \"1h\"\n",
    )
    .await;
    let id = login(&s.proxy, "alice").await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(connect_as(&s.proxy, &id).await);
    }
    let pexpires = || {
        redis
            .command_calls()
            .into_iter()
            .find(|(name, _)| name == "pexpire")
            .map_or(0, |(_, calls)| calls)
    };
    let before = pexpires();
    let started = Instant::now();
    tokio::time::sleep(4 * interval).await;
    let writes = pexpires() - before;
    let intervals = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    eprintln!("{writes} PEXPIRE in {intervals:.1} intervals for 100 sockets of one session");
    assert!(writes >= 1, "the session was never extended");
    assert!(
        (writes as f64) <= intervals + 2.0,
        "{writes} writes in {intervals:.1} intervals: not coalesced"
    );
    assert!(session_exists(&s.proxy, &id).await);
    for socket in &mut sockets {
        echo(socket, "ok").await;
    }
}

#[tokio::test]
async fn invalidation_elsewhere_closes_the_socket() {
    let s = setup(
        "memory://",
        "session:\n  idle_timeout: \"2s\"\n  absolute_timeout: \"1h\"\n",
    )
    .await;
    let id = login(&s.proxy, "alice").await;
    let other = login(&s.proxy, "bob").await;
    let mut socket = connect_as(&s.proxy, &id).await;
    let mut bystander = connect_as(&s.proxy, &other).await;
    echo(&mut socket, "before").await;
    let logout = RawRequest::new(s.proxy.addr, "GET", "/logout")
        .session(Some(&id))
        .reply("X-Session-Invalidate", "true")
        .send()
        .await;
    assert!(logout.clears_session());
    closed(&mut socket).await;
    // Another session's socket is untouched.
    echo(&mut bystander, "after").await;
}

#[tokio::test]
async fn sockets_keep_their_connection_slots() {
    let s = setup("memory://", "limits:\n  max_connections: 210\n").await;
    let id = login(&s.proxy, "alice").await;
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(connect_as(&s.proxy, &id).await);
    }
    for socket in &mut sockets {
        echo(socket, "ping").await;
    }
    assert_eq!(
        metric(&s.proxy, "stickless_open_tunnels").await,
        Some(200.0)
    );
    assert_eq!(
        metric(&s.proxy, "stickless_open_connections").await,
        Some(200.0)
    );
    // Ten idle connections take the rest of the slots; the next one waits.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(s.proxy.addr).await.expect("connect"));
    }
    assert!(
        eventually(GUARD, async || metric(
            &s.proxy,
            "stickless_open_connections"
        )
        .await
            == Some(210.0))
        .await
    );
    let proxy_addr = s.proxy.addr;
    let waiting = tokio::spawn(async move {
        let request = format!("ws://{proxy_addr}/ws")
            .into_client_request()
            .expect("request");
        tokio_tungstenite::connect_async(request).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a connection beyond the cap was served"
    );
    // One socket closes: its slot goes to the waiting connection.
    let mut first = sockets.remove(0);
    first.close(None).await.expect("close");
    drop(first);
    let (mut late, _) = tokio::time::timeout(GUARD, waiting)
        .await
        .expect("served once a slot was free")
        .expect("task")
        .expect("handshake");
    echo(&mut late, "late").await;
}

#[tokio::test]
async fn the_drain_closes_open_sockets() {
    let mut s = setup("memory://", "timeouts:\n  shutdown_grace: \"1s\"\n").await;
    let mut socket = connect(&s.proxy, &[]).await;
    echo(&mut socket, "before").await;
    s.proxy.begin_shutdown();
    closed(&mut socket).await;
}
