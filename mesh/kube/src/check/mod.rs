//! `weft check`: is the cluster ready for Weft (`--pre`), and is the
//! installed mesh healthy? One [`Check`] per question, each with a verdict,
//! what was seen, and on failure what to do.
//!
//! ```text
//!   kubeconfig ──> kube::Client ──> pre::run | installed::run ──> Report ──> text | json
//! ```
//!
//! Checks only read (and, for `--pre`, ask SelfSubjectAccessReviews); they
//! never change the cluster.

mod installed;
mod pre;
mod proxy;

/// Which pods carry a Weft proxy, and whether it runs (also `weft stat --kube`'s choice of pods).
pub use proxy::{is_meshed, is_running as proxy_running};
mod render;
pub(crate) mod trust;

use std::time::Duration;

use serde::Serialize;

use crate::names;

pub use render::Style;

/// `weft check [--pre]`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Check a cluster before `weft install`: API reachable, Kubernetes version,
    /// permission to create what install creates, no existing install, Gateway API CRDs.
    #[arg(long)]
    pub pre: bool,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, env = "WEFT_CONTEXT")]
    pub context: Option<String>,
    /// The control plane's namespace.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = names::NAMESPACE)]
    pub namespace: String,
    /// Warn (rather than pass) when the trust anchor or the webhook's certificate expires within this long.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub expiry_warning: Duration,
    /// Give up on an API request after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// `text`: one line per check; `json`: one object for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A check's outcome. A warning does not fail `weft check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One answered question about the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The part of Weft it is about (`kubernetes-api`, `control-plane`, `webhook`, ...).
    pub group: &'static str,
    /// The question, e.g. `control plane Deployment weft/weft-control ready`.
    pub name: String,
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
    /// What to do about a failure or warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn pass(group: &'static str, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { group, name: name.into(), verdict: Verdict::Pass, detail: detail.into(), hint: None }
    }

    fn fail(group: &'static str, name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { group, name: name.into(), verdict: Verdict::Fail, detail: detail.into(), hint: Some(hint.into()) }
    }

    fn warn(group: &'static str, name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { group, name: name.into(), verdict: Verdict::Warn, detail: detail.into(), hint: Some(hint.into()) }
    }

    /// A failed API request, with a hint that fits the error.
    fn api_error(group: &'static str, name: impl Into<String>, what: &str, e: &kube::Error) -> Self {
        let hint = match e {
            kube::Error::Api(s) if s.code == 403 => {
                format!("your kubeconfig user may not read {what}: run weft check as a cluster admin")
            }
            kube::Error::Api(_) => format!("the API server refused to read {what}"),
            _ => "is the API server reachable? try `kubectl cluster-info`".to_owned(),
        };
        Self::fail(group, name, format!("reading {what}: {e}"), hint)
    }
}

/// Every check's outcome, in the order run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `pre` (before install) or `installed`.
    pub mode: &'static str,
    /// The kubeconfig context the checks ran against.
    pub context: String,
    pub namespace: String,
    pub checks: Vec<Check>,
}

impl Report {
    fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

    /// Whether no check failed (warnings allowed).
    pub fn ok(&self) -> bool {
        self.count(Verdict::Fail) == 0
    }
}

/// `weft check` could not start (the checks themselves report failures in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("kubeconfig{}: {source} (set KUBECONFIG or --context to a cluster you can reach)", context_suffix(.context))]
    Kubeconfig {
        context: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kube client for context {context}: {source}")]
    Client {
        context: String,
        #[source]
        source: kube::Error,
    },
}

fn context_suffix(context: &Option<String>) -> String {
    context.as_ref().map(|c| format!(" (context {c})")).unwrap_or_default()
}

/// Runs the checks `args` asks for against the kubeconfig's cluster.
pub async fn run(args: &CheckArgs) -> Result<Report, CheckError> {
    let options = kube::config::KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let mut config = kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|source| CheckError::Kubeconfig { context: args.context.clone(), source })?;
    config.connect_timeout = Some(args.timeout);
    config.read_timeout = Some(args.timeout);
    config.write_timeout = Some(args.timeout);
    // kube's default retries a 503 up to 15 times with backoff growing to
    // minutes: right for a controller, wrong for a check whose 503 (the API
    // server unable to reach the webhook through its service proxy) is the answer.
    config.default_retry = false;
    let context = match &args.context {
        Some(c) => c.clone(),
        None => current_context().unwrap_or_else(|| "(current)".to_owned()),
    };
    let client = kube::Client::try_from(config)
        .map_err(|source| CheckError::Client { context: context.clone(), source })?;
    let checks = if args.pre {
        pre::run(&client, &args.namespace).await
    } else {
        installed::run(&client, &args.namespace, args.expiry_warning).await
    };
    Ok(Report { mode: if args.pre { "pre" } else { "installed" }, context, namespace: args.namespace.clone(), checks })
}

