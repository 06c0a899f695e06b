//! The deployment `bench hostile` attacks, on the local substrate: one
//! control plane, one echo app, and three mesh-proxies with every listener
//! the attacks need.
//!
//! ```text
//!  well-behaved client ─> proxy-outbound (client identity, discovery)
//!  attacker ──────────────┘   │ Host svc.bench.svc.cluster.local, mTLS + h2
//!                             ▼
//!  attacker (mTLS, valid cert) ─> proxy-inbound-mtls  (server identity, strict, policy) ─┐
//!  attacker (plaintext) ───────> proxy-inbound-plain (server identity, plaintext allowed) ┴─> echo app
//! ```
//!
//! Every proxy runs with its default limits and timeouts (what a user
//! deploys), so what the attacks find is what users get.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::proxy::{start_proxy, Sidecar};
use crate::substrate::control::{ControlOptions, ControlPlane, CLIENT_ID, SERVER_ID};
use crate::substrate::manifests;
use crate::substrate::probe;
use crate::substrate::process::Proc;
use crate::substrate::shared::{addr, READY_PATIENCE, STOP_GRACE};
use crate::substrate::DeployError;
use crate::bins::Binaries;
use crate::suite::Protocol;

/// One attacked proxy.
#[derive(Clone, Debug)]
pub struct Attacked {
    pub name: &'static str,
    pub pid: u32,
    /// The listener the attacks go to.
    pub listen: SocketAddr,
}

/// What the attacks need to know about the deployment.
pub struct HostileMesh {
    pub outbound: Attacked,
    pub inbound_mtls: Attacked,
    pub inbound_plain: Attacked,
    /// The echo app behind both inbound proxies.
    pub app: SocketAddr,
    /// What a request to the outbound listener names to reach the app.
    pub authority: &'static str,
    /// mesh-control's gRPC address, where the attacker gets its certificate.
    pub control_addr: SocketAddr,
    pub control_pid: u32,
    /// The client workload's bootstrap token: the attacker on the mTLS
    /// listener is a meshed workload gone rogue.
    pub client_token: PathBuf,
    pub trust_anchor: PathBuf,
    procs: Vec<Proc>,
    control: ControlPlane,
}

impl HostileMesh {
    /// Start everything under `work` and wait until a request through
    /// outbound -> inbound-mtls -> app and one through inbound-plain -> app
    /// both succeed, and a plaintext request to inbound-mtls is refused.
    pub async fn start(bins: &Binaries, work: &Path) -> Result<HostileMesh, DeployError> {
        let pids = work.join("pids");
        let io = |what: String| move |source| DeployError::Io { what, source };
        let control_dir = work.join("control");
        std::fs::create_dir_all(&control_dir).map_err(io(format!("create {}", control_dir.display())))?;
        let control =
            ControlPlane::start(&bins.mesh_control, &control_dir, &pids, READY_PATIENCE, ControlOptions::local())
                .await?;
        let mut procs = Vec::new();
        let mut cmd = Command::new(&bins.loadgen);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--echo", "--name", "app", "--threads", "1"]);
        let mut app_proc = Proc::spawn("app", cmd, &pids)?;
        let app = addr(&mut app_proc, "listening on ").await?;
        procs.push(app_proc);

        let mtls = start_proxy(
            bins,
            &pids,
            Some(&control),
            Sidecar::meshed("proxy-inbound-mtls", SERVER_ID, Some(app)),
        )
        .await?;
        let mut plain_sidecar = Sidecar::meshed("proxy-inbound-plain", SERVER_ID, Some(app));
        // No policy: the namespace default (all-authenticated) would refuse
        // every plaintext request before the attacks reach HTTP.
        plain_sidecar.discovery = false;
        plain_sidecar.inbound_plaintext = true;
        let plain = start_proxy(bins, &pids, Some(&control), plain_sidecar).await?;
        let inbound_mtls = Attacked {
            name: "proxy-inbound-mtls",
            pid: mtls.proc.pid(),
            listen: mtls.inbound.expect("inbound requested"),
        };
        let inbound_plain = Attacked {
            name: "proxy-inbound-plain",
            pid: plain.proc.pid(),
            listen: plain.inbound.expect("inbound requested"),
        };
        procs.push(mtls.proc);
        procs.push(plain.proc);
        control.publish_endpoints(&[inbound_mtls.listen])?;
        let out = start_proxy(bins, &pids, Some(&control), Sidecar::meshed("proxy-outbound", CLIENT_ID, None)).await?;
        let outbound = Attacked { name: "proxy-outbound", pid: out.proc.pid(), listen: out.outbound };
        procs.push(out.proc);

        let not_ready = |component: &str, detail: String| DeployError::Ready { component: component.into(), detail };
        probe::until_ok(outbound.listen, Some(manifests::AUTHORITY), "/healthz", Protocol::Http1, READY_PATIENCE)
            .await
            .map_err(|e| not_ready("proxy-outbound", format!("GET /healthz through outbound -> inbound-mtls: {e}")))?;
        probe::until_ok(inbound_plain.listen, None, "/healthz", Protocol::Http1, READY_PATIENCE)
            .await
            .map_err(|e| not_ready("proxy-inbound-plain", format!("plaintext GET /healthz: {e}")))?;
        match probe::get(inbound_mtls.listen, None, "/healthz", Protocol::Http1).await {
            Ok(403) => {}
            other => {
                return Err(not_ready(
                    "proxy-inbound-mtls",
                    format!("a plaintext GET /healthz must be refused with 403, got {other:?}"),
                ))
            }
        }
        let client_token = control
            .token_file(CLIENT_ID)
            .ok_or_else(|| not_ready("control", format!("no token file for {CLIENT_ID}")))?
            .to_path_buf();
        Ok(HostileMesh {
            outbound,
            inbound_mtls,
            inbound_plain,
            app,
            authority: manifests::AUTHORITY,
            control_addr: control.addr(),
            control_pid: control.pid(),
            client_token,
            trust_anchor: control.trust_anchor().to_path_buf(),
            procs,
            control,
        })
    }

    /// Whether every process is still running (a crash is a finding).
    pub fn exited(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| p.exited().map(|s| format!("{} exited ({s}); stderr tail:\n{}", p.name(), p.stderr_tail())))
            .collect()
    }

    /// Stop everything, client side first.
    pub async fn stop(self) {
        for p in self.procs.into_iter().rev() {
            p.stop(STOP_GRACE).await;
        }
        self.control.stop(STOP_GRACE).await;
    }
}
