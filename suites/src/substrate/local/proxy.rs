//! Starting one mesh-proxy on the local substrate: ephemeral 127.0.0.1
//! ports, addressed explicitly, certified by and discovering through the
//! scenario's (or the topology's) control plane when asked.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::MESH_AUTHORITY;
use crate::bins::Binaries;
use crate::substrate::control::ControlPlane;
use crate::substrate::probe;
use crate::substrate::process::Proc;
use crate::substrate::shared::{addr, ready_error, READY_PATIENCE};
use crate::substrate::DeployError;
use crate::suite::Protocol;

/// One mesh-proxy to start.
pub(crate) struct Sidecar<'a> {
    pub(crate) name: &'a str,
    /// Workload identity (certified by the control plane); `None`: a
    /// plaintext-only proxy.
    pub(crate) identity: Option<&'a str>,
    /// A static route: where [`MESH_AUTHORITY`] goes, in plaintext (the
    /// meshed `weft` path is discovered instead).
    pub(crate) route: Option<SocketAddr>,
    /// The application behind the inbound listener.
    pub(crate) app: Option<SocketAddr>,
    /// Accept plaintext on the inbound listener until (or without) a policy
    /// (`--default-inbound-policy all-unauthenticated`; the proxy's default
    /// refuses it, and a plaintext-only proxy with an app must say so).
    pub(crate) inbound_plaintext: bool,
    /// Resolve authorities through the control plane's Destination API and
    /// follow its Policy API (meshed proxies only).
    pub(crate) discovery: bool,
    /// Tell the app who called (`weft-client-id`) on requests over mTLS.
    pub(crate) forward_client_identity: bool,
    /// Testing only: mesh features this proxy must not apply
    /// (`--disable`, e.g. `routes`), so conformance tests can show they fail.
    pub(crate) disable: Option<&'static str>,
    /// Where the inbound listener binds [default: 127.0.0.1:0].
    pub(crate) inbound_listen: Option<SocketAddr>,
    /// Opaque TCP listeners on 127.0.0.1:0, one per authority
    /// (`--tcp-service`), in order.
    pub(crate) tcp_services: Vec<String>,
    /// An opaque TCP listener on 127.0.0.1:0 relaying in plaintext to this
    /// address (`--tcp-forward`).
    pub(crate) tcp_forward: Option<SocketAddr>,
    /// More mesh-proxy flags, last (the scenario's `proxy_args`).
    pub(crate) extra_args: Vec<String>,
}

impl<'a> Sidecar<'a> {
    /// A meshed proxy: identity from the control plane, strict inbound
    /// (the default policy, as deployed), targets found through Destination.
    pub(crate) fn meshed(name: &'a str, identity: &'a str, app: Option<SocketAddr>) -> Sidecar<'a> {
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
            tcp_forward: None,
            extra_args: Vec::new(),
        }
    }

    /// A plaintext server sidecar in front of `app`.
    pub(crate) fn plaintext_inbound(app: SocketAddr) -> Sidecar<'static> {
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
            tcp_forward: None,
            extra_args: Vec::new(),
        }
    }

    /// With `tcp`, also an opaque TCP listener relaying to `to` in plaintext.
    pub(crate) fn tcp_to(self, tcp: bool, to: SocketAddr) -> Sidecar<'a> {
        Sidecar {
            tcp_forward: tcp.then_some(to),
            ..self
        }
    }

    /// A plaintext client sidecar that routes [`MESH_AUTHORITY`] to `route`.
    pub(crate) fn plaintext_outbound(route: SocketAddr) -> Sidecar<'static> {
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
            tcp_forward: None,
            extra_args: Vec::new(),
        }
    }
}

/// Start one mesh-proxy on ephemeral 127.0.0.1 ports (certified by, and
/// discovering through, `control` when the sidecar asks for it); returns it
/// with its outbound, inbound (when `app` is given) and admin addresses,
/// once `/ready` answers 200 (for a meshed proxy: once it holds its
/// certificate).
pub(crate) async fn start_proxy(
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
    if let Some(to) = s.tcp_forward {
        cmd.arg("--tcp-forward").arg(format!("127.0.0.1:0={to}"));
    }
    // Same budget as each peer proxy: one worker thread.
    cmd.args(["--threads", "1"]).args(&s.extra_args);
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
    let tcp_forward = match p.seen_lines("listening tcp ").first() {
        Some(text) => Some(text.parse().map_err(|_| {
            p.failure(&format!("printed `listening tcp {text}`, which is not an ip:port"))
        })?),
        None => None,
    };
    Ok(Started {
        proc: p,
        outbound,
        inbound,
        admin,
        tcp_services,
        tcp_forward,
    })
}

/// A started mesh-proxy and its listeners.
pub(crate) struct Started {
    pub(crate) proc: Proc,
    pub(crate) outbound: SocketAddr,
    pub(crate) inbound: Option<SocketAddr>,
    pub(crate) admin: SocketAddr,
    /// One per `--tcp-service`, in order.
    pub(crate) tcp_services: Vec<SocketAddr>,
    /// The `--tcp-forward` listener.
    pub(crate) tcp_forward: Option<SocketAddr>,
}

