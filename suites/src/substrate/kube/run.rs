//! Executing a [`Plan`] against a real cluster: external commands through
//! `exec`, the API through kube-rs (Job pods, their logs, the nodes' stats
//! summaries). Whatever happens in the body (a failed cell, an error, a
//! signal), the meshes this run installed and its namespace are removed
//! before it returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, LogParams};
use record::{Resource, Run, Skipped};

use super::manifests;
use super::meshes::Mesh;
use super::plan::{Group, JobRun, Plan, Probe, Step, SAMPLE_INTERVAL};
use super::stats::{self, Accumulator};
use super::{exec, KubeError};
use crate::substrate::cleanup;
use crate::suite::Suite;

/// What a cluster run produced, for the runner's record.
#[derive(Debug, Default)]
pub struct Outcome {
    pub runs: Vec<Run>,
    pub skipped: Vec<Skipped>,
    pub failures: usize,
    pub versions: BTreeMap<String, String>,
    /// Set when a signal stopped the run (after teardown).
    pub interrupted: Option<&'static str>,
}

#[derive(Default)]
struct State {
    created_cluster: bool,
    installed: Vec<Mesh>,
}

/// Run `plan`; `stop` resolves with a signal's name to interrupt it.
pub async fn execute(
    suite: &Suite,
    plan: &Plan,
    stop: impl Future<Output = &'static str>,
    say: &dyn Fn(String),
) -> Result<Outcome, KubeError> {
    let mut state = State::default();
    let mut out = Outcome::default();
    let body = async {
        run_steps(&plan.cluster, &mut state.created_cluster).await?;
        run_steps(&plan.image_steps, &mut false).await?;
        let client = client(plan.kubectl.context.as_deref()).await?;
        if let Ok(v) = client.apiserver_version().await {
            out.versions.insert("kubernetes".into(), v.git_version);
        }
        let nodes: Vec<String> = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| KubeError::Api(format!("list nodes: {e}")))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        // A SIGKILLed bench's watchdog deletes the namespace (and, newest
        // first, uninstalls the meshes registered below).
        run_steps(&plan.setup, &mut false).await?;
        cleanup::register(namespace_cleanup(plan));
        for s in &plan.skipped {
            let sc = &suite.scenarios[s.scenario];
            let variants = match s.variant {
                Some(v) => vec![v],
                None => sc.variants.clone(),
            };
            for v in variants {
                say(format!("WARNING: skipping {v} in scenario {} on {}: {}", sc.name, plan.substrate, s.reason));
                out.skipped.push(skip(&sc.name, v.as_str(), &s.reason));
            }
        }
        for g in &plan.groups {
            run_group(suite, plan, g, &client, &nodes, &mut state, &mut out, say).await?;
        }
        Ok::<(), KubeError>(())
    };
    let result = tokio::select! {
        r = body => r,
        sig = stop => {
            out.interrupted = Some(sig);
            Ok(())
        }
    };
    // Teardown runs whatever happened above.
    for m in state.installed.iter().rev() {
        if let Some(g) = plan.groups.iter().find(|g| g.mesh == *m) {
            for a in &g.uninstall {
                if let Err(e) = a.run().await {
                    say(format!("WARNING: uninstalling {}: {e}", m.as_str()));
                }
            }
        }
    }
    for m in &state.installed {
        if let Some(g) = plan.groups.iter().find(|g| g.mesh == *m) {
            for a in uninstall_cleanup(g) {
                cleanup::forget(&a);
            }
        }
    }
    let mut namespace_gone = true;
    for s in &plan.teardown {
        if let Step::Do(a) = s {
            if let Err(e) = a.run().await {
                namespace_gone = false;
                say(format!("WARNING: teardown: {e}"));
            }
        }
    }
    // Left registered when its deletion failed: the watchdog tries again.
    if namespace_gone {
        cleanup::forget(&namespace_cleanup(plan));
    }
    if let (Some(a), true) = (&plan.delete_cluster, state.created_cluster) {
        if let Err(e) = a.run().await {
            say(format!("WARNING: {e}"));
        }
    }
    result.map(|()| out)
}

fn skip(scenario: &str, variant: &str, reason: &str) -> Skipped {
    Skipped {
        scenario: scenario.into(),
        variant: variant.into(),
        reason: reason.into(),
    }
}

