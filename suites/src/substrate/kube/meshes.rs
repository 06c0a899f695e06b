//! The meshes under test on a cluster and how each variant maps onto one:
//! its install and uninstall (through the mesh's own CLI), how a namespace
//! or pod opts in to injection, its sidecar's container name and where its
//! control plane runs (for the sampler).

use std::time::Duration;

use mesh_kube::names;

use super::exec::{self, Cmd};
use super::manifests::Annotations;
use crate::suite::{Hardening, LoadShape, Scenario, Variant};

/// Long enough for a control plane's images to be pulled on a cold node.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mesh {
    /// No mesh: the baseline.
    None,
    Weft,
    Linkerd,
    Istio,
}

/// Which pods of a variant get a sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sides {
    pub client: bool,
    pub server: bool,
}

impl Mesh {
    pub fn as_str(self) -> &'static str {
        match self {
            Mesh::None => "none",
            Mesh::Weft => "weft",
            Mesh::Linkerd => "linkerd",
            Mesh::Istio => "istio",
        }
    }

    /// The CLI that installs it (absent: the variant is skipped, loudly).
    pub fn cli(self) -> Option<&'static str> {
        match self {
            Mesh::None => None,
            Mesh::Weft => Some("weft"),
            Mesh::Linkerd => Some("linkerd"),
            Mesh::Istio => Some("istioctl"),
        }
    }

    /// The namespace its control plane lives in; its presence means it is
    /// installed (bench then leaves it alone at the end).
    pub fn control_namespace(self) -> Option<&'static str> {
        match self {
            Mesh::None => None,
            Mesh::Weft => Some(names::NAMESPACE),
            Mesh::Linkerd => Some("linkerd"),
            Mesh::Istio => Some("istio-system"),
        }
    }

    /// The injected proxy's container name.
    pub fn proxy_container(self) -> Option<&'static str> {
        match self {
            Mesh::None => None,
            Mesh::Weft => Some(names::PROXY_CONTAINER),
            Mesh::Linkerd => Some("linkerd-proxy"),
            Mesh::Istio => Some("istio-proxy"),
        }
    }

    /// `a | b` pairs and commands that install it and wait until it is ready.
    /// `weft` is the `weft` CLI built for this run (its images' tag).
    pub fn install(self, kubectl: &Kubectl, weft: &str, weft_args: &[String]) -> Vec<Action> {
        let apply = kubectl.cmd(&["apply", "-f", "-"]).timeout(INSTALL_TIMEOUT);
        match self {
            Mesh::None => Vec::new(),
            Mesh::Weft => {
                let mut install = Cmd::new(weft, &["install"], KUBECTL_TIMEOUT);
                install.args.extend(weft_args.iter().cloned());
                // `weft check` takes --context after its subcommand.
                let mut check = Cmd::new(weft, &["check"], KUBECTL_TIMEOUT);
                if let Some(ctx) = &kubectl.context {
                    check.args.extend(["--context".to_string(), ctx.clone()]);
                }
                // mesh-control is ready only once it has listed HTTPRoutes and
                // GRPCRoutes: a cluster without the Gateway API CRDs would
                // never roll out. Applying the release Weft is tested against
                // is idempotent and left in place at teardown (other
                // workloads may use it).
                let gateway_api = kubectl
                    .cmd(&["apply", "-f", mesh_kube::install::GATEWAY_API_STANDARD_CRDS])
                    .timeout(KUBECTL_TIMEOUT);
                vec![
                    Action::Run(gateway_api),
                    Action::Pipe(install, apply),
                    Action::Run(kubectl.rollout(names::NAMESPACE, names::CONTROL)),
                    Action::Run(check),
                ]
            }
            Mesh::Linkerd => vec![
                Action::Pipe(
                    kubectl.tool("linkerd", &["install", "--crds"]),
                    apply.clone(),
                ),
                Action::Pipe(kubectl.tool("linkerd", &["install"]), apply),
                Action::Run(kubectl.tool("linkerd", &["check"]).timeout(INSTALL_TIMEOUT)),
            ],
            Mesh::Istio => vec![Action::Run(
                kubectl
                    .tool("istioctl", &["install", "-y", "--set", "profile=minimal"])
                    .timeout(INSTALL_TIMEOUT),
            )],
        }
    }

    pub fn uninstall(self, kubectl: &Kubectl, weft: &str) -> Vec<Action> {
        let delete = kubectl
            .cmd(&["delete", "--ignore-not-found", "-f", "-"])
            .timeout(INSTALL_TIMEOUT);
        match self {
            Mesh::None => Vec::new(),
            Mesh::Weft => vec![Action::Pipe(
                Cmd::new(weft, &["uninstall"], KUBECTL_TIMEOUT),
                delete,
            )],
            Mesh::Linkerd => vec![Action::Pipe(
                kubectl.tool("linkerd", &["uninstall"]),
                delete,
            )],
            Mesh::Istio => vec![
                Action::Run(
                    kubectl
                        .tool("istioctl", &["uninstall", "--purge", "-y"])
                        .timeout(INSTALL_TIMEOUT),
                ),
                Action::Run(
                    kubectl
                        .cmd(&["delete", "namespace", "istio-system", "--ignore-not-found"])
                        .timeout(INSTALL_TIMEOUT),
                ),
            ],
        }
    }

    /// The namespace mark that opts the run's pods in, and the command that
    /// sets it (`on`) or removes it.
    pub fn opt_in(self, kubectl: &Kubectl, ns: &str, on: bool) -> Option<Cmd> {
        let (verb, key, value) = match self {
            Mesh::None => return None,
            Mesh::Weft => ("annotate", names::INJECT_ANNOTATION, "enabled"),
            Mesh::Linkerd => ("annotate", "linkerd.io/inject", "enabled"),
            Mesh::Istio => ("label", "istio-injection", "enabled"),
        };
        let mark = if on {
            format!("{key}={value}")
        } else {
            format!("{key}-")
        };
        Some(kubectl.cmd(&[verb, "namespace", ns, &mark, "--overwrite"]))
    }

    /// Pod annotations: keep one side out of the mesh, and make the client's
    /// app wait for its proxy (a Job's first requests must not race it).
    pub fn pod_annotations(self, meshed: bool) -> Annotations {
        let mut a = Annotations::new();
        match (self, meshed) {
            (Mesh::None, _) => {}
            (Mesh::Weft, false) => {
                a.insert(names::INJECT_ANNOTATION.into(), "disabled".into());
            }
            (Mesh::Linkerd, false) => {
                a.insert("linkerd.io/inject".into(), "disabled".into());
            }
            (Mesh::Istio, false) => {
                a.insert("sidecar.istio.io/inject".into(), "false".into());
            }
            (Mesh::Istio, true) => {
                a.insert(
                    "proxy.istio.io/config".into(),
                    r#"{"holdApplicationUntilProxyStarts": true}"#.into(),
                );
            }
            (Mesh::Weft | Mesh::Linkerd, true) => {}
        }
        a
    }
}

