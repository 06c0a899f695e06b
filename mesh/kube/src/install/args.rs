//! The command lines of `weft install` and `weft uninstall`, checked into
//! [`Options`] with every problem reported at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use super::{
    install_header, objects, uninstall_header, uninstall_objects, webhook_dns_name, yaml, FailurePolicy,
    IdentityPki, InstallError, Options, Resources, WebhookPki,
};
use crate::names;

/// `weft install`: print the control plane's manifests.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// Namespace of the control plane (created).
    #[arg(long, default_value = names::NAMESPACE)]
    pub namespace: String,
    /// Registry (and path) of the images: <registry>/mesh-control:<tag>, .../mesh-proxy, .../weft.
    #[arg(long, default_value = names::IMAGE_REGISTRY)]
    pub registry: String,
    /// Tag of the three images. [default: this weft's version]
    #[arg(long)]
    pub tag: Option<String>,
    /// mesh-control's image (overrides --registry/--tag for it).
    #[arg(long, value_name = "IMAGE")]
    pub control_image: Option<String>,
    /// The sidecar's image the injector adds (overrides --registry/--tag for it).
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// The init container's image (runs `weft init`; overrides --registry/--tag for it).
    #[arg(long, value_name = "IMAGE")]
    pub init_image: Option<String>,
    /// mesh-control replicas; more than 1 adds a PodDisruptionBudget and spreads them over nodes.
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// mesh-control's CPU request (a Kubernetes quantity; `none` leaves it out).
    #[arg(long, default_value = "100m", value_name = "QUANTITY")]
    pub control_cpu_request: String,
    /// mesh-control's memory request.
    #[arg(long, default_value = "64Mi", value_name = "QUANTITY")]
    pub control_memory_request: String,
    /// mesh-control's CPU limit (`none`: no limit, no throttling of the CA).
    #[arg(long, default_value = "none", value_name = "QUANTITY")]
    pub control_cpu_limit: String,
    /// mesh-control's memory limit.
    #[arg(long, default_value = "512Mi", value_name = "QUANTITY")]
    pub control_memory_limit: String,
    /// Lifetime of workload certificates mesh-control issues.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,
    /// Lifetime of a generated identity issuer (intermediate CA).
    #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
    pub issuer_lifetime: Duration,
    /// Lifetime of a generated trust anchor (root CA).
    #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
    pub trust_anchor_lifetime: Duration,
    /// Lifetime of the generated webhook CA and serving certificate.
    #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
    pub webhook_cert_lifetime: Duration,
    /// Your trust anchor (root) certificate, PEM, instead of a generated one.
    #[arg(long, value_name = "FILE", requires_all = ["issuer_cert", "issuer_key"])]
    pub trust_anchor: Option<PathBuf>,
    /// Your issuer certificate, PEM, signed by --trust-anchor.
    #[arg(long, value_name = "FILE", requires_all = ["trust_anchor", "issuer_key"])]
    pub issuer_cert: Option<PathBuf>,
    /// The issuer's private key, PEM.
    #[arg(long, value_name = "FILE", requires_all = ["trust_anchor", "issuer_cert"])]
    pub issuer_key: Option<PathBuf>,
    /// Your webhook CA (the caBundle), PEM, instead of a generated one.
    #[arg(long, value_name = "FILE", requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_ca: Option<PathBuf>,
    /// The webhook's serving certificate, PEM, for weft-control.<namespace>.svc, signed by --webhook-ca.
    #[arg(long, value_name = "FILE", requires_all = ["webhook_ca", "webhook_key"])]
    pub webhook_cert: Option<PathBuf>,
    /// The serving certificate's private key, PEM.
    #[arg(long, value_name = "FILE", requires_all = ["webhook_ca", "webhook_cert"])]
    pub webhook_key: Option<PathBuf>,
    /// What the API server does when the webhook does not answer: ignore (the
    /// pod starts without the mesh) or fail (the pod is not created).
    #[arg(long, value_enum, default_value_t = FailurePolicy::Ignore)]
    pub webhook_failure_policy: FailurePolicy,
    /// Seconds the API server waits for the webhook (1-30).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub webhook_timeout: i32,
    /// Trust domain of workload identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// `weft uninstall`: print what `weft install` created, for `kubectl delete -f -`.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// Namespace the control plane was installed into.
    #[arg(long, default_value = names::NAMESPACE)]
    pub namespace: String,
}

