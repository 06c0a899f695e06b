//! Gate policy files (`ci/gates.toml`): parsing and validation.
//!
//! The file is walked by hand over toml's spanned document rather than
//! deserialised with serde, so that every problem in it can be reported at
//! once, each as `file:line: what is wrong`.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// What a rule measures. Every metric is "lower is better" and is checked
/// against the rule's `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// p50 minus the same group's baseline p50, ms.
    AddedP50Ms,
    AddedP99Ms,
    AddedP999Ms,
    /// p50 divided by the baseline's p50.
    RatioP50,
    RatioP99,
    /// Absolute corrected latency, ms.
    P50Ms,
    P99Ms,
    P999Ms,
    /// Largest proxy peak RSS over repetitions, MiB.
    ProxyRssMib,
    /// Proxy cores busy per 1000 achieved rps.
    ProxyCpuPerKrps,
    /// Failed / completed requests, a fraction (0.001 = 0.1 %).
    ErrorRate,
    /// Late sends / completed requests, a fraction.
    LateSendRate,
    /// Open loop: how far achieved rps fell short of the target rate, percent.
    ThroughputShortfallPct,
    /// Change against a stored baseline record, percent (positive = worse).
    RegressionP50Pct,
    RegressionP99Pct,
    RegressionRssPct,
    RegressionCpuPct,
    /// Conformance tests that failed, per (substrate, variant) column.
    ConformanceFailures,
    /// Conformance tests that were skipped (not run), per column.
    ConformanceSkipped,
    /// Soak runs: the largest RSS or open-fd spread (max/min of window
    /// medians after settling) of any proxy or control plane, percent.
    SoakGrowthPct,
    /// Fault runs: failed idempotent requests (ones the mesh could retry).
    FaultFailedIdempotent,
}

impl Metric {
    pub const ALL: [Metric; 21] = [
        Metric::AddedP50Ms,
        Metric::AddedP99Ms,
        Metric::AddedP999Ms,
        Metric::RatioP50,
        Metric::RatioP99,
        Metric::P50Ms,
        Metric::P99Ms,
        Metric::P999Ms,
        Metric::ProxyRssMib,
        Metric::ProxyCpuPerKrps,
        Metric::ErrorRate,
        Metric::LateSendRate,
        Metric::ThroughputShortfallPct,
        Metric::RegressionP50Pct,
        Metric::RegressionP99Pct,
        Metric::RegressionRssPct,
        Metric::RegressionCpuPct,
        Metric::ConformanceFailures,
        Metric::ConformanceSkipped,
        Metric::SoakGrowthPct,
        Metric::FaultFailedIdempotent,
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Metric::AddedP50Ms => "added_p50_ms",
            Metric::AddedP99Ms => "added_p99_ms",
            Metric::AddedP999Ms => "added_p999_ms",
            Metric::RatioP50 => "ratio_p50",
            Metric::RatioP99 => "ratio_p99",
            Metric::P50Ms => "p50_ms",
            Metric::P99Ms => "p99_ms",
            Metric::P999Ms => "p999_ms",
            Metric::ProxyRssMib => "proxy_rss_mib",
            Metric::ProxyCpuPerKrps => "proxy_cpu_per_krps",
            Metric::ErrorRate => "error_rate",
            Metric::LateSendRate => "late_send_rate",
            Metric::ThroughputShortfallPct => "throughput_shortfall_pct",
            Metric::RegressionP50Pct => "regression_p50_pct",
            Metric::RegressionP99Pct => "regression_p99_pct",
            Metric::RegressionRssPct => "regression_rss_pct",
            Metric::RegressionCpuPct => "regression_cpu_pct",
            Metric::ConformanceFailures => "conformance_failures",
            Metric::ConformanceSkipped => "conformance_skipped",
            Metric::SoakGrowthPct => "soak_growth_pct",
            Metric::FaultFailedIdempotent => "fault_failed_idempotent",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the metric compares against a stored baseline record.
    pub fn needs_stored_baseline(self) -> bool {
        matches!(
            self,
            Metric::RegressionP50Pct | Metric::RegressionP99Pct | Metric::RegressionRssPct | Metric::RegressionCpuPct
        )
    }

    /// Whether the metric counts conformance results rather than load cells.
    pub fn is_conformance(self) -> bool {
        matches!(self, Metric::ConformanceFailures | Metric::ConformanceSkipped)
    }

    /// Whether the metric reads the soak or fault sections rather than load cells.
    pub fn is_hardening(self) -> bool {
        matches!(self, Metric::SoakGrowthPct | Metric::FaultFailedIdempotent)
    }

    /// Format a value of this metric with its unit.
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::AddedP50Ms | Metric::AddedP99Ms | Metric::AddedP999Ms => format!("{v:+.3} ms"),
            Metric::P50Ms | Metric::P99Ms | Metric::P999Ms => format!("{v:.3} ms"),
            Metric::RatioP50 | Metric::RatioP99 => format!("{v:.2}x"),
            Metric::ProxyRssMib => format!("{v:.1} MiB"),
            Metric::ProxyCpuPerKrps => format!("{v:.3} cores/krps"),
            Metric::ErrorRate | Metric::LateSendRate => format!("{:.3}%", v * 100.0),
            Metric::ThroughputShortfallPct => format!("{v:.1}%"),
            Metric::RegressionP50Pct | Metric::RegressionP99Pct | Metric::RegressionRssPct | Metric::RegressionCpuPct => {
                format!("{v:+.1}%")
            }
            Metric::ConformanceFailures | Metric::ConformanceSkipped | Metric::FaultFailedIdempotent => {
                format!("{v:.0}")
            }
            Metric::SoakGrowthPct => format!("{v:+.1}%"),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[[rule]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub metric: Metric,
    /// Largest allowed value (inclusive).
    pub max: f64,
    /// Filters; `None` means "any".
    pub scenarios: Option<Vec<String>>,
    pub variants: Option<Vec<String>>,
    pub protocols: Option<Vec<String>>,
    /// `open` or `closed`.
    pub modes: Option<Vec<String>>,
    pub rates: Option<Vec<f64>>,
    pub concurrencies: Option<Vec<u32>>,
    /// Line of the rule's `[[rule]]` header, for messages.
    pub line: usize,
}

/// A whole gate policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Where the policy came from (file path), for messages.
    pub origin: String,
    pub rules: Vec<Rule>,
}

/// One thing wrong in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// Everything wrong with a policy file; Display prints one
/// `file:line: what is wrong` per problem.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: cannot read: {source}")]
    Io { origin: String, source: std::io::Error },
    #[error("{}", render_problems(origin, problems))]
    Invalid { origin: String, problems: Vec<Problem> },
}

