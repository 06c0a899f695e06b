//! `weft install`: the control plane as Kubernetes objects, built from typed
//! k8s-openapi structures and printed as one multi-document YAML stream for
//! `weft install | kubectl apply -f -`; `weft uninstall` prints the same
//! objects' identities for `kubectl delete -f -`.
//!
//! ```text
//!  Options (flags) ──> objects():  Namespace, CRDs, ServiceAccount, ClusterRole(+Binding),
//!    + IdentityPki      auth-delegator binding, trust anchor ConfigMap, issuer Secret,
//!    + WebhookPki       webhook Secret, Service, Deployment, [PodDisruptionBudget],
//!                       MutatingWebhookConfiguration
//!                          │ serde_json::Value per object (typed -> JSON, nothing lost)
//!                          ▼
//!                  yaml(): "# header\n---\n<doc>---\n<doc>..."
//! ```
//!
//! The Gateway API's standard CRDs (HTTPRoute, GRPCRoute) are a prerequisite
//! installed from the Gateway API release, never rendered here: they belong
//! to the cluster, and other meshes and gateways share them.

mod args;
mod cluster;
mod control;
pub mod pki;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use args::{InstallArgs, UninstallArgs};
pub use pki::{CertAndKey, IdentityPki, PkiError, WebhookPki};

pub use crate::inject::Resources;

use crate::names;

/// Where the trust anchor, issuer and webhook certificate are mounted in mesh-control.
pub const IDENTITY_DIR: &str = "/var/run/weft/identity";
pub const TRUST_ANCHOR_DIR: &str = "/var/run/weft/trust-anchor";
pub const WEBHOOK_DIR: &str = "/var/run/weft/webhook";

/// The Gateway API release whose standard CRDs Weft is tested against (the
/// prerequisite named in the rendered header).
pub const GATEWAY_API_STANDARD_CRDS: &str =
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml";

/// Everything `weft install` renders from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane's namespace.
    pub namespace: String,
    pub control_image: String,
    pub proxy_image: String,
    pub init_image: String,
    pub replicas: i32,
    /// mesh-control's container resources (Kubernetes quantities; the
    /// injector's type, here for mesh-control's own container).
    pub resources: Resources,
    /// Lifetime of workload certificates (mesh-control `--cert-lifetime`).
    pub cert_lifetime: Duration,
    pub trust_domain: String,
    pub cluster_domain: String,
    pub webhook_failure_policy: FailurePolicy,
    /// How long the API server waits for the webhook (1-30 s).
    pub webhook_timeout_seconds: i32,
    pub identity: IdentityPki,
    pub webhook: WebhookPki,
}

/// What the API server does when the webhook cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Create the pod uninjected (it runs without the mesh until recreated).
    #[default]
    Ignore,
    /// Refuse to create the pod (no pod runs unmeshed, but an unreachable
    /// control plane blocks every pod creation outside the excluded namespaces).
    Fail,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "Ignore",
            Self::Fail => "Fail",
        }
    }
}

/// Rendering failed (bad options; serialization cannot fail on these types
/// but is reported rather than unwrapped).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Every problem with the options, each naming the flag and value.
    #[error("invalid options:\n  {}", .0.join("\n  "))]
    Options(Vec<String>),
    #[error("{0}")]
    Pki(#[from] PkiError),
    #[error("serializing {what}: {reason}")]
    Serialize { what: String, reason: String },
}

impl InstallError {
    /// The user's input was wrong (flags, files): the CLI exits 64.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Options(_) | Self::Pki(PkiError::Invalid(_)))
    }
}

/// The DNS name the API server calls the webhook at.
pub fn webhook_dns_name(namespace: &str) -> String {
    format!("{}.{namespace}.svc", names::CONTROL)
}

