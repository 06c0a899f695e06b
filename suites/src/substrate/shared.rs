//! Parts every substrate implementation shares: its work area (binaries,
//! work dir, pid file, peers), the patience it gives components, and the
//! readiness and failure helpers for the processes it starts. Nothing here
//! knows a particular substrate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::peers::Peers;
use super::peers_mtls::ChainPki;
use super::probe;
use super::process::Proc;
use super::{Component, DeployError, Role, ScenarioTopology};
use crate::bins::Binaries;
use crate::suite::Variant;

/// How long a component may take to print its address and answer.
pub const READY_PATIENCE: Duration = Duration::from_secs(20);
/// Time a component gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A substrate's own corner of the run: the binaries it starts, its
/// private work dir (configs, logs, one dir per thing it starts), the
/// `pids` file every child is appended to, and the peer proxies found.
pub struct Workspace {
    pub bins: Binaries,
    work: PathBuf,
    pub pids_file: PathBuf,
    pub peers: Peers,
    counter: usize,
    /// The peer chains' certificates, made at the first chain of the run.
    chain_pki: Option<ChainPki>,
}

impl Workspace {
    /// `work` is the run's private temp dir.
    pub fn new(bins: Binaries, work: &Path) -> Workspace {
        Workspace {
            bins,
            work: work.to_path_buf(),
            pids_file: work.join("pids"),
            peers: Peers::find(),
            counter: 0,
            chain_pki: None,
        }
    }

    /// The run's certificates for the peer chains (`nginx-mtls`,
    /// `haproxy-mtls`), made into the work dir the first time.
    pub fn chain_pki(&mut self) -> Result<ChainPki, DeployError> {
        if let Some(pki) = &self.chain_pki {
            return Ok(pki.clone());
        }
        let pki = ChainPki::generate(&self.dir("peer-pki")?)?;
        self.chain_pki = Some(pki.clone());
        Ok(pki)
    }

    /// A number not handed out before in this workspace (names of dirs,
    /// client pods).
    pub fn number(&mut self) -> usize {
        self.counter += 1;
        self.counter
    }

    /// A fresh directory `<what>-<n>` in the work dir.
    pub fn dir(&mut self, what: &str) -> Result<PathBuf, DeployError> {
        let n = self.number();
        let d = self.work.join(format!("{what}-{n}"));
        std::fs::create_dir_all(&d).map_err(|source| DeployError::Io {
            what: format!("create {}", d.display()),
            source,
        })?;
        Ok(d)
    }

    /// Spawn `cmd` as component `name`, in the network namespace `netns`
    /// when given, recorded in the pid file.
    pub fn spawn(&self, name: &str, cmd: Command, netns: Option<&Path>) -> Result<Proc, DeployError> {
        Proc::spawn_in(name, cmd, &self.pids_file, netns)
    }

    /// Start replica `i` of the scenario's target server listening on
    /// `listen` (in the network namespace `netns` when given) and wait
    /// until `/healthz` answers at `at` (default: the address it printed),
    /// asked from the same namespace. Returns it and where it answered.
    pub async fn start_server(
        &self,
        topo: &ScenarioTopology,
        i: usize,
        listen: &str,
        netns: Option<&Path>,
        at: Option<SocketAddr>,
    ) -> Result<(Proc, SocketAddr), DeployError> {
        let cmd = server_command(&self.bins.loadgen, topo, i, listen);
        let mut p = self.spawn(&server_name(topo, i), cmd, netns)?;
        let printed = addr(&mut p, "listening on ").await?;
        let target = at.unwrap_or(printed);
        let ready =
            probe::until_ok_from(netns, target, None, "/healthz", topo.protocol, READY_PATIENCE)
                .await;
        match ready {
            Ok(()) => Ok((p, target)),
            Err(e) => Err(ready_error(&mut p, e)),
        }
    }

    /// Whether `variant` can run with the peers found: a missing peer is
    /// [`DeployError::Unavailable`] (the cell is skipped, not failed).
    pub fn available(&self, variant: Variant) -> Result<(), DeployError> {
        self.peers
            .check(variant)
            .map_err(|reason| DeployError::Unavailable { reason })
    }
}

