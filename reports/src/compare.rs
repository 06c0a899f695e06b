//! Groups runs into cells and compares variants.
//!
//! A *group* is everything measured under the same load: (substrate,
//! scenario, protocol, mode, rate or concurrency). A *cell* is one variant in
//! a group, summarising all its repetitions:
//!
//! - latency percentiles, achieved rps and proxy CPU: the median over
//!   repetitions (robust against one noisy repetition on a shared machine);
//! - proxy peak RSS: the largest peak of any repetition (memory limits are
//!   about the worst case, not the typical one);
//! - requests, errors, late sends: totals over repetitions.
//!
//! "Added latency" compares a cell with the `baseline` variant (no mesh, no
//! proxy) of the same group in the same record, so both saw the same machine
//! at the same time.
//!
//! Every median also keeps its spread (smallest and largest repetition,
//! [`Spreads`]), and every added percentile is judged against the noise with
//! [`crate::noise`]'s bootstrap over both cells' repetitions
//! ([`AddedVerdicts`]), so a renderer never has to print a difference that
//! is inside the noise as if it were a finding.
//!
//! [`Comparison::of`] does all of this once per report; every renderer and
//! the gate read that one comparison instead of re-deriving it.

use std::cmp::Ordering;

use serde::Serialize;

use crate::conformance::Matrix;
use crate::noise::{Bootstrap, Direction, Judgement};
use crate::{Percentiles, Report, Run};
use record::CellId;

/// Everything derived from one report, computed once: the cells, their
/// groups, the conformance matrix, and the report itself for what is shown
/// as recorded.
#[derive(Clone, Debug)]
pub struct Comparison<'r> {
    pub report: &'r Report,
    /// Every cell, in display order: substrates and scenarios as they first
    /// appear, loads rising, variants baseline first, weft, then peers.
    pub cells: Vec<Cell>,
    /// The groups in display order, each with its cells' indices into `cells`.
    groups: Vec<(GroupKey, Vec<usize>)>,
    /// Conformance results as tests × (substrate, variant).
    pub conformance: Matrix<'r>,
}

