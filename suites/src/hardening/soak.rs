//! Soak: steady open-loop load for the scenario's `duration` while every
//! process's RSS and open fds are sampled every `sample_interval`; then the
//! flatness verdict (rule in `record::soak`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use record::soak::{spread, Soak};
use record::Run;

use super::{load_config, phase};
use crate::plan::Cell;
use crate::sampler::{HostClock, Sampler};
use crate::substrate::Deployment;
use crate::suite::{Scenario, SoakShape};

pub(super) async fn run(
    shape: SoakShape,
    scenario: &Scenario,
    cell: &Cell,
    dep: &Deployment,
    substrate: &str,
    bar: &ProgressBar,
) -> Result<(Run, Soak), String> {
    let rate = cell.rate.ok_or("a soak scenario runs at a fixed rate")?;
    let cfg = load_config(scenario, dep, loadgen::Mode::Open { rate });
    let progress = Arc::new(loadgen::Progress::default());
    // The proxies' own counts over the soak's window, beside loadgen's.
    let xcheck = crate::crosscheck::Window::open(&dep.admins, progress.clone(), scenario.warmup).await;
    let load = loadgen::run(cfg, progress.clone());
    tokio::pin!(load);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sampler: Option<(Sampler, Instant)> = None;
    let mut finished = None;
    // The machine over the same window as the sampler.
    let (mut host_from, mut host) = (None, None);
    let label = format!("soak {rate} rps");
    let result = loop {
        tokio::select! {
            biased;
            r = &mut load => break r,
            _ = tick.tick() => {
                let warm = progress.in_warmup.load(Ordering::Relaxed);
                let done = progress.completed.load(Ordering::Relaxed);
                let errors = progress.errors.load(Ordering::Relaxed);
                match &sampler {
                    Some((_, t0)) => phase(bar, &label, &format!(
                        "{:.0}/{:.0} s, {done} req, {errors} err",
                        t0.elapsed().as_secs_f64(),
                        scenario.duration.as_secs_f64()
                    )),
                    None => phase(bar, &label, "warm-up"),
                }
                if sampler.is_none() && finished.is_none() && !warm {
                    let origin = Instant::now();
                    sampler = Some((Sampler::start_series(dep.components.clone(), shape.interval, origin), origin));
                    host_from = HostClock::now();
                }
                if sampler.as_ref().is_some_and(|(_, t0)| t0.elapsed() >= scenario.duration) {
                    let (s, _) = sampler.take().expect("checked");
                    host = HostClock::window_since(host_from);
                    finished = Some(s.finish_series().await);
                }
            }
        }
    };
    let load = result.map_err(|e| format!("load generator failed: {e}"))?;
    let (resources, processes) = match (finished, sampler) {
        (Some(f), _) => f,
        (None, Some((s, _))) => {
            host = HostClock::window_since(host_from);
            s.finish_series().await
        }
        (None, None) => (Vec::new(), Vec::new()),
    };
    let proxy_counts = crate::crosscheck::close(xcheck, &label, &load).await;
    let soak = judge(shape, scenario, cell, substrate, &load, processes);
    let run = Run {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.to_string(),
        repetition: cell.repetition,
        load,
        resources,
        proxy_counts,
        proxy_cpu: None,
        proxy_args: Vec::new(),
        host,
    };
    Ok((run, soak))
}

/// Spreads per series and the verdict.
fn judge(
    shape: SoakShape,
    scenario: &Scenario,
    cell: &Cell,
    substrate: &str,
    load: &record::Load,
    mut processes: Vec<record::soak::ProcessSeries>,
) -> Soak {
    let (settle, window) = (shape.settle.as_secs_f64(), shape.window.as_secs_f64());
    let limit = 1.0 + shape.tolerance;
    let mut reasons = Vec::new();
    if load.errors > 0 {
        reasons.push(format!("{} of {} requests failed ({:?})", load.errors, load.requests, load.errors_by_class));
    }
    for p in &mut processes {
        p.rss_spread = spread(&p.t_s, &p.rss_bytes, settle, window);
        p.fds_spread = spread(&p.t_s, &p.fds, settle, window);
        if !p.judged() {
            continue;
        }
        for (what, s) in [("RSS", p.rss_spread), ("open fds", p.fds_spread)] {
            match s {
                None => reasons.push(format!(
                    "{}: {what}: fewer than two {window} s windows after {settle} s (or a zero median)",
                    p.component
                )),
                Some(x) if x > limit => reasons.push(format!(
                    "{}: {what} window medians spread {:.1} % (max/min {x:.3} > {limit:.2})",
                    p.component,
                    (x - 1.0) * 100.0
                )),
                Some(_) => {}
            }
        }
    }
    if !processes.iter().any(|p| p.judged()) {
        reasons.push("no proxy or control plane process was sampled".into());
    }
    Soak {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.to_string(),
        repetition: cell.repetition,
        rate: cell.rate.unwrap_or_default(),
        duration_s: load.duration_s,
        requests: load.requests,
        errors: load.errors,
        interval_s: shape.interval.as_secs_f64(),
        settle_s: settle,
        window_s: window,
        tolerance: shape.tolerance,
        flat: reasons.is_empty(),
        reasons,
        processes,
    }
}
