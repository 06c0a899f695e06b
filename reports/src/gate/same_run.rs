//! The same-run gate's decision (`bench gate --base DIR --candidate DIR`):
//! two builds' Weft measured in one record, as the variants `weft@base` and
//! `weft@candidate` (any Weft variant `V` as `V@base` / `V@candidate`), in
//! rounds that alternate which build goes first.
//!
//! The test, per cell and gated metric: the bootstrap 95 % confidence
//! interval of the median of the per-round differences (candidate − base,
//! the two builds of a round paired: [`Bootstrap::judge_paired`], 10,000
//! resamples, fixed seed). Pairing cancels what moves a whole round: on a
//! 2-core VM a build's CPU per 1000 rps drifted 0.43 → 0.57 s per round
//! within one run, which the unpaired interval of the difference of medians
//! counted as noise and so missed a 50 µs-per-request slowdown in 1 run of 5
//! (docs/FIGURES.md, "Same-run gate: 10 + 10 runs"). A metric is a
//! **regression** only when that whole interval lies above a minimum
//! practical effect (the metric's *margin*: a share of the base's median,
//! at least an absolute floor), i.e. the data say with 95 % confidence that
//! the candidate is worse by more than the margin. Worse beyond the noise
//! but not surely by the margin is said ("worse, not surely by the margin") and
//! passes. Across metrics and cells: the gate fails when any gated metric
//! of any cell is a regression, when the candidate's error rate exceeds the
//! base's by more than [`SameRunTest::error_rate_margin`], or when a
//! candidate cell has no base to compare with.
//!
//! Why a margin and not the interval against 0: with 6 rounds the interval
//! alone calls two identical builds different about 1 time in 16 per metric
//! (a simulation of 2,000 gates with normal per-round differences: 6 %;
//! it happens when 5 or 6 of the 6 differences share a sign), and a gate
//! reads several metrics of several cells; asking the interval to clear a
//! margin makes a false alarm need nearly every round's candidate to be
//! worse than its base by about the margin, which identical builds measured
//! alternately do not do.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::compare::{subject, Cell, Comparison};
use crate::diff::Metric;
use crate::noise::{Bootstrap, Direction, Judgement, Verdict};
use crate::Report;
use record::CellId;

/// The suffix of the base build's variants.
pub const BASE: &str = "@base";
/// The suffix of the candidate build's variants.
pub const CANDIDATE: &str = "@candidate";

/// One gated metric's minimum practical effect.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Margin {
    pub metric: Metric,
    /// Share of the base median, e.g. 0.05.
    pub relative: f64,
    /// In the metric's unit (µs, cores per 1000 rps, bytes).
    pub floor: f64,
}

impl Margin {
    /// The margin for a base median.
    pub fn at(&self, base_median: f64) -> f64 {
        (self.relative * base_median.abs()).max(self.floor)
    }
}

/// The test and its thresholds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SameRunTest {
    pub bootstrap: Bootstrap,
    /// The gated metrics, all lower-is-better.
    pub margins: Vec<Margin>,
    /// Largest allowed excess of the candidate's error rate over the base's
    /// (a fraction: 0.001 is 0.1 percentage point).
    pub error_rate_margin: f64,
}

impl Default for SameRunTest {
    fn default() -> Self {
        let m = |metric, relative, floor| Margin { metric, relative, floor };
        SameRunTest {
            bootstrap: Bootstrap::default(),
            margins: vec![
                m(Metric::P50Us, 0.05, 20.0),
                m(Metric::P99Us, 0.10, 100.0),
                m(Metric::ProxyCpuPerKrps, 0.10, 0.01),
                m(Metric::ProxyRssBytes, 0.10, 2.0 * 1024.0 * 1024.0),
            ],
            error_rate_margin: 0.001,
        }
    }
}

impl SameRunTest {
    /// The test and thresholds in words, for the report.
    pub fn describe(&self) -> String {
        let margins: Vec<String> = self
            .margins
            .iter()
            .map(|m| format!("{} {}% (at least {})", m.metric.name(), trim(m.relative * 100.0), m.metric.format(m.floor)))
            .collect();
        format!(
            "regression when the {} lies wholly above the margin: {}; and when the candidate's error rate exceeds the base's by more than {} points",
            self.bootstrap.describe_paired(),
            margins.join(", "),
            trim(self.error_rate_margin * 100.0)
        )
    }
}

/// A metric's verdict in the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateVerdict {
    /// Worse, with 95 % confidence by more than the margin: fails the gate.
    Regression,
    /// Worse beyond the noise, but not surely by the margin: passes.
    WorseUnderMargin,
    WithinNoise,
    Better,
    /// Fewer than 3 rounds on a side: no verdict (the gate cannot pass).
    TooFewRepetitions,
    /// One side did not measure it (e.g. no proxy sampled): not gated.
    NotMeasured,
}

