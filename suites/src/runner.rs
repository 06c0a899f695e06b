//! The runner: plan -> deploy -> load + sample -> one lossless record.
//!
//! Results are written into a hidden staging dir beside the requested output
//! dir and renamed into place only when complete, so an interrupted or
//! crashed run never leaves a half-written result behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use record::{Propagation, Report, Run, Skipped};

use crate::bins::{self, BinError};
use crate::cpu_limit;
use crate::env;
use crate::plan::{self, Cell};
use crate::propagation as prop;
use crate::substrate::{
    cleanup, AnySubstrate, DeployError, LoadCell, Refusal, ScenarioTopology, Substrate,
    SubstrateKind,
};
use crate::suite::{self, LoadShape, Scenario, Suite, SuiteError, Variant};

/// What `bench run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// A suite file path or a suite name (see [`suite::resolve`]).
    pub suite: String,
    pub substrate: SubstrateKind,
    /// Output dir; default `reports/out/<UTC timestamp>` under the workspace
    /// root (or the current dir outside a workspace).
    pub out: Option<PathBuf>,
    /// The kind/kube substrate's flags (`None`: their defaults).
    pub cluster: Option<crate::substrate::kube::Flags>,
}

/// A completed run.
#[derive(Debug)]
pub struct RunOutcome {
    pub out: PathBuf,
    pub report: Report,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error("--out {0}: already exists and is not empty; choose another output directory")]
    OutExists(PathBuf),
    #[error(transparent)]
    Bins(#[from] BinError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotPermitted(String),
    #[error("{0}")]
    NotAvailable(String),
    /// Bad kind/kube flags (exit 64).
    #[error("{0}")]
    Usage(String),
    /// A program the kind/kube substrate calls is missing (exit 69, EX_UNAVAILABLE).
    #[error("{0}")]
    ToolsMissing(String),
    #[error("the {substrate} substrate could not start: {detail}")]
    Substrate {
        substrate: &'static str,
        detail: String,
    },
    #[error("interrupted by {0}: stopped every process, wrote no results")]
    Interrupted(&'static str),
    #[error("cannot render the report into {dir}: {detail}")]
    Render { dir: PathBuf, detail: String },
    #[error("{failed} of {total} cells failed (see the errors above); the results of the others are in {out}")]
    CellsFailed {
        failed: usize,
        total: usize,
        out: PathBuf,
    },
}

impl RunError {
    /// 64 for configuration errors (EX_USAGE), 128+signal when interrupted,
    /// 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Suite(_)
            | RunError::OutExists(_)
            | RunError::NotAvailable(_)
            | RunError::Usage(_) => 64,
            RunError::ToolsMissing(_) => 69,
            // EX_NOPERM
            RunError::NotPermitted(_) => 77,
            RunError::Interrupted("SIGINT") => 130,
            RunError::Interrupted(_) => 143,
            _ => 1,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// Run a suite end to end and write report.json (load runs and propagation
/// measurements), report.md, report.html and latency.png into the output dir.
pub async fn run(opts: RunOptions) -> Result<RunOutcome, RunError> {
    // Catch signals from the very start, so no child is ever started unguarded.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("install the SIGTERM handler"))?;
    // Before reading or building anything: a run that cannot start
    // should say so at once. The cluster substrates need their flags and
    // their programs (kubectl, kind, docker) first.
    let cluster = match opts.substrate {
        SubstrateKind::Kind | SubstrateKind::Kube => {
            let mut flags = opts.cluster.clone().unwrap_or_default();
            flags.any_cluster = opts.substrate == SubstrateKind::Kube;
            flags.options("check").map_err(|e| RunError::Usage(e.to_string()))?;
            let missing = flags.missing_tools();
            if !missing.is_empty() {
                return Err(RunError::ToolsMissing(format!(
                    "--substrate {}: {} not found on PATH; a cluster run needs them (`--dry-run` prints the plan without any)",
                    opts.substrate,
                    missing.join(", ")
                )));
            }
            Some(flags)
        }
        SubstrateKind::Local | SubstrateKind::Netns => {
            opts.substrate.preflight().map_err(|r| match r {
                Refusal::NotAvailable(why) => RunError::NotAvailable(why),
                Refusal::NotPermitted(why) => RunError::NotPermitted(why),
            })?;
            None
        }
    };
    let suite = suite::resolve(&opts.suite)?;
    let cells = plan::cells(&suite);
    let out = match opts.out {
        Some(o) => o,
        None => default_out_root().join(env::compact_timestamp(&env::now_rfc3339())),
    };
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) || out.is_file() {
        return Err(RunError::OutExists(out));
    }

    let session = cleanup::Session::start();
    let result = async {
        let staging = Staging::create(&out)?;
        let bins = bins::locate()?;
        let work = cleanup::run_work_dir().map_err(io_err("create the run's work dir in the temp dir"))?;
        let harness = Harness {
            mesh_control: bins.mesh_control.clone(),
            work: work.path().to_path_buf(),
        };
        let opened = match &cluster {
            Some(flags) => crate::substrate::kube::Kube::open(&suite, flags)
                .map(AnySubstrate::Kube)
                .map_err(|e| e.to_string()),
            None => opts.substrate.open(bins, work.path()).map_err(|e| e.to_string()),
        };
        let outcome = match opened {
            Ok(substrate) => drive(substrate, &suite, &cells, &harness, &mut sigterm).await,
            Err(detail) => Err(Err(RunError::Substrate {
                substrate: opts.substrate.as_str(),
                detail,
            })),
        };
        // Kills what is left of the run's processes and removes the dir.
        drop(work);
        let (mut report, failures) = outcome.map_err(|e| match e {
            Ok(sig) => {
                eprintln!("\nbench: {sig} received, stopping");
                RunError::Interrupted(sig)
            }
            Err(e) => e,
        })?;
        let report_dir = staging.path().to_path_buf();
        // Each cell's spread and noise verdicts, for readers of report.json alone.
        reports::compare::summarise_into(&mut report);
        reports::io::write_report_json(&report, &report_dir.join("report.json")).map_err(
            io_err(format!(
                "write {}",
                report_dir.join("report.json").display()
            )),
        )?;
        let written =
            reports::render::write_all(&report, &report_dir).map_err(|e| RunError::Render {
                dir: out.clone(),
                detail: e.to_string(),
            })?;
        // SMP JSON and HdrHistogram logs beside the record (smp/, hdr/); the
        // record is what counts, so a failed export is said, not fatal
        // (`bench export` can write them again from it).
        if let Err(e) = reports::export::write_beside(&report, &report_dir) {
            eprintln!("bench: the SMP and HdrHistogram exports were not written: {e}");
        }
        staging.commit()?;
        // The results are safely on disk; a closed stdout pipe is not a failure.
        let summary = format!("{}\nresults: {}\n", written.markdown, out.display());
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), summary.as_bytes());
        if failures > 0 {
            return Err(RunError::CellsFailed {
                failed: failures,
                total: cells.len(),
                out: out.clone(),
            });
        }
        Ok(RunOutcome {
            out: out.clone(),
            report,
        })
    }
    .await;
    drop(session);
    result
}

