//! `kind` and `kube` behind the [`Substrate`] trait: the runner's cell loop
//! drives them like `local` and `netns`, executing the pieces of the one
//! [`Plan`] that `--dry-run` prints.
//!
//! ```text
//!  prepare          cluster (created unless present), images, the run's namespace, API client + nodes
//!  order            the plan's order: skipped cells first, then by mesh, variant, scenario
//!  start_scenario   which scenario (nothing runs per scenario alone: the server is per variant)
//!  deploy           mesh installed (unless present; another this run installed goes first),
//!                   namespace opted in for the variant, server applied and rolled out
//!                   (kept for the scenario's next cells of the same variant)
//!  measure          the cell's Job: applied, sampled after warm-up, its log's record; deleted
//!  teardown         nothing per cell (no process of bench's own)
//!  end_scenario     the server removed
//!  close            namespace opted out, meshes this run installed uninstalled,
//!                   the namespace deleted, the kind cluster too if asked and created
//! ```
//!
//! A step that fails is not retried for every later cell: a mesh whose
//! install failed fails its cells at once with the install's error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::exec::{self, Cmd};
use super::meshes::{self, Mesh};
use super::plan::{self, Group, Plan, VariantRun};
use super::{manifests, run, run_id, Flags, KubeError};
use crate::plan::Cell;
use crate::substrate::cluster::{Cluster, ClusterSpec, MeshMode};
use crate::substrate::{
    cleanup, DeployError, Deployment, LoadCell, MeasureError, ScenarioTopology, Substrate, Target,
};
use crate::suite::{Scenario, Suite, Variant};

/// A cluster run in progress (or, opened for conformance, a substrate that
/// says why it deploys no topologies).
pub struct Kube {
    name: &'static str,
    /// `None`: opened without a suite (conformance).
    plan: Option<Arc<Plan>>,
    /// After [`Substrate::prepare`]: the API client and the nodes it samples.
    api: Option<(kube::Client, Vec<String>)>,
    versions: BTreeMap<String, String>,
    /// This run created the kind cluster.
    created_cluster: bool,
    /// The run's namespace may exist (its creation was started).
    namespace: bool,
    /// Meshes this run installed and has not uninstalled, oldest first.
    installed: Vec<Mesh>,
    /// Meshes found installed or installed by this run.
    ready: BTreeSet<Mesh>,
    /// Meshes whose install failed, and the error (not retried).
    broken: BTreeMap<Mesh, String>,
    /// The variant the namespace is opted in for.
    opted: Option<Variant>,
    /// Capacity probes' Jobs made so far (each gets its own name).
    probes: usize,
    scenario: Option<usize>,
    /// The variant whose server runs for `scenario`, and how to remove it.
    server: Option<(Variant, Cmd)>,
}

impl Kube {
    /// Plan a run of `suite` on the cluster `flags` name; nothing is touched
    /// until [`Substrate::prepare`].
    pub fn open(suite: &Suite, flags: &Flags) -> Result<Kube, KubeError> {
        let opts = flags.options(&run_id(&crate::env::now_rfc3339()))?;
        let plan = plan::build(suite, &opts);
        Ok(Kube::new(plan.substrate, Some(Arc::new(plan))))
    }

    /// For `bench conformance --substrate kind|kube`: every topology is
    /// refused (see [`Substrate::deploy_cluster`] below); nothing is touched.
    pub fn without_suite(name: &'static str) -> Kube {
        Kube::new(name, None)
    }

    fn new(name: &'static str, plan: Option<Arc<Plan>>) -> Kube {
        Kube {
            name,
            plan,
            api: None,
            versions: BTreeMap::new(),
            created_cluster: false,
            namespace: false,
            installed: Vec::new(),
            ready: BTreeSet::new(),
            broken: BTreeMap::new(),
            opted: None,
            probes: 0,
            scenario: None,
            server: None,
        }
    }

    fn plan(&self) -> Result<Arc<Plan>, String> {
        self.plan.clone().ok_or_else(|| {
            format!("the {} substrate was opened without a suite: it runs no load cells", self.name)
        })
    }