impl GateVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            GateVerdict::Regression => "REGRESSION",
            GateVerdict::WorseUnderMargin => "worse, not surely by the margin",
            GateVerdict::WithinNoise => "within noise",
            GateVerdict::Better => "better",
            GateVerdict::TooFewRepetitions => "too few repetitions",
            GateVerdict::NotMeasured => "not measured in both",
        }
    }
}

/// One cell × metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SameRunRow {
    /// The cell, with the variant as the suite names it (`weft`).
    #[serde(flatten)]
    pub id: CellId,
    pub metric: Metric,
    /// `None` when not measured in both.
    pub judgement: Option<Judgement>,
    /// The margin at this base median.
    pub margin: Option<f64>,
    pub verdict: GateVerdict,
}

/// The error rates of one cell's two builds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorRow {
    #[serde(flatten)]
    pub id: CellId,
    pub base_rate: f64,
    pub candidate_rate: f64,
    pub passed: bool,
}

/// Everything the same-run gate says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SameRunOutcome {
    pub test: String,
    pub rows: Vec<SameRunRow>,
    pub errors: Vec<ErrorRow>,
    /// Candidate cells with no base cell (or the other way round).
    pub unpaired: Vec<String>,
    /// Either build's cells that failed in some round (the record's
    /// `skipped`, `failed: ...`): a build that crashes under load fails.
    pub failed: Vec<String>,
    pub passed: bool,
}

/// Why a record cannot be judged (exit 2): never a pass.
#[derive(Debug, thiserror::Error)]
pub enum SameRunError {
    #[error("the record has no `<variant>@base` / `<variant>@candidate` load cells: it is not a same-run gate's record (`bench gate --base DIR --candidate DIR` writes one)")]
    NoPairs,
    #[error("no gated metric got a verdict (fewer than {min} rounds per build?): the gate checked nothing")]
    NothingJudged { min: usize },
}

/// Judge a same-run record.
pub fn judge(report: &Report, test: &SameRunTest) -> Result<SameRunOutcome, SameRunError> {
    let cmp = Comparison::of(report);
    let is = |c: &Cell, suffix: &str| c.variant.ends_with(suffix);
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut unpaired = Vec::new();
    let mut pairs = 0;
    for cand in cmp.cells.iter().filter(|c| is(c, CANDIDATE)) {
        let name = cand.variant.trim_end_matches(CANDIDATE);
        let base_variant = format!("{name}{BASE}");
        let Some(base) = cmp.cells.iter().find(|c| c.variant == base_variant && c.group() == cand.group()) else {
            unpaired.push(format!("{} (no {base_variant})", cand.subject()));
            continue;
        };
        pairs += 1;
        let id = CellId { variant: name.to_owned(), ..cand.id() };
        for margin in &test.margins {
            // Round -> value; a round either build lacks is left out.
            let by_round = |c: &Cell| cmp.runs_of(c).filter_map(|r| Some((r.repetition, margin.metric.of(r)?))).collect::<BTreeMap<u32, f64>>();
            let (b, c) = (by_round(base), by_round(cand));
            let pairs: Vec<(f64, f64)> = b.iter().filter_map(|(round, bv)| Some((*bv, *c.get(round)?))).collect();
            if pairs.is_empty() {
                rows.push(SameRunRow { id: id.clone(), metric: margin.metric, judgement: None, margin: None, verdict: GateVerdict::NotMeasured });
                continue;
            }
            let j = test.bootstrap.judge_paired(&pairs, Direction::LowerIsBetter);
            let m = margin.at(j.base_median);
            let verdict = match (j.verdict, j.interval) {
                (Verdict::TooFewRepetitions, _) | (_, None) => GateVerdict::TooFewRepetitions,
                (Verdict::Worse, Some((low, _))) if low > m => GateVerdict::Regression,
                (Verdict::Worse, _) => GateVerdict::WorseUnderMargin,
                (Verdict::Better, _) => GateVerdict::Better,
                (Verdict::WithinNoise, _) => GateVerdict::WithinNoise,
            };
            rows.push(SameRunRow { id: id.clone(), metric: margin.metric, judgement: Some(j), margin: Some(m), verdict });
        }
        let (br, cr) = (base.error_rate(), cand.error_rate());
        errors.push(ErrorRow { id, base_rate: br, candidate_rate: cr, passed: cr - br <= test.error_rate_margin });
    }
    for base in cmp.cells.iter().filter(|c| is(c, BASE)) {
        let cand_variant = format!("{}{CANDIDATE}", base.variant.trim_end_matches(BASE));
        if !cmp.cells.iter().any(|c| c.variant == cand_variant && c.group() == base.group()) {
            unpaired.push(format!("{} (no {cand_variant})", base.subject()));
        }
    }
    let failed: Vec<String> = report
        .skipped
        .iter()
        .filter(|s| (s.variant.ends_with(BASE) || s.variant.ends_with(CANDIDATE)) && s.reason.starts_with("failed"))
        .map(|s| format!("{} {}: {}", s.scenario, s.variant, s.reason))
        .collect();
    if pairs == 0 {
        return Err(SameRunError::NoPairs);
    }
    let judged = rows.iter().any(|r| !matches!(r.verdict, GateVerdict::TooFewRepetitions | GateVerdict::NotMeasured));
    if !judged {
        return Err(SameRunError::NothingJudged { min: test.bootstrap.min_repetitions });
    }
    let passed = unpaired.is_empty()
        && failed.is_empty()
        && errors.iter().all(|e| e.passed)
        && rows.iter().all(|r| !matches!(r.verdict, GateVerdict::Regression | GateVerdict::TooFewRepetitions));
    Ok(SameRunOutcome { test: test.describe(), rows, errors, unpaired, failed, passed })
}

