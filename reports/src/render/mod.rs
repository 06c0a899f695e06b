//! Rendering a record for people: Markdown tables, a self-contained HTML
//! page with inline SVG charts, and a PNG latency chart for READMEs.
//!
//! All output is derived from one [`Comparison`] of a [`Report`], computed
//! once and shared by every format, so it can be re-rendered from any stored
//! `report.json` and the formats never disagree.

mod bitmap_text;
mod capacity;
mod sweeps;
mod charts;
mod hardening;
mod hostile;
mod html;
mod markdown;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::FontStyle;

use crate::compare::{Cell, Comparison, GroupKey, Spread};
use crate::noise::{Judgement, Verdict};
use crate::Report;

pub use html::html;
pub use markdown::markdown;

/// Why a rendering could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{}: cannot write: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("chart drawing failed: {0}")]
    Chart(String),
    #[error("the bundled chart font could not be loaded")]
    Font,
    #[error("{subject}: {source}")]
    Histogram { subject: String, source: crate::hist::HistogramError },
    #[error("the record has no load runs, so there is no latency to chart")]
    NoLoadRuns,
}

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Register the bundled font once, so charts never depend on system fonts
/// (CI machines and containers often have none).
fn ensure_font() -> Result<(), RenderError> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(RenderError::Font)
    }
}

/// Write the latency spectrum of the most demanding open-loop group (highest
/// target rate; closed loop if there is none) as a ~1000x600 PNG.
/// [`RenderError::NoLoadRuns`] when the record has none (e.g. conformance only).
pub fn latency_png(cmp: &Comparison<'_>, path: &Path) -> Result<(), RenderError> {
    if cmp.cells.is_empty() {
        return Err(RenderError::NoLoadRuns);
    }
    ensure_font()?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}.png",
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "latency".into()),
        std::process::id()
    ));
    let result = charts::spectrum_png(cmp, &tmp)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|source| RenderError::Io { path: path.to_owned(), source }));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What [`write_all`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The text of `report.md` (to print after a run without rendering twice).
    pub markdown: String,
    /// `latency.png`, or `None` when the record has no load runs: then no
    /// chart is written (a stale one from an earlier render is removed) and
    /// `report.md` / `report.html` say so.
    pub latency_png: Option<PathBuf>,
}

/// Write `report.md`, `report.html` and (when the record has load runs)
/// `latency.png` into `dir` (created if missing), each through a temporary
/// file and a rename. `report.json` is the caller's: see
/// [`crate::io::write_report_json`]. Works for any record: load runs,
/// propagation, conformance results, or any mix.
pub fn write_all(report: &Report, dir: &Path) -> Result<Written, RenderError> {
    write_compared(&Comparison::of(report), dir)
}

/// [`write_all`] for a comparison already made.
pub fn write_compared(cmp: &Comparison<'_>, dir: &Path) -> Result<Written, RenderError> {
    std::fs::create_dir_all(dir).map_err(|source| RenderError::Io { path: dir.to_owned(), source })?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        crate::io::write_atomic(&path, text.as_bytes()).map_err(|source| RenderError::Io { path, source })
    };
    let md = markdown(cmp);
    write("report.md", &md)?;
    write("report.html", &html(cmp))?;
    // The hardening charts beside the page, for notes and docs.
    if let Some(s) = cmp.report.hardening.soak.first() {
        write("soak.svg", &hardening::soak_svg(s)?)?;
    }
    if let Some(key) = capacity::scenarios(cmp.report).first() {
        write(CAPACITY_SVG, &capacity::chart_svg(cmp.report, key)?)?;
    }
    // Each sweep's chart beside the page too (sweep-<scenario>.svg).
    for key in sweeps::scenarios(cmp.report) {
        write(&sweep_svg_name(&key.1), &sweeps::chart_svg(cmp.report, &key)?)?;
    }
    let png = dir.join(LATENCY_PNG);
    let latency_png = if cmp.cells.is_empty() {
        match std::fs::remove_file(&png) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(RenderError::Io { path: png, source: e }),
            _ => None,
        }
    } else {
        latency_png(cmp, &png)?;
        Some(png)
    };
    Ok(Written { markdown: md, latency_png })
}

/// The first capacity scenario's chart beside the page, for notes and docs.
pub const CAPACITY_SVG: &str = "capacity.svg";

