//! GRPCRoute on the `grpc` port (7070): method and header matching, a
//! weighted split, and a request header modifier, with unary gRPC calls
//! over h2c answered by the echo server.

use super::test;
use super::traffic::split;
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::run::patience;
use crate::conformance::topology::{self as topo, backends, grpc_route, mark, svc, CLIENT, GRPC};
use crate::conformance::{Test, Verdict};
use crate::substrate::cluster::{Cluster, ClusterSpec, Req};

/// The gRPC service the calls name (the echo server answers any).
const SERVICE: &str = "gamma.Echo";

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshGRPCRouteMatching",
            Some("GRPCRoute"),
            "GRPCRoute method (service and method, exact and regex) and header matches pick the rule",
            matching_topology,
            matching
        ),
        test!(
            "MeshGRPCRouteWeight",
            Some("GRPCRoute"),
            "weighted GRPCRoute backendRefs (70/30) split 600 calls within ±7 points",
            weight_topology,
            weight
        ),
        test!(
            "MeshGRPCRouteRequestHeaderModifier",
            Some("GRPCRoute"),
            "a GRPCRoute RequestHeaderModifier sets, adds and removes request metadata",
            header_topology,
            header
        ),
    ]
}

fn rule(matches: &str, name: &str, backend: &str) -> String {
    format!(
        "  - matches:\n{matches}{}{}",
        mark(name),
        backends(&[(backend, GRPC, None)])
    )
}

fn matching_topology() -> ClusterSpec {
    let rules = [
        rule(&format!("    - method:\n        service: {SERVICE}\n        method: One\n"), "one", "echo-v1"),
        rule(&format!("    - method:\n        service: {SERVICE}\n        method: Two\n"), "two", "echo-v2"),
        rule(
            "    - method:\n        type: RegularExpression\n        service: gamma\\.Other\n        method: \"Re.*\"\n",
            "regex",
            "echo-v2",
        ),
        rule(
            &format!("    - method:\n        service: {SERVICE}\n        method: Headers\n      headers:\n      - name: version\n        value: two\n"),
            "header",
            "echo-v2",
        ),
        rule(&format!("    - method:\n        service: {SERVICE}\n        method: Headers\n"), "no-header", "echo-v1"),
    ]
    .concat();
    topo::with(&grpc_route("grpc-matching", "echo", Some(GRPC), &rules))
}

fn call(name: &'static str, req: Req, backend: &'static str, rule: &str) -> Case {
    Case {
        name,
        from: CLIENT,
        to: svc("echo", GRPC),
        req,
        expect: Expect::ok(backend).grpc(0).saw("x-route-rule", &[rule]),
    }
}

async fn matching(c: &Cluster) -> Verdict {
    let cases = [
        call(
            "exact method One",
            Req::grpc(SERVICE, "One"),
            "echo-v1",
            "one",
        ),
        call(
            "exact method Two",
            Req::grpc(SERVICE, "Two"),
            "echo-v2",
            "two",
        ),
        call(
            "regex method",
            Req::grpc("gamma.Other", "Repeat"),
            "echo-v2",
            "regex",
        ),
        call(
            "method and header",
            Req::grpc(SERVICE, "Headers").header("version", "two"),
            "echo-v2",
            "header",
        ),
        call(
            "method without the header",
            Req::grpc(SERVICE, "Headers"),
            "echo-v1",
            "no-header",
        ),
    ];
    expect::all(c, &cases, patience()).await
}

fn weight_topology() -> ClusterSpec {
    let rules = format!(
        "  -\n{}{}",
        mark("split"),
        backends(&[
            ("echo-v1", GRPC, Some(super::traffic::WEIGHTS[0].1)),
            ("echo-v2", GRPC, Some(super::traffic::WEIGHTS[1].1))
        ])
    );
    topo::with(&grpc_route("grpc-split", "echo", Some(GRPC), &rules))
}

async fn weight(c: &Cluster) -> Verdict {
    split(
        c,
        Req::grpc(SERVICE, "Split"),
        GRPC,
        Expect::status(200).grpc(0).saw("x-route-rule", &["split"]),
    )
    .await
}

fn header_topology() -> ClusterSpec {
    let rules = format!(
        "  -
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-header-set
          value: set-overwrites-values
        add:
        - name: x-header-add
          value: add-appends-values
        remove:
        - x-header-remove
{}",
        backends(&[("echo-v1", GRPC, None)])
    );
    topo::with(&grpc_route("grpc-headers", "echo", Some(GRPC), &rules))
}

async fn header(c: &Cluster) -> Verdict {
    let cases = [Case {
        name: "metadata set, added and removed",
        from: CLIENT,
        to: svc("echo", GRPC),
        req: Req::grpc(SERVICE, "Headers")
            .header("x-header-set", "some-other-value")
            .header("x-header-add", "add-value")
            .header("x-header-remove", "remove-me"),
        expect: Expect::ok("echo-v1")
            .grpc(0)
            .saw("x-header-set", &["set-overwrites-values"])
            .saw("x-header-add", &["add-value", "add-appends-values"])
            .not_saw("x-header-remove"),
    }];
    expect::all(c, &cases, patience()).await
}