impl<'r> Comparison<'r> {
    /// Summarise `report`: cells, groups, added latency, conformance matrix.
    pub fn of(report: &'r Report) -> Comparison<'r> {
        let cells = cells(report);
        let mut groups: Vec<(GroupKey, Vec<usize>)> = Vec::new();
        for (i, c) in cells.iter().enumerate() {
            let key = c.group();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        Comparison { report, cells, groups, conformance: Matrix::of(&report.conformance) }
    }

    /// Groups in display order, each group's cells in variant order.
    pub fn groups(&self) -> Vec<(GroupKey, Vec<&Cell>)> {
        self.groups.iter().map(|(k, members)| (k.clone(), members.iter().map(|&i| &self.cells[i]).collect())).collect()
    }

    /// The report's load runs that a cell summarises.
    pub fn runs_of<'a>(&'a self, cell: &'a Cell) -> impl Iterator<Item = &'r Run> + 'a {
        cell.run_indices.iter().map(|&i| &self.report.runs[i])
    }

    /// Every variant in the report, in display order (baseline, weft, peers).
    pub fn variants(&self) -> Vec<String> {
        variants_in_order(self.report)
    }

    /// Compare every cell with the matching cell (same substrate, scenario,
    /// protocol, mode, load and variant) of a stored record. Cells present in
    /// only one record are left out; a caller that needs to know can compare
    /// the lengths.
    pub fn versus(&self, stored: &Comparison<'_>) -> Vec<Regression> {
        self.cells
            .iter()
            .filter_map(|c| {
                let key = c.group();
                let o = stored.cells.iter().find(|o| o.variant == c.variant && o.group() == key)?;
                let both = |a: Option<f64>, b: Option<f64>| Some(Change { stored: a?, current: b? });
                Some(Regression {
                    id: c.id(),
                    p50_us: Change { stored: o.latency_us.p50, current: c.latency_us.p50 },
                    p99_us: Change { stored: o.latency_us.p99, current: c.latency_us.p99 },
                    proxy_rss_bytes: both(o.proxy_rss_peak.map(|b| b as f64), c.proxy_rss_peak.map(|b| b as f64)),
                    proxy_cpu_per_krps: both(o.proxy_cpu_per_krps, c.proxy_cpu_per_krps),
                })
            })
            .collect()
    }
}

impl Comparison<'_> {
    /// The record's derived `cells` section ([`record::summary`]): every
    /// cell's figures with their min..max and the added percentiles with
    /// their verdicts, as the renderers show them.
    pub fn summary(&self) -> Vec<record::CellSummary> {
        use record::summary::{Added, Figure};
        self.cells
            .iter()
            .map(|c| {
                let sp = &c.spread;
                let l = &c.latency_us;
                let figures = [
                    ("p50_us", Some(l.p50), sp.p50_us),
                    ("p90_us", Some(l.p90), sp.p90_us),
                    ("p99_us", Some(l.p99), sp.p99_us),
                    ("p999_us", Some(l.p999), sp.p999_us),
                    ("max_us", Some(l.max), sp.max_us),
                    ("achieved_rps", Some(c.achieved_rps), sp.achieved_rps),
                    ("proxy_cpu_per_krps", c.proxy_cpu_per_krps, sp.proxy_cpu_per_krps),
                    ("proxy_rss_peak_bytes", c.proxy_rss_peak.map(|b| b as f64), sp.proxy_rss_peak_bytes),
                    (
                        "proxy_rss_anon_peak_bytes",
                        c.proxy_rss_anon_peak.map(|b| b as f64),
                        sp.proxy_rss_anon_peak_bytes,
                    ),
                    ("control_rss_peak_bytes", c.control_rss_peak.map(|b| b as f64), sp.control_rss_peak_bytes),
                ]
                .into_iter()
                .filter_map(|(name, value, s)| {
                    let (value, s) = (value?, s?);
                    Some((name.to_owned(), Figure { value, min: s.min, max: s.max, n: s.n }))
                })
                .collect();
                let added = c
                    .added
                    .iter()
                    .flat_map(|a| [("p50_us", &a.p50), ("p99_us", &a.p99), ("p999_us", &a.p999)])
                    .map(|(name, j)| {
                        let added = Added {
                            difference: j.difference,
                            low: j.interval.map(|i| i.0),
                            high: j.interval.map(|i| i.1),
                            verdict: verdict_key(j.verdict).to_owned(),
                            base_n: j.base_n,
                            variant_n: j.candidate_n,
                        };
                        (name.to_owned(), added)
                    })
                    .collect();
                record::CellSummary {
                    id: c.id(),
                    repetitions: c.repetitions,
                    figures,
                    added,
                }
            })
            .collect()
    }
}

/// Fill `report.cells` from its runs (what `bench` does before writing a
/// record, and `bench report` before re-writing one).
pub fn summarise_into(report: &mut Report) {
    report.cells = Comparison::of(report).summary();
}

/// A verdict as `report.json` spells it.
fn verdict_key(v: crate::noise::Verdict) -> &'static str {
    use crate::noise::Verdict;
    match v {
        Verdict::Better => "better",
        Verdict::Worse => "worse",
        Verdict::WithinNoise => "within-noise",
        Verdict::TooFewRepetitions => "too-few-repetitions",
    }
}

/// The Debian/Ubuntu package of each peer a run can compare against.
const PEER_PACKAGES: [(&str, &str); 4] = [("nginx", "nginx"), ("haproxy", "haproxy"), ("wrk", "wrk"), ("h2load", "nghttp2-client")];

/// One command that installs every peer the record skipped because it was
/// not installed (`None` when none was), for the reports to print beside
/// the skipped variants.
pub fn install_missing_peers(report: &Report) -> Option<String> {
    let mut packages: Vec<&str> = Vec::new();
    for s in report.skipped.iter().filter(|s| s.reason.contains("not found")) {
        if let Some((_, pkg)) = PEER_PACKAGES.iter().find(|(peer, _)| s.variant == *peer || s.reason.starts_with(&format!("{peer} not found"))) {
            if !packages.contains(pkg) {
                packages.push(pkg);
            }
        }
    }
    (!packages.is_empty()).then(|| format!("sudo apt-get install -y {}", packages.join(" ")))
}