/// The file a sweep scenario's chart is written to beside the page.
pub fn sweep_svg_name(scenario: &str) -> String {
    let safe: String = scenario.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("sweep-{safe}.svg")
}

/// File name of the README chart in a results directory.
pub const LATENCY_PNG: &str = "latency.png";

/// The note both formats show when there is no chart to draw.
const NO_LOAD_RUNS: &str = "No load runs in this record, so no latency tables or charts (latency.png is not written).";

/// The group the README chart shows: highest open-loop rate, else highest
/// closed-loop concurrency; the first such group on ties.
fn most_demanding(groups: &[(GroupKey, Vec<&Cell>)]) -> Option<usize> {
    let score = |k: &GroupKey| match (k.rate, k.concurrency) {
        (Some(r), _) => (1, r),
        (None, Some(c)) => (0, f64::from(c)),
        (None, None) => (0, 0.0),
    };
    let mut best: Option<(usize, (i32, f64))> = None;
    for (i, (k, _)) in groups.iter().enumerate() {
        let s = score(k);
        if best.is_none_or(|(_, b)| s.0 > b.0 || (s.0 == b.0 && s.1 > b.1)) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// The columns of one group's table after `variant`, and each cell's values
/// in them: Markdown and HTML show the same table. Optional columns appear
/// only when some row has something to say in them.
struct Columns {
    late: bool,
    control: bool,
    anon: bool,
    mixed_reps: bool,
    proxy_counts: bool,
}

impl Columns {
    fn of(group: &[&Cell]) -> Columns {
        Columns {
            late: group.iter().any(|c| c.late_sends > 0),
            control: group.iter().any(|c| c.control_rss_peak.is_some()),
            anon: group.iter().any(|c| c.proxy_rss_anon_peak.is_some()),
            mixed_reps: group.iter().any(|c| c.repetitions != group[0].repetitions),
            proxy_counts: group.iter().any(|c| c.proxy_counts.is_some()),
        }
    }

    /// Each column's name and, where it has one, its unit.
    fn headers(&self) -> Vec<(&'static str, Option<&'static str>)> {
        let mut h = vec![
            ("p50", Some("ms")),
            ("p90", Some("ms")),
            ("p99", Some("ms")),
            ("p99.9", Some("ms")),
            ("max", Some("ms")),
            ("added p50", None),
            ("added p99", None),
            ("achieved rps", None),
            ("errors", None),
        ];
        if self.late {
            h.push(("late sends", None));
        }
        h.push(("proxy peak RSS", Some("MiB")));
        if self.anon {
            h.push(("of it private", Some("MiB")));
        }
        h.push(("proxy CPU", Some("cores / 1000 rps")));
        if self.control {
            h.push(("control plane RSS", Some("MiB")));
        }
        if self.mixed_reps {
            h.push(("reps", None));
        }
        if self.proxy_counts {
            h.push(("proxy count", Some("vs loadgen")));
        }
        h
    }

    /// One cell's values, in the order of [`Columns::headers`].
    fn row(&self, c: &Cell) -> Vec<Figure> {
        let l = &c.latency_us;
        let sp = &c.spread;
        let mut row = vec![
            Figure::spread(ms(l.p50), sp.p50_us, ms),
            Figure::spread(ms(l.p90), sp.p90_us, ms),
            Figure::spread(ms(l.p99), sp.p99_us, ms),
            Figure::spread(ms(l.p999), sp.p999_us, ms),
            Figure::spread(ms(l.max), sp.max_us, ms),
            added(c.added.as_ref().map(|a| &a.p50), c.ratio_p50),
            added(c.added.as_ref().map(|a| &a.p99), c.ratio_p99),
            Figure::spread(rps(c.achieved_rps), sp.achieved_rps, rps),
            Figure::plain(errors(c)),
        ];
        if self.late {
            row.push(Figure::plain(c.late_sends.to_string()));
        }
        row.push(Figure::spread(rss(c.proxy_rss_peak), sp.proxy_rss_peak_bytes, |b| mib(b)));
        if self.anon {
            row.push(Figure::spread(rss(c.proxy_rss_anon_peak), sp.proxy_rss_anon_peak_bytes, |b| mib(b)));
        }
        row.push(Figure::spread(cpu(c), sp.proxy_cpu_per_krps, |v| format!("{v:.3}")));
        if self.control {
            row.push(Figure::spread(rss(c.control_rss_peak), sp.control_rss_peak_bytes, |b| mib(b)));
        }
        if self.mixed_reps {
            row.push(Figure::plain(c.repetitions.to_string()));
        }
        if self.proxy_counts {
            row.push(Figure::plain(proxy_count(c)));
        }
        row
    }
}

/// One table cell: the figure, and under it (HTML) or after it in brackets
/// (Markdown) its spread or the noise test's interval.
#[derive(Clone, Debug, PartialEq)]
struct Figure {
    text: String,
    sub: Option<String>,
    /// The difference is inside the noise (HTML greys it).
    noise: bool,
}

impl Figure {
    fn plain(text: String) -> Figure {
        Figure { text, sub: None, noise: false }
    }

    /// `0.531` with `0.498..0.580` (min..max over repetitions) when at least
    /// two repetitions had the figure; one run has no spread to show.
    fn spread(text: String, spread: Option<Spread>, unit: impl Fn(f64) -> String) -> Figure {
        let sub = spread.filter(|s| s.n >= 2).map(|s| format!("{}..{}", unit(s.min), unit(s.max)));
        Figure { text, sub, noise: false }
    }

    fn markdown(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{} ({sub})", self.text),
            None => self.text.clone(),
        }
    }
}

/// An added percentile, never a bare signed number: `within noise (±0.012
/// ms)` when the bootstrap interval of the difference contains 0; else the
/// difference with its interval (`+0.041 ms`, `CI +0.030..+0.052; 1.52x`);
/// with too few repetitions the difference says how many (`1 run: no
/// spread`); `—` for the baseline itself or a group without one.
fn added(j: Option<&Judgement>, ratio: Option<f64>) -> Figure {
    let Some(j) = j else {
        return Figure::plain("—".to_owned());
    };
    let ratio = ratio.map(|r| format!("; {r:.2}x")).unwrap_or_default();
    let signed = |us: f64| format!("{:+.3}", us / 1000.0);
    match (j.verdict, j.interval) {
        (Verdict::WithinNoise, Some((lo, hi))) => Figure {
            text: "within noise".to_owned(),
            sub: Some(format!("±{:.3} ms", lo.abs().max(hi.abs()) / 1000.0)),
            noise: true,
        },
        (Verdict::Better | Verdict::Worse, Some((lo, hi))) => Figure {
            text: format!("{} ms", signed(j.difference)),
            sub: Some(format!("CI {}..{}{ratio}", signed(lo), signed(hi))),
            noise: false,
        },
        _ => {
            let n = j.base_n.min(j.candidate_n);
            let few = if n == 1 { "1 run: no spread".to_owned() } else { format!("{n} runs: no verdict") };
            Figure { text: format!("{} ms", signed(j.difference)), sub: Some(format!("{few}{ratio}")), noise: false }
        }
    }
}

// Shared number formatting, so Markdown and HTML say the same thing.

const MIB: f64 = 1024.0 * 1024.0;

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn rps(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn errors(c: &Cell) -> String {
    if c.errors == 0 {
        "0".to_owned()
    } else {
        format!("{} ({:.3}%)", c.errors, c.error_rate() * 100.0)
    }
}

fn rss(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "—".to_owned(), |b| mib(b as f64))
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / MIB)
}

