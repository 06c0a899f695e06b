//! The plan of a cluster run: every step, command and manifest, built once
//! from the suite and the options. `--dry-run` prints it ([`render`]);
//! a real run executes the same plan (`run.rs`), so what the dry run shows
//! is what runs.
//!
//! ```text
//!  cluster ─> images ─> namespace ─> sampling ─> per mesh: install (unless present)
//!                                                 per variant: opt the namespace in
//!                                                   per scenario: server ─> a Job per cell ─> remove server
//!                                                 uninstall (what this run installed)
//!                                     ─> teardown (the run's namespace; the cluster if asked)
//! ```
//!
//! Cells are grouped by mesh, then by variant: installing a mesh takes
//! minutes, so the local substrate's interleaving of variants within a rate
//! is not kept here (the plan says so).

use std::path::PathBuf;
use std::time::Duration;

use mesh_kube::names;

use super::exec::Cmd;
use super::manifests::{self, Images, Manifest, Selector};
use super::meshes::{self, Action, Kubectl, Mesh, Sides};
use super::stats::Watch;
use crate::plan::{self as cells_plan, Cell};
use crate::substrate::Role;
use crate::suite::{LoadShape, Suite, Variant};

/// The images bench deploys: `<registry>/<name>:<tag>` as images/build
/// tags them and `weft install --registry --tag` names them (mesh-kube's names).
pub const IMAGES: [&str; 4] = [names::PROXY_IMAGE, names::CONTROL_IMAGE, names::LOADGEN_IMAGE, names::INIT_IMAGE];
/// A ConfigMap in kube-system of a kind cluster bench created.
pub const CREATED_MARKER: &str = "weft-bench-created";
/// How often the kubelet's stats summaries are read during a measured window.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Which cluster, and how images reach it.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A kind cluster bench creates (or reuses) from a kind-configs/ file;
    /// images are loaded into its nodes with `kind load docker-image`.
    Kind { cluster: String, config: PathBuf },
    /// An existing cluster from the kubeconfig; images are pushed to
    /// `registry` and pulled from there.
    Kube {
        context: Option<String>,
        registry: String,
    },
}

/// What `bench run --substrate kind|kube` was given.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub client: Selector,
    pub server: Selector,
    /// Names the run's namespace and labels it (`weft.dev/run`).
    pub run_id: String,
    /// `<host>:<pid>` of this bench.
    pub owner: String,
    /// Build the images (images/build); off: use what is already built.
    pub build_images: bool,
    /// Delete the kind cluster at the end if this run created it.
    pub delete_cluster: bool,
    /// The workspace root (kind-configs/, images/build).
    pub workspace: PathBuf,
    /// The `weft` CLI (`weft install | kubectl apply -f -`).
    pub weft: String,
    /// Image tag (`git describe --always --dirty --tags`).
    pub tag: String,
}

/// One step of the plan.
#[derive(Clone, Debug)]
pub enum Step {
    Do(Action),
    /// `kubectl apply -f -` of typed objects.
    Apply { cmd: Cmd, manifests: Vec<Manifest> },
    /// Steps taken only when `probe` finds the thing absent.
    Unless {
        probe: Probe,
        then: Vec<Step>,
    },
}

/// How a conditional step tells whether its thing exists.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// `kind get clusters` lists it.
    KindCluster { cmd: Cmd, name: String },
    /// The command succeeds (e.g. `kubectl get namespace linkerd`); absent
    /// when it fails with the API server's NotFound.
    Succeeds { cmd: Cmd, what: String },
}

/// A mesh and the variants measured with it.
#[derive(Clone, Debug)]
pub struct Group {
    pub mesh: Mesh,
    /// `Err`: its CLI is missing; every variant of it is skipped with this.
    pub available: Result<(), String>,
    /// Wrapped in an [`Step::Unless`] on its control plane's namespace.
    pub install: Vec<Step>,
    pub variants: Vec<VariantRun>,
    /// Run only when this run installed it.
    pub uninstall: Vec<Action>,
}

#[derive(Clone, Debug)]
pub struct VariantRun {
    pub variant: Variant,
    pub sides: Sides,
    pub opt_in: Option<Cmd>,
    pub opt_out: Option<Cmd>,
    pub scenarios: Vec<ScenarioRun>,
}

