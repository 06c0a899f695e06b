//! The netns substrate: a cluster network on one machine. Every pod is a
//! network namespace on a per-run node bridge (see [`net`]); Services have
//! virtual IPs; meshed pods get `weft init`'s iptables rules and a sidecar
//! that reads the original destination, so the load generator (the app)
//! just sends to the Service VIP and never knows the mesh is there.
//!
//! ```text
//!  client-N pod                          node (bridge, Service DNAT)          server-i pods
//!  loadgen ──> 198.19.0.1:80 ─────────────────── DNAT ─────────────────────> :8080 app   baseline
//!  loadgen ─iptables─> outbound ══ mTLS to pod IP:8080 ═══ iptables ─> inbound ─> :8080   weft
//!              (sidecar ports are ephemeral; `weft init` is told them)
//!              (uid 2102 proxy, resolves the VIP through mesh-control)
//!  weft-plaintext / -client-only / -server-only: the same sidecars without
//!  identity; unknown to Destination, traffic keeps its original destination
//!  (the VIP), so the node's DNAT balances it as in `baseline`.
//!  nginx | haproxy: in the client pod on 127.0.0.1:8000, upstreams the pod IPs
//!  nginx-mtls | haproxy-mtls: the outbound peer there, TLS with a client
//!  certificate to an inbound peer in each server pod on <pod IP>:8443,
//!  which forwards to its pod's :8080
//!  control pod: mesh-control on <pod IP>:8086, manifests written by bench
//! ```
//!
//! Server pods (and the control pod) live for a scenario; each deployed
//! variant gets a fresh client pod, and the server pods' interception rules
//! are installed for meshed variants and removed (`weft init --cleanup`)
//! at teardown. Load and probes run inside the client pod ([`enter`]).

mod cluster;
pub mod net;
pub mod sidecar;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use super::cluster::{Cluster, ClusterSpec, MeshMode};
use super::control::{ControlOptions, ControlPlane, CLIENT_ID, SERVER_ID};
use super::enter;
use super::manifests;
use super::peers_mtls::{self, Hop, Side};
use super::probe;
use super::process::Proc;
use super::shared::{
    chain_failure, control_of, keep, no_servers, server_name,
    server_components, Workspace, READY_PATIENCE, STOP_GRACE,
};
use super::{
    Component, DeployError, Deployment, LoadCell, MeasureError, Role, ScenarioTopology, Substrate,
    Target,
};
use crate::bins::Binaries;
use crate::suite::{Protocol, Variant};
use net::{Network, Pod, RunId};

/// The uid sidecars run as: `weft init` exempts its traffic from
/// interception (Linkerd's proxy uses 2102 as well).
pub const PROXY_UID: u32 = 2102;
/// The port every target server replica listens on in its pod.
pub const APP_PORT: u16 = 8080;
/// The Service's virtual IP (the other half of 198.18.0.0/15 from pods).
pub const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// mesh-control's gRPC port in the control pod.
pub const CONTROL_PORT: u16 = 8086;
/// Where a peer proxy listens inside the client pod.
const PEER_PORT: u16 = 8000;
/// Where a peer chain's inbound peer listens in its server pod (TLS).
const PEER_TLS_PORT: u16 = 8443;

/// Pods in network namespaces on one node.
pub struct Netns {
    ws: Workspace,
    net: Network,
    /// The scenario's target server replicas and their pods.
    servers: Vec<(Proc, Pod)>,
    control: Option<Result<(ControlPlane, Pod), DeployError>>,
    /// The deployed variant's pod and rules (one at a time).
    active: Option<Cell>,
    /// The scenario's `proxy_args`, given to every sidecar this deploys.
    proxy_args: Vec<String>,
}

/// One deployed variant's own pod and what to undo at teardown.
struct Cell {
    client: Pod,
    /// Pods where this variant installed interception rules.
    intercepted: Vec<Pod>,
    /// Each sidecar's admin listener by its pod's namespace name, as
    /// reached from inside the pod (loopback).
    admins: BTreeMap<String, SocketAddr>,
}

