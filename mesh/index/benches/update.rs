//! What one write costs the index with every Service watched, at 100, 1,000
//! and 10,000 Services in one namespace (the case a namespace-wide refresh
//! would make quadratic): each Service's endpoints, outbound policy and its
//! workload's inbound policy are watched, and the write replaces one
//! Service's EndpointSlice. Flat across sizes means the cost is the views
//! the write changes, not the views watched.
//! `cargo bench -p mesh-index --bench update`
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mesh_index::model::*;
use mesh_index::{Config, DiscoverDestination, DiscoverPolicy, Index, Workload};

fn ip(n: usize, base: u8) -> IpAddr {
    IpAddr::from([10, base, (n >> 8) as u8, n as u8])
}

fn slice(i: usize, generation: usize) -> Resource {
    let endpoint = |a: IpAddr, pod: String| SliceEndpoint {
        addresses: vec![a],
        ready: true,
        pod: Some(ObjectKey::new("bench", pod)),
        node: None,
        zone: None,
    };
    Resource::EndpointSlice(EndpointSlice {
        key: ObjectKey::new("bench", format!("svc-{i}-1")),
        service: format!("svc-{i}"),
        ports: vec![SlicePort { name: "http".into(), port: 8080 }],
        endpoints: vec![
            endpoint(ip(i, 1), format!("svc-{i}-a")),
            endpoint(ip(i + 1 + generation % 2, 2), format!("svc-{i}-b")),
        ],
    })
}

/// `n` watched Services, each with a slice of two meshed pods.
fn index(n: usize) -> (Index, Vec<Box<dyn std::any::Any>>) {
    let index = Index::new(Config::default());
    let mut changes = Vec::new();
    for i in 0..n {
        changes.push(Change::Upsert(Resource::Service(Service {
            key: ObjectKey::new("bench", format!("svc-{i}")),
            cluster_ips: vec![ip(i, 96)],
            ports: vec![ServicePort { name: "http".into(), port: 80, protocol: Protocol::Http1 }],
            failure_accrual: FailureAccrual::default(),
        })));
        changes.push(Change::Upsert(slice(i, 0)));
        for (pod, addr) in [("a", ip(i, 1)), ("b", ip(i + 1, 2))] {
            changes.push(Change::Upsert(Resource::Pod(Pod {
                key: ObjectKey::new("bench", format!("svc-{i}-{pod}")),
                service_account: format!("svc-{i}"),
                inject: Some(true),
                has_proxy: true,
                ips: vec![addr],
                opaque_ports: Vec::new(),
            })));
        }
    }
    index.apply(changes);
    let mut watches: Vec<Box<dyn std::any::Any>> = Vec::new();
    for i in 0..n {
        let authority = format!("svc-{i}.bench:80");
        watches.push(Box::new(index.watch_destination(&authority).unwrap()));
        watches.push(Box::new(index.watch_outbound(&authority, None).unwrap()));
        let id = format!("spiffe://cluster.local/ns/bench/sa/svc-{i}");
        watches.push(Box::new(index.watch_inbound(Workload::Identity(id), 8080).unwrap()));
    }
    (index, watches)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("index/one_slice_write_all_watched");
    for n in [100, 1_000, 10_000] {
        let (index, _watches) = index(n);
        let mut generation = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                generation += 1;
                black_box(index.apply([Change::Upsert(slice(n / 2, generation))]))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
