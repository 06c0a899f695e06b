//! The load step of the substrates whose processes run on this machine
//! (`local`, `netns`): loadgen's engine inside bench, from bench's own
//! network namespace or from a pod's ([`Deployment::load_from`]), while the
//! deployment's processes are sampled from `/proc` over the measured window
//! only. (`kind` and `kube` load from inside the cluster: `kube/run.rs`.)

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use record::{Resource, Run};

use super::{enter, Deployment, LoadCell, MeasureError, Target};
use crate::sampler::{HostClock, Sampler};
use crate::suite::LoadShape;

/// Threads of the load generator's runtime inside a pod (bench's own
/// runtime has one per core; so does this one, on a 2-core machine).
const POD_LOAD_THREADS: usize = 2;

/// Load one deployed cell from this machine while sampling its components
/// over the measured window only.
pub async fn in_process(substrate: &str, dep: &Deployment, lc: &LoadCell<'_>) -> Result<Run, MeasureError> {
    let (scenario, cell, label) = (lc.scenario, lc.cell, lc.label);
    let mode = match (&scenario.load, cell.rate) {
        (_, Some(rate)) => loadgen::Mode::Open { rate },
        (LoadShape::Closed { concurrency }, None) => loadgen::Mode::Closed {
            concurrency: *concurrency,
        },
        (LoadShape::Open { .. }, None) => unreachable!("plan gives every open-loop cell a rate"),
        (LoadShape::Propagation(_), _) => unreachable!("propagation cells are not load cells"),
        (LoadShape::Capacity(_), None) => unreachable!("every capacity probe carries its rate"),
        (LoadShape::Sweep(_), None) => unreachable!("every sweep point carries its rate"),
    };
    if let Target::InCluster(_) = &dep.target {
        return Err(MeasureError::InCluster(format!(
            "the {substrate} substrate loads from this machine, but the {} deployment is reachable only inside its cluster ({})",
            dep.variant, dep.target
        )));
    }
    let cfg = crate::hardening::load_config(scenario, dep, mode);
    let bar = lc.progress.add(match cell.rate {
        Some(rate) => {
            let b = ProgressBar::new((rate * scenario.duration.as_secs_f64()).round() as u64);
            b.set_style(
                ProgressStyle::with_template("  {msg:40} [{bar:30}] {pos}/{len} req {per_sec}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        }
        None => {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("  {msg:40} {spinner} {pos} req {per_sec}")
                    .expect("valid template"),
            );
            b
        }
    });
    bar.set_message(label.to_string());

    let progress = Arc::new(loadgen::Progress::default());
    // No proxy counts to compare when an exchange is no HTTP request of its own.
    let admins = match scenario.protocol.one_request_per_exchange() {
        true => &dep.admins[..],
        false => &[],
    };
    let xcheck = crate::crosscheck::Window::open(admins, progress.clone(), scenario.warmup).await;
    let run = load(cfg, progress.clone(), dep.load_from.as_deref());
    tokio::pin!(run);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sampler: Option<(Sampler, Instant)> = None;
    let mut resources: Option<Vec<Resource>> = None;
    // The machine over the same window as the sampler.
    let (mut host_from, mut host) = (None, None);
    let result = loop {
        tokio::select! {
            biased;
            r = &mut run => break r,
            _ = tick.tick() => {
                let in_warmup = progress.in_warmup.load(Ordering::Relaxed);
                if in_warmup {
                    bar.set_message(format!("{label} (warm-up)"));
                } else {
                    bar.set_message(label.to_string());
                }
                bar.set_position(progress.completed.load(Ordering::Relaxed));
                // Sample the measured window only: after warm-up, for `duration`.
                if sampler.is_none() && resources.is_none() && !in_warmup && started.elapsed() >= scenario.warmup {
                    sampler = Some((Sampler::start(dep.components.clone()), Instant::now()));
                    host_from = HostClock::now();
                }
                if sampler.as_ref().is_some_and(|(_, t)| t.elapsed() >= scenario.duration) {
                    let (s, _) = sampler.take().expect("checked");
                    host = HostClock::window_since(host_from);
                    resources = Some(s.finish().await);
                }
            }
        }
    };
    bar.finish_and_clear();
    lc.progress.remove(&bar);
    let result = result?;
    let resources = match (resources, sampler) {
        (Some(r), _) => r,
        (None, Some((s, _))) => {
            host = HostClock::window_since(host_from);
            s.finish().await
        }
        (None, None) => Vec::new(),
    };
    let proxy_counts = crate::crosscheck::close(xcheck, label, &result).await;
    Ok(Run {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.to_string(),
        repetition: cell.repetition,
        load: result,
        resources,
        proxy_counts,
        // The runner knows the cell's limits and notes them.
        proxy_cpu: None,
        proxy_args: Vec::new(),
        host,
    })
}

/// Run the load from bench itself, or from inside a pod's network namespace.
async fn load(
    cfg: loadgen::LoadConfig,
    progress: Arc<loadgen::Progress>,
    netns: Option<&Path>,
) -> Result<record::Load, loadgen::LoadError> {
    enter::maybe_in(netns, POD_LOAD_THREADS, move || loadgen::run(cfg, progress))
        .await
        .unwrap_or_else(|e| Err(loadgen::LoadError::Task(e.to_string())))
}