/// What [`drive`] ends with: the results, or the signal that interrupted
/// the run (`Ok`), or why the substrate could not run at all (`Err`).
type Driven = Result<(Report, usize), Result<&'static str, RunError>>;

/// Run every cell on `substrate` until done or interrupted, then stop what
/// the substrate still runs. Dropping the substrate removes what it made.
async fn drive<S: Substrate>(
    mut substrate: S,
    suite: &Suite,
    cells: &[Cell],
    harness: &Harness,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Driven {
    let name = substrate.name();
    let outcome = tokio::select! {
        r = async {
            substrate.prepare().await.map_err(|e| {
                Err(RunError::Substrate {
                    substrate: name,
                    detail: e.to_string(),
                })
            })?;
            Ok(execute(suite, cells, &mut substrate, harness).await)
        } => r,
        _ = tokio::signal::ctrl_c() => Err(Ok("SIGINT")),
        _ = sigterm.recv() => Err(Ok("SIGTERM")),
    };
    // The select dropped any in-flight deployment (killing it); now the
    // scenario's server, what the run shares, and anything else still registered.
    substrate.end_scenario().await;
    substrate.close().await;
    outcome
}

/// What propagation scenarios need: the control plane binary they measure
/// and the run's temp dir (whose removal the watchdog guarantees).
struct Harness {
    mesh_control: PathBuf,
    work: PathBuf,
}

/// Run every cell; returns the report (load runs and propagation
/// measurements) and the number of cells that failed.
async fn execute<S: Substrate>(
    suite: &Suite,
    cells: &[Cell],
    substrate: &mut S,
    harness: &Harness,
) -> (Report, usize) {
    // The record's window is the measuring, not the building of binaries before it.
    let started_at = env::now_rfc3339();
    let mp = MultiProgress::new();
    let overall = mp.add(ProgressBar::new(cells.len() as u64));
    overall.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} cells, {elapsed} elapsed, ~{eta} left",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    overall.set_prefix(format!("suite {}", suite.name));
    let say = |line: String| {
        if mp.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = mp.println(line);
        }
    };
    say(format!(
        "bench: suite {} ({}), {} cells, estimated {}",
        suite.name,
        suite.origin,
        cells.len(),
        humantime::format_duration(Duration::from_secs(plan::estimate(suite, cells).as_secs()))
    ));

    let mut runs = Vec::new();
    let mut propagation: Vec<Propagation> = Vec::new();
    let mut failed = Failed { count: 0, total: cells.len(), skipped: Vec::new() };
    let mut hardening = record::Hardening::default();
    let mut capacity: Vec<record::CapacityRun> = Vec::new();
    let mut sweeps: Vec<record::SweepRun> = Vec::new();
    // Variants a scenario cannot run here (skipped once, recorded once).
    let mut gone: BTreeSet<(usize, Variant)> = BTreeSet::new();
    for mine in segments(cells, &substrate.order(cells)) {
        let si = mine[0].1.scenario;
        let scenario = &suite.scenarios[si];
        if let Some(reason) = substrate.unavailable(scenario) {
            for (_, cell) in &mine {
                if gone.insert((si, cell.variant)) {
                    say(format!(
                        "WARNING: skipping {} in scenario {} on {}: {reason}",
                        cell.variant,
                        scenario.name,
                        substrate.name()
                    ));
                    failed.skipped.push(skip(scenario, cell.variant, reason.clone()));
                }
            }
            overall.inc(mine.len() as u64);
            continue;
        }
        if let LoadShape::Propagation(shape) = scenario.load {
            // No server, no variants: the harness starts its own control plane.
            for (i, cell) in mine {
                let label = plan::label(suite, cell);
                let bar = mp.add(ProgressBar::new_spinner());
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                let dir = harness.work.join(format!("propagation-{i}"));
                let r = match std::fs::create_dir_all(&dir) {
                    Ok(()) => {
                        prop::measure_in_child(
                            &harness.mesh_control,
                            shape,
                            &dir,
                            &harness.work.join("pids"),
                        )
                        .await
                    }
                    Err(e) => Err(prop::PropagationError::Child(format!(
                        "create {}: {e}",
                        dir.display()
                    ))),
                };
                bar.finish_and_clear();
                mp.remove(&bar);
                match r {
                    Ok(mut r) => {
                        r.scenario = scenario.name.clone();
                        r.repetition = cell.repetition;
                        say(format!(
                            "[{}/{}] {label}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, startup {:.0} ms, control rss {:.1} MiB",
                            i + 1,
                            cells.len(),
                            r.p50_ms,
                            r.p99_ms,
                            r.max_ms,
                            r.startup_ms,
                            r.control_rss_bytes as f64 / (1024.0 * 1024.0)
                        ));
                        propagation.push(r);
                    }
                    Err(e) => failed.cell(&say, i, &label, scenario, cell.variant, &e.to_string()),
                }
                overall.inc(1);
            }
            continue;
        }
        if let LoadShape::Sweep(shape) = &scenario.load {
            // Deploys per size itself; a `services` sweep needs no server.
            let topo = ScenarioTopology::of(scenario);
            let started = match shape.dimension.is_load() {
                true => substrate.start_scenario(&topo).await.map_err(|e| format!("the target server did not start: {e}")),
                false => Ok(()),
            };
            let dirs = crate::sweep::HarnessDirs { mesh_control: &harness.mesh_control, work: &harness.work };
            for (i, cell) in mine {
                let label = plan::label(suite, cell);
                let outcome = match &started {
                    Ok(()) => {
                        let (s, error) = crate::sweep::run(shape, scenario, cell, i, &label, substrate, &dirs, &mp, &say).await;
                        // The sizes measured before a failure are kept.
                        if !s.points.is_empty() {
                            say(format!("[{}/{}] {label}: {}", i + 1, cells.len(), crate::sweep::summary(&s)));
                            sweeps.push(s);
                        }
                        error
                    }
                    Err(e) => Some(crate::sweep::SweepError::Failed(e.clone())),
                };
                match outcome {
                    None => {}
                    Some(crate::sweep::SweepError::Unavailable(reason)) => {
                        say(format!("WARNING: skipping {} in scenario {}: {reason}", cell.variant, scenario.name));
                        failed.skipped.push(skip(scenario, cell.variant, reason));
                    }
                    Some(e) => failed.cell(&say, i, &label, scenario, cell.variant, &e.to_string()),
                }
                overall.inc(1);
            }
            substrate.end_scenario().await;
            continue;
        }
        let topo = ScenarioTopology::of(scenario);
        if let Err(e) = substrate.start_scenario(&topo).await {
            say(format!(
                "ERROR: scenario {}: the target server did not start: {e}",
                scenario.name
            ));
            failed.count += mine.len();
            for v in &scenario.variants {
                failed.skipped.push(skip(
                    scenario,
                    *v,
                    format!("failed: target server did not start: {e}"),
                ));
            }
            overall.inc(mine.len() as u64);
            continue;
        }
        for (i, cell) in mine {
            let label = plan::label(suite, cell);
            if gone.contains(&(si, cell.variant)) {
                overall.inc(1);
                continue;
            }
            let dep = match substrate.deploy(cell.variant, &topo).await {
                Ok(d) => d,
                Err(DeployError::Unavailable { reason }) => {
                    say(format!(
                        "WARNING: skipping {} in scenario {}: {reason}",
                        cell.variant, scenario.name
                    ));
                    failed.skipped.push(skip(scenario, cell.variant, reason));
                    gone.insert((si, cell.variant));
                    overall.inc(1);
                    continue;
                }
                Err(e) => {
                    failed.cell(&say, i, &label, scenario, cell.variant, &e.to_string());
                    overall.inc(1);
                    continue;
                }
            };
            // `weft stat --run` reads the deployed proxies from here until the cell ends.
            let _published = crate::substrate::run_state::Published::new(&harness.work, substrate.name(), &dep);
            // Limited once ready (start-up is not what is measured),
            // released once the processes are gone.
            let limits = match cpu_limit::for_cell(scenario.proxy_cpu, &dep, substrate.name()) {
                Ok(l) => l,
                Err(e) => {
                    substrate.teardown(dep).await;
                    failed.cell(&say, i, &label, scenario, cell.variant, &e);
                    overall.inc(1);
                    continue;
                }
            };
            if let Some(h) = &scenario.hardening {
                let bar = mp.add(ProgressBar::new_spinner());
                bar.enable_steady_tick(Duration::from_millis(200));
                let done = crate::hardening::run(h, scenario, cell, &dep, substrate, &bar).await;
                bar.finish_and_clear();
                mp.remove(&bar);
                let throttled = limits.as_ref().map(cpu_limit::CpuLimits::throttled_share);
                substrate.teardown(dep).await;
                drop(limits);
                match done.map(|s| s.with_proxy_cpu(scenario.proxy_cpu, throttled).with_proxy_args(&scenario.proxy_args)) {
                    Ok(section) => {
                        say(format!("[{}/{}] {label}: {}", i + 1, cells.len(), section.one_line()));
                        section.file(&mut runs, &mut hardening);
                    }
                    Err(e) => failed.cell(&say, i, &label, scenario, cell.variant, &e),
                }
                overall.inc(1);
                continue;
            }
            if let LoadShape::Capacity(shape) = &scenario.load {
                let done = crate::capacity::run(shape, scenario, cell, i, &label, &dep, substrate, &mp, &say).await;
                substrate.teardown(dep).await;
                drop(limits);
                match done {
                    Ok(c) => {
                        say(format!("[{}/{}] {label}: {}", i + 1, cells.len(), crate::capacity::one_line(&c)));
                        capacity.push(c);
                    }
                    Err(e) => failed.cell(&say, i, &label, scenario, cell.variant, &e),
                }
                overall.inc(1);
                continue;
            }
            let lc = LoadCell {
                scenario,
                cell,
                index: i,
                label: &label,
                progress: &mp,
            };
            let measured = substrate.measure(&dep, &lc).await;
            substrate.teardown(dep).await;
            drop(limits);
            match measured {
                Ok(mut run) => {
                    run.proxy_cpu = scenario.proxy_cpu;
                    run.proxy_args.clone_from(&scenario.proxy_args);
                    say(format!(
                        "[{}/{}] {label}: {}",
                        i + 1,
                        cells.len(),
                        one_line(&run)
                    ));
                    runs.push(run);
                }
                Err(e) => failed.cell(
                    &say,
                    i,
                    &label,
                    scenario,
                    cell.variant,
                    &format!("load generator failed: {e}"),
                ),
            }
            overall.inc(1);
        }
        substrate.end_scenario().await;
    }
    overall.finish_and_clear();
    let mut report = Report::new(&suite.name, started_at, env::gather(substrate.versions()));
    report.finished_at = env::now_rfc3339();
    report.runs = runs;
    report.skipped = failed.skipped;
    report.propagation = propagation;
    report.hardening = hardening;
    report.capacity = capacity;
    report.sweeps = sweeps;
    (report, failed.count)
}

