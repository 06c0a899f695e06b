//! Scale sweeps (`mode = "sweep"`): one dimension grown over a list of
//! sizes, a cost measured at each.
//!
//! ```text
//!  load dimensions, per size:  deploy the variant fresh ──> Substrate::scale(dimension, size)
//!    (endpoints, connections,    (authorities: every Host sent once through the client proxy)
//!     authorities)            ──> one load cell at the sweep's fixed light rate
//!                                 (connections: over `size` connections), sampled
//!                             ──> teardown; the proxy's peak RSS and CPU of that window
//!  services, per size:         the propagation harness at `size` Services (one endpoint each):
//!                              mesh-control's RSS, propagation p50 / p99
//! ```
//!
//! A fresh deployment per size keeps a small size's figure from carrying a
//! larger one's high-water mark, and the load window comes after the
//! scaling, so CPU is the steady cost of holding `size`, not of reaching it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use indicatif::MultiProgress;
use record::{Resource, SweepPoint, SweepRun};

use crate::plan::Cell;
use crate::propagation as prop;
use crate::substrate::{DeployError, LoadCell, ScenarioTopology, Substrate, Target};
use crate::suite::{PropagationShape, Scenario, SweepDimension, SweepShape};

/// Why a sweep produced no record.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The substrate or variant cannot run it (recorded as skipped).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// File descriptors bench keeps for everything but a `connections` sweep's
/// client sockets (its runtime, the sampler's /proc reads, admin scrapes).
const FD_RESERVE: u64 = 512;
/// Requests in flight while sending every authority once.
const AUTHORITY_WORKERS: usize = 16;
/// Longest the distinct-authority pass may take per 1,000 authorities.
const AUTHORITY_PATIENCE_PER_K: Duration = Duration::from_secs(60);

/// Where a `services` sweep's harness runs (the runner's temp dir and pid file).
pub struct HarnessDirs<'a> {
    pub mesh_control: &'a Path,
    pub work: &'a Path,
}

/// Run one sweep cell: every size in order. A size that fails ends the
/// sweep; the sizes measured before it are kept (`SweepRun::points`).
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Substrate>(
    shape: &SweepShape,
    scenario: &Scenario,
    cell: &Cell,
    index: usize,
    label: &str,
    substrate: &mut S,
    harness: &HarnessDirs<'_>,
    progress: &MultiProgress,
    say: &dyn Fn(String),
) -> (SweepRun, Option<SweepError>) {
    let mut sweep = SweepRun {
        scenario: scenario.name.clone(),
        variant: cell.variant.as_str().to_string(),
        substrate: substrate.name().to_string(),
        repetition: cell.repetition,
        dimension: shape.dimension.as_str().to_string(),
        rate: shape.rate,
        nofile_limit: None,
        points: Vec::new(),
    };
    let failed = sizes(&mut sweep, shape, scenario, cell, index, label, substrate, harness, progress, say).await.err();
    (sweep, failed)
}

