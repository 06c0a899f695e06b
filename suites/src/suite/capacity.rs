//! `mode = "capacity"`: the settings of a capacity-at-an-SLO search and
//! their validation (the search itself is `crate::capacity`).
//!
//! ```toml
//! mode = "capacity"
//! slo = { percentile = 99.0, max = "5ms" }   # required
//! start_rate = 500          # first probe, requests/s
//! max_rate = 100000         # never probe above this
//! ramp_factor = 2.0         # each ramp probe is this times the last one that passed
//! bisect_tolerance = 0.05   # stop bisecting when the bracket is within 5 %
//! validation = true         # probe the found rate once more before reporting it
//! duration = "3s"           # each probe's measured window (and `warmup` before it)
//! ```

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;

/// A validated capacity search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityShape {
    /// The SLO's percentile (0 < p < 100) of the corrected latency ...
    pub percentile: f64,
    /// ... must be at most this, with 0 errors.
    pub slo: Duration,
    pub start_rate: f64,
    pub max_rate: f64,
    pub ramp_factor: f64,
    /// Relative width of the last bisection bracket (0.05: 5 %).
    pub tolerance: f64,
    /// Probe the found rate once more (and step down by `tolerance` when
    /// it fails, at most [`CapacityShape::VALIDATION_ATTEMPTS`] times).
    pub validation: bool,
}

impl CapacityShape {
    pub const VALIDATION_ATTEMPTS: u32 = 3;
    /// Probes a search runs again, without counting them, because they
    /// failed while the hypervisor took too much of the machine
    /// (`crate::capacity`'s search).
    pub const DISTURBED_REPROBES: u32 = 6;
    pub const DEFAULT_START_RATE: f64 = 500.0;
    pub const DEFAULT_MAX_RATE: f64 = 100_000.0;
    pub const DEFAULT_RAMP_FACTOR: f64 = 2.0;
    pub const DEFAULT_TOLERANCE: f64 = 0.05;

    /// The most probes a search takes when its probes do not contradict
    /// each other: the whole ramp, a bisection of one ramp step down to the
    /// tolerance, every validation attempt, and a second probe confirming
    /// each failure that can occur on the way (the ramp's last step, every
    /// bisection step, every validation attempt). Where a failure's
    /// confirmation passes, a third probe decides, beyond this count
    /// (`crate::capacity`'s search); so do the disturbed probes run again,
    /// at most [`CapacityShape::DISTURBED_REPROBES`]. For `bench plan`'s
    /// estimate.
    pub fn max_probes(&self) -> u32 {
        // Less a hair: 500 x 2^7 is 64000 exactly, not one more step.
        let ramp = ((self.max_rate / self.start_rate).ln() / self.ramp_factor.ln() - 1e-9).ceil().max(0.0) as u32 + 1;
        let bisect = ((self.ramp_factor - 1.0) / self.tolerance).log2().ceil().max(0.0) as u32;
        let validate = if self.validation { Self::VALIDATION_ATTEMPTS } else { 0 };
        let confirmations = 1 + bisect + validate;
        ramp + bisect + validate + confirmations + Self::DISTURBED_REPROBES
    }
}

/// `slo = { percentile = 99.0, max = "5ms" }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlo {
    percentile: Option<Spanned<f64>>,
    max: Option<Spanned<String>>,
}

/// The capacity keys of a `[[scenario]]` or `[defaults]`.
pub(super) struct RawCapacity<'a> {
    pub slo: Option<&'a Spanned<RawSlo>>,
    pub start_rate: Option<&'a Spanned<f64>>,
    pub max_rate: Option<&'a Spanned<f64>>,
    pub ramp_factor: Option<&'a Spanned<f64>>,
    pub bisect_tolerance: Option<&'a Spanned<f64>>,
    pub validation: Option<&'a Spanned<bool>>,
}

impl RawCapacity<'_> {
    /// Each key's name and where it is, for "only in capacity mode" errors.
    pub fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        [
            ("slo", self.slo.map(|v| v.span())),
            ("start_rate", self.start_rate.map(|v| v.span())),
            ("max_rate", self.max_rate.map(|v| v.span())),
            ("ramp_factor", self.ramp_factor.map(|v| v.span())),
            ("bisect_tolerance", self.bisect_tolerance.map(|v| v.span())),
            ("validation", self.validation.map(|v| v.span())),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect()
    }
}