impl PolicyError {
    /// The individual problems (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Io { .. } => &[],
            PolicyError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{origin}:{}: {}", p.line, p.message)).collect::<Vec<_>>().join("\n")
}

const RULE_KEYS: [&str; 10] =
    ["name", "metric", "max", "scenarios", "variants", "protocols", "modes", "rates", "concurrencies", "description"];

impl Policy {
    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io { origin: origin.clone(), source })?;
        Policy::parse(&text, &origin)
    }

    /// Validate policy text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let mut p = Parser { text, problems: Vec::new() };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // After a syntax error the recovered document is a guess; report
            // only what the parser itself found.
            // Recovery often trips again on the rest of a bad line; one
            // message per line is what a person needs.
            let mut seen = Vec::new();
            for e in syntax {
                let span = e.span().unwrap_or(0..0);
                let line = p.line_of(span.start);
                if !seen.contains(&line) {
                    seen.push(line);
                    p.problem(span, format!("invalid TOML: {}", e.message()));
                }
            }
            return Err(p.into_error(origin));
        }
        let mut rules = Vec::new();
        for (key, value) in doc.get_ref().iter() {
            if key.get_ref() != "rule" {
                p.problem(key.span(), format!("unknown top-level key `{}`; a policy holds only [[rule]] tables", key.get_ref()));
                continue;
            }
            let Some(array) = value.get_ref().as_array() else {
                p.problem(value.span(), "`rule` must be an array of tables, written [[rule]]".to_owned());
                continue;
            };
            for item in array.iter() {
                match item.get_ref().as_table() {
                    Some(t) => {
                        if let Some(rule) = p.rule(t, item.span()) {
                            rules.push(rule);
                        }
                    }
                    None => p.problem(item.span(), "each `rule` entry must be a table".to_owned()),
                }
            }
        }
        if rules.is_empty() && p.problems.is_empty() {
            p.problem(0..0, "no [[rule]] entries: a gate that checks nothing would pass every run".to_owned());
        }
        if p.problems.is_empty() {
            Ok(Policy { origin: origin.to_owned(), rules })
        } else {
            Err(p.into_error(origin))
        }
    }
}

