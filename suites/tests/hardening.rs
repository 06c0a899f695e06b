//! Soak, faults under load and overload through the real binaries: each
//! mode produces its record section, the mesh survives each fault the way
//! it is meant to, and an interrupted fault run leaves nothing behind (not
//! even a frozen proxy). Behaviour only: no latency is asserted.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use record::Report;

/// Every mode in one short suite, so the cells run one after another (the
/// faults' "no failed request" claims hold on a quiet machine, not beside
/// another load run).
const SUITE: &str = r#"
name = "hardening-short"
[defaults]
rates = [200]
duration = "8s"
warmup = "1s"
connections = 8
replicas = 2
fault_at = "3s"
fault_for = "3s"

[[scenario]]
name = "soak"
mode = "soak"
replicas = 1
duration = "12s"
sample_interval = "250ms"
settle = "2s"
flat_window = "3s"

[[scenario]]
name = "kill"
mode = "fault"
fault = "replica-kill"

[[scenario]]
name = "control"
mode = "fault"
fault = "control-restart"

[[scenario]]
name = "rotation"
mode = "fault"
fault = "cert-rotation"
fault_at = "0s"
fault_for = "8s"
fault_every = "2s"

[[scenario]]
name = "churn"
mode = "fault"
fault = "endpoint-churn"
fault_every = "500ms"

[[scenario]]
name = "freeze"
mode = "fault"
fault = "peer-freeze"

[[scenario]]
name = "overload"
mode = "overload"
replicas = 1
concurrency = 8
connections = 64
duration = "3s"
capacity_duration = "2s"
proxy_cpu = 0.5
"#;

