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
//! nginx-mtls |      loadgen ─> outbound peer ══(TLS 1.3, client cert)══> inbound peer i ─> server i
//!   haproxy-mtls                      (round robin, pooled)               (one per replica)
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
//!
//! Opaque TCP scenarios (`tcp`, `tcp-churn`) send to a client sidecar's TCP
//! listener instead of its HTTP outbound: `--tcp-service` to the Service
//! (resolved through Destination, mTLS to each endpoint) for `weft`,
//! `--tcp-forward` to the next hop for the static variants; the server
//! sidecar tells the bytes from HTTP by detection. nginx relays them in its
//! `stream {}` module, HAProxy in `mode tcp`.

mod cluster;
mod faults;
pub mod hostile;
mod proxy;
mod sweep;
pub use sweep::authority as sweep_authority;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use super::cluster::{Cluster, ClusterSpec, MeshMode};
use super::control::{ControlOptions, ControlPlane, CLIENT_ID, SERVER_ID};
use super::manifests;
use super::peers_mtls::{self, Hop, Side};
use super::probe;
use super::process::Proc;
use super::shared::{
    chain_failure, control_of, keep, no_servers,
    server_components, wait_listening, Workspace, READY_PATIENCE, STOP_GRACE,
};
use super::{
    DeployError, Deployment, FaultStep, LoadCell, MeasureError, Role, ScenarioTopology, Substrate,
    Target,
};
use crate::bins::Binaries;
use crate::suite::{Fault, Protocol, Variant};
use proxy::{start_proxy, Sidecar};

/// Authority the static-route variants' outbound proxy routes; what the
/// load generator sends them. (`weft` sends [`manifests::AUTHORITY`].)
pub const MESH_AUTHORITY: &str = "svc.weft.local";

/// Peers are handed a port we freed; another process may grab it first.
const PORT_ATTEMPTS: usize = 3;

/// Processes on this machine.
pub struct Local {
    ws: Workspace,
    /// The scenario's target server replicas, in order.
    servers: Vec<(Proc, SocketAddr)>,
    /// The scenario's control plane, or why it did not start (which fails
    /// only the variants that need it).
    control: Option<Result<ControlPlane, DeployError>>,
    /// What the fault scenarios act on (see `faults`).
    mesh: MeshState,
    /// The scenario's `proxy_args`, given to every proxy this deploys.
    proxy_args: Vec<String>,
}

/// The last deployment's mesh, as the fault scenarios need it.
#[derive(Default)]
struct MeshState {
    /// Every started mesh-proxy's admin address, by component name.
    admins: Vec<(String, SocketAddr)>,
    /// The server sidecars published as the Service's endpoints, replica order.
    published: Vec<SocketAddr>,
    /// A killed control plane, to be started again.
    stopped_control: Option<super::control::Restart>,
}

impl Local {
    /// `work` is the run's private temp dir (configs, logs, the pid file).
    pub fn new(bins: Binaries, work: &Path) -> Local {
        Local {
            ws: Workspace::new(bins, work),
            servers: Vec::new(),
            control: None,
            mesh: MeshState::default(),
            proxy_args: Vec::new(),
        }
    }

    async fn start_control(
        &mut self,
        cert_lifetime: Option<Duration>,
    ) -> Result<ControlPlane, DeployError> {
        let dir = self.ws.dir("control")?;
        ControlPlane::start(
            &self.ws.bins.mesh_control,
            &dir,
            &self.ws.pids_file,
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
            return Err(no_servers());
        }
        Ok(self.servers.iter().map(|(_, a)| *a).collect())
    }

    /// The last replica's server: its name and pid (the fault scenarios' victim).
    fn last_server(&self) -> Result<(String, u32), DeployError> {
        self.servers
            .last()
            .map(|(p, _)| (p.name().to_string(), p.pid()))
            .ok_or_else(|| DeployError::Start {
                component: "server".into(),
                detail: "no target server running".into(),
            })
    }

    /// The running control plane, taken out (to be killed).
    fn take_control(&mut self) -> Option<ControlPlane> {
        match self.control.take() {
            Some(Ok(cp)) => Some(cp),
            other => {
                self.control = other;
                None
            }
        }
    }

    fn put_control(&mut self, cp: ControlPlane) {
        self.control = Some(Ok(cp));
    }