/// One thing to do on the way: a command, or `a | b`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Run(Cmd),
    Pipe(Cmd, Cmd),
}

impl Action {
    pub fn line(&self) -> String {
        match self {
            Action::Run(c) => c.line(),
            Action::Pipe(a, b) => format!("{} | {}", a.line(), b.line()),
        }
    }

    pub async fn run(&self) -> Result<String, exec::CmdError> {
        match self {
            Action::Run(c) => exec::run(c).await,
            Action::Pipe(a, b) => exec::pipe(a, b).await,
        }
    }
}

/// `kubectl` (and the mesh CLIs) pointed at the run's cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Kubectl {
    /// `--context`; `None`: the kubeconfig's current context.
    pub context: Option<String>,
}

impl Kubectl {
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        self.tool("kubectl", args)
    }

    /// kubectl, linkerd and istioctl all take `--context`.
    pub fn tool(&self, program: &str, args: &[&str]) -> Cmd {
        let mut c = Cmd::new(program, &[], KUBECTL_TIMEOUT);
        if let Some(ctx) = &self.context {
            c.args.extend(["--context".to_string(), ctx.clone()]);
        }
        c.args.extend(args.iter().map(|a| a.to_string()));
        c
    }

    pub fn rollout(&self, ns: &str, deployment: &str) -> Cmd {
        self.cmd(&[
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "-n",
            ns,
            "--timeout=300s",
        ])
        .timeout(Duration::from_secs(320))
    }
}

