//! The hardening sections of a report (soak, faults under load, overload):
//! one set of tables both formats print, and the time-series charts the
//! HTML page shows (and `soak.svg` / `faults.svg` beside it).

use plotters::prelude::*;

use super::charts::{draw_xy, nth_color, Series};
use super::RenderError;
use crate::Report;
use record::faults::Slice;
use record::soak::Soak;

const MIB: f64 = 1024.0 * 1024.0;

/// One table of a section: title, a sentence under it, headers, rows.
pub(super) struct Table {
    pub title: String,
    pub note: String,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn spread(s: Option<f64>) -> String {
    s.map_or("—".into(), |x| format!("{:+.1} %", (x - 1.0) * 100.0))
}

/// The tables of every hardening section the report has, in order.
pub(super) fn tables(report: &Report) -> Vec<Table> {
    let h = &report.hardening;
    let mut out = Vec::new();
    for s in &h.soak {
        let verdict = match s.flat {
            true => "**FLAT**".to_string(),
            false => format!("**NOT FLAT**: {}", s.reasons.join("; ")),
        };
        out.push(Table {
            title: format!("Soak `{}`: {} rps for {:.0} s through `{}`", s.scenario, s.rate, s.duration_s, s.variant),
            note: format!(
                "{} requests, {} errors. Rule: samples every {} s; from {} s on, medians of consecutive {} s windows; flat when max/min ≤ {:.2} for RSS and open fds of every proxy and control plane, and 0 errors. Verdict: {verdict}",
                s.requests, s.errors, s.interval_s, s.settle_s, s.window_s, 1.0 + s.tolerance
            ),
            headers: vec!["process", "role", "RSS first (MiB)", "RSS last (MiB)", "RSS max (MiB)", "RSS spread", "fds first", "fds last", "fds max", "fds spread"],
            rows: s
                .processes
                .iter()
                .map(|p| {
                    let mib = |v: Option<&u64>| v.map_or("—".into(), |b| format!("{:.1}", *b as f64 / MIB));
                    let n = |v: Option<&u64>| v.map_or("—".into(), |n| n.to_string());
                    vec![
                        format!("`{}`", p.component),
                        p.role.clone(),
                        mib(p.rss_bytes.first()),
                        mib(p.rss_bytes.last()),
                        mib(p.rss_bytes.iter().max()),
                        spread(p.rss_spread),
                        n(p.fds.first()),
                        n(p.fds.last()),
                        n(p.fds.iter().max()),
                        spread(p.fds_spread),
                    ]
                })
                .collect(),
        });
    }
    if !h.faults.is_empty() {
        out.push(Table {
            title: "Faults under load".into(),
            note: "Windows by scheduled send time: before the fault, during it (`fault_for` from its start), after. Recovered: from the fault's start to the end of the last 0.5 s slice with errors or a p99 above max(2 × before p99, before p99 + 2 ms); “never” if the run ended bad. Idempotent: failed GETs without a body, which the mesh could have retried. Proxy count: requests the client-side Weft proxy counted over the window vs the ones loadgen sent (⚠: more than 0.1 % apart; not comparable: that proxy restarted or could not be scraped). Events list what the harness did.".into(),
            headers: vec!["fault", "rate", "requests", "failed", "idempotent failed", "p99 before (ms)", "p99 during (ms)", "max during (ms)", "p99 after (ms)", "recovered", "proxy count", "events"],
            rows: h
                .faults
                .iter()
                .map(|f| {
                    vec![
                        format!("`{}`", f.fault),
                        format!("{:.0}", f.rate),
                        f.requests.to_string(),
                        match f.errors {
                            0 => "0".into(),
                            n => format!("{n} ({})", f.errors_by_class.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")),
                        },
                        f.idempotent_errors.to_string(),
                        if f.before.requests == 0 { "—".into() } else { ms(f.before.latency_us.p99) },
                        ms(f.during.latency_us.p99),
                        ms(f.during.latency_us.max),
                        if f.after.requests == 0 { "—".into() } else { ms(f.after.latency_us.p99) },
                        f.recovery_s.map_or("never".into(), |s| format!("{s:.1} s")),
                        super::crosscheck_cell(f.proxy_counts.as_ref()),
                        f.events.join("; "),
                    ]
                })
                .collect(),
        });
    }
    for o in &h.overload {
        let proxy_peak: u64 = o.resources.iter().filter(|r| r.role == "proxy").map(|r| r.rss_peak_bytes).sum();
        out.push(Table {
            title: format!("Overload `{}`: {}x the measured capacity through `{}`", o.scenario, o.factor, o.variant),
            note: format!(
                "Capacity {:.0} rps (closed loop, {} in flight). Offered {:.0} rps open loop over {} connections. Shed by a proxy (`weft-proxy-error-kind: overloaded`): {} (p50 {} ms, p99 {} ms); the rest, admitted: p50 {} ms, p99 {} ms. Proxies' peak RSS during the overload (summed): {:.1} MiB ({}).",
                o.capacity_rps,
                o.capacity_concurrency,
                o.offered_rps,
                o.connections,
                o.shed,
                ms(o.shed_latency_us.p50),
                ms(o.shed_latency_us.p99),
                ms(o.admitted_latency_us.p50),
                ms(o.admitted_latency_us.p99),
                proxy_peak as f64 / MIB,
                o.resources
                    .iter()
                    .map(|r| format!("{} {:.1} MiB", r.component, r.rss_peak_bytes as f64 / MIB))
                    .collect::<Vec<_>>()
                    .join(", ")
            ) + &limited(o)
                + &o.proxy_counts.as_ref().map_or(String::new(), |c| {
                    format!(
                        " Proxy count over the overload phase (requests the client-side Weft proxy counted vs the ones loadgen sent; its own overflow, {} requests, never left it): {}.",
                        c.loadgen_not_sent,
                        super::crosscheck_cell(Some(c))
                    )
                }),
            headers: vec!["phase", "offered rps", "achieved rps", "requests", "errors", "p50 (ms)", "p99 (ms)", "max (ms)"],
            rows: [
                ("capacity (closed loop)", &o.capacity),
                ("quiet (before)", &o.quiet),
                ("overload", &o.overload),
                ("recovery (right after)", &o.recovery),
            ]
                .into_iter()
                .map(|(name, p)| {
                    vec![
                        name.to_string(),
                        format!("{:.0}", p.rate),
                        format!("{:.0}", p.achieved_rps),
                        p.requests.to_string(),
                        match p.errors {
                            0 => "0".into(),
                            n => format!("{n} ({})", p.errors_by_class.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")),
                        },
                        ms(p.latency_us.p50),
                        ms(p.latency_us.p99),
                        ms(p.latency_us.max),
                    ]
                })
                .collect(),
        });
    }
    out
}

/// RSS and open fds over time, one line per process.
pub(super) fn soak_svg(s: &Soak) -> Result<String, RenderError> {
    super::ensure_font()?;
    let pick = |f: &dyn Fn(&record::soak::ProcessSeries, usize) -> f64| -> Vec<Series> {
        s.processes
            .iter()
            .enumerate()
            .map(|(i, p)| Series {
                label: p.component.clone(),
                color: nth_color(i),
                points: (0..p.t_s.len()).map(|k| (p.t_s[k] / 60.0, f(p, k))).collect(),
            })
            .collect()
    };
    let rss = pick(&|p, k| p.rss_bytes[k] as f64 / MIB);
    let fds = pick(&|p, k| p.fds[k] as f64);
    two_panels(
        ("RSS over time", "minutes into the run", "RSS, MiB", &rss),
        ("open fds over time", "minutes into the run", "open fds", &fds),
    )
}

/// p99 and failed requests per slice of a fault or overload run.
pub(super) fn slices_svg(slices: &[Slice]) -> Result<String, RenderError> {
    super::ensure_font()?;
    let p99 = vec![Series {
        label: "p99".into(),
        color: nth_color(0),
        points: slices.iter().filter(|s| s.requests > 0).map(|s| (s.t_s, s.p99_us / 1000.0)).collect(),
    }];
    let errors = vec![
        Series { label: "failed".into(), color: nth_color(3), points: slices.iter().map(|s| (s.t_s, s.errors as f64)).collect() },
        Series { label: "shed".into(), color: nth_color(2), points: slices.iter().map(|s| (s.t_s, s.shed as f64)).collect() },
    ];
    two_panels(
        ("p99 per slice", "seconds into the run", "p99, ms", &p99),
        ("failed / shed per slice", "seconds into the run", "requests", &errors),
    )
}

fn two_panels(left: (&str, &str, &str, &[Series]), right: (&str, &str, &str, &[Series])) -> Result<String, RenderError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| RenderError::Chart(format!("{e:?}")))?;
        let (l, r) = root.split_horizontally(480);
        draw_xy(&l, left.0, left.1, left.2, left.3)?;
        draw_xy(&r, right.0, right.1, right.2, right.3)?;
        root.present().map_err(|e| RenderError::Chart(format!("{e:?}")))?;
    }
    Ok(svg)
}

/// A legend line: each series' colour and name, for the HTML page.
pub(super) fn soak_keys(s: &Soak) -> Vec<(String, RGBColor)> {
    s.processes.iter().enumerate().map(|(i, p)| (p.component.clone(), nth_color(i))).collect()
}

/// The overload's CPU limit, when it had one: what made the proxy the
/// saturated part, and whether it was.
fn limited(o: &record::OverloadRun) -> String {
    let flags = match o.proxy_args.is_empty() {
        true => String::new(),
        false => format!(" Proxy flags: `{}`.", o.proxy_args.join(" ")),
    };
    let cpu = match (o.proxy_cpu, o.proxy_throttled) {
        (None, _) => String::new(),
        (Some(cpu), Some(t)) => format!(
            " Each proxy limited to {cpu} CPU (a CFS quota, like a pod's CPU limit): throttled in {:.0} % of its 10 ms periods over the cell.",
            t * 100.0
        ),
        (Some(cpu), None) => format!(" Each proxy limited to {cpu} CPU (a CFS quota, like a pod's CPU limit)."),
    };
    cpu + &flags
}
