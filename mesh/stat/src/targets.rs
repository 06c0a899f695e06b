//! Which proxies `weft stat` / `weft top` scrape: named on the command line
//! (`--admin`), the proxies a running `bench` run deployed (`--run`, from its
//! [`crate::state`] file), or a cluster's meshed pods (`--kube`).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::scrape::{Source, Target};
use crate::state::{self, RunState, StateError};

/// Where the proxies are (exactly one of `--admin`, `--run`, `--kube`).
/// (The commands that flatten this declare the required `targets` group.)
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
pub struct TargetArgs {
    /// Admin listeners, comma separated: URL (http://127.0.0.1:4191) or
    /// NAME=URL; a bare HOST:PORT means http://HOST:PORT.
    #[arg(long, value_name = "[NAME=]URL,...", value_delimiter = ',', group = "targets")]
    pub admin: Vec<String>,
    /// The proxies of a running `bench run` (local or netns substrate): its
    /// work dir ($TMPDIR/weft-bench-*), or, with no value, the one running.
    #[arg(long, value_name = "DIR", group = "targets")]
    pub run: Option<Option<PathBuf>>,
    /// Every meshed pod (running proxy) through the Kubernetes API server's
    /// pod proxy (KUBECONFIG or in-cluster config).
    #[arg(long, group = "targets")]
    pub kube: bool,
    /// With --kube: only this namespace [default: all namespaces].
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// With --kube: a label selector, e.g. app=web.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--admin {0:?}: not an admin URL (give http://HOST:PORT, HOST:PORT, or NAME=URL)")]
    BadAdmin(String),
    #[error("--admin {0:?}: the name {1:?} is given twice")]
    DuplicateName(String, String),
    #[error("--run: {0}")]
    Run(#[from] StateError),
    #[error("--run {dir}: the run has no proxies deployed right now (between variants, or a variant without Weft proxies)")]
    NoProxies { dir: PathBuf },
    #[error("--kube: Kubernetes client (KUBECONFIG or in-cluster config): {0}")]
    KubeClient(kube::Error),
    #[error("--kube: listing pods: {0}")]
    KubeList(kube::Error),
    #[error("{0}: only with --kube")]
    KubeOnly(&'static str),
    #[error("--kube: no pod with a running Weft proxy{0}")]
    NoPods(String),
}

impl TargetError {
    /// Usage errors (exit 64) as opposed to what was found (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::BadAdmin(_) | Self::DuplicateName(..) | Self::KubeOnly(_))
    }
}

/// One `--admin` item as a target.
pub fn admin_target(item: &str) -> Result<Target, TargetError> {
    let (name, url) = match item.split_once('=') {
        Some((name, url)) if !name.is_empty() && !name.contains('/') => (Some(name), url),
        _ => (None, item),
    };
    let with_scheme = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
    let uri: http::Uri = with_scheme.parse().map_err(|_| TargetError::BadAdmin(item.to_owned()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(TargetError::BadAdmin(item.to_owned()));
    }
    let name = name.map_or_else(|| uri.authority().map(|a| a.to_string()).unwrap_or_default(), str::to_owned);
    Ok(Target { name, source: Source::Http { admin: uri, netns: None } })
}

/// The targets `args` name.
pub async fn resolve(args: &TargetArgs) -> Result<Vec<Target>, TargetError> {
    // (clap's `requires` is satisfied by a flag's default, so checked here.)
    match (args.kube, &args.namespace, &args.selector) {
        (false, Some(_), _) => return Err(TargetError::KubeOnly("--namespace")),
        (false, _, Some(_)) => return Err(TargetError::KubeOnly("--selector")),
        _ => {}
    }
    if !args.admin.is_empty() {
        let mut targets: Vec<Target> = Vec::new();
        for item in &args.admin {
            let target = admin_target(item)?;
            if targets.iter().any(|t| t.name == target.name) {
                return Err(TargetError::DuplicateName(item.clone(), target.name));
            }
            targets.push(target);
        }
        return Ok(targets);
    }
    if let Some(dir) = &args.run {
        let dir = match dir {
            Some(dir) => dir.clone(),
            None => state::find_run(&std::env::temp_dir())?,
        };
        let run = RunState::read(&dir)?;
        if run.proxies.is_empty() {
            return Err(TargetError::NoProxies { dir });
        }
        return run
            .proxies
            .into_iter()
            .map(|p| {
                let mut target = admin_target(&p.admin)?;
                target.name = p.name;
                if let Source::Http { netns, .. } = &mut target.source {
                    *netns = p.netns;
                }
                Ok(target)
            })
            .collect();
    }
    kube_targets(args.namespace.as_deref(), args.selector.as_deref()).await
}

/// Meshed pods with a running proxy, scraped through the API server.
async fn kube_targets(namespace: Option<&str>, selector: Option<&str>) -> Result<Vec<Target>, TargetError> {
    // kube's rustls client needs a process-wide provider; a second install is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default().await.map_err(TargetError::KubeClient)?;
    let targets = meshed_pods(&client, namespace, selector).await.map_err(TargetError::KubeList)?;
    if targets.is_empty() {
        let mut scope = namespace.map_or(String::new(), |ns| format!(" in namespace {ns}"));
        if let Some(sel) = selector {
            scope.push_str(&format!(" matching {sel}"));
        }
        return Err(TargetError::NoPods(scope));
    }
    Ok(targets)
}

/// Every meshed pod whose proxy runs, in `namespace` (all when `None`)
/// and matching `selector`, as a target scraped through the API server's
/// pod proxy, named `NS/NAME`. (Also bench's kube cross-check.)
pub async fn meshed_pods(client: &kube::Client, namespace: Option<&str>, selector: Option<&str>) -> Result<Vec<Target>, kube::Error> {
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let list = pods.list(&params).await?;
    Ok(list
        .items
        .iter()
        .filter(|p| mesh_kube::check::is_meshed(p) && mesh_kube::check::proxy_running(p))
        .filter_map(|p| {
            let (ns, name) = (p.metadata.namespace.clone()?, p.metadata.name.clone()?);
            Some(Target {
                name: format!("{ns}/{name}"),
                source: Source::Kube {
                    client: client.clone(),
                    namespace: ns,
                    pod: name,
                    port: mesh_kube::names::PROXY_ADMIN_PORT,
                },
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_items() {
        let t = admin_target("web=http://127.0.0.1:4191").unwrap();
        assert_eq!(t.name, "web");
        assert_eq!(t.source.to_string(), "http://127.0.0.1:4191/");
        assert_eq!(admin_target("127.0.0.1:9").unwrap().name, "127.0.0.1:9");
        for bad in ["https://x:1", "web=", "http://", "not a url"] {
            assert!(matches!(admin_target(bad), Err(TargetError::BadAdmin(_))), "{bad}");
        }
    }
}