impl InstallArgs {
    /// The YAML stream `weft install` prints.
    pub fn render(&self) -> Result<String, InstallError> {
        let options = self.options(OffsetDateTime::now_utc())?;
        yaml(&install_header(&options), &objects(&options)?)
    }

    /// Checks every flag (all problems at once), reads or generates the certificates.
    pub fn options(&self, now: OffsetDateTime) -> Result<Options, InstallError> {
        let mut problems = Vec::new();
        check_name("--namespace", &self.namespace, &mut problems);
        if !(1..=100).contains(&self.replicas) {
            problems.push(format!("--replicas {}: must be 1 to 100", self.replicas));
        }
        if !(1..=30).contains(&self.webhook_timeout) {
            problems.push(format!("--webhook-timeout {}: the API server allows 1 to 30 seconds", self.webhook_timeout));
        }
        for (flag, d, min) in [
            ("--cert-lifetime", self.cert_lifetime, Duration::from_secs(60)),
            ("--issuer-lifetime", self.issuer_lifetime, Duration::from_secs(3600)),
            ("--trust-anchor-lifetime", self.trust_anchor_lifetime, Duration::from_secs(3600)),
            ("--webhook-cert-lifetime", self.webhook_cert_lifetime, Duration::from_secs(3600)),
        ] {
            if d < min {
                problems.push(format!(
                    "{flag} {}: must be at least {}",
                    humantime::format_duration(d),
                    humantime::format_duration(min)
                ));
            }
        }
        if self.trust_anchor.is_none() && self.issuer_lifetime > self.trust_anchor_lifetime {
            problems.push(format!(
                "--issuer-lifetime {} outlives --trust-anchor-lifetime {}: the issuer would be cut short",
                humantime::format_duration(self.issuer_lifetime),
                humantime::format_duration(self.trust_anchor_lifetime)
            ));
        }
        for (flag, domain) in [("--trust-domain", &self.trust_domain), ("--cluster-domain", &self.cluster_domain)] {
            let ok = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
                });
            if !ok {
                problems.push(format!("{flag} {domain:?}: must be a lowercase DNS name like cluster.local"));
            }
        }
        let resources = Resources {
            cpu_request: quantity("--control-cpu-request", &self.control_cpu_request, &mut problems),
            memory_request: quantity("--control-memory-request", &self.control_memory_request, &mut problems),
            cpu_limit: quantity("--control-cpu-limit", &self.control_cpu_limit, &mut problems),
            memory_limit: quantity("--control-memory-limit", &self.control_memory_limit, &mut problems),
        };
        let tag = self.tag.clone().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        let image = |given: &Option<String>, name: &str, flag: &str, problems: &mut Vec<String>| {
            let image = given.clone().unwrap_or_else(|| format!("{}/{name}:{tag}", self.registry.trim_end_matches('/')));
            if image.is_empty() || image.chars().any(char::is_whitespace) {
                problems.push(format!("{flag} {image:?}: not an image reference like registry.example/mesh-control:1.0"));
            }
            image
        };
        let control_image = image(&self.control_image, names::CONTROL_IMAGE, "--control-image", &mut problems);
        let proxy_image = image(&self.proxy_image, names::PROXY_IMAGE, "--proxy-image", &mut problems);
        let init_image = image(&self.init_image, names::INIT_IMAGE, "--init-image", &mut problems);
        if !problems.is_empty() {
            return Err(InstallError::Options(problems));
        }

        let identity = match (&self.trust_anchor, &self.issuer_cert, &self.issuer_key) {
            (Some(anchor), Some(cert), Some(key)) => IdentityPki::from_pem(
                read("--trust-anchor", anchor, &mut problems),
                read("--issuer-cert", cert, &mut problems),
                read("--issuer-key", key, &mut problems),
                now,
            )
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
            _ => Some(IdentityPki::generate(&self.trust_domain, self.trust_anchor_lifetime, self.issuer_lifetime, now)?),
        };
        let dns_name = webhook_dns_name(&self.namespace);
        let webhook = match (&self.webhook_ca, &self.webhook_cert, &self.webhook_key) {
            (Some(ca), Some(cert), Some(key)) => WebhookPki::from_pem(
                read("--webhook-ca", ca, &mut problems),
                read("--webhook-cert", cert, &mut problems),
                read("--webhook-key", key, &mut problems),
                &dns_name,
                now,
            )
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
            _ => Some(WebhookPki::generate(&dns_name, self.webhook_cert_lifetime, now)?),
        };
        match (identity, webhook) {
            (Some(identity), Some(webhook)) if problems.is_empty() => Ok(Options {
                namespace: self.namespace.clone(),
                control_image,
                proxy_image,
                init_image,
                replicas: self.replicas,
                resources,
                cert_lifetime: self.cert_lifetime,
                trust_domain: self.trust_domain.clone(),
                cluster_domain: self.cluster_domain.clone(),
                webhook_failure_policy: self.webhook_failure_policy,
                webhook_timeout_seconds: self.webhook_timeout,
                identity,
                webhook,
            }),
            _ => Err(InstallError::Options(problems)),
        }
    }
}

