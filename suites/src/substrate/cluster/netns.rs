//! Conformance topologies on the netns substrate: each cluster gets its own
//! node (a bridge namespace with the Service NAT) and one network namespace
//! per pod; apps dial ClusterIPs and pod IPs from inside their pod, and
//! meshed pods' sidecars intercept them as in a real cluster.
//!
//! ```text
//!  node (br0 198.18.0.1/16, Service NAT)
//!    ClusterIP 198.19.0.k:port ──DNAT, one endpoint at random per connection──> pod IP:targetPort
//!
//!  pod P meshed:   app ──> ClusterIP:port ─iptables─> P's sidecar (uid 2102, SO_ORIGINAL_DST)
//!                    ══mTLS to Q's IP:targetPort══ iptables ─> Q's sidecar ──> Q's echo :targetPort
//!  pod P unmeshed, or baseline:  app ──> ClusterIP:port ──node DNAT──> Q's echo :targetPort
//!  control pod:    mesh-control on <pod IP>:8086; manifests: the topology (real pod IPs,
//!                  target ports, ClusterIPs, as EndpointSlices would list them) + the test's
//! ```
//!
//! Every pod runs one echo server per target port of the Services that
//! select it ([`APP_PORT`] when none does). The cluster owns its network:
//! its namespaces (and whatever still runs in them) go at teardown, when it
//! is dropped, or through the watchdog if `bench` dies.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use super::{
    yaml, AppKind, Cluster, ClusterSpec, Interception, MeshCluster, MeshMode, PodInfo, ServiceInfo,
    WorkloadSpec,
};
use crate::substrate::control::{ControlOptions, ControlPlane};
use crate::substrate::local::{addr, ready_error, READY_PATIENCE};
use crate::substrate::netns::net::{self, Network, Pod, RunId, ServiceNat};
use crate::substrate::netns::{enter, sidecar, Netns, APP_PORT, CONTROL_PORT, PROXY_UID};
use crate::substrate::process::Proc;
use crate::substrate::{probe, DeployError};
use crate::suite::Protocol;

/// The file the topology's own objects are written to.
const TOPOLOGY_FILE: &str = "topology.yaml";

impl MeshCluster for Netns {
    fn name(&self) -> &'static str {
        "netns"
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
        if let Some(w) = spec.workloads.iter().find(|w| w.app != AppKind::Echo) {
            return Err(DeployError::Unavailable {
                reason: format!(
                    "netns: pod apps other than the echo server ({:?} for workload {}) are not implemented on this substrate yet",
                    w.app, w.name
                ),
            });
        }
        if !mode.mtls() {
            return Err(DeployError::Unavailable {
                reason: "netns: sidecars without identity (weft-no-mtls) are not implemented on this substrate yet".into(),
            });
        }
        let mut cluster = Cluster::new("netns", mode, Interception::Transparent);
        let mut network =
            Network::create(RunId::current()).map_err(|e| net_err("create the node", e))?;
        // Pods (namespaces) first: the Services' NAT and the control plane's
        // manifests need their addresses.
        let mut pods = Vec::new();
        for w in &spec.workloads {
            let ports = listen_ports(spec, w);
            for i in 0..w.replicas {
                let name = format!("{}-{i}", w.name);
                let pod = network
                    .add_pod(&format!("{}-{name}", w.namespace))
                    .map_err(|e| net_err(&format!("create pod {}/{name}", w.namespace), e))?;
                cluster.pods.push(PodInfo {
                    name,
                    namespace: w.namespace.clone(),
                    workload: w.name.clone(),
                    service_account: w.service_account.clone(),
                    meshed: mode.meshed() && w.meshed,
                    ip: IpAddr::V4(pod.ip),
                    app: pod.addr(ports[0]),
                    endpoint_port: ports[0],
                    outbound: None,
                    // Not yet handed over: the behaviour tests that read a
                    // sidecar's metrics say so (not applicable).
                    admin: None,
                    netns: Some(pod.ns_path()),
                });
                pods.push((pod, ports.clone()));
            }
        }
        for (k, s) in spec.services.iter().enumerate() {
            let ip = net::service_ip(k).ok_or_else(|| DeployError::Start {
                component: "topology".into(),
                detail: format!(
                    "{} Services do not fit in {}/16",
                    spec.services.len(),
                    net::SERVICE_NET
                ),
            })?;
            cluster.services.push(ServiceInfo {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                cluster_ip: IpAddr::V4(ip),
                ports: s.ports.clone(),
                pods: selected(&cluster.pods, s),
            });
        }
        network
            .set_services(&nat(&cluster))
            .map_err(|e| net_err("program the Services' ClusterIPs", e))?;
        let control_pod = match mode.meshed() {
            true => Some(
                network
                    .add_pod("control")
                    .map_err(|e| net_err("create the control plane's pod", e))?,
            ),
            false => None,
        };
        // From here on the cluster owns the network: whatever fails, its
        // namespaces go with it.
        cluster.on_teardown(move || drop(network));

