//! The scale-sweep section of a report: a table per sweep scenario (a row
//! per size and repetition) that both formats print, and a cost-against-size
//! chart per scenario (log-scale size axis): the measured proxy's peak RSS
//! on the left axis and its CPU seconds (or, for `services`, mesh-control's
//! RSS and the propagation p99) on the right.

use plotters::prelude::*;

use super::charts::nth_color;
use super::hardening::Table;
use super::RenderError;
use crate::Report;
use record::{SweepPoint, SweepRun};

/// `(substrate, scenario)` pairs with sweeps, in first-seen order.
pub(super) fn scenarios(report: &Report) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in &report.sweeps {
        let k = (s.substrate.clone(), s.scenario.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn of<'a>(report: &'a Report, (substrate, scenario): &(String, String)) -> Vec<&'a SweepRun> {
    report.sweeps.iter().filter(|s| &s.substrate == substrate && &s.scenario == scenario).collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What a sweep of `dimension` grows, in words.
fn grows(dimension: &str) -> &'static str {
    match dimension {
        "endpoints" => "endpoints behind the one Service the load addresses (each a relay to the one server sidecar, so every endpoint is its own address and mTLS connection)",
        "connections" => "client connections open to the proxy, the fixed load spread over them",
        "authorities" => "distinct Services addressed by Host through the client proxy, each sent one request before the load window",
        "services" => "Services the control plane serves (one endpoint each): the propagation harness, mesh-control alone",
        _ => "an unknown dimension",
    }
}

/// One table per sweep scenario.
pub(super) fn tables(report: &Report) -> Vec<Table> {
    scenarios(report).iter().map(|k| table(report, k)).collect()
}

fn table(report: &Report, key: &(String, String)) -> Table {
    let runs = of(report, key);
    let first = runs[0];
    let services = first.dimension == "services";
    let mut rows = Vec::new();
    for s in &runs {
        for p in &s.points {
            rows.push(match (&p.run, &p.propagation) {
                (_, Some(pr)) => vec![
                    p.size.to_string(),
                    s.repetition.to_string(),
                    format!("{:.1}", mib(pr.control_rss_bytes)),
                    format!("{:.1}", pr.p50_ms),
                    format!("{:.1}", pr.p99_ms),
                    format!("{:.1}", pr.max_ms),
                    format!("{:.0}", pr.startup_ms),
                    pr.changes.to_string(),
                ],
                (Some(r), None) => vec![
                    p.size.to_string(),
                    format!("`{}`", s.variant),
                    s.repetition.to_string(),
                    p.proxy_rss_peak_bytes.map_or("—".into(), |b| format!("{:.1}", mib(b))),
                    p.proxy_cpu_seconds.map_or("—".into(), |c| format!("{c:.2}")),
                    format!("{} / {}", r.load.requests, r.load.errors),
                    format!("{:.2}", r.load.latency_us.p50 / 1000.0),
                    format!("{:.2}", r.load.latency_us.p99 / 1000.0),
                    format!("{:.1}", p.setup_s),
                    p.setup.clone(),
                ],
                (None, None) => vec![p.size.to_string(), "no figures".into()],
            });
        }
    }
    let headers = match services {
        true => vec!["Services", "rep", "mesh-control RSS (MiB)", "propagation p50 (ms)", "p99 (ms)", "max (ms)", "startup (ms)", "edits"],
        false => vec!["size", "variant", "rep", "proxy RSS peak (MiB)", "proxy CPU (s)", "requests / errors", "p50 (ms)", "p99 (ms)", "setup (s)", "setup"],
    };
    let note = match (services, first.rate) {
        (true, _) => format!(
            "Grows the {}. Each size: mesh-control started on that many Services, then edits timed from the manifests file's rename until a `Destination.Get` stream sees it; its RSS after the edits.",
            grows(&first.dimension)
        ),
        (false, rate) => format!(
            "Grows the {}. Each size: the variant deployed fresh, scaled, then {} rps open loop for the scenario's window; RSS and CPU are the measured proxy's (`proxy-outbound`, else the variant's one proxy) over that window, so CPU is the cost of holding the size under a light load, not of reaching it (that is `setup`). Latency from the scheduled send.{}",
            grows(&first.dimension),
            rate.map_or("—".into(), |r| format!("{r:.0}")),
            first.nofile_limit.map_or(String::new(), |n| format!(" RLIMIT_NOFILE of bench and the proxies: {n}."))
        ),
    };
    Table { title: format!("Sweep of {}: `{}` ({})", first.dimension, key.1, key.0), note, headers, rows }
}

/// Variants of a scenario's sweeps, in first-seen order.
fn variants<'a>(runs: &[&'a SweepRun]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in runs {
        if !out.contains(&s.variant.as_str()) {
            out.push(&s.variant);
        }
    }
    out
}

