//! Suite files: the scenario model, its TOML shape, and validation.
//!
//! A suite file is parsed in two passes. The first (`Raw*` types) keeps the
//! byte span of every value so that the second pass, validation, can report
//! *every* problem with `file:line:col`, not just the first one serde meets.
//! `suites/README.md` documents every field; keep the two in step.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The suites shipped inside the binary, so `bench` works from any directory.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("quick", include_str!("../quick.toml")),
    ("ci", include_str!("../ci.toml")),
    ("full", include_str!("../full.toml")),
];

/// What sits between the load generator and the target server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// No hop at all: the floor every other variant is compared against.
    Baseline,
    /// Client-side and server-side sidecars (outbound -> inbound).
    Weft,
    /// Only the client-side (outbound) sidecar.
    WeftClientOnly,
    /// Only the server-side (inbound) sidecar.
    WeftServerOnly,
    /// One nginx reverse-proxy hop.
    Nginx,
    /// One HAProxy reverse-proxy hop.
    Haproxy,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Baseline,
        Variant::Weft,
        Variant::WeftClientOnly,
        Variant::WeftServerOnly,
        Variant::Nginx,
        Variant::Haproxy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Weft => "weft",
            Variant::WeftClientOnly => "weft-client-only",
            Variant::WeftServerOnly => "weft-server-only",
            Variant::Nginx => "nginx",
            Variant::Haproxy => "haproxy",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application protocol the load generator speaks to the first hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c).
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// How load is offered.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadShape {
    /// Open loop: each rate (requests/s) is one point of the matrix.
    Open { rates: Vec<f64> },
    /// Closed loop: a fixed number of requests in flight, as fast as possible.
    Closed { concurrency: usize },
}

/// One validated scenario with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub load: LoadShape,
    pub duration: Duration,
    pub warmup: Duration,
    pub repetitions: u32,
    pub connections: usize,
    pub protocol: Protocol,
    pub body_size: usize,
    pub server_delay: Duration,
    pub server_threads: usize,
    pub timeout: Duration,
    pub variants: Vec<Variant>,
}

/// A validated suite.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// Where it came from: a path, or `embedded:NAME`.
    pub origin: String,
    pub scenarios: Vec<Scenario>,
}

/// One problem found in a suite file, located by line and column (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read suite file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no suite named `{name}`: not a file, not ./suites/{name}.toml, and not one of the built-in suites ({})", builtin_names())]
    NotFound { name: String },
    /// One line per problem, each `file:line:col: message`.
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn builtin_names() -> String {
    EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}:{}:{}: {}", p.line, p.col, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- first pass: raw, spanned -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    defaults: Option<Spanned<RawSettings>>,
    #[serde(default)]
    scenario: Vec<Spanned<RawSettings>>,
}

/// Shared by `[defaults]` and `[[scenario]]`: every setting may be given in
/// either place; a scenario's value wins. `name`/`description` only make sense
/// on a scenario and are rejected in `[defaults]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    rates: Option<Spanned<Vec<Spanned<f64>>>>,
    concurrency: Option<Spanned<i64>>,
    duration: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
    repetitions: Option<Spanned<i64>>,
    connections: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    body_size: Option<Spanned<i64>>,
    server_delay: Option<Spanned<String>>,
    server_threads: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    variants: Option<Spanned<Vec<Spanned<String>>>>,
}

// ---- loading ------------------------------------------------------------------

/// Resolve `--suite`: an existing path, else `./suites/NAME.toml`, else a
/// built-in suite by name.
pub fn resolve(spec: &str) -> Result<Suite, SuiteError> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return load_file(as_path);
    }
    let local = Path::new("suites").join(format!("{spec}.toml"));
    if !spec.contains('/') && local.is_file() {
        return load_file(&local);
    }
    match EMBEDDED.iter().find(|(n, _)| *n == spec) {
        Some((name, text)) => parse(text, &format!("embedded:{name}")),
        None => Err(SuiteError::NotFound {
            name: spec.to_string(),
        }),
    }
}

/// Load and validate a suite file.
pub fn load_file(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parse and validate suite text; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Suite, SuiteError> {
    let raw: RawSuite = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        SuiteError::Invalid {
            file: file.to_string(),
            problems: vec![Problem {
                line,
                col,
                message: e.message().trim().to_string(),
            }],
        }
    })?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let suite = v.suite(raw, file);
    if v.problems.is_empty() {
        Ok(suite)
    } else {
        v.problems.sort_by_key(|p| (p.line, p.col));
        // A bad value in [defaults] is found once per scenario inheriting it.
        v.problems.dedup();
        Err(SuiteError::Invalid {
            file: file.to_string(),
            problems: v.problems,
        })
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, text[line_start..offset].chars().count() + 1)
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

