//! `mode = "sweep"`: one dimension of the deployment grown over a list of
//! sizes, a cost measured at each (the sweep itself is `crate::sweep`).
//!
//! ```toml
//! mode = "sweep"
//! sweep = { dimension = "endpoints", sizes = [1, 100, 10000] }
//! rates = [100]         # the fixed light load at every size (load dimensions)
//! variants = ["weft"]   # endpoints, authorities: weft only; connections: any
//! # dimension = "services": no load, no variants; `changes` edits timed per size
//! ```

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;
use super::{LoadShape, Variant};

/// What a sweep grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SweepDimension {
    /// Endpoints behind the one Service the load addresses.
    Endpoints,
    /// Client connections open to the proxy, the load spread over them.
    Connections,
    /// Distinct Services addressed through the client proxy by Host.
    Authorities,
    /// Services the control plane serves (the propagation harness).
    Services,
}

impl SweepDimension {
    pub const ALL: [SweepDimension; 4] = [Self::Endpoints, Self::Connections, Self::Authorities, Self::Services];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Endpoints => "endpoints",
            Self::Connections => "connections",
            Self::Authorities => "authorities",
            Self::Services => "services",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Largest size: what one machine's loopback and fd limits can hold
    /// (connections: 2 fds each in bench, 1 in the proxy).
    pub fn max_size(self) -> usize {
        match self {
            Self::Endpoints | Self::Authorities => 20_000,
            Self::Connections => 50_000,
            Self::Services => 100_000,
        }
    }

    /// Whether each size is measured with load through a deployed variant.
    pub fn is_load(self) -> bool {
        self != Self::Services
    }

    /// Only Weft's discovering client proxy has endpoints and authorities to grow.
    pub fn weft_only(self) -> bool {
        matches!(self, Self::Endpoints | Self::Authorities)
    }
}

impl std::fmt::Display for SweepDimension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepShape {
    pub dimension: SweepDimension,
    /// Increasing.
    pub sizes: Vec<usize>,
    /// The fixed light load of a load dimension, requests/s (`None` for `services`).
    pub rate: Option<f64>,
    /// `services`: edits timed at each size (at most the smallest size).
    pub changes: usize,
}

/// `sweep = { dimension = "...", sizes = [...] }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    dimension: Option<Spanned<String>>,
    sizes: Option<Spanned<Vec<Spanned<i64>>>>,
}

/// What `sweep_shape` reads of a scenario (each key its own or `[defaults]`'s,
/// `own_*`: the scenario's own, for keys that cannot apply).
pub(super) struct RawSweepKeys<'a> {
    pub sweep: Option<&'a Spanned<RawSweep>>,
    pub rates: Option<&'a Spanned<Vec<Spanned<f64>>>>,
    pub changes: Option<&'a Spanned<i64>>,
    pub own_concurrency: Option<Range<usize>>,
    pub own_rates: Option<Range<usize>>,
    pub own_services: Option<Range<usize>>,
    pub own_endpoints: Option<Range<usize>>,
    pub own_changes: Option<Range<usize>>,
}

/// Edits timed per size of a `services` sweep unless `changes` says.
const DEFAULT_CHANGES: usize = 20;

