//! Release gates: a policy of rules (`ci/gates.toml`) checked against a
//! record, optionally against a stored baseline record too; and the
//! same-run gate ([`same_run`]), which judges two builds measured
//! alternately in one record against their own noise.
//!
//! A gate must never pass by checking nothing: a rule that matches no cell
//! is a failing row, rules that need a stored baseline are reported as
//! skipped (not passed) when none is given, and a gate whose every row was
//! skipped fails.

mod policy;
pub mod same_run;

pub use policy::{Metric, Policy, PolicyError, Problem, Rule};

use crate::compare::{self, Cell, Comparison, Regression};

const MIB: f64 = 1024.0 * 1024.0;

/// One checked (or skipped) rule × cell.
#[derive(Clone, Debug, PartialEq)]
pub struct GateRow {
    pub rule: String,
    /// `scenario/variant/load`, or a description of the rule's filters when
    /// it matched nothing.
    pub subject: String,
    pub measured: String,
    pub allowed: String,
    pub passed: bool,
    /// The row could not be checked (e.g. no stored baseline given); it is
    /// neither a pass nor a failure.
    pub skipped: bool,
}

/// The result of a gate.
#[derive(Clone, Debug, PartialEq)]
pub struct GateOutcome {
    pub rows: Vec<GateRow>,
    /// True when no row failed and at least one row was actually checked.
    pub passed: bool,
}

impl GateOutcome {
    fn new(rows: Vec<GateRow>) -> Self {
        let failed = rows.iter().any(|r| !r.passed && !r.skipped);
        let checked = rows.iter().any(|r| !r.skipped);
        GateOutcome { passed: checked && !failed, rows }
    }

    pub fn failed_rows(&self) -> impl Iterator<Item = &GateRow> {
        self.rows.iter().filter(|r| !r.passed && !r.skipped)
    }

    /// A Markdown summary line and table, failures first so they are seen.
    pub fn markdown(&self) -> String {
        let failed = self.failed_rows().count();
        let skipped = self.rows.iter().filter(|r| r.skipped).count();
        let passed = self.rows.iter().filter(|r| r.passed).count();
        let mut out = String::new();
        if self.passed {
            out.push_str(&format!("**Gate PASSED**: {passed} checks passed"));
        } else if failed == 0 {
            out.push_str("**Gate FAILED**: nothing was checked");
        } else {
            out.push_str(&format!("**Gate FAILED**: {failed} of {} checks failed", failed + passed));
        }
        if skipped > 0 {
            out.push_str(&format!(", {skipped} skipped"));
        }
        out.push_str(".\n\n| result | rule | subject | measured | allowed |\n|---|---|---|---|---|\n");
        let mut rows: Vec<&GateRow> = self.rows.iter().collect();
        rows.sort_by_key(|r| if r.skipped { 1 } else if r.passed { 2 } else { 0 });
        for r in rows {
            let result = if r.skipped {
                "skipped"
            } else if r.passed {
                "pass"
            } else {
                "**FAIL**"
            };
            out.push_str(&format!(
                "| {result} | {} | {} | {} | {} |\n",
                cell_text(&r.rule),
                cell_text(&r.subject),
                cell_text(&r.measured),
                cell_text(&r.allowed)
            ));
        }
        out
    }
}