    async fn prepare_cluster(&mut self, plan: &Plan) -> Result<(), KubeError> {
        run::run_steps(&plan.cluster, &mut self.created_cluster).await?;
        run::run_steps(&plan.image_steps, &mut false).await?;
        let client = run::client(plan.kubectl.context.as_deref()).await?;
        if let Ok(v) = client.apiserver_version().await {
            self.versions.insert("kubernetes".into(), v.git_version);
        }
        let nodes: Vec<String> = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| KubeError::Api(format!("list nodes: {e}")))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        // A SIGKILLed bench's watchdog deletes the namespace (and, newest
        // first, uninstalls the meshes registered later).
        self.namespace = true;
        cleanup::register(run::namespace_cleanup(plan));
        run::run_steps(&plan.setup, &mut false).await?;
        self.api = Some((client, nodes));
        Ok(())
    }

    /// `g`'s mesh installed (unless it is there), after uninstalling any
    /// other mesh this run installed: one mesh at a time in the cluster.
    async fn mesh_for(&mut self, plan: &Plan, g: &Group) -> Result<(), DeployError> {
        let failed = |why: &str| DeployError::Start {
            component: format!("the {} install", g.mesh.as_str()),
            detail: why.to_string(),
        };
        if let Some(why) = self.broken.get(&g.mesh) {
            return Err(failed(why));
        }
        for m in self.installed.clone() {
            if m != g.mesh {
                self.uninstall(plan, m).await;
            }
        }
        if self.ready.contains(&g.mesh) {
            return Ok(());
        }
        let mut installed = false;
        let done = run::run_steps(&g.install, &mut installed).await;
        // Half an install is this run's to remove too.
        if installed {
            self.installed.push(g.mesh);
            for a in run::uninstall_cleanup(g) {
                cleanup::register(a);
            }
        }
        match done {
            Ok(()) => {
                self.ready.insert(g.mesh);
                Ok(())
            }
            Err(e) => {
                self.broken.insert(g.mesh, e.to_string());
                Err(failed(&e.to_string()))
            }
        }
    }

    async fn uninstall(&mut self, plan: &Plan, m: Mesh) {
        if let Some(g) = plan.groups.iter().find(|g| g.mesh == m) {
            for a in &g.uninstall {
                if let Err(e) = a.run().await {
                    eprintln!("WARNING: uninstalling {}: {e}", m.as_str());
                }
            }
            for a in run::uninstall_cleanup(g) {
                cleanup::forget(&a);
            }
        }
        self.installed.retain(|x| *x != m);
        self.ready.remove(&m);
    }

    /// The namespace marked for `v`'s mesh (the previous variant's mark removed).
    async fn opt_in(&mut self, plan: &Plan, v: &VariantRun) -> Result<(), DeployError> {
        if self.opted == Some(v.variant) {
            return Ok(());
        }
        let failed = |e: exec::CmdError| DeployError::Start {
            component: format!("namespace {}", plan.namespace),
            detail: e.to_string(),
        };
        if let Some(prev) = self.opted.take() {
            if let Some(c) = variant_run(plan, prev).and_then(|(_, p)| p.opt_out.as_ref()) {
                exec::run(c).await.map_err(failed)?;
            }
        }
        if let Some(c) = &v.opt_in {
            exec::run(c).await.map_err(failed)?;
        }
        self.opted = Some(v.variant);
        Ok(())
    }

    async fn remove_server(&mut self) {
        if let Some((_, remove)) = self.server.take() {
            if let Err(e) = exec::run(&remove).await {
                eprintln!("WARNING: removing the server: {e}");
            }
        }
    }
}

fn variant_run(plan: &Plan, v: Variant) -> Option<(&Group, &VariantRun)> {
    plan.groups
        .iter()
        .find_map(|g| g.variants.iter().find(|r| r.variant == v).map(|r| (g, r)))
}

fn say(mp: &MultiProgress, line: String) {
    if mp.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = mp.println(line);
    }
}

impl Substrate for Kube {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn prepare(&mut self) -> Result<(), DeployError> {
        let plan = self.plan().map_err(|reason| DeployError::Unavailable { reason })?;
        eprintln!(
            "bench: {} run {} in namespace {}; `--dry-run` prints every step",
            plan.substrate, plan.run_id, plan.namespace
        );
        self.prepare_cluster(&plan).await.map_err(|e| DeployError::Start {
            component: "the cluster setup".into(),
            detail: e.to_string(),
        })
    }

    /// Installing a mesh takes minutes: the plan's order (by mesh, then
    /// variant, then scenario), with the cells that do not run here first.
    fn order(&self, cells: &[Cell]) -> Vec<usize> {
        let Some(plan) = &self.plan else {
            return (0..cells.len()).collect();
        };
        let jobs: Vec<usize> = plan
            .jobs()
            .map(|(.., j)| j.number - 1)
            .filter(|i| *i < cells.len())
            .collect();
        let mut listed = vec![false; cells.len()];
        for i in &jobs {
            listed[*i] = true;
        }
        let mut out: Vec<usize> = (0..cells.len()).filter(|i| !listed[*i]).collect();
        out.extend(jobs);
        out
    }

    fn unavailable(&self, scenario: &Scenario) -> Option<String> {
        meshes::scenario_unsupported(scenario)
    }

