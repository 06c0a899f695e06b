//! Results in other tools' formats, beside the Weft record: Service Mesh
//! Performance JSON ([`smp`]) and HdrHistogram interval logs ([`hdr_log`]),
//! one file of each per load cell.
//!
//! ```text
//!   report.json ──Comparison::of──> cells ──┬──> smp/<cell>.json   (SMP messages, medians over repetitions)
//!                                           └──> hdr/<cell>.hlog   (one interval per repetition, µs)
//! ```
//!
//! `bench run` writes both next to the record; `bench export` writes them
//! from any stored record.

pub mod hdr_log;
pub mod smp;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::compare::{Cell, Comparison};
use crate::Report;

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the record has no load runs (a conformance or hostile record?): nothing to export")]
    NoRuns,
    #[error("{subject}: its histogram cannot be read: {detail}")]
    Histogram { subject: String, detail: String },
    #[error("HdrHistogram log: {0}")]
    Hdr(String),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// File stem of a cell's exports: `local_h1_http1_weft_200rps` (substrate,
/// scenario, protocol, variant, load), only `[A-Za-z0-9._-]`.
pub fn cell_stem(cell: &Cell) -> String {
    let load = match (cell.rate, cell.concurrency) {
        (Some(r), _) => format!("{}rps", crate::compare::trim_float(r)),
        (None, Some(c)) => format!("c{c}"),
        (None, None) => "load".to_owned(),
    };
    [&cell.substrate, &cell.scenario, &cell.protocol, &cell.variant, &load]
        .iter()
        .map(|s| s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect::<String>())
        .collect::<Vec<_>>()
        .join("_")
}

/// Every cell with a unique stem (a clash after sanitising gets `-2`, `-3`, ...).
fn stems<'a>(cmp: &'a Comparison<'_>) -> Vec<(&'a Cell, String)> {
    let mut seen = BTreeSet::new();
    cmp.cells
        .iter()
        .map(|c| {
            let base = cell_stem(c);
            let mut stem = base.clone();
            let mut n = 1;
            while !seen.insert(stem.clone()) {
                n += 1;
                stem = format!("{base}-{n}");
            }
            (c, stem)
        })
        .collect()
}

fn create_dir(dir: &Path) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Write { path: dir.to_path_buf(), source })
}

fn put(path: PathBuf, bytes: &[u8]) -> Result<PathBuf, ExportError> {
    record::io::write_atomic(&path, bytes).map_err(|source| ExportError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    pub smp: Vec<PathBuf>,
    pub hdr: Vec<PathBuf>,
}

/// Write `<smp_dir>/<cell>.json` and/or `<hdr_dir>/<cell>.hlog` for every load cell.
pub fn write(report: &Report, smp_dir: Option<&Path>, hdr_dir: Option<&Path>) -> Result<Written, ExportError> {
    if report.runs.is_empty() {
        return Err(ExportError::NoRuns);
    }
    let cmp = Comparison::of(report);
    let mut written = Written::default();
    for dir in [smp_dir, hdr_dir].into_iter().flatten() {
        create_dir(dir)?;
    }
    for (cell, stem) in stems(&cmp) {
        let hdr_name = format!("{stem}.hlog");
        if let Some(dir) = hdr_dir {
            written.hdr.push(put(dir.join(&hdr_name), &hdr_log::cell_log(&cmp, cell)?)?);
        }
        if let Some(dir) = smp_dir {
            let doc = smp::cell_document(&cmp, cell, &stem, hdr_dir.map(|_| hdr_name.as_str()))?;
            let mut json = serde_json::to_vec_pretty(&doc).expect("a JSON value serialises");
            json.push(b'\n');
            written.smp.push(put(dir.join(format!("{stem}.json")), &json)?);
        }
    }
    Ok(written)
}

/// Both exports next to a record: `<dir>/smp/` and `<dir>/hdr/`. A record
/// without load runs gets neither (and no error).
pub fn write_beside(report: &Report, dir: &Path) -> Result<Written, ExportError> {
    if report.runs.is_empty() {
        return Ok(Written::default());
    }
    write(report, Some(&dir.join("smp")), Some(&dir.join("hdr")))
}