/// The cells that failed so far, and the record's `skipped` list that
/// names them beside the variants that could not run here.
struct Failed {
    count: usize,
    /// Cells in the run, for the `[i/total]` of the messages.
    total: usize,
    skipped: Vec<Skipped>,
}

impl Failed {
    /// Cell `i` failed: said on the terminal, counted, and listed in the record.
    fn cell(&mut self, say: &impl Fn(String), i: usize, label: &str, s: &Scenario, v: Variant, why: &str) {
        say(format!("ERROR: [{}/{}] {label}: {why}", i + 1, self.total));
        self.count += 1;
        record_failure(&mut self.skipped, s, v, why);
    }
}

/// `order` cut into runs of consecutive cells of one scenario, each cell
/// with its index in `cells`.
fn segments<'c>(cells: &'c [Cell], order: &[usize]) -> Vec<Vec<(usize, &'c Cell)>> {
    let mut out: Vec<Vec<(usize, &Cell)>> = Vec::new();
    for &i in order {
        let cell = &cells[i];
        match out.last_mut() {
            Some(run) if run[0].1.scenario == cell.scenario => run.push((i, cell)),
            _ => out.push(vec![(i, cell)]),
        }
    }
    out
}

fn skip(s: &Scenario, v: Variant, reason: String) -> Skipped {
    Skipped {
        scenario: s.name.clone(),
        variant: v.as_str().to_string(),
        reason,
    }
}

