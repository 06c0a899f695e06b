//! The capacity-at-an-SLO section of a report: a row per search (capacity,
//! validation, ratio to the no-mesh baseline, what limited it) that both
//! formats print, and a chart per scenario of the measured percentile
//! against the offered rate of every probe, with the SLO as a line.

use plotters::prelude::*;

use super::charts::nth_color;
use super::hardening::Table;
use super::RenderError;
use crate::Report;
use record::capacity::CapacityRun;

const BASELINE: &str = crate::compare::BASELINE;

/// `(substrate, scenario)` pairs with capacity searches, in first-seen order.
pub(super) fn scenarios(report: &Report) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for c in &report.capacity {
        let k = (c.substrate.clone(), c.scenario.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn of<'a>(report: &'a Report, (substrate, scenario): &(String, String)) -> Vec<&'a CapacityRun> {
    report.capacity.iter().filter(|c| &c.substrate == substrate && &c.scenario == scenario).collect()
}

/// The no-mesh capacity of a scenario: the median over its repetitions.
fn baseline(runs: &[&CapacityRun]) -> Option<(f64, &'static str)> {
    let mut caps: Vec<(f64, bool)> =
        runs.iter().filter(|c| c.variant == BASELINE).map(|c| (c.capacity_rps, c.limited_by == "max-rate")).collect();
    if caps.is_empty() {
        return None;
    }
    caps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (cap, at_max) = caps[caps.len() / 2];
    Some((cap, if at_max { "max-rate" } else { "" }))
}

/// One table per scenario with capacity searches.
pub(super) fn tables(report: &Report) -> Vec<Table> {
    scenarios(report).iter().map(|k| table(report, k)).collect()
}

fn table(report: &Report, key: &(String, String)) -> Table {
    let runs = of(report, key);
    let first = runs[0];
    let base = baseline(&runs);
    let rows = runs
        .iter()
        .map(|c| {
            let validation = match c.validations().last() {
                None => "—".to_string(),
                Some(v) => format!(
                    "{} at {:.0} rps: p{} {:.2} ms, {} err{}",
                    if c.validated { "pass" } else { "FAIL" },
                    v.load.rate.unwrap_or_default(),
                    c.percentile,
                    v.percentile_us / 1000.0,
                    v.load.errors,
                    match c.validations().count() {
                        1 => String::new(),
                        n => format!(" ({n} validation probes)"),
                    }
                ),
            };
            let ratio = match base {
                Some((b, _)) if b > 0.0 && c.variant != BASELINE => format!("{:.2}", c.capacity_rps / b),
                Some(_) if c.variant == BASELINE => "1.00".to_string(),
                _ => "—".to_string(),
            };
            vec![
                format!("`{}`", c.variant),
                c.repetition.to_string(),
                format!("{:.0}", c.capacity_rps),
                validation,
                ratio,
                limit_text(c),
                ceiling(c, base),
                match c.probes.iter().filter(|p| p.verdict == "disturbed").count() {
                    0 => c.probes.len().to_string(),
                    d => format!("{} ({d} disturbed)", c.probes.len()),
                },
            ]
        })
        .collect();
    Table {
        title: format!("Capacity at p{} ≤ {} ms: `{}` ({})", first.percentile, ms(first.slo_us), key.1, key.0),
        note: format!(
            "The highest open-loop rate whose p{} (corrected, from the scheduled send) stays ≤ {} ms with 0 errors: a ramp from {:.0} rps ×{} (up to {:.0} rps), a bisection to {:.0} %, then a validation run at the found rate (stepping down by the tolerance when it fails); a probe that fails is probed again, and a rate fails only when 2 of its probes do (a third decides a disagreement). A probe over the bound whose service time (from the actual send) was within it, with late sends, is the load generator's limit, not the system's (`generator`). A probe that fails (not by errors) while the hypervisor took more than {:.0} % of the machine's CPU time is `disturbed` and run again without counting, a few times per search. The no-mesh `baseline` is the generator and app's own ceiling: a variant within the tolerance of it is marked, its capacity is a lower bound.",
            first.percentile,
            ms(first.slo_us),
            first.start_rate,
            first.ramp_factor,
            first.max_rate,
            first.tolerance * 100.0,
            record::HostCpu::DISTURBED_STEAL * 100.0
        ),
        headers: vec!["variant", "rep", "capacity (rps)", "validation", "vs no-mesh", "limited by", "ceiling", "probes"],
        rows,
    }
}

