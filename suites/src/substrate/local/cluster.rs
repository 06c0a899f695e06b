//! Conformance topologies on the local substrate: every pod is an echo
//! server on 127.0.0.1 and, when meshed, a sidecar in front of it; apps
//! address their sidecar's outbound listener explicitly.
//!
//! ```text
//!  pod P (meshed):   client ──> P's outbound ══mTLS══> Q's inbound (127.96.x.y:A) ──> Q's echo server (127.0.0.1:A)
//!                    Host: <svc>.<ns>.svc.cluster.local:<port> (or <pod IP>:<endpoint port>)
//!  pod P (baseline): client ──────────────────────────────────────────> Q's echo server
//! ```
//!
//! One mesh-control per cluster, with a fresh token per workload identity
//! and the topology's manifests ([`crate::substrate::cluster::yaml`]) plus the test's own.
//! ClusterIPs are written as data (`127.97.<service>.1`), never dialed.
//! A meshed pod has its own loopback address (`127.96.x.y`) where its
//! sidecar's inbound listener takes the app's port: the port the pod's
//! EndpointSlices list is the one the sidecar asks inbound policy for, as
//! a pod's target port is in a cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

use super::proxy::{start_proxy, Sidecar};
use super::Local;
use crate::substrate::cluster::{
    self, AppKind, Cluster, ClusterSpec, Interception, MeshMode, PodInfo, Role, ServiceInfo,
};
use crate::substrate::control::{ControlOptions, ControlPlane};
use crate::substrate::process::Proc;
use crate::substrate::shared::{addr, READY_PATIENCE};
use crate::substrate::{probe, DeployError};
use crate::suite::Protocol;

