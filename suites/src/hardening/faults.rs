//! Faults under load: open-loop load with a timeline while the substrate
//! disrupts the deployment on a schedule; the windows before, during and
//! after, and the time to recover.
//!
//! The schedule's clock starts when the load generator leaves its warm-up
//! (observed every 20 ms, so events are placed within ~20 ms of the
//! timeline's slices).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use record::FaultRun;

use super::{load_config, phase, slices, window};
use crate::plan::Cell;
use crate::substrate::FaultStep;
use crate::substrate::{Deployment, Substrate};
use crate::suite::{Fault, FaultShape, Scenario};

/// Width of a timeline slice.
const SLICE: Duration = Duration::from_millis(500);
/// A slice after the fault start is bad when it has errors or its p99 is
/// above `max(2 x before p99, before p99 + SLACK)` (the slack keeps a quiet
/// sub-millisecond p99 from making every scheduling hiccup a "bad" slice).
const SLACK_US: f64 = 2_000.0;

pub(super) async fn run<S: Substrate>(
    shape: FaultShape,
    scenario: &Scenario,
    cell: &Cell,
    dep: &Deployment,
    substrate: &mut S,
    bar: &ProgressBar,
) -> Result<FaultRun, String> {
    let rate = cell.rate.ok_or("a fault scenario runs at a fixed rate")?;
    let cfg = load_config(scenario, dep, loadgen::Mode::Open { rate });
    let progress = Arc::new(loadgen::Progress::default());
    // The proxies' own counts over the window, beside loadgen's (a proxy the
    // fault kills or restarts is marked so, not compared as if whole).
    let xcheck = crate::crosscheck::Window::open(&dep.admins, progress.clone(), scenario.warmup).await;
    let load = loadgen::run_with_timeline(cfg, progress.clone(), SLICE);
    tokio::pin!(load);
    let mut steps = schedule(shape).into_iter().peekable();
    let mut events = Vec::new();
    let mut failed: Option<String> = None;
    let mut t0: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let label = format!("{} {rate} rps", shape.fault.as_str());
    let result = loop {
        tokio::select! {
            biased;
            r = &mut load => break r,
            _ = tick.tick() => {
                if t0.is_none() && !progress.in_warmup.load(Ordering::Relaxed) {
                    t0 = Some(Instant::now());
                }
                let Some(t0) = t0 else {
                    phase(bar, &label, "warm-up");
                    continue;
                };
                phase(bar, &label, &format!(
                    "{:.0}/{:.0} s, {} err",
                    t0.elapsed().as_secs_f64(),
                    scenario.duration.as_secs_f64(),
                    progress.errors.load(Ordering::Relaxed)
                ));
                while let Some((at, step)) = steps.next_if(|(at, _)| t0.elapsed() >= *at) {
                    let _ = at;
                    apply(substrate, dep, shape.fault, step, t0, &mut events, &mut failed).await;
                }
            }
        }
    };
    // A run that ended early still ends its fault (a frozen proxy thawed,
    // a killed control plane back), so the teardown finds what it started.
    for (_, step) in steps.filter(|(_, s)| *s == FaultStep::End) {
        let t0 = t0.unwrap_or_else(Instant::now);
        apply(substrate, dep, shape.fault, step, t0, &mut events, &mut failed).await;
    }
    let (load, timeline) = result.map_err(|e| format!("load generator failed: {e}"))?;
    if let Some(e) = failed {
        return Err(format!("the {} fault could not be applied: {e}", shape.fault.as_str()));
    }
    let proxy_counts = crate::crosscheck::close(xcheck, &label, &load).await;
    let (at, until) = (shape.at, shape.at + shape.length);
    let before = window(&timeline, Duration::ZERO, at);
    let during = window(&timeline, at, until);
    let after = window(&timeline, until, Duration::MAX);
    let slices = slices(&timeline);
    let threshold = (before.requests > 0)
        .then(|| (2.0 * before.latency_us.p99).max(before.latency_us.p99 + SLACK_US));
    let recovery_s = recovery(&slices, at.as_secs_f64(), SLICE.as_secs_f64(), threshold);
    // loadgen sends GET without a body when body_size is 0: every failure
    // was of a request the mesh could have retried.
    let idempotent_errors = match scenario.body_size {
        0 => load.errors,
        _ => 0,
    };
    Ok(FaultRun {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.name().to_string(),
        repetition: cell.repetition,
        fault: shape.fault.as_str().to_string(),
        rate,
        duration_s: load.duration_s,
        fault_at_s: at.as_secs_f64(),
        fault_for_s: shape.length.as_secs_f64(),
        requests: load.requests,
        errors: load.errors,
        errors_by_class: load.errors_by_class.clone(),
        idempotent_errors,
        before,
        during,
        after,
        recovery_s,
        events,
        slices,
        proxy_counts,
    })
}

