//! A transparent sidecar in a pod, shared by the benchmark's cells and the
//! conformance clusters: `mesh-proxy --transparent` as [`PROXY_UID`] on
//! ephemeral ports, then `weft init`'s iptables rules pointing at the ports
//! it announced (so no connection is ever redirected to a port nothing
//! listens on).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::net::{self, Pod};
use super::PROXY_UID;
use crate::bins::Binaries;
use crate::substrate::control::ControlPlane;
use crate::substrate::process::Proc;
use crate::substrate::shared::{addr, ready_error, READY_PATIENCE};
use crate::substrate::{probe, DeployError};
use crate::suite::Protocol;

/// Where a sidecar listens, as it announced (ephemeral ports, which
/// `weft init` is then told to redirect to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidecarPorts {
    pub outbound: u16,
    pub inbound: u16,
    pub admin: u16,
}

impl SidecarPorts {
    /// The admin listener (`/ready`, `/metrics`) as reached from inside
    /// the pod.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin))
    }
}

/// What a sidecar is told.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// Resolve targets through this control plane's Destination API and
    /// follow its Policy API; `None`: forward to the original destination.
    pub discovery: Option<&'a ControlPlane>,
    /// The workload identity, certified by `discovery`'s control plane
    /// (mTLS, and the app told who called); `None`: plaintext only.
    pub identity: Option<&'a str>,
    /// Accept plaintext on the inbound listener until (or without) a policy
    /// (`--default-inbound-policy all-unauthenticated`); needed by every
    /// sidecar without an identity and a control plane.
    pub inbound_plaintext: bool,
    /// Testing only: mesh features it must not apply (`mesh-proxy --disable`).
    pub disable: Option<&'a str>,
    /// More mesh-proxy flags, last (the scenario's `proxy_args`).
    pub extra_args: &'a [String],
}

/// Start a transparent sidecar in `pod` as [`PROXY_UID`] on ephemeral
/// ports, as `opts` says. Returns once its `/ready` answers (for one with
/// an identity: once it holds its certificate), with the ports it
/// announced.
pub async fn start(
    bins: &Binaries,
    pids_file: &Path,
    pod: &Pod,
    opts: Options<'_>,
) -> Result<(Proc, SidecarPorts), DeployError> {
    let mut cmd = Command::new(&bins.mesh_proxy);
    cmd.arg("--transparent")
        .args(["--outbound-listen", "127.0.0.1:0"])
        .args(["--inbound-listen", "0.0.0.0:0"])
        .args(["--admin-listen", "0.0.0.0:0"])
        // Same budget as each peer proxy: one worker thread.
        .args(["--threads", "1"]);
    if let Some(cp) = opts.discovery {
        if let Some(id) = opts.identity {
            cmd.args(cp.proxy_args(id)).arg("--forward-client-identity");
        }
        cmd.args(cp.discovery_args()).args(cp.trust_args());
    }
    if opts.inbound_plaintext {
        cmd.args(["--default-inbound-policy", "all-unauthenticated"]);
    }
    if let Some(features) = opts.disable {
        cmd.arg("--disable").arg(features);
    }
    cmd.args(opts.extra_args).uid(PROXY_UID).gid(PROXY_UID);
    let name = format!("proxy-{}", pod.name);
    let mut p = Proc::spawn_in(&name, cmd, pids_file, Some(&pod.ns_path()))?;
    let outbound = addr(&mut p, "listening outbound ").await?.port();
    let inbound = addr(&mut p, "listening inbound ").await?.port();
    let admin = addr(&mut p, "listening admin ").await?.port();
    let ports = SidecarPorts {
        outbound,
        inbound,
        admin,
    };
    let admin = ports.admin_addr();
    let ready = probe::until_ok_from(
        Some(&pod.ns_path()),
        admin,
        None,
        "/ready",
        Protocol::Http1,
        READY_PATIENCE,
    )
    .await;
    if let Err(e) = ready {
        let mut e = ready_error(&mut p, e);
        if let Some(cp) = opts.discovery {
            cp.explain(&mut e);
        }
        return Err(e);
    }
    Ok((p, ports))
}

/// Install `weft init`'s interception rules in `pod`, redirecting to the
/// sidecar's `ports` and leaving its admin port alone.
pub fn intercept(bins: &Binaries, pod: &Pod, ports: &SidecarPorts) -> Result<(), DeployError> {
    let (uid, outbound, inbound, admin) = (
        PROXY_UID.to_string(),
        ports.outbound.to_string(),
        ports.inbound.to_string(),
        ports.admin.to_string(),
    );
    let weft = bins.weft.to_string_lossy().into_owned();
    let args = [
        "init",
        "--proxy-uid",
        &uid,
        "--outbound-port",
        &outbound,
        "--inbound-port",
        &inbound,
        "--skip-inbound-ports",
        &admin,
    ];
    net::exec_in(&pod.ns, &weft, &args, None)
        .map(|_| ())
        .map_err(|e| DeployError::Start {
            component: format!("weft init in {}", pod.name),
            detail: e.to_string(),
        })
}

/// Remove them again (`weft init --cleanup`), for a pod that outlives its
/// sidecar.
pub fn release(bins: &Binaries, pod: &Pod) {
    let weft = bins.weft.to_string_lossy().into_owned();
    if let Err(e) = net::exec_in(&pod.ns, &weft, &["init", "--cleanup"], None) {
        eprintln!(
            "bench: removing the interception rules in {}: {e}",
            pod.name
        );
    }
}
