//! The local substrate: every component is a process on 127.0.0.1 with an
//! ephemeral port, the proxies addressed explicitly.
//!
//! ```text
//! baseline          loadgen ───────────────────────────────────────────────> server (replica 0)
//! weft              loadgen ─> outbound ══(mTLS, h2)══> inbound i ─> server i   (each replica)
//!                    Host: svc.bench.svc.cluster.local
//!                                 └─ certified by, and resolving svc through, mesh-control ─┘
//! weft-plaintext    loadgen ─> outbound ──(plaintext, svc.weft.local)─> inbound ─> server
//! weft-client-only  loadgen ─> outbound ─(svc.weft.local)──────────────────> server
//! weft-server-only  loadgen ─────────────────────────────────────> inbound ─> server
//! nginx | haproxy   loadgen ─> peer (1 worker, round robin) ────────────────> server i
//! ```
//!
//! `weft` finds the replicas the way it would in a cluster: the substrate
//! writes a Service and one EndpointSlice per replica into the control
//! plane's manifests directory (see `manifests`) and the client sidecar
//! resolves the Service through Destination, balancing with P2C over
//! peak-EWMA. The other Weft variants keep static `--route`s: they are the
//! no-control-plane comparisons, and (reaching one address) run with one
//! replica only.
//!
//! One sidecar alone cannot do mTLS (its peer is not meshed), so the one-hop
//! variants are plaintext; they are what compares with nginx and HAProxy.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::control::{ControlOptions, ControlPlane, CLIENT_ID, SERVER_ID};
use super::manifests;
use super::peers::Peers;
use super::probe;
use super::process::Proc;
use super::{Component, DeployError, Deployment, Role, ScenarioTopology, Substrate};
use crate::bins::Binaries;
use crate::suite::{Protocol, Variant};

/// Authority the static-route variants' outbound proxy routes; what the
/// load generator sends them. (`weft` sends [`manifests::AUTHORITY`].)
pub const MESH_AUTHORITY: &str = "svc.weft.local";

/// How long a component may take to print its address and answer.
pub(super) const READY_PATIENCE: Duration = Duration::from_secs(20);
/// Time a component gets to exit after SIGTERM before SIGKILL.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(3);
/// Peers are handed a port we freed; another process may grab it first.
const PORT_ATTEMPTS: usize = 3;

/// Processes on this machine.
pub struct Local {
    pub(super) bins: Binaries,
    work: PathBuf,
    pub(super) pids_file: PathBuf,
    peers: Peers,
    /// The scenario's target server replicas, in order.
    servers: Vec<(Proc, SocketAddr)>,
    /// The scenario's control plane, or why it did not start (which fails
    /// only the variants that need it).
    control: Option<Result<ControlPlane, DeployError>>,
    counter: usize,
    /// What the fault scenarios act on (see `faults`).
    pub(super) mesh: MeshState,
}

/// The last deployment's mesh, as the fault scenarios need it.
#[derive(Default)]
pub(super) struct MeshState {
    /// Every started mesh-proxy's admin address, by component name.
    pub(super) admins: Vec<(String, SocketAddr)>,
    /// The server sidecars published as the Service's endpoints, replica order.
    pub(super) published: Vec<SocketAddr>,
    /// A killed control plane, to be started again.
    pub(super) stopped_control: Option<super::control::Restart>,
}

