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
//! Every pod's app listens on each target port of the Services that select
//! it ([`APP_PORT`] when none does): echo servers (one process group per
//! pod, handed over with [`Cluster::keep_pod`] and restartable), or a
//! WebSocket / raw TCP app served by `bench` from listeners bound inside the
//! pod. Sidecars hand over their admin address (reached from inside the
//! pod). The cluster owns its network: its namespaces (and whatever still
//! runs in them) go at teardown, when it is dropped, or through the
//! watchdog if `bench` dies.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use super::net::{self, Network, Pod, RunId, ServiceNat};
use super::{net_err, sidecar, Netns, APP_PORT, CONTROL_PORT, PROXY_UID};
use crate::substrate::cluster::{
    self, yaml, AppKind, Cluster, ClusterSpec, Interception, MeshMode, PodInfo, Role,
    ServiceInfo, WorkloadSpec, TOPOLOGY_FILE,
};
use crate::substrate::control::{ControlOptions, ControlPlane};
use crate::substrate::enter;
use crate::substrate::process::Proc;
use crate::substrate::shared::{addr, ready_error, READY_PATIENCE};
use crate::substrate::{probe, DeployError};
use crate::suite::Protocol;

impl Netns {
    /// [`crate::substrate::Substrate::deploy_cluster`] on this substrate.
    pub(super) async fn deploy_topology(
        &mut self,
        spec: &ClusterSpec,
        mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        spec.check()?;
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
                    // Set once its sidecar has announced it.
                    admin: None,
                    netns: Some(pod.ns_path()),
                });
                pods.push((pod, ports.clone(), w.app));
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

        self.start_apps(&mut cluster, &pods).await?;
        let Some(control_pod) = control_pod else {
            return Ok(cluster);
        };
        let cp = self
            .start_cluster_control(spec, &cluster, &control_pod)
            .await?;
        for (i, (pod, _, _)) in pods.iter().enumerate() {
            let info = &cluster.pods[i];
            if !info.meshed {
                continue;
            }
            let id = cluster::identity(&info.namespace, &info.service_account);
            let opts = match mode.mtls() {
                true => sidecar::Options {
                    discovery: Some(&cp),
                    identity: Some(&id),
                    inbound_plaintext: false,
                    disable: mode.disabled().map(|f| f.as_str()),
                    extra_args: &[],
                },
                // Discovery without identity: endpoints are reached in
                // plaintext and the inbound side accepts plaintext.
                false => sidecar::Options {
                    discovery: Some(&cp),
                    identity: None,
                    inbound_plaintext: true,
                    disable: mode.disabled().map(|f| f.as_str()),
                    extra_args: &[],
                },
            };
            let (p, ports) = sidecar::start(&self.ws.bins, &self.ws.pids_file, pod, opts).await?;
            let name = info.name.clone();
            cluster.pods[i].admin = Some(ports.admin_addr());
            cluster.keep_pod(&name, Role::Sidecar, p);
            sidecar::intercept(&self.ws.bins, pod, &ports)?;
        }
        cluster.set_control(cp);
        // The same objects the control plane started with, now also known
        // to the cluster, so terminating a pod can rewrite them.
        cluster
            .publish_topology(&spec.namespaces)
            .map_err(|source| DeployError::Io {
                what: format!("write the topology ({TOPOLOGY_FILE})"),
                source,
            })?;
        let not_http: Vec<usize> = pods
            .iter()
            .enumerate()
            .filter(|(_, (_, _, app))| !app.speaks_http())
            .map(|(i, _)| i)
            .collect();
        ready(&cluster, &not_http).await?;
        Ok(cluster)
    }
}