#[test]
fn soak_faults_and_overload_produce_their_sections() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(tmp.path(), "hardening.toml", SUITE);
    let out = tmp.path().join("results");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    assert!(o.status.success(), "bench run failed:\n{}\n{}", text(&o.stdout), text(&o.stderr));
    let report: Report = reports::io::read_report(&out.join("report.json")).unwrap();
    let h = &report.hardening;

    // Soak: a series per process, spreads computed, a verdict that follows its rule.
    assert_eq!(h.soak.len(), 1);
    let s = &h.soak[0];
    let names: Vec<&str> = s.processes.iter().map(|p| p.component.as_str()).collect();
    for want in ["proxy-inbound", "proxy-outbound", "control", "server"] {
        assert!(names.contains(&want), "{want} sampled: {names:?}");
    }
    for p in &s.processes {
        assert!(p.t_s.len() >= 20, "{}: {} samples", p.component, p.t_s.len());
        assert_eq!((p.rss_bytes.len(), p.fds.len()), (p.t_s.len(), p.t_s.len()));
        assert!(p.rss_bytes.iter().all(|b| *b > 0) && p.fds.iter().all(|n| *n > 0), "{p:?}");
        assert!(p.rss_spread.is_some() && p.fds_spread.is_some(), "{p:?}");
    }
    let within = s
        .processes
        .iter()
        .filter(|p| p.judged())
        .all(|p| p.rss_spread.unwrap() <= 1.0 + s.tolerance && p.fds_spread.unwrap() <= 1.0 + s.tolerance);
    assert_eq!(s.flat, within && s.errors == 0, "verdict follows the rule: {s:?}");
    assert_eq!(s.flat, s.reasons.is_empty(), "{:?}", s.reasons);
    let soak_run = report.runs.iter().find(|r| r.scenario == "soak").expect("the soak's load run is a run too");
    // The proxies counted the soak's window too, beside loadgen.
    let counts = soak_run.proxy_counts.as_ref().expect("the soak is cross-checked against the proxies' counts");
    assert_eq!(counts.loadgen_requests, soak_run.load.requests);
    assert!(counts.proxy_requests > 0, "{counts:?}");
    assert!(out.join("soak.svg").is_file());

    let fault = |name: &str| {
        h.faults
            .iter()
            .find(|f| f.fault == name)
            .unwrap_or_else(|| panic!("no {name} section: {:?}", h.faults.iter().map(|f| &f.fault).collect::<Vec<_>>()))
    };
    for f in &h.faults {
        assert!(f.requests > 0 && f.before.requests + f.during.requests + f.after.requests == f.requests, "{f:?}");
        assert_eq!(f.idempotent_errors, f.errors, "every request is a GET");
        assert!(!f.slices.is_empty());
        // Every fault cell is cross-checked against the proxies' own counts:
        // loadgen's requests, less what it never sent, beside the client-side proxy's.
        let c = f.proxy_counts.as_ref().unwrap_or_else(|| panic!("{}: no proxy counts", f.fault));
        assert_eq!(c.loadgen_requests + c.loadgen_not_sent, f.requests, "{}: {c:?}", f.fault);
        assert_eq!(c.compared, "proxy-outbound");
        assert!(c.proxy_requests > 0 && c.proxies.len() == 3, "{}: {c:?}", f.fault);
    }

    // The killed replica: SIGKILLed, and the mesh routed around it.
    let kill = fault("replica-kill");
    assert!(kill.events.iter().any(|e| e.contains("SIGKILL server-1")), "{:?}", kill.events);
    // The recovery time is judged on the p99 of 0.5 s slices: a timing,
    // recorded for the report, not asserted here (one noisy last slice on a
    // shared machine reads as "never"). The behaviour: nothing fails after.
    assert_eq!(kill.after.errors, 0, "{kill:?}");
    // Its sidecar is gone by the window's end: listed as not scraped, and
    // the comparison stands on the client-side proxy, which lived.
    let c = kill.proxy_counts.as_ref().unwrap();
    let dead: Vec<_> = c.proxies.iter().filter(|p| p.incomplete.is_some()).collect();
    assert_eq!(dead.len(), 1, "{c:?}");
    assert!(kill.events[0].contains(&format!("{} (pid", dead[0].component)), "{:?} vs {:?}", kill.events, dead[0]);
    assert!(dead[0].incomplete.as_ref().unwrap().starts_with("not scraped after the window: "), "{:?}", dead[0]);
    assert!(c.not_comparable.is_none(), "{c:?}");

    // mesh-control down for 3 s: the proxies serve from their last known state.
    let control = fault("control-restart");
    assert_eq!(control.events.len(), 2, "{:?}", control.events);
    assert!(control.events[1].contains("started again"), "{:?}", control.events);
    assert_eq!(control.errors, 0, "no request lost while mesh-control was down: {control:?}");

    // Every proxy renewed its certificate during the run, and no request failed.
    let rotation = fault("cert-rotation");
    let counts = |e: &str| -> BTreeMap<String, f64> {
        e.split(": ")
            .last()
            .unwrap()
            .split(", ")
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.parse().unwrap_or_else(|_| panic!("count in {e}")))
            })
            .collect()
    };
    let (first, last) = (counts(&rotation.events[0]), counts(&rotation.events[1]));
    assert_eq!(first.len(), 3, "{:?}", rotation.events);
    for (proxy, n) in &first {
        assert!(last[proxy] > *n, "{proxy} rotated: {:?}", rotation.events);
    }
    assert_eq!(rotation.errors, 0, "{rotation:?}");

    // An endpoint removed and added back under load loses nothing.
    let churn = fault("endpoint-churn");
    assert!(churn.events.iter().any(|e| e.contains("removed")) && churn.events.iter().any(|e| e.contains("added back")), "{:?}", churn.events);
    assert_eq!(churn.errors, 0, "{churn:?}");

    // Where nothing failed, the client-side proxy counted what loadgen
    // sent, within the 0.1 % the report flags beyond.
    for f in [control, rotation, churn] {
        let c = f.proxy_counts.as_ref().unwrap();
        assert!(!c.flagged && c.not_comparable.is_none() && c.proxies.iter().all(|p| p.incomplete.is_none()), "{}: {c:?}", f.fault);
    }

    // A frozen peer is thawed, and the run ends healthy.
    let freeze = fault("peer-freeze");
    assert!(freeze.events[0].contains("SIGSTOP") && freeze.events[1].contains("SIGCONT"), "{:?}", freeze.events);
    assert_eq!(freeze.after.errors, 0, "nothing fails once the peer is thawed: {freeze:?}");

    // Overload: capacity, then every phase ran, proxies sampled.
    assert_eq!(h.overload.len(), 1);
    let o = &h.overload[0];
    assert!(o.capacity_rps > 0.0 && (o.offered_rps - 3.0 * o.capacity_rps).abs() < 1e-6, "{o:?}");
    for p in [&o.quiet, &o.overload, &o.recovery] {
        assert!(p.requests > 0, "{o:?}");
    }
    assert_eq!(o.shed, o.overload.errors_by_class.get("shed").copied().unwrap_or(0));
    // The overload phase is cross-checked on what loadgen actually sent:
    // its own overflow never reached a proxy and is left out.
    let c = o.proxy_counts.as_ref().expect("the overload phase is cross-checked");
    assert_eq!(c.loadgen_requests + c.loadgen_not_sent, o.overload.requests, "{c:?}");
    let overflow = o.overload.errors_by_class.get("overflow").copied().unwrap_or(0);
    assert!(c.loadgen_not_sent >= overflow, "every overflowed request is one never sent: {c:?} {o:?}");
    assert!(c.proxy_requests > 0 && c.not_comparable.is_none(), "{c:?}");
    // The admitted (not shed) responses have their own latency. Whether
    // any are shed is not asserted: this short form's load is HTTP/1,
    // which the proxy does not judge by queue time (its wait is in the
    // socket), and a debug build driven from this machine keeps the
    // proxies' sockets full, not their run queues (see the mesh-proxy
    // `shed` integration test, which overloads one proxy with a burst).
    assert!(o.shed < o.overload.requests && o.admitted_latency_us.p50 > 0.0, "{o:?}");
    assert!(o.resources.iter().any(|r| r.role == "proxy" && r.rss_peak_bytes > 0), "{:?}", o.resources);
    // Held to half a CPU each, as a pod's limit holds a sidecar: the
    // kernel's own count of throttled periods came back, and every cgroup
    // made for it is gone.
    assert_eq!(o.proxy_cpu, Some(0.5));
    assert!(o.proxy_throttled.is_some_and(|t| (0.0..=1.0).contains(&t)), "{o:?}");
    let root = suites::cpu_limit::Hierarchy::find().unwrap();
    let left: Vec<_> = std::fs::read_dir(root.root())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("weft-bench-"))
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for want in ["## Soak `soak`", "## Faults under load", "## Overload `overload`", "Each proxy limited to 0.5 CPU", "| proxy count |", "Proxy count over the overload phase"] {
        assert!(md.contains(want), "{want} in report.md");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("RSS and open fds over time") && html.contains("Fault timeline"));

    // The gate reads the same sections: lossless faults pass, a soak spread
    // limit of -1 % cannot.
    let policy = write(
        tmp.path(),
        "gate.toml",
        "[[rule]]\nname = \"lossless\"\nmetric = \"fault_failed_idempotent\"\nscenarios = [\"control\", \"rotation\", \"churn\"]\nmax = 0\n",
    );
    let o = run(bench().arg("gate").arg("--policy").arg(&policy).arg(out.join("report.json")));
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(text(&o.stdout).matches("| pass |").count(), 3, "{}", text(&o.stdout));
    let policy = write(tmp.path(), "soak.toml", "[[rule]]\nname = \"flat\"\nmetric = \"soak_growth_pct\"\nmax = -1\n");
    let o = run(bench().arg("gate").arg("--policy").arg(&policy).arg(out.join("report.json")));
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("soak/weft/soak"), "{}", text(&o.stdout));
}