/// One mesh-proxy to start.
pub(super) struct Sidecar<'a> {
    pub(super) name: &'a str,
    /// Workload identity (certified by the control plane); `None`: a
    /// plaintext-only proxy.
    pub(super) identity: Option<&'a str>,
    /// A static route: where [`MESH_AUTHORITY`] goes, in plaintext (the
    /// meshed `weft` path is discovered instead).
    pub(super) route: Option<SocketAddr>,
    /// The application behind the inbound listener.
    pub(super) app: Option<SocketAddr>,
    /// Accept plaintext on the inbound listener until (or without) a policy
    /// (`--default-inbound-policy all-unauthenticated`; the proxy's default
    /// refuses it, and a plaintext-only proxy with an app must say so).
    pub(super) inbound_plaintext: bool,
    /// Resolve authorities through the control plane's Destination API and
    /// follow its Policy API (meshed proxies only).
    pub(super) discovery: bool,
    /// Tell the app who called (`weft-client-id`) on requests over mTLS.
    pub(super) forward_client_identity: bool,
    /// Testing only: mesh features this proxy must not apply
    /// (`--disable`, e.g. `routes`), so conformance tests can show they fail.
    pub(super) disable: Option<&'static str>,
    /// Where the inbound listener binds [default: 127.0.0.1:0].
    pub(super) inbound_listen: Option<SocketAddr>,
    /// Opaque TCP listeners on 127.0.0.1:0, one per authority
    /// (`--tcp-service`), in order.
    pub(super) tcp_services: Vec<String>,
}

impl<'a> Sidecar<'a> {
    /// A meshed proxy: identity from the control plane, strict inbound
    /// (the default policy, as deployed), targets found through Destination.
    pub(super) fn meshed(name: &'a str, identity: &'a str, app: Option<SocketAddr>) -> Sidecar<'a> {
        Sidecar {
            name,
            identity: Some(identity),
            route: None,
            app,
            inbound_plaintext: false,
            discovery: true,
            forward_client_identity: false,
            disable: None,
            inbound_listen: None,
            tcp_services: Vec::new(),
        }
    }

    /// A plaintext server sidecar in front of `app`.
    fn plaintext_inbound(app: SocketAddr) -> Sidecar<'static> {
        Sidecar {
            name: "proxy-inbound",
            identity: None,
            route: None,
            app: Some(app),
            inbound_plaintext: true,
            discovery: false,
            forward_client_identity: false,
            disable: None,
            inbound_listen: None,
            tcp_services: Vec::new(),
        }
    }

    /// A plaintext client sidecar that routes [`MESH_AUTHORITY`] to `route`.
    fn plaintext_outbound(route: SocketAddr) -> Sidecar<'static> {
        Sidecar {
            name: "proxy-outbound",
            identity: None,
            route: Some(route),
            app: None,
            inbound_plaintext: false,
            discovery: false,
            forward_client_identity: false,
            disable: None,
            inbound_listen: None,
            tcp_services: Vec::new(),
        }
    }
}

impl Local {
    /// `work` is the run's private temp dir (configs, logs, the pid file).
    pub fn new(bins: Binaries, work: &Path) -> Local {
        Local {
            bins,
            work: work.to_path_buf(),
            pids_file: work.join("pids"),
            peers: Peers::find(),
            servers: Vec::new(),
            control: None,
            counter: 0,
            mesh: MeshState::default(),
        }
    }

    /// Whether `variant` can run with the peers this substrate found.
    pub fn availability(&self, variant: Variant) -> Result<(), String> {
        self.peers.check(variant)
    }

    /// Whether `variant` could run on this machine (for `bench plan`).
    pub fn availability_here(variant: Variant) -> Result<(), String> {
        Peers::find().check(variant)
    }

    pub(super) fn cell_dir(&mut self, what: &str) -> Result<PathBuf, DeployError> {
        self.counter += 1;
        let d = self.work.join(format!("{what}-{}", self.counter));
        std::fs::create_dir_all(&d).map_err(|source| DeployError::Io {
            what: format!("create {}", d.display()),
            source,
        })?;
        Ok(d)
    }

    async fn start_control(
        &mut self,
        cert_lifetime: Option<Duration>,
    ) -> Result<ControlPlane, DeployError> {
        let dir = self.cell_dir("control")?;
        ControlPlane::start(
            &self.bins.mesh_control,
            &dir,
            &self.pids_file,
            READY_PATIENCE,
            ControlOptions {
                cert_lifetime,
                ..ControlOptions::local()
            },
        )
        .await
    }

