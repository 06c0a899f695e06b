//! `bench gate --base DIR --candidate DIR`: two builds' Weft measured in one
//! run and judged against their own noise ([`reports::gate::same_run`]).
//!
//! ```text
//!  for scenario:
//!    for point (rate | concurrency):
//!      for round r:                    both builds' target server and control plane start afresh;
//!                                      references (baseline, peers) once, then
//!        r even: weft@base, weft@candidate
//!        r odd:  weft@candidate, weft@base   <- alternating, so drift hits both alike
//! ```
//!
//! Each build runs in its own local substrate (its own work dir) with its
//! own `mesh-proxy`, `mesh-control` and `weft`; the measuring instrument is
//! one for both: bench's in-process load generator, and the base build's
//! `loadgen` binary as the target server (a process per build, started per
//! round). The record keeps every repetition, so
//! the verdict can be re-read from `report.json` alone.

use std::path::{Path, PathBuf};

use indicatif::MultiProgress;
use record::{Report, Skipped};
use reports::gate::same_run::{self, SameRunOutcome, SameRunTest};

use crate::bins::{self, Binaries};
use crate::env;
use crate::plan::Cell;
use crate::runner::{default_out_root, one_line, Staging};
use crate::substrate::{cleanup, AnySubstrate, LoadCell, ScenarioTopology, Substrate, SubstrateKind};
use crate::suite::{self, LoadShape, Suite, SuiteError, Variant};

/// What `bench gate --base --candidate` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The base build's binaries.
    pub base: PathBuf,
    /// The candidate build's binaries.
    pub candidate: PathBuf,
    /// A suite name or file (default `gate`).
    pub suite: String,
    /// Output dir; default `reports/out/<UTC timestamp>-gate`.
    pub out: Option<PathBuf>,
}

/// A finished gate run.
#[derive(Debug)]
pub struct Gated {
    pub out: PathBuf,
    pub outcome: SameRunOutcome,
}