struct Parser<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Parser<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn problem(&mut self, span: Range<usize>, message: String) {
        let line = self.line_of(span.start);
        self.problems.push(Problem { line, message });
    }

    fn into_error(mut self, origin: &str) -> PolicyError {
        self.problems.sort_by_key(|p| p.line);
        PolicyError::Invalid { origin: origin.to_owned(), problems: self.problems }
    }

    fn rule(&mut self, t: &DeTable<'_>, span: Range<usize>) -> Option<Rule> {
        let before = self.problems.len();
        let mut name = None;
        let mut metric = None;
        let mut max = None;
        let mut rule = Rule {
            name: String::new(),
            metric: Metric::P50Ms,
            max: 0.0,
            scenarios: None,
            variants: None,
            protocols: None,
            modes: None,
            rates: None,
            concurrencies: None,
            line: self.line_of(span.start),
        };
        for (key, value) in t.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "name" | "description" => {
                    let s = self.string(value, k);
                    if k == "name" {
                        name = s;
                    }
                }
                "metric" => {
                    if let Some(s) = self.string(value, k) {
                        match Metric::from_name(&s) {
                            Some(m) => metric = Some(m),
                            None => {
                                let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                                self.problem(value.span(), format!("unknown metric `{s}`; known: {}", known.join(", ")));
                            }
                        }
                    }
                }
                "max" => max = self.number(value, k),
                "scenarios" => rule.scenarios = self.strings(value, k),
                "variants" => rule.variants = self.strings(value, k),
                "protocols" => rule.protocols = self.strings(value, k),
                "modes" => {
                    rule.modes = self.strings(value, k);
                    for m in rule.modes.iter().flatten() {
                        if m != "open" && m != "closed" {
                            self.problem(value.span(), format!("unknown mode `{m}`; modes are `open` and `closed`"));
                        }
                    }
                }
                "rates" => {
                    rule.rates = self.array(value, k).map(|items| items.iter().filter_map(|v| self.number(v, k)).collect())
                }
                "concurrencies" => {
                    rule.concurrencies = self.array(value, k).map(|items| {
                        items
                            .iter()
                            .filter_map(|v| match self.number(v, k) {
                                Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => Some(n as u32),
                                Some(n) => {
                                    self.problem(v.span(), format!("`concurrencies` entries must be positive integers, got {n}"));
                                    None
                                }
                                None => None,
                            })
                            .collect()
                    })
                }
                other => self.problem(
                    key.span(),
                    format!("unknown key `{other}` in [[rule]]; allowed: {}", RULE_KEYS.join(", ")),
                ),
            }
        }
        let rule_desc = name.as_deref().map(|n| format!("rule `{n}`")).unwrap_or_else(|| "[[rule]]".to_owned());
        if name.is_none() && !t.contains_key("name") {
            self.problem(span.clone(), "[[rule]] is missing `name`".to_owned());
        }
        if metric.is_none() && !t.contains_key("metric") {
            self.problem(span.clone(), format!("{rule_desc} is missing `metric`"));
        }
        if max.is_none() && !t.contains_key("max") {
            self.problem(span.clone(), format!("{rule_desc} is missing `max` (the largest allowed value)"));
        }
        if metric.is_some_and(Metric::is_conformance) {
            let load_only = [
                ("scenarios", rule.scenarios.is_some()),
                ("protocols", rule.protocols.is_some()),
                ("modes", rule.modes.is_some()),
                ("rates", rule.rates.is_some()),
                ("concurrencies", rule.concurrencies.is_some()),
            ];
            for (key, set) in load_only {
                if set {
                    let m = metric.expect("checked");
                    let at = t.get(key).map_or(span.clone(), |v| v.span());
                    self.problem(
                        at,
                        format!("{rule_desc}: `{key}` does not apply to metric `{m}`; only `variants` selects conformance results"),
                    );
                }
            }
        }
        if metric.is_some_and(Metric::is_hardening) {
            for (key, set) in [
                ("protocols", rule.protocols.is_some()),
                ("modes", rule.modes.is_some()),
                ("rates", rule.rates.is_some()),
                ("concurrencies", rule.concurrencies.is_some()),
            ] {
                if set {
                    let m = metric.expect("checked");
                    let at = t.get(key).map_or(span.clone(), |v| v.span());
                    self.problem(
                        at,
                        format!("{rule_desc}: `{key}` does not apply to metric `{m}`; only `scenarios` and `variants` select soak and fault runs"),
                    );
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        rule.name = name?;
        rule.metric = metric?;
        rule.max = max?;
        Some(rule)
    }

    fn string(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<String> {
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.problem(v.span(), format!("`{key}` must be a string, got {}", v.get_ref().type_str()));
                None
            }
        }
    }

    fn number(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<f64> {
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            other => {
                self.problem(v.span(), format!("`{key}` must be a number, got {}", other.type_str()));
                return None;
            }
        };
        match parsed {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.problem(v.span(), format!("`{key}` must be a finite number"));
                None
            }
        }
    }

    fn array<'a, 'i>(&mut self, v: &'a Spanned<DeValue<'i>>, key: &str) -> Option<&'a [Spanned<DeValue<'i>>]> {
        match v.get_ref().as_array() {
            Some(a) if a.is_empty() => {
                self.problem(v.span(), format!("`{key}` is empty, so the rule could match nothing; omit it to match any"));
                None
            }
            Some(a) => Some(a),
            None => {
                self.problem(v.span(), format!("`{key}` must be an array, got {}", v.get_ref().type_str()));
                None
            }
        }
    }

    fn strings(&mut self, v: &Spanned<DeValue<'_>>, key: &str) -> Option<Vec<String>> {
        let items = self.array(v, key)?;
        Some(items.iter().filter_map(|i| self.string(i, key)).collect())
    }
}
