//! Running the selected tests on one substrate: each deploys, checks and
//! tears down under its own timeout, so one hung test cannot hang the suite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use record::{Status, TestResult};

use super::{Failure, Test, Verdict};
use crate::substrate::cluster::MeshMode;
use crate::substrate::{DeployError, Substrate};

/// How long a test may take, deployment and teardown included.
pub const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one expectation may take to come true (a route to propagate).
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(10);

static PATIENCE_MS: AtomicU64 = AtomicU64::new(10_000);

/// How long a check waits for an expectation to hold (see [`set_patience`]).
pub fn patience() -> Duration {
    Duration::from_millis(PATIENCE_MS.load(Ordering::Relaxed))
}

/// Set [`patience`] for the checks of this process.
pub fn set_patience(d: Duration) {
    PATIENCE_MS.store(d.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// Run `tests` one after another on `substrate` with the mesh `mode`.
pub async fn run_all<S: Substrate>(
    substrate: &mut S,
    tests: &[Test],
    mode: MeshMode,
    timeout: Duration,
    progress: &ProgressBar,
) -> Vec<TestResult> {
    let mut results = Vec::new();
    for t in tests {
        progress.set_message(t.name);
        let r = run_one(substrate, t, mode, timeout).await;
        let line = format!(
            "{:<15} {:<50} {:>6.1}s{}",
            r.status.as_str(),
            r.name,
            r.duration_s,
            r.reason
                .as_ref()
                .map(|x| format!("  {}", first_line(x)))
                .unwrap_or_default()
        );
        // Not a terminal (CI, a pipe): the bar is hidden, the lines are not.
        match progress.is_hidden() {
            true => eprintln!("{line}"),
            false => progress.println(line),
        }
        progress.inc(1);
        results.push(r);
    }
    results
}

/// One test: deploy its topology, check, tear down.
pub async fn run_one<S: Substrate>(
    substrate: &mut S,
    t: &Test,
    mode: MeshMode,
    timeout: Duration,
) -> TestResult {
    let started = Instant::now();
    let substrate_name = substrate.name();
    let outcome = tokio::time::timeout(timeout, async {
        let cluster = match substrate.deploy_cluster(&(t.topology)(), mode).await {
            Ok(c) => c,
            Err(DeployError::Unavailable { reason }) => return Err(reason),
            Err(e) => {
                return Ok(Verdict::Fail(Failure {
                    reason: format!("the topology did not deploy: {e}"),
                    expected: "the topology deployed and ready".into(),
                    observed: e.to_string(),
                }))
            }
        };
        let verdict = (t.check)(&cluster).await;
        cluster.teardown().await;
        Ok(verdict)
    })
    .await;
    let mut r = TestResult {
        name: t.name.into(),
        feature: t.feature.map(str::to_string),
        substrate: substrate_name.into(),
        variant: mode.as_str().into(),
        status: Status::Pass,
        duration_s: 0.0,
        reason: None,
        expected: None,
        observed: None,
    };
    match outcome {
        Ok(Ok(Verdict::Pass)) => {}
        Ok(Ok(Verdict::NotApplicable(why))) => {
            r.status = Status::NotApplicable;
            r.reason = Some(why);
        }
        Ok(Ok(Verdict::Fail(f))) => {
            r.status = Status::Fail;
            r.reason = Some(f.reason);
            r.expected = Some(f.expected);
            r.observed = Some(f.observed);
        }
        Ok(Err(why)) => {
            r.status = Status::Skipped;
            r.reason = Some(why);
        }
        // The dropped future dropped the cluster: its processes are killed.
        Err(_) => {
            r.status = Status::Fail;
            r.reason = Some(format!(
                "did not finish within {timeout:?} (deployment, check and teardown)"
            ));
            r.expected = Some(format!("done within {timeout:?}"));
            r.observed = Some("still running; stopped".into());
        }
    }
    r.duration_s = started.elapsed().as_secs_f64();
    r
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: usize) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The results as a Markdown table, with counts.
pub fn table(results: &[TestResult]) -> String {
    let mut s = String::from("| test | feature | substrate | variant | status | time | reason |\n|---|---|---|---|---|---:|---|\n");
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1}s | {} |\n",
            r.name,
            r.feature.as_deref().unwrap_or("—"),
            r.substrate,
            r.variant,
            r.status.as_str(),
            r.duration_s,
            r.reason
                .as_deref()
                .map(|x| first_line(x).replace('|', "\\|"))
                .unwrap_or_default()
        ));
    }
    let count = |st: Status| results.iter().filter(|r| r.status == st).count();
    s.push_str(&format!(
        "\n{} pass, {} fail, {} not-applicable, {} skipped ({:.0}s)\n",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::NotApplicable),
        count(Status::Skipped),
        results.iter().map(|r| r.duration_s).sum::<f64>()
    ));
    for r in results.iter().filter(|r| r.status == Status::Fail) {
        s.push_str(&format!(
            "\n{} failed: {}\n  expected: {}\n  observed: {}\n",
            r.name,
            r.reason.as_deref().unwrap_or(""),
            r.expected.as_deref().unwrap_or(""),
            r.observed.as_deref().unwrap_or("")
        ));
    }
    s
}