impl UninstallArgs {
    /// The YAML stream `weft uninstall` prints.
    pub fn render(&self) -> Result<String, InstallError> {
        let mut problems = Vec::new();
        check_name("--namespace", &self.namespace, &mut problems);
        if !problems.is_empty() {
            return Err(InstallError::Options(problems));
        }
        // Only names and kinds are printed: no certificates are made, and the
        // PodDisruptionBudget is listed whatever --replicas installed (delete
        // with --ignore-not-found).
        let options = Options::skeleton(&self.namespace);
        yaml(&uninstall_header(&options), &uninstall_objects(&options)?)
    }
}

impl Options {
    /// Options whose objects have the right names and kinds but no
    /// certificates: what `weft uninstall` lists (every optional object included).
    fn skeleton(namespace: &str) -> Self {
        let empty = || super::CertAndKey { cert_pem: String::new(), key_pem: String::new() };
        Self {
            namespace: namespace.to_owned(),
            control_image: String::new(),
            proxy_image: String::new(),
            init_image: String::new(),
            replicas: 2,
            resources: Resources { cpu_request: None, memory_request: None, cpu_limit: None, memory_limit: None },
            cert_lifetime: Duration::from_secs(24 * 3600),
            trust_domain: String::new(),
            cluster_domain: String::new(),
            webhook_failure_policy: FailurePolicy::Ignore,
            webhook_timeout_seconds: 10,
            identity: IdentityPki { trust_anchor_pem: String::new(), issuer: empty() },
            webhook: WebhookPki { ca_pem: String::new(), serving: empty() },
        }
    }
}

/// A namespace name (RFC 1123 label).
fn check_name(flag: &str, name: &str, problems: &mut Vec<String>) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        problems.push(format!("{flag} {name:?}: must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"));
    }
}

/// A Kubernetes quantity (`100m`, `0.5`, `64Mi`, `1e3`; the injector's
/// parser), or `none`.
fn quantity(flag: &str, text: &str, problems: &mut Vec<String>) -> Option<String> {
    match text {
        "none" => None,
        _ if crate::inject::overrides::quantity(text).is_some_and(|v| v > 0.0) => Some(text.to_owned()),
        _ => {
            problems.push(format!("{flag} {text:?}: not a positive Kubernetes quantity like 100m, 0.5, 64Mi or 1Gi (or none)"));
            None
        }
    }
}

fn read<'a>(flag: &'a str, path: &Path, problems: &mut Vec<String>) -> (&'a str, String) {
    let text = std::fs::read_to_string(path)
        .map_err(|e| problems.push(format!("{flag} {}: {e}", path.display())))
        .unwrap_or_default();
    (flag, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let mut problems = Vec::new();
        for good in ["100m", "0.5", "64Mi", "1Gi", "2", "1e3", "1.5G"] {
            assert_eq!(quantity("--q", good, &mut problems).as_deref(), Some(good));
        }
        assert_eq!(quantity("--q", "none", &mut problems), None);
        assert!(problems.is_empty(), "{problems:?}");
        for bad in ["", "abc", "64MB", "1..2", "-1", "m", "1e"] {
            assert_eq!(quantity("--q", bad, &mut problems), None, "{bad}");
        }
        assert_eq!(problems.len(), 7, "{problems:?}");
    }
}
