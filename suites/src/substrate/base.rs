//! The shared base every substrate implements: what a scenario needs
//! ([`ScenarioTopology`]), a deployed variant ([`Deployment`]), one measured
//! cell ([`LoadCell`] -> a record `Run`), why a deployment failed
//! ([`DeployError`]), and the [`Substrate`] trait.
//!
//! ```text
//!  runner ──prepare()──────────────> what the whole run shares (kind: cluster, images, namespace)
//!         ──order(cells)───────────> the order cells run in (kind: grouped by mesh)
//!         ──unavailable(scenario)──> a scenario this substrate cannot run: skipped, with why
//!         ──start_scenario(topo)───> target server(s), control plane (once per scenario)
//!         ──deploy(variant)────────> proxies, a peer or a mesh, ready: Deployment { target, components }
//!         ──measure(dep, cell)─────> one measured load cell: record::Run (load + resources)
//!         ──fault(dep, step)───────> (fault scenarios) one step of a disruption
//!         ──teardown(dep)──────────> the variant's processes stopped
//!         ──end_scenario()─────────> the scenario's processes stopped
//!         ──close()────────────────> what prepare() made, removed
//!  conformance ──deploy_cluster(spec, mode)──> Cluster (see `cluster`), torn down by the test
//! ```
//!
//! The load step is the substrate's, in the same trait rather than a
//! companion one: where the load generator runs is part of where the variant
//! runs. `local` and `netns` run loadgen's engine inside bench (from bench's
//! network namespace or a pod's; `load.rs`) and sample the deployment's
//! processes from `/proc`; `kind` and `kube` run it as a Job in the cluster
//! and read its record from the pod's log, sampling the kubelets' stats
//! summaries. One trait means a new substrate cannot be opened by the runner
//! without saying how it loads, and the runner's cell loop (`runner.rs`) is
//! the same for all four.
//!
//! Whatever an implementation creates that could outlive `bench` (a process
//! group, a namespace, a cluster object, a directory) is registered with
//! [`super::cleanup`] the moment it exists, and forgotten once undone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::cluster::{Cluster, ClusterSpec, MeshMode};
use super::process;
use crate::plan::Cell;
use crate::suite::{Protocol, Scenario, Variant};


/// What a scenario needs from the substrate, independent of the variant.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioTopology {
    pub scenario: String,
    pub protocol: Protocol,
    pub body_size: usize,
    pub server_delay: Duration,
    pub server_threads: usize,
    /// Target server replicas.
    pub replicas: usize,
    /// The last replica's delay instead of `server_delay`.
    pub slow_replica_delay: Option<Duration>,
    /// Some variant's sidecars are certified by the control plane, so the
    /// scenario needs one running.
    pub control_plane: bool,
    /// Lifetime of the certificates the control plane issues (`None`: long
    /// enough that no renewal shows); short for the cert-rotation fault.
    pub cert_lifetime: Option<Duration>,
    /// mesh-proxy flags added to each Weft proxy (the scenario's `proxy_args`).
    pub proxy_args: Vec<String>,
}

impl ScenarioTopology {
    pub fn of(s: &Scenario) -> ScenarioTopology {
        ScenarioTopology {
            scenario: s.name.clone(),
            protocol: s.protocol,
            body_size: s.body_size,
            server_delay: s.server_delay,
            server_threads: s.server_threads,
            replicas: s.replicas,
            slow_replica_delay: s.slow_replica_delay,
            control_plane: s.variants.iter().any(|v| v.needs_control_plane()),
            cert_lifetime: match &s.hardening {
                Some(crate::suite::Hardening::Fault(f)) => f.cert_lifetime(),
                _ => None,
            },
            proxy_args: s.proxy_args.clone(),
        }
    }
}

/// What a sampled process is, in the record's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Proxy,
    Server,
    Control,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Server => "server",
            Role::Control => "control",
        }
    }
}