/// Name of the variant that has nothing between load generator and server.
pub const BASELINE: &str = "baseline";

/// One variant under one load, summarised over its repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub substrate: String,
    pub scenario: String,
    pub protocol: String,
    pub mode: String,
    pub rate: Option<f64>,
    pub concurrency: Option<u32>,
    pub variant: String,
    /// Number of repetitions summarised.
    pub repetitions: usize,
    /// Scheduled-send (coordinated-omission corrected) latency, median per field.
    pub latency_us: Percentiles,
    /// Actual-send latency, median per field.
    pub service_time_us: Percentiles,
    /// Median achieved requests/s.
    pub achieved_rps: f64,
    /// Total completed requests over repetitions.
    pub requests: u64,
    /// Total failed requests over repetitions.
    pub errors: u64,
    /// Total late sends over repetitions.
    pub late_sends: u64,
    /// Largest proxy peak RSS of any repetition, bytes.
    pub proxy_rss_peak: Option<u64>,
    /// Largest anonymous (private) part of the proxies' RSS of any
    /// repetition, bytes (`None` where the substrate does not tell it apart).
    pub proxy_rss_anon_peak: Option<u64>,
    /// Largest control-plane peak RSS of any repetition, bytes (`None` without one).
    pub control_rss_peak: Option<u64>,
    /// Median proxy cores per 1000 rps.
    pub proxy_cpu_per_krps: Option<f64>,
    /// p50 minus the baseline cell's p50, µs (`None` for the baseline itself
    /// or when the group has no baseline).
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub added_p999_us: Option<f64>,
    /// p50 divided by the baseline cell's p50.
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    /// Indices into `Report::runs` of the repetitions summarised here.
    pub run_indices: Vec<usize>,
    /// The proxies' own count beside loadgen's, summed over the repetitions
    /// that carry one (`None` for variants without a Weft proxy).
    pub proxy_counts: Option<ProxyTally>,
    /// Smallest and largest repetition of each figure above that is a median
    /// (or, for peak RSS, a largest).
    pub spread: Spreads,
    /// The added percentiles judged against the noise of both cells'
    /// repetitions; `None` exactly when `added_p50_us` is.
    pub added: Option<AddedVerdicts>,
}

/// The smallest and largest of one figure over a cell's repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
    /// Repetitions that had the figure.
    pub n: usize,
}

impl Spread {
    /// `None` when no repetition had the figure (non-finite values are left out).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        values.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| {
            Some(match acc {
                None => Spread { min: v, max: v, n: 1 },
                Some(s) => Spread { min: s.min.min(v), max: s.max.max(v), n: s.n + 1 },
            })
        })
    }
}

/// [`Spread`]s of a cell's figures, µs for latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spreads {
    pub p50_us: Option<Spread>,
    pub p90_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub p999_us: Option<Spread>,
    pub max_us: Option<Spread>,
    pub achieved_rps: Option<Spread>,
    pub proxy_cpu_per_krps: Option<Spread>,
    pub proxy_rss_peak_bytes: Option<Spread>,
    pub proxy_rss_anon_peak_bytes: Option<Spread>,
    pub control_rss_peak_bytes: Option<Spread>,
}

