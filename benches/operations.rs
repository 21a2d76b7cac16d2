//! What the operating features add to every request, measured through the public API:
//!
//! - the log phase's metrics: counting a status per route (lock-free after the first time a
//!   code is seen) and observing the two histograms;
//! - making an `X-Request-Id`, or keeping a valid one;
//! - taking the live configuration snapshot (what every request does once);
//! - formatting a session fingerprint for the access line.
//!
//! Run with `cargo bench --bench operations`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use prometheus_client::metrics::counter::Counter;

use stickless::metrics::Metrics;
use stickless::request_id::{take_or_make, X_REQUEST_ID};
use stickless::session::fingerprint::Fingerprints;
use stickless::session::id::SessionId;

fn per_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_request");
    let metrics = Metrics::new(Counter::default());
    let route = metrics.route("app");
    route.answered(200, Duration::from_micros(900), None);
    group.bench_function("metrics_answered", |b| {
        b.iter(|| {
            route.answered(
                black_box(200),
                black_box(Duration::from_micros(900)),
                black_box(Some(Duration::from_micros(150))),
            )
        })
    });

    let empty = HeaderMap::new();
    group.bench_function("request_id_make", |b| {
        b.iter(|| take_or_make(black_box(&empty)))
    });
    let mut given = HeaderMap::new();
    given.insert(
        X_REQUEST_ID,
        HeaderValue::from_static("Root=1-67891233-abcdef012345678912345678"),
    );
    group.bench_function("request_id_keep", |b| {
        b.iter(|| take_or_make(black_box(&given)))
    });

    let live = ArcSwap::from_pointee(vec![0u8; 64]);
    group.bench_function("live_snapshot_load_full", |b| {
        b.iter(|| black_box(live.load_full()))
    });
    let arc = Arc::new(0u8);
    group.bench_function("arc_clone_for_comparison", |b| {
        b.iter(|| black_box(arc.clone()))
    });

    let fingerprints = Fingerprints::new();
    let id = SessionId::generate().expect("randomness");
    group.bench_function("fingerprint", |b| {
        b.iter(|| black_box(fingerprints.show(Some(&id)).to_string()))
    });
    group.finish();
}

criterion_group!(benches, per_request);
criterion_main!(benches);