/// The kubeconfig's current context, for the report's heading only.
fn current_context() -> Option<String> {
    kube::config::Kubeconfig::read().ok()?.current_context
}

/// `/version` answers and the server is new enough: the first check of both modes.
/// Returns `None` when the API server cannot be reached (the other checks are pointless).
async fn api_reachable(client: &kube::Client, checks: &mut Vec<Check>) -> bool {
    const GROUP: &str = "kubernetes-api";
    let info = match client.apiserver_version().await {
        Ok(info) => info,
        Err(e) => {
            checks.push(Check::fail(
                GROUP,
                "can reach the Kubernetes API",
                format!("GET /version: {e}"),
                "check the kubeconfig's server address and credentials: `kubectl cluster-info`",
            ));
            return false;
        }
    };
    checks.push(Check::pass(GROUP, "can reach the Kubernetes API", format!("server {}", info.git_version)));
    checks.push(version_check(&info.major, &info.minor, &info.git_version));
    true
}

/// `minor` may carry a suffix (`29+` on some managed clusters).
fn version_check(major: &str, minor: &str, git_version: &str) -> Check {
    const GROUP: &str = "kubernetes-api";
    let name = format!("Kubernetes version is at least 1.{}", names::MIN_KUBERNETES_MINOR);
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u32>().ok();
    match (digits(major), digits(minor)) {
        (Some(1), Some(m)) if m >= names::MIN_KUBERNETES_MINOR => Check::pass(GROUP, name, format!("1.{m} ({git_version})")),
        (Some(1), Some(m)) => Check::fail(
            GROUP,
            name,
            format!("the server is 1.{m} ({git_version})"),
            format!("upgrade the cluster to Kubernetes 1.{} or newer", names::MIN_KUBERNETES_MINOR),
        ),
        (Some(major), Some(_)) if major > 1 => Check::pass(GROUP, name, git_version.to_owned()),
        _ => Check::warn(
            GROUP,
            name,
            format!("cannot read the version: major {major:?}, minor {minor:?} ({git_version})"),
            format!("make sure the cluster runs Kubernetes 1.{} or newer", names::MIN_KUBERNETES_MINOR),
        ),
    }
}

/// The named CRDs exist and are Established: Weft's own after install, Gateway API's always.
async fn crds_established(
    client: &kube::Client,
    group: &'static str,
    name: &str,
    wanted: &[&str],
    hint_missing: &str,
) -> Check {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api = kube::Api::<CustomResourceDefinition>::all(client.clone());
    let list = match api.list(&Default::default()).await {
        Ok(list) => list,
        Err(e) => return Check::api_error(group, name, "customresourcedefinitions", &e),
    };
    let mut missing = Vec::new();
    let mut not_established = Vec::new();
    for want in wanted {
        match list.items.iter().find(|crd| crd.metadata.name.as_deref() == Some(*want)) {
            None => missing.push(*want),
            Some(crd) => {
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                if !established {
                    not_established.push(*want);
                }
            }
        }
    }
    if missing.is_empty() && not_established.is_empty() {
        return Check::pass(group, name, format!("{} present and Established", wanted.join(", ")));
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing: {}", missing.join(", ")));
    }
    if !not_established.is_empty() {
        problems.push(format!("not Established: {}", not_established.join(", ")));
    }
    let hint = if missing.is_empty() {
        format!("kubectl describe crd {}", not_established.join(" "))
    } else {
        hint_missing.to_owned()
    };
    Check::fail(group, name, problems.join("; "), hint)
}

/// Gateway API's HTTPRoute and GRPCRoute CRDs: Weft reads routes from them but does not install them.
async fn gateway_api_crds(client: &kube::Client) -> Check {
    crds_established(
        client,
        "crds",
        "Gateway API CRDs (HTTPRoute, GRPCRoute) installed",
        names::GATEWAY_API_CRDS,
        &format!("install the Gateway API standard channel: kubectl apply -f {}", crate::install::GATEWAY_API_STANDARD_CRDS),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let min = names::MIN_KUBERNETES_MINOR;
        assert_eq!(version_check("1", &min.to_string(), "v").verdict, Verdict::Pass);
        assert_eq!(version_check("1", &format!("{}+", min + 5), "v").verdict, Verdict::Pass);
        let old = version_check("1", &(min - 1).to_string(), "v1.old");
        assert_eq!(old.verdict, Verdict::Fail);
        assert!(old.detail.contains("v1.old") && old.hint.unwrap().contains(&format!("1.{min}")));
        assert_eq!(version_check("", "", "v").verdict, Verdict::Warn);
    }
}
