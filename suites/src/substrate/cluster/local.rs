//! Conformance topologies on the local substrate: every pod is an echo
//! server on 127.0.0.1 and, when meshed, a sidecar in front of it; apps
//! address their sidecar's outbound listener explicitly.
//!
//! ```text
//!  pod P (meshed):   client ──> P's outbound ══mTLS══> Q's inbound ──> Q's echo server
//!                    Host: <svc>.<ns>.svc.cluster.local:<port> (or <pod IP>:<endpoint port>)
//!  pod P (baseline): client ──────────────────────────────────────────> Q's echo server
//! ```
//!
//! One mesh-control per cluster, with a fresh token per workload identity
//! and the topology's manifests ([`super::yaml`]) plus the test's own.
//! ClusterIPs are written as data (`127.97.<service>.1`), never dialed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

use super::{
    yaml, Cluster, ClusterSpec, Interception, MeshCluster, MeshMode, PodInfo, ServiceInfo,
};
use crate::substrate::control::{ControlOptions, ControlPlane};
use crate::substrate::local::{addr, start_proxy, Local, Sidecar, READY_PATIENCE};
use crate::substrate::process::Proc;
use crate::substrate::{probe, DeployError};
use crate::suite::Protocol;

/// The file the topology's own objects are written to.
const TOPOLOGY_FILE: &str = "topology.yaml";

impl MeshCluster for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn deploy_cluster(
        &mut self,
        spec: &ClusterSpec,
        mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        spec.validate().map_err(|problems| DeployError::Start {
            component: "topology".into(),
            detail: problems.join("; "),
        })?;
        let mut cluster = Cluster::new("local", mode, Interception::Explicit);
        // Echo servers first: a sidecar needs its app's address.
        let mut apps = Vec::new();
        for w in &spec.workloads {
            for i in 0..w.replicas {
                let pod = format!("{}-{i}", w.name);
                let mut cmd = Command::new(&self.bins.loadgen);
                cmd.args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--echo",
                    "--threads",
                    "1",
                ])
                .args([
                    "--name",
                    &w.name,
                    "--namespace",
                    &w.namespace,
                    "--pod",
                    &pod,
                ]);
                let mut p =
                    Proc::spawn(&format!("echo {}/{pod}", w.namespace), cmd, &self.pids_file)?;
                let app = addr(&mut p, "listening on ").await?;
                apps.push((w, pod, app));
                cluster.keep(p);
            }
        }
        for (_, _, app) in &apps {
            probe::until_ok(*app, None, "/healthz", Protocol::Http1, READY_PATIENCE)
                .await
                .map_err(|detail| DeployError::Ready {
                    component: format!("echo server {app}"),
                    detail,
                })?;
        }
        let meshed = |w: &super::WorkloadSpec| mode.meshed() && w.meshed;
        let control = match mode {
            MeshMode::Weft | MeshMode::WeftWithout(_) => {
                let dir = self.cell_dir("cluster")?;
                let mut ids: Vec<String> = spec
                    .workloads
                    .iter()
                    .filter(|w| w.meshed)
                    .map(|w| super::identity(&w.namespace, &w.service_account))
                    .collect();
                ids.sort();
                ids.dedup();
                // The topology's objects need the sidecars' ports, which they
                // get only once started: the test's own manifests go first,
                // the topology once every sidecar is listening.
                let initial: Vec<(&str, &str)> = spec
                    .manifests
                    .iter()
                    .map(|(n, y)| (n.as_str(), y.as_str()))
                    .collect();
                Some(
                    ControlPlane::start_for(
                        &self.bins.mesh_control,
                        &dir,
                        &self.pids_file,
                        READY_PATIENCE,
                        ControlOptions::local(),
                        &ids,
                        &initial,
                    )
                    .await?,
                )
            }
            MeshMode::Baseline => None,
        };
        for (w, pod, app) in apps {
            let (endpoint_port, outbound) = if meshed(w) {
                let cp = control.as_ref().expect("a control plane when meshed");
                let id = super::identity(&w.namespace, &w.service_account);
                let name = format!("sidecar {}/{pod}", w.namespace);
                // The app learns who called: tests can see the mesh's mTLS identity.
                let sidecar = Sidecar {
                    forward_client_identity: true,
                    disable: mode.disabled().map(|f| f.as_str()),
                    ..Sidecar::meshed(&name, &id, Some(app))
                };
                let (p, outbound, inbound) =
                    match start_proxy(&self.bins, &self.pids_file, Some(cp), sidecar).await {
                        Ok(started) => started,
                        Err(e) => return Err(with_control_log(e, cp)),
                    };
                cluster.keep(p);
                (inbound.expect("inbound requested").port(), Some(outbound))
            } else {
                (app.port(), None)
            };
            cluster.pods.push(PodInfo {
                name: pod,
                namespace: w.namespace.clone(),
                workload: w.name.clone(),
                service_account: w.service_account.clone(),
                meshed: meshed(w),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                app,
                endpoint_port,
                outbound,
                netns: None,
            });
        }
        for (k, s) in spec.services.iter().enumerate() {
            let pods = cluster
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| p.namespace == s.namespace && s.selects.contains(&p.workload))
                .map(|(i, _)| i)
                .collect();
            cluster.services.push(ServiceInfo {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                // Loopback, so no lookup by address can ever leave the machine.
                cluster_ip: IpAddr::V4(Ipv4Addr::new(
                    127,
                    97,
                    (k / 250) as u8,
                    (k % 250 + 1) as u8,
                )),
                ports: s.ports.clone(),
                pods,
            });
        }
        if let Some(cp) = control {
            let topology = yaml::render(
                &spec.namespaces,
                &cluster.services,
                &cluster.pods,
                Interception::Explicit,
            );
            crate::substrate::manifests::write(cp.manifests_dir(), TOPOLOGY_FILE, &topology)
                .map_err(|source| DeployError::Io {
                    what: format!("write {}", cp.manifests_dir().join(TOPOLOGY_FILE).display()),
                    source,
                })?;
            cluster.set_control(cp);
            ready(&cluster).await?;
        }
        Ok(cluster)
    }
}