/// `300 = 300`, `301 vs 300`, or `⚠ 303 vs 300` when a repetition was flagged.
fn proxy_count(c: &Cell) -> String {
    match c.proxy_counts {
        None => "—".to_owned(),
        Some(t) if t.flagged > 0 => format!("{DISAGREE_MARK} {} vs {}", t.proxy, t.loadgen),
        Some(t) if t.proxy == t.loadgen => format!("{} = {}", t.proxy, t.loadgen),
        Some(t) => format!("{} vs {}", t.proxy, t.loadgen),
    }
}

/// Marks a cell whose proxies counted differently from loadgen.
const DISAGREE_MARK: &str = "⚠";

/// Heading of the list of flagged cells, in both formats.
const DISAGREE_TITLE: &str = "⚠ Cross-check failed: proxy counts disagree with loadgen's by more than 0.1 %";

/// One line per flagged repetition: which cell, both counts, how far apart.
/// Unescaped: each format escapes.
fn disagreements(report: &Report) -> Vec<String> {
    let runs = report.runs.iter().map(|r| {
        let load = crate::compare::load_label(r.load.rate, r.load.concurrency);
        (format!("{}/{}/{load}", r.scenario, r.variant), r.repetition, &r.substrate, r.proxy_counts.as_ref())
    });
    let h = &report.hardening;
    let faults = h.faults.iter().map(|f| {
        (format!("{}/{}/{} fault", f.scenario, f.variant, f.fault), f.repetition, &f.substrate, f.proxy_counts.as_ref())
    });
    let overload = h.overload.iter().map(|o| {
        (format!("{}/{}/overload phase", o.scenario, o.variant), o.repetition, &o.substrate, o.proxy_counts.as_ref())
    });
    runs.chain(faults)
        .chain(overload)
        .filter_map(|(cell, repetition, substrate, c)| {
            let c = c.filter(|c| c.flagged)?;
            Some(format!(
                "{cell} repetition {} ({substrate}): {} counted {} requests ({}), loadgen {} ({:+.2} %)",
                repetition + 1,
                c.compared,
                c.proxy_requests,
                c.requests_family,
                c.loadgen_requests,
                (c.proxy_requests as f64 - c.loadgen_requests as f64) / (c.loadgen_requests.max(1) as f64) * 100.0
            ))
        })
        .collect()
}