fn limit_text(c: &CapacityRun) -> String {
    match c.limited_by.as_str() {
        "slo" => format!("p{} over {} ms", c.percentile, ms(c.slo_us)),
        "errors" => "errors".into(),
        "generator" => "the load generator (late sends)".into(),
        "disturbed" => "the host (CPU stolen by the hypervisor, past the re-probes)".into(),
        "max-rate" => format!("max_rate passed ({:.0} rps)", c.max_rate),
        "start-rate" => format!("start_rate failed ({:.0} rps)", c.start_rate),
        other => other.into(),
    }
}

/// Whether a variant's capacity is the no-mesh ceiling's rather than its own.
fn ceiling(c: &CapacityRun, base: Option<(f64, &str)>) -> String {
    match base {
        _ if c.variant == BASELINE => "is the ceiling".into(),
        Some((b, _)) if b > 0.0 && c.capacity_rps >= b * (1.0 - c.tolerance) => "AT CEILING (a lower bound)".into(),
        Some(_) if c.limited_by == "generator" => "generator-limited".into(),
        Some(_) => "below".into(),
        None => "— (no baseline)".into(),
    }
}

fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The colour of a variant on the capacity charts: grey for the baseline.
fn color(variants: &[&str], v: &str) -> RGBColor {
    if v == BASELINE {
        return RGBColor(120, 120, 120);
    }
    nth_color(variants.iter().filter(|x| **x != BASELINE).position(|x| *x == v).unwrap_or(0))
}

/// Variants of a scenario's searches, in first-seen order.
fn variants<'a>(runs: &[&'a CapacityRun]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for c in runs {
        if !out.contains(&c.variant.as_str()) {
            out.push(&c.variant);
        }
    }
    out
}

/// Legend entries (variant, colour) for the HTML page.
pub(super) fn keys(report: &Report, key: &(String, String)) -> Vec<(String, RGBColor)> {
    let runs = of(report, key);
    let vs = variants(&runs);
    vs.iter().map(|v| (v.to_string(), color(&vs, v))).collect()
}

/// 1, 2, 5 x powers of ten within `[lo, hi]`.
fn one_two_five(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        out.extend([1.0, 2.0, 5.0].map(|m| m * decade).into_iter().filter(|v| *v >= lo && *v <= hi));
        decade *= 10.0;
    }
    out
}