    /// Every replica's address; replica 0 first.
    fn server_addrs(&self) -> Result<Vec<SocketAddr>, DeployError> {
        if self.servers.is_empty() {
            return Err(DeployError::Start {
                component: "server".into(),
                detail: "no target server running (start_scenario was not called)".into(),
            });
        }
        Ok(self.servers.iter().map(|(_, a)| *a).collect())
    }

    /// The last replica's server: its name and pid (the fault scenarios' victim).
    pub(super) fn last_server(&self) -> Result<(String, u32), DeployError> {
        self.servers
            .last()
            .map(|(p, _)| (p.name().to_string(), p.pid()))
            .ok_or_else(|| DeployError::Start {
                component: "server".into(),
                detail: "no target server running".into(),
            })
    }

    /// The running control plane, taken out (to be killed).
    pub(super) fn take_control(&mut self) -> Option<ControlPlane> {
        match self.control.take() {
            Some(Ok(cp)) => Some(cp),
            other => {
                self.control = other;
                None
            }
        }
    }

    pub(super) fn put_control(&mut self, cp: ControlPlane) {
        self.control = Some(Ok(cp));
    }

    pub(super) fn control_ref(&self) -> Result<&ControlPlane, DeployError> {
        self.control_plane()
    }

    /// The scenario's control plane, for a variant that needs it.
    fn control_plane(&self) -> Result<&ControlPlane, DeployError> {
        match &self.control {
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

    /// Start one mesh-proxy (see [`start_proxy`]); a meshed one that never
    /// gets ready has the control plane's stderr added to the error.
    async fn mesh_proxy(
        &mut self,
        s: Sidecar<'_>,
    ) -> Result<(Proc, SocketAddr, Option<SocketAddr>), DeployError> {
        let meshed = s.identity.is_some();
        let name = s.name.to_string();
        let started = {
            let control = match meshed || s.discovery {
                true => Some(self.control_plane()?),
                false => None,
            };
            start_proxy(&self.bins, &self.pids_file, control, s).await
        };
        match started {
            Err(mut e) if meshed => {
                self.explain_control(&mut e);
                Err(e)
            }
            Err(e) => Err(e),
            Ok(st) => {
                self.mesh.admins.push((name, st.admin));
                Ok((st.proc, st.outbound, st.inbound))
            }
        }
    }

    /// A meshed proxy that never got ready most likely never got its
    /// certificate: add the control plane's state to the error.
    fn explain_control(&self, e: &mut DeployError) {
        let (DeployError::Ready { detail, .. } | DeployError::Start { detail, .. }) = e else {
            return;
        };
        if let Some(Ok(cp)) = &self.control {
            let tail = cp.stderr_tail();
            if !tail.is_empty() {
                detail.push_str(&format!(
                    "
  control stderr tail:
{tail}"
                ));
            }
        }
    }

    /// Start a peer proxy on a port we pick (they cannot report an
    /// ephemeral one), retrying with a fresh port if it was taken meanwhile.
    async fn peer(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
    ) -> Result<(Proc, SocketAddr), DeployError> {
        let upstreams = self.server_addrs()?;
        let name = variant.as_str();
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(|source| DeployError::Io {
                what: "pick a free port".into(),
                source,
            })?;
            let listen = SocketAddr::from(([127, 0, 0, 1], port));
            let dir = self.cell_dir(name)?;
            let cmd = self
                .peers
                .command(variant, &dir, listen, &upstreams, topo.protocol)?;
            let mut p = Proc::spawn(name, cmd, &self.pids_file)?;
            match wait_listening(&mut p, listen).await {
                Ok(()) => return Ok((p, listen)),
                Err(e) => {
                    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    let e = match e {
                        DeployError::Start { detail, .. } | DeployError::Ready { detail, .. } => {
                            detail
                        }
                        other => other.to_string(),
                    };
                    let detail = if log.is_empty() {
                        e
                    } else {
                        format!("{e}\n    error.log: {}", log.trim())
                    };
                    p.stop(Duration::ZERO).await;
                    last = Some(DeployError::Start {
                        component: name.to_string(),
                        detail,
                    });
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

impl Substrate for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn start_scenario(&mut self, topo: &ScenarioTopology) -> Result<(), DeployError> {
        self.end_scenario().await;
        for i in 0..topo.replicas {
            let (name, cmd) = server_command(&self.bins.loadgen, topo, i, "127.0.0.1:0");
            let mut p = Proc::spawn(&name, cmd, &self.pids_file)?;
            let server = addr(&mut p, "listening on ").await?;
            if let Err(e) =
                probe::until_ok(server, None, "/healthz", topo.protocol, READY_PATIENCE).await
            {
                return Err(ready_error(&mut p, e));
            }
            self.servers.push((p, server));
        }
        if topo.control_plane {
            self.control = Some(self.start_control(topo.cert_lifetime).await);
        }
        Ok(())
    }

    async fn deploy(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
    ) -> Result<Deployment, DeployError> {
        self.availability(variant)
            .map_err(|reason| DeployError::Unavailable { reason })?;
        let servers = self.server_addrs()?;
        self.mesh = MeshState::default();
        // Replica 0: where the single-address variants go.
        let server = servers[0];
        let mut components: Vec<Component> = self
            .servers
            .iter()
            .map(|(p, _)| Component {
                name: p.name().to_string(),
                role: Role::Server,
                pid: p.pid(),
            })
            .collect();
        let mut procs = Vec::new();
        // Meshed server sidecars' inbounds, which must refuse plaintext.
        let mut strict_inbound = Vec::new();
        let (target, host) = match variant {
            Variant::Baseline => (server, None),
            Variant::Weft => {
                // One server sidecar per replica, published as the Service's
                // endpoints; the client sidecar finds them through Destination.
                for (i, app) in servers.iter().enumerate() {
                    let name = match servers.len() {
                        1 => "proxy-inbound".to_string(),
                        _ => format!("proxy-inbound-{i}"),
                    };
                    let (inb, _, inbound) = self
                        .mesh_proxy(Sidecar::meshed(&name, SERVER_ID, Some(*app)))
                        .await?;
                    keep(&mut components, &mut procs, inb, Role::Proxy);
                    strict_inbound.push(inbound.expect("inbound requested"));
                }
                self.control_plane()?.publish_endpoints(&strict_inbound)?;
                self.mesh.published = strict_inbound.clone();
                let (outb, outbound, _) = self
                    .mesh_proxy(Sidecar::meshed("proxy-outbound", CLIENT_ID, None))
                    .await?;
                keep(&mut components, &mut procs, outb, Role::Proxy);
                components.push(Component {
                    name: "control".into(),
                    role: Role::Control,
                    pid: self.control_plane()?.pid(),
                });
                (outbound, Some(manifests::AUTHORITY.to_string()))
            }
            Variant::WeftPlaintext => {
                let (inb, _, inbound) = self.mesh_proxy(Sidecar::plaintext_inbound(server)).await?;
                let inbound = inbound.expect("inbound requested");
                keep(&mut components, &mut procs, inb, Role::Proxy);
                let (outb, outbound, _) = self
                    .mesh_proxy(Sidecar::plaintext_outbound(inbound))
                    .await?;
                keep(&mut components, &mut procs, outb, Role::Proxy);
                (outbound, Some(MESH_AUTHORITY.to_string()))
            }
            Variant::WeftClientOnly => {
                let (outb, outbound, _) =
                    self.mesh_proxy(Sidecar::plaintext_outbound(server)).await?;
                keep(&mut components, &mut procs, outb, Role::Proxy);
                (outbound, Some(MESH_AUTHORITY.to_string()))
            }
            Variant::WeftServerOnly => {
                let (inb, _, inbound) = self.mesh_proxy(Sidecar::plaintext_inbound(server)).await?;
                keep(&mut components, &mut procs, inb, Role::Proxy);
                (inbound.expect("inbound requested"), None)
            }
            Variant::Nginx | Variant::Haproxy => {
                let (p, listen) = self.peer(variant, topo).await?;
                keep(&mut components, &mut procs, p, Role::Proxy);
                (listen, None)
            }
        };
        // Ready means a real request through the whole chain succeeds.
        if let Err(e) = probe::until_ok(
            target,
            host.as_deref(),
            "/healthz",
            topo.protocol,
            READY_PATIENCE,
        )
        .await
        {
            return Err(chain_failure(
                variant,
                format!("GET /healthz through the {variant} chain: {e}"),
                &mut procs,
            ));
        }
        // The chain answered; make sure it answered over mTLS, not because
        // the server side silently took plaintext.
        for inbound in strict_inbound {
            match probe::get(inbound, None, "/healthz", Protocol::Http1).await {
                Ok(403) => {}
                other => {
                    return Err(DeployError::Ready {
                        component: "proxy-inbound".into(),
                        detail: format!(
                            "a plaintext GET /healthz to the meshed server sidecar {inbound} must be refused with 403, got {other:?}: the {variant} cell would not measure mTLS"
                        ),
                    })
                }
            }
        }
        Ok(Deployment {
            variant,
            target,
            host,
            components,
            load_from: None,
            procs,
        })
    }

    async fn teardown(&mut self, deployment: Deployment) {
        // Client side first, so nothing is sent into a half-torn-down chain.
        for p in deployment.procs.into_iter().rev() {
            p.stop(STOP_GRACE).await;
        }
    }

    async fn end_scenario(&mut self) {
        self.mesh = MeshState::default();
        if let Some(Ok(cp)) = self.control.take() {
            cp.stop(STOP_GRACE).await;
        }
        for (p, _) in self.servers.drain(..) {
            p.stop(STOP_GRACE).await;
        }
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.peers.versions()
    }

    async fn fault(
        &mut self,
        dep: &Deployment,
        fault: crate::suite::Fault,
        step: super::faults::FaultStep,
    ) -> Result<String, DeployError> {
        self.fault_step(dep, fault, step).await
    }
}

/// Start one mesh-proxy on ephemeral 127.0.0.1 ports (certified by, and
/// discovering through, `control` when the sidecar asks for it); returns it
/// with its outbound, inbound (when `app` is given) and admin addresses,
/// once `/ready` answers 200 (for a meshed proxy: once it holds its
/// certificate).
pub(super) async fn start_proxy(
    bins: &Binaries,
    pids_file: &Path,
    control: Option<&ControlPlane>,
    s: Sidecar<'_>,
) -> Result<Started, DeployError> {
    let needs_control = |what: &str| DeployError::Start {
        component: s.name.to_string(),
        detail: format!("{what} needs a control plane, and none is running"),
    };
    let mut cmd = Command::new(&bins.mesh_proxy);
    let inbound_listen = s
        .inbound_listen
        .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
    cmd.args(["--outbound-listen", "127.0.0.1:0", "--inbound-listen"])
        .arg(inbound_listen)
        .args(["--admin-listen", "127.0.0.1:0"]);
    if let Some(id) = s.identity {
        cmd.args(control.ok_or_else(|| needs_control(id))?.proxy_args(id));
    }
    if let (Some(cp), true) = (control, s.identity.is_some() || s.discovery) {
        cmd.args(cp.trust_args());
    }
    if s.discovery {
        cmd.args(
            control
                .ok_or_else(|| needs_control("discovery"))?
                .discovery_args(),
        );
    }
    if let Some(addr) = s.route {
        cmd.arg("--route").arg(format!("{MESH_AUTHORITY}={addr}"));
    }
    if let Some(a) = s.app {
        cmd.arg("--app").arg(a.to_string());
    }
    if s.inbound_plaintext {
        cmd.args(["--default-inbound-policy", "all-unauthenticated"]);
    }
    if s.forward_client_identity {
        cmd.arg("--forward-client-identity");
    }
    if let Some(features) = s.disable {
        cmd.arg("--disable").arg(features);
    }
    for authority in &s.tcp_services {
        cmd.arg("--tcp-service").arg(format!("127.0.0.1:0={authority}"));
    }
    // Same budget as each peer proxy: one worker thread.
    cmd.args(["--threads", "1"]);
    let mut p = Proc::spawn(s.name, cmd, pids_file)?;
    let outbound = addr(&mut p, "listening outbound ").await?;
    let inbound = match s.app {
        Some(_) => Some(addr(&mut p, "listening inbound ").await?),
        None => None,
    };
    let admin = addr(&mut p, "listening admin ").await?;
    if let Err(e) = probe::until_ok(admin, None, "/ready", Protocol::Http1, READY_PATIENCE).await {
        return Err(ready_error(&mut p, e));
    }
    // Printed before the admin line, in --tcp-service order.
    let mut tcp_services = Vec::new();
    for text in p.seen_lines("listening tcp-service ") {
        match text.parse() {
            Ok(a) => tcp_services.push(a),
            Err(_) => {
                return Err(p.failure(&format!(
                    "printed `listening tcp-service {text}`, which is not an ip:port"
                )))
            }
        }
    }
    Ok(Started {
        proc: p,
        outbound,
        inbound,
        admin,
        tcp_services,
    })
}

/// A started mesh-proxy and its listeners.
pub(super) struct Started {
    pub(super) proc: Proc,
    pub(super) outbound: SocketAddr,
    pub(super) inbound: Option<SocketAddr>,
    pub(super) admin: SocketAddr,
    /// One per `--tcp-service`, in order.
    pub(super) tcp_services: Vec<SocketAddr>,
}

/// Replica `i` of the scenario's target server, listening on `listen`: its
/// component name and its `loadgen serve` command. The last replica is the
/// slow one, so replica 0 (the single-address variants') is a normal one.
pub(super) fn server_command(
    loadgen: &Path,
    topo: &ScenarioTopology,
    i: usize,
    listen: &str,
) -> (String, Command) {
    let delay = match topo.slow_replica_delay {
        Some(slow) if i + 1 == topo.replicas && topo.replicas > 1 => slow,
        _ => topo.server_delay,
    };
    let name = match topo.replicas {
        1 => "server".to_string(),
        _ => format!("server-{i}"),
    };
    let mut cmd = Command::new(loadgen);
    cmd.args(["serve", "--listen", listen])
        .arg("--delay")
        .arg(humantime::format_duration(delay).to_string())
        .arg("--body-size")
        .arg(topo.body_size.to_string())
        .arg("--threads")
        .arg(topo.server_threads.to_string());
    (name, cmd)
}

/// A chain that never answered: why, and every process's exit status and
/// stderr tail.
pub(super) fn chain_failure(variant: Variant, why: String, procs: &mut [Proc]) -> DeployError {
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
pub(super) fn keep(components: &mut Vec<Component>, procs: &mut Vec<Proc>, p: Proc, role: Role) {
    components.push(Component {
        name: p.name().to_string(),
        role,
        pid: p.pid(),
    });
    procs.push(p);
}

/// Read an address a component printed after `prefix`.
pub(super) async fn addr(p: &mut Proc, prefix: &str) -> Result<SocketAddr, DeployError> {
    let text = p.wait_line(prefix, READY_PATIENCE).await?;
    text.parse().map_err(|_| {
        p.failure(&format!(
            "printed `{prefix}{text}`, which is not an ip:port"
        ))
    })
}

pub(super) fn ready_error(p: &mut Proc, e: String) -> DeployError {
    match p.failure(&e) {
        DeployError::Start { component, detail } => DeployError::Ready { component, detail },
        other => other,
    }
}

/// Wait until a peer accepts TCP connections on `listen`, or fails.
pub(super) async fn wait_listening(p: &mut Proc, listen: SocketAddr) -> Result<(), DeployError> {
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

/// A port that was free a moment ago (the listener is dropped on return).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