/// Every meshed pod reaches every Service-backing pod's address through its
/// sidecar (so the control plane has served the topology), within
/// [`READY_PATIENCE`].
async fn ready(cluster: &Cluster) -> Result<(), DeployError> {
    // Only pods some Service selects are endpoints the control plane knows
    // (and so meshed destinations); another pod's address is unknown to it
    // and is reached in plaintext, which its sidecar may refuse.
    let endpoints: Vec<&PodInfo> = cluster
        .pods
        .iter()
        .enumerate()
        .filter(|(i, _)| cluster.services.iter().any(|s| s.pods.contains(i)))
        .map(|(_, p)| p)
        .collect();
    for src in cluster.pods.iter().filter(|p| p.meshed) {
        for dst in &endpoints {
            let outbound = src
                .outbound
                .expect("a meshed local pod has an outbound listener");
            let authority = SocketAddr::new(dst.ip, dst.endpoint_port).to_string();
            probe::until_ok(outbound, Some(&authority), "/healthz", Protocol::Http1, READY_PATIENCE)
                .await
                .map_err(|e| DeployError::Ready {
                    component: format!("sidecar of {}/{}", src.namespace, src.name),
                    detail: format!(
                        "GET /healthz to pod {} ({authority}) through it: {e}\n  control stderr tail:\n{}",
                        dst.name,
                        cluster.control_log()
                    ),
                })?;
        }
    }
    Ok(())
}

fn with_control_log(e: DeployError, cp: &ControlPlane) -> DeployError {
    match e {
        DeployError::Ready { component, detail } | DeployError::Start { component, detail } => {
            DeployError::Ready {
                component,
                detail: format!("{detail}\n  control stderr tail:\n{}", cp.stderr_tail()),
            }
        }
        other => other,
    }
}
