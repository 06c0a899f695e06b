//! What the mesh-behaviour tests do to a running cluster besides sending
//! requests: read a sidecar's admin endpoint, capture a pod's wire, stop and
//! restart the control plane, terminate a pod, crash and restart an app.
//!
//! All of it is generic over the substrate, given what the substrate hands
//! the [`Cluster`] when it deploys (see [`Substrate::deploy_cluster`](crate::substrate::Substrate::deploy_cluster)):
//! [`Cluster::keep_pod`] for every pod's sidecar and app,
//! [`Cluster::set_app_restart`] per pod, [`Cluster::set_control`] and
//! [`Cluster::publish_topology`]. Processes inside a pod's network
//! namespace are reached through its `netns` (admin, app, capture).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{send, yaml, Cluster, Dial, NamespaceSpec, Req};
use crate::substrate::process::Proc;
use crate::substrate::DeployError;

/// The manifest file holding the topology's own objects (Namespaces,
/// Services, Pods, EndpointSlices).
pub const TOPOLOGY_FILE: &str = "topology.yaml";

/// Time a sidecar or app gets to drain after SIGTERM before SIGKILL.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Time a restarted process gets to answer.
const RESTART_PATIENCE: Duration = Duration::from_secs(10);

/// Which process of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sidecar,
    App,
}

/// A process the cluster keeps, and the pod it belongs to (if any).
pub(super) struct Kept {
    pub(super) pod: Option<(String, Role)>,
    pub(super) proc: Proc,
}

/// Starts a pod's app again on the same address (as a restarted container).
pub type AppRestart = Box<dyn Fn() -> Result<Proc, DeployError> + Send + Sync>;

/// Why an operation on the cluster did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// This substrate (or this deployment, e.g. baseline) cannot do it.
    #[error("{0}")]
    NotExpressible(String),
    #[error("{0}")]
    Failed(String),
}

/// A running packet capture of one pod's inbound port.
pub struct Capture {
    proc: Option<Proc>,
    file: PathBuf,
    _dir: tempfile::TempDir,
    what: String,
}

impl Capture {
    /// Stop capturing and return the pcap file's bytes and tcpdump's last
    /// words (its packet counts).
    pub async fn finish(mut self) -> Result<(Vec<u8>, String), OpError> {
        let mut said = String::new();
        if let Some(mut p) = self.proc.take() {
            // tcpdump hands each packet over at once (--immediate-mode),
            // writes it as it comes (-U) and closes the file on SIGTERM; a
            // moment for the last segments to be read first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            crate::substrate::cleanup::signal_group(p.pid(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while p.exited().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            said = p.stderr_tail();
            p.stop(Duration::ZERO).await;
        }
        let bytes = std::fs::read(&self.file).map_err(|e| {
            OpError::Failed(format!(
                "capture of {}: read {}: {e}",
                self.what,
                self.file.display()
            ))
        })?;
        let said = said.lines().map(str::trim).collect::<Vec<_>>().join("; ");
        Ok((bytes, format!("{}: {said}", self.what)))
    }
}

impl Cluster {
    /// Write the topology's objects ([`yaml::render`]) as [`TOPOLOGY_FILE`]
    /// into the control plane's manifests, leaving out the endpoints of
    /// terminating pods; remembers `namespaces` for later rewrites.
    pub fn publish_topology(&mut self, namespaces: &[NamespaceSpec]) -> std::io::Result<()> {
        self.namespaces = namespaces.to_vec();
        self.write_topology()
    }

    fn write_topology(&self) -> std::io::Result<()> {
        let gone = self.terminating.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut services = self.services.clone();
        for s in &mut services {
            s.pods.retain(|&i| !gone.contains(&self.pods[i].name));
        }
        let text = yaml::render(&self.namespaces, &services, &self.pods, self.interception);
        self.apply(TOPOLOGY_FILE, &text)
    }

    /// GET `path` from pod `pod`'s sidecar admin listener; the body.
    pub async fn admin_get(&self, pod: &str, path: &str) -> Result<String, OpError> {
        let p = self.pod(pod).map_err(|e| OpError::Failed(e.to_string()))?;
        let admin = p.admin.ok_or_else(|| match p.meshed {
            true => OpError::NotExpressible(format!(
                "{}: the substrate does not give pod {pod}'s sidecar admin address",
                self.substrate
            )),
            false => OpError::NotExpressible(format!("pod {pod} has no sidecar (no admin endpoint)")),
        })?;
        let dial = Dial {
            connect: admin,
            authority: admin.to_string(),
            netns: p.netns.clone(),
            via_sidecar: false,
        };
        let r = send::send(&dial, &Req::get(path)).await;
        match (&r.error, r.status) {
            (None, 200) => Ok(String::from_utf8_lossy(&r.body).into_owned()),
            _ => Err(OpError::Failed(format!(
                "GET {path} from pod {pod}'s sidecar admin {admin}: {}",
                r.describe()
            ))),
        }
    }

