//! The hardening modes of a scenario: soak, faults under load, overload.
//! Each drives one `weft` deployment the runner made and returns its
//! record section (see `record::soak`, `record::faults`).
//!
//! ```text
//!  soak      open loop for `duration`; RSS + open fds of every process every `sample_interval`
//!  fault     open loop with a timeline; at `fault_at`: Begin, every `fault_every`: Tick,
//!            at `fault_at + fault_for`: End (Substrate::fault); windows before/during/after
//!  overload  closed loop (capacity) -> open at factor x capacity -> open at a sustainable rate
//! ```

mod faults;
mod overload;
mod soak;

use std::time::Duration;

use indicatif::ProgressBar;
use record::faults::{Slice, Window};
use record::{FaultRun, OverloadRun, Percentiles, Run, Soak};

use crate::plan::Cell;
use crate::substrate::{Deployment, Substrate};
use crate::suite::{Hardening, Protocol, Scenario};

/// What one hardening cell produced.
pub enum Section {
    /// The soak's load run (it also goes into the report's runs) and its series.
    Soak(Box<(Run, Soak)>),
    Fault(Box<FaultRun>),
    Overload(Box<OverloadRun>),
}

impl Section {
    /// One line for the terminal.
    pub fn one_line(&self) -> String {
        let ms = |us: f64| us / 1000.0;
        match self {
            Section::Soak(b) => {
                let (run, soak) = &**b;
                let verdict = match soak.flat {
                    true => "FLAT".to_string(),
                    false => format!("NOT FLAT ({})", soak.reasons.join("; ")),
                };
                format!("{}; {verdict}", crate::runner::one_line(run))
            }
            Section::Fault(f) => format!(
                "{} req, {} err ({} idempotent), p99 before {:.2} ms, during {:.2} ms, after {:.2} ms, recovered {}{}",
                f.requests,
                f.errors,
                f.idempotent_errors,
                ms(f.before.latency_us.p99),
                ms(f.during.latency_us.p99),
                ms(f.after.latency_us.p99),
                f.recovery_s.map_or("never (still bad at the end)".to_string(), |s| format!("after {s:.1} s")),
                f.proxy_counts.as_ref().map_or(String::new(), crate::crosscheck::one_line)
            ),
            Section::Overload(o) => format!(
                "capacity {:.0} rps; at {:.0} rps: achieved {:.0} rps, {} req, {} err, {} shed (p50 {:.2} ms, p99 {:.2} ms), admitted p50 {:.2} ms p99 {:.2} ms, proxy rss peak {:.1} MiB; recovery at {:.0} rps: {} err, p99 {:.2} ms (quiet {:.2} ms){}",
                o.capacity_rps,
                o.offered_rps,
                o.overload.achieved_rps,
                o.overload.requests,
                o.overload.errors,
                o.shed,
                ms(o.shed_latency_us.p50),
                ms(o.shed_latency_us.p99),
                ms(o.admitted_latency_us.p50),
                ms(o.admitted_latency_us.p99),
                o.resources.iter().filter(|r| r.role == "proxy").map(|r| r.rss_peak_bytes).sum::<u64>() as f64 / (1024.0 * 1024.0),
                o.recovery.rate,
                o.recovery.errors,
                ms(o.recovery.latency_us.p99),
                ms(o.quiet.latency_us.p99),
                o.proxy_counts.as_ref().map_or(String::new(), crate::crosscheck::one_line)
            ),
        }
    }

    /// Notes the cell's proxy CPU limit (and, for an overload, how much
    /// the proxies were throttled by it).
    pub fn with_proxy_cpu(mut self, proxy_cpu: Option<f64>, throttled: Option<Option<f64>>) -> Self {
        match &mut self {
            Section::Soak(b) => b.0.proxy_cpu = proxy_cpu,
            Section::Fault(_) => {}
            Section::Overload(o) => {
                o.proxy_cpu = proxy_cpu;
                o.proxy_throttled = throttled.flatten();
            }
        }
        self
    }

    /// Notes the mesh-proxy flags the scenario added (overload only: the
    /// soak and fault records run on the defaults' figures).
    pub fn with_proxy_args(mut self, args: &[String]) -> Self {
        if let Section::Overload(o) = &mut self {
            o.proxy_args = args.to_vec();
        }
        self
    }

    /// Put the section where the report keeps it.
    pub fn file(self, runs: &mut Vec<Run>, into: &mut record::Hardening) {
        match self {
            Section::Soak(b) => {
                let (run, soak) = *b;
                runs.push(run);
                into.soak.push(soak);
            }
            Section::Fault(f) => into.faults.push(*f),
            Section::Overload(o) => into.overload.push(*o),
        }
    }
}

/// Run one cell of a hardening scenario on `dep`.
pub async fn run<S: Substrate>(
    h: &Hardening,
    scenario: &Scenario,
    cell: &Cell,
    dep: &Deployment,
    substrate: &mut S,
    bar: &ProgressBar,
) -> Result<Section, String> {
    let name = substrate.name();
    match h {
        Hardening::Soak(shape) => soak::run(*shape, scenario, cell, dep, name, bar)
            .await
            .map(|r| Section::Soak(Box::new(r))),
        Hardening::Fault(shape) => faults::run(*shape, scenario, cell, dep, substrate, bar)
            .await
            .map(|r| Section::Fault(Box::new(r))),
        Hardening::Overload(shape) => overload::run(*shape, scenario, cell, dep, name, bar)
            .await
            .map(|r| Section::Overload(Box::new(r))),
    }
}

/// The load generator's configuration for `dep` with the scenario's
/// settings, in `mode`.
pub(crate) fn load_config(
    scenario: &Scenario,
    dep: &Deployment,
    mode: loadgen::Mode,
) -> loadgen::LoadConfig {
    loadgen::LoadConfig {
        target: format!("http://{}/", dep.target)
            .parse()
            .expect("socket address forms a valid URI"),
        host: dep.host.clone(),
        mode,
        duration: scenario.duration,
        warmup: scenario.warmup,
        connections: scenario.connections,
        http2: scenario.protocol == Protocol::Http2,
        proto: scenario.protocol.load(),
        body_size: scenario.body_size,
        timeout: scenario.timeout,
    }
}

/// The record's slices of a timeline.
fn slices(t: &loadgen::Timeline) -> Vec<Slice> {
    let w = t.slice.as_secs_f64();
    t.slices
        .iter()
        .enumerate()
        .map(|(i, s)| Slice {
            t_s: i as f64 * w,
            requests: s.requests,
            errors: s.errors,
            shed: s.shed,
            p50_us: quantile(&s.latency, 0.5),
            p99_us: quantile(&s.latency, 0.99),
        })
        .collect()
}

fn quantile(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    match h.is_empty() {
        true => 0.0,
        false => h.value_at_quantile(q) as f64,
    }
}

/// The requests scheduled in `[from, to)` of the measured window.
fn window(t: &loadgen::Timeline, from: Duration, to: Duration) -> Window {
    let mut h = loadgen::new_histogram();
    let (mut requests, mut errors) = (0, 0);
    for (i, s) in t.slices.iter().enumerate() {
        let start = t.slice * i as u32;
        if start >= from && start < to {
            requests += s.requests;
            errors += s.errors;
            h.add(&s.latency).expect("same bounds");
        }
    }
    Window {
        requests,
        errors,
        latency_us: Percentiles::from_histogram(&h),
    }
}

/// Keep a spinner's message current while a phase runs.
fn phase(bar: &ProgressBar, label: &str, what: &str) {
    bar.set_message(format!("{label}: {what}"));
}
