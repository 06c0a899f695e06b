//! The topology every routing test starts from, shaped like the Gateway API
//! mesh conformance base (namespace, `echo-v1` and `echo-v2` Deployments,
//! Services `echo` (both), `echo-v1` and `echo-v2`), plus a meshed `client`
//! that sends the requests, and a consumer namespace with its own client.
//!
//! ```text
//!  gamma:           client-0 ──> echo (80 http, 8080 http-alt, 7070 grpc) ──> echo-v1-0, echo-v2-0
//!                                echo-v1 ──> echo-v1-0        echo-v2 ──> echo-v2-0
//!  gamma-consumer:  consumer-0
//! ```

use crate::substrate::cluster::{
    ClusterSpec, NamespaceSpec, PortSpec, ServiceSpec, To, WorkloadSpec,
};

/// The producer namespace (the Gateway API suite's `gateway-conformance-mesh`).
pub const NS: &str = "gamma";
/// The consumer namespace (`gateway-conformance-mesh-consumer`).
pub const CONSUMER_NS: &str = "gamma-consumer";
/// The pod every test sends from, unless it says otherwise.
pub const CLIENT: &str = "client-0";
/// The pod in [`CONSUMER_NS`] that sends consumer-route requests.
pub const CONSUMER: &str = "consumer-0";
pub const HTTP: u16 = 80;
pub const HTTP_ALT: u16 = 8080;
pub const GRPC: u16 = 7070;
/// Where the echo servers listen in a cluster (every port's target).
const TARGET_PORT: u16 = 8080;
const GRPC_TARGET_PORT: u16 = 7070;

fn ports() -> Vec<PortSpec> {
    let port = |name: &str, port, target, proto: &str| PortSpec {
        name: name.into(),
        port,
        target_port: target,
        app_protocol: Some(proto.into()),
    };
    vec![
        port("http", HTTP, TARGET_PORT, "http"),
        port("http-alt", HTTP_ALT, TARGET_PORT, "http"),
        port("grpc", GRPC, GRPC_TARGET_PORT, "grpc"),
    ]
}

fn workload(name: &str, ns: &str) -> WorkloadSpec {
    WorkloadSpec {
        name: name.into(),
        namespace: ns.into(),
        service_account: name.into(),
        replicas: 1,
        meshed: true,
        app: Default::default(),
    }
}

fn service(name: &str, selects: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        namespace: NS.into(),
        ports: ports(),
        selects: selects.iter().map(|s| s.to_string()).collect(),
    }
}

/// The base topology with no routes.
pub fn base() -> ClusterSpec {
    ClusterSpec {
        namespaces: vec![
            NamespaceSpec {
                name: NS.into(),
                default_inbound_policy: None,
            },
            NamespaceSpec {
                name: CONSUMER_NS.into(),
                default_inbound_policy: None,
            },
        ],
        services: vec![
            service("echo", &["echo-v1", "echo-v2"]),
            service("echo-v1", &["echo-v1"]),
            service("echo-v2", &["echo-v2"]),
        ],
        workloads: vec![
            workload("client", NS),
            workload("echo-v1", NS),
            workload("echo-v2", NS),
            workload("consumer", CONSUMER_NS),
        ],
        manifests: Vec::new(),
        mesh: Default::default(),
    }
}

/// [`base`] with the manifest `yaml` as `routes.yaml`.
pub fn with(yaml: &str) -> ClusterSpec {
    let mut spec = base();
    spec.manifests.push(("routes.yaml".into(), yaml.into()));
    spec
}

/// `<svc>.gamma:<port>`.
pub fn svc(name: &str, port: u16) -> To {
    To::service(name, NS, port)
}

/// An HTTPRoute in `ns` named `name`, attached to Service `parent` of
/// [`NS`] (at `port`, when given), with `rules` (YAML, indented as list
/// items under `rules:`).
pub fn http_route(name: &str, ns: &str, parent: &str, port: Option<u16>, rules: &str) -> String {
    route("HTTPRoute", name, ns, parent, port, rules)
}

/// A GRPCRoute, as [`http_route`].
pub fn grpc_route(name: &str, parent: &str, port: Option<u16>, rules: &str) -> String {
    route("GRPCRoute", name, NS, parent, port, rules)
}

fn route(kind: &str, name: &str, ns: &str, parent: &str, port: Option<u16>, rules: &str) -> String {
    let port = port.map(|p| format!("\n    port: {p}")).unwrap_or_default();
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: {kind}
metadata:
  name: {name}
  namespace: {ns}
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: {parent}
    namespace: {NS}{port}
  rules:
{rules}"
    )
}

/// A `RequestHeaderModifier` filter setting `x-route-rule: <rule>`, so the
/// echo server shows which rule a request matched (YAML at rule level).
pub fn mark(rule: &str) -> String {
    format!(
        "    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-route-rule
          value: {rule}
"
    )
}

/// A backendRefs list (YAML at rule level) of `(service, port, weight)`.
pub fn backends(list: &[(&str, u16, Option<u32>)]) -> String {
    let mut s = String::from("    backendRefs:\n");
    for (name, port, weight) in list {
        s.push_str(&format!("    - name: {name}\n      port: {port}\n"));
        if let Some(w) = weight {
            s.push_str(&format!("      weight: {w}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_as_mesh_control_reads_them() {
        let yaml = http_route(
            "r",
            NS,
            "echo",
            Some(80),
            &format!(
                "  - matches:\n    - path:\n        type: PathPrefix\n        value: /a\n{}{}",
                mark("a"),
                backends(&[("echo-v1", 80, Some(3)), ("echo-v2", 80, None)])
            ),
        ) + &grpc_route(
            "g",
            "echo",
            None,
            &format!("  -\n{}", backends(&[("echo-v1", 7070, None)])),
        );
        let parsed = mesh_control::discovery::manifests::parse_file(
            std::path::Path::new("routes.yaml"),
            &yaml,
        )
        .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
        assert_eq!(parsed.len(), 2, "{yaml}");
    }
}
