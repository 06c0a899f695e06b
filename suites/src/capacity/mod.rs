//! Capacity at an SLO (`mode = "capacity"`): on one deployed variant, the
//! highest open-loop rate whose latency percentile holds the bound with 0
//! errors. Each probe is an ordinary load cell at the search's rate,
//! measured by the substrate ([`Substrate::measure`]), so the search runs
//! wherever load cells run; [`search`] decides the next rate.

pub mod search;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use record::capacity::{CapacityRun, Probe};

use crate::plan::Cell;
use crate::substrate::{Deployment, LoadCell, Substrate};
use crate::suite::{CapacityShape, Scenario};
use search::{Search, Verdict};

/// Run one capacity search against `dep`; every probe goes into the
/// returned record, and a line per probe to `say`.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Substrate>(
    shape: &CapacityShape,
    scenario: &Scenario,
    cell: &Cell,
    index: usize,
    label: &str,
    dep: &Deployment,
    substrate: &mut S,
    progress: &MultiProgress,
    say: &dyn Fn(String),
) -> Result<CapacityRun, String> {
    let slo_us = shape.slo.as_secs_f64() * 1e6;
    let bar = progress.add(ProgressBar::new_spinner());
    bar.set_style(ProgressStyle::with_template("  {spinner} {msg}").expect("valid template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut search = Search::new(*shape);
    let mut probes: Vec<Probe> = Vec::new();
    let result = loop {
        let Some((phase, rate)) = search.next() else { break Ok(()) };
        let n = probes.len() + 1;
        bar.set_message(format!("{label}: probe {n} ({} at {rate:.0} rps)", phase.as_str()));
        let probe_cell = Cell { rate: Some(rate), ..cell.clone() };
        let probe_label = format!("{label} {} {rate:.0} rps", phase.as_str());
        let lc = LoadCell { scenario, cell: &probe_cell, index, label: &probe_label, progress };
        let run = match substrate.measure(dep, &lc).await {
            Ok(run) => run,
            Err(e) => break Err(format!("probe {n} at {rate:.0} rps: load generator failed: {e}")),
        };
        let (latency_us, service_us) = match (
            percentile(&run.load.histogram, shape.percentile),
            percentile(&run.load.service_histogram, shape.percentile),
        ) {
            // No service histogram (an older loadgen): nothing to blame the generator with.
            (Ok(l), Ok(s)) if run.load.service_histogram.is_empty() => (l, l.max(s)),
            (Ok(l), Ok(s)) => (l, s),
            (Err(e), _) | (_, Err(e)) => break Err(format!("probe {n} at {rate:.0} rps: {e}")),
        };
        let l = &run.load;
        let verdict = Verdict::judge(slo_us, latency_us, service_us, l.requests, l.errors, l.late_sends).under(run.host.as_ref());
        let steal = run.host.map_or(String::new(), |h| format!(", {:.0} % stolen", h.steal * 100.0));
        say(format!(
            "  probe {n} {} {rate:.0} rps: p{} {:.2} ms (service {:.2} ms), {} req, {} err, {} late{steal} -> {}",
            phase.as_str(),
            shape.percentile,
            latency_us / 1000.0,
            service_us / 1000.0,
            l.requests,
            l.errors,
            l.late_sends,
            verdict.as_str()
        ));
        search.observe(verdict);
        probes.push(Probe {
            phase: phase.as_str().to_string(),
            verdict: verdict.as_str().to_string(),
            percentile_us: latency_us,
            service_percentile_us: service_us,
            load: run.load,
            resources: run.resources,
            host: run.host,
        });
    };
    bar.finish_and_clear();
    progress.remove(&bar);
    result?;
    let o = search.outcome();
    Ok(CapacityRun {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.name().to_string(),
        repetition: cell.repetition,
        percentile: shape.percentile,
        slo_us,
        start_rate: shape.start_rate,
        max_rate: shape.max_rate,
        ramp_factor: shape.ramp_factor,
        tolerance: shape.tolerance,
        capacity_rps: o.capacity,
        validated: o.validated,
        limited_by: o.limit.as_str().to_string(),
        probes,
    })
}

/// One line for the terminal.
pub fn one_line(c: &CapacityRun) -> String {
    let validation = match (c.validated, c.validations().count()) {
        (_, 0) => "not validated".to_string(),
        (true, n) => format!("validated ({n} run{})", if n == 1 { "" } else { "s" }),
        (false, n) => format!("NOT validated ({n} runs failed)"),
    };
    format!(
        "capacity {:.0} rps at p{} <= {:.2} ms, {validation}, limited by {}, {} probes",
        c.capacity_rps,
        c.percentile,
        c.slo_us / 1000.0,
        c.limited_by,
        c.probes.len()
    )
}

/// The `p`-th percentile of an encoded histogram, µs (0 when empty).
fn percentile(encoded: &str, p: f64) -> Result<f64, String> {
    if encoded.is_empty() {
        return Ok(0.0);
    }
    let h = record::hist::decode(encoded).map_err(|e| format!("unreadable latency histogram: {e}"))?;
    Ok(match h.is_empty() {
        true => 0.0,
        false => h.value_at_quantile(p / 100.0) as f64,
    })
}