#[allow(clippy::too_many_arguments)]
async fn sizes<S: Substrate>(
    sweep: &mut SweepRun,
    shape: &SweepShape,
    scenario: &Scenario,
    cell: &Cell,
    index: usize,
    label: &str,
    substrate: &mut S,
    harness: &HarnessDirs<'_>,
    progress: &MultiProgress,
    say: &dyn Fn(String),
) -> Result<(), SweepError> {
    if !shape.dimension.is_load() {
        for &size in &shape.sizes {
            let p = services_point(shape, size, index, harness).await?;
            say(format!("  {label} {size}: {}", one_line(&p)));
            sweep.points.push(p);
        }
        return Ok(());
    }
    let nofile = nofile_limit();
    sweep.nofile_limit = nofile;
    if let (SweepDimension::Connections, Some(limit)) = (shape.dimension, nofile) {
        let most = *shape.sizes.last().expect("validated: not empty") as u64;
        if most + FD_RESERVE > limit {
            return Err(SweepError::Unavailable(format!(
                "{most} client connections need about {} file descriptors in bench, but its RLIMIT_NOFILE is {limit} (raised to the hard limit already); lower the largest size or raise the hard limit (`ulimit -Hn`, limits.conf)",
                most + FD_RESERVE
            )));
        }
    }
    let topo = ScenarioTopology::of(scenario);
    let rate = shape.rate.expect("validated: load dimensions have a rate");
    for &size in &shape.sizes {
        let p = load_point(shape.dimension, size, rate, scenario, cell, index, label, &topo, substrate, progress).await?;
        say(format!("  {label} {size}: {}", one_line(&p)));
        sweep.points.push(p);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn load_point<S: Substrate>(
    dimension: SweepDimension,
    size: usize,
    rate: f64,
    scenario: &Scenario,
    cell: &Cell,
    index: usize,
    label: &str,
    topo: &ScenarioTopology,
    substrate: &mut S,
    progress: &MultiProgress,
) -> Result<SweepPoint, SweepError> {
    let deploy_err = |e: DeployError| match e {
        DeployError::Unavailable { reason } => SweepError::Unavailable(reason),
        e => SweepError::Failed(format!("{dimension} {size}: {e}")),
    };
    let dep = substrate.deploy(cell.variant, topo).await.map_err(deploy_err)?;
    let started = Instant::now();
    let scaled = match substrate.scale(&dep, dimension, size).await {
        Ok(s) => s,
        Err(e) => {
            substrate.teardown(dep).await;
            return Err(deploy_err(e));
        }
    };
    let mut setup = scaled.detail;
    if dimension == SweepDimension::Authorities {
        let sent = match &dep.target {
            Target::Addr(a) => send_each_authority(*a, size).await,
            Target::InCluster(t) => Err(format!("{t} is reachable only inside its cluster")),
        };
        match sent {
            Ok(s) => setup = format!("{setup}; {s}"),
            Err(e) => {
                substrate.teardown(dep).await;
                return Err(SweepError::Failed(format!("authorities {size}: {e}")));
            }
        }
    }
    let setup_s = started.elapsed().as_secs_f64();
    let mut sized = scenario.clone();
    if dimension == SweepDimension::Connections {
        sized.connections = size;
    }
    let point_cell = Cell { rate: Some(rate), ..cell.clone() };
    let point_label = format!("{label} {dimension}={size}");
    let lc = LoadCell { scenario: &sized, cell: &point_cell, index, label: &point_label, progress };
    let measured = substrate.measure(&dep, &lc).await;
    // The relays (endpoints) live until the window is over.
    drop(scaled.guard);
    substrate.teardown(dep).await;
    let run = measured.map_err(|e| SweepError::Failed(format!("{dimension} {size}: load generator failed: {e}")))?;
    let proxy = measured_proxy(&run.resources);
    Ok(SweepPoint {
        size,
        setup,
        setup_s,
        proxy_rss_peak_bytes: proxy.map(|r| r.rss_peak_bytes),
        proxy_cpu_seconds: proxy.map(|r| r.cpu_seconds),
        run: Some(run),
        propagation: None,
    })
}

async fn services_point(shape: &SweepShape, size: usize, index: usize, h: &HarnessDirs<'_>) -> Result<SweepPoint, SweepError> {
    let dir = h.work.join(format!("sweep-{index}-{size}"));
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::Failed(format!("create {}: {e}", dir.display())))?;
    let at = PropagationShape { services: size, endpoints: size, changes: shape.changes.min(size) };
    let started = Instant::now();
    let mut p = prop::measure_in_child(h.mesh_control, at, &dir, &h.work.join("pids"))
        .await
        .map_err(|e| SweepError::Failed(format!("services {size}: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    p.scenario = String::new();
    Ok(SweepPoint {
        size,
        setup: format!("{size} Services with one endpoint each, {} edits timed", p.changes),
        setup_s: started.elapsed().as_secs_f64(),
        proxy_rss_peak_bytes: None,
        proxy_cpu_seconds: None,
        run: None,
        propagation: Some(p),
    })
}

/// The proxy a sweep measures: the client sidecar (`proxy-outbound`), else
/// the variant's one proxy.
pub fn measured_proxy(resources: &[Resource]) -> Option<&Resource> {
    resources.iter().find(|r| r.component == "proxy-outbound").or_else(|| resources.iter().find(|r| r.role == "proxy"))
}

/// The soft RLIMIT_NOFILE after raising it to the hard limit (the
/// processes bench starts inherit it).
fn nofile_limit() -> Option<u64> {
    crate::hostile::command::raise_nofile();
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// One GET per sweep Service, each naming its own Host, through the client
/// proxy at `target` (keep-alive HTTP/1, [`AUTHORITY_WORKERS`] in flight).
async fn send_each_authority(target: SocketAddr, n: usize) -> Result<String, String> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + AUTHORITY_PATIENCE_PER_K * (n / 1000 + 1) as u32;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..AUTHORITY_WORKERS.min(n) {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let (mut ok, mut failed, mut first_failure) = (0usize, 0usize, None::<String>);
            let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let outcome = tokio::time::timeout_at(deadline, async {
                    if sender.as_ref().is_none_or(|s| s.is_closed()) {
                        let io = tokio::net::TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
                        let _ = io.set_nodelay(true);
                        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
                        tokio::spawn(conn);
                        sender = Some(s);
                    }
                    let host = crate::substrate::local::sweep_authority(i);
                    let req = http::Request::get("/healthz").header(http::header::HOST, host).body(Empty::new()).expect("valid request");
                    let s = sender.as_mut().expect("connected above");
                    s.ready().await.map_err(|e| e.to_string())?;
                    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    match status.is_success() {
                        true => Ok(()),
                        false => Err(format!("status {status}")),
                    }
                })
                .await
                .unwrap_or_else(|_| Err("out of time".into()));
                match outcome {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        sender = None;
                        first_failure.get_or_insert_with(|| format!("a{i}: {e}"));
                    }
                }
            }
            (ok, failed, first_failure)
        });
    }
    let (mut ok, mut failed, mut first) = (0, 0, None);
    while let Some(r) = workers.join_next().await {
        let (o, f, e) = r.map_err(|e| format!("a request worker failed: {e}"))?;
        ok += o;
        failed += f;
        first = first.or(e);
    }
    if ok == 0 {
        return Err(format!("no authority answered ({})", first.unwrap_or_default()));
    }
    let mut s = format!("{ok} of {n} answered 2xx in {:.1} s", started.elapsed().as_secs_f64());
    if failed > 0 {
        s.push_str(&format!(", {failed} failed (first: {})", first.unwrap_or_default()));
    }
    Ok(s)
}