    async fn start_scenario(&mut self, topo: &ScenarioTopology) -> Result<(), DeployError> {
        let plan = self.plan().map_err(|reason| DeployError::Unavailable { reason })?;
        let si = plan
            .scenario_names
            .iter()
            .position(|n| *n == topo.scenario)
            .ok_or_else(|| DeployError::Start {
                component: format!("scenario {}", topo.scenario),
                detail: "not in the suite this run was planned for".into(),
            })?;
        self.scenario = Some(si);
        Ok(())
    }

    async fn deploy(&mut self, variant: Variant, topo: &ScenarioTopology) -> Result<Deployment, DeployError> {
        if !topo.proxy_args.is_empty() && variant.has_weft_proxy() {
            return Err(DeployError::Unavailable {
                reason: format!(
                    "`proxy_args` ({}) is not applied on {}: the injector writes each sidecar's flags; run the scenario on local or netns",
                    topo.proxy_args.join(" "),
                    self.name
                ),
            });
        }
        let plan = self.plan().map_err(|reason| DeployError::Unavailable { reason })?;
        meshes::variant(variant).map_err(|reason| DeployError::Unavailable { reason })?;
        let (g, v) = variant_run(&plan, variant).ok_or_else(|| DeployError::Unavailable {
            reason: format!("{variant} is not in the {} plan of this run", plan.substrate),
        })?;
        if let Err(reason) = &g.available {
            return Err(DeployError::Unavailable { reason: reason.clone() });
        }
        let s = self
            .scenario
            .and_then(|si| v.scenarios.iter().find(|s| s.scenario == si))
            .ok_or_else(|| DeployError::Unavailable {
                reason: format!("scenario {} does not run {variant} on {}", topo.scenario, plan.substrate),
            })?;
        if self.server.as_ref().map(|(v, _)| *v) != Some(variant) {
            self.remove_server().await;
            self.mesh_for(&plan, g).await?;
            self.opt_in(&plan, v).await?;
            // Set first: a server that failed halfway is removed like one that ran.
            self.server = Some((variant, s.remove.clone()));
            let up = async {
                run::run_steps(std::slice::from_ref(&s.server), &mut false).await?;
                for r in &s.rollouts {
                    exec::run(r).await?;
                }
                Ok::<(), KubeError>(())
            }
            .await;
            if let Err(e) = up {
                self.remove_server().await;
                return Err(DeployError::Ready {
                    component: "the target server".into(),
                    detail: e.to_string(),
                });
            }
        }
        Ok(Deployment {
            variant,
            target: Target::InCluster(format!(
                "{}.{}.svc.cluster.local:{}",
                manifests::SERVER,
                plan.namespace,
                manifests::SERVER_PORT
            )),
            host: None,
            // Sampled from the kubelets by the Job's watches, not from /proc.
            components: Vec::new(),
            load_from: None,
            // The sidecars' admin listeners are inside the pods: no cross-check here.
            admins: Vec::new(),
            procs: Vec::new(),
        })
    }

