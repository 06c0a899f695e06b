//! `bench hostile [--short] [--only PATTERN] [--no-probe] [--out DIR]`:
//! deploy, attack every listener, write the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use record::hostile::{Attack as Row, HostileRun, Memory};
use record::Report;

use super::conn::{Mode, Target};
use super::measure::{nofile, rss_mib, Probe, Sampler};
use super::{Attack, Finding, Params, Size};
use crate::substrate::control::{CLIENT_ID, SERVER_ID, TRUST_DOMAIN};
use crate::substrate::local::hostile::HostileMesh;
use crate::substrate::{cleanup, DeployError};
use crate::{bins, env};

/// What `bench hostile` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub size: Size,
    /// Only attacks whose name contains this (any case).
    pub only: Option<String>,
    /// Run the well-behaved client beside each attack.
    pub probe: bool,
    /// Where report.json/md/html go [default: reports/out/<UTC timestamp>-hostile].
    pub out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostileError {
    #[error("--only {0:?} matches no attack; the names are: {1}")]
    NoAttacks(String, String),
    #[error(transparent)]
    Bins(#[from] bins::BinError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the deployment did not start: {0}")]
    Deploy(#[from] DeployError),
    #[error("the attacker could not get a mesh certificate from mesh-control: {0}")]
    Certificate(String),
    #[error("interrupted by {0}: stopped every process, wrote no results")]
    Interrupted(&'static str),
    #[error("{0} exists and is not empty; give --out a new directory")]
    OutExists(PathBuf),
    #[error("cannot render the report into {dir}: {detail}")]
    Render { dir: PathBuf, detail: String },
}

impl HostileError {
    /// 64 usage, 130/143 interrupted, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            HostileError::NoAttacks(..) | HostileError::OutExists(_) => 64,
            HostileError::Interrupted("SIGINT") => 130,
            HostileError::Interrupted(_) => 143,
            _ => 1,
        }
    }
}

/// A finished run: its results, the table printed, where the report went.
pub struct Finished {
    pub run: HostileRun,
    pub text: String,
    pub out: PathBuf,
}

impl Finished {
    /// 1 if any attack failed its verdict (a finding), else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.run.attacks.iter().any(|a| !a.pass))
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostileError {
    let what = what.into();
    move |source| HostileError::Io { what, source }
}

pub async fn run(opts: Options) -> Result<Finished, HostileError> {
    let attacks: Vec<Attack> = Attack::all()
        .into_iter()
        .filter(|a| opts.only.as_ref().is_none_or(|o| a.name().contains(&o.to_lowercase())))
        .collect();
    if attacks.is_empty() {
        let names: Vec<&str> = Attack::all().iter().map(|a| a.name()).collect();
        return Err(HostileError::NoAttacks(opts.only.clone().unwrap_or_default(), names.join(", ")));
    }
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => crate::runner::default_out_root()
            .join(format!("{}-hostile", env::compact_timestamp(&env::now_rfc3339()))),
    };
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) || out.is_file() {
        return Err(HostileError::OutExists(out));
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("install the SIGTERM handler"))?;
    // Before any proxy starts: they inherit it, and 10,000 idle connections
    // need more descriptors than the usual 1,024 on our side too.
    raise_nofile();
    let started_at = env::now_rfc3339();
    let session = cleanup::Session::start();
    let result = async {
        let bins = bins::locate()?;
        let work = cleanup::run_work_dir().map_err(io_err("create the run's work dir in the temp dir"))?;
        let r = tokio::select! {
            r = attack_all(&bins, work.path(), &opts, &attacks) => r,
            _ = tokio::signal::ctrl_c() => Err(HostileError::Interrupted("SIGINT")),
            _ = sigterm.recv() => Err(HostileError::Interrupted("SIGTERM")),
        };
        // Kills what is left of the run's processes and removes the dir.
        drop(work);
        let run = r?;
        let mut report = Report::new("hostile", started_at, env::gather(BTreeMap::new()));
        report.hostile = Some(run.clone());
        report.finished_at = env::now_rfc3339();
        write_report(&out, &report)?;
        let text = format!("{}\nresults: {}\n", table(&run), out.display());
        Ok(Finished { run, text, out: out.clone() })
    }
    .await;
    drop(session);
    result
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (logged if it cannot).
pub(crate) fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read RLIMIT_NOFILE: {e}"),
    }
}

async fn attack_all(bins: &bins::Binaries, work: &Path, opts: &Options, attacks: &[Attack]) -> Result<HostileRun, HostileError> {
    let p = Params::of(opts.size);
    let mut mesh = HostileMesh::start(bins, work).await?;
    let result = attack_mesh(&mut mesh, bins, work, opts, attacks, &p).await;
    mesh.stop().await;
    result
}

