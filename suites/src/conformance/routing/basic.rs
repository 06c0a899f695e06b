//! Attachment: which requests a Service-parented route applies to (its
//! Service, its port, its frontend, the consumer's namespace), and plain
//! meshed delivery.

use super::{set_response_header, test};
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::run::patience;
use crate::conformance::topology::{
    self as topo, backends, http_route, mark, svc, CLIENT, CONSUMER, CONSUMER_NS, HTTP, HTTP_ALT, NS,
};
use crate::conformance::{Test, Verdict};
use crate::substrate::cluster::{identity, Cluster, ClusterSpec, Proto, Req, To};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshBasic",
            Some("Mesh"),
            "HTTP/1.1 and h2c requests to a Service reach its pod through the mesh in the protocol the client spoke, and the app is told the caller's mTLS identity",
            topo::base,
            basic
        ),
        test!(
            "MeshPorts",
            Some("HTTPRouteParentRefPort"),
            "a route whose parentRef names a port applies to that Service port only; one without a port applies to every port",
            ports_topology,
            ports
        ),
        test!(
            "MeshFrontend",
            Some("Mesh"),
            "a route applies to requests addressed to its Service, not to requests addressed to a pod of it",
            frontend_topology,
            frontend
        ),
        test!(
            "MeshFrontendHostname",
            Some("MeshClusterIPMatching"),
            "a route applies by the Service IP the client dialed, not by the Host header it sent",
            frontend_topology,
            frontend_hostname
        ),
        test!(
            "MeshClusterIPMatching",
            Some("MeshClusterIPMatching"),
            "a request to a Service's ClusterIP gets the Service's routes",
            frontend_topology,
            cluster_ip
        ),
        test!(
            "MeshConsumerRoute",
            Some("MeshConsumerRoute"),
            "a route in the client's namespace for a Service in another applies to that namespace's clients only",
            consumer_topology,
            consumer
        ),
        test!(
            "MeshHTTPRouteSimpleSameNamespace",
            Some("Mesh"),
            "a route on Service echo sending everything to echo-v1 is followed for every request, and so is a live edit of it to echo-v2",
            same_namespace_topology,
            same_namespace
        ),
    ]
}

async fn basic(c: &Cluster) -> Verdict {
    let client_id = identity(NS, "client");
    let mut cases = Vec::new();
    for backend in ["echo-v1", "echo-v2"] {
        // Between the sidecars everything is HTTP/2; the app must get the
        // protocol the client spoke.
        for (proto, seen) in [(Proto::Http1, "HTTP/1.1"), (Proto::H2c, "HTTP/2.0")] {
            cases.push(Case {
                name: "to the Service of one workload",
                from: CLIENT,
                to: svc(backend, HTTP),
                req: Req::get("/").proto(proto),
                expect: Expect::ok(backend)
                    .proto(seen)
                    .saw("weft-client-id", &[&client_id]),
            });
        }
    }
    expect::all(c, &cases, patience()).await
}

fn ports_topology() -> ClusterSpec {
    let v1 = http_route(
        "echo-v1-port",
        NS,
        "echo-v1",
        Some(HTTP),
        &format!("  -\n{}", set_response_header("x-header-set", "v1")),
    );
    let v2 = http_route(
        "echo-v2-any-port",
        NS,
        "echo-v2",
        None,
        &format!("  -\n{}", set_response_header("x-header-set", "v2")),
    );
    topo::with(&(v1 + &v2))
}

async fn ports(c: &Cluster) -> Verdict {
    let case = |name, to, expect| Case {
        name,
        from: CLIENT,
        to,
        req: Req::get("/"),
        expect,
    };
    let cases = [
        case(
            "port named by the parentRef",
            svc("echo-v1", HTTP),
            Expect::ok("echo-v1").header("x-header-set", "v1"),
        ),
        case(
            "another port of the same Service",
            svc("echo-v1", HTTP_ALT),
            Expect::ok("echo-v1").no_header("x-header-set"),
        ),
        case(
            "no port in the parentRef: port 80",
            svc("echo-v2", HTTP),
            Expect::ok("echo-v2").header("x-header-set", "v2"),
        ),
        case(
            "no port in the parentRef: port 8080",
            svc("echo-v2", HTTP_ALT),
            Expect::ok("echo-v2").header("x-header-set", "v2"),
        ),
    ];
    expect::all(c, &cases, patience()).await
}

fn frontend_topology() -> ClusterSpec {
    topo::with(&http_route(
        "echo-v2",
        NS,
        "echo-v2",
        None,
        &format!("  -\n{}", set_response_header("x-header-set", "set")),
    ))
}

