//! The Kubernetes manifests the local substrate hands `mesh-control
//! --manifests`, so the `weft` variant's client sidecar finds the server
//! replicas through Destination, as it would in a cluster.
//!
//! ```text
//!  <control dir>/manifests/
//!    service.yaml     Namespace bench (default inbound policy all-authenticated),
//!                     Service svc (clusterIP 127.96.0.1, port 80 `http`)
//!    endpoints.yaml   per replica i: Pod server-i (serviceAccountName server,
//!                     weft.io/inject: enabled) and EndpointSlice svc-i listing
//!                     127.0.0.1:<replica i's inbound sidecar port>
//! ```
//!
//! Every replica listens on 127.0.0.1 with its own port, and an
//! EndpointSlice has one port list for all its endpoints: hence one slice per
//! replica. The Pods make the endpoints meshed (identity
//! `spiffe://cluster.local/ns/bench/sa/server`, protocol hint H2), so the
//! client sidecar speaks mTLS + HTTP/2 to each.
//!
//! The inbound sidecars look their authorization up by the app's port, which
//! no slice lists (slices list the sidecars' ports, where a cluster would
//! list the pod port the sidecar intercepts), so what applies is the
//! namespace default: `all-authenticated`, i.e. any meshed client and no
//! plaintext, as in a mesh with authorization turned on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Namespace of every bench workload (matches the identities in `control`).
pub const NAMESPACE: &str = "bench";
/// The Service the replicas back.
pub const SERVICE: &str = "svc";
/// The Service port clients address (the default HTTP port, so a Host
/// without a port means it).
pub const SERVICE_PORT: u16 = 80;
/// The local substrate's ClusterIP: written as data only, never dialed;
/// loopback so no lookup by address can ever leave the machine. (The netns
/// substrate gives the Service a real virtual IP instead.)
pub const CLUSTER_IP: &str = "127.96.0.1";
/// The namespace default of the bench's Service: any meshed client, no
/// plaintext, as in a mesh with authorization turned on.
pub const DEFAULT_INBOUND_POLICY: &str = "all-authenticated";
/// What the load generator sends as Host for the discovered `weft` path.
pub const AUTHORITY: &str = "svc.bench.svc.cluster.local";
/// ServiceAccount of the server replicas (their sidecars' identity).
pub const SERVER_ACCOUNT: &str = "server";

/// The Namespace (with its default inbound policy, e.g.
/// [`DEFAULT_INBOUND_POLICY`] or `all-unauthenticated`) and the Service at
/// `cluster_ip` (e.g. [`CLUSTER_IP`]): fixed for a scenario.
pub fn service(cluster_ip: &str, default_inbound_policy: &str) -> String {
    format!(
        "# written by bench: the Service every server replica backs
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  annotations:
    weft.io/default-inbound-policy: {default_inbound_policy}
---
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
spec:
  clusterIP: \"{cluster_ip}\"
  ports:
  - name: http
    port: {SERVICE_PORT}
    appProtocol: http
"
    )
}

/// One meshed Pod and one EndpointSlice per replica; `inbound[i]` is replica
/// i's server sidecar.
pub fn endpoints(inbound: &[SocketAddr]) -> String {
    let mut s = String::from(
        "# written by bench: one meshed Pod and one EndpointSlice per server replica\n",
    );
    for (i, addr) in inbound.iter().enumerate() {
        let ip = addr.ip();
        let port = addr.port();
        let _ = write!(
            s,
            "---
apiVersion: v1
kind: Pod
metadata:
  name: server-{i}
  namespace: {NAMESPACE}
  annotations:
    weft.io/inject: enabled
spec:
  serviceAccountName: {SERVER_ACCOUNT}
  containers:
  - name: server
status:
  podIP: \"{ip}\"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE}-{i}
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: {SERVICE}
addressType: IPv4
ports:
- name: http
  port: {port}
endpoints:
- addresses: [\"{ip}\"]
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: server-{i}
    namespace: {NAMESPACE}
"
        );
    }
    s
}

/// Replace `dir/name` atomically (write a hidden temp file, rename): the
/// control plane's poll must never read half a file.
pub fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_control::discovery::manifests::Manifests;
    use mesh_index::{DefaultPolicy, DiscoverDestination, DiscoverPolicy, ProtocolHint, Workload};

    /// What mesh-control would make of the files: parsed without a
    /// problem, the Service resolving to every replica as a meshed endpoint,
    /// and the server workload refusing plaintext by default.
    #[test]
    fn mesh_control_resolves_every_replica_as_meshed() {
        let dir = tempfile::tempdir().unwrap();
        let replicas: Vec<SocketAddr> = ["127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        write(
            dir.path(),
            "service.yaml",
            &service(CLUSTER_IP, DEFAULT_INBOUND_POLICY),
        )
        .unwrap();
        write(dir.path(), "endpoints.yaml", &endpoints(&replicas)).unwrap();

        let index = mesh_index::Index::new(mesh_index::Config::default());
        let mut backend = Manifests::new(dir.path(), index.clone());
        let report = backend.scan().unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.files, 2);

        for authority in [
            format!("{AUTHORITY}:{SERVICE_PORT}"),
            format!("{CLUSTER_IP}:{SERVICE_PORT}"),
        ] {
            let view = index
                .watch_destination(&authority)
                .unwrap()
                .borrow()
                .clone();
            assert!(view.exists, "{authority}");
            let got: Vec<SocketAddr> = view.endpoints.keys().copied().collect();
            assert_eq!(got, replicas, "{authority}");
            for ep in view.endpoints.values() {
                assert_eq!(
                    ep.identity.as_deref(),
                    Some(super::super::control::SERVER_ID)
                );
                assert_eq!(ep.hint, ProtocolHint::H2);
            }
        }

        let inbound = index
            .watch_inbound(
                Workload::Identity(super::super::control::SERVER_ID.into()),
                40999,
            )
            .unwrap()
            .borrow()
            .clone();
        assert_eq!(inbound.default_policy, DefaultPolicy::AllAuthenticated);
        assert!(!inbound.explicit);

        // A cell with fewer replicas replaces the set: stale slices go.
        write(dir.path(), "endpoints.yaml", &endpoints(&replicas[..1])).unwrap();
        let report = backend.scan().unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let view = index
            .watch_destination(&format!("{AUTHORITY}:{SERVICE_PORT}"))
            .unwrap()
            .borrow()
            .clone();
        assert_eq!(
            view.endpoints.keys().copied().collect::<Vec<_>>(),
            replicas[..1]
        );
    }
}