/// Hard-wired fallbacks for settings neither `[defaults]` nor the scenario give.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
const DEFAULT_WARMUP: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECTIONS: usize = 8;

impl Validator<'_> {
    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            col,
            message: message.into(),
        });
    }

    fn suite(&mut self, raw: RawSuite, file: &str) -> Suite {
        let name = match raw.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.problem(n.span(), "suite `name` must not be empty");
                String::new()
            }
            Some(n) => n.into_inner(),
            None => {
                self.problem(0..0, "missing top-level `name = \"...\"`");
                String::new()
            }
        };
        let defaults = match raw.defaults {
            Some(d) => {
                let span = d.span();
                let d = d.into_inner();
                if let Some(n) = &d.name {
                    self.problem(
                        n.span(),
                        "`name` belongs on a [[scenario]], not in [defaults]",
                    );
                }
                if let Some(n) = &d.description {
                    self.problem(
                        n.span(),
                        "`description` belongs on a [[scenario]], not in [defaults]",
                    );
                }
                let _ = span;
                d
            }
            None => RawSettings::default(),
        };
        if raw.scenario.is_empty() {
            self.problem(0..0, "the suite has no [[scenario]] tables");
        }
        let mut scenarios: Vec<Scenario> = Vec::new();
        let mut seen: Vec<(String, Range<usize>)> = Vec::new();
        for s in raw.scenario {
            let span = s.span();
            let s = s.into_inner();
            if let Some(n) = &s.name {
                if let Some((_, first)) = seen.iter().find(|(k, _)| k == n.get_ref()) {
                    let (line, _) = line_col(self.text, first.start);
                    self.problem(
                        n.span(),
                        format!(
                            "duplicate scenario name `{}` (first used on line {line})",
                            n.get_ref()
                        ),
                    );
                }
                seen.push((n.get_ref().clone(), n.span()));
            }
            if let Some(sc) = self.scenario(&defaults, s, span) {
                scenarios.push(sc);
            }
        }
        Suite {
            name,
            description: raw.description,
            origin: file.to_string(),
            scenarios,
        }
    }

    /// Resolve one scenario against the defaults; `None` if it had problems
    /// (which are recorded, so validation carries on with the next one).
    fn scenario(
        &mut self,
        d: &RawSettings,
        s: RawSettings,
        span: Range<usize>,
    ) -> Option<Scenario> {
        let before = self.problems.len();
        let name = match &s.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.problem(n.span(), "scenario `name` must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => {
                self.problem(span.clone(), "[[scenario]] is missing `name`");
                String::new()
            }
        };
        let description = s
            .description
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default();

        let duration = self
            .duration(pick(&s.duration, &d.duration), "duration", false)
            .unwrap_or(DEFAULT_DURATION);
        let warmup = self
            .duration(pick(&s.warmup, &d.warmup), "warmup", true)
            .unwrap_or(DEFAULT_WARMUP);
        let timeout = self
            .duration(pick(&s.timeout, &d.timeout), "timeout", false)
            .unwrap_or(DEFAULT_TIMEOUT);
        let server_delay = self
            .duration(pick(&s.server_delay, &d.server_delay), "server_delay", true)
            .unwrap_or_default();
        let repetitions = self
            .count(pick(&s.repetitions, &d.repetitions), "repetitions", 1, 1000)
            .unwrap_or(1) as u32;
        let connections = self
            .count(
                pick(&s.connections, &d.connections),
                "connections",
                1,
                100_000,
            )
            .unwrap_or(DEFAULT_CONNECTIONS as i64) as usize;
        let server_threads = self
            .count(
                pick(&s.server_threads, &d.server_threads),
                "server_threads",
                1,
                1024,
            )
            .unwrap_or(1) as usize;
        let body_size = match pick(&s.body_size, &d.body_size) {
            Some(b) if *b.get_ref() < 0 || *b.get_ref() > 64 * 1024 * 1024 => {
                self.problem(
                    b.span(),
                    format!(
                        "`body_size` must be between 0 and 67108864 bytes, got {}",
                        b.get_ref()
                    ),
                );
                0
            }
            Some(b) => *b.get_ref() as usize,
            None => 0,
        };
        let protocol = match pick(&s.protocol, &d.protocol) {
            None => Protocol::Http1,
            Some(p) => match p.get_ref().as_str() {
                "http1" => Protocol::Http1,
                "http2" => Protocol::Http2,
                other => {
                    self.problem(
                        p.span(),
                        format!("unknown protocol `{other}`: expected `http1` or `http2`"),
                    );
                    Protocol::Http1
                }
            },
        };
        let variants = match pick(&s.variants, &d.variants) {
            None => Variant::ALL.to_vec(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.problem(list.span(), "`variants` is empty: list at least one of baseline, weft, weft-client-only, weft-server-only, nginx, haproxy");
                }
                let mut out = Vec::new();
                for v in list.get_ref() {
                    match Variant::parse(v.get_ref()) {
                        Some(var) if out.contains(&var) => self.problem(v.span(), format!("variant `{var}` is listed twice")),
                        Some(var) => out.push(var),
                        None => self.problem(
                            v.span(),
                            format!(
                                "unknown variant `{}`: expected one of baseline, weft, weft-client-only, weft-server-only, nginx, haproxy",
                                v.get_ref()
                            ),
                        ),
                    }
                }
                out
            }
        };
        let load = self.load_shape(d, &s, span);
        if self.problems.len() > before {
            return None;
        }
        Some(Scenario {
            name,
            description,
            load: load?,
            duration,
            warmup,
            repetitions,
            connections,
            protocol,
            body_size,
            server_delay,
            server_threads,
            timeout,
            variants,
        })
    }

    fn load_shape(
        &mut self,
        d: &RawSettings,
        s: &RawSettings,
        span: Range<usize>,
    ) -> Option<LoadShape> {
        let mode = pick(&s.mode, &d.mode);
        let closed = match mode {
            None => false,
            Some(m) => match m.get_ref().as_str() {
                "open" => false,
                "closed" => true,
                other => {
                    self.problem(m.span(), format!("unknown mode `{other}`: expected `open` (fixed rate) or `closed` (fixed concurrency)"));
                    return None;
                }
            },
        };
        // A scenario's own `rates`/`concurrency` conflict with the other mode;
        // ones inherited from [defaults] are simply not used.
        if closed {
            if let Some(r) = &s.rates {
                self.problem(r.span(), "`rates` is for open-loop scenarios; this one has mode = \"closed\" (use `concurrency`)");
            }
            match pick(&s.concurrency, &d.concurrency) {
                None => {
                    self.problem(span, "closed-loop scenario needs `concurrency = N`");
                    None
                }
                Some(c) if *c.get_ref() < 1 || *c.get_ref() > 100_000 => {
                    self.problem(
                        c.span(),
                        format!(
                            "`concurrency` must be between 1 and 100000, got {}",
                            c.get_ref()
                        ),
                    );
                    None
                }
                Some(c) => Some(LoadShape::Closed {
                    concurrency: *c.get_ref() as usize,
                }),
            }
        } else {
            if let Some(c) = &s.concurrency {
                self.problem(c.span(), "`concurrency` is for closed-loop scenarios: add mode = \"closed\" or use `rates`");
            }
            match pick(&s.rates, &d.rates) {
                None => {
                    self.problem(span, "open-loop scenario needs `rates = [...]` (requests/s), or set mode = \"closed\"");
                    None
                }
                Some(list) => {
                    if list.get_ref().is_empty() {
                        self.problem(list.span(), "`rates` is empty");
                    }
                    let mut ok = true;
                    for r in list.get_ref() {
                        let v = *r.get_ref();
                        if !(v.is_finite() && v > 0.0) {
                            self.problem(
                                r.span(),
                                format!("rate must be a positive number of requests/s, got {v}"),
                            );
                            ok = false;
                        } else if v > 10_000_000.0 {
                            self.problem(
                                r.span(),
                                format!("rate {v} is above the 10000000 requests/s limit"),
                            );
                            ok = false;
                        }
                    }
                    (ok && !list.get_ref().is_empty()).then(|| LoadShape::Open {
                        rates: list.get_ref().iter().map(|r| *r.get_ref()).collect(),
                    })
                }
            }
        }
    }

    fn duration(
        &mut self,
        v: Option<&Spanned<String>>,
        field: &str,
        zero_ok: bool,
    ) -> Option<Duration> {
        let v = v?;
        match humantime::parse_duration(v.get_ref().trim()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.problem(
                    v.span(),
                    format!("`{field}` must be longer than 0, got \"{}\"", v.get_ref()),
                );
                None
            }
            Ok(d) if d > Duration::from_secs(24 * 3600) => {
                self.problem(
                    v.span(),
                    format!("`{field}` = \"{}\" is longer than a day", v.get_ref()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(v.span(), format!("`{field}` = \"{}\" is not a duration ({e}); write e.g. \"8s\" or \"500ms\"", v.get_ref()));
                None
            }
        }
    }

    fn count(&mut self, v: Option<&Spanned<i64>>, field: &str, min: i64, max: i64) -> Option<i64> {
        let v = v?;
        let n = *v.get_ref();
        if n < min || n > max {
            self.problem(
                v.span(),
                format!("`{field}` must be between {min} and {max}, got {n}"),
            );
            return None;
        }
        Some(n)
    }
}