    async fn measure(&mut self, dep: &Deployment, lc: &LoadCell<'_>) -> Result<record::Run, MeasureError> {
        let plan = self.plan().map_err(MeasureError::InCluster)?;
        let (g, v, _, j) = plan
            .jobs()
            .find(|(.., j)| j.number == lc.index + 1)
            .ok_or_else(|| MeasureError::InCluster(format!("cell {} has no Job in the plan", lc.index + 1)))?;
        // A capacity probe: the cell's Job at the search's rate, under a name of its own.
        let probe;
        let j = match lc.cell.rate {
            Some(rate) if j.cell.rate != Some(rate) => {
                self.probes += 1;
                probe = j.probe(rate, self.probes);
                &probe
            }
            _ => j,
        };
        let (client, nodes) = self
            .api
            .as_ref()
            .ok_or_else(|| MeasureError::InCluster("the cluster was not prepared".into()))?;
        let bar = lc.progress.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("  {msg:40} {spinner} {elapsed}").expect("valid template"));
        bar.set_message(format!("{} (Job {})", lc.label, j.name));
        bar.enable_steady_tick(Duration::from_millis(200));
        // Weft's proxies are read through the API server around the Job.
        let xcheck = (g.mesh == Mesh::Weft).then_some(v.sides);
        let measured = run::run_job(&plan, j, client, nodes, xcheck).await;
        if let Err(e) = exec::run(&j.delete).await {
            say(lc.progress, format!("WARNING: {e}"));
        }
        bar.finish_and_clear();
        lc.progress.remove(&bar);
        let (load, resources, counts) = measured.map_err(|e| MeasureError::InCluster(e.to_string()))?;
        let proxy_counts = match counts {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                say(lc.progress, format!("WARNING: {}: no proxy counts for the cross-check: {e}", lc.label));
                None
            }
        };
        Ok(record::Run {
            scenario: lc.scenario.name.clone(),
            variant: dep.variant.as_str().to_string(),
            substrate: self.name.to_string(),
            repetition: lc.cell.repetition,
            load,
            resources,
            proxy_counts,
            proxy_cpu: None,
            proxy_args: Vec::new(),
            // The load ran inside the cluster, on its own clock: bench does not know its window.
            host: None,
        })
    }

    /// The server stays up for the scenario's next cells of this variant
    /// (`end_scenario` or the next variant's `deploy` removes it).
    async fn teardown(&mut self, deployment: Deployment) {
        deployment.stop().await;
    }

    async fn end_scenario(&mut self) {
        self.remove_server().await;
        self.scenario = None;
    }

    async fn close(&mut self) {
        let Some(plan) = self.plan.clone() else {
            return;
        };
        self.remove_server().await;
        if let Some(v) = self.opted.take() {
            if let Some(c) = variant_run(&plan, v).and_then(|(_, r)| r.opt_out.as_ref()) {
                if let Err(e) = exec::run(c).await {
                    eprintln!("WARNING: {e}");
                }
            }
        }
        for m in self.installed.clone().into_iter().rev() {
            self.uninstall(&plan, m).await;
        }
        if self.namespace {
            let mut gone = true;
            for s in &plan.teardown {
                if let plan::Step::Do(a) = s {
                    if let Err(e) = a.run().await {
                        gone = false;
                        eprintln!("WARNING: teardown: {e}");
                    }
                }
            }
            // Left registered when its deletion failed: the watchdog tries again.
            if gone {
                cleanup::forget(&run::namespace_cleanup(&plan));
            }
            self.namespace = false;
        }
        if let (Some(a), true) = (&plan.delete_cluster, self.created_cluster) {
            if let Err(e) = a.run().await {
                eprintln!("WARNING: {e}");
            }
            self.created_cluster = false;
        }
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.versions.clone()
    }

    /// Not implemented: a conformance topology needs every pod reachable
    /// from bench (its address, its network namespace, packet captures on
    /// it) and per-workload echo servers and sidecars certified by a
    /// mesh-control bench starts (the contract in `base.rs`). On a cluster
    /// that is a different harness (probes as pods, captures in the nodes),
    /// not a port of this one.
    async fn deploy_cluster(&mut self, _spec: &ClusterSpec, _mode: MeshMode) -> Result<Cluster, DeployError> {
        Err(DeployError::Unavailable {
            reason: format!(
                "conformance on {} is not implemented: its checks reach every pod from bench (addresses, network namespaces, packet captures), which a cluster's pods are not; run `bench conformance --substrate local` or `--substrate netns`",
                self.name
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substrate::kube::manifests::Selector;
    use crate::substrate::kube::plan::{Options, Target as Cluster};

    #[test]
    fn cells_run_by_mesh_then_variant_then_scenario_after_those_that_do_not_run() {
        let suite = crate::suite::parse(
            "name = \"p\"\n[[scenario]]\nname = \"a\"\nrates = [10]\nrepetitions = 2\nvariants = [\"weft\", \"baseline\", \"nginx\"]\n[[scenario]]\nname = \"b\"\nrates = [10]\nvariants = [\"baseline\", \"weft\"]\n",
            "t",
        )
        .unwrap();
        let opts = Options {
            target: Cluster::Kube { context: None, registry: "r".into() },
            client: Selector::role("client"),
            server: Selector::role("server"),
            run_id: "r1".into(),
            owner: "h:1".into(),
            build_images: false,
            delete_cluster: false,
            workspace: std::path::PathBuf::from("/ws"),
            weft: "weft".into(),
            tag: "t".into(),
        };
        let kube = Kube::new("kube", Some(Arc::new(plan::build(&suite, &opts))));
        let cells = crate::plan::cells(&suite);
        let order = kube.order(&cells);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..cells.len()).collect::<Vec<_>>(), "each cell once");
        let seq: Vec<(&str, &str)> = order
            .iter()
            .map(|i| (suite.scenarios[cells[*i].scenario].name.as_str(), cells[*i].variant.as_str()))
            .collect();
        assert_eq!(
            seq,
            [
                ("a", "nginx"),
                ("a", "nginx"),
                ("a", "baseline"),
                ("a", "baseline"),
                ("b", "baseline"),
                ("a", "weft"),
                ("a", "weft"),
                ("b", "weft"),
            ]
        );
    }
}