/// Keep a value from breaking a Markdown table row.
fn cell_text(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Check every rule of `policy` against a report's comparison (and a stored
/// baseline's, for regression rules).
pub fn evaluate(policy: &Policy, current: &Comparison<'_>, stored_baseline: Option<&Comparison<'_>>) -> GateOutcome {
    let cells = &current.cells;
    let regressions = stored_baseline.map(|s| current.versus(s));
    let mut rows = Vec::new();
    for rule in &policy.rules {
        let allowed = format!("≤ {}", rule.metric.format(rule.max));
        let row = |subject: String, measured: String, passed: bool, skipped: bool| GateRow {
            rule: rule.name.clone(),
            subject,
            measured,
            allowed: allowed.clone(),
            passed,
            skipped,
        };
        if rule.metric.is_hardening() {
            rows.extend(
                hardening_rows(rule, current.report).into_iter().map(|(subject, measured, passed)| row(subject, measured, passed, false)),
            );
            continue;
        }
        if rule.metric.is_conformance() {
            rows.extend(conformance_rows(rule, current).into_iter().map(|(subject, measured, passed)| {
                row(subject, measured, passed, false)
            }));
            continue;
        }
        let matched: Vec<&Cell> = cells.iter().filter(|c| matches(rule, c) && applies(rule.metric, c)).collect();
        if matched.is_empty() {
            rows.push(row(filters(rule), "matched nothing".to_owned(), false, false));
            continue;
        }
        if rule.metric.needs_stored_baseline() {
            let Some(regs) = regressions.as_ref() else {
                rows.push(row(filters(rule), "skipped (no baseline given)".to_owned(), false, true));
                continue;
            };
            let before = rows.len();
            let mut compared = 0;
            for c in &matched {
                let id = c.id();
                let found = regs.iter().find(|r| r.id == id);
                match found.and_then(|r| regression_value(rule.metric, r)) {
                    Some(v) => {
                        compared += 1;
                        rows.push(row(c.subject(), rule.metric.format(v), v <= rule.max, false));
                    }
                    None => {
                        let why = if found.is_none() { "not in stored baseline" } else { "not measured in both records" };
                        rows.push(row(c.subject(), format!("skipped ({why})"), false, true));
                    }
                }
            }
            if compared == 0 {
                rows.truncate(before);
                rows.push(row(filters(rule), "matched nothing in the stored baseline".to_owned(), false, false));
            }
            continue;
        }
        for c in matched {
            match value(rule.metric, c) {
                Ok(v) => rows.push(row(c.subject(), rule.metric.format(v), v <= rule.max, false)),
                Err(why) => rows.push(row(c.subject(), why.to_owned(), false, false)),
            }
        }
    }
    GateOutcome::new(rows)
}

/// A soak or fault rule's rows, one per run it selects: (subject, measured,
/// passed). Selecting none fails; so does a soak whose spread could not be
/// computed.
fn hardening_rows(rule: &Rule, report: &crate::Report) -> Vec<(String, String, bool)> {
    let within = |scenario: &str, variant: &str| {
        rule.scenarios.as_ref().is_none_or(|l| l.iter().any(|x| x == scenario))
            && rule.variants.as_ref().is_none_or(|l| l.iter().any(|x| x == variant))
    };
    let mut out = Vec::new();
    match rule.metric {
        Metric::SoakGrowthPct => {
            for s in report.hardening.soak.iter().filter(|s| within(&s.scenario, &s.variant)) {
                let subject = format!("{}/{}/soak", s.scenario, s.variant);
                let spreads: Vec<Option<f64>> =
                    s.processes.iter().filter(|p| p.judged()).flat_map(|p| [p.rss_spread, p.fds_spread]).collect();
                match spreads.iter().copied().collect::<Option<Vec<f64>>>() {
                    Some(v) if !v.is_empty() => {
                        let worst = (v.iter().copied().fold(1.0, f64::max) - 1.0) * 100.0;
                        out.push((subject, rule.metric.format(worst), worst <= rule.max));
                    }
                    _ => out.push((subject, "no spread: too few windows after settling".to_owned(), false)),
                }
            }
        }
        Metric::FaultFailedIdempotent => {
            for f in report.hardening.faults.iter().filter(|f| within(&f.scenario, &f.variant)) {
                let v = f.idempotent_errors as f64;
                out.push((format!("{}/{}/{}", f.scenario, f.variant, f.fault), rule.metric.format(v), v <= rule.max));
            }
        }
        _ => unreachable!("only hardening metrics"),
    }
    if out.is_empty() {
        out.push((filters(rule), "matched nothing (no such soak or fault run in this record)".to_owned(), false));
    }
    out
}

/// A conformance rule's rows, one per (substrate, variant) column it selects:
/// (subject, measured, passed). A record without conformance results, a
/// rule selecting no column, or a column where no test passed or failed
/// (all skipped or not applicable) fails: nothing was shown to conform.
fn conformance_rows(rule: &Rule, current: &Comparison<'_>) -> Vec<(String, String, bool)> {
    let m = &current.conformance;
    if m.is_empty() {
        return vec![(
            "conformance".to_owned(),
            "no conformance results in this record (run `bench conformance` to make some)".to_owned(),
            false,
        )];
    }
    let within = |v: &str| rule.variants.as_ref().is_none_or(|l| l.iter().any(|x| x == v));
    let mut out = Vec::new();
    for (i, column) in m.columns.iter().enumerate().filter(|(_, c)| within(&c.variant)) {
        let subject = format!("conformance/{}/{}", column.substrate, column.variant);
        let counts = m.counts(i);
        if counts.checked() == 0 {
            let measured = format!("no test passed or failed ({})", counts.describe());
            out.push((subject, measured, false));
            continue;
        }
        let status = if rule.metric == Metric::ConformanceFailures { crate::Status::Fail } else { crate::Status::Skipped };
        let names: Vec<&str> = m
            .with_status(status)
            .into_iter()
            .filter(|(c, _)| *c == column)
            .map(|(_, t)| t.name.as_str())
            .collect();
        let v = names.len() as f64;
        let mut measured = format!("{} ({})", rule.metric.format(v), counts.describe());
        if !names.is_empty() {
            measured = format!("{measured}: {}", names.join(", "));
        }
        out.push((subject, measured, v <= rule.max));
    }
    if out.is_empty() {
        let variants: Vec<String> = m.columns.iter().map(|c| format!("{}/{}", c.substrate, c.variant)).collect();
        out.push((filters(rule), format!("matched nothing (conformance columns: {})", variants.join(", ")), false));
    }
    out
}

fn matches(rule: &Rule, c: &Cell) -> bool {
    let within = |list: &Option<Vec<String>>, v: &str| list.as_ref().is_none_or(|l| l.iter().any(|x| x == v));
    within(&rule.scenarios, &c.scenario)
        && within(&rule.variants, &c.variant)
        && within(&rule.protocols, &c.protocol)
        && within(&rule.modes, &c.mode)
        && rule.rates.as_ref().is_none_or(|rs| {
            c.rate.is_some_and(|r| rs.iter().any(|x| (x - r).abs() <= 1e-9 * r.abs().max(1.0)))
        })
        && rule.concurrencies.as_ref().is_none_or(|cs| c.concurrency.is_some_and(|n| cs.contains(&n)))
}

/// Whether a metric means anything for a cell. The baseline adds nothing to
/// itself and has no proxy; a closed-loop cell has no target rate.
fn applies(metric: Metric, c: &Cell) -> bool {
    match metric {
        Metric::AddedP50Ms
        | Metric::AddedP99Ms
        | Metric::AddedP999Ms
        | Metric::RatioP50
        | Metric::RatioP99
        | Metric::ProxyRssMib
        | Metric::ProxyCpuPerKrps
        | Metric::RegressionRssPct
        | Metric::RegressionCpuPct => !c.is_baseline(),
        Metric::ThroughputShortfallPct => c.rate.is_some(),
        _ => true,
    }
}

fn value(metric: Metric, c: &Cell) -> Result<f64, &'static str> {
    const NO_BASE: &str = "no baseline variant in this group";
    const NO_PROXY: &str = "no proxy resources sampled";
    let ms = |us: f64| us / 1000.0;
    match metric {
        Metric::AddedP50Ms => c.added_p50_us.map(ms).ok_or(NO_BASE),
        Metric::AddedP99Ms => c.added_p99_us.map(ms).ok_or(NO_BASE),
        Metric::AddedP999Ms => c.added_p999_us.map(ms).ok_or(NO_BASE),
        Metric::RatioP50 => c.ratio_p50.ok_or(NO_BASE),
        Metric::RatioP99 => c.ratio_p99.ok_or(NO_BASE),
        Metric::P50Ms => Ok(ms(c.latency_us.p50)),
        Metric::P99Ms => Ok(ms(c.latency_us.p99)),
        Metric::P999Ms => Ok(ms(c.latency_us.p999)),
        Metric::ProxyRssMib => c.proxy_rss_peak.map(|b| b as f64 / MIB).ok_or(NO_PROXY),
        Metric::ProxyCpuPerKrps => c.proxy_cpu_per_krps.ok_or(NO_PROXY),
        Metric::ErrorRate => {
            if c.requests == 0 {
                Err("no requests completed")
            } else {
                Ok(c.error_rate())
            }
        }
        Metric::LateSendRate => {
            if c.requests == 0 {
                Err("no requests completed")
            } else {
                Ok(c.late_sends as f64 / c.requests as f64)
            }
        }
        Metric::ThroughputShortfallPct => match c.rate {
            Some(r) if r > 0.0 => Ok(((r - c.achieved_rps) / r * 100.0).max(0.0)),
            _ => Err("no target rate"),
        },
        Metric::RegressionP50Pct | Metric::RegressionP99Pct | Metric::RegressionRssPct | Metric::RegressionCpuPct => {
            Err("needs a stored baseline")
        }
        Metric::ConformanceFailures | Metric::ConformanceSkipped => Err("counts conformance results, not load cells"),
        Metric::SoakGrowthPct | Metric::FaultFailedIdempotent => Err("reads soak and fault runs, not load cells"),
    }
}

