//! The one way commands ask for a substrate: a [`SubstrateKind`] (what the
//! user chose with `--substrate`), checked with [`SubstrateKind::preflight`]
//! before anything is built, then [`SubstrateKind::open`] into an
//! [`AnySubstrate`], which implements [`Substrate`] for whichever it is.
//!
//! A new substrate is one variant in each enum and one line in `each!`.

use std::collections::BTreeMap;
use std::path::Path;

use super::cluster::{Cluster, ClusterSpec, MeshMode};
use super::{netns, DeployError, Deployment, FaultStep, Local, Netns, ScenarioTopology, Substrate};
use crate::bins::Binaries;
use crate::suite::{Fault, Variant};

/// Where variants and conformance topologies run (`--substrate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubstrateKind {
    /// Processes on 127.0.0.1, proxies addressed explicitly.
    Local,
    /// Pods as network namespaces on a node bridge, transparent
    /// interception; needs root.
    Netns,
    /// A kind cluster it creates or reuses (`substrate::kube`: load suites only).
    Kind,
    /// An existing Kubernetes cluster from the kubeconfig (`substrate::kube`: load suites only).
    Kube,
}

/// Why a substrate cannot be used here, said before anything starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It does not exist (yet) in this build: a usage error (exit 64).
    #[error("{0}")]
    NotAvailable(String),
    /// It exists but this user may not run it (exit 77, EX_NOPERM).
    #[error("{0}")]
    NotPermitted(String),
}

impl SubstrateKind {
    pub const ALL: [SubstrateKind; 4] = [
        SubstrateKind::Local,
        SubstrateKind::Netns,
        SubstrateKind::Kind,
        SubstrateKind::Kube,
    ];

    /// The name in `--substrate` and in every record.
    pub fn as_str(self) -> &'static str {
        match self {
            SubstrateKind::Local => "local",
            SubstrateKind::Netns => "netns",
            SubstrateKind::Kind => "kind",
            SubstrateKind::Kube => "kube",
        }
    }

    /// Whether it deploys variants and conformance topologies one at a time
    /// ([`Substrate`]); kind and kube run whole load suites as a plan
    /// (`substrate::kube::drive`, chosen by the runner) and nothing else.
    pub fn exists(self) -> bool {
        matches!(self, SubstrateKind::Local | SubstrateKind::Netns)
    }

    /// Whether it can run here, checked before anything is read, built or
    /// started, so a run that cannot start says so at once.
    pub fn preflight(self) -> Result<(), Refusal> {
        match self {
            SubstrateKind::Local => Ok(()),
            SubstrateKind::Netns => netns::net::require_root().map_err(Refusal::NotPermitted),
            SubstrateKind::Kind | SubstrateKind::Kube => Err(Refusal::NotAvailable(format!(
                "--substrate {name}: the {name} substrate runs load suites (`bench run --substrate {name} --suite quick|ci|full|kind`), not conformance yet: its topologies are deployed only on local and netns; `--dry-run` lists the tests",
                name = self.as_str()
            ))),
        }
    }

    /// Open it for a run whose private work dir is `work` (the netns
    /// substrate sweeps dead runs' namespaces and creates its node here).
    pub fn open(self, bins: Binaries, work: &Path) -> Result<AnySubstrate, DeployError> {
        match self {
            SubstrateKind::Local => Ok(AnySubstrate::Local(Local::new(bins, work))),
            SubstrateKind::Netns => Netns::new(bins, work).map(AnySubstrate::Netns),
            SubstrateKind::Kind | SubstrateKind::Kube => Err(DeployError::Unavailable {
                reason: self.preflight().err().map(|r| r.to_string()).unwrap_or_default(),
            }),
        }
    }
}

impl std::fmt::Display for SubstrateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An opened substrate, whichever it is.
pub enum AnySubstrate {
    Local(Local),
    Netns(Netns),
}

/// `$body` with `$s` bound to the substrate inside `$any`, whichever it is.
macro_rules! each {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySubstrate::Local($s) => $body,
            AnySubstrate::Netns($s) => $body,
        }
    };
}

impl Substrate for AnySubstrate {
    fn name(&self) -> &'static str {
        each!(self, s => s.name())
    }

    async fn start_scenario(&mut self, topo: &ScenarioTopology) -> Result<(), DeployError> {
        each!(self, s => s.start_scenario(topo).await)
    }

    async fn deploy(
        &mut self,
        variant: Variant,
        topo: &ScenarioTopology,
    ) -> Result<Deployment, DeployError> {
        each!(self, s => s.deploy(variant, topo).await)
    }

    async fn teardown(&mut self, deployment: Deployment) {
        each!(self, s => s.teardown(deployment).await)
    }

    async fn end_scenario(&mut self) {
        each!(self, s => s.end_scenario().await)
    }

    fn versions(&self) -> BTreeMap<String, String> {
        each!(self, s => s.versions())
    }

    async fn fault(
        &mut self,
        dep: &Deployment,
        fault: Fault,
        step: FaultStep,
    ) -> Result<String, DeployError> {
        each!(self, s => s.fault(dep, fault, step).await)
    }

    async fn deploy_cluster(
        &mut self,
        spec: &ClusterSpec,
        mode: MeshMode,
    ) -> Result<Cluster, DeployError> {
        each!(self, s => s.deploy_cluster(spec, mode).await)
    }
}

/// `bench clean`: remove what killed runs left, on every substrate that
/// leaves something behind (work dirs and process groups first). Returns
/// what was removed, one description each.
pub fn clean() -> Result<Vec<String>, String> {
    super::cleanup::sweep_strays(&std::env::temp_dir());
    let removed = netns::clean()?;
    Ok(removed
        .into_iter()
        .map(|n| format!("network namespace {n}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_substrates_are_refused_here_by_name_and_the_others_listed() {
        for k in [SubstrateKind::Kind, SubstrateKind::Kube] {
            let Err(Refusal::NotAvailable(why)) = k.preflight() else {
                panic!("{k} must be refused");
            };
            assert!(
                why.contains(&format!("the {k} substrate runs load suites (`bench run --substrate {k}"))
                    && why.contains("only on local and netns"),
                "{why}"
            );
        }
        assert_eq!(SubstrateKind::Local.preflight(), Ok(()));
    }
}
