//! The demo backend: a tiny "legacy app" that keeps no session of its own. It reads the
//! session from `X-Session-*` request headers and changes it with `X-Session-*` response
//! headers, exactly as a ported app would.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Binds an instance on a free loopback port and serves it in the background.
pub async fn spawn(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(move |req| async move { Ok::<_, Infallible>(handle(name, &req)) });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn handle(instance: &str, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let user = header(headers, "x-session-user");
    match request.uri().path() {
        "/login" => {
            let name = query_param(request.uri().query().unwrap_or_default(), "user")
                .unwrap_or_else(|| "guest".into());
            // Log-in: store who it is and rotate the id (session fixation protection).
            redirect(&[
                ("x-session-set-user", &name),
                ("x-session-set-visits", "0"),
                ("x-session-rotate", "true"),
            ])
        }
        "/logout" => redirect(&[("x-session-invalidate", "true")]),
        "/" => {
            let visits = header(headers, "x-session-visits")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let id =
                header(headers, "x-session-id").map(|id| format!("{}…", &id[..id.len().min(8)]));
            let mut body = format!("served by: {instance}\n");
            match &user {
                Some(user) => body.push_str(&format!(
                    "logged in as: {}\nsession: {}\nvisits this session: {visits}\n\nlog out: /logout\n",
                    escape(user),
                    id.unwrap_or_default()
                )),
                None => body.push_str("not logged in\n\nlog in: /login?user=alice\n"),
            }
            let mut response = text(StatusCode::OK, body);
            if user.is_some() {
                // Anonymous visitors get no session: only logged-in ones count visits.
                set(&mut response, "x-session-set-visits", &visits.to_string());
            }
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn redirect(session_headers: &[(&'static str, &str)]) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::SEE_OTHER, String::new());
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/"));
    for (name, value) in session_headers {
        set(&mut response, name, value);
    }
    response
}

fn set(response: &mut Response<Full<Bytes>>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// The user name as typed, kept to printable characters so it is a valid header value.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            v.chars()
                .map(|c| if c == '+' { ' ' } else { c })
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect()
        })
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