/// The measured percentile (ms, log scale) against the offered rate of
/// every probe, a line per variant through its probes in rate order, failed
/// probes as crosses, the SLO as a dashed red line.
pub(super) fn chart_svg(report: &Report, key: &(String, String)) -> Result<String, RenderError> {
    super::ensure_font()?;
    let runs = of(report, key);
    let vs = variants(&runs);
    let slo_ms = runs[0].slo_us / 1000.0;
    let pct = runs[0].percentile;
    let points = |c: &CapacityRun| -> Vec<(f64, f64, bool)> {
        let mut p: Vec<(f64, f64, bool)> = c
            .probes
            .iter()
            .map(|p| (p.load.rate.unwrap_or_default(), (p.percentile_us / 1000.0).max(0.001), p.verdict == "pass"))
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    };
    let all: Vec<(f64, f64, bool)> = runs.iter().flat_map(|c| points(c)).collect();
    let x1 = all.iter().map(|p| p.0).fold(0.0f64, f64::max) * 1.06 + 1.0;
    let y0 = all.iter().map(|p| p.1).fold(slo_ms, f64::min) / 1.5;
    let y1 = all.iter().map(|p| p.1).fold(slo_ms, f64::max) * 1.5;
    fn err<E: std::fmt::Debug>(e: E) -> RenderError {
        RenderError::Chart(format!("{e:?}"))
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("p{pct} against offered rate: `{}` ({})", key.1, key.0), ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            // 1-2-5 ticks: plotters' log axis labels powers of ten only,
            // often a single label over a few milliseconds.
            .build_cartesian_2d(0.0..x1, (y0..y1).log_scale().with_key_points(one_two_five(y0, y1)))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered rate, requests/s")
            .y_desc(format!("p{pct} latency, ms (log)"))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| if *y >= 10.0 { format!("{y:.0}") } else { format!("{y:.2}") })
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        let red = RGBColor(200, 30, 30);
        chart
            .draw_series(DashedLineSeries::new([(0.0, slo_ms), (x1, slo_ms)], 8, 5, red.stroke_width(2)))
            .map_err(err)?
            .label(format!("SLO: p{pct} ≤ {} ms", ms(slo_ms * 1000.0)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], red.stroke_width(2)));
        for v in &vs {
            let c = color(&vs, v);
            for run in runs.iter().filter(|r| r.variant == *v) {
                let p = points(run);
                chart
                    .draw_series(LineSeries::new(p.iter().map(|q| (q.0, q.1)), c.stroke_width(2)))
                    .map_err(err)?
                    .label(format!("{v}: {:.0} rps", run.capacity_rps))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3)));
                chart.draw_series(p.iter().filter(|q| q.2).map(|q| Circle::new((q.0, q.1), 4, c.filled()))).map_err(err)?;
                chart.draw_series(p.iter().filter(|q| !q.2).map(|q| Cross::new((q.0, q.1), 5, c.stroke_width(2)))).map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::capacity::Probe;

    fn probe(rate: f64, p99_us: f64, verdict: &str, phase: &str) -> Probe {
        let mut load: record::Load = serde_json::from_str(
            r#"{"protocol":"http1","mode":"open","rate":1,"connections":8,"body_size":0,"duration_s":1,"requests":100,"errors":0,"achieved_rps":100,"latency_us":{"p50":0,"p90":0,"p99":0,"p999":0,"p9999":0,"max":0,"mean":0},"service_time_us":{"p50":0,"p90":0,"p99":0,"p999":0,"p9999":0,"max":0,"mean":0},"histogram":""}"#,
        )
        .expect("a minimal load");
        load.rate = Some(rate);
        Probe { phase: phase.into(), verdict: verdict.into(), percentile_us: p99_us, service_percentile_us: p99_us, load, resources: vec![], host: None }
    }

    fn search(variant: &str, capacity: f64, limited_by: &str) -> CapacityRun {
        CapacityRun {
            scenario: "cap".into(),
            variant: variant.into(),
            substrate: "local".into(),
            repetition: 0,
            percentile: 99.0,
            slo_us: 5000.0,
            start_rate: 500.0,
            max_rate: 20000.0,
            ramp_factor: 2.0,
            tolerance: 0.05,
            capacity_rps: capacity,
            validated: true,
            limited_by: limited_by.into(),
            probes: vec![
                probe(500.0, 900.0, "pass", "ramp"),
                probe(capacity, 3000.0, "pass", "bisect"),
                probe(capacity * 1.04, 9000.0, "slo", "bisect"),
                probe(capacity, 3500.0, "pass", "validate"),
            ],
        }
    }

    fn report() -> Report {
        let mut r = Report::new("capacity", "2026-12-07T12:00:00Z", record::Env::default());
        r.capacity = vec![search("baseline", 10000.0, "generator"), search("weft", 4000.0, "slo"), search("nginx", 9800.0, "slo")];
        r
    }

    #[test]
    fn a_row_per_search_with_the_ratio_to_no_mesh_and_the_ceiling_marked() {
        let t = tables(&report());
        assert_eq!(t.len(), 1);
        let rows = &t[0].rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][4], "1.00");
        assert_eq!(rows[0][6], "is the ceiling");
        assert_eq!((rows[1][2].as_str(), rows[1][4].as_str(), rows[1][6].as_str()), ("4000", "0.40", "below"));
        assert!(rows[1][3].starts_with("pass at 4000 rps: p99 3.50 ms"), "{}", rows[1][3]);
        assert_eq!(rows[2][6], "AT CEILING (a lower bound)", "within 5 % of the no-mesh capacity");
        assert!(t[0].title.contains("p99 ≤ 5 ms"), "{}", t[0].title);
    }

    #[test]
    fn the_chart_has_the_slo_line_and_every_variant() {
        let r = report();
        let svg = chart_svg(&r, &scenarios(&r)[0]).unwrap();
        assert!(svg.contains("SLO: p99 ≤ 5 ms"), "{svg}");
        assert_eq!(one_two_five(0.6, 13.5), [1.0, 2.0, 5.0, 10.0]);
        for v in ["baseline: 10000 rps", "weft: 4000 rps", "nginx: 9800 rps"] {
            assert!(svg.contains(v), "{v}");
        }
    }
}
