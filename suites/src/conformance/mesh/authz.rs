//! Authorization: allowed and refused by identity (AuthorizationPolicy), by
//! a namespace's default (`weft.io/default-inbound-policy`), and plaintext
//! refused where the server is meshed.

use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::routing::test;
use crate::conformance::topology::{self, svc, CLIENT, CONSUMER, HTTP, NS};
use crate::conformance::{run, Test, Verdict};
use crate::substrate::cluster::{identity, ClusterSpec, Req, To, WorkloadSpec};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshAuthorizationByIdentity",
            None,
            "an AuthorizationPolicy naming one client identity lets it reach the Service and refuses (403) another meshed client; a Service no policy targets stays open",
            by_identity_topology,
            by_identity
        ),
        test!(
            "MeshAuthorizationNamespaceDefault",
            None,
            "a namespace annotated weft.io/default-inbound-policy: deny refuses a meshed client (403) where no policy allows it, and a policy for any meshed client opens one Service",
            namespace_default_topology,
            namespace_default
        ),
        test!(
            "MeshPlaintextRefused",
            None,
            "in a namespace whose default is all-authenticated, an unmeshed client reaching a meshed server's pod in plaintext is refused (403 from the sidecar); a meshed client gets through",
            plaintext_topology,
            plaintext_refused
        ),
    ]
}

/// An AuthorizationPolicy in [`NS`] for Service `target` (every port).
fn policy(name: &str, target: &str, from: &str) -> String {
    format!(
        "---
apiVersion: policy.weft.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: {NS}
spec:
  targetRef:
    kind: Service
    name: {target}
  from:
{from}"
    )
}

fn by_identity_topology() -> ClusterSpec {
    topology::with(&policy(
        "client-only",
        "echo-v1",
        &format!("    identities: [\"{}\"]\n", identity(NS, "client")),
    ))
}

/// The proxy's refusal: 403 with its own error header.
fn refused() -> Expect {
    Expect::status(403).no_header("x-echo-pod")
}

async fn by_identity(c: &crate::substrate::cluster::Cluster) -> Verdict {
    let cases = [
        // A refusal first: it holds only once the server's sidecar has
        // its policy, and every later case is judged under that policy.
        Case {
            name: "another meshed identity is refused",
            from: CONSUMER,
            to: svc("echo-v1", HTTP),
            req: Req::get("/authz"),
            expect: refused(),
        },
        Case {
            name: "the named identity is allowed",
            from: CLIENT,
            to: svc("echo-v1", HTTP),
            req: Req::get("/authz"),
            expect: Expect::ok("echo-v1"),
        },
        Case {
            name: "a Service no policy targets is open to it",
            from: CONSUMER,
            to: svc("echo-v2", HTTP),
            req: Req::get("/authz"),
            expect: Expect::ok("echo-v2"),
        },
    ];
    expect::all(c, &cases, run::patience()).await
}

fn namespace_default_topology() -> ClusterSpec {
    let mut spec = topology::with(&policy("any-meshed", "echo-v2", "    anyMeshed: true\n"));
    for ns in &mut spec.namespaces {
        if ns.name == NS {
            ns.default_inbound_policy = Some("deny".into());
        }
    }
    spec
}

async fn namespace_default(c: &crate::substrate::cluster::Cluster) -> Verdict {
    let cases = [
        Case {
            name: "no policy: the namespace default denies",
            from: CLIENT,
            to: svc("echo-v1", HTTP),
            req: Req::get("/authz"),
            expect: refused(),
        },
        Case {
            name: "a policy for any meshed client allows",
            from: CLIENT,
            to: svc("echo-v2", HTTP),
            req: Req::get("/authz"),
            expect: Expect::ok("echo-v2"),
        },
    ];
    expect::all(c, &cases, run::patience()).await
}

/// The unmeshed client pod.
const PLAIN: &str = "plain-0";

fn plaintext_topology() -> ClusterSpec {
    let mut spec = topology::base();
    // Strict: only authenticated (meshed) clients, the namespace's default.
    for ns in &mut spec.namespaces {
        if ns.name == NS {
            ns.default_inbound_policy = Some("all-authenticated".into());
        }
    }
    spec.workloads.push(WorkloadSpec {
        name: "plain".into(),
        namespace: NS.into(),
        service_account: "plain".into(),
        replicas: 1,
        meshed: false,
        app: Default::default(),
    });
    spec
}

async fn plaintext_refused(c: &crate::substrate::cluster::Cluster) -> Verdict {
    let cases = [
        // The refusal first (see by_identity).
        Case {
            name: "plaintext to the meshed pod is refused",
            from: PLAIN,
            to: To::pod("echo-v1-0"),
            req: Req::get("/plain"),
            expect: refused(),
        },
        Case {
            name: "a meshed client gets through",
            from: CLIENT,
            to: To::pod("echo-v1-0"),
            req: Req::get("/plain"),
            expect: Expect::ok("echo-v1"),
        },
    ];
    expect::all(c, &cases, run::patience()).await
}
