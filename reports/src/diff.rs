//! The difference of two records (`bench compare A B`): every cell measured
//! in both, metric by metric, each with the noise-aware verdict of
//! [`crate::noise`] over the cell's repetitions.
//!
//! Cells are matched as [`crate::compare::Comparison`] groups them: same
//! substrate, scenario, protocol, mode, rate or concurrency, and variant.
//! Cells in only one record are listed, never silently dropped; two records
//! with no cell in common are an error ([`DiffError::NothingInCommon`]).

use serde::Serialize;

use crate::compare::{Cell, Comparison};
use crate::noise::{Bootstrap, Direction, Judgement, Verdict};
use crate::{Report, Run};

const MIB: f64 = 1024.0 * 1024.0;

/// What `bench compare` compares per cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Corrected latency, median, µs.
    P50Us,
    /// Corrected latency, 99th percentile, µs.
    P99Us,
    /// Proxy cores per 1000 achieved rps.
    ProxyCpuPerKrps,
    /// Peak RSS summed over the cell's proxies, bytes.
    ProxyRssBytes,
    /// Responses per second of window.
    AchievedRps,
}

impl Metric {
    pub const ALL: [Metric; 5] = [Metric::P50Us, Metric::P99Us, Metric::ProxyCpuPerKrps, Metric::ProxyRssBytes, Metric::AchievedRps];

    pub fn name(self) -> &'static str {
        match self {
            Metric::P50Us => "p50",
            Metric::P99Us => "p99",
            Metric::ProxyCpuPerKrps => "proxy CPU per 1000 rps",
            Metric::ProxyRssBytes => "proxy peak RSS",
            Metric::AchievedRps => "achieved rps",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Metric::AchievedRps => Direction::HigherIsBetter,
            _ => Direction::LowerIsBetter,
        }
    }

    /// The value of one repetition; `None` when it was not measured (e.g.
    /// no proxy in the baseline variant).
    pub fn of(self, run: &Run) -> Option<f64> {
        match self {
            Metric::P50Us => Some(run.load.latency_us.p50),
            Metric::P99Us => Some(run.load.latency_us.p99),
            Metric::ProxyCpuPerKrps => run.proxy_cpu_per_krps(),
            Metric::ProxyRssBytes => run.proxy_rss_peak().map(|b| b as f64),
            Metric::AchievedRps => Some(run.load.achieved_rps),
        }
    }

    /// A value in the unit people read: ms, cores, MiB, rps.
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::P50Us | Metric::P99Us => format!("{:.3} ms", v / 1000.0),
            Metric::ProxyCpuPerKrps => format!("{v:.3} cores"),
            Metric::ProxyRssBytes => format!("{:.1} MiB", v / MIB),
            Metric::AchievedRps => format!("{v:.1} rps"),
        }
    }

    /// A signed difference in the same unit.
    pub fn format_signed(self, v: f64) -> String {
        let s = self.format(v.abs());
        if v > 0.0 {
            format!("+{s}")
        } else if v < 0.0 {
            format!("-{s}")
        } else {
            s
        }
    }

    /// The verdict in this metric's words: latency is faster or slower.
    pub fn verdict_word(self, v: Verdict) -> &'static str {
        match (self, v) {
            (Metric::P50Us | Metric::P99Us, Verdict::Better) => "faster",
            (Metric::P50Us | Metric::P99Us, Verdict::Worse) => "slower",
            _ => v.as_str(),
        }
    }
}

/// One metric of one cell in both records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricDiff {
    pub metric: Metric,
    /// `None` when one record has no value for it (e.g. no proxy sampled).
    pub judgement: Option<Judgement>,
    /// The verdict in the metric's words (`slower`, `within noise`, `not
    /// measured in both`, ...).
    pub verdict: String,
}

impl MetricDiff {
    pub fn is_worse(&self) -> bool {
        self.judgement.as_ref().is_some_and(|j| j.verdict == Verdict::Worse)
    }
}

/// One cell measured in both records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellDiff {
    #[serde(flatten)]
    pub id: record::CellId,
    /// `scenario/variant/load`.
    pub subject: String,
    pub metrics: Vec<MetricDiff>,
}

/// Everything `bench compare` says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordDiff {
    /// The test behind every verdict ([`Bootstrap::describe`]).
    pub test: String,
    pub cells: Vec<CellDiff>,
    /// `substrate scenario/variant/load` of cells only the base has.
    pub only_in_base: Vec<String>,
    /// ... only the candidate has.
    pub only_in_candidate: Vec<String>,
}

/// Why two records cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{which} record has no load runs (a conformance or hostile record?): nothing to compare")]
    NoRuns { which: &'static str },
    #[error(
        "the records have no cell in common (cells are matched by substrate, scenario, protocol, mode, load and variant); \
         base has {base}; candidate has {candidate}"
    )]
    NothingInCommon { base: String, candidate: String },
}