impl Netns {
    /// Every pod's app, listening on each of its ports inside the pod:
    /// echo servers (one process group per pod, restartable), or the
    /// WebSocket / raw TCP apps served by `bench` from listeners bound in
    /// the pod's namespace. Returns once every HTTP app answers `/healthz`.
    async fn start_apps(
        &self,
        cluster: &mut Cluster,
        pods: &[(Pod, Vec<u16>, AppKind)],
    ) -> Result<(), DeployError> {
        let mut echoes = Vec::new();
        for (i, (pod, ports, kind)) in pods.iter().enumerate() {
            let info = &cluster.pods[i];
            if *kind != AppKind::Echo {
                let task = serve_app(*kind, pod, ports, &info.name).await?;
                cluster.on_teardown(move || task.abort());
                continue;
            }
            let echo = EchoApp {
                loadgen: self.ws.bins.loadgen.clone(),
                pids_file: self.ws.pids_file.clone(),
                ns: pod.ns_path(),
                name: format!("echo {}/{}", info.namespace, info.name),
                workload: info.workload.clone(),
                namespace: info.namespace.clone(),
                pod: info.name.clone(),
                ports: ports.clone(),
            };
            echoes.push((i, echo.start()?, echo));
        }
        for (i, mut p, echo) in echoes {
            addr(&mut p, "listening on ").await?;
            let targets: Vec<SocketAddr> =
                pods[i].1.iter().map(|&port| pods[i].0.addr(port)).collect();
            let answered = enter::run_in(&echo.ns, 1, move || async move {
                for target in targets {
                    probe::until_ok(target, None, "/healthz", Protocol::Http1, READY_PATIENCE)
                        .await?;
                }
                Ok(())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = answered {
                return Err(ready_error(&mut p, e));
            }
            let pod = echo.pod.clone();
            cluster.keep_pod(&pod, Role::App, p);
            cluster.set_app_restart(&pod, Box::new(move || echo.start()));
        }
        Ok(())
    }

    /// mesh-control in its own pod, certifying every meshed workload's
    /// identity, with the topology and the test's manifests in place.
    async fn start_cluster_control(
        &mut self,
        spec: &ClusterSpec,
        cluster: &Cluster,
        pod: &Pod,
    ) -> Result<ControlPlane, DeployError> {
        let dir = self.ws.dir("cluster")?;
        // Called only when the mode is meshed: the meshed workloads' pods
        // are the meshed pods.
        let ids = spec.identities();
        let topology = yaml::render(
            &spec.namespaces,
            &cluster.services,
            &cluster.pods,
            Interception::Transparent,
        );
        let mut initial = spec.manifest_files();
        initial.push((TOPOLOGY_FILE, &topology));
        ControlPlane::start_for(
            &self.ws.bins.mesh_control,
            &dir,
            &self.ws.pids_file,
            READY_PATIENCE,
            ControlOptions {
                listen: pod.addr(CONTROL_PORT),
                // Not used by start_for: the topology carries every ClusterIP.
                cluster_ip: "",
                netns: Some(&pod.ns_path()),
                proxy_uid: Some(PROXY_UID),
                cert_lifetime: spec.mesh.cert_lifetime,
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
fn selected(pods: &[PodInfo], s: &cluster::ServiceSpec) -> Vec<usize> {
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
/// sidecar (so it is certified and the control plane serves the topology),
/// within [`READY_PATIENCE`]; a 403 from the destination's authorization
/// policy counts (the path is there, the policy says no). Other pods are no
/// endpoint the control plane knows, so a sidecar reaches them in
/// plaintext, which theirs may refuse (as on `local`); pods whose app does
/// not speak HTTP (`not_http`, indexes) are not probed.
async fn ready(cluster: &Cluster, not_http: &[usize]) -> Result<(), DeployError> {
    let targets: Vec<(String, SocketAddr)> = cluster
        .pods
        .iter()
        .enumerate()
        .filter(|(i, _)| cluster.services.iter().any(|s| s.pods.contains(i)))
        .filter(|(i, _)| !not_http.contains(i))
        .map(|(_, p)| (p.name.clone(), SocketAddr::new(p.ip, p.endpoint_port)))
        .collect();
    for src in cluster.pods.iter().filter(|p| p.meshed) {
        let targets = targets.clone();
        let ns = src.netns.clone().expect("every netns pod has a namespace");
        let reached = enter::run_in(&ns, 1, move || async move {
            for (name, target) in targets {
                // A 403 from the destination's authorization policy counts.
                cluster::until_reached(target, &target.to_string(), READY_PATIENCE)
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

/// A pod's echo servers, one per port, as one process group (the pod's app
/// container): started at deployment and again after a test kills it.
struct EchoApp {
    loadgen: PathBuf,
    pids_file: PathBuf,
    ns: PathBuf,
    /// The component name, `echo <ns>/<pod>`.
    name: String,
    workload: String,
    namespace: String,
    pod: String,
    ports: Vec<u16>,
}

impl EchoApp {
    /// Spawn it inside the pod: `loadgen serve --echo` itself for one port,
    /// else a shell running one per port (they share its process group,
    /// so stopping the app stops them all).
    fn start(&self) -> Result<Proc, DeployError> {
        let serve = |port: u16| {
            format!("\"$0\" serve --echo --threads 1 --listen 0.0.0.0:{port} --name \"$1\" --namespace \"$2\" --pod \"$3\"")
        };
        let script = match self.ports.as_slice() {
            [one] => format!("exec {}", serve(*one)),
            many => {
                let each: Vec<String> = many.iter().map(|&p| format!("{} &", serve(p))).collect();
                format!("{} wait", each.join(" "))
            }
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg(&self.loadgen).args([
            &self.workload,
            &self.namespace,
            &self.pod,
        ]);
        Proc::spawn_in(&self.name, cmd, &self.pids_file, Some(&self.ns))
    }
}

/// Serve a WebSocket or raw TCP app (see [`cluster::apps`]) as pod `name` on
/// each of `ports`, from listeners bound inside `pod`'s namespace (a socket
/// stays in the namespace it was made in); the task serves until aborted.
async fn serve_app(
    kind: AppKind,
    pod: &Pod,
    ports: &[u16],
    name: &str,
) -> Result<tokio::task::JoinHandle<()>, DeployError> {
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([0, 0, 0, 0], p)))
        .collect();
    let bound = enter::run_in(&pod.ns_path(), 1, move || async move {
        addrs
            .iter()
            .map(|a| std::net::TcpListener::bind(a).map_err(|e| format!("bind {a}: {e}")))
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let io = |detail: String| DeployError::Start {
        component: format!("{kind:?} app of pod {name}"),
        detail,
    };
    let mut listeners = Vec::new();
    for l in bound.map_err(io)? {
        l.set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
            .map(|l| listeners.push(l))
            .map_err(|e| io(e.to_string()))?;
    }
    let name = name.to_string();
    Ok(tokio::spawn(async move {
        let mut serving = tokio::task::JoinSet::new();
        for l in listeners {
            match kind {
                AppKind::WebSocket => serving.spawn(cluster::apps::serve_websocket(l, name.clone())),
                _ => serving.spawn(cluster::apps::serve_tcp(
                    l,
                    name.clone(),
                    kind == AppKind::Banner,
                )),
            };
        }
        while serving.join_next().await.is_some() {}
    }))
}