impl Validator<'_> {
    pub(super) fn sweep_shape(&mut self, k: &RawSweepKeys<'_>, span: Range<usize>) -> Option<LoadShape> {
        let before = self.problems.len();
        for (key, at) in [("services", &k.own_services), ("endpoints", &k.own_endpoints)] {
            if let Some(at) = at {
                self.problem(at.clone(), format!("`{key}` is for mode = \"propagation\"; a sweep's sizes are `sweep.sizes`"));
            }
        }
        if let Some(at) = &k.own_concurrency {
            self.problem(at.clone(), "`concurrency` has no meaning for mode = \"sweep\": each size is measured open loop at `rates = [R]`");
        }
        let Some(raw) = k.sweep else {
            self.problem(span, "mode = \"sweep\" needs `sweep = { dimension = \"endpoints\", sizes = [1, 100, 10000] }`");
            return None;
        };
        let r = raw.get_ref();
        let dimension = match &r.dimension {
            None => {
                self.problem(raw.span(), format!("`sweep` needs `dimension = \"...\"`, one of {}", dimension_names()));
                None
            }
            Some(d) => match SweepDimension::parse(d.get_ref()) {
                Some(dim) => Some(dim),
                None => {
                    self.problem(d.span(), format!("unknown sweep dimension `{}`: expected one of {}", d.get_ref(), dimension_names()));
                    None
                }
            },
        };
        let mut sizes = Vec::new();
        match &r.sizes {
            None => self.problem(raw.span(), "`sweep` needs `sizes = [...]`, the sizes to measure (e.g. [1, 100, 10000])"),
            Some(list) if list.get_ref().is_empty() => self.problem(list.span(), "`sweep.sizes` is empty: list at least one size"),
            Some(list) => {
                let max = dimension.map_or(usize::MAX, SweepDimension::max_size);
                for v in list.get_ref() {
                    let n = *v.get_ref();
                    if n < 1 || n as u64 > max as u64 {
                        let dim = dimension.map_or("any dimension".into(), |d| format!("`{d}`"));
                        self.problem(v.span(), format!("sweep size must be between 1 and {max} for {dim}, got {n}"));
                    } else if sizes.last().is_some_and(|&last| n as usize <= last) {
                        self.problem(v.span(), format!("`sweep.sizes` must increase: {n} comes after {}", sizes.last().expect("checked")));
                    } else {
                        sizes.push(n as usize);
                    }
                }
            }
        }
        let dimension = dimension?;
        let (rate, changes) = if dimension.is_load() {
            if let Some(at) = &k.own_changes {
                self.problem(at.clone(), "`changes` is for a `services` sweep (edits timed per size)");
            }
            let rate = match k.rates {
                None => {
                    self.problem(span, format!("a `{dimension}` sweep needs `rates = [R]`: the fixed light load (requests/s) measured at every size"));
                    None
                }
                Some(list) => match list.get_ref().as_slice() {
                    [one] if one.get_ref().is_finite() && *one.get_ref() > 0.0 && *one.get_ref() <= 1_000_000.0 => Some(*one.get_ref()),
                    [one] => {
                        self.problem(one.span(), format!("rate must be above 0 and at most 1000000 requests/s, got {}", one.get_ref()));
                        None
                    }
                    _ => {
                        self.problem(list.span(), "a sweep takes one rate (`rates = [R]`): the fixed light load at every size");
                        None
                    }
                },
            };
            (rate, 0)
        } else {
            if let Some(at) = &k.own_rates {
                self.problem(at.clone(), "`rates` has no meaning for a `services` sweep (it measures the control plane alone)");
            }
            let smallest = sizes.first().copied().unwrap_or(1);
            let changes = match k.changes {
                None => DEFAULT_CHANGES.min(smallest),
                Some(c) if *c.get_ref() >= 1 && *c.get_ref() as u64 <= smallest as u64 => *c.get_ref() as usize,
                Some(c) => {
                    self.problem(c.span(), format!("`changes` must be between 1 and the smallest size ({smallest}): each edit goes to a different Service, got {}", c.get_ref()));
                    1
                }
            };
            (None, changes)
        };
        (self.problems.len() == before).then(|| LoadShape::Sweep(SweepShape { dimension, sizes, rate, changes }))
    }

    /// A sweep's variants: its own `variants` only (a suite's defaults list
    /// the comparisons of its load scenarios), `weft` when it has none.
    pub(super) fn sweep_variants(
        &mut self,
        dimension: SweepDimension,
        own: Option<&Spanned<Vec<Spanned<String>>>>,
        parsed: Vec<Variant>,
    ) -> Vec<Variant> {
        let Some(list) = own else { return vec![Variant::Weft] };
        if !dimension.is_load() {
            self.problem(list.span(), "`variants` has no meaning for a `services` sweep (it measures the control plane alone)");
        } else if dimension.weft_only() {
            for v in list.get_ref() {
                if Variant::parse(v.get_ref()).is_some_and(|var| var != Variant::Weft) {
                    self.problem(v.span(), format!("a sweep of `{dimension}` measures Weft's discovering client proxy: only `weft` can run it, not `{}`", v.get_ref()));
                }
            }
        }
        parsed
    }

    /// `replicas` in a sweep scenario (whatever its other problems).
    pub(super) fn sweep_replicas(&mut self, own: Option<Range<usize>>) {
        if let Some(at) = own {
            self.problem(at, "`replicas` has no meaning for mode = \"sweep\": a sweep grows one server's endpoints itself (`dimension = \"endpoints\"`)");
        }
    }

    /// `sweep` in a scenario of another mode.
    pub(super) fn stray_sweep_key(&mut self, own: Option<&Spanned<RawSweep>>) {
        if let Some(s) = own {
            self.problem(s.span(), "`sweep` is for mode = \"sweep\" scenarios");
        }
    }
}

