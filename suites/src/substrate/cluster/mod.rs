//! The conformance capability of a substrate: deploy a small cluster
//! (namespaces, Services, workloads of echo servers with or without
//! sidecars, extra manifests such as HTTPRoutes) and reach it "from pod X".
//!
//! ```text
//!  ClusterSpec ──Substrate::deploy_cluster(spec, mode)──> Cluster
//!                                                             │ dial(from, to) -> Dial { connect, authority, netns }
//!                                                             │ send(from, to, Req) -> Reply (HTTP/1, h2c, gRPC)
//!                                                             │ apply(file, yaml) / remove(file): live manifest edits
//!                                                             └ teardown(): nothing it started survives
//! ```
//!
//! A substrate only has to *build* a [`Cluster`] (the contract is
//! [`Substrate::deploy_cluster`](super::Substrate::deploy_cluster)): fill in
//! its pods and Services and say how apps reach them ([`Interception`]);
//! dialing, sending and manifest edits are shared. `local` implements it
//! with explicit proxies (`local/cluster.rs`), `netns` with pods as network
//! namespaces, ClusterIPs and transparent interception (`netns/cluster.rs`).

pub mod apps;
mod ops;
pub mod send;
pub mod yaml;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::control::ControlPlane;
use super::process::Proc;
use super::DeployError;

pub use ops::{sum_samples as ops_sum, AppRestart, Capture, OpError, Role, TOPOLOGY_FILE};
pub use apps::AppKind;
pub(crate) use ops::until_reached;
pub use send::{Proto, Reply, Req, TcpSession, WsSession};

/// The trust domain of every workload identity.
pub const TRUST_DOMAIN: &str = super::control::TRUST_DOMAIN;

/// A namespace and its default inbound authorization, if set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub name: String,
    /// `weft.io/default-inbound-policy`, e.g. `all-authenticated`.
    pub default_inbound_policy: Option<String>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub port: u16,
    /// The pod port it forwards to (where the app listens in a cluster).
    pub target_port: u16,
    /// `appProtocol`, e.g. `http`, `grpc`.
    pub app_protocol: Option<String>,
}

/// A Service selecting the pods of some workloads of its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<PortSpec>,
    /// Workload names (same namespace) whose pods back it.
    pub selects: Vec<String>,
}

/// A Deployment: `replicas` pods running the echo server (`loadgen serve
/// --echo`), each meshed (with a sidecar and identity
/// `spiffe://cluster.local/ns/<ns>/sa/<service_account>`) or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadSpec {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub replicas: usize,
    /// Gets a sidecar when the mode is meshed (never in [`MeshMode::Baseline`]).
    pub meshed: bool,
    /// What each pod runs as its app (the echo server unless a test asks).
    pub app: AppKind,
}

/// What a test deploys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSpec {
    pub namespaces: Vec<NamespaceSpec>,
    pub services: Vec<ServiceSpec>,
    pub workloads: Vec<WorkloadSpec>,
    /// Extra manifests (HTTPRoute, GRPCRoute, AuthorizationPolicy, ...):
    /// (file name, YAML), in the control plane's directory before any
    /// sidecar starts.
    pub manifests: Vec<(String, String)>,
    /// What the test needs of the mesh (e.g. a short certificate lifetime).
    pub mesh: MeshOptions,
}

/// Mesh-wide settings a test needs of its deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshOptions {
    /// mesh-control's `--cert-lifetime` (default 24h).
    pub cert_lifetime: Option<Duration>,
}

impl ClusterSpec {
    /// [`ClusterSpec::validate`] as the substrates report it.
    pub fn check(&self) -> Result<(), DeployError> {
        self.validate().map_err(|problems| DeployError::Start {
            component: "topology".into(),
            detail: problems.join("; "),
        })
    }