async fn attack_mesh(
    mesh: &mut HostileMesh,
    bins: &bins::Binaries,
    work: &Path,
    opts: &Options,
    attacks: &[Attack],
    p: &Params,
) -> Result<HostileRun, HostileError> {
    let (certifier, mtls) = attacker_tls(mesh).await?;
    let outbound = Target {
        listener: "outbound",
        mode: Mode::Plaintext,
        addr: mesh.outbound.listen,
        pid: mesh.outbound.pid,
        authority: mesh.authority.to_owned(),
        probe_addr: mesh.outbound.listen,
        probe_host: Some(mesh.authority.to_owned()),
    };
    // The well-behaved client for the mTLS inbound goes through the
    // outbound proxy: that is how meshed traffic reaches it.
    let inbound_mtls = Target {
        listener: "inbound",
        mode: Mode::Mtls(mtls),
        addr: mesh.inbound_mtls.listen,
        pid: mesh.inbound_mtls.pid,
        ..outbound.clone()
    };
    let inbound_plain = Target {
        listener: "inbound",
        mode: Mode::Plaintext,
        addr: mesh.inbound_plain.listen,
        pid: mesh.inbound_plain.pid,
        authority: mesh.authority.to_owned(),
        probe_addr: mesh.inbound_plain.listen,
        probe_host: None,
    };
    let probe = opts.probe.then(|| Probe { loadgen: bins.loadgen.clone(), rate: p.probe_rate, dir: work.to_path_buf() });
    // Quiet p99 of each probe path, before any attack.
    let mut quiet = BTreeMap::new();
    if let Some(probe) = &probe {
        for t in [&outbound, &inbound_plain] {
            let key = t.probe_addr;
            let m = match probe.start(t, p.flood.max(Duration::from_secs(2)), &format!("quiet-{}", key.port())) {
                Some(r) => r.finish().await.ok(),
                None => None,
            };
            quiet.insert(key, m.map(|m| m.p99_us));
        }
    }
    let control_before = rss_mib(mesh.control_pid);
    let targets = [outbound, inbound_mtls, inbound_plain];
    let per_target = targets.iter().map(|t| attack_target(t, attacks, p, probe.as_ref(), quiet.get(&t.probe_addr).copied().flatten()));
    let rows: Vec<Row> = if p.parallel {
        join_all(per_target).await.into_iter().flatten().collect()
    } else {
        let mut rows = Vec::new();
        for f in per_target {
            rows.extend(f.await);
        }
        rows
    };
    drop(certifier);
    let mut rows = rows;
    if let Some(row) = rows.iter_mut().find(|r| r.attack == "distinct-hosts") {
        if let (Some(b), Some(a)) = (control_before, rss_mib(mesh.control_pid)) {
            row.detail.push_str(&format!("; mesh-control RSS {b:.1} -> {a:.1} MiB"));
        }
    }
    for crashed in mesh.exited() {
        for row in rows.iter_mut() {
            row.pass = false;
            row.detail.push_str(&format!("; {crashed}"));
        }
    }
    Ok(HostileRun {
        size: match p.size {
            Size::Full => "full",
            Size::Short => "short",
        }
        .into(),
        idle_connections: p.idle_connections,
        distinct_hosts: p.hosts,
        window_s: p.window.as_secs_f64(),
        probe_rate: if opts.probe { p.probe_rate } else { 0.0 },
        proxy_args: Vec::new(),
        proxy_nofile: nofile(mesh.outbound.pid),
        attacks: rows,
    })
}

