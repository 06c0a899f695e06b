//! Synthetic records for tests: real HDR histograms, encoded the way the
//! bench runner stores them, with percentiles taken from those histograms.
#![allow(dead_code)]

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use reports::{Env, Load, Percentiles, Report, Resource, Run, Skipped, SCHEMA_VERSION};

pub const MIB: u64 = 1024 * 1024;

/// A latency histogram whose median is about `p50_us`, with a tail: 1 % of
/// requests take 4x, 0.1 % take 20x.
pub fn histogram(p50_us: u64, n: u64) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..n {
        // Spread ±20 % around the median, deterministic.
        let spread = (i % 41) as f64 / 40.0 * 0.4 - 0.2;
        let mut v = (p50_us as f64 * (1.0 + spread)) as u64;
        if i % 100 == 99 {
            v *= 4;
        }
        if i % 1000 == 999 {
            v *= 5;
        }
        h.record(v.max(1)).unwrap();
    }
    h
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.5) as f64,
        p90: h.value_at_quantile(0.9) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p999: h.value_at_quantile(0.999) as f64,
        p9999: h.value_at_quantile(0.9999) as f64,
        max: h.max() as f64,
        mean: h.mean(),
    }
}

/// One open-loop run. Non-baseline variants get a proxy using `rss_mib` and
/// `cpu_per_krps` cores per 1000 rps.
pub fn run(scenario: &str, variant: &str, rate: f64, repetition: u32, p50_us: u64) -> Run {
    let h = histogram(p50_us, 5000);
    let duration_s = 10.0;
    let achieved = rate * 0.999;
    let mut resources = vec![Resource {
        component: "server".into(),
        role: "server".into(),
        rss_peak_bytes: 5 * MIB,
        rss_mean_bytes: 4 * MIB,
        rss_anon_peak_bytes: Some(3 * MIB),
        cpu_seconds: 1.0,
        samples: 40,
    }];
    if variant != "baseline" {
        resources.push(Resource {
            component: "proxy-outbound".into(),
            role: "proxy".into(),
            rss_peak_bytes: 10 * MIB,
            rss_mean_bytes: 9 * MIB,
            rss_anon_peak_bytes: Some(2 * MIB),
            cpu_seconds: 0.2 * duration_s * achieved / 1000.0,
            samples: 40,
        });
    }
    Run {
        scenario: scenario.into(),
        variant: variant.into(),
        substrate: "local".into(),
        repetition,
        load: Load {
            protocol: "http1".into(),
            mode: "open".into(),
            rate: Some(rate),
            concurrency: None,
            connections: 8,
            body_size: 128,
            duration_s,
            warmup_s: 2.0,
            requests: (achieved * duration_s) as u64,
            errors: 0,
            errors_by_class: BTreeMap::new(),
            late_sends: 0,
            not_sent: 0,
            sent_outside_window: 0,
            achieved_rps: achieved,
            connections_opened: 8,
            latency_us: percentiles(&h),
            service_time_us: percentiles(&h),
            histogram: reports::hist::encode(&h).unwrap(),
            service_histogram: reports::hist::encode(&h).unwrap(),
        },
        resources,
        proxy_counts: None,
        proxy_cpu: None,
        proxy_args: Vec::new(),
        host: None,
    }
}

pub fn report(runs: Vec<Run>) -> Report {
    Report {
        schema: SCHEMA_VERSION,
        suite: "quick".into(),
        started_at: "2026-01-02T03:04:05Z".into(),
        finished_at: "2026-01-02T03:14:05Z".into(),
        env: Env {
            host: "testhost".into(),
            cores: 2,
            kernel: "6.1.0-test".into(),
            git_rev: "abc1234".into(),
            versions: BTreeMap::from([("weft".into(), "0.1.0".into()), ("rustc".into(), "1.95.0".into())]),
        },
        runs,
        skipped: vec![],
        propagation: vec![],
        conformance: vec![],
        hostile: None,
        hardening: Default::default(),
        capacity: vec![],
        sweeps: vec![],
        cells: vec![],
    }
}

/// A healthy suite: scenario `http1-small` at 500 and 1000 rps, 3 repetitions,
/// baseline p50 ≈ 200 µs, weft ≈ 250 µs, weft-client-only ≈ 230 µs, nginx ≈
/// 300 µs; nginx skipped in a second scenario.
pub fn healthy() -> Report {
    let mut runs = Vec::new();
    for rate in [500.0, 1000.0] {
        for rep in 0..3 {
            runs.push(run("http1-small", "baseline", rate, rep, 200));
            runs.push(run("http1-small", "weft", rate, rep, 250));
            runs.push(run("http1-small", "weft-client-only", rate, rep, 230));
            runs.push(run("http1-small", "nginx", rate, rep, 300));
        }
    }
    let mut r = report(runs);
    r.skipped.push(Skipped {
        scenario: "http1-small".into(),
        variant: "haproxy".into(),
        reason: "haproxy binary not found on PATH".into(),
    });
    r
}

/// One conformance result; failures get an expected and an observed value,
/// n/a and skipped a reason.
pub fn test_result(name: &str, substrate: &str, variant: &str, status: reports::Status) -> reports::TestResult {
    use reports::Status;
    reports::TestResult {
        name: name.into(),
        feature: name.starts_with("Mesh").then(|| name.to_owned()),
        substrate: substrate.into(),
        variant: variant.into(),
        status,
        duration_s: 1.25,
        reason: match status {
            Status::Pass => None,
            Status::Fail => Some("wrong backend".into()),
            Status::NotApplicable => Some(format!("{substrate} has no ClusterIP interception")),
            Status::Skipped => Some("filtered out by --only".into()),
        },
        expected: (status == Status::Fail).then(|| "backend v2 for path /v2".into()),
        observed: (status == Status::Fail).then(|| "backend v1 | 200".into()),
    }
}

/// A conformance-only record (no load runs): three tests on local and netns,
/// one failing, one not applicable on local, one skipped on netns.
pub fn conformance_only() -> Report {
    use reports::Status;
    let mut r = report(vec![]);
    r.suite = "conformance".into();
    r.conformance = vec![
        test_result("MeshBasic", "local", "weft", Status::Pass),
        test_result("MeshClusterIPMatching", "local", "weft", Status::NotApplicable),
        test_result("MtlsByDefault", "local", "weft", Status::Pass),
        test_result("MeshBasic", "netns", "weft", Status::Pass),
        test_result("MeshClusterIPMatching", "netns", "weft", Status::Fail),
        test_result("MtlsByDefault", "netns", "weft", Status::Skipped),
    ];
    r
}