/// A point's figures in one line, for the terminal.
pub fn one_line(p: &SweepPoint) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    match (&p.run, &p.propagation) {
        (Some(r), _) => format!(
            "proxy rss {:.1} MiB, cpu {:.2} s, {} req, {} err, p50 {:.2} ms, p99 {:.2} ms ({})",
            p.proxy_rss_peak_bytes.map_or(0.0, mib),
            p.proxy_cpu_seconds.unwrap_or(0.0),
            r.load.requests,
            r.load.errors,
            r.load.latency_us.p50 / 1000.0,
            r.load.latency_us.p99 / 1000.0,
            p.setup
        ),
        (None, Some(pr)) => format!(
            "control rss {:.1} MiB, propagation p50 {:.1} ms, p99 {:.1} ms, startup {:.0} ms",
            mib(pr.control_rss_bytes),
            pr.p50_ms,
            pr.p99_ms,
            pr.startup_ms
        ),
        (None, None) => "no figures".into(),
    }
}

/// The sweep's one-line summary after the last size.
pub fn summary(s: &SweepRun) -> String {
    let sizes: Vec<String> = s
        .points
        .iter()
        .map(|p| format!("{}: {:.1} MiB", p.size, p.rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0)))
        .collect();
    let what = match s.dimension.as_str() {
        "services" => "mesh-control rss",
        _ => "proxy rss",
    };
    format!("sweep of {}, {what} {}", s.dimension, sizes.join(", "))
}