impl Local {
    /// [`crate::substrate::Substrate::deploy_cluster`] on this substrate.
    pub(super) async fn deploy_topology(
        &mut self,
        spec: &ClusterSpec,
        mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        spec.check()?;
        let mut cluster = Cluster::new("local", mode, Interception::Explicit);
        // Echo servers first: a sidecar needs its app's address.
        let mut apps = Vec::new();
        for w in &spec.workloads {
            for i in 0..w.replicas {
                let pod = format!("{}-{i}", w.name);
                let echo = |listen: &str| {
                    let mut cmd = Command::new(&self.ws.bins.loadgen);
                    cmd.args(["serve", "--listen", listen, "--echo", "--threads", "1"])
                        .args(["--name", &w.name, "--namespace", &w.namespace, "--pod", &pod]);
                    cmd
                };
                if w.app != AppKind::Echo {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .map_err(|source| DeployError::Io {
                            what: format!("bind the {:?} app of pod {pod}", w.app),
                            source,
                        })?;
                    let app = listener.local_addr().map_err(|source| DeployError::Io {
                        what: format!("the {:?} app of pod {pod}", w.app),
                        source,
                    })?;
                    let task = match w.app {
                        AppKind::WebSocket => {
                            tokio::spawn(cluster::apps::serve_websocket(listener, pod.clone()))
                        }
                        kind => tokio::spawn(cluster::apps::serve_tcp(
                            listener,
                            pod.clone(),
                            kind == AppKind::Banner,
                        )),
                    };
                    cluster.on_teardown(move || task.abort());
                    apps.push((w, pod, app));
                    continue;
                }
                let name = format!("echo {}/{pod}", w.namespace);
                let mut p = Proc::spawn(&name, echo("127.0.0.1:0"), &self.ws.pids_file)?;
                let app = addr(&mut p, "listening on ").await?;
                // A restarted app comes back where its sidecar forwards.
                let (again, pids) = (echo(&app.to_string()), self.ws.pids_file.clone());
                let (program, args) = (again.get_program().to_owned(), again.get_args().map(|a| a.to_owned()).collect::<Vec<_>>());
                cluster.set_app_restart(
                    &pod,
                    Box::new(move || {
                        let mut cmd = Command::new(&program);
                        cmd.args(&args);
                        Proc::spawn(&name, cmd, &pids)
                    }),
                );
                cluster.keep_pod(&pod, Role::App, p);
                apps.push((w, pod, app));
            }
        }
        for (_, _, app) in apps.iter().filter(|(w, _, _)| w.app.speaks_http()) {
            probe::until_ok(*app, None, "/healthz", Protocol::Http1, READY_PATIENCE)
                .await
                .map_err(|detail| DeployError::Ready {
                    component: format!("echo server {app}"),
                    detail,
                })?;
        }
        let meshed = |w: &cluster::WorkloadSpec| mode.meshed() && w.meshed;
        let control = match mode {
            MeshMode::Weft | MeshMode::WeftWithout(_) | MeshMode::WeftNoMtls => {
                let dir = self.ws.dir("cluster")?;
                let ids = spec.identities();
                // The topology's objects need the sidecars' ports, which they
                // get only once started: the test's own manifests go first,
                // the topology once every sidecar is listening.
                let initial = spec.manifest_files();
                Some(
                    ControlPlane::start_for(
                        &self.ws.bins.mesh_control,
                        &dir,
                        &self.ws.pids_file,
                        READY_PATIENCE,
                        ControlOptions { cert_lifetime: spec.mesh.cert_lifetime, ..ControlOptions::local() },
                        &ids,
                        &initial,
                    )
                    .await?,
                )
            }
            MeshMode::Baseline => None,
        };
        for (k, (w, pod, app)) in apps.into_iter().enumerate() {
            // A meshed pod has its own loopback address, where its sidecar
            // receives on the app's port: the port its EndpointSlices list
            // is the one the sidecar asks inbound policy for (`--app`'s).
            let pod_ip = match meshed(w) {
                true => Ipv4Addr::new(127, 96, (k / 250) as u8, (k % 250 + 1) as u8),
                false => Ipv4Addr::LOCALHOST,
            };
            // Opaque TCP (explicit): one listener per port of every Service
            // whose pods run a TCP app.
            let tcp_targets: Vec<(&str, &str, u16)> = match meshed(w) {
                true => spec
                    .services
                    .iter()
                    .filter(|s| {
                        spec.workloads.iter().any(|o| {
                            o.namespace == s.namespace
                                && s.selects.contains(&o.name)
                                && !o.app.speaks_http()
                        })
                    })
                    .flat_map(|s| s.ports.iter().map(move |p| (s.name.as_str(), s.namespace.as_str(), p.port)))
                    .collect(),
                false => Vec::new(),
            };
            let tcp_services: Vec<String> = tcp_targets
                .iter()
                .map(|(n, ns, p)| format!("{n}.{ns}.svc.{}:{p}", cluster::TRUST_DOMAIN))
                .collect();
            let (endpoint_port, outbound, admin) = if meshed(w) {
                let cp = control.as_ref().expect("a control plane when meshed");
                let id = cluster::identity(&w.namespace, &w.service_account);
                let name = format!("sidecar {}/{pod}", w.namespace);
                let disable = mode.disabled().map(|f| f.as_str());
                let sidecar = match !mode.mtls() {
                    // Discovery without identity: endpoints are reached in
                    // plaintext and the inbound side accepts plaintext.
                    true => Sidecar {
                        identity: None,
                        inbound_plaintext: true,
                        disable,
                        inbound_listen: Some(SocketAddr::new(pod_ip.into(), app.port())),
                        tcp_services: tcp_services.clone(),
                        ..Sidecar::meshed(&name, &id, Some(app))
                    },
                    // The app learns who called: tests can see the mesh's mTLS identity.
                    false => Sidecar {
                        forward_client_identity: true,
                        disable,
                        inbound_listen: Some(SocketAddr::new(pod_ip.into(), app.port())),
                        tcp_services,
                        ..Sidecar::meshed(&name, &id, Some(app))
                    },
                };
                let started =
                    match start_proxy(&self.ws.bins, &self.ws.pids_file, Some(cp), sidecar).await {
                        Ok(started) => started,
                        Err(e) => return Err(with_control_log(e, cp)),
                    };
                for ((svc, ns, port), listener) in tcp_targets.iter().zip(&started.tcp_services) {
                    cluster.set_tcp_listener(&pod, svc, ns, *port, *listener);
                }
                cluster.keep_pod(&pod, Role::Sidecar, started.proc);
                (
                    started.inbound.expect("inbound requested").port(),
                    Some(started.outbound),
                    Some(started.admin),
                )
            } else {
                (app.port(), None, None)
            };
            cluster.pods.push(PodInfo {
                name: pod,
                namespace: w.namespace.clone(),
                workload: w.name.clone(),
                service_account: w.service_account.clone(),
                meshed: meshed(w),
                ip: IpAddr::V4(pod_ip),
                app,
                endpoint_port,
                outbound,
                admin,
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
            cluster.set_control(cp);
            cluster
                .publish_topology(&spec.namespaces)
                .map_err(|source| DeployError::Io {
                    what: format!("write the topology ({})", cluster::TOPOLOGY_FILE),
                    source,
                })?;
            let not_http: Vec<String> = cluster
                .pods
                .iter()
                .filter(|p| {
                    spec.workloads.iter().any(|w| {
                        w.name == p.workload && w.namespace == p.namespace && !w.app.speaks_http()
                    })
                })
                .map(|p| p.name.clone())
                .collect();
            ready(&cluster, &not_http).await?;
        }
        Ok(cluster)
    }
}

/// Every meshed pod reaches every Service-backing pod's address through its
/// sidecar (so the control plane has served the topology), within
/// [`READY_PATIENCE`]. A refusal by the destination's authorization policy
/// (403 from its sidecar) counts: the path is there, the policy says no.
/// Pods whose app does not speak HTTP (`not_http`) are not probed.
async fn ready(cluster: &Cluster, not_http: &[String]) -> Result<(), DeployError> {
    // Only pods some Service selects are endpoints the control plane knows
    // (and so meshed destinations); another pod's address is unknown to it
    // and is reached in plaintext, which its sidecar may refuse.
    let endpoints: Vec<&PodInfo> = cluster
        .pods
        .iter()
        .enumerate()
        .filter(|(i, _)| cluster.services.iter().any(|s| s.pods.contains(i)))
        .map(|(_, p)| p)
        .filter(|p| !not_http.contains(&p.name))
        .collect();
    for src in cluster.pods.iter().filter(|p| p.meshed) {
        for dst in &endpoints {
            let outbound = src
                .outbound
                .expect("a meshed local pod has an outbound listener");
            let authority = SocketAddr::new(dst.ip, dst.endpoint_port).to_string();
            cluster::until_reached(outbound, &authority, READY_PATIENCE)
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