/// Why the gate could not judge (exit 2), or was interrupted.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("--{flag} {}: {missing} not found there; give a directory holding one build's binaries (mesh-proxy, mesh-control, weft, loadgen), e.g. a copy of target/release after `cargo build --release --workspace`", dir.display())]
    BuildDir { flag: &'static str, dir: PathBuf, missing: String },
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error("suite {suite}: {why}")]
    Unfit { suite: String, why: String },
    #[error("--out {0}: already exists and is not empty; choose another output directory")]
    OutExists(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the local substrate could not start: {0}")]
    Substrate(String),
    #[error("interrupted by {0}: stopped every process, wrote no results")]
    Interrupted(&'static str),
    #[error("cannot render the report into {dir}: {detail}")]
    Render { dir: PathBuf, detail: String },
    #[error("{0}")]
    Judge(#[from] same_run::SameRunError),
    #[error(transparent)]
    Run(#[from] crate::RunError),
}

impl GateError {
    /// 2 (bad input, like `bench compare`), 128+signal when interrupted.
    pub fn exit_code(&self) -> i32 {
        match self {
            GateError::Interrupted("SIGINT") => 130,
            GateError::Interrupted(_) => 143,
            _ => 2,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GateError {
    let what = what.into();
    move |source| GateError::Io { what, source }
}

/// The binaries of one build's directory.
pub fn build_dir(flag: &'static str, dir: &Path) -> Result<Binaries, GateError> {
    let b = bins::in_dir(dir);
    match bins::missing(&b) {
        Some(missing) => Err(GateError::BuildDir { flag, dir: dir.to_path_buf(), missing }),
        None => Ok(b),
    }
}

/// A suite the gate can run: load scenarios (open or closed loop) with a
/// Weft variant, at least 3 rounds each.
fn check(suite: &Suite) -> Result<(), GateError> {
    let unfit = |why: String| Err(GateError::Unfit { suite: suite.name.clone(), why });
    for s in &suite.scenarios {
        if s.hardening.is_some() || !matches!(s.load, LoadShape::Open { .. } | LoadShape::Closed { .. }) {
            return unfit(format!("scenario {} is not an open- or closed-loop load; the gate compares latency, CPU and memory of load cells", s.name));
        }
        if !s.variants.iter().any(|v| v.has_weft_proxy()) {
            return unfit(format!("scenario {} has no Weft variant: nothing of the two builds would be measured", s.name));
        }
        if s.repetitions < 3 {
            return unfit(format!(
                "scenario {} has {} repetition(s); the gate needs at least 3 rounds per build to measure the noise",
                s.name, s.repetitions
            ));
        }
    }
    if suite.scenarios.is_empty() {
        return unfit("no scenarios".into());
    }
    Ok(())
}

/// Run the suite with both builds, write report.json/md/html and gate.txt
/// into the output dir, and judge.
pub async fn run(opts: Options, test: &SameRunTest) -> Result<Gated, GateError> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("install the SIGTERM handler"))?;
    let base = build_dir("base", &opts.base)?;
    let candidate = build_dir("candidate", &opts.candidate)?;
    let suite = suite::resolve(&opts.suite)?;
    check(&suite)?;
    let out = match opts.out {
        Some(o) => o,
        None => default_out_root().join(format!("{}-gate", env::compact_timestamp(&env::now_rfc3339()))),
    };
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) || out.is_file() {
        return Err(GateError::OutExists(out));
    }
    let session = cleanup::Session::start();
    let result = async {
        let staging = Staging::create(&out)?;
        let work = cleanup::run_work_dir().map_err(io_err("create the run's work dir in the temp dir"))?;
        // One instrument for both: the base build's target server.
        let candidate = Binaries { loadgen: base.loadgen.clone(), ..candidate };
        let mut builds = Vec::new();
        for (name, b) in [("base", &base), ("candidate", &candidate)] {
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
            let s = SubstrateKind::Local.open(b.clone(), &dir).map_err(|e| GateError::Substrate(e.to_string()))?;
            builds.push(s);
        }
        let [mut a, mut b]: [AnySubstrate; 2] = builds.try_into().map_err(|_| GateError::Substrate("two substrates".into()))?;
        let started_at = env::now_rfc3339();
        let measured = tokio::select! {
            r = measure(&suite, [&mut a, &mut b]) => Ok(r),
            _ = tokio::signal::ctrl_c() => Err("SIGINT"),
            _ = sigterm.recv() => Err("SIGTERM"),
        };
        for s in [&mut a, &mut b] {
            s.end_scenario().await;
            s.close().await;
        }
        drop(work);
        let (runs, skipped) = measured.map_err(|sig| {
            eprintln!("\nbench gate: {sig} received, stopping");
            GateError::Interrupted(sig)
        })?;
        let mut versions = a.versions();
        versions.insert("weft@base".into(), version(&base.mesh_proxy));
        versions.insert("weft@candidate".into(), version(&candidate.mesh_proxy));
        let mut report = Report::new(&suite.name, started_at, env::gather(versions));
        report.finished_at = env::now_rfc3339();
        report.runs = runs;
        report.skipped = skipped;
        reports::compare::summarise_into(&mut report);
        let dir = staging.path().to_path_buf();
        reports::io::write_report_json(&report, &dir.join("report.json")).map_err(io_err("write report.json"))?;
        reports::render::write_all(&report, &dir).map_err(|e| GateError::Render { dir: out.clone(), detail: e.to_string() })?;
        let outcome = same_run::judge(&report, test)?;
        std::fs::write(dir.join("gate.txt"), outcome.text()).map_err(io_err("write gate.txt"))?;
        let json = serde_json::to_string_pretty(&outcome).expect("an outcome serialises");
        std::fs::write(dir.join("gate.json"), json + "\n").map_err(io_err("write gate.json"))?;
        staging.commit()?;
        Ok(Gated { out: out.clone(), outcome })
    }
    .await;
    drop(session);
    result
}

/// `mesh-proxy --version` of a build, for the record's environment.
fn version(proxy: &Path) -> String {
    std::process::Command::new(proxy)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| format!("unknown ({})", proxy.display()))
}

/// Every round of every scenario and point, builds alternating; returns the
/// runs (Weft variants named `<variant>@base` / `<variant>@candidate`) and
/// the cells that failed, as the record's `skipped`.
async fn measure(suite: &Suite, mut subs: [&mut AnySubstrate; 2]) -> (Vec<record::Run>, Vec<Skipped>) {
    const SUFFIX: [&str; 2] = [same_run::BASE, same_run::CANDIDATE];
    let mp = MultiProgress::new();
    let say = |line: String| {
        if mp.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = mp.println(line);
        }
    };
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let fail = |scenario: &str, variant: String, why: String, skipped: &mut Vec<Skipped>| {
        say(format!("ERROR: {scenario} {variant}: {why}"));
        if !skipped.iter().any(|s: &Skipped| s.scenario == scenario && s.variant == variant) {
            skipped.push(Skipped { scenario: scenario.to_owned(), variant, reason: format!("failed: {}", why.lines().next().unwrap_or("")) });
        }
    };
    for (si, scenario) in suite.scenarios.iter().enumerate() {
        let topo = ScenarioTopology::of(scenario);
        let points: Vec<Option<f64>> = match &scenario.load {
            LoadShape::Open { rates } => rates.iter().map(|r| Some(*r)).collect(),
            _ => vec![None],
        };
        for rate in points {
            for round in 0..scenario.repetitions {
                // Each round starts both builds' target server and control
                // plane afresh: kept for the whole run, one build's server
                // process (its CPU, its memory layout) stayed the same for
                // every round, and two identical builds once differed at p99
                // in all 6 rounds, a false alarm (docs/FIGURES.md, "Same-run
                // gate: 10 + 10 runs"). Fresh each round, that luck is drawn
                // again per round and pairs as noise.
                let mut started = true;
                for (k, s) in subs.iter_mut().enumerate() {
                    if let Err(e) = s.start_scenario(&topo).await {
                        for v in scenario.variants.iter().filter(|v| v.has_weft_proxy() || k == 0) {
                            fail(&scenario.name, name(*v, k), format!("the target server or control plane did not start: {e}"), &mut skipped);
                        }
                        started = false;
                    }
                }
                if !started {
                    for s in subs.iter_mut() {
                        s.end_scenario().await;
                    }
                    continue;
                }
                let first = (round % 2) as usize;
                let mut order: Vec<(usize, Variant)> = scenario.variants.iter().filter(|v| !v.has_weft_proxy()).map(|v| (0, *v)).collect();
                for k in [first, 1 - first] {
                    order.extend(scenario.variants.iter().filter(|v| v.has_weft_proxy()).map(|v| (k, *v)));
                }
                for (k, variant) in order {
                    let label = format!("{} {} {}round {}", scenario.name, name(variant, k), rate.map(|r| format!("{r} rps ")).unwrap_or_default(), round + 1);
                    let cell = Cell { scenario: si, rate, repetition: round, variant };
                    let sub = &mut *subs[k];
                    let dep = match sub.deploy(variant, &topo).await {
                        Ok(d) => d,
                        Err(e) => {
                            fail(&scenario.name, name(variant, k), e.to_string(), &mut skipped);
                            continue;
                        }
                    };
                    let lc = LoadCell { scenario, cell: &cell, index: 0, label: &label, progress: &mp };
                    let measured = sub.measure(&dep, &lc).await;
                    sub.teardown(dep).await;
                    match measured {
                        Ok(mut run) => {
                            run.proxy_cpu = scenario.proxy_cpu;
                            run.proxy_args.clone_from(&scenario.proxy_args);
                            if variant.has_weft_proxy() {
                                run.variant = format!("{}{}", variant.as_str(), SUFFIX[k]);
                            }
                            say(format!("{label}: {}", one_line(&run)));
                            runs.push(run);
                        }
                        Err(e) => fail(&scenario.name, name(variant, k), format!("load generator failed: {e}"), &mut skipped),
                    }
                }
                for s in subs.iter_mut() {
                    s.end_scenario().await;
                }
            }
        }
    }
    (runs, skipped)
}

/// A variant as the record names it: Weft variants carry their build.
fn name(v: Variant, build: usize) -> String {
    if v.has_weft_proxy() {
        format!("{}{}", v.as_str(), [same_run::BASE, same_run::CANDIDATE][build])
    } else {
        v.as_str().to_owned()
    }
}