/// The scenario's control plane kept in `slot` (or why it did not start,
/// which fails only the variants that need it), for a variant that needs it.
pub fn control_of<T>(slot: &Option<Result<T, DeployError>>) -> Result<&T, DeployError> {
    match slot {
        Some(Ok(cp)) => Ok(cp),
        // DeployError is not Clone: every meshed cell of the scenario
        // gets its own copy of the one start failure.
        Some(Err(DeployError::Start { detail, .. } | DeployError::Ready { detail, .. })) => {
            Err(DeployError::Start {
                component: "control".into(),
                detail: detail.clone(),
            })
        }
        Some(Err(e)) => Err(DeployError::Start {
            component: "control".into(),
            detail: e.to_string(),
        }),
        None => Err(DeployError::Start {
            component: "control".into(),
            detail: "no control plane running (the scenario's topology did not ask for one)"
                .into(),
        }),
    }
}

/// The scenario's target servers as components to sample.
pub fn server_components<'a>(servers: impl IntoIterator<Item = &'a Proc>) -> Vec<Component> {
    servers
        .into_iter()
        .map(|p| Component {
            name: p.name().to_string(),
            role: Role::Server,
            pid: p.pid(),
        })
        .collect()
}

/// The error of a deploy called before `start_scenario` (or after it failed).
pub fn no_servers() -> DeployError {
    DeployError::Start {
        component: "server".into(),
        detail: "no target server running (start_scenario was not called)".into(),
    }
}

/// Replica `i`'s component name: `server`, or `server-<i>` with replicas.
pub fn server_name(topo: &ScenarioTopology, i: usize) -> String {
    match topo.replicas {
        1 => "server".to_string(),
        _ => format!("server-{i}"),
    }
}

/// Replica `i` of the scenario's target server, listening on `listen`: its
/// `loadgen serve` command. The last replica is the slow one, so replica 0
/// (the single-address variants') is a normal one.
fn server_command(loadgen: &Path, topo: &ScenarioTopology, i: usize, listen: &str) -> Command {
    let delay = match topo.slow_replica_delay {
        Some(slow) if i + 1 == topo.replicas && topo.replicas > 1 => slow,
        _ => topo.server_delay,
    };
    let mut cmd = Command::new(loadgen);
    cmd.args(["serve", "--listen", listen]);
    if topo.protocol.is_tcp() {
        // An echo: no delay or body of its own (validation refuses them).
        cmd.arg("--tcp-echo").arg("--threads").arg(topo.server_threads.to_string());
        return cmd;
    }
    if topo.protocol == crate::suite::Protocol::WebSocket {
        cmd.arg("--websocket");
    }
    cmd.arg("--delay")
        .arg(humantime::format_duration(delay).to_string())
        .arg("--body-size")
        .arg(topo.body_size.to_string())
        .arg("--threads")
        .arg(topo.server_threads.to_string());
    cmd
}

/// A chain that never answered: why, and every process's exit status and
/// stderr tail.
pub fn chain_failure(variant: Variant, why: String, procs: &mut [Proc]) -> DeployError {
    let mut detail = why;
    for p in procs.iter_mut() {
        if let Some(status) = p.exited() {
            detail.push_str(&format!("\n  {} exited ({status})", p.name()));
        }
        let tail = p.stderr_tail();
        if !tail.is_empty() {
            detail.push_str(&format!("\n  {} stderr tail:\n{tail}", p.name()));
        }
    }
    DeployError::Ready {
        component: variant.as_str().into(),
        detail,
    }
}


/// Sample `p` as a component of the deployment and stop it with it.
pub fn keep(components: &mut Vec<Component>, procs: &mut Vec<Proc>, p: Proc, role: Role) {
    components.push(Component {
        name: p.name().to_string(),
        role,
        pid: p.pid(),
    });
    procs.push(p);
}

/// Read an address a component printed after `prefix`.
pub async fn addr(p: &mut Proc, prefix: &str) -> Result<SocketAddr, DeployError> {
    let text = p.wait_line(prefix, READY_PATIENCE).await?;
    text.parse().map_err(|_| {
        p.failure(&format!(
            "printed `{prefix}{text}`, which is not an ip:port"
        ))
    })
}

pub fn ready_error(p: &mut Proc, e: String) -> DeployError {
    match p.failure(&e) {
        DeployError::Start { component, detail } => DeployError::Ready { component, detail },
        other => other,
    }
}

/// Wait until a peer accepts TCP connections on `listen`, or fails.
pub async fn wait_listening(p: &mut Proc, listen: SocketAddr) -> Result<(), DeployError> {
    let deadline = tokio::time::Instant::now() + READY_PATIENCE;
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(());
        }
        if p.exited().is_some() {
            return Err(p.failure(&format!("exited before listening on {listen}")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(p.failure(&format!(
                "not listening on {listen} after {READY_PATIENCE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