impl SameRunOutcome {
    /// The table the gate prints: per cell and metric the base and candidate
    /// medians, the difference, its 95 % CI, the margin and the verdict.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let failed = self.rows.iter().filter(|r| r.verdict == GateVerdict::Regression).count()
            + self.errors.iter().filter(|e| !e.passed).count()
            + self.unpaired.len()
            + self.failed.len();
        if self.passed {
            out.push_str("Same-run gate PASSED: no regression larger than the noise and the margin\n");
        } else {
            out.push_str(&format!("Same-run gate FAILED: {failed} failing check(s)\n"));
        }
        out.push_str(&format!("test: {}\n\n", self.test));
        let mut table = vec![["cell", "metric", "base", "candidate", "difference", "95% CI", "margin", "rounds", "verdict"].map(String::from)];
        for r in &self.rows {
            let cell = format!("{} {} {}", r.id.substrate, subject(&r.id), r.id.protocol);
            let m = r.metric;
            let (b, c, d, ci, n) = match &r.judgement {
                Some(j) => (
                    m.format(j.base_median),
                    m.format(j.candidate_median),
                    signed(m, j.difference) + &j.relative.map(|x| format!(" ({:+.1}%)", x * 100.0)).unwrap_or_default(),
                    j.interval.map(|(lo, hi)| format!("{} .. {}", signed(m, lo), signed(m, hi))).unwrap_or_else(|| "-".into()),
                    format!("{}/{}", j.base_n, j.candidate_n),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            let margin = r.margin.map(|x| format!("+{}", m.format(x))).unwrap_or_else(|| "-".into());
            table.push([cell, m.name().to_owned(), b, c, d, ci, margin, n, r.verdict.as_str().to_owned()]);
        }
        for e in &self.errors {
            let cell = format!("{} {} {}", e.id.substrate, subject(&e.id), e.id.protocol);
            let pct = |x: f64| format!("{:.3}%", x * 100.0);
            table.push([
                cell,
                "error rate".into(),
                pct(e.base_rate),
                pct(e.candidate_rate),
                format!("{:+.3} points", (e.candidate_rate - e.base_rate) * 100.0),
                "-".into(),
                "-".into(),
                "-".into(),
                if e.passed { "ok" } else { "REGRESSION" }.into(),
            ]);
        }
        let widths: Vec<usize> = (0..9).map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        for (k, r) in table.iter().enumerate() {
            let line: Vec<String> = r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if k == 0 {
                out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
                out.push('\n');
            }
        }
        for u in &self.unpaired {
            out.push_str(&format!("unpaired (fails the gate): {u}\n"));
        }
        for f in &self.failed {
            out.push_str(&format!("a cell failed (fails the gate): {f}\n"));
        }
        out
    }
}

fn signed(m: Metric, v: f64) -> String {
    let s = m.format(v.abs());
    if v < 0.0 {
        format!("-{s}")
    } else {
        format!("+{s}")
    }
}

fn trim(v: f64) -> String {
    crate::compare::trim_float((v * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_share_of_the_base_with_a_floor() {
        let m = Margin { metric: Metric::P50Us, relative: 0.05, floor: 20.0 };
        assert_eq!(m.at(1000.0), 50.0);
        assert_eq!(m.at(100.0), 20.0);
    }

    #[test]
    fn the_description_names_the_test_and_every_threshold() {
        let d = SameRunTest::default().describe();
        for part in ["bootstrap 95%", "p50 5% (at least 0.020 ms)", "p99 10%", "proxy CPU per 1000 rps 10%", "0.1 points"] {
            assert!(d.contains(part), "{part}: {d}");
        }
    }
}