/// A run killed while a proxy is SIGSTOPped leaves no process behind: the
/// stopped one included.
#[test]
fn sigkill_during_a_peer_freeze_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(
        tmp.path(),
        "freeze.toml",
        "name = \"freeze\"\n[[scenario]]\nname = \"f\"\nmode = \"fault\"\nfault = \"peer-freeze\"\nreplicas = 2\nrates = [50]\nconnections = 2\nwarmup = \"0s\"\nduration = \"120s\"\nfault_at = \"1s\"\nfault_for = \"100s\"\n",
    );
    let mut child = bench()
        .args(["run", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(tmp.path().join("results"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let root = child.id() as i32;
    let frozen = eventually_for("a mesh-proxy to be stopped (state T)", patience(), || {
        let tree = descendants(root);
        let frozen = tree.iter().find(|(_, comm, state)| comm == "mesh-proxy" && *state == 'T')?;
        Some((tree.clone(), frozen.0))
    });
    kill(Pid::from_raw(root), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let (tree, stopped) = frozen;
    eventually_for("every process bench started to be gone, the stopped proxy too", patience(), || {
        let left: Vec<_> = tree.iter().filter(|(p, ..)| alive(*p)).collect();
        left.is_empty().then_some(())
    });
    assert!(!alive(stopped));
}

/// (pid, start time), comm and state of every live process below `root`.
fn descendants(root: i32) -> Vec<((i32, u64), String, char)> {
    let all: Vec<_> = procfs::process::all_processes().unwrap().flatten().filter_map(|p| p.stat().ok()).collect();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for s in all.iter().filter(|s| s.ppid == pid) {
            stack.push(s.pid);
            out.push(((s.pid, s.starttime), s.comm.clone(), s.state));
        }
    }
    out
}

fn alive(p: (i32, u64)) -> bool {
    match procfs::process::Process::new(p.0).and_then(|x| x.stat()) {
        Ok(s) => s.starttime == p.1 && s.state != 'Z',
        Err(_) => false,
    }
}
