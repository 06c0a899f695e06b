//! Disruptions the fault scenarios apply to a running `weft` deployment on
//! the local substrate: the victim is always the last server replica (the
//! others keep serving), or the control plane.
//!
//! ```text
//!  replica-kill     SIGKILL server-N and proxy-inbound-N; endpoint stays published
//!  control-restart  SIGKILL mesh-control ... start it again (same address, CA, manifests)
//!  cert-rotation    (certificates issued short-lived at scenario start) count renewals
//!  endpoint-churn   every tick: endpoints.yaml without / with replica N
//!  peer-freeze      SIGSTOP proxy-inbound-N ... SIGCONT
//! ```

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Local;
use crate::substrate::cleanup;
use crate::substrate::shared::STOP_GRACE;
use crate::substrate::{DeployError, Deployment, FaultStep};
use crate::suite::{Fault, Protocol};

impl Local {
    /// Apply one step of `fault` to `dep`; returns what was done, for the
    /// record's events (empty when the step does nothing for this fault).
    pub(super) async fn fault_step(
        &mut self,
        dep: &Deployment,
        fault: Fault,
        step: FaultStep,
    ) -> Result<String, DeployError> {
        match (fault, step) {
            (Fault::ReplicaKill, FaultStep::Begin) => {
                let (server, server_pid) = self.last_server()?;
                let (sidecar, sidecar_pid) = last_sidecar(dep)?;
                cleanup::signal_group(server_pid, Signal::SIGKILL);
                cleanup::signal_group(sidecar_pid, Signal::SIGKILL);
                Ok(format!(
                    "SIGKILL {server} (pid {server_pid}) and {sidecar} (pid {sidecar_pid}); its endpoint stays published"
                ))
            }
            (Fault::ControlRestart, FaultStep::Begin) => {
                let cp = match self.take_control() {
                    Some(cp) => cp,
                    None => return Err(no_control()),
                };
                let pid = cp.pid();
                cleanup::signal_group(pid, Signal::SIGKILL);
                self.mesh.stopped_control = Some(cp.stop_for_restart(STOP_GRACE).await);
                Ok(format!("SIGKILL mesh-control (pid {pid})"))
            }
            (Fault::ControlRestart, FaultStep::End) => {
                let restart = self.mesh.stopped_control.take().ok_or_else(no_control)?;
                let cp = restart.start().await?;
                let msg = format!("mesh-control started again (pid {}), serving", cp.pid());
                self.put_control(cp);
                Ok(msg)
            }
            (Fault::CertRotation, FaultStep::Begin | FaultStep::End) => {
                let counts = self.certificates_installed().await;
                Ok(format!("certificates installed so far: {counts}"))
            }
            (Fault::EndpointChurn, FaultStep::Tick(n)) => {
                let all = self.mesh.published.clone();
                let Some(last) = all.last().copied() else {
                    return Err(DeployError::Start {
                        component: "endpoints".into(),
                        detail: "no endpoints were published for this deployment".into(),
                    });
                };
                // Even ticks remove the last replica, odd ones add it back.
                let (list, what) = match n % 2 {
                    0 => (&all[..all.len() - 1], "removed"),
                    _ => (&all[..], "added back"),
                };
                self.control_plane()?.publish_endpoints(list)?;
                Ok(format!("endpoint {last} {what}"))
            }
            (Fault::EndpointChurn, FaultStep::End) => {
                let all = self.mesh.published.clone();
                self.control_plane()?.publish_endpoints(&all)?;
                Ok(format!("all {} endpoints published", all.len()))
            }
            (Fault::PeerFreeze, FaultStep::Begin | FaultStep::End) => {
                let (name, pid) = last_sidecar(dep)?;
                let sig = match step {
                    FaultStep::Begin => Signal::SIGSTOP,
                    _ => Signal::SIGCONT,
                };
                kill(Pid::from_raw(pid as i32), sig).map_err(|e| DeployError::Start {
                    component: name.clone(),
                    detail: format!("cannot send {sig} to pid {pid}: {e}"),
                })?;
                Ok(format!("{sig} {name} (pid {pid})"))
            }
            _ => Ok(String::new()),
        }
    }

    /// `weft_identity_certificates_total` of every mesh-proxy of the last
    /// deployment, `name=N` each (`name=?` when its admin did not answer).
    async fn certificates_installed(&self) -> String {
        let mut out = Vec::new();
        for (name, admin) in &self.mesh.admins {
            let n = match crate::substrate::probe::fetch(*admin, None, "/metrics", Protocol::Http1).await {
                Ok((200, body)) => metric(&String::from_utf8_lossy(&body), "weft_identity_certificates_total")
                    .map_or("?".to_string(), |v| format!("{v}")),
                _ => "?".to_string(),
            };
            out.push(format!("{name}={n}"));
        }
        out.join(", ")
    }
}

/// The server sidecar of the last replica, by the name `deploy` gave it.
fn last_sidecar(dep: &Deployment) -> Result<(String, u32), DeployError> {
    dep.components
        .iter()
        .filter(|c| c.name.starts_with("proxy-inbound"))
        .last()
        .map(|c| (c.name.clone(), c.pid))
        .ok_or_else(|| DeployError::Start {
            component: "proxy-inbound".into(),
            detail: format!("the {} deployment has no server sidecar to disrupt", dep.variant),
        })
}

fn no_control() -> DeployError {
    DeployError::Start {
        component: "control".into(),
        detail: "no control plane running to kill or restart".into(),
    }
}

/// The value of an unlabelled Prometheus sample `name` in `text`.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_reads_an_unlabelled_sample() {
        let text = "# HELP x\nweft_identity_certificates_total 3\nweft_identity_certificates_totally 9\n";
        assert_eq!(super::metric(text, "weft_identity_certificates_total"), Some(3.0));
        assert_eq!(super::metric(text, "missing"), None);
    }
}