impl Spreads {
    fn of(runs: &[&Run]) -> Spreads {
        let lat = |f: fn(&Percentiles) -> f64| Spread::of(runs.iter().map(|r| f(&r.load.latency_us)));
        Spreads {
            p50_us: lat(|p| p.p50),
            p90_us: lat(|p| p.p90),
            p99_us: lat(|p| p.p99),
            p999_us: lat(|p| p.p999),
            max_us: lat(|p| p.max),
            achieved_rps: Spread::of(runs.iter().map(|r| r.load.achieved_rps)),
            proxy_cpu_per_krps: Spread::of(runs.iter().filter_map(|r| r.proxy_cpu_per_krps())),
            proxy_rss_peak_bytes: Spread::of(runs.iter().filter_map(|r| r.proxy_rss_peak()).map(|b| b as f64)),
            proxy_rss_anon_peak_bytes: Spread::of(runs.iter().filter_map(|r| r.proxy_rss_anon_peak()).map(|b| b as f64)),
            control_rss_peak_bytes: Spread::of(runs.iter().filter_map(|r| r.control_rss_peak()).map(|b| b as f64)),
        }
    }
}

/// Each added percentile (variant − baseline) judged by [`crate::noise`]:
/// the bootstrap interval of the difference of medians between the
/// baseline's repetitions and the variant's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AddedVerdicts {
    pub p50: Judgement,
    pub p99: Judgement,
    pub p999: Judgement,
}

impl AddedVerdicts {
    fn of(base: &[&Run], variant: &[&Run]) -> AddedVerdicts {
        let test = Bootstrap::default();
        let judge = |f: fn(&Percentiles) -> f64| {
            let values = |runs: &[&Run]| runs.iter().map(|r| f(&r.load.latency_us)).collect::<Vec<f64>>();
            test.judge(&values(base), &values(variant), Direction::LowerIsBetter)
        };
        AddedVerdicts { p50: judge(|p| p.p50), p99: judge(|p| p.p99), p999: judge(|p| p.p999) }
    }
}

/// The bench's cross-check ([`record::CrossCheck`]) summed over a cell's repetitions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProxyTally {
    /// The compared proxy's requests.
    pub proxy: u64,
    /// loadgen's requests in the same repetitions.
    pub loadgen: u64,
    /// Repetitions flagged (more than 0.1 % apart).
    pub flagged: usize,
}

impl ProxyTally {
    fn of<'a>(runs: impl Iterator<Item = &'a Run>) -> Option<ProxyTally> {
        runs.filter_map(|r| r.proxy_counts.as_ref()).fold(None, |acc, c| {
            let t = acc.unwrap_or_default();
            Some(ProxyTally {
                proxy: t.proxy + c.proxy_requests,
                loadgen: t.loadgen + c.loadgen_requests,
                flagged: t.flagged + usize::from(c.flagged),
            })
        })
    }
}

impl Cell {
    /// Failed requests as a fraction of all requests (0 when none completed).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Whether this cell is the no-mesh reference of its group.
    pub fn is_baseline(&self) -> bool {
        self.variant == BASELINE
    }

    /// Which cell this is, as the record and `bench compare` name it.
    pub fn id(&self) -> CellId {
        CellId {
            substrate: self.substrate.clone(),
            scenario: self.scenario.clone(),
            variant: self.variant.clone(),
            protocol: self.protocol.clone(),
            mode: self.mode.clone(),
            rate: self.rate,
            concurrency: self.concurrency,
        }
    }

    /// The group this cell belongs to.
    pub fn group(&self) -> GroupKey {
        GroupKey::from(&self.id())
    }

    /// `scenario/variant/load`, the way gates and regressions name a cell.
    pub fn subject(&self) -> String {
        subject(&self.id())
    }
}

/// `scenario/variant/load`: how gates, regressions and `bench compare` name a cell.
pub fn subject(id: &CellId) -> String {
    format!("{}/{}/{}", id.scenario, id.variant, load_label(id.rate, id.concurrency))
}

/// `1000 rps` for open loop, `c=32` for closed loop.
pub fn load_label(rate: Option<f64>, concurrency: Option<u32>) -> String {
    match (rate, concurrency) {
        (Some(r), _) => format!("{} rps", trim_float(r)),
        (None, Some(c)) => format!("c={c}"),
        (None, None) => "unspecified load".to_owned(),
    }
}

/// `1000` rather than `1000.0`, `2.5` stays `2.5`.
pub fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// What was held constant across the variants of a group: a [`CellId`]
/// without its variant.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupKey {
    pub substrate: String,
    pub scenario: String,
    pub protocol: String,
    pub mode: String,
    pub rate: Option<f64>,
    pub concurrency: Option<u32>,
}