    /// The identities mesh-control certifies: every meshed workload's
    /// `spiffe://cluster.local/ns/<ns>/sa/<service account>`, sorted, once each.
    pub fn identities(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .workloads
            .iter()
            .filter(|w| w.meshed)
            .map(|w| identity(&w.namespace, &w.service_account))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The test's own manifests as (file name, YAML).
    pub fn manifest_files(&self) -> Vec<(&str, &str)> {
        self.manifests
            .iter()
            .map(|(n, y)| (n.as_str(), y.as_str()))
            .collect()
    }

    /// Every problem at once: unknown namespaces, workloads a Service
    /// selects that do not exist, duplicate names, zero replicas.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let ns_known = |ns: &str| self.namespaces.iter().any(|n| n.name == ns);
        for w in &self.workloads {
            if !ns_known(&w.namespace) {
                problems.push(format!(
                    "workload {}: namespace {} is not declared",
                    w.name, w.namespace
                ));
            }
            if w.replicas == 0 {
                problems.push(format!("workload {}: replicas must be at least 1", w.name));
            }
            if self
                .workloads
                .iter()
                .filter(|o| o.name == w.name && o.namespace == w.namespace)
                .count()
                > 1
            {
                problems.push(format!(
                    "workload {}/{} is declared twice",
                    w.namespace, w.name
                ));
            }
        }
        for s in &self.services {
            if !ns_known(&s.namespace) {
                problems.push(format!(
                    "service {}: namespace {} is not declared",
                    s.name, s.namespace
                ));
            }
            for sel in &s.selects {
                if !self
                    .workloads
                    .iter()
                    .any(|w| &w.name == sel && w.namespace == s.namespace)
                {
                    problems.push(format!(
                        "service {}/{} selects workload {sel}, which is not declared in its namespace",
                        s.namespace, s.name
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// What sits between the apps: the mesh, the mesh with one feature
/// switched off, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshMode {
    /// Meshed workloads get a sidecar; mesh-control serves the manifests.
    Weft,
    /// As [`MeshMode::Weft`], every sidecar started with `--disable
    /// <feature>` (a testing-only switch): the tests of that feature must fail.
    WeftWithout(Feature),
    /// As [`MeshMode::Weft`], but sidecars have no identity: no
    /// certificates, plaintext between sidecars (the mTLS tests must fail).
    WeftNoMtls,
    /// No sidecars, no control plane: clients reach a Service's endpoints
    /// directly (what the routing tests must fail against).
    Baseline,
}

/// A mesh feature the proxy can switch off for testing (`mesh-proxy --disable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Routes,
    Authz,
    Retries,
    Timeouts,
}

impl Feature {
    /// The name `mesh-proxy --disable` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Routes => "routes",
            Feature::Authz => "authz",
            Feature::Retries => "retries",
            Feature::Timeouts => "timeouts",
        }
    }
}

impl MeshMode {
    /// The record's `variant`: `weft`, `weft-no-routes`, ..., `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            MeshMode::Weft => "weft",
            MeshMode::WeftWithout(Feature::Routes) => "weft-no-routes",
            MeshMode::WeftWithout(Feature::Authz) => "weft-no-authz",
            MeshMode::WeftWithout(Feature::Retries) => "weft-no-retries",
            MeshMode::WeftWithout(Feature::Timeouts) => "weft-no-timeouts",
            MeshMode::WeftNoMtls => "weft-no-mtls",
            MeshMode::Baseline => "baseline",
        }
    }

    /// Meshed workloads get sidecars and there is a control plane.
    pub fn meshed(self) -> bool {
        self != MeshMode::Baseline
    }

    /// Sidecars have workload identities and speak mTLS to each other.
    pub fn mtls(self) -> bool {
        self != MeshMode::WeftNoMtls
    }

    /// What the sidecars are told to switch off.
    pub fn disabled(self) -> Option<Feature> {
        match self {
            MeshMode::WeftWithout(f) => Some(f),
            _ => None,
        }
    }
}

/// How an app's connection finds the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interception {
    /// `local`: the app addresses its sidecar's outbound listener and names
    /// the target in `Host` / `:authority`; nothing intercepts a connection
    /// to a ClusterIP.
    Explicit,
    /// `netns` (and a cluster): the app dials the ClusterIP or pod IP from
    /// its own network namespace and the sidecar intercepts it.
    Transparent,
}

/// One pod of a deployed cluster.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub service_account: String,
    /// Has a sidecar.
    pub meshed: bool,
    /// The pod IP (`127.0.0.1` on `local`).
    pub ip: IpAddr,
    /// Where its echo server is reached by a direct, unmeshed connection.
    pub app: SocketAddr,
    /// The port its EndpointSlices list: on `local` the sidecar's inbound
    /// listener (or the app's when unmeshed), in a cluster the target port.
    pub endpoint_port: u16,
    /// The sidecar's outbound listener (explicit interception only).
    pub outbound: Option<SocketAddr>,
    /// The sidecar's admin listener (`/metrics`, `/ready`), reached from
    /// inside the pod (its `netns`); `None` without a sidecar.
    pub admin: Option<SocketAddr>,
    /// The pod's network namespace (a `/run/netns/NAME` path), if it has one.
    pub netns: Option<PathBuf>,
}