impl Netns {
    /// Sweep what dead runs left, then create this run's node namespace.
    /// `work` is the run's private temp dir.
    pub fn new(bins: Binaries, work: &Path) -> Result<Netns, DeployError> {
        net::require_root().map_err(|reason| DeployError::Start {
            component: "netns".into(),
            detail: reason,
        })?;
        let (removed, errors) = net::sweep();
        if !removed.is_empty() {
            eprintln!(
                "warning: removed {} network namespace(s) left over by an earlier bench run: {}",
                removed.len(),
                removed.join(", ")
            );
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(net_err("remove an earlier run's namespaces", e));
        }
        let net = Network::create(RunId::current()).map_err(|e| net_err("create the node", e))?;
        Ok(Netns {
            ws: Workspace::new(bins, work),
            net,
            servers: Vec::new(),
            control: None,
            active: None,
            proxy_args: Vec::new(),
        })
    }

    /// The node namespace's name.
    pub fn node(&self) -> &str {
        self.net.node()
    }

    /// The scenario's server pods, replica 0 first.
    pub fn server_pods(&self) -> Vec<Pod> {
        self.servers.iter().map(|(_, p)| p.clone()).collect()
    }

    /// Add a pod with nothing in it (for callers that bring their own app,
    /// such as an unmeshed client in tests).
    pub fn add_pod(&mut self, name: &str) -> Result<Pod, DeployError> {
        self.net
            .add_pod(name)
            .map_err(|e| net_err(&format!("create pod {name}"), e))
    }

    /// The admin listener (`/metrics`, `/ready`) of the deployed variant's
    /// sidecar in the pod whose network namespace is `ns`, reachable from
    /// inside that pod.
    pub fn sidecar_admin(&self, ns: &str) -> Option<SocketAddr> {
        self.active.as_ref()?.admins.get(ns).copied()
    }

    /// The scenario's control plane manifests directory, when one runs.
    pub fn manifests_dir(&self) -> Option<&Path> {
        match &self.control {
            Some(Ok((cp, _))) => Some(cp.manifests_dir()),
            _ => None,
        }
    }

    fn control_plane(&self) -> Result<&ControlPlane, DeployError> {
        control_of(&self.control).map(|(cp, _)| cp)
    }

    async fn start_control(&mut self) -> Result<(ControlPlane, Pod), DeployError> {
        let dir = self.ws.dir("control")?;
        let pod = self.add_pod("control")?;
        let vip = SERVICE_VIP.to_string();
        let cp = ControlPlane::start(
            &self.ws.bins.mesh_control,
            &dir,
            &self.ws.pids_file,
            READY_PATIENCE,
            ControlOptions {
                listen: pod.addr(CONTROL_PORT),
                cluster_ip: &vip,
                netns: Some(&pod.ns_path()),
                proxy_uid: Some(PROXY_UID),
                cert_lifetime: None,
            },
        )
        .await?;
        let endpoints: Vec<SocketAddr> =
            self.servers.iter().map(|(_, p)| p.addr(APP_PORT)).collect();
        cp.publish_endpoints(&endpoints)?;
        Ok((cp, pod))
    }

    /// A peer proxy in the client pod on 127.0.0.1:[`PEER_PORT`], balancing
    /// over the server pods.
    async fn peer(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
        client: &Pod,
    ) -> Result<(Proc, SocketAddr), DeployError> {
        let upstreams: Vec<SocketAddr> =
            self.servers.iter().map(|(_, p)| p.addr(APP_PORT)).collect();
        let listen = SocketAddr::from(([127, 0, 0, 1], PEER_PORT));
        let name = variant.as_str();
        let dir = self.ws.dir(name)?;
        let cmd = self
            .ws
            .peers
            .command(variant, &dir, listen, &upstreams, topo.protocol)?;
        let p = self.start_in_pod(name, cmd, client, listen, &dir).await?;
        Ok((p, listen))
    }

