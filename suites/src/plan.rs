//! The plan: a suite expanded into the ordered list of cells to measure.
//!
//! ```text
//! for scenario:            (server started once per scenario)
//!   for point (rate | concurrency):
//!     for repetition r:
//!       for variant in rotate(variants, r):   <- interleaved, rotated
//! ```
//!
//! Variants are interleaved inside each (point, repetition) so that slow
//! drifts in machine noise (thermal, a neighbour's build) hit all variants
//! alike, and the order rotates per repetition so no variant always runs
//! first after the server starts.

use std::fmt::Write as _;
use std::time::Duration;

use crate::suite::{Hardening, LoadShape, Suite, Variant};

/// One measured cell of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Index into `Suite::scenarios`.
    pub scenario: usize,
    /// Open-loop rate (requests/s); `None` for closed loop.
    pub rate: Option<f64>,
    /// From 0.
    pub repetition: u32,
    pub variant: Variant,
}

/// Rough cost of starting and tearing down one variant's processes, used
/// only for the estimate `bench plan` prints.
const DEPLOY_OVERHEAD: Duration = Duration::from_millis(600);
/// Rough cost of starting the target server once per scenario.
const SERVER_OVERHEAD: Duration = Duration::from_millis(400);
/// Rough cost of starting the control plane (it generates its CA) once per
/// scenario that has a meshed variant.
const CONTROL_OVERHEAD: Duration = Duration::from_millis(500);
/// Rough cost of one more server replica (and, for `weft`, its sidecar).
const REPLICA_OVERHEAD: Duration = Duration::from_millis(300);
/// Rough fixed cost of one propagation measurement (writing the manifests,
/// starting the control plane, opening the watches) ...
const PROPAGATION_OVERHEAD: Duration = Duration::from_millis(1500);
/// ... plus per edit: on average half the 250 ms poll of spreading the
/// edits over the poll period, and half a poll until it is seen.
const PROPAGATION_PER_CHANGE: Duration = Duration::from_millis(250);

/// Expand a suite into cells, in run order.
pub fn cells(suite: &Suite) -> Vec<Cell> {
    let mut out = Vec::new();
    for (si, sc) in suite.scenarios.iter().enumerate() {
        let points: Vec<Option<f64>> = match &sc.load {
            LoadShape::Open { rates } => rates.iter().map(|r| Some(*r)).collect(),
            // A capacity cell's rates are the search's: one cell per variant.
            LoadShape::Closed { .. } | LoadShape::Propagation(_) | LoadShape::Capacity(_) | LoadShape::Sweep(_) => vec![None],
        };
        for rate in points {
            for repetition in 0..sc.repetitions {
                let n = sc.variants.len();
                for k in 0..n {
                    let variant = sc.variants[(k + repetition as usize) % n];
                    out.push(Cell {
                        scenario: si,
                        rate,
                        repetition,
                        variant,
                    });
                }
            }
        }
    }
    out
}

/// Estimated wall time of running the whole plan.
pub fn estimate(suite: &Suite, cells: &[Cell]) -> Duration {
    let servers = suite.scenarios.iter().fold(Duration::ZERO, |acc, sc| {
        if matches!(sc.load, LoadShape::Propagation(_)) || matches!(&sc.load, LoadShape::Sweep(w) if !w.dimension.is_load()) {
            return acc;
        }
        let control = sc.variants.iter().any(|v| v.needs_control_plane());
        acc + SERVER_OVERHEAD
            + REPLICA_OVERHEAD * (sc.replicas as u32 - 1)
            + if control {
                CONTROL_OVERHEAD
            } else {
                Duration::ZERO
            }
    });
    cells.iter().fold(servers, |acc, c| {
        let sc = &suite.scenarios[c.scenario];
        match &sc.load {
            LoadShape::Propagation(p) => {
                acc + PROPAGATION_OVERHEAD + PROPAGATION_PER_CHANGE * p.changes as u32
            }
            // The most probes the search can take: an upper bound.
            LoadShape::Capacity(c) => acc + DEPLOY_OVERHEAD + (sc.warmup + sc.duration) * c.max_probes(),
            LoadShape::Sweep(w) => acc + sweep_estimate(sc, w),
            _ => {
                let sidecars = match c.variant {
                    // One server-side proxy per replica.
                    v if v == Variant::Weft || v.is_peer_chain() => {
                        REPLICA_OVERHEAD * (sc.replicas as u32 - 1)
                    }
                    _ => Duration::ZERO,
                };
                // Capacity (1 s warm-up), quiet, overload, recovery.
                let extra = match &sc.hardening {
                    Some(Hardening::Overload(o)) => {
                        o.capacity_duration + Duration::from_secs(1) + sc.duration * 2
                    }
                    _ => Duration::ZERO,
                };
                acc + sc.warmup + sc.duration + DEPLOY_OVERHEAD + sidecars + extra
            }
        }
    })
}