fn pick<'a, T>(own: &'a Option<T>, default: &'a Option<T>) -> Option<&'a T> {
    own.as_ref().or(default.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "t.toml") {
            Err(SuiteError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
                .collect(),
            Ok(_) => panic!("expected problems, suite parsed"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn embedded_suites_are_valid() {
        for (name, text) in EMBEDDED {
            let s = parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&s.name, name);
            assert!(!s.scenarios.is_empty());
        }
    }

    #[test]
    fn defaults_are_inherited_and_overridden() {
        let s = parse(
            r#"
name = "x"
[defaults]
duration = "3s"
connections = 4
variants = ["baseline", "weft"]
rates = [100]
[[scenario]]
name = "a"
[[scenario]]
name = "b"
duration = "1s"
protocol = "http2"
mode = "closed"
concurrency = 2
"#,
            "t",
        )
        .unwrap();
        let a = &s.scenarios[0];
        assert_eq!(a.duration, Duration::from_secs(3));
        assert_eq!(a.connections, 4);
        assert_eq!(a.load, LoadShape::Open { rates: vec![100.0] });
        assert_eq!(a.variants, vec![Variant::Baseline, Variant::Weft]);
        let b = &s.scenarios[1];
        assert_eq!(b.duration, Duration::from_secs(1));
        assert_eq!(b.protocol, Protocol::Http2);
        assert_eq!(b.load, LoadShape::Closed { concurrency: 2 });
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let p = problems(
            r#"name = "bad"
[defaults]
duration = "0s"
variants = ["baseline", "envoy"]
[[scenario]]
name = "a"
rates = [100, -5, 0]
[[scenario]]
name = "a"
rates = [10]
variants = []
[[scenario]]
name = "c"
mode = "closed"
warmup = "soon"
"#,
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("3:12 `duration` must be longer than 0"),
            "{joined}"
        );
        assert!(joined.contains("4:25 unknown variant `envoy`"), "{joined}");
        assert!(
            joined.contains("7:15 rate must be a positive number of requests/s, got -5"),
            "{joined}"
        );
        assert!(
            joined.contains("7:19 rate must be a positive number"),
            "{joined}"
        );
        assert!(
            joined.contains("9:8 duplicate scenario name `a` (first used on line 6)"),
            "{joined}"
        );
        assert!(joined.contains("11:12 `variants` is empty"), "{joined}");
        assert!(
            joined.contains("closed-loop scenario needs `concurrency = N`"),
            "{joined}"
        );
        assert!(
            joined.contains("15:10 `warmup` = \"soon\" is not a duration"),
            "{joined}"
        );
        assert_eq!(p.len(), 8, "each problem once: {joined}");
    }

    #[test]
    fn unknown_fields_and_syntax_errors_have_a_location() {
        let e = parse(
            "name = \"x\"\n[[scenario]]\nname = \"a\"\nrate = [1]\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml:4:1: unknown field `rate`"), "{e}");
        let e = parse("name = \"x\"\n[[scenario]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:2:"), "{e}");
        let e = parse(
            "name = \"x\"\n[[scenario]]\nname = \"a\"\nrates = [1]\nconnections = \"many\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml:5:"), "{e}");
    }

    #[test]
    fn mode_conflicts_are_reported() {
        let p = problems("name = \"x\"\n[[scenario]]\nname = \"a\"\nmode = \"closed\"\nconcurrency = 0\nrates = [1]\n[[scenario]]\nname = \"b\"\nmode = \"sideways\"\n");
        let joined = p.join("\n");
        assert!(
            joined.contains("5:15 `concurrency` must be between 1"),
            "{joined}"
        );
        assert!(
            joined.contains("6:9 `rates` is for open-loop scenarios"),
            "{joined}"
        );
        assert!(joined.contains("9:8 unknown mode `sideways`"), "{joined}");
    }

    #[test]
    fn missing_scenarios_and_name() {
        let p = problems("description = \"nothing\"\n");
        assert!(
            p.iter().any(|p| p.contains("missing top-level `name")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("no [[scenario]] tables")),
            "{p:?}"
        );
    }
}
