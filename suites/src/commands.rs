//! The small subcommands: `bench report`, `bench gate`, `bench plan`,
//! `bench compare`, `bench export`.

use std::path::{Path, PathBuf};

use reports::compare::Comparison;
use reports::gate::{GateOutcome, Policy, PolicyError};
use reports::io::ReadError;
use reports::Report;

use crate::plan;
use crate::substrate::peers::Peers;
use crate::suite::{self, SuiteError};

/// `DIR/report.json` when given a directory, else the file itself.
pub fn report_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("report.json")
    } else {
        p.to_path_buf()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot render into {dir}: {detail}")]
    Render { dir: PathBuf, detail: String },
}

/// `bench report DIR`: re-read `DIR/report.json` (a schema-1 record is
/// migrated, its `propagation.json` folded in) and re-render report.md,
/// report.html and latency.png (when it has load runs) next to it. Returns
/// the Markdown.
pub fn rerender(dir: &Path) -> Result<String, ReportError> {
    let path = report_path(dir);
    let report = reports::io::read_report(&path)?;
    let out = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let written = reports::render::write_all(&report, &out).map_err(|e| ReportError::Render {
        dir: out.clone(),
        detail: e.to_string(),
    })?;
    Ok(written.markdown)
}

/// Judge a same-run gate's record again (`bench gate --results DIR` without
/// `--policy`): the verdict `bench gate --base --candidate` printed.
pub fn judge_same_run(results: &Path) -> Result<reports::gate::same_run::SameRunOutcome, SameRunInputError> {
    let report = reports::io::read_report(&report_path(results))?;
    let test = reports::gate::same_run::SameRunTest::default();
    Ok(reports::gate::same_run::judge(&report, &test)?)
}

/// Bad input to `bench gate --results` without `--policy` (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SameRunInputError {
    #[error(transparent)]
    Results(#[from] ReadError),
    #[error("{0} (or give --policy FILE to check the record against a gate policy)")]
    Judge(#[from] reports::gate::same_run::SameRunError),
}

/// Bad input to `bench gate` (exit 2): never a pass or a fail.
#[derive(Debug, thiserror::Error)]
pub enum GateInputError {
    #[error(transparent)]
    Results(ReadError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("--baseline: {0}")]
    Baseline(ReadError),
}

/// `bench gate`: check a record against a policy (and a stored baseline).
pub fn gate(
    results: &Path,
    policy: &Path,
    baseline: Option<&Path>,
) -> Result<GateOutcome, GateInputError> {
    let policy = Policy::load(policy)?;
    let report =
        reports::io::read_report(&report_path(results)).map_err(GateInputError::Results)?;
    let stored: Option<Report> = match baseline {
        Some(b) => {
            Some(reports::io::read_report(&report_path(b)).map_err(GateInputError::Baseline)?)
        }
        None => None,
    };
    let stored = stored.as_ref().map(Comparison::of);
    Ok(reports::gate::evaluate(
        &policy,
        &Comparison::of(&report),
        stored.as_ref(),
    ))
}

/// `bench plan`: the matrix, the estimate, and which variants cannot run here.
pub fn plan_text(suite_spec: &str) -> Result<String, SuiteError> {
    let suite = suite::resolve(suite_spec)?;
    let cells = plan::cells(&suite);
    let mut text = plan::describe(&suite, &cells);
    let mut variants: Vec<_> = suite
        .scenarios
        .iter()
        .flat_map(|s| s.variants.iter().copied())
        .collect();
    variants.sort();
    variants.dedup();
    let peers = Peers::find();
    for v in variants {
        if let Err(why) = peers.check(v) {
            text.push_str(&format!("WARNING: {v} will be skipped: {why}\n"));
        }
    }
    Ok(text)
}

/// `bench run --substrate kind|kube --dry-run --suite S`: the plan, touching
/// nothing; the local substrates have no plan beyond `bench plan`.
pub fn cluster_dry_run(
    suite_spec: &str,
    cluster: Option<&crate::substrate::kube::Flags>,
) -> Result<String, String> {
    let Some(flags) = cluster else {
        return Err("--dry-run is for --substrate kind and kube; for local and netns, `bench plan --suite NAME` prints the matrix".into());
    };
    let suite = suite::resolve(suite_spec).map_err(|e| e.to_string())?;
    crate::substrate::kube::dry_run(&suite, flags).map_err(|e| e.to_string())
}

/// Bad input to `bench compare` (exit 2): never a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("A: {0}")]
    Base(ReadError),
    #[error("B: {0}")]
    Candidate(ReadError),
    #[error("{a} vs {b}: {source}")]
    Mismatch {
        a: String,
        b: String,
        source: reports::diff::DiffError,
    },
}

/// `bench compare A B`: the difference of two records, cell by cell, with
/// the noise-aware verdict of `reports::noise`. Returns the text (or JSON)
/// to print and whether any metric is worse beyond the noise.
pub fn compare(a: &Path, b: &Path, json: bool) -> Result<(String, bool), CompareError> {
    let (pa, pb) = (report_path(a), report_path(b));
    let base = reports::io::read_report(&pa).map_err(CompareError::Base)?;
    let candidate = reports::io::read_report(&pb).map_err(CompareError::Candidate)?;
    let test = reports::noise::Bootstrap::default();
    let diff = reports::diff::RecordDiff::of(&base, &candidate, &test).map_err(|source| {
        CompareError::Mismatch {
            a: pa.display().to_string(),
            b: pb.display().to_string(),
            source,
        }
    })?;
    let text = if json {
        let mut v = serde_json::to_value(&diff).expect("a diff serialises");
        v["base"] = pa.display().to_string().into();
        v["candidate"] = pb.display().to_string().into();
        serde_json::to_string_pretty(&v).expect("a JSON value serialises")
    } else {
        diff.text(&pa.display().to_string(), &pb.display().to_string())
    };
    Ok((text, diff.any_worse()))
}

#[derive(Debug, thiserror::Error)]
pub enum ExportCommandError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: {source}", path.display())]
    Export {
        path: PathBuf,
        source: reports::export::ExportError,
    },
}

/// `bench export RESULTS [--smp DIR] [--hdr DIR]`: the SMP documents and
/// HdrHistogram interval logs of a stored record; with neither flag, both
/// beside the record (`smp/`, `hdr/`). Returns what was written, one line each.
pub fn export(
    results: &Path,
    smp: Option<&Path>,
    hdr: Option<&Path>,
) -> Result<String, ExportCommandError> {
    let path = report_path(results);
    let report = reports::io::read_report(&path)?;
    let beside = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (smp, hdr) = match (smp, hdr) {
        (None, None) => (Some(beside.join("smp")), Some(beside.join("hdr"))),
        (s, h) => (s.map(Path::to_path_buf), h.map(Path::to_path_buf)),
    };
    let written = reports::export::write(&report, smp.as_deref(), hdr.as_deref())
        .map_err(|source| ExportCommandError::Export { path: path.clone(), source })?;
    let mut out = String::new();
    for p in written.smp.iter().chain(&written.hdr) {
        out.push_str(&format!("wrote {}\n", p.display()));
    }
    Ok(out)
}