#[derive(Clone, Debug)]
pub struct ScenarioRun {
    pub scenario: usize,
    pub server: Step,
    pub rollouts: Vec<Cmd>,
    pub jobs: Vec<JobRun>,
    pub remove: Cmd,
}

#[derive(Clone, Debug)]
pub struct JobRun {
    pub cell: Cell,
    /// 1-based position in the suite's cell list (as `bench plan` numbers it).
    pub number: usize,
    pub label: String,
    pub name: String,
    pub apply: Step,
    pub watches: Vec<Watch>,
    pub warmup: Duration,
    pub window: Duration,
    pub deadline: Duration,
    pub delete: Cmd,
}

impl JobRun {
    /// The same Job at another rate, named `<name>-p<k>` (its pod, its
    /// sampled sidecar and its deletion follow the name): one per probe of
    /// a capacity search, whose rates the plan cannot know.
    pub fn probe(&self, rate: f64, k: usize) -> JobRun {
        let name = format!("{}-p{k}", self.name);
        let mut j = self.clone();
        if let Step::Apply { manifests, .. } = &mut j.apply {
            for m in manifests.iter_mut() {
                let Manifest::Job(job) = m else { continue };
                job.metadata.name = Some(name.clone());
                let relabel = |labels: &mut Option<std::collections::BTreeMap<String, String>>| {
                    if let Some(l) = labels.as_mut() {
                        l.insert("weft.dev/job".into(), name.clone());
                    }
                };
                relabel(&mut job.metadata.labels);
                let spec = job.spec.as_mut().expect("a load Job has a spec");
                if let Some(meta) = spec.template.metadata.as_mut() {
                    relabel(&mut meta.labels);
                }
                // Only the rate changes: the cell's other flags stay as planned.
                let args = spec.template.spec.as_mut().and_then(|pod| pod.containers.first_mut()).and_then(|c| c.args.as_mut());
                if let Some(args) = args {
                    if let Some(at) = args.iter().position(|x| x == "--rate") {
                        args[at + 1] = rate.to_string();
                    }
                }
            }
        }
        let (old_prefix, new_prefix) = (format!("{}-", self.name), format!("{name}-"));
        for w in &mut j.watches {
            if w.pod_prefix == old_prefix {
                w.pod_prefix = new_prefix.clone();
            }
        }
        for a in &mut j.delete.args {
            if *a == self.name {
                *a = name.clone();
            }
        }
        j.cell.rate = Some(rate);
        j.label = format!("{} probe {k} at {rate:.0} rps", self.label);
        j.name = name;
        j
    }
}

/// A cell that does not run on a cluster, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip {
    pub scenario: usize,
    pub variant: Option<Variant>,
    pub reason: String,
    pub cells: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub substrate: &'static str,
    pub suite: String,
    pub namespace: String,
    pub run_id: String,
    pub kubectl: Kubectl,
    pub images: Images,
    pub cluster: Vec<Step>,
    pub image_steps: Vec<Step>,
    pub setup: Vec<Step>,
    pub groups: Vec<Group>,
    pub skipped: Vec<Skip>,
    pub teardown: Vec<Step>,
    /// `--delete-cluster`: run only when this run created the kind cluster.
    pub delete_cluster: Option<Action>,
    pub cells: usize,
    pub scenario_names: Vec<String>,
}

/// Where the cluster pulls the images from: kind's nodes hold images/build's
/// default names (loaded, never pulled), another cluster the registry's.
fn registry(target: &Target) -> &str {
    match target {
        Target::Kind { .. } => names::IMAGE_REGISTRY,
        Target::Kube { registry, .. } => registry.trim_end_matches('/'),
    }
}

/// The name of image `name` where the cluster pulls it from.
fn image(target: &Target, name: &str, tag: &str) -> String {
    format!("{}/{name}:{tag}", registry(target))
}

/// `weft install`'s registry and tag for this run's images: the same scheme
/// as images/build's, so nothing is named twice.
pub fn weft_install_args(target: &Target, tag: &str) -> Vec<String> {
    vec!["--registry".into(), registry(target).to_owned(), "--tag".into(), tag.to_owned()]
}