/// Time spent measuring: every cell's measured window(s), without warm-ups
/// or process start-up; a propagation run counts whole (the edits are timed
/// throughout) and a capacity search at its most probes. The figure the
/// quick suite's budget (about 3 minutes) is held to.
pub fn measuring(suite: &Suite, cells: &[Cell]) -> Duration {
    cells.iter().fold(Duration::ZERO, |acc, c| {
        let sc = &suite.scenarios[c.scenario];
        acc + match &sc.load {
            LoadShape::Propagation(p) => PROPAGATION_OVERHEAD + PROPAGATION_PER_CHANGE * p.changes as u32,
            LoadShape::Capacity(k) => sc.duration * k.max_probes(),
            LoadShape::Sweep(w) => match w.dimension.is_load() {
                true => sc.duration * w.sizes.len() as u32,
                false => (PROPAGATION_OVERHEAD + PROPAGATION_PER_CHANGE * w.changes as u32) * w.sizes.len() as u32,
            },
            _ => match &sc.hardening {
                // Capacity, quiet, overload, recovery.
                Some(Hardening::Overload(o)) => o.capacity_duration + sc.duration * 3,
                _ => sc.duration,
            },
        }
    })
}

/// A sweep's wall time: per size a deployment, its scaling and one load run
/// (load dimensions), or one propagation measurement (`services`).
fn sweep_estimate(sc: &crate::suite::Scenario, w: &crate::suite::SweepShape) -> Duration {
    let n = w.sizes.len() as u32;
    match w.dimension.is_load() {
        true => (DEPLOY_OVERHEAD + sc.warmup + sc.duration) * n + SWEEP_SETUP_PER_K * (w.sizes.iter().sum::<usize>() / 1000) as u32,
        false => (PROPAGATION_OVERHEAD + PROPAGATION_PER_CHANGE * w.changes as u32) * n,
    }
}

/// Rough cost of scaling a sweep's deployment by 1,000 (endpoints written
/// and loaded, connections opened, authorities sent once).
const SWEEP_SETUP_PER_K: Duration = Duration::from_millis(1000);

/// Human label of a cell, also used as the progress-bar message.
pub fn label(suite: &Suite, cell: &Cell) -> String {
    let sc = &suite.scenarios[cell.scenario];
    let point = match (&sc.load, cell.rate) {
        (_, Some(r)) => format!("{} rps", fmt_rate(r)),
        (LoadShape::Closed { concurrency }, None) => match &sc.hardening {
            Some(Hardening::Overload(o)) => {
                format!("overload {}x capacity (c={concurrency})", o.factor)
            }
            _ => format!("c={concurrency}"),
        },
        (LoadShape::Propagation(p), None) => {
            // The control plane alone: no variant in the label.
            return format!(
                "{} propagation {} svc/{} ep x{} rep {}/{}",
                sc.name,
                p.services,
                p.endpoints,
                p.changes,
                cell.repetition + 1,
                sc.repetitions
            );
        }
        (LoadShape::Capacity(c), None) => format!("capacity at p{}<={}", c.percentile, humantime::format_duration(c.slo)),
        (LoadShape::Sweep(w), None) => {
            let sizes = w.sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            match w.rate {
                Some(r) => format!("sweep {} {sizes} at {} rps", w.dimension, fmt_rate(r)),
                // The control plane alone: no variant in the label.
                None => return format!("{} sweep services {sizes} x{} rep {}/{}", sc.name, w.changes, cell.repetition + 1, sc.repetitions),
            }
        }
        (LoadShape::Open { .. }, None) => "-".to_string(),
    };
    format!(
        "{} {} {} rep {}/{}",
        sc.name,
        point,
        cell.variant,
        cell.repetition + 1,
        sc.repetitions
    )
}