/// One Service of a deployed cluster.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    pub cluster_ip: IpAddr,
    pub ports: Vec<PortSpec>,
    /// Indexes into [`Cluster::pods`].
    pub pods: Vec<usize>,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum To {
    /// A Service port by name (`<name>.<ns>.svc.cluster.local:<port>`).
    Service {
        name: String,
        namespace: String,
        port: u16,
    },
    /// A Service port by ClusterIP.
    ClusterIp {
        name: String,
        namespace: String,
        port: u16,
    },
    /// A pod by its address (`<pod IP>:<endpoint port>`), bypassing Services.
    Pod { name: String },
}

impl To {
    pub fn service(name: &str, namespace: &str, port: u16) -> To {
        To::Service {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }
    pub fn cluster_ip(name: &str, namespace: &str, port: u16) -> To {
        To::ClusterIp {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }
    pub fn pod(name: &str) -> To {
        To::Pod { name: name.into() }
    }
}

impl std::fmt::Display for To {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            To::Service {
                name,
                namespace,
                port,
            } => write!(f, "{name}.{namespace}:{port}"),
            To::ClusterIp {
                name,
                namespace,
                port,
            } => write!(f, "ClusterIP of {name}.{namespace}:{port}"),
            To::Pod { name } => write!(f, "pod {name}"),
        }
    }
}

/// How to open a connection "from a pod" to a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    /// The address to connect to.
    pub connect: SocketAddr,
    /// `Host` / `:authority` to send (unless the request overrides it).
    pub authority: String,
    /// The network namespace to connect from; `None`: bench's own.
    pub netns: Option<PathBuf>,
    /// The request goes through the source pod's sidecar.
    pub via_sidecar: bool,
}

/// Why a request cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The substrate cannot express it (e.g. dialing a ClusterIP where
    /// nothing intercepts): the test is not applicable here.
    #[error("{0}")]
    NotExpressible(String),
    /// The test names something its topology does not have.
    #[error("{0}")]
    Unknown(String),
}

/// A deployed cluster. Dropping it kills what it started;
/// [`Cluster::teardown`] stops it gracefully.
pub struct Cluster {
    pub substrate: &'static str,
    pub mode: MeshMode,
    pub interception: Interception,
    pub pods: Vec<PodInfo>,
    pub services: Vec<ServiceInfo>,
    /// The control plane's manifests directory (none in baseline).
    manifests_dir: Option<PathBuf>,
    /// Round robin over a Service's pods when there is no mesh to balance.
    next: AtomicUsize,
    /// Stopped in reverse order: start servers before their clients.
    procs: Mutex<Vec<ops::Kept>>,
    control: Mutex<Option<ControlPlane>>,
    /// How to start a stopped control plane again.
    control_restart: Mutex<Option<super::control::Restart>>,
    /// How to start a pod's app again after [`Cluster::kill_app`], by pod.
    app_restarts: Vec<(String, AppRestart)>,
    /// The namespaces, for [`Cluster::publish_topology`].
    namespaces: Vec<NamespaceSpec>,
    /// Pods taken out of their Services' endpoints (terminating).
    terminating: Mutex<Vec<String>>,
    /// Explicit interception: a meshed pod's opaque TCP listener for a
    /// Service port, as (pod, Service, namespace, port, listener).
    tcp_listeners: Vec<(String, String, String, u16, SocketAddr)>,
    /// Run after every process is stopped (e.g. deleting namespaces).
    cleanup: Vec<Box<dyn FnOnce() + Send>>,
}

