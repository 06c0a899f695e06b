//! `weft inject FILE|-`'s command line.

use std::io::Read;
use std::path::PathBuf;

use super::manifests::{inject_stream, Injected, StreamError};
use super::{default_image, Config};
use crate::names;

/// `weft inject`'s command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Add the Weft proxy to every workload in Kubernetes YAML (offline; prints the result)",
    long_about = "Reads Kubernetes YAML (multi-document, Lists too) from FILE or stdin (-) and writes it to \
                  stdout with the Weft proxy and its `weft init` init container added to every Pod, \
                  Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob, unless its pod template \
                  is annotated weft.io/inject: disabled, uses hostNetwork, or is injected already. Other \
                  objects pass through unchanged. What was done to each object is said on stderr.",
    after_help = "Example:\n  kubectl -n weft get configmap weft-trust-anchor -o jsonpath='{.data.ca\\.crt}' > ca.crt\n  \
                  weft inject --trust-anchor ca.crt app.yaml | kubectl apply -f -\n\
                  Exit status: 0 done, 64 bad flag (or no --trust-anchor), 65 an object cannot be injected \
                  (nothing written), 66 FILE or the trust anchor cannot be read."
)]
pub struct InjectArgs {
    /// The YAML to inject: a file, or - for stdin
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// The proxy's image
    #[arg(long, env = "WEFT_INJECT_PROXY_IMAGE", default_value_t = default_image(names::PROXY_IMAGE), value_name = "IMAGE")]
    pub proxy_image: String,
    /// The init container's image (it runs `weft init`)
    #[arg(long, env = "WEFT_INJECT_INIT_IMAGE", default_value_t = default_image(names::INIT_IMAGE), value_name = "IMAGE")]
    pub init_image: String,
    /// imagePullPolicy of both containers (Always, IfNotPresent, Never); unset: Kubernetes' default
    #[arg(long, env = "WEFT_INJECT_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"], value_name = "POLICY")]
    pub image_pull_policy: Option<String>,
    /// The mesh's trust domain (mesh-control's --trust-domain)
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// The cluster's DNS domain (mesh-control is weft-control.<namespace>.svc.<this>)
    #[arg(long, env = "WEFT_CLUSTER_DOMAIN", default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// The namespace Weft's control plane runs in
    #[arg(long, env = "WEFT_NAMESPACE", default_value = names::NAMESPACE, value_name = "NAMESPACE")]
    pub control_namespace: String,
    /// mesh-control's SPIFFE ID (its --identity) [default: spiffe://<trust domain>/ns/weft/sa/mesh-control]
    #[arg(long, env = "WEFT_CONTROL_IDENTITY", value_name = "SPIFFE_ID")]
    pub control_identity: Option<String>,
    /// The control plane's trust anchor, PEM (ConfigMap weft-trust-anchor, key ca.crt, in its namespace):
    /// written into every proxy's environment. Required: `weft inject` reads nothing from a cluster
    #[arg(long, env = "WEFT_INJECT_TRUST_ANCHOR", value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
}

impl InjectArgs {
    /// The injector's configuration, with the trust anchor read from
    /// `--trust-anchor` and checked (PEM CA certificates).
    pub fn config(&self) -> Result<Config, InjectCmdError> {
        let anchor = self.trust_anchor.as_ref().ok_or_else(|| InjectCmdError::NoTrustAnchor {
            namespace: self.control_namespace.clone(),
        })?;
        let pem = std::fs::read_to_string(anchor)
            .map_err(|source| InjectCmdError::Read { path: anchor.clone(), source })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let problem = match crate::check::trust::parse_bundle(pem.as_bytes(), now) {
            Err(e) => Some(e),
            Ok(b) if !b.not_ca.is_empty() => Some(format!("not a CA certificate: {}", b.not_ca.join("; "))),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            return Err(InjectCmdError::BadTrustAnchor { path: anchor.clone(), problem });
        }
        Ok(self.config_with_anchor(pem))
    }

    /// The injector's configuration from the flags, given the trust anchor's PEM.
    pub fn config_with_anchor(&self, trust_anchor_pem: String) -> Config {
        Config {
            proxy_image: self.proxy_image.clone(),
            init_image: self.init_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            control_identity: self.control_identity.clone().unwrap_or_else(|| Config::control_identity_in(&self.trust_domain)),
            trust_domain: self.trust_domain.clone(),
            cluster_domain: self.cluster_domain.clone(),
            control_namespace: self.control_namespace.clone(),
            trust_anchor_pem,
            ..Config::default()
        }
    }
}

/// Why `weft inject` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InjectCmdError {
    #[error("reading {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", stream_errors(.path, .errors))]
    Stream { path: PathBuf, errors: StreamError },
    #[error(
        "no --trust-anchor: injected proxies carry the control plane's trust anchor in their pod spec, and \
         `weft inject` reads nothing from a cluster; pass it: \
         kubectl -n {namespace} get configmap weft-trust-anchor -o jsonpath='{{.data.ca\\.crt}}' > ca.crt; \
         weft inject --trust-anchor ca.crt ..."
    )]
    NoTrustAnchor { namespace: String },
    #[error("--trust-anchor {}: {problem} (it must be the control plane's trust anchor, PEM CA certificates)", .path.display())]
    BadTrustAnchor { path: PathBuf, problem: String },
}

/// `FILE:LINE: document N: what is wrong`, one line each, and that nothing was written.
fn stream_errors(path: &std::path::Path, errors: &StreamError) -> String {
    let mut lines: Vec<String> =
        errors.0.iter().map(|e| format!("{}:{}: document {}: {}", path.display(), e.line, e.document, e.message)).collect();
    lines.push(format!("{}: nothing written (fix the documents above)", path.display()));
    lines.join("\n")
}

impl InjectCmdError {
    /// sysexits: 66 cannot open input, 65 bad input data.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } => 66,
            Self::Stream { .. } => 65,
            Self::NoTrustAnchor { .. } | Self::BadTrustAnchor { .. } => 64,
        }
    }
}

/// Reads FILE (or `stdin` for `-`) and injects it.
pub fn run(args: &InjectArgs, stdin: impl Read) -> Result<Injected, InjectCmdError> {
    let config = args.config()?;
    let path = args.file.clone();
    let read = |mut from: Box<dyn Read + '_>| -> std::io::Result<String> {
        let mut text = String::new();
        from.read_to_string(&mut text)?;
        Ok(text)
    };
    let text = if path.as_os_str() == "-" {
        read(Box::new(stdin))
    } else {
        std::fs::File::open(&path).and_then(|f| read(Box::new(f)))
    }
    .map_err(|source| InjectCmdError::Read { path: path.clone(), source })?;
    let shown = if path.as_os_str() == "-" { PathBuf::from("<stdin>") } else { path };
    inject_stream(&text, &config).map_err(|errors| InjectCmdError::Stream { path: shown, errors })
}
