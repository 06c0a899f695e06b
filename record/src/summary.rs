//! The record's derived section: each load cell's figures as the reports
//! show them, a median with its min..max over repetitions, and each added
//! percentile with its noise verdict. Computed from `runs` by
//! `reports::compare::Comparison::summary` when `bench run` writes the
//! record, so a reader of `report.json` alone (a notebook, `jq`) sees
//! the same spread and verdicts as `report.md`; Weft's own readers ignore it
//! and recompute from `runs`.

use serde::{Deserialize, Serialize};

/// One variant under one load, summarised over its repetitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    pub substrate: String,
    pub scenario: String,
    pub variant: String,
    pub protocol: String,
    pub mode: String,
    pub rate: Option<f64>,
    pub concurrency: Option<u32>,
    pub repetitions: usize,
    /// By figure name (`p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`,
    /// `achieved_rps`, `proxy_cpu_per_krps`, `proxy_rss_peak_bytes`,
    /// `control_rss_peak_bytes`); figures a cell did not measure are absent.
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