fn dimension_names() -> String {
    SweepDimension::ALL.map(|d| format!("`{d}`")).join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::{parse, SuiteError};
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "s.toml") {
            Err(SuiteError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| format!("{}:{} {}", p.line, p.col, p.message)).collect()
            }
            Ok(_) => panic!("expected problems, suite parsed"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn the_committed_suite_and_its_cells() {
        let s = parse(include_str!("../../sweeps.toml"), "sweeps.toml").unwrap();
        let shapes: Vec<(SweepDimension, Vec<usize>, Option<f64>, Vec<Variant>)> = s
            .scenarios
            .iter()
            .map(|sc| match &sc.load {
                LoadShape::Sweep(w) => (w.dimension, w.sizes.clone(), w.rate, sc.variants.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shapes[0], (SweepDimension::Endpoints, vec![1, 100, 10000], Some(100.0), vec![Variant::Weft]));
        assert_eq!(shapes[1].0, SweepDimension::Connections);
        assert_eq!(shapes[1].3, [Variant::Weft, Variant::WeftPlaintext]);
        assert_eq!(shapes[3], (SweepDimension::Services, vec![100, 1000, 10000], None, vec![Variant::Weft]));
        let cells = crate::plan::cells(&s);
        assert_eq!(cells.len(), 5, "one cell per variant: the sizes are the sweep's");
        assert!(cells.iter().all(|c| c.rate.is_none()));
        assert_eq!(crate::plan::label(&s, &cells[0]), "sweep-endpoints sweep endpoints 1,100,10000 at 100 rps weft rep 1/1");
        assert_eq!(crate::plan::label(&s, &cells[4]), "sweep-services sweep services 100,1000,10000 x20 rep 1/1");
        let text = crate::plan::describe(&s, &cells);
        assert!(text.contains("sweep of services over 100, 1000, 10000: the propagation harness, 20 edits per size"), "{text}");
    }

    #[test]
    fn every_problem_is_located() {
        let p = problems(
            r#"name = "s"
[defaults]
variants = ["baseline", "nginx"]
[[scenario]]
name = "no-sweep"
mode = "sweep"
rates = [100]
[[scenario]]
name = "bad"
mode = "sweep"
sweep = { dimension = "pods", sizes = [] }
[[scenario]]
name = "sizes"
mode = "sweep"
sweep = { dimension = "endpoints", sizes = [10, 10, 0, 30000] }
rates = [100, 200]
variants = ["weft", "nginx"]
replicas = 2
[[scenario]]
name = "svc"
mode = "sweep"
sweep = { dimension = "services", sizes = [5, 50] }
rates = [1]
changes = 6
variants = ["weft"]
[[scenario]]
name = "stray"
rates = [1]
sweep = { dimension = "services", sizes = [5] }
[[scenario]]
name = "conns"
mode = "sweep"
sweep = { dimension = "connections", sizes = [10] }
concurrency = 4
changes = 3
"#,
        );
        let joined = p.join("\n");
        for want in [
            "mode = \"sweep\" needs `sweep = { dimension = \"endpoints\", sizes = [1, 100, 10000] }`",
            "11:23 unknown sweep dimension `pods`: expected one of `endpoints`, `connections`, `authorities`, `services`",
            "11:39 `sweep.sizes` is empty",
            "15:49 `sweep.sizes` must increase: 10 comes after 10",
            "15:53 sweep size must be between 1 and 20000 for `endpoints`, got 0",
            "15:56 sweep size must be between 1 and 20000 for `endpoints`, got 30000",
            "16:9 a sweep takes one rate (`rates = [R]`)",
            "18:12 `replicas` has no meaning for mode = \"sweep\"",
            "23:9 `rates` has no meaning for a `services` sweep",
            "24:11 `changes` must be between 1 and the smallest size (5)",
            "30:1 a `connections` sweep needs `rates = [R]`",
            "29:9 `sweep` is for mode = \"sweep\" scenarios",
            "34:15 `concurrency` has no meaning for mode = \"sweep\"",
            "35:11 `changes` is for a `services` sweep",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        // A scenario whose sweep has problems is not judged on its variants.
        assert_eq!(p.len(), 14, "each problem once:\n{joined}");
        let p = problems("name = \"s\"\n[[scenario]]\nname = \"e\"\nmode = \"sweep\"\nsweep = { dimension = \"authorities\", sizes = [1] }\nrates = [10]\nvariants = [\"weft\", \"haproxy\"]\n");
        assert_eq!(p, ["7:21 a sweep of `authorities` measures Weft's discovering client proxy: only `weft` can run it, not `haproxy`"]);
        let p = problems("name = \"s\"\n[[scenario]]\nname = \"v\"\nmode = \"sweep\"\nsweep = { dimension = \"services\", sizes = [5] }\nvariants = [\"weft\"]\n");
        assert_eq!(p, ["6:12 `variants` has no meaning for a `services` sweep (it measures the control plane alone)"]);
        let e = parse("name = \"s\"\n[[scenario]]\nname = \"t\"\nmode = \"sweep\"\nsweep = { dim = \"services\" }\n", "s.toml").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:5:11: unknown field `dim`, expected `dimension` or `sizes`"), "{e}");
    }
}