    /// The scenario's control plane, for a variant that needs it.
    fn control_plane(&self) -> Result<&ControlPlane, DeployError> {
        control_of(&self.control)
    }

    /// Start one mesh-proxy (see [`start_proxy`]); a meshed one that never
    /// gets ready has the control plane's stderr added to the error. The
    /// second address is where a client of it sends: its outbound listener,
    /// or its TCP listener when the sidecar has one.
    async fn mesh_proxy(
        &mut self,
        mut s: Sidecar<'_>,
    ) -> Result<(Proc, SocketAddr, Option<SocketAddr>), DeployError> {
        s.extra_args.clone_from(&self.proxy_args);
        let meshed = s.identity.is_some();
        let name = s.name.to_string();
        let started = {
            let control = match meshed || s.discovery {
                true => Some(self.control_plane()?),
                false => None,
            };
            start_proxy(&self.ws.bins, &self.ws.pids_file, control, s).await
        };
        match started {
            Err(mut e) if meshed => {
                if let Some(Ok(cp)) = &self.control {
                    cp.explain(&mut e);
                }
                Err(e)
            }
            Err(e) => Err(e),
            Ok(st) => {
                self.mesh.admins.push((name, st.admin));
                let client_side = st.tcp_forward.or(st.tcp_services.first().copied());
                Ok((st.proc, client_side.unwrap_or(st.outbound), st.inbound))
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
        let peers = self.ws.peers.clone();
        self.spawn_peer(variant.as_str(), |dir, listen| {
            peers.command(variant, dir, listen, &upstreams, topo.protocol)
        })
        .await
    }

    /// `nginx-mtls` / `haproxy-mtls`: an inbound peer per replica (TLS in,
    /// client certificate required), then the outbound peer balancing over
    /// them. Returns the outbound's address and the inbounds' (where the
    /// chain carries TLS).
    async fn peer_chain(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
        components: &mut Vec<super::Component>,
        procs: &mut Vec<Proc>,
    ) -> Result<(SocketAddr, Vec<SocketAddr>), DeployError> {
        let pki = self.ws.chain_pki()?;
        let servers = self.server_addrs()?;
        let peers = self.ws.peers.clone();
        let mut inbounds = Vec::new();
        for (i, app) in servers.iter().enumerate() {
            let name = Side::Inbound.component(variant, (servers.len() > 1).then_some(i));
            let (p, listen) = self
                .spawn_peer(&name, |dir, listen| {
                    let hop = Hop { side: Side::Inbound, listen, upstreams: &[*app] };
                    peers_mtls::command(&peers, variant, &pki, dir, hop, topo.protocol)
                })
                .await?;
            keep(components, procs, p, Role::Proxy);
            inbounds.push(listen);
        }
        let name = Side::Outbound.component(variant, None);
        let (p, listen) = self
            .spawn_peer(&name, |dir, listen| {
                let hop = Hop { side: Side::Outbound, listen, upstreams: &inbounds };
                peers_mtls::command(&peers, variant, &pki, dir, hop, topo.protocol)
            })
            .await?;
        keep(components, procs, p, Role::Proxy);
        Ok((listen, inbounds))
    }

    /// Start the peer `make` writes the config and command of (given its
    /// dir and listen address) on a port we pick.
    async fn spawn_peer(
        &mut self,
        name: &str,
        make: impl Fn(&Path, SocketAddr) -> Result<std::process::Command, DeployError>,
    ) -> Result<(Proc, SocketAddr), DeployError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(|source| DeployError::Io {
                what: "pick a free port".into(),
                source,
            })?;
            let listen = SocketAddr::from(([127, 0, 0, 1], port));
            let dir = self.ws.dir(name)?;
            let cmd = make(&dir, listen)?;
            let mut p = self.ws.spawn(name, cmd, None)?;
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
            let server = self.ws.start_server(topo, i, "127.0.0.1:0", None, None).await?;
            self.servers.push(server);
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
        self.ws.available(variant)?;
        let servers = self.server_addrs()?;
        self.mesh = MeshState::default();
        self.proxy_args.clone_from(&topo.proxy_args);
        // Replica 0: where the single-address variants go.
        let server = servers[0];
        let tcp = topo.protocol.is_tcp();
        let mut components = server_components(self.servers.iter().map(|(p, _)| p));
        let mut procs = Vec::new();
        // Meshed server sidecars' inbounds, which must refuse plaintext.
        let mut strict_inbound = Vec::new();
        // The peer chain's inbounds, which must not serve plaintext.
        let mut tls_inbound = Vec::new();
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
                let mut client = Sidecar::meshed("proxy-outbound", CLIENT_ID, None);
                if tcp {
                    client.tcp_services = vec![format!("{}:{}", manifests::AUTHORITY, manifests::SERVICE_PORT)];
                }
                let (outb, outbound, _) = self.mesh_proxy(client).await?;
                keep(&mut components, &mut procs, outb, Role::Proxy);
                components.push(super::Component {
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
                    .mesh_proxy(Sidecar::plaintext_outbound(inbound).tcp_to(tcp, inbound))
                    .await?;
                keep(&mut components, &mut procs, outb, Role::Proxy);
                (outbound, Some(MESH_AUTHORITY.to_string()))
            }
            Variant::WeftClientOnly => {
                let (outb, outbound, _) = self
                    .mesh_proxy(Sidecar::plaintext_outbound(server).tcp_to(tcp, server))
                    .await?;
                keep(&mut components, &mut procs, outb, Role::Proxy);
                (outbound, Some(MESH_AUTHORITY.to_string()))
            }
            Variant::WeftServerOnly => {
                let (inb, _, inbound) = self.mesh_proxy(Sidecar::plaintext_inbound(server)).await?;
                keep(&mut components, &mut procs, inb, Role::Proxy);
                (inbound.expect("inbound requested"), None)
            }
            Variant::Linkerd | Variant::Istio => unreachable!("refused by Peers::check"),
            Variant::Nginx | Variant::Haproxy => {
                let (p, listen) = self.peer(variant, topo).await?;
                keep(&mut components, &mut procs, p, Role::Proxy);
                (listen, None)
            }
            Variant::NginxMtls | Variant::HaproxyMtls => {
                let (listen, inbounds) = self
                    .peer_chain(variant, topo, &mut components, &mut procs)
                    .await?;
                tls_inbound = inbounds;
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
        for &inbound in &tls_inbound {
            if let Ok(status @ 200..=299) = probe::get(inbound, None, "/healthz", Protocol::Http1).await {
                return Err(DeployError::Ready {
                    component: Side::Inbound.component(variant, None),
                    detail: format!(
                        "a plaintext GET /healthz to the {variant} chain's inbound peer {inbound} got {status}: the cell would not measure mTLS"
                    ),
                });
            }
        }
        let wire: Vec<String> = strict_inbound.iter().chain(&tls_inbound).map(ToString::to_string).collect();
        if !wire.is_empty() {
            // What to capture to see the chain's TLS (suites/README.md, "Seeing the wire").
            tracing::info!(variant = %variant, inter_proxy = %wire.join(","), "mTLS between the proxies");
        }
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
        let admins = self
            .mesh
            .admins
            .iter()
            .map(|(name, addr)| super::ProxyAdmin {
                component: name.clone(),
                outbound: name == "proxy-outbound",
                addr: *addr,
                netns: None,
            })
            .collect();
        Ok(Deployment {
            variant,
            target: Target::Addr(target),
            host,
            components,
            load_from: None,
            admins,
            procs,
        })
    }

    async fn measure(&mut self, dep: &Deployment, cell: &LoadCell<'_>) -> Result<record::Run, MeasureError> {
        super::load::in_process(self.name(), dep, cell).await
    }

    async fn teardown(&mut self, deployment: Deployment) {
        deployment.stop().await;
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
        self.ws.peers.versions()
    }

    async fn fault(
        &mut self,
        dep: &Deployment,
        fault: Fault,
        step: FaultStep,
    ) -> Result<String, DeployError> {
        self.fault_step(dep, fault, step).await
    }

    async fn scale(
        &mut self,
        dep: &Deployment,
        dimension: crate::suite::SweepDimension,
        size: usize,
    ) -> Result<super::Scaled, DeployError> {
        self.scale_to(dep, dimension, size).await
    }

    async fn deploy_cluster(
        &mut self,
        spec: &ClusterSpec,
        mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        self.deploy_topology(spec, mode).await
    }
}

/// A port that was free a moment ago (the listener is dropped on return).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