/// Every object, in apply order: the namespace and CRDs first (so what
/// follows can be created in them), the webhook registration last (so the
/// API server does not call it before the control plane's Service exists).
pub fn objects(options: &Options) -> Result<Vec<Value>, InstallError> {
    let mut out = Vec::new();
    push(&mut out, &cluster::namespace(options))?;
    for crd in crate::crds::all() {
        push(&mut out, &crd)?;
    }
    push(&mut out, &cluster::service_account(options))?;
    push(&mut out, &cluster::cluster_role())?;
    push(&mut out, &cluster::cluster_role_binding(options))?;
    push(&mut out, &cluster::auth_delegator_binding(options))?;
    push(&mut out, &cluster::trust_anchor(options))?;
    push(&mut out, &cluster::issuer_secret(options))?;
    push(&mut out, &cluster::webhook_secret(options))?;
    push(&mut out, &control::service(options))?;
    push(&mut out, &control::deployment(options))?;
    if let Some(pdb) = control::disruption_budget(options) {
        push(&mut out, &pdb)?;
    }
    push(&mut out, &cluster::webhook_configuration(options))?;
    Ok(out)
}

/// What `weft uninstall` prints: each object's apiVersion, kind, name and
/// namespace, in reverse apply order (the webhook first, so pod creation
/// stops calling a control plane that is going away; the namespace last).
pub fn uninstall_objects(options: &Options) -> Result<Vec<Value>, InstallError> {
    let mut out: Vec<Value> = objects(options)?
        .into_iter()
        .map(|object| {
            let mut metadata = serde_json::Map::new();
            for key in ["name", "namespace"] {
                if let Some(v) = object["metadata"].get(key) {
                    metadata.insert(key.to_owned(), v.clone());
                }
            }
            serde_json::json!({
                "apiVersion": object["apiVersion"],
                "kind": object["kind"],
                "metadata": metadata,
            })
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// The objects as a YAML stream: a comment header, then one `---` document each.
pub fn yaml(header: &str, objects: &[Value]) -> Result<String, InstallError> {
    let mut text = String::new();
    for line in header.lines() {
        text.push_str(if line.is_empty() { "#" } else { "# " });
        text.push_str(line);
        text.push('\n');
    }
    for object in objects {
        let doc = serde_saphyr::to_string(object).map_err(|e| InstallError::Serialize {
            what: format!("{} {}", object["kind"].as_str().unwrap_or("?"), object["metadata"]["name"]),
            reason: e.to_string(),
        })?;
        text.push_str("---\n");
        text.push_str(&doc);
        if !doc.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(text)
}

/// The header of `weft install`'s output.
pub fn install_header(options: &Options) -> String {
    format!(
        "Weft {version} control plane in namespace {ns}, rendered by `weft install`.
Apply with: weft install | kubectl apply -f -    (remove: weft uninstall | kubectl delete -f -)

Prerequisite, not rendered here: the Gateway API standard CRDs (HTTPRoute,
GRPCRoute), which mesh-control watches for routes; until they exist it stays
unready (its /ready names them). Install them first, e.g.:
  kubectl apply -f {gateway}
Injection is opt-in: annotate a namespace or pod with {annotation}: enabled.",
        version = env!("CARGO_PKG_VERSION"),
        ns = options.namespace,
        gateway = GATEWAY_API_STANDARD_CRDS,
        annotation = names::INJECT_ANNOTATION,
    )
}

/// The header of `weft uninstall`'s output.
pub fn uninstall_header(options: &Options) -> String {
    format!(
        "What `weft install` created in namespace {ns} and cluster-wide, for
  weft uninstall | kubectl delete -f -
Deleting the CRDs deletes every AuthorizationPolicy. Injected pods keep their
sidecars until they are recreated. The Gateway API CRDs are left alone.",
        ns = options.namespace
    )
}

fn push<T: serde::Serialize>(out: &mut Vec<Value>, object: &T) -> Result<(), InstallError> {
    let value = serde_json::to_value(object).map_err(|e| InstallError::Serialize {
        what: std::any::type_name::<T>().rsplit("::").next().unwrap_or("object").to_owned(),
        reason: e.to_string(),
    })?;
    out.push(value);
    Ok(())
}

/// Labels on everything Weft renders (and the selector of mesh-control's pods).
fn labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), component.to_owned()),
        (names::PART_OF_LABEL.to_owned(), names::PART_OF.to_owned()),
    ])
}

/// Metadata of a cluster-scoped (`namespace: None`) or namespaced object.
fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    let mut labels = labels(names::CONTROL);
    labels.insert("app.kubernetes.io/version".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}