async fn frontend(c: &Cluster) -> Verdict {
    let cases = [
        Case {
            name: "to the Service",
            from: CLIENT,
            to: svc("echo-v2", HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v2").header("x-header-set", "set"),
        },
        Case {
            name: "to the pod's address",
            from: CLIENT,
            to: To::pod("echo-v2-0"),
            req: Req::get("/"),
            expect: Expect::ok("echo-v2").no_header("x-header-set"),
        },
    ];
    expect::all(c, &cases, patience()).await
}

async fn frontend_hostname(c: &Cluster) -> Verdict {
    let authority = |name: &str| format!("{name}.{NS}.svc.cluster.local:{HTTP}");
    let cases = [
        Case {
            name: "dial echo-v2's IP with Host echo-v1",
            from: CLIENT,
            to: To::cluster_ip("echo-v2", NS, HTTP),
            req: Req::get("/").host(&authority("echo-v1")),
            expect: Expect::ok("echo-v2").header("x-header-set", "set"),
        },
        Case {
            name: "dial echo-v1's IP with Host echo-v2",
            from: CLIENT,
            to: To::cluster_ip("echo-v1", NS, HTTP),
            req: Req::get("/").host(&authority("echo-v2")),
            expect: Expect::ok("echo-v1").no_header("x-header-set"),
        },
    ];
    expect::all(c, &cases, patience()).await
}

async fn cluster_ip(c: &Cluster) -> Verdict {
    let cases = [
        Case {
            name: "to the ClusterIP of the route's Service",
            from: CLIENT,
            to: To::cluster_ip("echo-v2", NS, HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v2").header("x-header-set", "set"),
        },
        Case {
            name: "to the ClusterIP of another Service",
            from: CLIENT,
            to: To::cluster_ip("echo-v1", NS, HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v1").no_header("x-header-set"),
        },
    ];
    expect::all(c, &cases, patience()).await
}

fn consumer_topology() -> ClusterSpec {
    topo::with(&http_route(
        "consumer",
        CONSUMER_NS,
        "echo-v1",
        None,
        &format!("  -\n{}", set_response_header("x-header-set", "set")),
    ))
}

async fn consumer(c: &Cluster) -> Verdict {
    let cases = [
        Case {
            name: "from the route's namespace",
            from: CONSUMER,
            to: svc("echo-v1", HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v1").header("x-header-set", "set"),
        },
        Case {
            name: "from the Service's namespace",
            from: CLIENT,
            to: svc("echo-v1", HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v1").no_header("x-header-set"),
        },
    ];
    expect::all(c, &cases, patience()).await
}

/// The route sending everything for `echo` to `backend`.
fn to_one(backend: &str) -> String {
    http_route(
        "echo-to-one",
        NS,
        "echo",
        Some(HTTP),
        &format!("  -\n{}{}", mark(backend), backends(&[(backend, HTTP, None)])),
    )
}

fn same_namespace_topology() -> ClusterSpec {
    topo::with(&to_one("echo-v1"))
}

/// The route is followed for every request, and an edit of it (to echo-v2)
/// is followed too, without redeploying anything.
async fn same_namespace(c: &Cluster) -> Verdict {
    for (backend, edit) in [("echo-v1", false), ("echo-v2", true)] {
        if edit {
            if let Err(e) = c.apply("routes.yaml", &to_one(backend)) {
                return Verdict::Fail(crate::conformance::Failure {
                    reason: format!("cannot edit the route: {e}"),
                    expected: "the manifest rewritten".into(),
                    observed: e.to_string(),
                });
            }
        }
        let case = Case {
            name: if edit {
                "after the route is edited, every request goes to echo-v2"
            } else {
                "every request to echo goes to echo-v1"
            },
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/"),
            // The rule's mark, not only the backend: with two endpoints
            // a balancer that ignores the route can still send every
            // request to the one the route names (P2C picks the faster).
            expect: Expect::ok(backend).saw("x-route-rule", &[backend]),
        };
        match expect::eventually(c, &case, patience()).await {
            Verdict::Pass => {}
            other => return other,
        }
        // Once followed, always: without the route half would go elsewhere.
        match expect::distribution(c, CLIENT, &case.to, &case.req, 20).await {
            Ok(counts) if counts.len() == 1 && counts.contains_key(backend) => {}
            Ok(counts) => {
                return Verdict::Fail(crate::conformance::Failure {
                    reason: format!("{}: some of 20 requests did not reach {backend}", case.name),
                    expected: format!("{backend}: 20"),
                    observed: expect::show(&counts),
                })
            }
            Err(e) => return expect::dial_verdict(case.name, e),
        }
    }
    Verdict::Pass
}