async fn apply<S: Substrate>(
    substrate: &mut S,
    dep: &Deployment,
    fault: Fault,
    step: FaultStep,
    t0: Instant,
    events: &mut Vec<String>,
    failed: &mut Option<String>,
) {
    let t = t0.elapsed().as_secs_f64();
    match substrate.fault(dep, fault, step).await {
        Ok(msg) if msg.is_empty() => {}
        Ok(msg) => events.push(format!("{t:.2} s: {msg}")),
        Err(e) => {
            events.push(format!("{t:.2} s: FAILED {step:?}: {e}"));
            failed.get_or_insert(e.to_string());
        }
    }
}

/// When each step happens, from the start of the measured window.
fn schedule(shape: FaultShape) -> Vec<(Duration, FaultStep)> {
    let end = shape.at + shape.length;
    let mut steps = vec![(shape.at, FaultStep::Begin)];
    if shape.fault == Fault::EndpointChurn {
        let mut n = 0u32;
        while shape.at + shape.every * n < end {
            steps.push((shape.at + shape.every * n, FaultStep::Tick(n)));
            n += 1;
        }
    }
    steps.push((end, FaultStep::End));
    steps
}

/// Seconds from `at` to the end of the last bad slice starting at or after
/// it (errors, or p99 above `threshold`); 0 without one; `None` when the
/// run's last slice was still bad.
fn recovery(slices: &[record::faults::Slice], at: f64, width: f64, threshold: Option<f64>) -> Option<f64> {
    let bad = |s: &record::faults::Slice| s.errors > 0 || threshold.is_some_and(|t| s.p99_us > t);
    let last_bad = slices.iter().rposition(|s| s.t_s + 1e-9 >= at && bad(s));
    match last_bad {
        None => Some(0.0),
        Some(i) if i + 1 == slices.len() => None,
        Some(i) => Some((slices[i].t_s + width - at).max(0.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::faults::Slice;

    fn slice(t_s: f64, errors: u64, p99_us: f64) -> Slice {
        Slice { t_s, requests: 10, errors, shed: 0, p50_us: 100.0, p99_us }
    }

    #[test]
    fn recovery_is_the_end_of_the_last_bad_slice() {
        let s = vec![slice(0.0, 0, 500.0), slice(0.5, 3, 500.0), slice(1.0, 0, 9000.0), slice(1.5, 0, 500.0), slice(2.0, 0, 400.0)];
        assert_eq!(recovery(&s, 0.5, 0.5, Some(2500.0)), Some(1.0));
        assert_eq!(recovery(&s, 0.5, 0.5, None), Some(0.5), "latency not judged without a before window");
        assert_eq!(recovery(&s[..3], 0.5, 0.5, Some(2500.0)), None, "still bad at the end");
        assert_eq!(recovery(&s, 1.5, 0.5, Some(2500.0)), Some(0.0), "bad only before the fault");
    }

    #[test]
    fn churn_ticks_every_period_inside_the_window() {
        let shape = FaultShape {
            fault: Fault::EndpointChurn,
            at: Duration::from_secs(2),
            length: Duration::from_secs(3),
            every: Duration::from_secs(1),
        };
        let s = schedule(shape);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0], (Duration::from_secs(2), FaultStep::Begin));
        assert_eq!(s[3], (Duration::from_secs(4), FaultStep::Tick(2)));
        assert_eq!(s[4], (Duration::from_secs(5), FaultStep::End));
        let kill = schedule(FaultShape { fault: Fault::ReplicaKill, ..shape });
        assert_eq!(kill.len(), 2);
    }
}
