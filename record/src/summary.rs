//! The record's derived section: each load cell's figures as the reports
//! show them, a median with its min..max over repetitions, and each added
//! percentile with its noise verdict. Computed from `runs` by
//! `reports::compare::Comparison::summary` when `bench run` writes the
//! record, so a reader of `report.json` alone (a notebook, `jq`) sees
//! the same spread and verdicts as `report.md`; Weft's own readers ignore it
//! and recompute from `runs`.

use serde::{Deserialize, Serialize};

/// Which cell: one variant under one load. Every type that names a cell
/// (this summary, `bench compare`'s per-cell diff, a stored-baseline
/// regression) holds one, flattened in JSON, so the seven fields are
/// spelled and ordered in one place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellId {
    pub substrate: String,
    pub scenario: String,
    pub variant: String,
    /// The load's protocol (`http1`, `http2`, ...).
    pub protocol: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Open loop: requests/s asked for; `null` for closed loop.
    pub rate: Option<f64>,
    /// Closed loop: requests in flight; `null` for open loop.
    pub concurrency: Option<u32>,
}

impl CellId {
    /// The cell a load run belongs to.
    pub fn of(run: &crate::Run) -> CellId {
        CellId {
            substrate: run.substrate.clone(),
            scenario: run.scenario.clone(),
            variant: run.variant.clone(),
            protocol: run.load.protocol.clone(),
            mode: run.load.mode.clone(),
            rate: run.load.rate,
            concurrency: run.load.concurrency,
        }
    }

    /// Whether `other` is the same load (everything but the variant).
    pub fn same_load(&self, other: &CellId) -> bool {
        self.substrate == other.substrate
            && self.scenario == other.scenario
            && self.protocol == other.protocol
            && self.mode == other.mode
            && self.rate == other.rate
            && self.concurrency == other.concurrency
    }
}

/// One variant under one load, summarised over its repetitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    #[serde(flatten)]
    pub id: CellId,
    pub repetitions: usize,
    /// By figure name (`p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`,
    /// `achieved_rps`, `proxy_cpu_per_krps`, `proxy_rss_peak_bytes`,
    /// `proxy_rss_anon_peak_bytes`, `control_rss_peak_bytes`); figures a
    /// cell did not measure are absent.
    pub figures: std::collections::BTreeMap<String, Figure>,
    /// Variant minus the group's `baseline`, by percentile (`p50_us`,
    /// `p99_us`, `p999_us`); empty for the baseline and groups without one.
    #[serde(default)]
    pub added: std::collections::BTreeMap<String, Added>,
}

/// A figure over repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What the reports print: the median over repetitions (for peak RSS, the largest).
    pub value: f64,
    pub min: f64,
    pub max: f64,
    /// Repetitions that measured it.
    pub n: usize,
}

/// A difference from the baseline with the noise test's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Added {
    /// Variant median minus baseline median.
    pub difference: f64,
    /// The bootstrap confidence interval of `difference`; absent with too few repetitions.
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// `better`, `worse`, `within-noise` or `too-few-repetitions`.
    pub verdict: String,
    pub base_n: usize,
    pub variant_n: usize,
}