        for (p, _) in self.start_echo_servers(&cluster, &pods).await? {
            cluster.keep(p);
        }
        let Some(control_pod) = control_pod else {
            return Ok(cluster);
        };
        let cp = self
            .start_cluster_control(spec, &cluster, &control_pod)
            .await?;
        for (info, (pod, _)) in cluster.pods.clone().iter().zip(&pods) {
            if !info.meshed {
                continue;
            }
            let id = super::identity(&info.namespace, &info.service_account);
            let opts = sidecar::Options {
                discovery: Some(&cp),
                identity: Some(&id),
                inbound_plaintext: false,
                disable: mode.disabled().map(|f| f.as_str()),
            };
            let (p, ports) = sidecar::start(&self.bins, &self.pids_file, pod, opts).await?;
            cluster.keep(p);
            sidecar::intercept(&self.bins, pod, &ports)?;
        }
        cluster.set_control(cp);
        ready(&cluster).await?;
        Ok(cluster)
    }
}

impl Netns {
    /// One echo server per listen port of every pod, each answering
    /// `/healthz` from inside its pod.
    async fn start_echo_servers(
        &self,
        cluster: &Cluster,
        pods: &[(Pod, Vec<u16>)],
    ) -> Result<Vec<(Proc, SocketAddr)>, DeployError> {
        let mut started = Vec::new();
        for (info, (pod, ports)) in cluster.pods.iter().zip(pods) {
            for &port in ports {
                let mut cmd = Command::new(&self.bins.loadgen);
                cmd.args(["serve", "--echo", "--threads", "1", "--listen"])
                    .arg(format!("0.0.0.0:{port}"))
                    .args(["--name", &info.workload])
                    .args(["--namespace", &info.namespace])
                    .args(["--pod", &info.name]);
                let name = format!("echo {}/{}:{port}", info.namespace, info.name);
                let p = Proc::spawn_in(&name, cmd, &self.pids_file, Some(&pod.ns_path()))?;
                started.push((p, pod.addr(port), pod.ns_path()));
            }
        }
        let mut ready = Vec::new();
        for (mut p, target, ns) in started {
            addr(&mut p, "listening on ").await?;
            let answered = enter::run_in(&ns, 1, move || async move {
                probe::until_ok(target, None, "/healthz", Protocol::Http1, READY_PATIENCE).await
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = answered {
                return Err(ready_error(&mut p, e));
            }
            ready.push((p, target));
        }
        Ok(ready)
    }

    /// mesh-control in its own pod, certifying every meshed workload's
    /// identity, with the topology and the test's manifests in place.
    async fn start_cluster_control(
        &mut self,
        spec: &ClusterSpec,
        cluster: &Cluster,
        pod: &Pod,
    ) -> Result<ControlPlane, DeployError> {
        let dir = self.cell_dir("cluster")?;
        let mut ids: Vec<String> = cluster
            .pods
            .iter()
            .filter(|p| p.meshed)
            .map(|p| super::identity(&p.namespace, &p.service_account))
            .collect();
        ids.sort();
        ids.dedup();
        let topology = yaml::render(
            &spec.namespaces,
            &cluster.services,
            &cluster.pods,
            Interception::Transparent,
        );
        let mut initial: Vec<(&str, &str)> = spec
            .manifests
            .iter()
            .map(|(n, y)| (n.as_str(), y.as_str()))
            .collect();
        initial.push((TOPOLOGY_FILE, &topology));
        ControlPlane::start_for(
            &self.bins.mesh_control,
            &dir,
            &self.pids_file,
            READY_PATIENCE,
            ControlOptions {
                listen: pod.addr(CONTROL_PORT),
                // Not used by start_for: the topology carries every ClusterIP.
                cluster_ip: "",
                netns: Some(&pod.ns_path()),
                proxy_uid: Some(PROXY_UID),
            },
            &ids,
            &initial,
        )
        .await
    }
}

/// The ports a workload's pods listen on: each target port of the Services
/// that select it, in the order the Services list them; [`APP_PORT`] when
/// none does (a client still answers, as every pod does on `local`).
fn listen_ports(spec: &ClusterSpec, w: &WorkloadSpec) -> Vec<u16> {
    let mut ports = Vec::new();
    for s in spec
        .services
        .iter()
        .filter(|s| s.namespace == w.namespace && s.selects.contains(&w.name))
    {
        for p in &s.ports {
            if !ports.contains(&p.target_port) {
                ports.push(p.target_port);
            }
        }
    }
    if ports.is_empty() {
        ports.push(APP_PORT);
    }
    ports
}

/// Indexes of the pods Service `s` selects.
fn selected(pods: &[PodInfo], s: &super::ServiceSpec) -> Vec<usize> {
    pods.iter()
        .enumerate()
        .filter(|(_, p)| p.namespace == s.namespace && s.selects.contains(&p.workload))
        .map(|(i, _)| i)
        .collect()
}

/// kube-proxy's view of the cluster: every Service port to each selected
/// pod's target port (all of them ready once deployed).
fn nat(cluster: &Cluster) -> Vec<ServiceNat> {
    let mut rules = Vec::new();
    for s in &cluster.services {
        let IpAddr::V4(vip) = s.cluster_ip else {
            continue;
        };
        for p in &s.ports {
            rules.push(ServiceNat {
                vip,
                port: p.port,
                endpoints: s
                    .pods
                    .iter()
                    .map(|&i| SocketAddr::new(cluster.pods[i].ip, p.target_port))
                    .collect(),
            });
        }
    }
    rules
}

/// Every meshed pod reaches every Service-backing pod's address through its
/// sidecar (so its identity is certified and the control plane serves the
/// topology), within [`READY_PATIENCE`]. Other pods are no endpoint the
/// control plane knows, so a sidecar reaches them in plaintext, which theirs
/// may refuse (as on `local`).
async fn ready(cluster: &Cluster) -> Result<(), DeployError> {
    let targets: Vec<(String, SocketAddr)> = cluster
        .pods
        .iter()
        .enumerate()
        .filter(|(i, _)| cluster.services.iter().any(|s| s.pods.contains(i)))
        .map(|(_, p)| (p.name.clone(), SocketAddr::new(p.ip, p.endpoint_port)))
        .collect();
    for src in cluster.pods.iter().filter(|p| p.meshed) {
        let targets = targets.clone();
        let ns = src.netns.clone().expect("every netns pod has a namespace");
        let reached = enter::run_in(&ns, 1, move || async move {
            for (name, target) in targets {
                // A 403 from the destination's authorization policy counts.
                super::ops::until_reached(target, &target.to_string(), READY_PATIENCE)
                    .await
                    .map_err(|e| {
                        format!("GET /healthz to pod {name} ({target}) through it: {e}")
                    })?;
            }
            Ok::<(), String>(())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(detail) = reached {
            return Err(DeployError::Ready {
                component: format!("sidecar of {}/{}", src.namespace, src.name),
                detail: format!(
                    "{detail}\n  control stderr tail:\n{}",
                    cluster.control_log()
                ),
            });
        }
    }
    Ok(())
}

fn net_err(what: &str, e: net::NetError) -> DeployError {
    DeployError::Start {
        component: "netns".into(),
        detail: format!("{what}: {e}"),
    }
}