/// Above loadgen's own 10,000,000 requests/s limit for `rates`.
const MAX_RATE_LIMIT: f64 = 10_000_000.0;

impl Validator<'_> {
    /// The search of a `mode = "capacity"` scenario (`c`: the scenario's
    /// keys, each already falling back to `[defaults]`).
    pub(super) fn capacity_shape(&mut self, c: &RawCapacity<'_>, span: Range<usize>) -> Option<super::LoadShape> {
        let before = self.problems.len();
        let (percentile, slo) = match c.slo {
            None => {
                self.problem(span, "mode = \"capacity\" needs `slo = { percentile = 99.0, max = \"5ms\" }` (the latency bound the capacity is measured at)");
                (99.0, Duration::ZERO)
            }
            Some(raw) => {
                let r = raw.get_ref();
                let percentile = match &r.percentile {
                    None => 99.0,
                    Some(p) if p.get_ref().is_finite() && *p.get_ref() > 0.0 && *p.get_ref() < 100.0 => *p.get_ref(),
                    Some(p) => {
                        self.problem(p.span(), format!("`slo.percentile` must be above 0 and below 100 (e.g. 99.0 or 99.9), got {}", p.get_ref()));
                        99.0
                    }
                };
                let max = match &r.max {
                    None => {
                        self.problem(raw.span(), "`slo` needs `max = \"...\"`, the latency bound (e.g. \"5ms\")");
                        None
                    }
                    Some(m) => self.duration(Some(m), "slo.max", false),
                };
                (percentile, max.unwrap_or_default())
            }
        };
        let rate = |v: &mut Self, field: &str, raw: Option<&Spanned<f64>>, default: f64| -> f64 {
            match raw {
                None => default,
                Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 && *r.get_ref() <= MAX_RATE_LIMIT => *r.get_ref(),
                Some(r) => {
                    v.problem(r.span(), format!("`{field}` must be a rate above 0 and at most 10000000 requests/s, got {}", r.get_ref()));
                    default
                }
            }
        };
        let start_rate = rate(self, "start_rate", c.start_rate, CapacityShape::DEFAULT_START_RATE);
        let max_rate = rate(self, "max_rate", c.max_rate, CapacityShape::DEFAULT_MAX_RATE.max(start_rate));
        if max_rate < start_rate {
            let at = c.max_rate.or(c.start_rate).map(|v| v.span()).unwrap_or(0..0);
            self.problem(at, format!("`max_rate` ({max_rate}) must be at least `start_rate` ({start_rate})"));
        }
        let ramp_factor = self
            .fraction(c.ramp_factor, "ramp_factor", 1.1, 10.0)
            .unwrap_or(CapacityShape::DEFAULT_RAMP_FACTOR);
        let tolerance = self
            .fraction(c.bisect_tolerance, "bisect_tolerance", 0.005, 0.5)
            .unwrap_or(CapacityShape::DEFAULT_TOLERANCE);
        let validation = c.validation.map(|v| *v.get_ref()).unwrap_or(true);
        (self.problems.len() == before).then_some(super::LoadShape::Capacity(CapacityShape {
            percentile,
            slo,
            start_rate,
            max_rate,
            ramp_factor,
            tolerance,
            validation,
        }))
    }

    /// Capacity keys in a scenario of another mode (its own ones; inherited
    /// ones are simply unused, as `rates` under mode = "closed").
    pub(super) fn stray_capacity_keys(&mut self, own: &RawCapacity<'_>) {
        for (key, at) in own.present() {
            self.problem(at, format!("`{key}` is for mode = \"capacity\" scenarios"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, LoadShape, SuiteError};
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "c.toml") {
            Err(SuiteError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| format!("{}:{} {}", p.line, p.col, p.message)).collect()
            }
            Ok(_) => panic!("expected problems, suite parsed"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn defaults_and_inheritance() {
        let s = parse(
            "name = \"c\"\n[defaults]\nslo = { max = \"5ms\" }\nramp_factor = 1.5\n[[scenario]]\nname = \"a\"\nmode = \"capacity\"\n[[scenario]]\nname = \"b\"\nmode = \"capacity\"\nslo = { percentile = 99.9, max = \"2ms\" }\nstart_rate = 100\nmax_rate = 800\nbisect_tolerance = 0.1\nvalidation = false\n[[scenario]]\nname = \"open\"\nrates = [10]\n",
            "c.toml",
        )
        .unwrap();
        let shape = |i: usize| match &s.scenarios[i].load {
            LoadShape::Capacity(c) => *c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            shape(0),
            CapacityShape {
                percentile: 99.0,
                slo: Duration::from_millis(5),
                start_rate: 500.0,
                max_rate: 100_000.0,
                ramp_factor: 1.5,
                tolerance: 0.05,
                validation: true
            }
        );
        assert_eq!(
            shape(1),
            CapacityShape {
                percentile: 99.9,
                slo: Duration::from_millis(2),
                start_rate: 100.0,
                max_rate: 800.0,
                ramp_factor: 1.5,
                tolerance: 0.1,
                validation: false
            }
        );
        assert_eq!(s.scenarios[2].load, LoadShape::Open { rates: vec![10.0] }, "inherited capacity keys are unused elsewhere");
        let cells = crate::plan::cells(&s);
        assert_eq!(cells.iter().filter(|c| c.scenario == 0).count(), s.scenarios[0].variants.len(), "one cell per variant");
        assert!(cells.iter().filter(|c| c.scenario < 2).all(|c| c.rate.is_none()));
        assert_eq!(crate::plan::label(&s, &cells[0]), "a capacity at p99<=5ms baseline rep 1/1");
    }

    #[test]
    fn every_problem_is_located() {
        let p = problems(
            r#"name = "c"
[[scenario]]
name = "no-slo"
mode = "capacity"
[[scenario]]
name = "bad"
mode = "capacity"
slo = { percentile = 100.0, max = "fast" }
start_rate = 0
ramp_factor = 1.0
bisect_tolerance = 0.9
rates = [100]
[[scenario]]
name = "upside-down"
mode = "capacity"
slo = { max = "0ms" }
start_rate = 5000
max_rate = 1000
[[scenario]]
name = "open"
rates = [100]
slo = { max = "5ms" }
validation = false
"#,
        );
        let joined = p.join("\n");
        for want in [
            "mode = \"capacity\" needs `slo = { percentile = 99.0, max = \"5ms\" }`",
            "8:22 `slo.percentile` must be above 0 and below 100 (e.g. 99.0 or 99.9), got 100",
            "8:35 `slo.max` = \"fast\" is not a duration",
            "9:14 `start_rate` must be a rate above 0 and at most 10000000 requests/s, got 0",
            "10:15 `ramp_factor` must be between 1.1 and 10, got 1",
            "11:20 `bisect_tolerance` must be between 0.005 and 0.5, got 0.9",
            "12:9 `rates` has no meaning for mode = \"capacity\"",
            "16:15 `slo.max` must be longer than 0",
            "18:12 `max_rate` (1000) must be at least `start_rate` (5000)",
            "22:7 `slo` is for mode = \"capacity\" scenarios",
            "23:14 `validation` is for mode = \"capacity\" scenarios",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        assert_eq!(p.len(), 11, "each problem once:\n{joined}");
        let e = parse("name = \"c\"\n[[scenario]]\nname = \"t\"\nmode = \"capacity\"\nslo = { p = 99.0, max = \"5ms\" }\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:5:9: unknown field `p`, expected `percentile` or `max`"), "{e}");
    }

    #[test]
    fn max_probes_bounds_the_search() {
        let c = CapacityShape {
            percentile: 99.0,
            slo: Duration::from_millis(5),
            start_rate: 500.0,
            max_rate: 64_000.0,
            ramp_factor: 2.0,
            tolerance: 0.05,
            validation: true,
        };
        // 500 .. 64000 is 8 ramp probes, 5 halvings of a factor-2 bracket to 5 %,
        // 3 validations, a confirming probe for each of the 1 + 5 + 3 that can fail,
        // and the disturbed probes run again.
        assert_eq!(c.max_probes(), 8 + 5 + 3 + (1 + 5 + 3) + 6);
    }
}