/// A certificate for the client workload, as a rogue meshed workload would
/// hold, and the TLS client config it makes for the server's identity.
async fn attacker_tls(mesh: &HostileMesh) -> Result<(mesh_identity::Certifier, Arc<rustls::ClientConfig>), HostileError> {
    let cert = |e: String| HostileError::Certificate(e);
    let token = std::fs::read(&mesh.client_token).map_err(|e| cert(format!("{}: {e}", mesh.client_token.display())))?;
    let token = String::from_utf8_lossy(&token).trim().as_bytes().to_vec();
    let id = mesh_identity::SpiffeId::parse(CLIENT_ID).map_err(|e| cert(e.to_string()))?;
    let server = mesh_identity::SpiffeId::parse(SERVER_ID).map_err(|e| cert(e.to_string()))?;
    let pem = std::fs::read(&mesh.trust_anchor).map_err(|e| cert(format!("{}: {e}", mesh.trust_anchor.display())))?;
    let anchors = mesh_identity::TrustAnchors::from_pem(TRUST_DOMAIN, &pem).map_err(|e| cert(e.to_string()))?;
    // mesh-control is TLS only, verified like a proxy verifies it.
    let control_id = mesh_identity::control_identity(TRUST_DOMAIN).map_err(|e| cert(e.to_string()))?;
    let control = mesh_identity::ControlEndpoint::new(&mesh.control_addr.to_string(), anchors.clone(), control_id)
        .map_err(|e| cert(e.to_string()))?;
    let certifier = mesh_identity::Certifier::spawn(mesh_identity::CertifierConfig::new(control, id, token))
        .map_err(|e| cert(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(20), certifier.ready())
        .await
        .map_err(|_| cert(format!("no certificate from {} within 20 s", mesh.control_addr)))?;
    let cfg = mesh_identity::client_config(&anchors, certifier.watch(), server).map_err(|e| cert(e.to_string()))?;
    Ok((certifier, Arc::new(cfg)))
}

/// Every attack that applies to `t`: one at a time, then the slow ones together.
async fn attack_target(t: &Target, attacks: &[Attack], p: &Params, probe: Option<&Probe>, quiet: Option<f64>) -> Vec<Row> {
    let mine: Vec<Attack> = attacks.iter().copied().filter(|a| a.applies(t)).collect();
    let mut rows = Vec::new();
    for a in mine.iter().filter(|a| !a.slow()) {
        rows.extend(measure(t, &[*a], p, probe, quiet).await);
    }
    let slow: Vec<Attack> = mine.iter().copied().filter(|a| a.slow()).collect();
    if !slow.is_empty() {
        rows.extend(measure(t, &slow, p, probe, quiet).await);
    }
    rows
}

/// Run `group` at once against `t` with the sampler and the probe beside it.
async fn measure(t: &Target, group: &[Attack], p: &Params, probe: Option<&Probe>, quiet: Option<f64>) -> Vec<Row> {
    let before = rss_mib(t.pid).unwrap_or(0.0);
    let sampler = Sampler::start(t.pid);
    let planned = group.iter().map(|a| a.planned(p)).max().unwrap_or_default();
    let tag = format!("{}-{}-{}", t.listener, t.mode.as_str(), group[0].name());
    let running = probe.and_then(|pr| pr.start(t, planned, &tag));
    if let Some(r) = &running {
        r.warmed_up().await;
    }
    let findings: Vec<Finding> = join_all(group.iter().map(|a| a.run(t, p))).await;
    let peak = sampler.peak().await;
    let probed = match running {
        Some(r) => Some(r.finish().await),
        None => None,
    };
    // Time to free what the attack's connections held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_mib(t.pid);
    let together = group.len() > 1;
    group
        .iter()
        .zip(findings)
        .map(|(a, f)| {
            let memory = Memory { before_mib: before, peak_mib: peak.max(before), after_mib: after.unwrap_or(0.0) };
            let bound = a.memory_bound_mib(p);
            let mut detail = f.detail.clone();
            let mut pass = a.allows(&f) && memory.peak_mib - memory.before_mib <= bound;
            if after.is_none() {
                pass = false;
                detail.push_str("; the proxy process is gone");
            }
            let (p99, errors) = match &probed {
                Some(Ok(m)) => (Some(m.p99_us), m.errors),
                Some(Err(e)) => {
                    detail.push_str(&format!("; well-behaved client failed: {e}"));
                    (None, 0)
                }
                None => (None, 0),
            };
            // Unanswered well-behaved requests while the proxy absorbs
            // idle connections mean it stopped serving: a finding.
            if *a == Attack::IdleConnections && errors > 0 {
                pass = false;
            }
            if together {
                detail.push_str("; memory and p99 measured with the other slow attacks running");
            }
            Row {
                attack: a.name().to_owned(),
                listener: t.listener.to_owned(),
                mode: t.mode.as_str().to_owned(),
                outcome: f.outcome,
                status: f.status,
                detail: detail.trim_start_matches("; ").to_owned(),
                closed_after_s: f.closed_after.map(|d| d.as_secs_f64()),
                memory,
                memory_bound_mib: bound,
                p99_during_us: p99,
                p99_quiet_us: quiet,
                probe_errors: errors,
                pass,
            }
        })
        .collect()
}

/// The plain-text table printed at the end.
pub fn table(run: &HostileRun) -> String {
    let mut s = String::from("| attack | listener | mode | outcome | closed after | RSS MiB before/peak/after | p99 ratio | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for a in &run.attacks {
        let outcome = match a.status {
            Some(st) => format!("{} {st}", a.outcome.as_str()),
            None => a.outcome.as_str().to_owned(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1}/{:.1}/{:.1} | {} | {} |\n",
            a.attack,
            a.listener,
            a.mode,
            outcome,
            a.closed_after_s.map_or_else(|| "—".into(), |v| format!("{v:.2} s")),
            a.memory.before_mib,
            a.memory.peak_mib,
            a.memory.after_mib,
            a.p99_ratio().map_or_else(|| "—".into(), |r| format!("{r:.2}x")),
            if a.pass { "pass" } else { "FAIL" },
        ));
    }
    let failed: Vec<String> = run
        .attacks
        .iter()
        .filter(|a| !a.pass)
        .map(|a| format!("{} on {}/{} ({}{})", a.attack, a.listener, a.mode, a.outcome.as_str(), if a.detail.is_empty() { String::new() } else { format!(": {}", a.detail) }))
        .collect();
    if !failed.is_empty() {
        s.push_str(&format!("\n{} finding(s):\n- {}\n", failed.len(), failed.join("\n- ")));
    }
    s
}

fn write_report(dir: &Path, report: &Report) -> Result<(), HostileError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let json = dir.join("report.json");
    reports::io::write_report_json(report, &json).map_err(io_err(format!("write {}", json.display())))?;
    reports::render::write_all(report, dir)
        .map(|_| ())
        .map_err(|e| HostileError::Render { dir: dir.to_path_buf(), detail: e.to_string() })
}