fn fmt_rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// The text `bench plan` prints: one line per cell and the estimate.
pub fn describe(suite: &Suite, cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "suite {} ({}): {}",
        suite.name, suite.origin, suite.description
    );
    for (si, sc) in suite.scenarios.iter().enumerate() {
        let load = match &sc.load {
            LoadShape::Open { rates } => {
                format!(
                    "open loop, rates {}",
                    rates
                        .iter()
                        .map(|r| fmt_rate(*r))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            LoadShape::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            LoadShape::Capacity(c) => format!(
                "capacity: the highest open-loop rate with p{} <= {} and 0 errors, ramp from {} rps x{} up to {} rps, bisection to {} %, {}; each probe",
                c.percentile,
                humantime::format_duration(c.slo),
                fmt_rate(c.start_rate),
                c.ramp_factor,
                fmt_rate(c.max_rate),
                c.tolerance * 100.0,
                if c.validation { "then a validation run at the found rate" } else { "no validation run" }
            ),
            LoadShape::Sweep(w) => {
                let sizes = w.sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
                match w.rate {
                    Some(r) => format!(
                        "sweep of {} over {sizes}: a fresh deployment per size, scaled, then open loop at {} rps",
                        w.dimension,
                        fmt_rate(r)
                    ),
                    None => format!("sweep of services over {sizes}: the propagation harness, {} edits per size", w.changes),
                }
            }
            LoadShape::Propagation(p) => {
                let _ = writeln!(
                    s,
                    "\nscenario {}: discovery propagation, {} Services / {} endpoints, {} edits; {} repetition(s); mesh-control alone",
                    sc.name, p.services, p.endpoints, p.changes, sc.repetitions
                );
                for (i, c) in cells.iter().enumerate().filter(|(_, c)| c.scenario == si) {
                    let _ = writeln!(s, "  {:>4}  {}", i + 1, label(suite, c));
                }
                continue;
            }
        };
        let replicas = match (sc.replicas, sc.slow_replica_delay) {
            (1, _) => String::new(),
            (n, None) => format!("; {n} server replicas"),
            (n, Some(d)) => format!(
                "; {n} server replicas, the last one with delay {}",
                humantime::format_duration(d)
            ),
        };
        let load = match &sc.hardening {
            None => load,
            Some(Hardening::Soak(k)) => format!(
                "soak, {load}; RSS and open fds every {}, flat within {} % after {}",
                humantime::format_duration(k.interval),
                k.tolerance * 100.0,
                humantime::format_duration(k.settle)
            ),
            Some(Hardening::Fault(f)) => format!(
                "fault `{}` at {} for {}, {load}",
                f.fault.as_str(),
                humantime::format_duration(f.at),
                humantime::format_duration(f.length)
            ),
            Some(Hardening::Overload(o)) => format!(
                "overload: capacity closed loop, then {}x it open loop, then {} of it; {load}",
                o.factor, o.sustainable
            ),
        };
        let _ = writeln!(
            s,
            "\nscenario {}: {load}; {} x {} measured after {} warm-up; {} connections; {}; body {} B; server delay {}{replicas}",
            sc.name,
            sc.repetitions,
            humantime::format_duration(sc.duration),
            humantime::format_duration(sc.warmup),
            sc.connections,
            sc.protocol.as_str(),
            sc.body_size,
            humantime::format_duration(sc.server_delay),
        );
        for (i, c) in cells.iter().enumerate().filter(|(_, c)| c.scenario == si) {
            let _ = writeln!(s, "  {:>4}  {}", i + 1, label(suite, c));
        }
    }
    let est = estimate(suite, cells);
    let _ = writeln!(
        s,
        "\n{} cells, estimated {} (measured + warm-up + process start-up), of which {} measuring",
        cells.len(),
        humantime::format_duration(Duration::from_secs(est.as_secs())),
        humantime::format_duration(Duration::from_secs(measuring(suite, cells).as_secs()))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::parse;

    #[test]
    fn variants_interleave_and_rotate_per_repetition() {
        let suite = parse(
            "name = \"p\"\n[[scenario]]\nname = \"s\"\nrates = [10, 20]\nrepetitions = 2\nvariants = [\"baseline\", \"weft\", \"nginx\"]\n",
            "t",
        )
        .unwrap();
        let cells = cells(&suite);
        assert_eq!(cells.len(), 2 * 2 * 3);
        let order: Vec<_> = cells
            .iter()
            .map(|c| (c.rate.unwrap() as u32, c.repetition, c.variant.as_str()))
            .collect();
        assert_eq!(
            &order[..6],
            &[
                (10, 0, "baseline"),
                (10, 0, "weft"),
                (10, 0, "nginx"),
                (10, 1, "weft"),
                (10, 1, "nginx"),
                (10, 1, "baseline"),
            ]
        );
        assert_eq!(order[6], (20, 0, "baseline"));
    }

    #[test]
    fn quick_suite_fits_its_budget() {
        // Issue 14: at least 3 repetitions of everything, about 3 minutes of
        // measuring (the suite file's comment states the figure).
        let suite = crate::suite::resolve("quick").unwrap();
        assert!(suite.scenarios.iter().all(|sc| sc.repetitions >= 3));
        let cells = cells(&suite);
        let measuring = measuring(&suite, &cells);
        assert!(measuring <= Duration::from_secs(180), "quick suite measures for {measuring:?}");
        let est = estimate(&suite, &cells);
        assert!(est < Duration::from_secs(270), "quick suite estimated at {est:?}");
        let text = describe(&suite, &cells);
        assert!(text.contains("http1-small 2000 rps weft rep 3/3"), "{text}");
        assert!(text.contains(&format!("of which {} measuring", humantime::format_duration(measuring))), "{text}");
    }
}