/// Failed cells are listed in `skipped` (once per scenario and variant) so
/// the report shows them instead of silently missing a row.
fn record_failure(skipped: &mut Vec<Skipped>, s: &Scenario, v: Variant, why: &str) {
    if !skipped
        .iter()
        .any(|k| k.scenario == s.name && k.variant == v.as_str())
    {
        // One line for the record; the full text went to the terminal.
        let mut line = why
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        if line.chars().count() > 400 {
            line = line.chars().take(400).collect::<String>() + "...";
        }
        skipped.push(skip(s, v, format!("failed: {line}")));
    }
}

pub(crate) fn one_line(r: &Run) -> String {
    let cpu: f64 = r
        .resources
        .iter()
        .filter(|x| x.role == "proxy")
        .map(|x| x.cpu_seconds)
        .sum();
    let l = &r.load;
    let mut s = format!(
        "{} req, {} err, {:.0} rps, p50 {:.2} ms, p99 {:.2} ms",
        l.requests,
        l.errors,
        l.achieved_rps,
        l.latency_us.p50 / 1000.0,
        l.latency_us.p99 / 1000.0
    );
    if let Some(rss) = r.proxy_rss_peak() {
        s.push_str(&format!(
            ", proxy cpu {cpu:.2} s, rss {:.1} MiB",
            rss as f64 / (1024.0 * 1024.0)
        ));
    }
    if let Some(c) = &r.proxy_counts {
        s.push_str(&crate::crosscheck::one_line(c));
    }
    s
}