fn regression_value(metric: Metric, r: &Regression) -> Option<f64> {
    match metric {
        Metric::RegressionP50Pct => r.p50_us.pct(),
        Metric::RegressionP99Pct => r.p99_us.pct(),
        Metric::RegressionRssPct => r.proxy_rss_bytes?.pct(),
        Metric::RegressionCpuPct => r.proxy_cpu_per_krps?.pct(),
        _ => None,
    }
}

/// Describe what a rule selects, for rows that are about the rule as a whole.
fn filters(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &rule.scenarios {
        parts.push(format!("scenarios {}", s.join(",")));
    }
    if let Some(v) = &rule.variants {
        parts.push(format!("variants {}", v.join(",")));
    }
    if let Some(p) = &rule.protocols {
        parts.push(format!("protocols {}", p.join(",")));
    }
    if let Some(m) = &rule.modes {
        parts.push(format!("modes {}", m.join(",")));
    }
    if let Some(r) = &rule.rates {
        parts.push(format!("rates {}", r.iter().map(|x| compare::trim_float(*x)).collect::<Vec<_>>().join(",")));
    }
    if let Some(c) = &rule.concurrencies {
        parts.push(format!("concurrencies {}", c.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")));
    }
    if parts.is_empty() {
        "all cells".to_owned()
    } else {
        parts.join("; ")
    }
}