    /// The sum of every sample of `metric` in pod `pod`'s sidecar
    /// `/metrics` whose labels include all of `labels` (`name="value"`).
    pub async fn metric(&self, pod: &str, metric: &str, labels: &[&str]) -> Result<f64, OpError> {
        let text = self.admin_get(pod, "/metrics").await?;
        Ok(sum_samples(&text, metric, labels))
    }

    /// Stop mesh-control (the proxies keep what they learnt).
    pub async fn stop_control(&self) -> Result<(), OpError> {
        let cp = self.control.lock().unwrap_or_else(|e| e.into_inner()).take();
        let cp = cp.ok_or_else(|| {
            OpError::NotExpressible("no control plane is running in this deployment".into())
        })?;
        let restart = cp.stop_for_restart(Duration::from_secs(2)).await;
        *self.control_restart.lock().unwrap_or_else(|e| e.into_inner()) = Some(restart);
        Ok(())
    }

    /// Start mesh-control again after [`Cluster::stop_control`]: same
    /// address, CA, tokens and manifests.
    pub async fn start_control(&self) -> Result<(), OpError> {
        let restart = self.control_restart.lock().unwrap_or_else(|e| e.into_inner()).take();
        let restart = restart.ok_or_else(|| {
            OpError::Failed("the control plane was not stopped by stop_control".into())
        })?;
        let cp = restart
            .start()
            .await
            .map_err(|e| OpError::Failed(format!("restart mesh-control: {e}")))?;
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(cp);
        Ok(())
    }