/// `<workspace root>/reports/out` when the cwd is inside a cargo workspace,
/// else `./reports/out`.
pub fn default_out_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = cwd
        .ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or(&cwd)
        .to_path_buf();
    root.join("reports").join("out")
}

/// A hidden sibling of the output dir that becomes it on [`Staging::commit`]
/// and is removed if dropped before that (error, Ctrl-C, panic). If bench is
/// killed outright, the watchdog removes it.
pub(crate) struct Staging {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staging {
    pub(crate) fn create(target: &Path) -> Result<Staging, RunError> {
        // Absolute, because the watchdog may have to remove it.
        let target = &std::path::absolute(target)
            .map_err(io_err(format!("resolve {}", target.display())))?;
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let dir = parent.join(format!(".{name}.partial-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        cleanup::register(cleanup::Action::RemoveDir(dir.clone()));
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn commit(mut self) -> Result<(), RunError> {
        // An empty target dir (e.g. made by the caller) is replaced.
        let _ = std::fs::remove_dir(&self.target);
        std::fs::rename(&self.dir, &self.target).map_err(io_err(format!(
            "move results from {} to {}",
            self.dir.display(),
            self.target.display()
        )))?;
        self.committed = true;
        cleanup::forget(&cleanup::Action::RemoveDir(self.dir.clone()));
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
            cleanup::forget(&cleanup::Action::RemoveDir(self.dir.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_the_substrates_order_and_cut_where_the_scenario_changes() {
        let cell = |scenario, variant| Cell {
            scenario,
            rate: None,
            repetition: 0,
            variant,
        };
        let cells = [
            cell(0, Variant::Baseline),
            cell(0, Variant::Weft),
            cell(1, Variant::Baseline),
            cell(1, Variant::Weft),
        ];
        let cut = |order: &[usize]| -> Vec<Vec<usize>> {
            segments(&cells, order)
                .into_iter()
                .map(|s| s.into_iter().map(|(i, _)| i).collect())
                .collect()
        };
        assert_eq!(cut(&[0, 1, 2, 3]), [vec![0, 1], vec![2, 3]]);
        // Grouped by variant across scenarios: a scenario comes back.
        assert_eq!(cut(&[0, 2, 1, 3]), [vec![0], vec![2], vec![1], vec![3]]);
        assert_eq!(cut(&[2, 0, 1, 3]), [vec![2], vec![0, 1], vec![3]]);
    }
}
