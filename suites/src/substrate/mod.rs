//! Substrates: where a variant's processes run.
//!
//! ```text
//!   runner ──start_scenario──> substrate: target server, control plane (once per scenario)
//!          ──deploy(variant)──> Deployment { target, host, components }
//!          ──teardown────────> nothing it started is left running
//! ```
//!
//! Two substrates exist: `local` (processes on 127.0.0.1, proxies addressed
//! explicitly) and `netns` (pods as network namespaces on a node bridge,
//! transparent interception; needs root). `kind` is planned.

pub mod cluster;
pub mod control;
pub mod faults;
pub mod hostile;
pub mod local;
pub mod manifests;
pub mod netns;
mod peers;
pub mod probe;
pub mod proc_guard;
pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::suite::{Protocol, Scenario, Variant};

pub use local::Local;
pub use netns::Netns;

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
    pub(crate) procs: Vec<process::Proc>,
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

/// A place to run variants. Methods are called one at a time by the runner.
#[allow(async_fn_in_trait)] // used by concrete type from one task; no Send bound needed
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
        _step: faults::FaultStep,
    ) -> Result<String, DeployError> {
        Err(DeployError::Unavailable {
            reason: format!(
                "the {} substrate cannot inject the `{}` fault (only `local` can)",
                self.name(),
                fault.as_str()
            ),
        })
    }
}
