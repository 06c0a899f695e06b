//! The cluster substrates: `kind` (a kind cluster bench creates or reuses
//! from kind-configs/, images loaded with `kind load`) and `kube` (any
//! cluster in the kubeconfig, images pushed to a registry). The same suite
//! files, the same runner and records as `local`; the load generator runs
//! as a Job in the cluster and its record comes back through the pod's log.
//!
//! ```text
//!  Suite ──plan::build──> Plan ──render──> --dry-run text (nothing touched)
//!                          │
//!                          └──> Kube (substrate.rs: trait Substrate) <── the runner's cell loop
//!                                 steps: kind / docker / kubectl / weft / linkerd / istioctl (exec)
//!                                 cells: kube-rs, Job pods, logs, stats summaries (run.rs, stats)
//! ```
//!
//! Nothing here needs a cluster until [`Kube`]'s `prepare`: the plan and its
//! manifests (typed k8s-openapi objects, `manifests`) are built and checked
//! offline.

pub mod exec;
pub mod manifests;
pub mod meshes;
pub mod plan;
pub mod render;
pub mod run;
pub mod stats;
mod substrate;
pub mod xcheck;

use std::path::{Path, PathBuf};

use mesh_kube::names;

pub use plan::{Options, Plan, Target};
pub use substrate::Kube;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(transparent)]
    Cmd(#[from] exec::CmdError),
    #[error("Kubernetes API: {0}")]
    Api(String),
    #[error("{0}")]
    Job(String),
    /// A bad flag (exit 64).
    #[error("{0}")]
    Config(String),
}

/// Which cluster substrate, as the `bench` flags give it.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `kube` instead of `kind`.
    pub any_cluster: bool,
    /// kind: the cluster's name.
    pub cluster: Option<String>,
    /// kind: the cluster config [default: kind-configs/default.yaml].
    pub kind_config: Option<PathBuf>,
    /// kube: the kubeconfig context [default: the current one].
    pub context: Option<String>,
    /// kube: where images are pushed and pulled.
    pub registry: Option<String>,
    pub client_selector: Option<String>,
    pub server_selector: Option<String>,
    pub no_build: bool,
    pub delete_cluster: bool,
}

/// The cluster kind creates when none is named.
pub const DEFAULT_CLUSTER: &str = "weft-bench";

impl Flags {
    /// Check the flags (every problem at once) and fill in the defaults.
    pub fn options(&self, run_id: &str) -> Result<Options, KubeError> {
        let mut problems = Vec::new();
        let workspace = workspace_root();
        let target = if self.any_cluster {
            if self.cluster.is_some() || self.kind_config.is_some() {
                problems.push("--cluster and --kind-config are for --substrate kind; --substrate kube uses --context".to_string());
            }
            match &self.registry {
                Some(r) if !r.is_empty() => Target::Kube {
                    context: self.context.clone(),
                    registry: r.clone(),
                },
                _ => {
                    problems.push("--substrate kube needs --registry REG (e.g. ghcr.io/you/weft): the cluster pulls the images from there".into());
                    Target::Kube { context: self.context.clone(), registry: String::new() }
                }
            }
        } else {
            if self.context.is_some() || self.registry.is_some() {
                problems.push("--context and --registry are for --substrate kube; kind uses the cluster's own context and `kind load`".into());
            }
            let config = self
                .kind_config
                .clone()
                .unwrap_or_else(|| workspace.join("kind-configs/default.yaml"));
            if !config.is_file() {
                problems.push(format!("--kind-config {}: no such file (kind-configs/ holds the cluster configs)", config.display()));
            }
            Target::Kind {
                cluster: self.cluster.clone().unwrap_or_else(|| DEFAULT_CLUSTER.into()),
                config,
            }
        };
        let selector = |flag: &str, given: &Option<String>, role: &str| match given {
            None => Ok(manifests::Selector::role(role)),
            Some(s) => manifests::Selector::parse(s).map_err(|e| format!("{flag}: {e}")),
        };
        let client = selector("--client-selector", &self.client_selector, "client");
        let server = selector("--server-selector", &self.server_selector, "server");
        let (client, server) = match (client, server) {
            (Ok(c), Ok(s)) => (c, s),
            (c, s) => {
                problems.extend(c.err());
                problems.extend(s.err());
                return Err(KubeError::Config(problems.join("\n")));
            }
        };
        if !problems.is_empty() {
            return Err(KubeError::Config(problems.join("\n")));
        }
        Ok(Options {
            target,
            client,
            server,
            run_id: run_id.to_string(),
            owner: owner(),
            build_images: !self.no_build,
            delete_cluster: self.delete_cluster,
            weft: sibling("weft"),
            tag: image_tag(&workspace),
            workspace,
        })
    }
}

