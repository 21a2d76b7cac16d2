//! The demo backend: a tiny "legacy app" that keeps no session of its own. It reads the
//! session from `X-Session-*` request headers and changes it with `X-Session-*` response
//! headers, exactly as a ported app would.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::page::{self, Page};

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
            let id = header(headers, "x-session-id")
                .map(|id| format!("{}…", id.chars().take(8).collect::<String>()));
            let page = Page {
                instance,
                user: user.as_deref(),
                id: id.as_deref(),
                visits,
                received: session_headers(headers),
            };
            let mut response = if wants_html(headers) {
                let mut response = reply(StatusCode::OK, "text/html; charset=utf-8", page.html());
                // A reload must reach an instance, not the browser's cache.
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            } else {
                reply(StatusCode::OK, TEXT, page.text())
            };
            if user.is_some() {
                // Anonymous visitors get no session: only logged-in ones count visits.
                set(&mut response, "x-session-set-visits", &visits.to_string());
            }
            response
        }
        "/favicon.ico" | "/apple-touch-icon.png" | "/apple-touch-icon-precomposed.png" => {
            let icon = page::ICON_SVG.replace("%23", "#");
            let mut response = reply(StatusCode::OK, "image/svg+xml", icon);
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=86400"));
            response
        }
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Browsers list `text/html` in `Accept`; curl sends `*/*` and gets text.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// The session headers this instance received, in the order the proxy sent them.
fn session_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-session-"))
        .map(|(name, value)| {
            (
                display_name(name.as_str()),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `x-session-user` as `X-Session-User`, the way the README spells the protocol.
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn redirect(session_headers: &[(&'static str, &str)]) -> Response<Full<Bytes>> {
    let mut response = reply(StatusCode::SEE_OTHER, TEXT, String::new());
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
