//! Sidecar injection: one pure function, [`inject`], that adds Weft's proxy
//! and its `weft init` init container to a pod template. `weft inject`
//! ([`manifests`]) calls it on every workload of a YAML stream; mesh-control's
//! admission webhook ([`crate::webhook`]) calls it on every pod created.
//!
//! ```text
//!  decide: hostNetwork? already injected? weft.io/inject: disabled?
//!          (webhook only) weft.io/inject: enabled on the pod, else on its namespace?
//!     │ inject
//!     ▼
//!  annotations -> Overrides (ports, CIDRs, opaque ports, resources; all checked at once)
//!     ▼
//!  initContainers[0] weft-init (weft init --inbound-port 4143 --outbound-port 4140 --proxy-uid 2102 ...)
//!  containers[0]     weft-proxy (transparent; identity spiffe://<td>/ns/$(ns)/sa/$(sa) from the downward API;
//!                    token of audience `weft`; trust anchor PEM inline; /ready, /live on :4191)
//!  volumes           token (projected), /run for iptables' lock
//!  annotations       weft.io/injected: <proxy image>, kubectl.kubernetes.io/default-container: <app>,
//!                    prometheus.io/{scrape: "true", port: 4191, path: /metrics} (unless the pod has its own)
//! ```

pub mod cli;
pub mod manifests;
pub mod overrides;
pub mod patch;
pub mod sidecar;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names;
pub use overrides::{Overrides, Resources};

/// What the injected containers are made of and where they find mesh-control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy_image: String,
    pub init_image: String,
    /// `imagePullPolicy` of both containers; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// The trust domain of the workload identities mesh-control issues.
    pub trust_domain: String,
    /// The cluster's DNS domain (mesh-control's Service name ends in it).
    pub cluster_domain: String,
    /// The control plane's namespace (its Service `weft-control` is there).
    pub control_namespace: String,
    /// The identity mesh-control presents; the proxy accepts no other.
    pub control_identity: String,
    /// The proxy's resources when the pod's annotations say nothing.
    pub proxy_resources: Resources,
    /// The control plane's trust anchor certificate(s), PEM, written into
    /// the proxy's environment. Required: empty is an [`InjectError`].
    pub trust_anchor_pem: String,
}

/// The images `weft install` deploys for this build of Weft.
pub fn default_image(name: &str) -> String {
    format!("{}/{name}:{}", names::IMAGE_REGISTRY, env!("CARGO_PKG_VERSION"))
}

impl Default for Config {
    fn default() -> Self {
        let trust_domain = "cluster.local".to_owned();
        Self {
            proxy_image: default_image(names::PROXY_IMAGE),
            init_image: default_image(names::INIT_IMAGE),
            image_pull_policy: None,
            control_identity: Self::control_identity_in(&trust_domain),
            trust_domain,
            cluster_domain: "cluster.local".to_owned(),
            control_namespace: names::NAMESPACE.to_owned(),
            proxy_resources: Resources::default(),
            trust_anchor_pem: String::new(),
        }
    }
}

impl Config {
    /// mesh-control's default identity in `trust_domain` (its `--identity`
    /// default, whatever namespace it runs in).
    pub fn control_identity_in(trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{}/sa/{}", names::NAMESPACE, names::CONTROL_IDENTITY_SERVICE_ACCOUNT)
    }

    /// mesh-control's gRPC address as a pod reaches it.
    pub fn control_address(&self) -> String {
        format!(
            "{}.{}.svc.{}:{}",
            names::CONTROL,
            self.control_namespace,
            self.cluster_domain.trim_end_matches('.'),
            names::CONTROL_GRPC_PORT
        )
    }
}

/// Who asks for the injection, which decides when a pod opts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `weft inject`: asking is opting in; only `weft.io/inject: disabled` opts out.
    Manual,
    /// The admission webhook: `weft.io/inject: enabled` on the pod, or on its
    /// namespace (`Some(true)`; `None` when the namespace is not known) when
    /// the pod says nothing.
    Admission { namespace: Option<bool> },
}

/// Why a pod template was left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `weft.io/injected` or a `weft-proxy` container is there already.
    AlreadyInjected,
    /// `hostNetwork: true`: iptables rules would capture the node's traffic.
    HostNetwork,
    /// `weft.io/inject: disabled` on the pod.
    AnnotatedOut,
    /// Admission only: neither the pod nor its namespace says `enabled`.
    NotOptedIn { namespace: Option<bool> },
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::AlreadyInjected => write!(f, "already injected ({} or a {} container)", names::INJECTED_ANNOTATION, names::PROXY_CONTAINER),
            Skip::HostNetwork => f.write_str("hostNetwork pod (the proxy's iptables rules would capture the node's traffic)"),
            Skip::AnnotatedOut => write!(f, "annotated {}: disabled", names::INJECT_ANNOTATION),
            Skip::NotOptedIn { namespace } => {
                let ns = match namespace {
                    Some(true) => "enabled",
                    Some(false) => "disabled",
                    None => "not annotated (or not known)",
                };
                write!(f, "not opted in: no {}: enabled on the pod, its namespace is {ns}", names::INJECT_ANNOTATION)
            }
        }
    }
}

