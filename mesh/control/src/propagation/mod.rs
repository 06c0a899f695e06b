//! Measurement harness (numbers, not assertions): how long a change of an
//! EndpointSlice takes to reach a `Destination.Get` stream, and
//! mesh-control's RSS with a large index. Runs the real binary on
//! 127.0.0.1:0 with `services` Services of `endpoints_per_service` endpoints
//! each (addresses in 127.0.0.0/8, written as data, never dialed), from
//! either backend: a scratch manifests directory (the change is a file
//! renamed into place) or the Kubernetes API ([`fake_api`]: the change is a
//! `MODIFIED` event on the EndpointSlice watch).
//!
//! Called by `bench` (the `propagation` scenario mode, e.g. in suites/quick.toml)
//! with the binary it built; suites/tests/discovery.rs runs it on every ci/test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_api::destination::v1::destination_client::DestinationClient;
use mesh_api::destination::v1::{update, GetDestination, Update};
use tokio::io::{AsyncBufReadExt, BufReader};
use mesh_identity::{control_identity, ControlEndpoint, TrustAnchors};

pub mod fake_api;

/// Where mesh-control reads the Services from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `--manifests DIR`, followed by notifications.
    #[default]
    Manifests,
    /// `--backend kubernetes` against [`fake_api::FakeApi`].
    Kubernetes,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct PropagationConfig {
    /// The `mesh-control` binary.
    pub binary: PathBuf,
    pub backend: Backend,
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Edits measured, each to a different watched Service.
    pub changes: usize,
    /// `--manifests-poll` of the control plane (its poll without
    /// notifications; edits are spread over it).
    pub poll: Duration,
    /// Longest wait for any one step.
    pub patience: Duration,
}

impl PropagationConfig {
    /// The brief's scale: 1000 Services, 2000 endpoints, 20 changes, 250ms poll.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            backend: Backend::Manifests,
            services: 1000,
            endpoints_per_service: 2,
            changes: 20,
            poll: Duration::from_millis(250),
            patience: Duration::from_secs(30),
        }
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct PropagationReport {
    pub services: usize,
    pub endpoints: usize,
    /// Start of the process until it listened (includes the initial load).
    pub startup: Duration,
    /// Edit (rename into place, or watch event sent) until the watching
    /// stream's next message.
    pub samples: Vec<Duration>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// mesh-control's VmRSS after the edits, KiB.
    pub rss_kib: u64,
}

impl std::fmt::Display for PropagationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} services / {} endpoints: startup {:.0} ms; propagation over {} changes p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS {:.1} MiB",
            self.services,
            self.endpoints,
            self.startup.as_secs_f64() * 1e3,
            self.samples.len(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.rss_kib as f64 / 1024.0
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("mesh-control: {0}")]
    ControlPlane(String),
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PropagationError {
    let what = what.into();
    move |source| PropagationError::Io { what, source }
}

/// Service `i`'s manifest; `generation` shifts its first endpoint's address.
fn manifest(i: usize, endpoints: usize, generation: usize) -> String {
    let ip = |n: usize| format!("127.{}.{}.{}", 100 + (n >> 16) % 100, (n >> 8) & 0xff, n & 0xff);
    let mut eps = String::new();
    for e in 0..endpoints {
        let n = if e == 0 { 1_000_000 + i * 64 + generation } else { i * endpoints + e };
        eps.push_str(&format!("- addresses: [\"{}\"]\n", ip(n)));
    }
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec: {{clusterIP: \"{}\", ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}",
        ip(500_000 + i)
    )
}

/// Service `i` and its slice as the Kubernetes API serves them (the same
/// objects as [`manifest`]).
fn kube_objects(i: usize, endpoints: usize, generation: usize) -> (serde_json::Value, serde_json::Value) {
    let ip = |n: usize| format!("127.{}.{}.{}", 100 + (n >> 16) % 100, (n >> 8) & 0xff, n & 0xff);
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| {
            let n = if e == 0 { 1_000_000 + i * 64 + generation } else { i * endpoints + e };
            serde_json::json!({"addresses": [ip(n)]})
        })
        .collect();
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench", "resourceVersion": "1"},
        "spec": {"clusterIP": ip(500_000 + i), "ports": [{"name": "http", "port": 80}]}
    });
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench", "resourceVersion": (generation + 1).to_string(),
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps
    });
    (service, slice)
}

fn write(dir: &Path, i: usize, text: &str) -> Result<(), PropagationError> {
    let tmp = dir.join(format!(".svc-{i}.tmp"));
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(format!("svc-{i}.yaml"))).map_err(io("renaming a manifest"))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The trust domain the measured mesh-control issues in.
const TRUST_DOMAIN: &str = "cluster.local";

