//! What an attack costs: the attacked proxy's resident memory, and the p99
//! of a well-behaved client (a `loadgen run` process at a fixed rate)
//! through the same proxy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::conn::Target;

/// VmRSS of `pid` in MiB, `None` once it is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// The soft RLIMIT_NOFILE of `pid`.
pub fn nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok()
}

/// Samples VmRSS every 50 ms until stopped; keeps the largest.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut peak = rss_mib(pid).unwrap_or(0.0);
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                peak = peak.max(rss_mib(pid).unwrap_or(0.0));
            }
            peak
        });
        Sampler { stop, task }
    }

    pub async fn peak(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0.0)
    }
}

/// The well-behaved client.
#[derive(Clone, Debug)]
pub struct Probe {
    pub loadgen: PathBuf,
    pub rate: f64,
    pub dir: PathBuf,
}

/// How long the probe runs before its measured window: its connections'
/// first requests (and the process start) are not the attack's doing, and
/// in a 1 s window of 200 requests two slow ones are the p99.
pub const PROBE_WARMUP: Duration = Duration::from_millis(500);

/// A running probe.
pub struct Running {
    child: tokio::process::Child,
    json: PathBuf,
    started: tokio::time::Instant,
}

/// What the probe measured.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub p99_us: f64,
    pub errors: u64,
}

impl Probe {
    /// Start `loadgen run` against `t`'s probe address for [`PROBE_WARMUP`]
    /// and then `duration` (the measured window: start the attack after the
    /// warm-up, see [`Running::warmed_up`]); `tag` names its files.
    pub fn start(&self, t: &Target, duration: Duration, tag: &str) -> Option<Running> {
        let json = self.dir.join(format!("probe-{tag}.json"));
        let mut cmd = tokio::process::Command::new(&self.loadgen);
        cmd.arg("run")
            .arg("--target")
            .arg(format!("http://{}/probe", t.probe_addr))
            .arg("--rate")
            .arg(self.rate.to_string())
            .arg("--duration")
            .arg(format!("{}ms", duration.as_millis().max(500)))
            .arg("--warmup")
            .arg(format!("{}ms", PROBE_WARMUP.as_millis()))
            .args(["--connections", "4", "--timeout", "5s", "--threads", "1", "--json"])
            .arg(&json)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(h) = &t.probe_host {
            cmd.arg("--host").arg(h);
        }
        match cmd.spawn() {
            Ok(child) => Some(Running { child, json, started: tokio::time::Instant::now() }),
            Err(e) => {
                tracing::warn!("cannot start the probe {}: {e}", self.loadgen.display());
                None
            }
        }
    }
}

impl Running {
    /// Resolves once the probe's measured window has begun (its warm-up
    /// over, with a margin for the process start and its connections).
    pub async fn warmed_up(&self) {
        tokio::time::sleep_until(self.started + PROBE_WARMUP + Duration::from_millis(100)).await;
    }

    /// Wait for the probe (its duration plus 15 s at most) and read its record.
    pub async fn finish(mut self) -> Result<Measured, String> {
        let out = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        match out {
            Ok(Ok(status)) if status.success() => read(&self.json),
            Ok(Ok(status)) => {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut err).await;
                }
                Err(format!("loadgen run exited {status}: {}", err.trim()))
            }
            Ok(Err(e)) => Err(format!("loadgen run: {e}")),
            Err(_) => Err("loadgen run did not finish in 60 s".into()),
        }
    }
}

fn read(json: &Path) -> Result<Measured, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let load: record::Load = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    Ok(Measured { p99_us: load.latency_us.p99, errors: load.errors })
}
