//! The shared base every substrate implements: what a scenario needs
//! ([`ScenarioTopology`]), a deployed variant ([`Deployment`]), why a
//! deployment failed ([`DeployError`]), and the [`Substrate`] trait.
//!
//! ```text
//!  runner ──start_scenario(topo)──> target server(s), control plane (once per scenario)
//!         ──deploy(variant)───────> proxies or a peer, ready: Deployment { target, host, components }
//!         ──fault(dep, step)──────> (fault scenarios) one step of a disruption
//!         ──teardown(dep)─────────> the variant's processes stopped
//!         ──end_scenario()────────> the scenario's processes stopped
//!  conformance ──deploy_cluster(spec, mode)──> Cluster (see `cluster`), torn down by the test
//! ```
//!
//! Whatever an implementation creates that could outlive `bench` (a process
//! group, a namespace, a cluster object, a directory) is registered with
//! [`super::cleanup`] the moment it exists, and forgotten once undone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::cluster::{Cluster, ClusterSpec, MeshMode};
use super::process;
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

/// A deployed variant: where to send load and what to measure. Dropping it
/// kills its processes; [`Substrate::teardown`] stops them gracefully.
pub struct Deployment {
    pub variant: Variant,
    /// First hop the load generator connects to.
    pub target: SocketAddr,
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

/// A moment of a fault: its start, one periodic repetition, its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStep {
    Begin,
    /// The n-th repetition (from 0) of a periodic fault.
    Tick(u32),
    End,
}

/// A place to run variants and conformance topologies: the one base that
/// `local`, `netns` and `kind` implement. Methods are called one at a time
/// (by the runner, or by the conformance runner), never concurrently.
///
/// Benchmarks: [`Substrate::start_scenario`], then per variant
/// [`Substrate::deploy`] / [`Substrate::teardown`], then
/// [`Substrate::end_scenario`]. Peers (nginx, HAProxy) are variants; a
/// substrate that cannot run one returns [`DeployError::Unavailable`]
/// (recorded as skipped). Readiness is the implementation's: `deploy`
/// returns only once a real request through the whole chain succeeds.
///
/// Conformance: [`Substrate::deploy_cluster`] (see its contract below and
/// [`super::cluster`]).
#[allow(async_fn_in_trait)] // used through concrete types from one task; no Send bound needed
pub trait Substrate {
    /// `local`, `netns`, `kind`: written into every run record.
    fn name(&self) -> &'static str;
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
    /// Stop a deployment's processes.
    async fn teardown(&mut self, deployment: Deployment);
    /// Stop what [`Substrate::start_scenario`] started (also when it failed halfway).
    async fn end_scenario(&mut self);
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
