//! Executing pieces of a [`Plan`] against a real cluster, for the kube
//! substrate (`substrate.rs`): its steps through `exec` (kubectl, kind, the
//! mesh CLIs), one cell's Job through kube-rs (its pod, its log, the nodes'
//! stats summaries while it measures), and what the watchdog runs if bench
//! dies with the run's namespace or a mesh in place.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use record::Resource;

use super::manifests;
use super::plan::{Group, JobRun, Plan, Probe, Step, SAMPLE_INTERVAL};
use super::stats::{self, Accumulator};
use super::meshes::Sides;
use super::xcheck::PodWindow;
use super::{exec, KubeError};
use crate::substrate::cleanup;

/// Run steps in order; `created` is set when an [`Step::Unless`] found its
/// thing absent and made it.
pub(super) async fn run_steps(steps: &[Step], created: &mut bool) -> Result<(), KubeError> {
    for s in steps {
        match s {
            Step::Do(a) => {
                a.run().await?;
            }
            Step::Apply { cmd, manifests: m } => {
                exec::run(&cmd.clone().stdin(manifests::render(m))).await?;
            }
            Step::Unless { probe, then } => {
                if !present(probe).await? {
                    // Set first: what fails halfway is still this run's to remove.
                    *created = true;
                    Box::pin(run_steps(then, &mut false)).await?;
                }
            }
        }
    }
    Ok(())
}

async fn present(p: &Probe) -> Result<bool, KubeError> {
    match p {
        Probe::KindCluster { cmd, name } => Ok(exec::run(cmd).await?.lines().any(|l| l.trim() == name)),
        // Absent only when the API server says so, not when it cannot be asked.
        Probe::Succeeds { cmd, .. } => match exec::run(cmd).await {
            Ok(_) => Ok(true),
            Err(exec::CmdError::Failed { stderr, .. }) if stderr.contains("NotFound") => Ok(false),
            Err(e) => Err(e.into()),
        },
    }
}

/// What the watchdog runs if bench dies with the run's namespace in place.
pub(super) fn namespace_cleanup(plan: &Plan) -> cleanup::Action {
    let mut argv = vec!["kubectl".to_string()];
    if let Some(c) = &plan.kubectl.context {
        argv.extend(["--context".to_string(), c.clone()]);
    }
    argv.extend(
        ["delete", "namespace", &plan.namespace, "--ignore-not-found", "--wait=false"].map(String::from),
    );
    cleanup::Action::Run {
        what: format!("Kubernetes namespace {}", plan.namespace),
        argv,
    }
}

/// ... and for each mesh the run installed (pipes, so through `sh -c`).
pub(super) fn uninstall_cleanup(g: &Group) -> Vec<cleanup::Action> {
    g.uninstall
        .iter()
        .map(|a| cleanup::Action::Run {
            what: format!("uninstall {}", g.mesh.as_str()),
            argv: vec!["sh".into(), "-c".into(), a.line()],
        })
        .collect()
}

/// What one cell's Job measured: loadgen's record, the sampled
/// resources, and the proxies' own counts when the cell was cross-checked.
pub(super) type Measured = (record::Load, Vec<Resource>, Option<Result<record::CrossCheck, String>>);

