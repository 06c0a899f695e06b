//! The one way commands ask for a substrate: a [`SubstrateKind`] (what the
//! user chose with `--substrate`), checked with [`SubstrateKind::preflight`]
//! before anything is built, then [`SubstrateKind::open`] (or, for a load
//! run on a cluster, `kube::Kube::open` with the suite and the cluster
//! flags) into an [`AnySubstrate`], which implements [`Substrate`] for
//! whichever it is.
//!
//! A new substrate is one variant in each enum and one line in `each!`.

use std::collections::BTreeMap;
use std::path::Path;

use super::cluster::{Cluster, ClusterSpec, MeshMode};
use super::kube::Kube;
use super::{
    netns, DeployError, Deployment, FaultStep, LoadCell, Local, MeasureError, Netns,
    ScenarioTopology, Substrate,
};
use crate::bins::Binaries;
use crate::plan::Cell;
use crate::suite::{Fault, Scenario, Variant};

/// Where variants and conformance topologies run (`--substrate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubstrateKind {
    /// Processes on 127.0.0.1, proxies addressed explicitly.
    Local,
    /// Pods as network namespaces on a node bridge, transparent
    /// interception; needs root.
    Netns,
    /// A kind cluster it creates or reuses (`substrate::kube`; load suites,
    /// no conformance topologies).
    Kind,
    /// An existing Kubernetes cluster from the kubeconfig (`substrate::kube`;
    /// load suites, no conformance topologies).
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

    /// Whether it deploys conformance topologies ([`Substrate::deploy_cluster`]);
    /// kind and kube run load suites only (their `deploy_cluster` says why).
    pub fn deploys_topologies(self) -> bool {
        matches!(self, SubstrateKind::Local | SubstrateKind::Netns)
    }

    /// Whether it can run here, checked before anything is read, built or
    /// started, so a run that cannot start says so at once. (kind and kube
    /// need their programs and flags: the runner checks those.)
    pub fn preflight(self) -> Result<(), Refusal> {
        match self {
            SubstrateKind::Local | SubstrateKind::Kind | SubstrateKind::Kube => Ok(()),
            SubstrateKind::Netns => netns::net::require_root().map_err(Refusal::NotPermitted),
        }
    }

    /// Open it for a run whose private work dir is `work` (the netns
    /// substrate sweeps dead runs' namespaces and creates its node here).
    /// kind and kube opened here have no suite: a load run opens them with
    /// `kube::Kube::open`.
    pub fn open(self, bins: Binaries, work: &Path) -> Result<AnySubstrate, DeployError> {
        match self {
            SubstrateKind::Local => Ok(AnySubstrate::Local(Local::new(bins, work))),
            SubstrateKind::Netns => Netns::new(bins, work).map(AnySubstrate::Netns),
            // Without a suite: conformance, whose topologies it refuses.
            SubstrateKind::Kind | SubstrateKind::Kube => {
                Ok(AnySubstrate::Kube(Kube::without_suite(self.as_str())))
            }
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
    /// kind or kube.
    Kube(Kube),
}

/// `$body` with `$s` bound to the substrate inside `$any`, whichever it is.
macro_rules! each {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySubstrate::Local($s) => $body,
            AnySubstrate::Netns($s) => $body,
            AnySubstrate::Kube($s) => $body,
        }
    };
}

impl Substrate for AnySubstrate {
    fn name(&self) -> &'static str {
        each!(self, s => s.name())
    }

    async fn prepare(&mut self) -> Result<(), DeployError> {
        each!(self, s => s.prepare().await)
    }

    fn order(&self, cells: &[Cell]) -> Vec<usize> {
        each!(self, s => s.order(cells))
    }

    fn unavailable(&self, scenario: &Scenario) -> Option<String> {
        each!(self, s => s.unavailable(scenario))
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

    async fn measure(&mut self, dep: &Deployment, cell: &LoadCell<'_>) -> Result<record::Run, MeasureError> {
        each!(self, s => s.measure(dep, cell).await)
    }

    async fn teardown(&mut self, deployment: Deployment) {
        each!(self, s => s.teardown(deployment).await)
    }

    async fn end_scenario(&mut self) {
        each!(self, s => s.end_scenario().await)
    }

    async fn close(&mut self) {
        each!(self, s => s.close().await)
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

    async fn scale(
        &mut self,
        dep: &Deployment,
        dimension: crate::suite::SweepDimension,
        size: usize,
    ) -> Result<super::Scaled, DeployError> {
        each!(self, s => s.scale(dep, dimension, size).await)
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

    #[tokio::test]
    async fn cluster_substrates_open_without_a_suite_refuse_topologies_by_name() {
        for k in [SubstrateKind::Kind, SubstrateKind::Kube] {
            assert_eq!(k.preflight(), Ok(()));
            assert!(!k.deploys_topologies());
            let none = std::path::PathBuf::from("/nonexistent");
            let bins = Binaries {
                loadgen: none.clone(),
                mesh_proxy: none.clone(),
                mesh_control: none.clone(),
                weft: none.clone(),
            };
            let Ok(mut s) = k.open(bins, &none) else {
                panic!("{k} opens");
            };
            assert_eq!(s.name(), k.as_str());
            let spec = crate::conformance::registry()[0].topology;
            let Err(DeployError::Unavailable { reason }) = s.deploy_cluster(&spec(), MeshMode::Weft).await else {
                panic!("{k} must refuse topologies");
            };
            assert!(reason.starts_with(&format!("conformance on {k} is not implemented: ")), "{reason}");
            assert!(s.prepare().await.is_err(), "{k} without a suite runs nothing");
        }
        assert_eq!(SubstrateKind::Local.preflight(), Ok(()));
    }
}