impl From<&CellId> for GroupKey {
    fn from(id: &CellId) -> Self {
        GroupKey {
            substrate: id.substrate.clone(),
            scenario: id.scenario.clone(),
            protocol: id.protocol.clone(),
            mode: id.mode.clone(),
            rate: id.rate,
            concurrency: id.concurrency,
        }
    }
}

impl GroupKey {
    fn of(run: &Run) -> Self {
        GroupKey::from(&CellId::of(run))
    }

    /// Open loop before closed loop, then by rising load.
    fn load_cmp(&self, other: &Self) -> Ordering {
        let rank = |k: &Self| (k.rate.is_none(), k.rate.unwrap_or(0.0), k.concurrency.unwrap_or(0));
        let (a, b) = (rank(self), rank(other));
        a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2))
    }

    /// Human description of the load: `http1, open loop, 1000 rps`.
    pub fn describe(&self) -> String {
        let mode = match self.mode.as_str() {
            "open" => "open loop",
            "closed" => "closed loop",
            other => other,
        };
        format!("{}, {mode}, {}", self.protocol, load_label(self.rate, self.concurrency))
    }
}

/// Variant display order: baseline, then weft variants, then peers, each in
/// the order they first appear in the record.
fn variant_class(variant: &str) -> u8 {
    if variant == BASELINE {
        0
    } else if variant == "weft" || variant.starts_with("weft-") || variant.starts_with("weft@") {
        1
    } else {
        2
    }
}

/// Every variant in the record, in display order (baseline, weft, peers).
pub fn variants_in_order(report: &Report) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for r in &report.runs {
        if !seen.contains(&r.variant) {
            seen.push(r.variant.clone());
        }
    }
    // Stable sort keeps first-appearance order inside each class.
    seen.sort_by_key(|v| variant_class(v));
    seen
}

/// Median of the values; the mean of the middle two for an even count.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn median_of(runs: &[&Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(|r| f(r)).collect();
    median(&mut v)
}

fn median_percentiles(runs: &[&Run], f: impl Fn(&Run) -> &Percentiles) -> Percentiles {
    Percentiles {
        p50: median_of(runs, |r| f(r).p50),
        p90: median_of(runs, |r| f(r).p90),
        p99: median_of(runs, |r| f(r).p99),
        p999: median_of(runs, |r| f(r).p999),
        p9999: median_of(runs, |r| f(r).p9999),
        max: median_of(runs, |r| f(r).max),
        mean: median_of(runs, |r| f(r).mean),
    }
}