/// What a suite variant is on a cluster, or why it cannot run there.
pub fn variant(v: Variant) -> Result<(Mesh, Sides), String> {
    let both = Sides {
        client: true,
        server: true,
    };
    match v {
        Variant::Baseline => Ok((Mesh::None, Sides { client: false, server: false })),
        Variant::Weft => Ok((Mesh::Weft, both)),
        Variant::WeftClientOnly => Ok((Mesh::Weft, Sides { client: true, server: false })),
        Variant::WeftServerOnly => Ok((Mesh::Weft, Sides { client: false, server: true })),
        Variant::WeftPlaintext => Err("weft-plaintext runs only on local and netns: on a cluster Weft runs as `weft install` deploys it, with mTLS".into()),
        Variant::Linkerd => Ok((Mesh::Linkerd, both)),
        Variant::Istio => Ok((Mesh::Istio, both)),
        Variant::Nginx | Variant::Haproxy => Err(format!(
            "{v} is a peer of the local and netns substrates only; on a cluster the peers are linkerd and istio (suites/kind.toml)"
        )),
        Variant::NginxMtls | Variant::HaproxyMtls => Err(format!(
            "{v} is a chain of two peer proxies that bench starts as processes with certificates it makes per run; it runs on the local and netns substrates only (on a cluster the peer meshes are linkerd and istio, suites/kind.toml)"
        )),
    }
}

/// Why a whole scenario cannot run on a cluster (`None`: it can).
pub fn scenario_unsupported(s: &Scenario) -> Option<String> {
    if matches!(s.load, LoadShape::Propagation(_)) {
        return Some("discovery propagation measures mesh-control alone on this machine; run it with --substrate local".into());
    }
    if matches!(s.load, LoadShape::Sweep(_)) {
        return Some("scale sweeps grow the deployment on this machine (endpoints, connections, authorities, Services); run them with --substrate local".into());
    }
    if !s.protocol.is_http() {
        // The server Deployment's readiness probe and Service are HTTP's;
        // nothing here is wired for gRPC / TCP / WebSocket targets yet.
        return Some(format!(
            "protocol {} runs on the local substrate only (the cluster's server and its probes are HTTP's)",
            s.protocol.as_str()
        ));
    }
    s.hardening.as_ref().map(|h| {
        let what = match h {
            Hardening::Soak(_) => "soak",
            Hardening::Fault(_) => "fault",
            Hardening::Overload(_) => "overload",
        };
        format!("{what} scenarios run on the local substrate only")
    })
}

/// Whether the mesh's CLI is here; the loud reason when it is not.
/// (`weft` is always here: bench finds or builds it next to itself before a run.)
pub fn cli_present(mesh: Mesh) -> Result<(), String> {
    match mesh.cli() {
        Some(cli) if mesh != Mesh::Weft && exec::which(cli).is_none() => Err(match mesh {
            Mesh::Linkerd => "linkerd not found on PATH; install the CLI (curl -sL https://run.linkerd.io/install-edge | sh) to compare against Linkerd".into(),
            _ => "istioctl not found on PATH; install it (curl -L https://istio.io/downloadIstio | sh -) to compare against Istio".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_variant_maps_or_says_why_not() {
        for v in Variant::ALL {
            match variant(v) {
                Ok((m, sides)) => assert_eq!(m == Mesh::None, !sides.client && !sides.server, "{v}"),
                Err(why) => assert!(why.contains(v.as_str()), "{v}: {why}"),
            }
        }
    }

    #[test]
    fn opt_in_marks_and_unmarks_the_namespace() {
        let k = Kubectl { context: Some("kind-weft-bench".into()) };
        assert_eq!(
            Mesh::Weft.opt_in(&k, "ns", true).unwrap().line(),
            "kubectl --context kind-weft-bench annotate namespace ns weft.io/inject=enabled --overwrite"
        );
        assert_eq!(
            Mesh::Istio.opt_in(&k, "ns", false).unwrap().line(),
            "kubectl --context kind-weft-bench label namespace ns istio-injection- --overwrite"
        );
        assert!(Mesh::None.opt_in(&k, "ns", true).is_none());
        let linkerd: Vec<String> = Mesh::Linkerd.install(&k, "weft", &[]).iter().map(Action::line).collect();
        assert_eq!(linkerd[0], "linkerd --context kind-weft-bench install --crds | kubectl --context kind-weft-bench apply -f -");
    }
}
