//! Traffic: weighted backends (the split within a stated tolerance) and
//! per-rule timeouts (request and backendRequest).

use super::test;
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::run::patience;
use crate::conformance::topology::{
    self as topo, backends, http_route, mark, svc, CLIENT, HTTP, NS,
};
use crate::conformance::{Failure, Test, Verdict};
use crate::substrate::cluster::{Cluster, ClusterSpec, Req};
use loadgen::echo;

/// Requests sent to measure a split.
pub const SPLIT_REQUESTS: usize = 600;
/// Allowed distance of each backend's share from its weight's share, in
/// absolute terms. With 600 requests a 70/30 split has a standard
/// deviation of 1.9 points, so 7 points is more than 3.5 of them; a 50/50
/// round robin (no route) is 20 points off.
pub const SPLIT_TOLERANCE: f64 = 0.07;
/// The split the weight tests ask for.
pub const WEIGHTS: [(&str, u32); 2] = [("echo-v1", 70), ("echo-v2", 30)];

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshHTTPRouteWeight",
            Some("Mesh"),
            "weighted backendRefs (70/30) split 600 requests within ±7 points of their weights",
            weight_topology,
            weight
        ),
        test!(
            "MeshHTTPRouteTimeouts",
            Some("HTTPRouteRequestTimeout"),
            "a rule's request and backendRequest timeouts answer 504 when the backend is slower, and let faster answers through",
            timeouts_topology,
            timeouts
        ),
    ]
}

fn weight_topology() -> ClusterSpec {
    let rules = format!(
        "  -\n{}{}",
        mark("split"),
        backends(&[
            ("echo-v1", HTTP, Some(WEIGHTS[0].1)),
            ("echo-v2", HTTP, Some(WEIGHTS[1].1))
        ])
    );
    topo::with(&http_route("split", NS, "echo", Some(HTTP), &rules))
}

/// Wait until the route applies (`marked` says how a reply shows it),
/// then count where `req` goes.
pub(crate) async fn split(c: &Cluster, req: Req, port: u16, marked: Expect) -> Verdict {
    // Either backend, as long as the route's mark is there.
    let mut wait = Case {
        name: "the route applies",
        from: CLIENT,
        to: svc("echo", port),
        req: req.clone(),
        expect: marked,
    };
    wait.expect.backend = None;
    match expect::eventually(c, &wait, patience()).await {
        Verdict::Pass => {}
        other => return other,
    }
    let counts = match expect::distribution(c, CLIENT, &wait.to, &req, SPLIT_REQUESTS).await {
        Ok(counts) => counts,
        Err(e) => return expect::dial_verdict(wait.name, e),
    };
    match expect::within(&counts, &WEIGHTS, SPLIT_TOLERANCE) {
        Ok(()) => Verdict::Pass,
        Err(why) => Verdict::Fail(Failure {
            reason: format!("{SPLIT_REQUESTS} requests to {}: {why}", wait.to),
            expected: format!(
                "echo-v1 {:.0}%, echo-v2 {:.0}% (± {:.0} points)",
                70.0,
                30.0,
                SPLIT_TOLERANCE * 100.0
            ),
            observed: expect::show(&counts),
        }),
    }
}

async fn weight(c: &Cluster) -> Verdict {
    split(
        c,
        Req::get("/split"),
        HTTP,
        Expect::status(200).saw("x-route-rule", &["split"]),
    )
    .await
}

fn timeouts_topology() -> ClusterSpec {
    let rules = format!(
        "  - matches:
    - path:
        type: PathPrefix
        value: /request
    timeouts:
      request: 500ms
{}{}  - matches:
    - path:
        type: PathPrefix
        value: /backend
    timeouts:
      backendRequest: 500ms
{}{}",
        mark("request-timeout"),
        backends(&[("echo-v1", HTTP, None)]),
        mark("backend-timeout"),
        backends(&[("echo-v1", HTTP, None)]),
    );
    topo::with(&http_route("timeouts", NS, "echo", Some(HTTP), &rules))
}

async fn timeouts(c: &Cluster) -> Verdict {
    let case = |name, path: &str, delay: Option<&str>, expect| {
        let mut req = Req::get(path);
        if let Some(d) = delay {
            req = req.header(echo::DELAY, d);
        }
        Case {
            name,
            from: CLIENT,
            to: svc("echo", HTTP),
            req,
            expect,
        }
    };
    let cases = [
        // Fast answers first: they also show the route is in force.
        case(
            "request timeout, fast backend",
            "/request",
            None,
            Expect::ok("echo-v1").saw("x-route-rule", &["request-timeout"]),
        ),
        case(
            "request timeout, backend slower than it",
            "/request",
            Some("2s"),
            Expect::status(504),
        ),
        case(
            "backendRequest timeout, fast backend",
            "/backend",
            Some("10ms"),
            Expect::ok("echo-v1").saw("x-route-rule", &["backend-timeout"]),
        ),
        case(
            "backendRequest timeout, backend slower than it",
            "/backend",
            Some("2s"),
            Expect::status(504),
        ),
    ];
    expect::all(c, &cases, patience()).await
}
