//! The per-request header work on the hot path, measured through the public API:
//!
//! - request side: hop-by-hop removal, stripping client `X-Session-*` headers, finding the
//!   session id in `Cookie`, injecting a resolved session;
//! - response side: reading (and removing) the backend's `X-Session-Set-*` update headers;
//! - what the optional secrets add: cookie signing, and sealing values at rest.
//!
//! Inputs are shaped like real traffic: a browser request with a dozen headers, a `Cookie`
//! line holding the session cookie among others, and a few forged `X-Session-*` headers that
//! must go; a session with two attributes; a backend response that sets two attributes.
//!
//! Run with `cargo bench --bench headers`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use stickless::session::cookie::session_id;
use stickless::session::id::SessionId;
use stickless::session::prefix::HeaderPrefix;
use stickless::session::record::{Record, Session};
use stickless::session::update::take_update;
use stickless::upstream::hop;

const COOKIE_NAME: &str = "SESSION";

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    headers
}

/// What a browser sends on a navigation, plus three forged session headers in different
/// spellings.
fn browser_request(id: &SessionId) -> HeaderMap {
    let cookie = format!(
        "_ga=GA1.1.1234567890.1700000000; theme=dark; {COOKIE_NAME}={}; consent=yes",
        id.as_str()
    );
    map(&[
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.7,fr;q=0.3"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://app.example.com/orders?page=2"),
        ("cookie", &cookie),
        ("connection", "keep-alive"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("X-Session-User", "admin"),
        ("x_session_role", "root"),
        ("X-SESSION-ID", "forged"),
    ])
}

fn session(id: SessionId) -> Session {
    let mut record = Record::new(1_700_000_000_000);
    record
        .attributes
        .insert("user".into(), Bytes::from_static(b"alice"));
    record
        .attributes
        .insert("role".into(), Bytes::from_static(b"admin"));
    Session { id, record }
}

/// A backend response that sets two attributes, among ordinary headers.
fn backend_response() -> HeaderMap {
    map(&[
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5120"),
        ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("cache-control", "private, max-age=0"),
        ("etag", "\"5f3c-1a2b\""),
        ("x-request-id", "3b1f2e6c-9d4a-4f7e-8c21-0a6b5d9e4f13"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("x-session-set-user", "alice"),
        ("x-session-set-role", "admin"),
    ])
}

fn request_side(c: &mut Criterion) {
    let prefix = HeaderPrefix::default();
    let id = SessionId::generate().expect("randomness");
    let request = browser_request(&id);
    let session = session(id);

    let mut group = c.benchmark_group("request");
    group.bench_function("hop_strip", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                hop::strip(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("prefix_strip", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                prefix.strip(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("session_id", |b| {
        b.iter(|| session_id(black_box(&request), black_box(COOKIE_NAME), None))
    });
    let mut stripped = request.clone();
    prefix.strip(&mut stripped);
    group.bench_function("inject", |b| {
        b.iter_batched(
            || stripped.clone(),
            |mut h| {
                prefix.inject(&mut h, black_box(&session));
                h
            },
            BatchSize::SmallInput,
        )
    });
    // The four steps in the order the proxy runs them (the store round trip left out).
    group.bench_function("all", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                hop::strip(&mut h);
                prefix.strip(&mut h);
                let found = session_id(&h, COOKIE_NAME, None);
                if found.is_some() {
                    prefix.inject(&mut h, &session);
                }
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn response_side(c: &mut Criterion) {
    let prefix = HeaderPrefix::default();
    let response = backend_response();

    let mut group = c.benchmark_group("response");
    group.bench_function("take_update", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                let update = take_update(&mut h, &prefix).expect("valid update");
                (h, update)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("all", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                hop::strip(&mut h);
                let update = take_update(&mut h, &prefix).expect("valid update");
                (h, update)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// What signed cookies add: signing a new id, and finding a signed id in a request's cookies
/// (one HMAC-SHA256 each).
fn signing(c: &mut Criterion) {
    use stickless::session::signing::Signer;
    let signer = Signer::new(&[vec![7u8; 32], vec![9u8; 32]]).expect("signer");
    let id = SessionId::generate().expect("randomness");
    let value = signer.sign(&id);
    let mut request = browser_request(&id);
    request.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("_ga=GA1.2.3; {COOKIE_NAME}={value}; theme=dark"))
            .expect("cookie"),
    );
    let mut group = c.benchmark_group("signing");
    group.bench_function("sign", |b| b.iter(|| signer.sign(black_box(&id))));
    group.bench_function("session_id_signed", |b| {
        b.iter(|| session_id(black_box(&request), black_box(COOKIE_NAME), Some(&signer)))
    });
    group.finish();
}

/// What encryption at rest adds: opening a loaded two-attribute session before injection
/// (request side), sealing the two values a backend sets (response side), and one value of a
/// realistic and of the default maximum size. The second key is never tried here: values are
/// sealed with the newest key, which is tried first.
fn sealing(c: &mut Criterion) {
    use stickless::session::sealing::{open_record, Sealer};
    let sealer = Sealer::new(&[vec![7u8; 32], vec![9u8; 32]]).expect("sealer");
    let Session { id, record } = session(SessionId::generate().expect("randomness"));
    let stored = sealer.seal_record(&id, &record).expect("seal");
    let set: Vec<(String, Bytes)> = record.attributes.clone().into_iter().collect();
    let mut group = c.benchmark_group("sealing");
    group.bench_function("open_session", |b| {
        b.iter_batched(
            || stored.clone(),
            |stored| open_record(Some(&sealer), black_box(&id), stored),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("seal_update", |b| {
        b.iter(|| sealer.seal_values(black_box(&id), black_box(&set)))
    });
    for size in [64, 4096] {
        let value = vec![b'v'; size];
        let sealed = sealer.seal(&id, "user", &value).expect("seal");
        group.bench_function(format!("seal_{size}"), |b| {
            b.iter(|| sealer.seal(black_box(&id), "user", black_box(&value)))
        });
        group.bench_function(format!("open_{size}"), |b| {
            b.iter(|| sealer.open(black_box(&id), "user", black_box(&sealed)))
        });
    }
    group.finish();
}

criterion_group!(benches, request_side, response_side, signing, sealing);
criterion_main!(benches);
