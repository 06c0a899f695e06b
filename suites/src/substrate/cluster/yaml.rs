//! A deployed topology as the Kubernetes objects mesh-control reads from its
//! manifests directory: Namespaces, Services (with their ClusterIP), one
//! Pod per replica (meshed ones annotated `weft.io/inject: enabled`, so
//! their endpoints carry the workload identity) and one EndpointSlice per
//! (Service, pod).
//!
//! One slice per pod because on `local` every pod has its own port (a slice
//! has one port list for all its endpoints). There every Service port of a
//! pod lists the pod's one endpoint port (its sidecar's inbound listener):
//! a pod runs one echo server, whatever port it was addressed on. With
//! transparent interception the slice lists each port's target port, as
//! Kubernetes does.

use std::fmt::Write as _;

use super::{Interception, NamespaceSpec, PodInfo, ServiceInfo};

/// The whole topology as one multi-document YAML file.
pub fn render(
    namespaces: &[NamespaceSpec],
    services: &[ServiceInfo],
    pods: &[PodInfo],
    interception: Interception,
) -> String {
    let mut s = String::from("# written by bench: a conformance topology\n");
    for ns in namespaces {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
            ns.name
        );
        if let Some(policy) = &ns.default_inbound_policy {
            let _ = write!(
                s,
                "  annotations:\n    weft.io/default-inbound-policy: {policy}\n"
            );
        }
    }
    for svc in services {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  clusterIP: \"{}\"\n  ports:\n",
            svc.name, svc.namespace, svc.cluster_ip
        );
        for p in &svc.ports {
            let _ = write!(
                s,
                "  - name: {}\n    port: {}\n    targetPort: {}\n",
                p.name, p.port, p.target_port
            );
            if let Some(proto) = &p.app_protocol {
                let _ = writeln!(s, "    appProtocol: {proto}");
            }
        }
    }
    for pod in pods {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    app: {}\n",
            pod.name, pod.namespace, pod.workload
        );
        if pod.meshed {
            s.push_str("  annotations:\n    weft.io/inject: enabled\n");
        }
        let _ = write!(
            s,
            "spec:\n  serviceAccountName: {}\n  containers:\n  - name: echo\nstatus:\n  podIP: \"{}\"\n",
            pod.service_account, pod.ip
        );
    }
    for svc in services {
        for &i in &svc.pods {
            let pod = &pods[i];
            let family = if pod.ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let _ = write!(
                s,
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}-{}\n  namespace: {}\n  labels:\n    kubernetes.io/service-name: {}\naddressType: {family}\nports:\n",
                svc.name, pod.name, svc.namespace, svc.name
            );
            for p in &svc.ports {
                let port = match interception {
                    Interception::Explicit => pod.endpoint_port,
                    Interception::Transparent => p.target_port,
                };
                let _ = write!(s, "- name: {}\n  port: {port}\n", p.name);
            }
            let _ = write!(
                s,
                "endpoints:\n- addresses: [\"{}\"]\n  conditions:\n    ready: true\n  targetRef:\n    kind: Pod\n    name: {}\n    namespace: {}\n",
                pod.ip, pod.name, pod.namespace
            );
        }
    }
    s
}