/// One cell: apply its Job, sample while it measures, read its record;
/// with `xcheck` (a Weft variant's sides; its Job runs with `loadgen
/// --linger`), the meshed pods' counters before the Job and after its record.
pub(super) async fn run_job(
    plan: &Plan,
    j: &JobRun,
    client: &kube::Client,
    nodes: &[String],
    xcheck: Option<Sides>,
) -> Result<Measured, KubeError> {
    let mut window = match xcheck {
        Some(_) => Some(PodWindow::open(client, &plan.namespace).await),
        None => None,
    };
    let job_meshed = xcheck.is_some_and(|s| s.client);
    run_steps(std::slice::from_ref(&j.apply), &mut false).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &plan.namespace);
    let until = Instant::now() + j.deadline;
    let lp = ListParams::default().labels(&format!("job-name={}", j.name));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Until the load generator runs (image pull, init containers, sidecars).
    let pod_name = loop {
        tick.tick().await;
        if Instant::now() > until {
            return Err(KubeError::Job(format!("{}: its load generator did not start within {}", j.name, humantime::format_duration(j.deadline))));
        }
        let list = pods.list(&lp).await.map_err(|e| KubeError::Api(format!("list pods of job {}: {e}", j.name)))?;
        let Some(pod) = list.items.into_iter().next() else { continue };
        match load_state(&pod) {
            LoadState::Waiting(Some(reason)) if is_fatal(&reason) => {
                return Err(KubeError::Job(format!("{}: container {} cannot start: {reason}", j.name, manifests::LOAD_CONTAINER)));
            }
            LoadState::Waiting(_) => continue,
            LoadState::Running | LoadState::Terminated(_) => break pod.metadata.name.unwrap_or_default(),
        }
    };
    tokio::time::sleep(j.warmup).await;
    let mut acc = Accumulator::new(j.watches.clone());
    let started = Instant::now();
    let mut every = tokio::time::interval(SAMPLE_INTERVAL);
    while started.elapsed() < j.window {
        every.tick().await;
        acc.add_round(&summaries(client, nodes).await);
    }
    let resources = acc.finish(j.window);
    let log_params = LogParams { container: Some(manifests::LOAD_CONTAINER.into()), ..LogParams::default() };
    let mut counts = None;
    // While the counts are pending, the log is read often: loadgen lingers
    // only a few seconds after its record line before its pod (and the
    // sidecar in it) stops.
    let mut often = tokio::time::interval(Duration::from_millis(250));
    let code = loop {
        if let Some(w) = window.take() {
            match w {
                Err(e) => counts = Some(Err(format!("before the Job: {e}"))),
                Ok(w) => match pods.logs(&pod_name, &log_params).await.ok().as_deref().and_then(loadgen::find_record_line) {
                    Some(Ok(load)) => counts = Some(w.close(client, &plan.namespace, &pod_name, job_meshed, &load).await),
                    _ => window = Some(Ok(w)),
                },
            }
        }
        if let Ok(pod) = pods.get(&pod_name).await {
            if let LoadState::Terminated(code) = load_state(&pod) {
                break code;
            }
        }
        if Instant::now() > until {
            return Err(KubeError::Job(format!("{}: the load generator did not finish within {}", j.name, humantime::format_duration(j.deadline))));
        }
        match window {
            Some(_) => often.tick().await,
            None => tick.tick().await,
        };
    };
    if window.is_some() {
        counts = Some(Err("its pod stopped before its proxies could be read after the window (loadgen --linger too short?)".into()));
    }
    let log = pods
        .logs(&pod_name, &log_params)
        .await
        .map_err(|e| KubeError::Api(format!("logs of pod {pod_name}: {e}")))?;
    let tail = || log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if code != 0 {
        return Err(KubeError::Job(format!("{}: loadgen exited with {code}:\n{}", j.name, tail())));
    }
    match loadgen::find_record_line(&log) {
        Some(Ok(load)) => Ok((load, resources, counts)),
        Some(Err(e)) => Err(KubeError::Job(format!("{}: its `{}` line is not a record: {e}", j.name, loadgen::RECORD_LINE_PREFIX.trim_end()))),
        None => Err(KubeError::Job(format!("{}: no `{}` line in its log:\n{}", j.name, loadgen::RECORD_LINE_PREFIX.trim_end(), tail()))),
    }
}

/// Every node's stats summary; a node that does not answer is left out of
/// this round (the record's `samples` shows the gap).
async fn summaries(client: &kube::Client, nodes: &[String]) -> Vec<stats::Summary> {
    let mut out = Vec::new();
    for n in nodes {
        let req = http::Request::get(format!("/api/v1/nodes/{n}/proxy/stats/summary"))
            .body(Vec::new())
            .expect("a valid request");
        match client.request_text(req).await {
            Ok(text) => match stats::parse(n, &text) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!("{e}"),
            },
            Err(e) => tracing::warn!("{}", stats::StatsError::Fetch { node: n.clone(), detail: e.to_string() }),
        }
    }
    out
}

enum LoadState {
    Waiting(Option<String>),
    Running,
    Terminated(i32),
}

fn load_state(pod: &Pod) -> LoadState {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == manifests::LOAD_CONTAINER));
    let Some(state) = status.and_then(|s| s.state.as_ref()) else {
        return LoadState::Waiting(None);
    };
    if let Some(t) = &state.terminated {
        return LoadState::Terminated(t.exit_code);
    }
    if state.running.is_some() {
        return LoadState::Running;
    }
    LoadState::Waiting(state.waiting.as_ref().map(|w| {
        format!("{}: {}", w.reason.as_deref().unwrap_or("?"), w.message.as_deref().unwrap_or(""))
    }))
}

fn is_fatal(reason: &str) -> bool {
    ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"]
        .iter()
        .any(|r| reason.starts_with(r))
}

/// A client for `context` (`None`: the kubeconfig's current one).
pub async fn client(context: Option<&str>) -> Result<kube::Client, KubeError> {
    let config = match context {
        Some(c) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(c.to_string()),
            ..Default::default()
        })
        .await
        .map_err(|e| KubeError::Api(format!("kubeconfig context {c}: {e}")))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Api(format!("no cluster configured (kubeconfig or in-cluster): {e}")))?,
    };
    kube::Client::try_from(config).map_err(|e| KubeError::Api(format!("cannot make an API client: {e}")))
}
