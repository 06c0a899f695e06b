//! Overload: the chain's capacity measured closed loop, then `factor` x
//! capacity offered open loop over many connections (proxies sampled: peak
//! RSS), then a sustainable rate right after (recovery), compared with the
//! same rate before (quiet).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use record::faults::Phase;
use record::{OverloadRun, Percentiles};

use super::{load_config, phase, slices};
use crate::plan::Cell;
use crate::sampler::Sampler;
use crate::substrate::Deployment;
use crate::suite::{OverloadShape, Scenario};

/// Connections for the sustainable-rate phases (the overload uses the
/// scenario's `connections`).
const QUIET_CONNECTIONS: usize = 32;

pub(super) async fn run(
    shape: OverloadShape,
    scenario: &Scenario,
    cell: &Cell,
    dep: &Deployment,
    substrate: &str,
    bar: &ProgressBar,
) -> Result<OverloadRun, String> {
    let concurrency = match scenario.load {
        crate::suite::LoadShape::Closed { concurrency } => concurrency,
        _ => return Err("an overload scenario needs `concurrency` for its capacity run".into()),
    };
    fn fail(what: &'static str) -> impl Fn(loadgen::LoadError) -> String {
        move |e| format!("{what}: load generator failed: {e}")
    }

    phase(bar, "overload", &format!("capacity, closed loop c={concurrency}"));
    let mut cap_cfg = load_config(scenario, dep, loadgen::Mode::Closed { concurrency });
    cap_cfg.connections = concurrency;
    cap_cfg.duration = shape.capacity_duration;
    cap_cfg.warmup = Duration::from_secs(1);
    let capacity = loadgen::run(cap_cfg, Arc::default()).await.map_err(fail("capacity"))?;
    if capacity.achieved_rps < 1.0 {
        return Err(format!(
            "the capacity run completed {} requests ({} errors): nothing to overload",
            capacity.requests, capacity.errors
        ));
    }
    let sustainable = capacity.achieved_rps * shape.sustainable;
    let offered = capacity.achieved_rps * shape.factor;

    phase(bar, "overload", &format!("quiet at {sustainable:.0} rps"));
    let quiet = steady(scenario, dep, sustainable, scenario.warmup).await.map_err(fail("quiet"))?;

    phase(bar, "overload", &format!("{offered:.0} rps ({}x capacity)", shape.factor));
    let mut cfg = load_config(scenario, dep, loadgen::Mode::Open { rate: offered });
    cfg.warmup = Duration::ZERO;
    let progress = Arc::new(loadgen::Progress::default());
    // No warm-up: the window starts now, and so do the sampler and the
    // proxies' counts (compared with what loadgen sent: its `overflow`
    // never left it).
    let xcheck = crate::crosscheck::Window::open(&dep.admins, progress.clone(), Duration::ZERO).await;
    let sampler = Sampler::start(dep.components.clone());
    let run = loadgen::run_with_timeline(cfg, progress.clone(), Duration::from_secs(1));
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        tokio::select! {
            biased;
            r = &mut run => break r,
            _ = tick.tick() => phase(bar, "overload", &format!(
                "{offered:.0} rps: {} req, {} err",
                progress.completed.load(Ordering::Relaxed),
                progress.errors.load(Ordering::Relaxed)
            )),
        }
    };
    let resources = sampler.finish().await;
    let (over, timeline) = result.map_err(fail("overload"))?;
    let proxy_counts = crate::crosscheck::close(xcheck, "overload", &over).await;

    phase(bar, "overload", &format!("recovery at {sustainable:.0} rps"));
    // Right after: no warm-up to hide the tail of the overload in.
    let recovery = steady(scenario, dep, sustainable, Duration::ZERO).await.map_err(fail("recovery"))?;

    let shed = over.errors_by_class.get(loadgen::error_class::SHED).copied().unwrap_or(0);
    Ok(OverloadRun {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.to_string(),
        repetition: cell.repetition,
        capacity_rps: capacity.achieved_rps,
        capacity_concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
        capacity: phase_of(&capacity),
        factor: shape.factor,
        offered_rps: offered,
        connections: u32::try_from(scenario.connections).unwrap_or(u32::MAX),
        overload: phase_of(&over),
        shed,
        shed_latency_us: Percentiles::from_histogram(&timeline.shed_latency),
        admitted_latency_us: Percentiles::from_histogram(&timeline.admitted_latency),
        resources: resources.into_iter().filter(|r| r.role != "server").collect(),
        quiet: phase_of(&quiet),
        recovery: phase_of(&recovery),
        slices: slices(&timeline),
        proxy_cpu: None,
        proxy_args: Vec::new(),
        proxy_throttled: None,
        proxy_counts,
    })
}

/// Open loop at `rate` for the scenario's duration over a few connections.
async fn steady(
    scenario: &Scenario,
    dep: &Deployment,
    rate: f64,
    warmup: Duration,
) -> Result<record::Load, loadgen::LoadError> {
    let mut cfg = load_config(scenario, dep, loadgen::Mode::Open { rate });
    cfg.connections = QUIET_CONNECTIONS.min(scenario.connections);
    cfg.warmup = warmup;
    loadgen::run(cfg, Arc::default()).await
}

fn phase_of(l: &record::Load) -> Phase {
    Phase {
        rate: l.rate.unwrap_or_default(),
        duration_s: l.duration_s,
        requests: l.requests,
        errors: l.errors,
        errors_by_class: l.errors_by_class.clone(),
        achieved_rps: l.achieved_rps,
        latency_us: l.latency_us,
    }
}