/// Legend entries (variant, colour) for the HTML page.
pub(super) fn keys(report: &Report, key: &(String, String)) -> Vec<(String, RGBColor)> {
    let runs = of(report, key);
    let vs = variants(&runs);
    vs.iter().enumerate().map(|(i, v)| (v.to_string(), nth_color(i))).collect()
}

/// The two costs a point is drawn with: left axis (MiB) and right axis.
fn costs(p: &SweepPoint) -> (Option<f64>, Option<f64>) {
    match &p.propagation {
        Some(pr) => (Some(mib(pr.control_rss_bytes)), Some(pr.p99_ms)),
        None => (p.proxy_rss_peak_bytes.map(mib), p.proxy_cpu_seconds),
    }
}

/// Per size, the median of each cost over the repetitions of `variant`.
fn medians(runs: &[&SweepRun], variant: &str) -> Vec<(f64, Option<f64>, Option<f64>)> {
    let mut sizes: Vec<usize> = runs.iter().filter(|s| s.variant == variant).flat_map(|s| s.points.iter().map(|p| p.size)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    sizes
        .into_iter()
        .map(|size| {
            let at: Vec<(Option<f64>, Option<f64>)> = runs
                .iter()
                .filter(|s| s.variant == variant)
                .flat_map(|s| s.points.iter().filter(|p| p.size == size).map(costs))
                .collect();
            (size as f64, median(at.iter().filter_map(|c| c.0).collect()), median(at.iter().filter_map(|c| c.1).collect()))
        })
        .collect()
}

/// Powers of ten within `[lo, hi]`, and the ends when they are sizes.
fn size_ticks(lo: f64, hi: f64, sizes: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        if decade >= lo {
            out.push(decade);
        }
        decade *= 10.0;
    }
    for s in sizes {
        if !out.iter().any(|t| (t / s - 1.0).abs() < 0.2) {
            out.push(*s);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// `10,000` rather than `10000`.
fn grouped(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Cost against size for one sweep scenario: RSS (left, MiB) as solid lines
/// with dots, the second cost (right) as dashed lines with triangles, one
/// colour per variant, medians over repetitions.
pub(super) fn chart_svg(report: &Report, key: &(String, String)) -> Result<String, RenderError> {
    super::ensure_font()?;
    let runs = of(report, key);
    let vs = variants(&runs);
    let dimension = runs[0].dimension.clone();
    let services = dimension == "services";
    let (left, right) = match services {
        true => ("mesh-control RSS, MiB", "propagation p99, ms"),
        false => ("proxy RSS peak, MiB", "proxy CPU in the load window, s"),
    };
    let lines: Vec<(&str, Vec<(f64, Option<f64>, Option<f64>)>)> = vs.iter().map(|v| (*v, medians(&runs, v))).collect();
    let sizes: Vec<f64> = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.0)).collect();
    let lo = sizes.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = sizes.iter().copied().fold(1.0, f64::max);
    let (x0, x1) = (lo / 1.6, hi * 1.6);
    let top = |f: fn(&(f64, Option<f64>, Option<f64>)) -> Option<f64>| {
        // Headroom above the highest point: the legend sits in the top left.
        lines.iter().flat_map(|(_, l)| l.iter().filter_map(f)).fold(0.0f64, f64::max) * 1.45 + 1e-3
    };
    let (y1, z1) = (top(|p| p.1), top(|p| p.2));
    fn err<E: std::fmt::Debug>(e: E) -> RenderError {
        RenderError::Chart(format!("{e:?}"))
    }
    let ticks = size_ticks(x0, x1, &sizes);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Cost against {dimension}: `{}` ({})", key.1, key.0), ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .right_y_label_area_size(64)
            .build_cartesian_2d((x0..x1).log_scale().with_key_points(ticks.clone()), 0.0..y1)
            .map_err(err)?
            .set_secondary_coord((x0..x1).log_scale().with_key_points(ticks), 0.0..z1);
        chart
            .configure_mesh()
            .x_desc(format!("{dimension} (log scale)"))
            .y_desc(format!("{left} (solid)"))
            .x_label_formatter(&|x| grouped(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc(format!("{right} (dashed)"))
            .y_label_formatter(&|z| if *z >= 10.0 { format!("{z:.0}") } else { format!("{z:.2}") })
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        for (i, (v, l)) in lines.iter().enumerate() {
            let c = nth_color(i);
            let rss: Vec<(f64, f64)> = l.iter().filter_map(|p| Some((p.0, p.1?))).collect();
            let second: Vec<(f64, f64)> = l.iter().filter_map(|p| Some((p.0, p.2?))).collect();
            chart
                .draw_series(LineSeries::new(rss.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{v}: {left}"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3)));
            chart.draw_series(rss.iter().map(|p| Circle::new(*p, 4, c.filled()))).map_err(err)?;
            chart
                .draw_secondary_series(DashedLineSeries::new(second.iter().copied(), 7, 4, c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{v}: {right}"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 6, y)], c.stroke_width(2)));
            chart
                .draw_secondary_series(second.iter().map(|p| TriangleMarker::new(*p, 5, c.filled())))
                .map_err(err)?;
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
    use record::{Propagation, Resource, Run};

    fn run(rss_mib: u64, cpu: f64) -> Run {
        let load: record::Load = serde_json::from_str(
            r#"{"protocol":"http1","mode":"open","rate":100,"connections":8,"body_size":0,"duration_s":2,"requests":200,"errors":0,"achieved_rps":100,"latency_us":{"p50":900,"p90":0,"p99":2500,"p999":0,"p9999":0,"max":0,"mean":0},"service_time_us":{"p50":0,"p90":0,"p99":0,"p999":0,"p9999":0,"max":0,"mean":0},"histogram":""}"#,
        )
        .expect("a minimal load");
        Run {
            scenario: "endpoints".into(),
            variant: "weft".into(),
            substrate: "local".into(),
            repetition: 0,
            load,
            resources: vec![Resource {
                component: "proxy-outbound".into(),
                role: "proxy".into(),
                rss_peak_bytes: rss_mib << 20,
                rss_mean_bytes: rss_mib << 20,
                rss_anon_peak_bytes: None,
                cpu_seconds: cpu,
                samples: 8,
            }],
            proxy_counts: None,
            proxy_cpu: None,
            proxy_args: vec![],
            host: None,
        }
    }

    fn report() -> Report {
        let mut r = Report::new("sweeps", "2026-12-07T12:00:00Z", record::Env::default());
        let point = |size: usize, rss: u64, cpu: f64| SweepPoint {
            size,
            setup: format!("{size} endpoints ready"),
            setup_s: 0.5,
            proxy_rss_peak_bytes: Some(rss << 20),
            proxy_cpu_seconds: Some(cpu),
            run: Some(run(rss, cpu)),
            propagation: None,
        };
        r.sweeps.push(SweepRun {
            scenario: "endpoints".into(),
            variant: "weft".into(),
            substrate: "local".into(),
            repetition: 0,
            dimension: "endpoints".into(),
            rate: Some(100.0),
            nofile_limit: Some(20000),
            points: vec![point(1, 9, 0.05), point(100, 12, 0.08), point(10000, 70, 0.4)],
        });
        let prop = |services: usize, rss: u64, p99: f64| Propagation {
            scenario: String::new(),
            repetition: 0,
            services,
            endpoints: services,
            changes: 5,
            poll_ms: 250.0,
            startup_ms: 40.0,
            samples_ms: vec![],
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99,
            control_rss_bytes: rss << 20,
        };
        r.sweeps.push(SweepRun {
            scenario: "services".into(),
            variant: "weft".into(),
            substrate: "local".into(),
            repetition: 0,
            dimension: "services".into(),
            rate: None,
            nofile_limit: None,
            points: [(100, 14, 130.0), (1000, 30, 180.0)]
                .map(|(n, rss, p99)| SweepPoint {
                    size: n,
                    setup: String::new(),
                    setup_s: 1.0,
                    proxy_rss_peak_bytes: None,
                    proxy_cpu_seconds: None,
                    run: None,
                    propagation: Some(prop(n, rss, p99)),
                })
                .into(),
        });
        r
    }

    #[test]
    fn a_row_per_size_and_the_nofile_limit_said() {
        let t = tables(&report());
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].rows.len(), 3);
        assert_eq!(&t[0].rows[2][..5], ["10000", "`weft`", "0", "70.0", "0.40"]);
        assert!(t[0].note.contains("RLIMIT_NOFILE of bench and the proxies: 20000"), "{}", t[0].note);
        assert_eq!(&t[1].rows[1][..5], ["1000", "0", "30.0", "90.0", "180.0"]);
        assert_eq!(t[1].headers[2], "mesh-control RSS (MiB)");
    }

    #[test]
    fn the_chart_has_a_log_size_axis_both_costs_and_every_variant() {
        let r = report();
        let keys = scenarios(&r);
        let svg = chart_svg(&r, &keys[0]).unwrap();
        for want in ["Cost against endpoints", "endpoints (log scale)", "proxy RSS peak, MiB (solid)", "proxy CPU in the load window, s (dashed)", "weft: proxy RSS peak, MiB", "\n10,000\n</text>", "\n100\n</text>"] {
            assert!(svg.contains(want), "missing {want:?}");
        }
        let svg = chart_svg(&r, &keys[1]).unwrap();
        assert!(svg.contains("propagation p99, ms (dashed)") && svg.contains("1,000"), "services chart");
        assert_eq!(size_ticks(0.6, 16000.0, &[1.0, 100.0, 10000.0]), [1.0, 10.0, 100.0, 1000.0, 10000.0]);
        assert_eq!(grouped(10000.0), "10,000");
    }
}