    /// `nginx-mtls` / `haproxy-mtls`: an inbound peer in each server pod on
    /// `<pod IP>:`[`PEER_TLS_PORT`] (TLS in, client certificate required),
    /// then the outbound peer in the client pod on 127.0.0.1:[`PEER_PORT`]
    /// balancing over them. Returns the outbound's address.
    async fn peer_chain(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
        client: &Pod,
        components: &mut Vec<Component>,
        procs: &mut Vec<Proc>,
    ) -> Result<SocketAddr, DeployError> {
        let pki = self.ws.chain_pki()?;
        let peers = self.ws.peers.clone();
        let servers = self.server_pods();
        let mut inbounds = Vec::new();
        for (i, pod) in servers.iter().enumerate() {
            let name = Side::Inbound.component(variant, (servers.len() > 1).then_some(i));
            let listen = pod.addr(PEER_TLS_PORT);
            let dir = self.ws.dir(&name)?;
            let app = [pod.addr(APP_PORT)];
            let hop = Hop { side: Side::Inbound, listen, upstreams: &app };
            let cmd = peers_mtls::command(&peers, variant, &pki, &dir, hop, topo.protocol)?;
            let p = self.start_in_pod(&name, cmd, pod, listen, &dir).await?;
            keep(components, procs, p, Role::Proxy);
            inbounds.push(listen);
        }
        let name = Side::Outbound.component(variant, None);
        let listen = SocketAddr::from(([127, 0, 0, 1], PEER_PORT));
        let dir = self.ws.dir(&name)?;
        let hop = Hop { side: Side::Outbound, listen, upstreams: &inbounds };
        let cmd = peers_mtls::command(&peers, variant, &pki, &dir, hop, topo.protocol)?;
        let p = self.start_in_pod(&name, cmd, client, listen, &dir).await?;
        keep(components, procs, p, Role::Proxy);
        let wire: Vec<String> = inbounds.iter().map(ToString::to_string).collect();
        tracing::info!(variant = %variant, inter_proxy = %wire.join(","), "mTLS between the proxies");
        Ok(listen)
    }