pub fn build(suite: &Suite, opts: &Options) -> Plan {
    let all_cells = cells_plan::cells(suite);
    let (substrate, kubectl) = match &opts.target {
        Target::Kind { cluster, .. } => (
            "kind",
            Kubectl {
                context: Some(format!("kind-{cluster}")),
            },
        ),
        Target::Kube { context, .. } => (
            "kube",
            Kubectl {
                context: context.clone(),
            },
        ),
    };
    let ns = format!("weft-bench-{}", opts.run_id);
    let images = Images {
        loadgen: image(&opts.target, names::LOADGEN_IMAGE, &opts.tag),
    };
    let long = Duration::from_secs(600);

    let cluster = match &opts.target {
        Target::Kind { cluster, config } => vec![Step::Unless {
            probe: Probe::KindCluster {
                cmd: Cmd::new("kind", &["get", "clusters"], Duration::from_secs(30)),
                name: cluster.clone(),
            },
            then: vec![
                Step::Do(Action::Run(
                    Cmd::new("kind", &["create", "cluster", "--name", cluster], long)
                        .arg("--config")
                        .arg(config.display().to_string())
                        .arg("--wait")
                        .arg("300s"),
                )),
                // What `bench clean --delete-cluster` looks for before deleting a cluster.
                Step::Do(Action::Run(kubectl.cmd(&[
                    "create",
                    "configmap",
                    CREATED_MARKER,
                    "-n",
                    "kube-system",
                    "--from-literal=created-by=weft-bench",
                ]))),
            ],
        }],
        Target::Kube { .. } => vec![Step::Do(Action::Run(kubectl.cmd(&["cluster-info"])))],
    };

    // images/build (issue 10's images): <registry>/<name>:<tag>, pushed to the
    // registry, or loaded into a kind cluster under the default registry.
    let build_script = opts.workspace.join("images/build").display().to_string();
    let mut image_steps = Vec::new();
    match (&opts.target, opts.build_images) {
        (Target::Kind { cluster, .. }, true) => image_steps.push(Step::Do(Action::Run(Cmd::new(
            &build_script,
            &["--tag", &opts.tag, "--kind-load", cluster],
            long,
        )))),
        (Target::Kind { cluster, .. }, false) => {
            let mut load = Cmd::new("kind", &["load", "docker-image", "--name", cluster], long);
            load.args.extend(IMAGES.iter().map(|n| image(&opts.target, n, &opts.tag)));
            image_steps.push(Step::Do(Action::Run(load)));
        }
        (Target::Kube { registry, .. }, true) => image_steps.push(Step::Do(Action::Run(Cmd::new(
            &build_script,
            &["--tag", &opts.tag, "--registry", registry, "--push"],
            long,
        )))),
        // --no-build: the cluster pulls what the registry already holds.
        (Target::Kube { .. }, false) => {}
    }

    let apply = kubectl.cmd(&["apply", "-f", "-"]);
    let setup = vec![Step::Apply {
        cmd: apply.clone(),
        manifests: vec![manifests::namespace(&ns, &opts.run_id, &opts.owner)],
    }];

    // Which (scenario, variant) pairs run, grouped by mesh.
    let mut skipped = Vec::new();
    let mut by_mesh: Vec<(Mesh, Vec<(Variant, Sides)>)> = Vec::new();
    for (si, sc) in suite.scenarios.iter().enumerate() {
        let n_cells = |v: Option<Variant>| {
            all_cells
                .iter()
                .filter(|c| c.scenario == si && v.is_none_or(|v| c.variant == v))
                .count()
        };
        if let Some(reason) = meshes::scenario_unsupported(sc) {
            skipped.push(Skip {
                scenario: si,
                variant: None,
                reason,
                cells: n_cells(None),
            });
            continue;
        }
        for v in &sc.variants {
            match meshes::variant(*v) {
                Err(reason) => skipped.push(Skip {
                    scenario: si,
                    variant: Some(*v),
                    reason,
                    cells: n_cells(Some(*v)),
                }),
                Ok((mesh, sides)) => {
                    let i = match by_mesh.iter().position(|(m, _)| *m == mesh) {
                        Some(i) => i,
                        None => {
                            by_mesh.push((mesh, Vec::new()));
                            by_mesh.len() - 1
                        }
                    };
                    if !by_mesh[i].1.iter().any(|(x, _)| x == v) {
                        by_mesh[i].1.push((*v, sides));
                    }
                }
            }
        }
    }
    by_mesh.sort_by_key(|(m, _)| *m);

    let weft_args = weft_install_args(&opts.target, &opts.tag);
    let mut groups = Vec::new();
    for (mesh, variants) in by_mesh {
        let install = match mesh.control_namespace() {
            None => Vec::new(),
            Some(cns) => {
                let mut then = vec![Step::Do(Action::Run(kubectl.cmd(&[
                    "annotate",
                    "namespace",
                    &ns,
                    &format!("{}{}=true", names::BENCH_INSTALLED_ANNOTATION_PREFIX, mesh.as_str()),
                    "--overwrite",
                ])))];
                then.extend(mesh.install(&kubectl, &opts.weft, &weft_args).into_iter().map(Step::Do));
                vec![Step::Unless {
                    probe: Probe::Succeeds {
                        cmd: kubectl.cmd(&["get", "namespace", cns]),
                        what: format!("{} is not installed", mesh.as_str()),
                    },
                    then,
                }]
            }
        };
        let variants = variants
            .into_iter()
            .map(|(variant, sides)| VariantRun {
                variant,
                sides,
                opt_in: mesh.opt_in(&kubectl, &ns, true),
                opt_out: mesh.opt_in(&kubectl, &ns, false),
                scenarios: scenario_runs(suite, &all_cells, variant, mesh, sides, &ns, &images, &kubectl, opts),
            })
            .collect();
        groups.push(Group {
            mesh,
            available: meshes::cli_present(mesh),
            install,
            variants,
            uninstall: mesh.uninstall(&kubectl, &opts.weft),
        });
    }

    let teardown = vec![Step::Do(Action::Run(
        kubectl
            .cmd(&["delete", "namespace", &ns, "--ignore-not-found", "--wait=true", "--timeout=300s"])
            .timeout(Duration::from_secs(320)),
    ))];
    let delete_cluster = match (&opts.target, opts.delete_cluster) {
        (Target::Kind { cluster, .. }, true) => Some(Action::Run(Cmd::new(
            "kind",
            &["delete", "cluster", "--name", cluster],
            long,
        ))),
        _ => None,
    };
    Plan {
        substrate,
        suite: suite.name.clone(),
        namespace: ns,
        run_id: opts.run_id.clone(),
        kubectl,
        images,
        cluster,
        image_steps,
        setup,
        groups,
        skipped,
        teardown,
        delete_cluster,
        cells: all_cells.len(),
        scenario_names: suite.scenarios.iter().map(|s| s.name.clone()).collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn scenario_runs(
    suite: &Suite,
    all: &[Cell],
    variant: Variant,
    mesh: Mesh,
    sides: Sides,
    ns: &str,
    images: &Images,
    kubectl: &Kubectl,
    opts: &Options,
) -> Vec<ScenarioRun> {
    let apply = kubectl.cmd(&["apply", "-f", "-"]);
    let mut out = Vec::new();
    for (si, sc) in suite.scenarios.iter().enumerate() {
        if meshes::scenario_unsupported(sc).is_some() || !sc.variants.contains(&variant) {
            continue;
        }
        let server = manifests::server(ns, &opts.run_id, sc, images, &opts.server, &mesh.pod_annotations(sides.server));
        let mut rollouts = vec![kubectl.rollout(ns, manifests::SERVER)];
        if sc.slow_replica_delay.is_some() {
            rollouts.push(kubectl.rollout(ns, manifests::SERVER_SLOW));
        }
        let jobs = all
            .iter()
            .enumerate()
            .filter(|(_, c)| c.scenario == si && c.variant == variant)
            .map(|(i, c)| {
                let name = format!("load-{}", i + 1);
                let deadline = manifests::job_deadline(sc);
                // A capacity search's Job is its first probe's; the others
                // are made from it as the search goes (`JobRun::probe`).
                let rate = match &sc.load {
                    LoadShape::Capacity(k) => c.rate.or(Some(k.start_rate)),
                    _ => c.rate,
                };
                let mut args = manifests::load_args(sc, rate, ns);
                if mesh == Mesh::Weft {
                    // Its pod (and the sidecar in it) stays up after the record
                    // line, for the cross-check's second scrape (`xcheck.rs`).
                    let at = args.iter().position(|a| a == "--json").unwrap_or(args.len());
                    args.splice(at..at, ["--linger".into(), humantime::format_duration(super::xcheck::LINGER).to_string()]);
                }
                let job = manifests::job(
                    &name,
                    ns,
                    &opts.run_id,
                    args,
                    deadline,
                    images,
                    &opts.client,
                    &mesh.pod_annotations(sides.client),
                );
                let label = match &sc.load {
                    LoadShape::Capacity(k) => format!(
                        "{} (a search: this Job is its first probe, at {} rps; each probe runs as {name}-p<k> at the search's rate)",
                        cells_plan::label(suite, c),
                        k.start_rate
                    ),
                    _ => cells_plan::label(suite, c),
                };
                JobRun {
                    cell: c.clone(),
                    number: i + 1,
                    label,
                    apply: Step::Apply {
                        cmd: apply.clone(),
                        manifests: vec![job],
                    },
                    watches: watches(mesh, sides, ns, &name),
                    warmup: sc.warmup,
                    window: sc.duration,
                    deadline,
                    delete: kubectl.cmd(&["delete", "job", &name, "-n", ns, "--ignore-not-found", "--cascade=foreground"]),
                    name,
                }
            })
            .collect();
        out.push(ScenarioRun {
            scenario: si,
            server: Step::Apply {
                cmd: apply.clone(),
                manifests: server,
            },
            rollouts,
            jobs,
            remove: kubectl
                .cmd(&[
                    "delete",
                    "deployment,service",
                    "-n",
                    ns,
                    "-l",
                    &format!("{}={}", names::BENCH_RUN_LABEL, opts.run_id),
                    "--cascade=foreground",
                    "--wait=true",
                ])
                .timeout(Duration::from_secs(300)),
        });
    }
    out
}

/// What the sampler reads for one cell: the server app, the sidecars on
/// either side, the mesh's control plane.
fn watches(mesh: Mesh, sides: Sides, ns: &str, job: &str) -> Vec<Watch> {
    let w = |name: &str, role, namespace: &str, prefix: &str, container: Option<&str>| Watch {
        name: name.into(),
        role,
        namespace: namespace.into(),
        pod_prefix: prefix.into(),
        container: container.map(str::to_string),
    };
    let server_prefix = format!("{}-", manifests::SERVER);
    let mut out = vec![w("server", Role::Server, ns, &server_prefix, Some(manifests::SERVER_CONTAINER))];
    if let Some(proxy) = mesh.proxy_container() {
        if sides.client {
            out.push(w("proxy-outbound", Role::Proxy, ns, &format!("{job}-"), Some(proxy)));
        }
        if sides.server {
            out.push(w("proxy-inbound", Role::Proxy, ns, &server_prefix, Some(proxy)));
        }
    }
    if let Some(cns) = mesh.control_namespace() {
        out.push(w("control", Role::Control, cns, "", None));
    }
    out
}

impl Plan {
    /// Jobs in the plan (one per cell that runs).
    pub fn jobs(&self) -> impl Iterator<Item = (&Group, &VariantRun, &ScenarioRun, &JobRun)> {
        self.groups.iter().flat_map(|g| {
            g.variants.iter().flat_map(move |v| {
                v.scenarios
                    .iter()
                    .flat_map(move |s| s.jobs.iter().map(move |j| (g, v, s, j)))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::parse;

    fn opts(target: Target) -> Options {
        Options {
            target,
            client: Selector::role("client"),
            server: Selector::role("server"),
            run_id: "r1".into(),
            owner: "host:1".into(),
            build_images: true,
            delete_cluster: false,
            workspace: PathBuf::from("/ws"),
            weft: "/bin/weft".into(),
            tag: "t1".into(),
        }
    }

    fn kind() -> Target {
        Target::Kind {
            cluster: "c".into(),
            config: PathBuf::from("/ws/kind-configs/default.yaml"),
        }
    }

    const SUITE: &str = "name = \"p\"\n[[scenario]]\nname = \"s\"\nrates = [10, 20]\nrepetitions = 2\nvariants = [\"weft-server-only\", \"istio\", \"baseline\", \"weft\", \"nginx\"]\n";

    #[test]
    fn a_capacity_search_gets_a_job_per_probe_made_from_its_cells_job() {
        let suite = parse(
            "name = \"c\"\n[[scenario]]\nname = \"cap\"\nmode = \"capacity\"\nslo = { max = \"5ms\" }\nstart_rate = 300\nvariants = [\"baseline\", \"weft\"]\n",
            "t",
        )
        .unwrap();
        let plan = build(&suite, &opts(kind()));
        assert!(plan.skipped.is_empty(), "{:?}", plan.skipped);
        let (.., j) = plan.jobs().find(|(.., j)| j.cell.variant == Variant::Weft).expect("weft's job");
        let args = |j: &JobRun| match &j.apply {
            Step::Apply { manifests, .. } => match &manifests[0] {
                Manifest::Job(job) => job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.clone().unwrap(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        let rate_of = |a: &[String]| a[a.iter().position(|x| x == "--rate").unwrap() + 1].clone();
        assert_eq!(rate_of(&args(j)), "300", "the plan's Job is the first probe");
        assert!(j.label.contains("each probe runs as load-2-p<k>"), "{}", j.label);
        let p = j.probe(1250.0, 7);
        assert_eq!((p.name.as_str(), p.cell.rate), ("load-2-p7", Some(1250.0)));
        assert_eq!(rate_of(&args(&p)), "1250");
        let Step::Apply { manifests, .. } = &p.apply else { panic!() };
        let Manifest::Job(job) = &manifests[0] else { panic!() };
        assert_eq!(job.metadata.name.as_deref(), Some("load-2-p7"));
        assert_eq!(job.metadata.labels.as_ref().unwrap()["weft.dev/job"], "load-2-p7");
        assert!(p.delete.args.contains(&"load-2-p7".to_string()) && !p.delete.args.contains(&"load-2".to_string()));
        let outbound = p.watches.iter().find(|w| w.name == "proxy-outbound").expect("weft's client sidecar is sampled");
        assert_eq!(outbound.pod_prefix, "load-2-p7-", "the probe's pod");
    }

    #[test]
    fn meshes_group_their_variants_and_every_cell_gets_one_job() {
        let suite = parse(SUITE, "t").unwrap();
        let plan = build(&suite, &opts(kind()));
        let meshes: Vec<Mesh> = plan.groups.iter().map(|g| g.mesh).collect();
        assert_eq!(meshes, [Mesh::None, Mesh::Weft, Mesh::Istio]);
        let weft: Vec<Variant> = plan.groups[1].variants.iter().map(|v| v.variant).collect();
        assert_eq!(weft, [Variant::WeftServerOnly, Variant::Weft], "first appearance order");
        // 2 rates x 2 repetitions x 4 variants that run; nginx's 4 cells skipped.
        let names: std::collections::BTreeSet<&str> = plan.jobs().map(|(.., j)| j.name.as_str()).collect();
        assert_eq!((plan.jobs().count(), names.len()), (16, 16));
        assert_eq!(plan.skipped, [Skip { scenario: 0, variant: Some(Variant::Nginx), reason: meshes::variant(Variant::Nginx).unwrap_err(), cells: 4 }]);
        assert_eq!(plan.cells, 20);
    }

    #[test]
    fn the_sampler_watches_only_the_sides_with_a_sidecar() {
        let suite = parse(SUITE, "t").unwrap();
        let plan = build(&suite, &opts(kind()));
        let watched = |v: Variant| -> Vec<String> {
            let (_, _, _, j) = plan.jobs().find(|(_, vr, ..)| vr.variant == v).unwrap();
            j.watches.iter().map(|w| w.name.clone()).collect()
        };
        assert_eq!(watched(Variant::Baseline), ["server"]);
        assert_eq!(watched(Variant::WeftServerOnly), ["server", "proxy-inbound", "control"]);
        assert_eq!(watched(Variant::Istio), ["server", "proxy-outbound", "proxy-inbound", "control"]);
    }

    #[test]
    fn kube_without_build_pushes_nothing_and_never_deletes_a_cluster() {
        let suite = parse(SUITE, "t").unwrap();
        let mut o = opts(Target::Kube { context: None, registry: "reg.example/x/".into() });
        o.build_images = false;
        o.delete_cluster = true;
        let plan = build(&suite, &o);
        assert!(plan.image_steps.is_empty());
        assert!(plan.delete_cluster.is_none());
        assert_eq!(plan.images.loadgen, "reg.example/x/loadgen:t1");
        assert_eq!(plan.kubectl.context, None);
        let mut o = opts(kind());
        o.delete_cluster = true;
        let plan = build(&suite, &o);
        assert_eq!(plan.delete_cluster.unwrap().line(), "kind delete cluster --name c");
    }
}