/// Run steps in order; `created` is set when an [`Step::Unless`] found its
/// thing absent and made it.
async fn run_steps(steps: &[Step], created: &mut bool) -> Result<(), KubeError> {
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

#[allow(clippy::too_many_arguments)]
async fn run_group(
    suite: &Suite,
    plan: &Plan,
    g: &Group,
    client: &kube::Client,
    nodes: &[String],
    state: &mut State,
    out: &mut Outcome,
    say: &dyn Fn(String),
) -> Result<(), KubeError> {
    if let Err(reason) = &g.available {
        for v in &g.variants {
            for s in &v.scenarios {
                let name = &suite.scenarios[s.scenario].name;
                say(format!("WARNING: skipping {} in scenario {name}: {reason}", v.variant));
                out.skipped.push(skip(name, v.variant.as_str(), reason));
            }
        }
        return Ok(());
    }
    let mut installed = false;
    let done = run_steps(&g.install, &mut installed).await;
    // Half an install is this run's to remove too.
    if installed {
        state.installed.push(g.mesh);
        for a in uninstall_cleanup(g) {
            cleanup::register(a);
        }
    }
    done?;
    for v in &g.variants {
        if let Some(c) = &v.opt_in {
            exec::run(c).await?;
        }
        for s in &v.scenarios {
            let sc = &suite.scenarios[s.scenario];
            let deployed = async {
                run_steps(std::slice::from_ref(&s.server), &mut false).await?;
                for r in &s.rollouts {
                    exec::run(r).await?;
                }
                Ok::<(), KubeError>(())
            }
            .await;
            if let Err(e) = deployed {
                say(format!("ERROR: scenario {} {}: the target server did not start: {e}", sc.name, v.variant));
                out.failures += s.jobs.len();
                out.skipped.push(skip(&sc.name, v.variant.as_str(), &format!("failed: target server did not start: {e}")));
                let _ = exec::run(&s.remove).await;
                continue;
            }
            for j in &s.jobs {
                let measured = run_job(plan, j, client, nodes).await;
                if let Err(e) = exec::run(&j.delete).await {
                    say(format!("WARNING: {e}"));
                }
                match measured {
                    Ok((load, resources)) => {
                        let run = Run {
                            scenario: sc.name.clone(),
                            variant: v.variant.as_str().to_string(),
                            substrate: plan.substrate.to_string(),
                            repetition: j.cell.repetition,
                            load,
                            resources,
                            proxy_counts: None,
                        };
                        say(format!("[{}/{}] {}: {}", j.number, plan.cells, j.label, crate::runner::one_line(&run)));
                        out.runs.push(run);
                    }
                    Err(e) => {
                        say(format!("ERROR: [{}/{}] {}: {e}", j.number, plan.cells, j.label));
                        out.failures += 1;
                        if !out.skipped.iter().any(|k| k.scenario == sc.name && k.variant == v.variant.as_str()) {
                            out.skipped.push(skip(&sc.name, v.variant.as_str(), &format!("failed: {e}")));
                        }
                    }
                }
            }
            exec::run(&s.remove).await?;
        }
        if let Some(c) = &v.opt_out {
            exec::run(c).await?;
        }
    }
    if installed {
        for a in &g.uninstall {
            a.run().await?;
        }
        state.installed.retain(|m| *m != g.mesh);
        for a in uninstall_cleanup(g) {
            cleanup::forget(&a);
        }
    }
    Ok(())
}

/// What the watchdog runs if bench dies with the run's namespace in place.
fn namespace_cleanup(plan: &Plan) -> cleanup::Action {
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
fn uninstall_cleanup(g: &Group) -> Vec<cleanup::Action> {
    g.uninstall
        .iter()
        .map(|a| cleanup::Action::Run {
            what: format!("uninstall {}", g.mesh.as_str()),
            argv: vec!["sh".into(), "-c".into(), a.line()],
        })
        .collect()
}

/// One cell: apply its Job, sample while it measures, read its record.
async fn run_job(
    plan: &Plan,
    j: &JobRun,
    client: &kube::Client,
    nodes: &[String],
) -> Result<(record::Load, Vec<Resource>), KubeError> {
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
    let code = loop {
        if let Ok(pod) = pods.get(&pod_name).await {
            if let LoadState::Terminated(code) = load_state(&pod) {
                break code;
            }
        }
        if Instant::now() > until {
            return Err(KubeError::Job(format!("{}: the load generator did not finish within {}", j.name, humantime::format_duration(j.deadline))));
        }
        tick.tick().await;
    };
    let log = pods
        .logs(&pod_name, &LogParams { container: Some(manifests::LOAD_CONTAINER.into()), ..LogParams::default() })
        .await
        .map_err(|e| KubeError::Api(format!("logs of pod {pod_name}: {e}")))?;
    let tail = || log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if code != 0 {
        return Err(KubeError::Job(format!("{}: loadgen exited with {code}:\n{}", j.name, tail())));
    }
    match loadgen::find_record_line(&log) {
        Some(Ok(load)) => Ok((load, resources)),
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