/// A process (with its descendants) whose CPU and memory are sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub role: Role,
    pub pid: u32,
}

/// Where the load generator sends: `host:port` of the first hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An address bench (or a pod's network namespace) connects to.
    Addr(SocketAddr),
    /// A name only the cluster resolves (`server.NS.svc.cluster.local:8080`):
    /// the load runs inside it.
    InCluster(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::InCluster(name) => f.write_str(name),
        }
    }
}

/// A deployed variant: where to send load and what to measure. Dropping it
/// kills its processes; [`Substrate::teardown`] stops them gracefully.
pub struct Deployment {
    pub variant: Variant,
    /// First hop the load generator connects to.
    pub target: Target,
    /// Host header / :authority to send, when routing depends on it.
    pub host: Option<String>,
    /// Processes to sample, the target server included.
    pub components: Vec<Component>,
    /// The network namespace (a `/run/netns/NAME` path) the load must be
    /// sent from; `None`: bench's own.
    pub load_from: Option<std::path::PathBuf>,
    /// Every Weft proxy's admin listener (empty for variants without one),
    /// scraped around the measured window by [`crate::crosscheck`].
    pub admins: Vec<ProxyAdmin>,
    pub(crate) procs: Vec<process::Proc>,
}

/// Where a deployed Weft proxy serves `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAdmin {
    /// Its component name, as in [`Deployment::components`].
    pub component: String,
    /// `true`: the client-side (outbound) sidecar; `false`: a server-side one.
    pub outbound: bool,
    pub addr: SocketAddr,
    /// The network namespace the address is reached from; `None`: bench's own.
    pub netns: Option<std::path::PathBuf>,
}

impl Deployment {
    /// Stop its processes, client side first, so nothing is sent into a
    /// half-torn-down chain.
    pub async fn stop(self) {
        for p in self.procs.into_iter().rev() {
            p.stop(super::shared::STOP_GRACE).await;
        }
    }
}

/// One measured load cell, as the runner hands it to [`Substrate::measure`].
pub struct LoadCell<'a> {
    pub scenario: &'a Scenario,
    pub cell: &'a Cell,
    /// Its position in the suite's cell list (from 0; `bench plan` numbers from 1).
    pub index: usize,
    /// `scenario variant rate rep`, for progress lines.
    pub label: &'a str,
    /// Where the substrate shows the cell's progress.
    pub progress: &'a indicatif::MultiProgress,
}

/// Why a measured cell produced no record.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The in-process load generator failed.
    #[error(transparent)]
    Load(#[from] loadgen::LoadError),
    /// The in-cluster load (its Job, its pod, its log) failed.
    #[error("{0}")]
    InCluster(String),
}