impl Flags {
    /// The programs a real run calls that are not on PATH (empty: all there).
    pub fn missing_tools(&self) -> Vec<&'static str> {
        let mut need = vec!["kubectl"];
        if !self.any_cluster {
            need.push("kind");
        }
        let mut missing: Vec<&'static str> = need.into_iter().filter(|t| exec::which(t).is_none()).collect();
        if !self.no_build && exec::which("docker").is_none() && exec::which("podman").is_none() {
            missing.push("docker (or podman)");
        }
        missing
    }
}

/// A DNS label from a UTC timestamp and the pid (`20261207t061500z-4242`).
pub fn run_id(rfc3339: &str) -> String {
    let ts: String = crate::env::compact_timestamp(rfc3339)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{ts}-{}", std::process::id())
}

fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// `<dir of bench>/NAME`: the binaries built with it.
fn sibling(name: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| name.to_string())
}

/// The workspace holding kind-configs/: the cwd's, else the one bench was built from.
fn workspace_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| d.join("kind-configs").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// images/build's tag: `git describe --always --dirty --tags` of the workspace.
fn image_tag(workspace: &Path) -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["describe", "--always", "--dirty", "--tags"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "dev".into())
}

/// `bench clean --substrate kind|kube`: delete the namespaces (and the mesh
/// installs they record) of runs whose bench is gone; with
/// `--delete-cluster`, also a kind cluster bench created. Returns what was removed.
pub async fn clean(flags: &Flags, say: &dyn Fn(String)) -> Result<Vec<String>, KubeError> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, ListParams};
    let opts = flags.options("clean")?;
    let plan_kubectl = match &opts.target {
        Target::Kind { cluster, .. } => {
            let clusters = exec::run(&exec::Cmd::new("kind", &["get", "clusters"], std::time::Duration::from_secs(30))).await?;
            if !clusters.lines().any(|l| l.trim() == cluster) {
                return Ok(Vec::new());
            }
            meshes::Kubectl { context: Some(format!("kind-{cluster}")) }
        }
        Target::Kube { context, .. } => meshes::Kubectl { context: context.clone() },
    };
    let client = run::client(plan_kubectl.context.as_deref()).await?;
    let list = Api::<Namespace>::all(client)
        .list(&ListParams::default().labels(names::BENCH_RUN_LABEL))
        .await
        .map_err(|e| KubeError::Api(format!("list namespaces labelled {}: {e}", names::BENCH_RUN_LABEL)))?;
    let me = owner();
    let host = me.split(':').next().unwrap_or_default().to_string();
    let mut removed = Vec::new();
    for ns in list.items {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let ann = ns.metadata.annotations.clone().unwrap_or_default();
        if let Some((h, pid)) = ann.get(names::BENCH_OWNER_ANNOTATION).and_then(|o| o.rsplit_once(':')) {
            let alive = h == host
                && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bench");
            if alive {
                say(format!("bench clean: {name} belongs to a live run (bench pid {pid}); left alone"));
                continue;
            }
        }
        for mesh in [meshes::Mesh::Istio, meshes::Mesh::Linkerd, meshes::Mesh::Weft] {
            let key = format!("{}{}", names::BENCH_INSTALLED_ANNOTATION_PREFIX, mesh.as_str());
            if ann.get(&key).is_some_and(|v| v == "true") {
                for a in mesh.uninstall(&plan_kubectl, &opts.weft) {
                    a.run().await?;
                }
                removed.push(format!("{} (installed by {name})", mesh.as_str()));
            }
        }
        exec::run(&plan_kubectl.cmd(&["delete", "namespace", &name, "--ignore-not-found", "--wait=true"])).await?;
        removed.push(format!("namespace {name}"));
    }
    if let (true, Target::Kind { cluster, .. }) = (flags.delete_cluster, &opts.target) {
        let marked = exec::run(&plan_kubectl.cmd(&["get", "configmap", plan::CREATED_MARKER, "-n", "kube-system"])).await;
        match marked {
            Ok(_) => {
                exec::run(&exec::Cmd::new("kind", &["delete", "cluster", "--name", cluster], std::time::Duration::from_secs(300))).await?;
                removed.push(format!("kind cluster {cluster}"));
            }
            Err(_) => say(format!(
                "bench clean: kind cluster {cluster} was not created by bench (no configmap kube-system/{}); left alone",
                plan::CREATED_MARKER
            )),
        }
    }
    Ok(removed)
}

/// `bench run --substrate kind|kube --dry-run`: the whole plan as text;
/// runs nothing, needs no kind, docker or kubectl.
pub fn dry_run(suite: &crate::suite::Suite, flags: &Flags) -> Result<String, KubeError> {
    let opts = flags.options(&run_id(&crate::env::now_rfc3339()))?;
    Ok(render::render(&plan::build(suite, &opts)))
}