/// One repetition's cross-check as a table cell, for the hardening
/// tables: `300 = 300`, `301 vs 300`, `⚠ 303 vs 300`, `not comparable
/// (why)`, or `—` without one.
fn crosscheck_cell(c: Option<&record::CrossCheck>) -> String {
    match c {
        None => "—".to_owned(),
        Some(c) => match &c.not_comparable {
            Some(why) => format!("not comparable ({why}): {} vs {}", c.proxy_requests, c.loadgen_requests),
            None if c.flagged => format!("{DISAGREE_MARK} {} vs {}", c.proxy_requests, c.loadgen_requests),
            None if c.proxy_requests == c.loadgen_requests => format!("{} = {}", c.proxy_requests, c.loadgen_requests),
            None => format!("{} vs {}", c.proxy_requests, c.loadgen_requests),
        },
    }
}

fn cpu(c: &Cell) -> String {
    c.proxy_cpu_per_krps.map_or_else(|| "—".to_owned(), |v| format!("{v:.3}"))
}

/// `medians of 3 repetitions`, or a range when cells differ.
fn repetitions(cells: &[&Cell]) -> String {
    let min = cells.iter().map(|c| c.repetitions).min().unwrap_or(0);
    let max = cells.iter().map(|c| c.repetitions).max().unwrap_or(0);
    match (min, max) {
        (1, 1) => "1 repetition (no median, no spread)".to_owned(),
        (a, b) if a == b => format!("medians of {a} repetitions"),
        (a, b) => format!("medians of {a}–{b} repetitions (per-row counts in the table)"),
    }
}

/// What the load of a group looked like, from its first run.
fn load_details(cmp: &Comparison<'_>, cells: &[&Cell]) -> String {
    let Some(run) = cells.first().and_then(|c| cmp.runs_of(c).next()) else {
        return String::new();
    };
    let l = &run.load;
    let mut s = format!("{} s measured", trim(l.duration_s));
    if l.warmup_s > 0.0 {
        s.push_str(&format!(" after {} s warm-up", trim(l.warmup_s)));
    }
    s.push_str(&format!(", {} connections, {} B bodies", l.connections, l.body_size));
    s
}

fn trim(v: f64) -> String {
    crate::compare::trim_float((v * 100.0).round() / 100.0)
}