fn label(c: &Cell) -> String {
    format!("{} {}", c.substrate, c.subject())
}

impl RecordDiff {
    /// Compare `candidate` with `base` cell by cell.
    pub fn of(base: &Report, candidate: &Report, test: &Bootstrap) -> Result<RecordDiff, DiffError> {
        if base.runs.is_empty() {
            return Err(DiffError::NoRuns { which: "the base" });
        }
        if candidate.runs.is_empty() {
            return Err(DiffError::NoRuns { which: "the candidate" });
        }
        let (b, c) = (Comparison::of(base), Comparison::of(candidate));
        let find = |cells: &[Cell], x: &Cell| cells.iter().position(|o| o.variant == x.variant && o.group() == x.group());
        let mut cells = Vec::new();
        for cc in &c.cells {
            let Some(bi) = find(&b.cells, cc) else { continue };
            let bc = &b.cells[bi];
            let metrics = Metric::ALL
                .iter()
                .map(|&m| {
                    let bv: Vec<f64> = b.runs_of(bc).filter_map(|r| m.of(r)).collect();
                    let cv: Vec<f64> = c.runs_of(cc).filter_map(|r| m.of(r)).collect();
                    if bv.is_empty() || cv.is_empty() {
                        return MetricDiff { metric: m, judgement: None, verdict: "not measured in both".to_owned() };
                    }
                    let j = test.judge(&bv, &cv, m.direction());
                    MetricDiff { metric: m, verdict: m.verdict_word(j.verdict).to_owned(), judgement: Some(j) }
                })
                .collect();
            cells.push(CellDiff {
                id: cc.id(),
                subject: cc.subject(),
                metrics,
            });
        }
        let only = |of: &Comparison<'_>, other: &Comparison<'_>| -> Vec<String> {
            of.cells.iter().filter(|x| find(&other.cells, x).is_none()).map(label).collect()
        };
        if cells.is_empty() {
            let all = |x: &Comparison<'_>| x.cells.iter().map(label).collect::<Vec<_>>().join(", ");
            return Err(DiffError::NothingInCommon { base: all(&b), candidate: all(&c) });
        }
        Ok(RecordDiff { test: test.describe(), only_in_base: only(&b, &c), only_in_candidate: only(&c, &b), cells })
    }

    /// Whether any metric of any cell got worse beyond the noise.
    pub fn any_worse(&self) -> bool {
        self.cells.iter().any(|c| c.metrics.iter().any(MetricDiff::is_worse))
    }

    /// The table `bench compare` prints: one row per cell and metric.
    pub fn text(&self, base_name: &str, candidate_name: &str) -> String {
        let mut out = format!("bench compare: base (A) {base_name}, candidate (B) {candidate_name}\n");
        out.push_str(&format!("test: {}\n", self.test));
        let mut rows = vec![[
            "cell".to_owned(),
            "metric".to_owned(),
            "A median".to_owned(),
            "B median".to_owned(),
            "B - A".to_owned(),
            "reps A/B".to_owned(),
            "verdict".to_owned(),
        ]];
        for c in &self.cells {
            let cell = format!("{} {} {}", c.id.substrate, c.subject, c.id.protocol);
            for m in &c.metrics {
                let (a, b, d, n) = match &m.judgement {
                    Some(j) => {
                        let rel = j.relative.map(|r| format!(" ({:+.1}%)", r * 100.0)).unwrap_or_default();
                        (
                            m.metric.format(j.base_median),
                            m.metric.format(j.candidate_median),
                            format!("{}{rel}", m.metric.format_signed(j.difference)),
                            format!("{}/{}", j.base_n, j.candidate_n),
                        )
                    }
                    None => ("-".to_owned(), "-".to_owned(), "-".to_owned(), "-".to_owned()),
                };
                rows.push([cell.clone(), m.metric.name().to_owned(), a, b, d, n, m.verdict.clone()]);
            }
        }
        let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        for (k, r) in rows.iter().enumerate() {
            let line: Vec<String> = r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if k == 0 {
                out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
                out.push('\n');
            }
        }
        for (which, list) in [("A", &self.only_in_base), ("B", &self.only_in_candidate)] {
            if !list.is_empty() {
                out.push_str(&format!("only in {which} (not compared): {}\n", list.join(", ")));
            }
        }
        let worse: Vec<String> = self
            .cells
            .iter()
            .flat_map(|c| c.metrics.iter().filter(|m| m.is_worse()).map(move |m| format!("{} {}", c.subject, m.metric.name())))
            .collect();
        if worse.is_empty() {
            out.push_str("no metric is worse beyond the noise\n");
        } else {
            out.push_str(&format!("worse beyond the noise: {}\n", worse.join(", ")));
        }
        out
    }
}