/// Time a process gets to exit after SIGTERM at teardown.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Cluster {
    /// An empty cluster for a substrate to fill in.
    pub fn new(substrate: &'static str, mode: MeshMode, interception: Interception) -> Cluster {
        Cluster {
            substrate,
            mode,
            interception,
            pods: Vec::new(),
            services: Vec::new(),
            manifests_dir: None,
            next: AtomicUsize::new(0),
            procs: Mutex::new(Vec::new()),
            control: Mutex::new(None),
            control_restart: Mutex::new(None),
            app_restarts: Vec::new(),
            namespaces: Vec::new(),
            terminating: Mutex::new(Vec::new()),
            tcp_listeners: Vec::new(),
            cleanup: Vec::new(),
        }
    }

    /// Keep `p` running until teardown.
    pub fn keep(&mut self, p: Proc) {
        self.keep_for(None, p);
    }

    /// Keep `p`, pod `pod`'s sidecar or app, running until teardown (or
    /// until a test stops it: [`Cluster::terminate_pod`], [`Cluster::kill_app`]).
    pub(crate) fn keep_pod(&mut self, pod: &str, role: Role, p: Proc) {
        self.keep_for(Some((pod.to_string(), role)), p);
    }

    fn keep_for(&mut self, pod: Option<(String, Role)>, proc: Proc) {
        self.procs
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push(ops::Kept { pod, proc });
    }

    /// How to start pod `pod`'s app again, on the same address, after
    /// [`Cluster::kill_app`].
    pub(crate) fn set_app_restart(&mut self, pod: &str, restart: AppRestart) {
        self.app_restarts.push((pod.to_string(), restart));
    }

    pub(crate) fn set_control(&mut self, cp: ControlPlane) {
        self.manifests_dir = Some(cp.manifests_dir().to_path_buf());
        *self.control.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(cp);
    }

    /// Run `f` at teardown (or drop), after the processes are gone.
    pub fn on_teardown(&mut self, f: impl FnOnce() + Send + 'static) {
        self.cleanup.push(Box::new(f));
    }

    pub fn pod(&self, name: &str) -> Result<&PodInfo, DialError> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| DialError::Unknown(format!("no pod {name} in this topology")))
    }

    pub fn service(&self, name: &str, namespace: &str) -> Result<&ServiceInfo, DialError> {
        self.services
            .iter()
            .find(|s| s.name == name && s.namespace == namespace)
            .ok_or_else(|| {
                DialError::Unknown(format!("no Service {name}.{namespace} in this topology"))
            })
    }

    /// How pod `from` reaches `to`.
    pub fn dial(&self, from: &str, to: &To) -> Result<Dial, DialError> {
        let src = self.pod(from)?;
        let sidecar = self.mode.meshed() && src.meshed;
        let service_port =
            |name: &str, ns: &str, port: u16| -> Result<(&ServiceInfo, &PortSpec), DialError> {
                let svc = self.service(name, ns)?;
                let p = svc.ports.iter().find(|p| p.port == port).ok_or_else(|| {
                    DialError::Unknown(format!("Service {name}.{ns} has no port {port}"))
                })?;
                Ok((svc, p))
            };
        match self.interception {
            Interception::Transparent => {
                let connect = match to {
                    To::Service {
                        name,
                        namespace,
                        port,
                    }
                    | To::ClusterIp {
                        name,
                        namespace,
                        port,
                    } => {
                        let (svc, _) = service_port(name, namespace, *port)?;
                        SocketAddr::new(svc.cluster_ip, *port)
                    }
                    To::Pod { name } => {
                        let p = self.pod(name)?;
                        SocketAddr::new(p.ip, p.endpoint_port)
                    }
                };
                let authority = match to {
                    To::Service {
                        name,
                        namespace,
                        port,
                    } => {
                        format!("{name}.{namespace}.svc.{TRUST_DOMAIN}:{port}")
                    }
                    _ => connect.to_string(),
                };
                Ok(Dial {
                    connect,
                    authority,
                    netns: src.netns.clone(),
                    via_sidecar: sidecar,
                })
            }
            Interception::Explicit => {
                if let To::ClusterIp { .. } = to {
                    return Err(DialError::NotExpressible(format!(
                        "{}: proxies are addressed explicitly (the target is named in Host), so nothing intercepts a connection to a ClusterIP",
                        self.substrate
                    )));
                }
                let (authority, direct) = match to {
                    To::Service {
                        name,
                        namespace,
                        port,
                    } => {
                        let (svc, _) = service_port(name, namespace, *port)?;
                        let authority = format!("{name}.{namespace}.svc.{TRUST_DOMAIN}:{port}");
                        // Without a sidecar the client picks an endpoint itself,
                        // in turn, as kube-proxy would.
                        let direct = match svc.pods.len() {
                            0 => None,
                            n => Some(
                                &self.pods[svc.pods[self.next.fetch_add(1, Ordering::Relaxed) % n]],
                            ),
                        };
                        (authority, direct)
                    }
                    To::Pod { name } => {
                        let p = self.pod(name)?;
                        (SocketAddr::new(p.ip, p.endpoint_port).to_string(), Some(p))
                    }
                    To::ClusterIp { .. } => unreachable!("refused above"),
                };
                let connect = match (sidecar, src.outbound, direct) {
                    (true, Some(outbound), _) => outbound,
                    (true, None, _) => {
                        return Err(DialError::Unknown(format!(
                            "pod {from} is meshed but has no outbound listener"
                        )))
                    }
                    // As in a cluster: the pod's address, where a meshed
                    // pod's sidecar receives (and may refuse plaintext).
                    (false, _, Some(p)) => SocketAddr::new(p.ip, p.endpoint_port),
                    (false, _, None) => {
                        return Err(DialError::Unknown(format!(
                            "{to} has no endpoints to reach without a mesh"
                        )))
                    }
                };
                Ok(Dial {
                    connect,
                    authority,
                    netns: src.netns.clone(),
                    via_sidecar: sidecar,
                })
            }
        }
    }

    /// Send `req` from pod `from` to `to`. `Err` only when the request
    /// could not be expressed; a failed exchange is a [`Reply`] with
    /// [`Reply::error`] set.
    pub async fn send(&self, from: &str, to: &To, req: &Req) -> Result<Reply, DialError> {
        let dial = self.dial(from, to)?;
        Ok(send::send(&dial, req).await)
    }

    /// Explicit interception: pod `pod`'s sidecar relays opaque TCP from
    /// `listener` to Service port `service.namespace:port`.
    pub(crate) fn set_tcp_listener(
        &mut self,
        pod: &str,
        service: &str,
        namespace: &str,
        port: u16,
        listener: SocketAddr,
    ) {
        self.tcp_listeners.push((
            pod.into(),
            service.into(),
            namespace.into(),
            port,
            listener,
        ));
    }

    /// How pod `from` opens a raw TCP connection to `to`: as [`Cluster::dial`]
    /// except that, explicitly intercepted, a meshed pod connects to its
    /// sidecar's opaque TCP listener for that Service port.
    pub fn dial_tcp(&self, from: &str, to: &To) -> Result<Dial, DialError> {
        let mut dial = self.dial(from, to)?;
        if self.interception == Interception::Explicit && dial.via_sidecar {
            let To::Service {
                name,
                namespace,
                port,
            } = to
            else {
                return Err(DialError::NotExpressible(format!(
                    "{}: opaque TCP listeners are per Service port; {to} is not one",
                    self.substrate
                )));
            };
            let listener = self
                .tcp_listeners
                .iter()
                .find(|(p, s, n, q, _)| p == from && s == name && n == namespace && q == port)
                .map(|t| t.4)
                .ok_or_else(|| {
                    DialError::Unknown(format!(
                        "pod {from} has no opaque TCP listener for {to} (its Service selects no TCP app)"
                    ))
                })?;
            dial.connect = listener;
        }
        Ok(dial)
    }

    /// A raw TCP session from pod `from` to `to` (see [`send::tcp`]).
    pub async fn tcp(
        &self,
        from: &str,
        to: &To,
        server_first: bool,
        payload: &[u8],
    ) -> Result<TcpSession, DialError> {
        let dial = self.dial_tcp(from, to)?;
        Ok(send::tcp(&dial, server_first, payload).await)
    }

    /// A WebSocket session from pod `from` to `to` (`ws://<authority><path>`):
    /// the app's greeting, then `messages` text and one binary message of
    /// `binary_len` bytes echoed back.
    pub async fn websocket(
        &self,
        from: &str,
        to: &To,
        path: &str,
        messages: usize,
        binary_len: usize,
    ) -> Result<WsSession, DialError> {
        let dial = self.dial(from, to)?;
        Ok(send::websocket(&dial, path, messages, binary_len).await)
    }

    /// Write (or replace) manifest `file` in the control plane's directory;
    /// it applies on the control plane's next poll. In baseline there is no
    /// control plane and nothing to apply.
    pub fn apply(&self, file: &str, yaml: &str) -> std::io::Result<()> {
        match &self.manifests_dir {
            Some(dir) => super::manifests::write(dir, file, yaml),
            None => Ok(()),
        }
    }

    /// Remove manifest `file` (its objects are deleted on the next poll).
    pub fn remove(&self, file: &str) -> std::io::Result<()> {
        match &self.manifests_dir {
            Some(dir) => match std::fs::remove_file(dir.join(file)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// The control plane's stderr tail, for failure messages.
    pub fn control_log(&self) -> String {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.stderr_tail())
            .unwrap_or_default()
    }

    /// Stop every process (clients first), the control plane last, then
    /// run the cleanup hooks.
    pub async fn teardown(mut self) {
        let procs = std::mem::take(self.procs.get_mut().unwrap_or_else(|e| e.into_inner()));
        for k in procs.into_iter().rev() {
            k.proc.stop(STOP_GRACE).await;
        }
        let cp = self.control.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(cp) = cp {
            cp.stop(STOP_GRACE).await;
        }
        for f in std::mem::take(&mut self.cleanup) {
            f();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Procs and the control plane kill their process groups on drop;
        // they must be gone before the cleanup hooks run.
        self.procs.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
        self.control.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        for f in std::mem::take(&mut self.cleanup) {
            f();
        }
    }
}

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn identity(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

#[cfg(test)]
mod tests;