/// One line per environment fact, shared by both formats.
fn env_lines(report: &Report) -> Vec<(&'static str, String)> {
    let e = &report.env;
    let mut lines = vec![
        ("Suite", report.suite.clone()),
        (
            "Run",
            if report.finished_at.is_empty() {
                format!("started {}", report.started_at)
            } else {
                format!("{} → {}", report.started_at, report.finished_at)
            },
        ),
        ("Host", format!("{}, {} cores, kernel {}", e.host, e.cores, e.kernel)),
        ("Build", format!("git {}", e.git_rev)),
    ];
    if !e.versions.is_empty() {
        lines.push(("Versions", e.versions.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")));
    }
    let substrates: Vec<&str> = {
        let runs = report.runs.iter().map(|r| r.substrate.as_str());
        let mut s: Vec<&str> = runs.chain(report.conformance.iter().map(|t| t.substrate.as_str())).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    if !substrates.is_empty() {
        lines.push(("Substrate", substrates.join(", ")));
    }
    if let Some(stolen) = stolen_line(report) {
        lines.push(("CPU stolen", stolen));
    }
    lines
}

/// How much of the machine the hypervisor took over the measured windows
/// of load cells and capacity probes that recorded it: `None` when none did.
fn stolen_line(report: &Report) -> Option<String> {
    let probes = report.capacity.iter().flat_map(|c| &c.probes).filter_map(|p| p.host);
    let mut steal: Vec<f64> = report.runs.iter().filter_map(|r| r.host).chain(probes).map(|h| h.steal).collect();
    if steal.is_empty() {
        return None;
    }
    steal.sort_by(f64::total_cmp);
    let disturbed = steal.iter().filter(|s| **s > record::HostCpu::DISTURBED_STEAL).count();
    Some(format!(
        "by the hypervisor during the measured windows: median {:.1} %, max {:.1} % ({disturbed} of {} windows above {:.0} %, where every variant's tail latency suffers alike)",
        steal[steal.len() / 2] * 100.0,
        steal[steal.len() - 1] * 100.0,
        steal.len(),
        record::HostCpu::DISTURBED_STEAL * 100.0
    ))
}

/// Title of the propagation section, in both formats.
const PROPAGATION_TITLE: &str = "Discovery propagation (manifests edit → Destination stream)";

/// Columns of the propagation table; [`propagation_row`] fills them.
const PROPAGATION_HEADERS: [&str; 11] =
    ["scenario", "rep", "services", "endpoints", "edits", "poll", "startup", "p50", "p99", "max", "control RSS"];

/// One propagation measurement as table cells (repetitions counted from 1).
fn propagation_row(p: &crate::Propagation) -> Vec<String> {
    vec![
        p.scenario.clone(),
        (p.repetition + 1).to_string(),
        p.services.to_string(),
        p.endpoints.to_string(),
        p.changes.to_string(),
        format!("{:.0} ms", p.poll_ms),
        format!("{:.0} ms", p.startup_ms),
        format!("{:.1} ms", p.p50_ms),
        format!("{:.1} ms", p.p99_ms),
        format!("{:.1} ms", p.max_ms),
        format!("{:.1} MiB", p.control_rss_bytes as f64 / MIB),
    ]
}

/// The legend for what the record holds, as (term, explanation) pairs.
fn legend(cmp: &Comparison<'_>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    if !cmp.cells.is_empty() {
        out.extend(LOAD_LEGEND.iter().map(|(t, x)| (*t, (*x).to_owned())));
        out.insert(2, ("Noise", noise_legend()));
    }
    if cmp.cells.iter().any(|c| c.proxy_counts.is_some()) {
        out.push((
            "Proxy count",
            "requests the client-side Weft proxy (the server-side one when it is the only proxy) counted \
             on its own `/metrics` between a scrape at the start of the measured window and one after \
             loadgen drained it, beside loadgen's requests for the window, summed over repetitions. \
             `⚠`: a repetition differs by more than 0.1 % (listed at the top); `—`: the variant has \
             no Weft proxy."
                .to_owned(),
        ));
    }
    if !cmp.conformance.is_empty() {
        out.extend(CONFORMANCE_LEGEND.iter().map(|(t, x)| (*t, (*x).to_owned())));
    }
    out
}

/// How a figure's spread and an added figure's verdict are written, with
/// the test behind the verdict.
fn noise_legend() -> String {
    format!(
        "`0.531 (0.498..0.580)` is the median over repetitions, then the smallest and largest \
         repetition (min..max); one repetition has no spread to show. An added figure is judged \
         against both cells' repetitions with a {}. `within noise (±0.012 ms)`: the interval \
         contains 0 and reaches at most that far from it, so the variant and the baseline are not \
         told apart by this run; `+0.041 ms (CI +0.030..+0.052; 1.52x)`: the interval lies wholly \
         on one side of 0, the difference of medians first; `1 run: no spread` / `2 runs: no \
         verdict`: too few repetitions for a verdict, the signed number is one run's (or two \
         runs') difference and may be noise.",
        crate::noise::Bootstrap::default().describe()
    )
}

const CONFORMANCE_LEGEND: [(&str, &str); 2] = [
    (
        "Conformance",
        "each test deploys its own topology on the substrate, sends real requests through the mesh and \
         checks what comes back. `pass`: every check held; `FAIL`: one did not (expected and observed are \
         listed under the matrix); `n/a`: the substrate cannot express the test (never a pass); \
         `skipped`: not run, with the reason; `—`: not run on that substrate.",
    ),
    (
        "GAMMA feature",
        "the Gateway API mesh conformance feature the test is modelled on; empty for mesh behaviours \
         beyond routing (mTLS, authorization, retries, ...).",
    ),
];

/// Title of the conformance section, in both formats.
const CONFORMANCE_TITLE: &str = "Conformance";

/// One line under the conformance matrix: a test on a column and what to
/// say about it. Unescaped: each format escapes.
struct Note {
    test: String,
    column: String,
    text: String,
}

/// The lists under the matrix, as (heading, notes): failures with expected
/// vs observed, then not-applicable and skipped results with their reasons.
/// Empty lists are left out.
fn conformance_notes(m: &crate::conformance::Matrix<'_>) -> Vec<(&'static str, Vec<Note>)> {
    use crate::Status;
    let notes = |status: Status, text: &dyn Fn(&crate::TestResult) -> String| -> Vec<Note> {
        m.with_status(status)
            .into_iter()
            .map(|(c, t)| Note { test: t.name.clone(), column: m.label(c), text: text(t) })
            .collect()
    };
    let reason = |t: &crate::TestResult| t.reason.clone().unwrap_or_else(|| "(no reason recorded)".to_owned());
    let failure = |t: &crate::TestResult| {
        let mut parts = Vec::new();
        if let Some(r) = &t.reason {
            parts.push(r.clone());
        }
        parts.push(format!("expected: {}", t.expected.as_deref().unwrap_or("(not recorded)")));
        parts.push(format!("observed: {}", t.observed.as_deref().unwrap_or("(not recorded)")));
        parts.join("; ")
    };
    [
        ("Failures (expected vs observed)", notes(Status::Fail, &failure)),
        ("Not applicable", notes(Status::NotApplicable, &reason)),
        ("Skipped", notes(Status::Skipped, &reason)),
    ]
    .into_iter()
    .filter(|(_, n)| !n.is_empty())
    .collect()
}

/// The load legend, as (term, explanation) pairs.
const LOAD_LEGEND: [(&str, &str); 8] = [
    (
        "Latency",
        "measured from each request's *scheduled* send time to the end of its response. When the \
         system stalls, requests that should have been sent during the stall count the wait too \
         (coordinated-omission correction), so tails show what users would see, not just service time.",
    ),
    (
        "Added latency",
        "the variant's percentile minus the `baseline` variant's percentile (load generator talking \
         straight to the server, no proxy) in the same group of the same run, as a difference of \
         medians over repetitions; the ratio after it is variant ÷ baseline.",
    ),
    (
        "Medians",
        "latency, achieved rps and CPU are medians over repetitions, each followed by its min..max; \
         errors and late sends are totals; peak RSS is the largest peak of any repetition (its \
         min..max too).",
    ),
    (
        "Late sends",
        "open-loop requests sent more than 1 ms after their scheduled time because the generator had \
         no free connection or CPU; their latency still counts from the scheduled time.",
    ),
    ("Proxy peak RSS", "resident memory of all proxy processes of the variant added up, at its highest sample (MiB)."),
    (
        "Of it private",
        "the anonymous part of that RSS (heap, stacks: what the proxies allocated), at its highest \
         sample; the rest is file-backed pages, mostly the executables' code, which every process of \
         the same binary on a machine shares. Shown where the substrate reads /proc (not on kind).",
    ),
    (
        "Control plane RSS",
        "peak resident memory of the control plane (mesh-control) in cells whose variant runs one (`weft`, \
         mTLS); not included in the proxy columns.",
    ),
    (
        "CPU / 1000 rps",
        "CPU cores kept busy by all proxy processes, per 1000 achieved requests/s (the unit Istio and \
         Linkerd publish, e.g. 0.2 cores per 1000 rps). Lower is better.",
    ),
];
