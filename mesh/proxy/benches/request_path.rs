//! The proxy's own per-request work, without sockets: routing a request by
//! authority, stripping hop-by-hop headers, and recording metrics.
#![forbid(unsafe_code)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use mesh_proxy::{
    http::{
        headers::strip_hop_by_hop,
        router::{request_authority, Router},
    },
    metrics::{Direction, Metrics},
    Route,
};

fn routes(n: usize) -> Vec<Route> {
    (0..n)
        .map(|i| format!("svc-{i}.ns.svc.cluster.local:8080=127.0.0.{}:{}", 1 + i % 200, 8000 + i).parse().unwrap())
        .collect()
}

fn typical_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "svc-17.ns.svc.cluster.local:8080"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
        ("x-request-id", "3f1c2d4e-aaaa-bbbb-cccc-0123456789ab"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let router = Router::from_routes(&routes(100)).expect("plaintext routes");
    let req = Request::get("/api/v1/items?page=2")
        .header("host", "svc-17.ns.svc.cluster.local:8080")
        .body(())
        .unwrap();
    let mixed_case = Request::get("/").header("host", "SVC-17.ns.svc.cluster.local").body(()).unwrap();

    c.bench_function("route/exact_host_port_100_routes", |b| {
        b.iter(|| black_box(router.route(black_box(&req)).is_ok()))
    });
    c.bench_function("route/mixed_case_host_fallback", |b| {
        b.iter(|| black_box(router.lookup(request_authority(black_box(&mixed_case)).unwrap()).is_some()))
    });

    let headers = typical_headers();
    c.bench_function("headers/strip_hop_by_hop_typical", |b| {
        b.iter_batched_ref(|| headers.clone(), |h| strip_hop_by_hop(black_box(h)), criterion::BatchSize::SmallInput)
    });

    let mut clean = typical_headers();
    clean.remove("connection");
    clean.remove("keep-alive");
    c.bench_function("headers/strip_hop_by_hop_none_present", |b| {
        b.iter_batched_ref(|| clean.clone(), |h| strip_hop_by_hop(black_box(h)), criterion::BatchSize::SmallInput)
    });

    let metrics = Metrics::new();
    let out = metrics.direction(Direction::Outbound).clone();
    c.bench_function("metrics/record_response", |b| {
        b.iter(|| out.record_response(black_box(StatusCode::OK), black_box(Duration::from_micros(180))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