    /// Run a peer's `cmd` in `pod` and wait until it accepts connections
    /// on `listen` there (its `dir/error.log` in the error if it does not).
    async fn start_in_pod(
        &mut self,
        name: &str,
        cmd: std::process::Command,
        pod: &Pod,
        listen: SocketAddr,
        dir: &Path,
    ) -> Result<Proc, DeployError> {
        let mut p = self.ws.spawn(name, cmd, Some(&pod.ns_path()))?;
        let waited = enter::run_in(&pod.ns_path(), 1, move || async move {
            let deadline = tokio::time::Instant::now() + READY_PATIENCE;
            while tokio::time::Instant::now() < deadline {
                if tokio::net::TcpStream::connect(listen).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            false
        })
        .await;
        if !matches!(waited, Ok(true)) {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(p.failure(&format!(
                "not listening on {listen} in pod {} after {READY_PATIENCE:?}; error.log: {}",
                pod.name,
                log.trim()
            )));
        }
        Ok(p)
    }

    /// Deploy `variant` into `cell` (the client pod is already there).
    async fn deploy_into(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
        cell: &mut Cell,
        components: &mut Vec<Component>,
        procs: &mut Vec<Proc>,
    ) -> Result<(SocketAddr, Option<String>), DeployError> {
        let vip = SocketAddr::from((SERVICE_VIP, manifests::SERVICE_PORT));
        let host = Some(manifests::AUTHORITY.to_string());
        let servers = self.server_pods();
        // (server sidecars meshed?, server plaintext allowed, client sidecar meshed?)
        let (server_side, client_side) = match variant {
            Variant::Baseline => (None, None),
            Variant::Weft => (Some((Some(SERVER_ID), false)), Some(Some(CLIENT_ID))),
            Variant::WeftPlaintext => (Some((None, true)), Some(None)),
            Variant::WeftClientOnly => (None, Some(None)),
            Variant::WeftServerOnly => (Some((None, true)), None),
            Variant::Linkerd | Variant::Istio => unreachable!("refused by Peers::check"),
            Variant::Nginx | Variant::Haproxy => {
                let client = cell.client.clone();
                let (p, listen) = self.peer(variant, topo, &client).await?;
                keep(components, procs, p, Role::Proxy);
                return Ok((listen, None));
            }
            Variant::NginxMtls | Variant::HaproxyMtls => {
                let client = cell.client.clone();
                let listen = self.peer_chain(variant, topo, &client, components, procs).await?;
                return Ok((listen, None));
            }
        };
        if let Some((identity, plaintext)) = server_side {
            for pod in &servers {
                self.mesh_pod(pod, identity, plaintext, cell, components, procs)
                    .await?;
            }
        }
        if let Some(identity) = client_side {
            let client = cell.client.clone();
            // A plaintext-only sidecar without a control plane must name its
            // permissive inbound default (mesh-proxy refuses to start with
            // the strict one, which would refuse every client).
            self.mesh_pod(&client, identity, identity.is_none(), cell, components, procs)
                .await?;
        }
        if variant == Variant::Weft {
            components.push(Component {
                name: "control".into(),
                role: Role::Control,
                pid: self.control_plane()?.pid(),
            });
        }
        Ok((vip, host))
    }

    /// A sidecar in `pod`, then the rules that redirect the pod's TCP to
    /// the ports it announced (no connection is redirected to a port
    /// nothing listens on; no request is in flight between variants).
    async fn mesh_pod(
        &self,
        pod: &Pod,
        identity: Option<&'static str>,
        inbound_plaintext: bool,
        cell: &mut Cell,
        components: &mut Vec<Component>,
        procs: &mut Vec<Proc>,
    ) -> Result<(), DeployError> {
        let discovery = match identity {
            Some(_) => Some(self.control_plane()?),
            None => None,
        };
        let opts = sidecar::Options {
            discovery,
            identity,
            inbound_plaintext,
            disable: None,
            extra_args: &self.proxy_args,
        };
        let (p, ports) = sidecar::start(&self.ws.bins, &self.ws.pids_file, pod, opts).await?;
        keep(components, procs, p, Role::Proxy);
        cell.intercepted.push(pod.clone());
        sidecar::intercept(&self.ws.bins, pod, &ports)?;
        cell.admins.insert(pod.ns.clone(), ports.admin_addr());
        Ok(())
    }

    /// A meshed server pod must refuse plaintext, or the `weft` cell would
    /// not be measuring mTLS: ask from the node, which nothing intercepts.
    async fn check_strict(&self, variant: Variant) -> Result<(), DeployError> {
        for pod in self.server_pods() {
            let target = pod.addr(APP_PORT);
            let node = net::ns_path(self.net.node());
            let got = enter::run_in(&node, 1, move || async move {
                probe::get(target, None, "/healthz", Protocol::Http1).await
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            if got != Ok(403) {
                return Err(DeployError::Ready {
                    component: format!("proxy-{}", pod.name),
                    detail: format!(
                        "a plaintext GET /healthz from the node to the meshed server pod {target} must be refused with 403, got {got:?}: the {variant} cell would not measure mTLS"
                    ),
                });
            }
        }
        Ok(())
    }

    fn end_cell(&mut self, cell: Cell) {
        for pod in &cell.intercepted {
            if pod.name != cell.client.name {
                sidecar::release(&self.ws.bins, pod);
            }
        }
        if let Err(e) = self.net.remove_pod(&cell.client.name) {
            eprintln!("bench: {e}");
        }
    }
}

impl Substrate for Netns {
    fn name(&self) -> &'static str {
        "netns"
    }

    async fn start_scenario(&mut self, topo: &ScenarioTopology) -> Result<(), DeployError> {
        self.end_scenario().await;
        let mut endpoints = Vec::new();
        for i in 0..topo.replicas {
            let pod = self.add_pod(&server_name(topo, i))?;
            let listen = format!("0.0.0.0:{APP_PORT}");
            let (p, target) = self
                .ws
                .start_server(topo, i, &listen, Some(&pod.ns_path()), Some(pod.addr(APP_PORT)))
                .await?;
            endpoints.push(target);
            self.servers.push((p, pod));
        }
        self.net
            .set_service(SERVICE_VIP, manifests::SERVICE_PORT, &endpoints)
            .map_err(|e| net_err("program the Service VIP", e))?;
        if topo.control_plane {
            self.control = Some(self.start_control().await);
        }
        Ok(())
    }

    async fn deploy(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
    ) -> Result<Deployment, DeployError> {
        self.ws.available(variant)?;
        if self.servers.is_empty() {
            return Err(no_servers());
        }
        self.proxy_args.clone_from(&topo.proxy_args);
        let n = self.ws.number();
        let client = self.add_pod(&format!("client-{n}"))?;
        let mut cell = Cell {
            client,
            intercepted: Vec::new(),
            admins: BTreeMap::new(),
        };
        let mut components = server_components(self.servers.iter().map(|(p, _)| p));
        let mut procs = Vec::new();
        let deployed = self
            .deploy_into(variant, topo, &mut cell, &mut components, &mut procs)
            .await;
        let (target, host) = match deployed {
            Ok(t) => t,
            Err(e) => {
                drop(procs);
                self.end_cell(cell);
                return Err(e);
            }
        };
        // Ready means a real request from the client pod through the whole chain succeeds.
        let ready = probe::until_ok_from(
            Some(&cell.client.ns_path()),
            target,
            host.clone(),
            "/healthz",
            topo.protocol,
            READY_PATIENCE,
        )
        .await;
        let checked = match ready {
            Err(e) => Err(chain_failure(
                variant,
                format!(
                    "GET /healthz from pod {} through the {variant} chain: {e}",
                    cell.client.name
                ),
                &mut procs,
            )),
            Ok(()) if variant == Variant::Weft => self.check_strict(variant).await,
            Ok(()) => Ok(()),
        };
        if let Err(e) = checked {
            drop(procs);
            self.end_cell(cell);
            return Err(e);
        }
        let admins = cell
            .admins
            .iter()
            .map(|(ns, addr)| {
                let pod = std::iter::once(&cell.client)
                    .chain(self.servers.iter().map(|(_, p)| p))
                    .find(|p| &p.ns == ns);
                super::ProxyAdmin {
                    component: format!("proxy-{}", pod.map_or(ns.as_str(), |p| p.name.as_str())),
                    outbound: *ns == cell.client.ns,
                    addr: *addr,
                    netns: Some(net::ns_path(ns)),
                }
            })
            .collect();
        let deployment = Ok(Deployment {
            variant,
            target: Target::Addr(target),
            host,
            components,
            load_from: Some(cell.client.ns_path()),
            admins,
            procs,
        });
        self.active = Some(cell);
        deployment
    }

    async fn measure(&mut self, dep: &Deployment, cell: &LoadCell<'_>) -> Result<record::Run, MeasureError> {
        super::load::in_process(self.name(), dep, cell).await
    }

    async fn teardown(&mut self, deployment: Deployment) {
        deployment.stop().await;
        if let Some(cell) = self.active.take() {
            self.end_cell(cell);
        }
    }

    async fn end_scenario(&mut self) {
        // A deployment dropped mid-run (Ctrl-C) killed its processes; its pod goes here.
        if let Some(cell) = self.active.take() {
            self.end_cell(cell);
        }
        if let Some(Ok((cp, pod))) = self.control.take() {
            cp.stop(STOP_GRACE).await;
            let _ = self.net.remove_pod(&pod.name);
        }
        for (p, pod) in std::mem::take(&mut self.servers) {
            p.stop(STOP_GRACE).await;
            if let Err(e) = self.net.remove_pod(&pod.name) {
                eprintln!("bench: {e}");
            }
        }
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.ws.peers.versions()
    }

    async fn deploy_cluster(
        &mut self,
        spec: &ClusterSpec,
        mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        self.deploy_topology(spec, mode).await
    }
}

fn net_err(what: &str, e: net::NetError) -> DeployError {
    DeployError::Start {
        component: "netns".into(),
        detail: format!("{what}: {e}"),
    }
}

/// `bench clean`: remove every Weft namespace (and what runs in it) whose
/// run is over. Returns what was removed.
pub fn clean() -> Result<Vec<String>, String> {
    let names = net::list_ours();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "{} Weft network namespace(s) exist ({}); removing them needs root",
            names.len(),
            names.join(", ")
        ));
    }
    let (removed, errors) = net::sweep();
    match errors.into_iter().next() {
        Some(e) => Err(e.to_string()),
        None => Ok(removed),
    }
}