/// What [`inject`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped(Skip),
}

/// A pod template that asked for the mesh but cannot have it as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct InjectError {
    pub problems: Vec<String>,
}

/// The pod's own `weft.io/inject`: `Some(true)` enabled, `Some(false)` disabled.
fn inject_annotation(annotations: &BTreeMap<String, String>) -> Result<Option<bool>, InjectError> {
    match annotations.get(names::INJECT_ANNOTATION).map(|v| v.trim()) {
        None => Ok(None),
        Some("enabled") => Ok(Some(true)),
        Some("disabled") => Ok(Some(false)),
        Some(other) => Err(InjectError {
            problems: vec![format!(
                "annotation {}: {other:?} is neither enabled nor disabled",
                names::INJECT_ANNOTATION
            )],
        }),
    }
}

/// Whether `spec` would be injected and, if not, why.
pub fn decide(meta: &ObjectMeta, spec: &PodSpec, trigger: Trigger) -> Result<Option<Skip>, InjectError> {
    let empty = BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if annotations.contains_key(names::INJECTED_ANNOTATION)
        || spec.containers.iter().any(|c| c.name == names::PROXY_CONTAINER)
        || spec.init_containers.iter().flatten().any(|c| c.name == names::INIT_CONTAINER)
    {
        return Ok(Some(Skip::AlreadyInjected));
    }
    if spec.host_network == Some(true) {
        return Ok(Some(Skip::HostNetwork));
    }
    let pod = inject_annotation(annotations)?;
    Ok(match (pod, trigger) {
        (Some(false), _) => Some(Skip::AnnotatedOut),
        (Some(true), _) | (None, Trigger::Manual) => None,
        (None, Trigger::Admission { namespace: Some(true) }) => None,
        (None, Trigger::Admission { namespace }) => Some(Skip::NotOptedIn { namespace }),
    })
}

/// Injects the pod template `meta` + `spec` in place, or says why not.
/// On an error nothing was changed.
pub fn inject(meta: &mut ObjectMeta, spec: &mut PodSpec, trigger: Trigger, config: &Config) -> Result<Outcome, InjectError> {
    if let Some(skip) = decide(meta, spec, trigger)? {
        return Ok(Outcome::Skipped(skip));
    }
    let empty = BTreeMap::new();
    let overrides = Overrides::read(meta.annotations.as_ref().unwrap_or(&empty), &config.proxy_resources)
        .map_err(|problems| InjectError { problems })?;
    let mut problems = Vec::new();
    if config.trust_anchor_pem.trim().is_empty() {
        problems.push("the injector has no trust anchor to give the proxy (its configuration's trust_anchor_pem is empty)".to_owned());
    }
    let volumes = sidecar::volumes();
    for v in spec.volumes.iter().flatten() {
        if volumes.iter().any(|ours| ours.name == v.name) {
            problems.push(format!("the pod already has a volume named {:?}, which the injector adds; rename it", v.name));
        }
    }
    if !problems.is_empty() {
        return Err(InjectError { problems });
    }
    let app = spec.containers.first().map(|c| c.name.clone());

    spec.init_containers.get_or_insert_with(Vec::new).insert(0, sidecar::init(config, &overrides));
    // First, so the kubelet starts it before the app (it does not wait for
    // it to be ready: an app must tolerate a few failed connections at start).
    spec.containers.insert(0, sidecar::proxy(config, &overrides));
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes);

    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(names::INJECTED_ANNOTATION.to_owned(), config.proxy_image.clone());
    if let Some(app) = app {
        annotations.entry(names::DEFAULT_CONTAINER_ANNOTATION.to_owned()).or_insert(app);
    }
    // A pod that already asks Prometheus to scrape its app keeps that: the
    // annotations name one port, and taking it over would silently stop the
    // app's metrics (its proxy is then scraped by a job of the user's own).
    if !annotations.contains_key(names::PROMETHEUS_SCRAPE_ANNOTATION) {
        for (key, value) in names::scrape_annotations(names::PROXY_ADMIN_PORT) {
            annotations.entry(key.to_owned()).or_insert(value);
        }
    }
    Ok(Outcome::Injected)
}
