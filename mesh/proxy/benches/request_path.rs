//! The proxy's own per-request work, without sockets: detecting a
//! connection's protocol, routing a request by authority, picking an
//! endpoint, stripping hop-by-hop headers, and recording metrics.
//! `calibrate/sort_1000` is fixed work that `ci/microbench` divides the
//! others by, so its stored baseline holds across machines of different speed.
#![forbid(unsafe_code)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use mesh_proxy::{
    discovery::{balance::Balancer, Endpoint},
    http::{
        authority::normalize,
        headers::strip_hop_by_hop,
        router::{request_authority, Router},
    },
    http::upstream::Upstream,
    metrics::{Direction, Metrics},
    tcp::detect::classify,
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

    // The discovered path's and the metrics' key: port-less and mixed case
    // build it in a stack buffer, an exact key is borrowed.
    for (name, authority) in [("portless", "svc-17.ns.svc.cluster.local"), ("mixed_case", "SVC-17.ns.svc.cluster.local:8080"), ("exact", "svc-17.ns.svc.cluster.local:8080")] {
        c.bench_function(&format!("authority/key_{name}"), |b| b.iter(|| normalize(black_box(authority)).len()));
    }

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

    let requests: &[(&str, &[u8])] = &[
        ("http1", b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: svc-17.ns.svc.cluster.local:8080\r\n\r\n"),
        ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04\0\0\0\0\0"),
        ("tls", b"\x16\x03\x01\x02\0\x01\0\x01\xfc\x03\x03"),
        ("opaque", b"\0\x01binary protocol frame that is not HTTP at all"),
    ];
    for (name, bytes) in requests {
        c.bench_function(&format!("detect/{name}"), |b| b.iter(|| black_box(classify(black_box(bytes), 16 * 1024))));
    }

    for n in [1u16, 100] {
        let balancer = Balancer::new();
        let eps: Vec<Endpoint> = (1..=n).map(|p| Endpoint::plain(([127, 0, 0, 1], 10_000 + p).into())).collect();
        balancer.update(&eps, |e| Some(Upstream::new(e.addr)));
        c.bench_function(&format!("balance/p2c_pick_{n}_endpoints"), |b| {
            b.iter(|| {
                let pick = balancer.pick(black_box(None)).expect("endpoints");
                balancer.finish(pick, Some(Duration::from_micros(250)), true)
            })
        });
    }

    let metrics = Metrics::new();
    let out = metrics.direction(Direction::Outbound).clone();
    c.bench_function("metrics/record_response", |b| {
        b.iter(|| out.record_response(black_box(StatusCode::OK), black_box(Duration::from_micros(180))))
    });
}

criterion_group!(benches, weft_testkit::bench::calibrate, bench);
criterion_main!(benches);