/// Summarise a report into cells (what [`Comparison::of`] does first): groups in scenario order (first
/// appearance), loads rising, variants baseline first, weft, then peers.
fn cells(report: &Report) -> Vec<Cell> {
    // Collect (group, variant) -> run indices, preserving first appearance.
    let mut buckets: Vec<(GroupKey, String, Vec<usize>)> = Vec::new();
    for (i, run) in report.runs.iter().enumerate() {
        let key = GroupKey::of(run);
        match buckets.iter_mut().find(|(k, v, _)| *k == key && *v == run.variant) {
            Some((_, _, idx)) => idx.push(i),
            None => buckets.push((key, run.variant.clone(), vec![i])),
        }
    }
    let mut out: Vec<Cell> = buckets
        .into_iter()
        .map(|(key, variant, idx)| summarise(report, key, variant, idx))
        .collect();

    let scenario_rank = |s: &str| {
        report.runs.iter().position(|r| r.scenario == s).unwrap_or(usize::MAX)
    };
    let substrate_rank = |s: &str| {
        report.runs.iter().position(|r| r.substrate == s).unwrap_or(usize::MAX)
    };
    let order = variants_in_order(report);
    let variant_rank = |v: &str| order.iter().position(|o| o == v).unwrap_or(usize::MAX);
    out.sort_by(|a, b| {
        let (ga, gb) = (a.group(), b.group());
        substrate_rank(&a.substrate)
            .cmp(&substrate_rank(&b.substrate))
            .then(scenario_rank(&a.scenario).cmp(&scenario_rank(&b.scenario)))
            .then(a.protocol.cmp(&b.protocol))
            .then(ga.load_cmp(&gb))
            .then(variant_rank(&a.variant).cmp(&variant_rank(&b.variant)))
    });

    // Added latency needs the whole group summarised first.
    let snapshot = out.clone();
    for cell in &mut out {
        if cell.is_baseline() {
            continue;
        }
        let key = cell.group();
        let Some(base) = snapshot.iter().find(|c| c.is_baseline() && c.group() == key) else {
            continue;
        };
        let runs_of = |c: &Cell| c.run_indices.iter().map(|&i| &report.runs[i]).collect::<Vec<&Run>>();
        cell.added = Some(AddedVerdicts::of(&runs_of(base), &runs_of(cell)));
        let (l, b) = (&cell.latency_us, &base.latency_us);
        cell.added_p50_us = Some(l.p50 - b.p50);
        cell.added_p99_us = Some(l.p99 - b.p99);
        cell.added_p999_us = Some(l.p999 - b.p999);
        cell.ratio_p50 = ratio(l.p50, b.p50);
        cell.ratio_p99 = ratio(l.p99, b.p99);
    }
    out
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn summarise(report: &Report, key: GroupKey, variant: String, idx: Vec<usize>) -> Cell {
    let runs: Vec<&Run> = idx.iter().map(|&i| &report.runs[i]).collect();
    let cpu: Vec<f64> = runs.iter().filter_map(|r| r.proxy_cpu_per_krps()).collect();
    Cell {
        substrate: key.substrate,
        scenario: key.scenario,
        protocol: key.protocol,
        mode: key.mode,
        rate: key.rate,
        concurrency: key.concurrency,
        variant,
        repetitions: runs.len(),
        latency_us: median_percentiles(&runs, |r| &r.load.latency_us),
        service_time_us: median_percentiles(&runs, |r| &r.load.service_time_us),
        achieved_rps: median_of(&runs, |r| r.load.achieved_rps),
        requests: runs.iter().map(|r| r.load.requests).sum(),
        errors: runs.iter().map(|r| r.load.errors).sum(),
        late_sends: runs.iter().map(|r| r.load.late_sends).sum(),
        proxy_rss_peak: runs.iter().filter_map(|r| r.proxy_rss_peak()).max(),
        proxy_rss_anon_peak: runs.iter().filter_map(|r| r.proxy_rss_anon_peak()).max(),
        control_rss_peak: runs.iter().filter_map(|r| r.control_rss_peak()).max(),
        proxy_cpu_per_krps: if cpu.is_empty() { None } else { Some(median(&mut cpu.clone())) },
        added_p50_us: None,
        added_p99_us: None,
        added_p999_us: None,
        ratio_p50: None,
        ratio_p99: None,
        proxy_counts: ProxyTally::of(runs.iter().copied()),
        spread: Spreads::of(&runs),
        added: None,
        run_indices: idx,
    }
}

/// How one cell changed against the same cell of a stored record.
/// Percentages are `(current - stored) / stored * 100`: positive is worse.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    pub id: CellId,
    pub p50_us: Change,
    pub p99_us: Change,
    pub proxy_rss_bytes: Option<Change>,
    pub proxy_cpu_per_krps: Option<Change>,
}

/// A stored and a current value of one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    pub stored: f64,
    pub current: f64,
}

impl Change {
    /// Percent change, positive when the current value is larger; `None`
    /// when the stored value is zero (no meaningful relative change).
    pub fn pct(&self) -> Option<f64> {
        (self.stored > 0.0).then(|| (self.current - self.stored) / self.stored * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn labels() {
        assert_eq!(load_label(Some(1000.0), None), "1000 rps");
        assert_eq!(load_label(Some(2.5), None), "2.5 rps");
        assert_eq!(load_label(None, Some(32)), "c=32");
    }
}