/// Why a variant could not be deployed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The variant cannot run here at all (e.g. nginx is not installed):
    /// recorded as skipped, not a failure.
    #[error("{reason}")]
    Unavailable { reason: String },
    #[error("{component} failed to start: {detail}")]
    Start { component: String, detail: String },
    #[error("{component} did not become ready: {detail}")]
    Ready { component: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// A deployment grown by [`Substrate::scale`].
pub struct Scaled {
    /// What it holds now, for the record (e.g. `10000 endpoints ready in proxy-outbound's balancer`).
    pub detail: String,
    /// Kept until the sweep point's measurement ends (e.g. the relays the
    /// endpoints are); dropping it undoes what it holds.
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

/// A moment of a fault: its start, one periodic repetition, its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStep {
    Begin,
    /// The n-th repetition (from 0) of a periodic fault.
    Tick(u32),
    End,
}

/// A place to run variants and conformance topologies: the one base that
/// `local`, `netns`, `kind` and `kube` implement. Methods are called one at
/// a time (by the runner, or by the conformance runner), never concurrently.
///
/// Benchmarks: [`Substrate::prepare`]; then, for each run of consecutive
/// cells of one scenario in [`Substrate::order`]: [`Substrate::start_scenario`],
/// per cell [`Substrate::deploy`] / [`Substrate::measure`] /
/// [`Substrate::teardown`], then [`Substrate::end_scenario`]; at the end
/// (also after an error or a signal) [`Substrate::close`]. Peers (nginx,
/// HAProxy; Linkerd, Istio on a cluster) are variants; a substrate that
/// cannot run one returns [`DeployError::Unavailable`] (recorded as
/// skipped). Readiness is the implementation's: `deploy` returns only once
/// the whole chain is ready (a real request through it on local and netns,
/// the rollout of the meshed server on a cluster).
///
/// Conformance: [`Substrate::deploy_cluster`] (see its contract below and
/// [`super::cluster`]).
#[allow(async_fn_in_trait)] // used through concrete types from one task; no Send bound needed
pub trait Substrate {
    /// `local`, `netns`, `kind`, `kube`: written into every run record.
    fn name(&self) -> &'static str;
    /// Make what every scenario of the run shares (a cluster, its images,
    /// the run's namespace). An error stops the run before any cell.
    async fn prepare(&mut self) -> Result<(), DeployError> {
        Ok(())
    }
    /// The order to run `cells` in (indices into it, each once). Cells of a
    /// scenario that end up apart get one `start_scenario` .. `end_scenario`
    /// each. Default: the suite's order.
    fn order(&self, cells: &[Cell]) -> Vec<usize> {
        (0..cells.len()).collect()
    }
    /// Why this substrate cannot run `scenario` at all (`None`: it can); its
    /// cells are then recorded as skipped with this reason.
    fn unavailable(&self, _scenario: &Scenario) -> Option<String> {
        None
    }
    /// Start what the variants of the scenario share: the target server(s), and
    /// the control plane when [`ScenarioTopology::control_plane`].
    async fn start_scenario(&mut self, topo: &ScenarioTopology) -> Result<(), DeployError>;
    /// Start one variant in front of the scenario's server and wait until a
    /// real request through the whole chain succeeds.
    async fn deploy(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
    ) -> Result<Deployment, DeployError>;
    /// Run one measured load cell against `dep`, sampling its components
    /// over the measured window only; the record of it.
    async fn measure(&mut self, dep: &Deployment, cell: &LoadCell<'_>) -> Result<record::Run, MeasureError>;
    /// Stop a deployment's processes.
    async fn teardown(&mut self, deployment: Deployment);
    /// Stop what [`Substrate::start_scenario`] started (also when it failed halfway).
    async fn end_scenario(&mut self);
    /// Remove what [`Substrate::prepare`] made (also when it failed halfway,
    /// and after a signal). Default: nothing (what `local` and `netns` leave
    /// is removed when they are dropped).
    async fn close(&mut self) {}
    /// Versions of the things this substrate runs (`nginx`, `haproxy`, ...).
    fn versions(&self) -> BTreeMap<String, String>;
    /// Apply one step of a fault to a running deployment (fault scenarios);
    /// returns what was done, for the record. Substrates without fault
    /// injection say so.
    async fn fault(
        &mut self,
        _dep: &Deployment,
        fault: crate::suite::Fault,
        _step: FaultStep,
    ) -> Result<String, DeployError> {
        Err(DeployError::Unavailable {
            reason: format!(
                "the {} substrate cannot inject the `{}` fault (only `local` can)",
                self.name(),
                fault.as_str()
            ),
        })
    }
    /// Grow a deployed variant to `size` along a sweep's dimension
    /// (`mode = "sweep"`) and return once it holds them (e.g. the client
    /// proxy's balancer lists every endpoint). What must live as long as
    /// the measurement is in [`Scaled::guard`]. Substrates that cannot say so.
    async fn scale(
        &mut self,
        _dep: &Deployment,
        dimension: crate::suite::SweepDimension,
        _size: usize,
    ) -> Result<Scaled, DeployError> {
        Err(DeployError::Unavailable {
            reason: format!("the {} substrate cannot grow a deployment's {dimension} (only `local` can)", self.name()),
        })
    }
    /// Deploy a conformance topology and wait until it is ready; the
    /// caller tears it down ([`Cluster::teardown`]). A substrate that
    /// cannot deploy topologies keeps this default: every test is skipped
    /// with its reason.
    ///
    /// What an implementation must provide (this is the whole contract):
    /// - start every workload's pods: an echo server per pod (`loadgen serve
    ///   --echo --name <workload> --namespace <ns> --pod <pod>`) and, in
    ///   [`MeshMode::Weft`] for meshed workloads, a sidecar with identity
    ///   `spiffe://cluster.local/ns/<ns>/sa/<service account>` (certified by a
    ///   mesh-control started with [`super::control::ControlPlane::start_for`]
    ///   on those identities and the manifests from
    ///   [`super::cluster::yaml::render`] plus [`ClusterSpec::manifests`]),
    ///   resolving and following policy through it;
    /// - fill a [`Cluster`] ([`Cluster::new`]) with every pod
    ///   ([`super::cluster::PodInfo`]: `ip`, `app`, `endpoint_port`, and
    ///   `outbound` for explicit or `netns` for transparent interception) and
    ///   Service ([`super::cluster::ServiceInfo`] with a ClusterIP a pod can
    ///   dial when transparent), hand it the processes ([`Cluster::keep`]),
    ///   the control plane ([`Cluster::set_control`]) and any cleanup
    ///   ([`Cluster::on_teardown`]);
    /// - return only once the mesh is ready: every sidecar `/ready` and every
    ///   meshed pod able to reach the address of every pod a Service selects
    ///   through its sidecar (a 403 from the destination's authorization
    ///   policy counts as reached).
    ///
    /// What the mesh-behaviour tests need on top (`cluster/ops.rs`; without
    /// it they are not-applicable or fail, never pass):
    /// - a workload's `app`: `AppKind::WebSocket` pods serve
    ///   [`super::cluster::apps::serve_websocket`], `AppKind::TcpEcho` and
    ///   `AppKind::Banner` pods [`super::cluster::apps::serve_tcp`] on the
    ///   app's address instead of the echo server (readiness through the mesh
    ///   is then not probed with HTTP); with transparent interception a
    ///   client reaches them at the ClusterIP (explicit:
    ///   `Cluster::set_tcp_listener` per meshed pod and port);
    /// - every pod's `admin` (its sidecar's admin listener, reachable from the
    ///   pod's `netns`) and `ip` / `endpoint_port` where its sidecar receives
    ///   (tcpdump captures `tcp port <endpoint_port> and host <ip>`: on `lo`
    ///   without a netns, on `any` inside it);
    /// - in [`MeshMode::WeftNoMtls`] sidecars without identity (plaintext
    ///   between them, inbound plaintext allowed), `--forward-client-identity`
    ///   otherwise; mesh-control with `ClusterSpec::mesh.cert_lifetime`;
    /// - each pod's processes handed over with `Cluster::keep_pod` (sidecar
    ///   and app) and how to restart its app on the same address with
    ///   `Cluster::set_app_restart`;
    /// - the topology written with [`Cluster::publish_topology`] (after
    ///   [`Cluster::set_control`]), so terminating a pod can rewrite it.
    ///
    /// [`MeshMode::Baseline`] deploys the same pods with no sidecar and no
    /// control plane; clients reach endpoints directly (on a node with
    /// Service NAT: the ClusterIP, as without a mesh).
    async fn deploy_cluster(
        &mut self,
        _spec: &ClusterSpec,
        _mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        Err(DeployError::Unavailable {
            reason: format!(
                "the {} substrate does not deploy conformance topologies",
                self.name()
            ),
        })
    }
}