/// Runs the measurement; the scratch directory and the process are gone when it returns.
pub async fn measure(cfg: &PropagationConfig) -> Result<PropagationReport, PropagationError> {
    let scratch = tempfile::tempdir().map_err(io("creating a scratch directory"))?;
    let dir = scratch.path().join("manifests");
    let data = scratch.path().join("data");
    let mut command = tokio::process::Command::new(&cfg.binary);
    command.args(["--listen", "127.0.0.1:0", "--trust-domain", TRUST_DOMAIN, "--data-dir"]).arg(&data);
    let api = match cfg.backend {
        Backend::Manifests => {
            std::fs::create_dir(&dir).map_err(io("creating the manifests directory"))?;
            for i in 0..cfg.services {
                write(&dir, i, &manifest(i, cfg.endpoints_per_service, 0))?;
            }
            command.arg("--manifests").arg(&dir).arg("--manifests-poll").arg(format!("{}ms", cfg.poll.as_millis()));
            None
        }
        Backend::Kubernetes => {
            let (services, endpoint_slices) =
                (0..cfg.services).map(|i| kube_objects(i, cfg.endpoints_per_service, 0)).unzip();
            let api = fake_api::FakeApi::start(fake_api::Objects { services, endpoint_slices })
                .await
                .map_err(io("starting the fake Kubernetes API server"))?;
            let kubeconfig = scratch.path().join("kubeconfig");
            std::fs::write(&kubeconfig, api.kubeconfig()).map_err(io("writing the kubeconfig"))?;
            command.args(["--backend", "kubernetes"]).env("KUBECONFIG", kubeconfig);
            Some(api)
        }
    };
    let started = Instant::now();
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(io(format!("starting {}", cfg.binary.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| PropagationError::ControlPlane("no stdout".into()))?;
    let line = tokio::time::timeout(cfg.patience, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| PropagationError::Timeout("the listening line".into()))?
        .map_err(io("reading mesh-control's stdout"))?
        .ok_or_else(|| PropagationError::ControlPlane("exited before listening".into()))?;
    let startup = started.elapsed();
    let addr: SocketAddr = line
        .strip_prefix("listening grpc ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| PropagationError::ControlPlane(format!("unexpected stdout line {line:?}")))?;
    // mesh-control serves TLS only: verify it as a proxy does, by the trust
    // anchor it wrote into its data directory and its own SPIFFE ID.
    let control = |e: &dyn std::fmt::Display| PropagationError::ControlPlane(e.to_string());
    let pem = std::fs::read(data.join("trust-anchor.pem")).map_err(io("reading mesh-control's trust anchor"))?;
    let anchors = TrustAnchors::from_pem(TRUST_DOMAIN, &pem).map_err(|e| control(&e))?;
    let identity = control_identity(TRUST_DOMAIN).map_err(|e| control(&e))?;
    let endpoint = ControlEndpoint::new(&addr.to_string(), anchors, identity).map_err(|e| control(&e))?;
    let channel = endpoint.channel(endpoint.endpoint()).map_err(|e| control(&e))?;
    let mut client = DestinationClient::new(channel);

    // Watch `changes` Services spread over the index, each with its first message read.
    let changes = cfg.changes.min(cfg.services);
    let watched: Vec<usize> = (0..changes).map(|k| k * cfg.services / changes.max(1)).collect();
    let mut streams = Vec::new();
    for &i in &watched {
        let request =
            GetDestination { authority: format!("svc-{i}.bench.svc.cluster.local:80"), context_token: String::new() };
        let mut stream = client.get(request).await?.into_inner();
        // The Kubernetes backend may serve before its first list is in:
        // until then the Service is unknown (`NoEndpoints`).
        let initial = async {
            loop {
                match stream.message().await? {
                    Some(Update { update: Some(update::Update::Add(_)) }) => return Ok(()),
                    Some(_) => continue,
                    None => return Err(PropagationError::ControlPlane(format!("svc-{i}'s stream ended"))),
                }
            }
        };
        tokio::time::timeout(cfg.patience, initial)
            .await
            .map_err(|_| PropagationError::Timeout(format!("svc-{i}'s initial set")))??;
        streams.push(stream);
    }

    let mut samples = Vec::new();
    for (k, (&i, stream)) in watched.iter().zip(&mut streams).enumerate() {
        // Spread the edits over the poll period, so that without
        // notifications samples are not all taken right after a scan.
        let phase = cfg.poll.mul_f64((k as f64 * 0.618_033_988_75).fract());
        tokio::time::sleep(phase).await;
        match &api {
            None => write(&dir, i, &manifest(i, cfg.endpoints_per_service, k + 1))?,
            Some(api) => api.modify_slice(&kube_objects(i, cfg.endpoints_per_service, k + 1).1),
        }
        let t0 = Instant::now();
        tokio::time::timeout(cfg.patience, stream.message())
            .await
            .map_err(|_| PropagationError::Timeout(format!("svc-{i}'s update")))??;
        samples.push(t0.elapsed());
    }
    let rss_kib = child.id().and_then(rss_kib).unwrap_or(0);
    let _ = child.kill().await;

    let mut sorted = samples.clone();
    sorted.sort();
    Ok(PropagationReport {
        services: cfg.services,
        endpoints: cfg.services * cfg.endpoints_per_service,
        startup,
        p50: percentile(&sorted, 50.0),
        p99: percentile(&sorted, 99.0),
        max: sorted.last().copied().unwrap_or_default(),
        samples,
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&d, 99.0), Duration::from_millis(20));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn manifests_parse_and_edits_change_one_address() {
        let a = super::super::discovery::manifests::parse_file(Path::new("a.yaml"), &manifest(7, 2, 0)).unwrap();
        let b = super::super::discovery::manifests::parse_file(Path::new("a.yaml"), &manifest(7, 2, 1)).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], b[0], "the Service is unchanged");
        assert_ne!(a[1], b[1], "the slice changed");
    }
}
