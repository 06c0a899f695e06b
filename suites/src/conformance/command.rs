//! `bench conformance [--substrate local|netns|kind|kube] [--only PATTERN]
//! [--variant weft|baseline] [--out DIR] [--dry-run]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use record::{Report, Status, TestResult};

use super::{registry, run, select, Test};
use crate::substrate::cluster::MeshMode;
use crate::substrate::{cleanup, Refusal, Substrate, SubstrateKind};
use crate::{bins, env};

/// What `bench conformance` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub substrate: SubstrateKind,
    /// Only tests whose name matches (substring or `*` glob, any case).
    pub only: Option<String>,
    pub mode: MeshMode,
    /// Where report.json, report.md and report.html go [default:
    /// reports/out/<UTC timestamp>-conformance under the workspace root].
    pub out: Option<PathBuf>,
    /// List the selected tests; deploy nothing.
    pub dry_run: bool,
    pub test_timeout: Duration,
    pub patience: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The substrate does not exist (yet) in this build.
    #[error("{0}")]
    NotAvailable(String),
    #[error("--only {0:?} matches no test; `bench conformance --dry-run` lists them")]
    NoTests(String),
    #[error("{0}")]
    NotPermitted(String),
    #[error(transparent)]
    Bins(#[from] bins::BinError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the {substrate} substrate could not start: {detail}")]
    Substrate {
        substrate: &'static str,
        detail: String,
    },
    #[error("every selected test was skipped on {0}: nothing was checked")]
    AllSkipped(&'static str),
    #[error("interrupted by {0}: stopped every process, wrote no results")]
    Interrupted(&'static str),
    #[error("{0} exists and is not empty; give --out a new directory")]
    OutExists(PathBuf),
    #[error("cannot render the report into {dir}: {detail}")]
    Render { dir: PathBuf, detail: String },
}

impl CommandError {
    /// 64 usage, 77 not permitted, 128+signal interrupted, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::NotAvailable(_)
            | CommandError::NoTests(_)
            | CommandError::OutExists(_) => 64,
            CommandError::NotPermitted(_) => 77,
            CommandError::Interrupted("SIGINT") => 130,
            CommandError::Interrupted(_) => 143,
            _ => 1,
        }
    }
}

/// What a run produced: the results, the table printed for them, and
/// where the report went (none for `--dry-run`).
pub struct Outcome {
    pub results: Vec<TestResult>,
    pub text: String,
    pub out: Option<PathBuf>,
}

impl Outcome {
    /// 1 if any test failed, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.results.iter().any(|r| r.status == Status::Fail))
    }
}

/// The selected tests as a table (for `--dry-run`).
pub fn listing(tests: &[Test], substrate: SubstrateKind) -> String {
    let mut s = format!(
        "{} conformance test(s) for --substrate {}:\n\n",
        tests.len(),
        substrate.as_str()
    );
    s.push_str("| test | feature | checks |\n|---|---|---|\n");
    for t in tests {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            t.name,
            t.feature.unwrap_or("—"),
            t.about
        ));
    }
    if !substrate.deploys_topologies() {
        s.push_str(&format!(
            "\nThe {substrate} substrate runs load suites only (bench run --substrate {substrate}): it deploys no conformance topologies, so a run skips every test with the reason.\n"
        ));
    }
    s
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommandError {
    let what = what.into();
    move |source| CommandError::Io { what, source }
}

/// Run (or list) the selected tests.
pub async fn run(opts: Options) -> Result<Outcome, CommandError> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("install the SIGTERM handler"))?;
    let tests = select(registry(), opts.only.as_deref());
    if tests.is_empty() {
        return Err(CommandError::NoTests(opts.only.clone().unwrap_or_default()));
    }
    if opts.dry_run {
        return Ok(Outcome {
            results: Vec::new(),
            text: listing(&tests, opts.substrate),
            out: None,
        });
    }
    opts.substrate.preflight().map_err(|r| match r {
        Refusal::NotAvailable(why) => CommandError::NotAvailable(why),
        Refusal::NotPermitted(why) => CommandError::NotPermitted(why),
    })?;
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => crate::runner::default_out_root().join(format!(
            "{}-conformance",
            env::compact_timestamp(&env::now_rfc3339())
        )),
    };
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) || out.is_file() {
        return Err(CommandError::OutExists(out));
    }
    run::set_patience(opts.patience);
    let started_at = env::now_rfc3339();
    let session = cleanup::Session::start();
    let result = async {
        let bins = bins::locate()?;
        let work = cleanup::run_work_dir().map_err(io_err("create the run's work dir in the temp dir"))?;
        let progress = run::progress(tests.len());
        let results = match opts.substrate.open(bins, work.path()) {
            Ok(mut s) => drive(&mut s, &tests, &opts, &progress, &mut sigterm).await,
            Err(e) => Err(CommandError::Substrate {
                substrate: opts.substrate.as_str(),
                detail: e.to_string(),
            }),
        };
        progress.finish_and_clear();
        // Kills what is left of the tests' processes and removes the dir.
        drop(work);
        let results = results?;
        if results.iter().all(|r| r.status == Status::Skipped) {
            eprint!("{}", run::table(&results));
            return Err(CommandError::AllSkipped(opts.substrate.as_str()));
        }
        let mut report = Report::new("conformance", started_at, env::gather(BTreeMap::new()));
        report.conformance = results.clone();
        report.finished_at = env::now_rfc3339();
        write_report(&out, &report)?;
        let text = format!("{}\nresults: {}\n", run::table(&results), out.display());
        Ok(Outcome {
            results,
            text,
            out: Some(out),
        })
    }
    .await;
    drop(session);
    result
}

async fn drive<S: Substrate>(
    substrate: &mut S,
    tests: &[Test],
    opts: &Options,
    progress: &indicatif::ProgressBar,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<Vec<TestResult>, CommandError> {
    tokio::select! {
        r = run::run_all(substrate, tests, opts.mode, opts.test_timeout, progress) => Ok(r),
        _ = tokio::signal::ctrl_c() => Err(CommandError::Interrupted("SIGINT")),
        _ = sigterm.recv() => Err(CommandError::Interrupted("SIGTERM")),
    }
}

/// `report.json` (schema 2, the results in `conformance`), `report.md` and
/// `report.html` into `dir`.
fn write_report(dir: &Path, report: &Report) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let json = dir.join("report.json");
    reports::io::write_report_json(report, &json)
        .map_err(io_err(format!("write {}", json.display())))?;
    reports::render::write_all(report, dir)
        .map(|_| ())
        .map_err(|e| CommandError::Render {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })
}
