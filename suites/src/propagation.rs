//! `mode = "propagation"` scenarios: how long a manifests edit takes to reach
//! a `Destination.Get` stream, and mesh-control's RSS at that scale, measured
//! by mesh-control's own harness (`mesh_control::propagation::measure`).
//!
//! ```text
//!  runner ──Proc::spawn──> bench __propagation ...   (own process group, watchdog-registered,
//!     ▲                       │                       TMPDIR = a dir inside the run's temp dir)
//!     │                       └─> measure() ──> mesh-control --manifests <scratch>  (same group)
//!     └── "propagation {json}" on its stdout
//! ```
//!
//! The harness runs in a child `bench` rather than in-process because the
//! harness's mesh-control and scratch directory must die with the run like
//! every other process: the child leads its own process group (which its
//! mesh-control inherits), so the watchdog's group kill and temp-dir removal
//! cover both, however bench dies.
//!
//! The results go into the report (`Report::propagation`, schema 2), which
//! the renderers show as a table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use record::Propagation;

use crate::substrate::process::Proc;
use crate::suite::PropagationShape;

/// The stdout line prefix carrying the child's JSON result.
const LINE: &str = "propagation ";
/// The control plane's `--manifests-poll` (mesh-control's default).
pub const POLL: Duration = Duration::from_millis(250);
/// Longest the harness waits for any one step.
const STEP_PATIENCE: Duration = Duration::from_secs(30);
/// More per Service: a debug build's mesh-control takes about 4 ms per
/// Service to load its manifests and start (40 s at 10,000, a sweep's size).
const PATIENCE_PER_SERVICE: Duration = Duration::from_millis(5);

/// The patience of one step at `services` Services.
fn step_patience(services: usize) -> Duration {
    STEP_PATIENCE.max(PATIENCE_PER_SERVICE * services as u32)
}

/// What `bench __propagation` is asked to measure.
#[derive(Clone, Debug)]
pub struct ChildArgs {
    pub mesh_control: PathBuf,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub changes: usize,
    pub poll: Duration,
    /// The Kubernetes backend (against the harness's fake API server), not a manifests directory.
    pub kubernetes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error(transparent)]
    Measure(#[from] mesh_control::propagation::PropagationError),
    #[error("{0}")]
    Child(String),
}

/// Body of `bench __propagation`: measure and print one `propagation {json}` line.
pub async fn child_main(args: ChildArgs) -> Result<(), PropagationError> {
    let mut cfg = mesh_control::propagation::PropagationConfig::new(&args.mesh_control);
    cfg.services = args.services;
    cfg.endpoints_per_service = args.endpoints_per_service;
    cfg.changes = args.changes;
    cfg.poll = args.poll;
    if args.kubernetes {
        cfg.backend = mesh_control::propagation::Backend::Kubernetes;
    }
    cfg.patience = step_patience(args.services);
    let r = mesh_control::propagation::measure(&cfg).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let result = Propagation {
        // The parent knows the scenario; the child only measures.
        scenario: String::new(),
        repetition: 0,
        services: r.services,
        endpoints: r.endpoints,
        changes: r.samples.len(),
        poll_ms: ms(args.poll),
        startup_ms: ms(r.startup),
        samples_ms: r.samples.iter().map(|d| ms(*d)).collect(),
        p50_ms: ms(r.p50),
        p99_ms: ms(r.p99),
        max_ms: ms(r.max),
        control_rss_bytes: r.rss_kib * 1024,
    };
    let json = serde_json::to_string(&result).expect("plain data serializes");
    println!("{LINE}{json}");
    Ok(())
}

/// Run one measurement in a supervised child `bench`; `dir` (inside the
/// run's temp dir) becomes its TMPDIR, so the harness's scratch manifests
/// live where the watchdog cleans up.
pub async fn measure_in_child(
    mesh_control: &Path,
    shape: PropagationShape,
    dir: &Path,
    pids_file: &Path,
) -> Result<Propagation, PropagationError> {
    let exe = std::env::current_exe()
        .map_err(|e| PropagationError::Child(format!("cannot find the bench executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__propagation")
        .arg("--mesh-control")
        .arg(mesh_control)
        .arg("--services")
        .arg(shape.services.to_string())
        .arg("--endpoints-per-service")
        .arg((shape.endpoints / shape.services).to_string())
        .arg("--changes")
        .arg(shape.changes.to_string())
        .arg("--poll")
        .arg(humantime::format_duration(POLL).to_string())
        .env("TMPDIR", dir);
    let mut p = Proc::spawn("propagation", cmd, pids_file)
        .map_err(|e| PropagationError::Child(e.to_string()))?;
    // Generous: writing the manifests, start-up, one patience per edit at worst.
    let patience = step_patience(shape.services) * 2 + POLL * 4 * shape.changes as u32;
    let line = p
        .wait_line(LINE, patience)
        .await
        .map_err(|e| PropagationError::Child(e.to_string()));
    let line = match line {
        Ok(l) => l,
        Err(e) => {
            p.stop(Duration::from_secs(1)).await;
            return Err(e);
        }
    };
    p.stop(Duration::from_secs(3)).await;
    serde_json::from_str(&line)
        .map_err(|e| PropagationError::Child(format!("printed an unreadable result ({e}): {line}")))
}