    /// Terminate pod `pod`: take it out of its Services' endpoints and, at
    /// the same moment, SIGTERM its sidecar and its app together, as
    /// Kubernetes does (each SIGKILLed after a drain grace).
    pub async fn terminate_pod(&self, pod: &str) -> Result<(), OpError> {
        self.pod(pod).map_err(|e| OpError::Failed(e.to_string()))?;
        if self.manifests_dir.is_none() {
            return Err(OpError::NotExpressible(
                "no control plane: endpoints cannot be changed in this deployment".into(),
            ));
        }
        self.terminating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pod.to_string());
        self.write_topology()
            .map_err(|e| OpError::Failed(format!("rewrite {TOPOLOGY_FILE}: {e}")))?;
        let sidecar = self.take_procs(pod, &[Role::Sidecar]);
        let app = self.take_procs(pod, &[Role::App]);
        if sidecar.is_empty() && app.is_empty() {
            return Err(self.not_handed_over(pod));
        }
        // As Kubernetes does: SIGTERM to the app and its sidecar at once.
        // The app may be gone while its sidecar drains; what the sidecar
        // still receives for it is answered with `weft-proxy-error-kind:
        // connect|upstream`, which the client's proxy sends elsewhere.
        futures_util::future::join_all(sidecar.into_iter().chain(app).map(|p| p.stop(DRAIN_GRACE))).await;
        Ok(())
    }

    /// Crash pod `pod`'s app (SIGKILL); its sidecar keeps running.
    pub async fn kill_app(&self, pod: &str) -> Result<(), OpError> {
        let procs = self.take_procs(pod, &[Role::App]);
        if procs.is_empty() {
            return Err(self.not_handed_over(pod));
        }
        for p in procs {
            p.stop(Duration::ZERO).await;
        }
        Ok(())
    }

    /// Start pod `pod`'s app again (after [`Cluster::kill_app`]) on the same
    /// address, and wait until it answers.
    pub async fn restart_app(&self, pod: &str) -> Result<(), OpError> {
        let p = self.pod(pod).map_err(|e| OpError::Failed(e.to_string()))?;
        let (_, restart) = self
            .app_restarts
            .iter()
            .find(|(name, _)| name == pod)
            .ok_or_else(|| {
                OpError::NotExpressible(format!(
                    "{}: the substrate cannot restart pod {pod}'s app",
                    self.substrate
                ))
            })?;
        let proc = restart().map_err(|e| OpError::Failed(format!("restart {pod}'s app: {e}")))?;
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Kept {
                pod: Some((pod.to_string(), Role::App)),
                proc,
            });
        let dial = Dial {
            connect: p.app,
            authority: p.app.to_string(),
            netns: p.netns.clone(),
            via_sidecar: false,
        };
        let deadline = Instant::now() + RESTART_PATIENCE;
        loop {
            let r = send::send(&dial, &Req::get("/healthz").timeout(Duration::from_secs(1))).await;
            if r.error.is_none() && r.status == 200 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OpError::Failed(format!(
                    "pod {pod}'s restarted app at {} did not answer /healthz within {RESTART_PATIENCE:?}: {}",
                    p.app,
                    r.describe()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn not_handed_over(&self, pod: &str) -> OpError {
        match self.app_restarts.iter().any(|(p, _)| p == pod) {
            // Known pod, processes already stopped by the test.
            true => OpError::Failed(format!("pod {pod}'s processes are already stopped")),
            false => OpError::NotExpressible(format!(
                "{}: the substrate does not hand over pod {pod}'s processes (Cluster::keep_pod)",
                self.substrate
            )),
        }
    }

    fn take_procs(&self, pod: &str, roles: &[Role]) -> Vec<Proc> {
        let mut all = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, rest): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|k| matches!(&k.pod, Some((p, r)) if p == pod && roles.contains(r)));
        *all = rest;
        mine.into_iter().map(|k| k.proc).collect()
    }

    /// Start capturing the TCP traffic to and from pod `pod`'s address
    /// (its IP and endpoint port: where its sidecar receives) with
    /// tcpdump; returns once it captures.
    pub async fn capture(&self, pod: &str) -> Result<Capture, OpError> {
        let p = self.pod(pod).map_err(|e| OpError::Failed(e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("weft-capture-")
            .tempdir()
            .map_err(|e| OpError::Failed(format!("capture: temp dir: {e}")))?;
        let file = dir.path().join("wire.pcap");
        // Loopback carries every local pod; a pod's own namespace has its
        // interfaces (the veth) and its loopback.
        let interface = if p.netns.is_some() { "any" } else { "lo" };
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", interface, "--immediate-mode", "-U", "-s", "0", "-n", "-Z", "root", "-w"])
            .arg(&file)
            // Not the sidecar's own leg to the app: that one is plaintext
            // by design. Inside a pod's namespace it runs over lo, from the
            // pod IP (explicit sidecars) or from 127.0.0.6 (transparent
            // inbound, so weft init's hairpin rule lets it through).
            .arg(format!(
                "tcp port {port} and host {ip} and not (src host {ip} and dst host {ip}) and not host 127.0.0.6",
                port = p.endpoint_port,
                ip = p.ip
            ));
        let what = format!("pod {pod} ({interface}, {}:{})", p.ip, p.endpoint_port);
        let mut proc = Proc::spawn_in(
            &format!("tcpdump {pod}"),
            cmd,
            &dir.path().join("pids"),
            p.netns.as_deref(),
        )
        .map_err(|e| OpError::NotExpressible(format!("capture of {what}: {e}")))?;
        let deadline = Instant::now() + RESTART_PATIENCE;
        while !proc.stderr_tail().contains("listening on") {
            if let Some(status) = proc.exited() {
                return Err(OpError::Failed(format!(
                    "tcpdump for {what} exited ({status}): {}",
                    proc.stderr_tail()
                )));
            }
            if Instant::now() >= deadline {
                return Err(OpError::Failed(format!(
                    "tcpdump for {what} did not start capturing within {RESTART_PATIENCE:?}: {}",
                    proc.stderr_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Capture {
            proc: Some(proc),
            file,
            _dir: dir,
            what,
        })
    }

    /// Pod `pod`'s app address, for a test that reaches it unmeshed.
    pub fn app_addr(&self, pod: &str) -> Result<SocketAddr, OpError> {
        self.pod(pod)
            .map(|p| p.app)
            .map_err(|e| OpError::Failed(e.to_string()))
    }
}

/// GET `/healthz` from here (the caller's network namespace) at `connect`
/// with `authority` until it answers 200, or 403 from a sidecar (the
/// destination's authorization policy refusing: the path is there), within
/// `patience`; the last answer otherwise. A mesh's readiness check.
pub(crate) async fn until_reached(
    connect: SocketAddr,
    authority: &str,
    patience: Duration,
) -> Result<(), String> {
    let dial = Dial {
        connect,
        authority: authority.to_string(),
        netns: None,
        via_sidecar: true,
    };
    let req = Req::get("/healthz").timeout(Duration::from_secs(2));
    let deadline = Instant::now() + patience;
    loop {
        let r = send::send(&dial, &req).await;
        let refused_by_policy = r.status == 403 && r.header("weft-proxy-error").is_some();
        if r.error.is_none() && (r.status == 200 || refused_by_policy) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{} (gave up after {patience:?})", r.describe()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sum of the samples of `metric` (a counter's `_total` included) whose
/// label set contains every one of `labels` (`name="value"`).
pub fn sum_samples(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = match series.split_once('{') {
                Some((n, r)) => (n, r.trim_end_matches('}')),
                None => (series, ""),
            };
            let named = name == metric || name == format!("{metric}_total");
            let labelled = labels.iter().all(|want| rest.split(',').any(|l| l.trim() == *want));
            (named && labelled).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_sum_by_name_and_labels() {
        let text = "# HELP weft_requests x\n\
            weft_requests_total{direction=\"inbound\",status_class=\"5xx\"} 7\n\
            weft_requests_total{direction=\"inbound\",status_class=\"2xx\"} 3\n\
            weft_requests_total{direction=\"outbound\",status_class=\"5xx\"} 100\n\
            weft_identity_certificates_total 2\n";
        assert_eq!(sum_samples(text, "weft_requests", &["direction=\"inbound\""]), 10.0);
        assert_eq!(
            sum_samples(
                text,
                "weft_requests",
                &["direction=\"inbound\"", "status_class=\"5xx\""]
            ),
            7.0
        );
        assert_eq!(sum_samples(text, "weft_identity_certificates", &[]), 2.0);
        assert_eq!(sum_samples(text, "weft_nothing", &[]), 0.0);
    }
}
