//! The netns substrate for real: network namespaces, veths, iptables and
//! the real binaries. Every test here needs root (CI runs as root) and
//! fails, saying so, without it.
//!
//! - `bench run --substrate netns` completes, records `netns`, and leaves
//!   no namespace behind;
//! - an unmodified client (curl with a plain URL to the Service VIP) is
//!   transparently meshed: counted by both proxies, mTLS on the server
//!   pod's wire (a capture there holds no plaintext marker, while the same
//!   request in `baseline` shows it), and the app sees the client identity;
//! - an unmeshed pod reaches a meshed server only while policy allows
//!   plaintext;
//! - `kill -9` of bench leaves nothing once the watchdog or `bench clean`
//!   ran;
//! - without root, `--substrate netns` fails at once and says why.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use suites::substrate::netns::{net, Netns, APP_PORT, SERVICE_VIP};
use suites::substrate::{manifests, ScenarioTopology, Substrate};
use suites::suite::{Protocol, Variant};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/client";

/// Every netns run starts by sweeping dead runs' namespaces, which would
/// race with a test that inspects what a killed run left: one test at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root: it creates network namespaces and iptables rules (CI runs as root; run `sudo ci/test` or as root)"
    );
}

/// Namespaces a bench with this pid made (names carry the run id).
fn namespaces_of(pid: u32) -> Vec<String> {
    net::list_ours()
        .into_iter()
        .filter(|n| net::RunId::of_ns_name(n).is_some_and(|r| r.pid == pid))
        .collect()
}

fn topology(control_plane: bool) -> ScenarioTopology {
    ScenarioTopology {
        scenario: "t".into(),
        protocol: Protocol::Http1,
        body_size: 0,
        server_delay: Duration::ZERO,
        server_threads: 1,
        replicas: 1,
        slow_replica_delay: None,
        control_plane,
        cert_lifetime: None,
        proxy_args: Vec::new(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A netns substrate in this process, on the workspace's binaries.
fn substrate(work: &Path) -> Netns {
    let bins = suites::bins::ensure_siblings(&bench_exe()).expect("binaries");
    Netns::new(bins, work).unwrap_or_else(|e| panic!("netns substrate: {e}"))
}

/// A netns substrate in a fresh work dir (dropped after it) with the
/// scenario's server pod and control plane running.
async fn started() -> (tempfile::TempDir, Netns, ScenarioTopology) {
    let work = tempfile::Builder::new()
        .prefix("weft-t-")
        .tempdir()
        .unwrap();
    let mut sub = substrate(work.path());
    let topo = topology(true);
    sub.start_scenario(&topo)
        .await
        .expect("servers and control plane start");
    (work, sub, topo)
}

/// `ip netns exec NS program args`, output as text; panics on failure.
fn exec_in(ns: &str, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .expect("run ip netns exec");
    let mut text = text(&out.stdout);
    text.push_str(&common::text(&out.stderr));
    (out.status.success(), text)
}

/// curl from inside `ns`: (HTTP status, body).
fn curl(ns: &str, url: &str, headers: &[&str]) -> (u16, String) {
    let mut args = vec!["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"];
    for h in headers {
        args.push("-H");
        args.push(h);
    }
    args.push(url);
    let (_, out) = exec_in(ns, "curl", &args);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn ns_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A packet capture on `eth0` of a pod, written to a file until stopped.
struct Capture {
    child: std::process::Child,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &str, file: PathBuf) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "--immediate-mode",
                "-i",
                "eth0",
                "-U",
                "-s",
                "0",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump is installed (ci/test installs it)");
        // tcpdump says "listening on eth0" once it captures.
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            first.contains("listening on"),
            "tcpdump did not start: {first}"
        );
        std::thread::spawn(move || lines.for_each(drop));
        Capture { child, file }
    }

    /// Stop and return the captured bytes. Every request whose response
    /// came back has crossed the interface; tcpdump in immediate mode has
    /// them and writes them (-U) before it exits on SIGINT.
    fn finish(mut self) -> Vec<u8> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("capture file")
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A counter's value in a Prometheus text page (sum over matching series).
fn counter(page: &str, prefix: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn an_unmodified_client_is_transparently_meshed() {
    require_root("the transparent-proxy test");
    let _serial = serial();
    runtime().block_on(an_unmodified_client_is_transparently_meshed_async());
}

async fn an_unmodified_client_is_transparently_meshed_async() {
    let (work, mut sub, topo) = started().await;
    let server = sub.server_pods()[0].clone();
    let vip_url = format!("http://{SERVICE_VIP}/headers");
    let marker = format!("weft-canary-{}", std::process::id());
    let marker_header = format!("x-weft-canary: {marker}");

    // Without the mesh the marker is on the server pod's wire: the capture
    // sees plaintext when there is plaintext to see.
    let dep = sub
        .deploy(Variant::Baseline, &topo)
        .await
        .expect("baseline deploys");
    let client = ns_name(dep.load_from.as_deref().unwrap());
    let cap = Capture::start(&server.ns, work.path().join("baseline.pcap"));
    let (code, body) = curl(&client, &vip_url, &[&marker_header]);
    let bytes = cap.finish();
    assert_eq!(code, 200, "baseline via the VIP: {body}");
    assert!(body.contains(&marker), "the app got the request: {body}");
    assert!(
        !body.contains("weft-client-id"),
        "no mesh in baseline: {body}"
    );
    assert!(
        contains(&bytes, marker.as_bytes()),
        "baseline capture ({} bytes) must show the marker",
        bytes.len()
    );
    sub.teardown(dep).await;

    // With the mesh: the same curl, nothing told about any proxy.
    let dep = sub
        .deploy(Variant::Weft, &topo)
        .await
        .expect("weft deploys");
    let client = ns_name(dep.load_from.as_deref().unwrap());
    let cap = Capture::start(&server.ns, work.path().join("weft.pcap"));
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(curl(&client, &vip_url, &[&marker_header]));
    }
    let bytes = cap.finish();
    for (code, body) in &answers {
        assert_eq!(*code, 200, "weft via the VIP: {body}");
        assert!(body.contains(&marker), "the app got the request: {body}");
        assert!(
            body.contains(&format!("weft-client-id: {CLIENT_ID}")),
            "the app sees the client's identity: {body}"
        );
    }
    assert!(
        bytes.len() > 1000,
        "the capture saw the traffic ({} bytes)",
        bytes.len()
    );
    assert!(
        !contains(&bytes, marker.as_bytes()),
        "the server pod's wire carries the marker in plaintext"
    );
    assert!(
        !contains(&bytes, b"x-weft-canary"),
        "the server pod's wire carries a plaintext header name"
    );

    // Both sidecars counted the requests (their admin ports, from inside each pod).
    let metrics = |ns: &str| {
        let admin = sub
            .sidecar_admin(ns)
            .unwrap_or_else(|| panic!("a sidecar in {ns}"));
        curl(ns, &format!("http://{admin}/metrics"), &[]).1
    };
    let (client_page, server_page) = (metrics(&client), metrics(&server.ns));
    let out_2xx = counter(
        &client_page,
        r#"weft_requests_total{direction="outbound",status_class="2xx"}"#,
    );
    let in_2xx = counter(
        &server_page,
        r#"weft_requests_total{direction="inbound",status_class="2xx"}"#,
    );
    assert!(
        out_2xx >= 5.0,
        "client sidecar outbound 2xx = {out_2xx}:\n{client_page}"
    );
    assert!(
        in_2xx >= 5.0,
        "server sidecar inbound 2xx = {in_2xx}:\n{server_page}"
    );

    sub.teardown(dep).await;
    assert!(
        !net::ns_path(&client).exists(),
        "the client pod goes with its variant"
    );
    sub.end_scenario().await;
    let node = sub.node().to_string();
    drop(sub);
    for ns in [&node, &server.ns] {
        assert!(!net::ns_path(ns).exists(), "{ns} left behind");
    }
}

#[test]
fn an_unmeshed_pod_reaches_a_meshed_server_only_where_policy_allows_plaintext() {
    require_root("the plaintext-policy test");
    let _serial = serial();
    runtime().block_on(
        an_unmeshed_pod_reaches_a_meshed_server_only_where_policy_allows_plaintext_async(),
    );
}

async fn an_unmeshed_pod_reaches_a_meshed_server_only_where_policy_allows_plaintext_async() {
    let (_work, mut sub, topo) = started().await;
    let dep = sub
        .deploy(Variant::Weft, &topo)
        .await
        .expect("weft deploys");
    let plain = sub.add_pod("plain").expect("an unmeshed pod");
    let server = sub.server_pods()[0].clone();
    let direct = format!("http://{}/healthz", server.addr(APP_PORT));
    let vip = format!("http://{SERVICE_VIP}/healthz");
    let manifests_dir = sub
        .manifests_dir()
        .expect("control plane runs")
        .to_path_buf();

    // The namespace default is all-authenticated: plaintext is refused.
    for url in [&direct, &vip] {
        let (code, body) = curl(&plain.ns, url, &[]);
        assert_eq!(
            code, 403,
            "plaintext to the meshed server ({url}) under all-authenticated: {body}"
        );
    }

    // Policy allows unauthenticated clients: the same pod gets through.
    manifests::write(
        &manifests_dir,
        "service.yaml",
        &manifests::service(&SERVICE_VIP.to_string(), "all-unauthenticated"),
    )
    .unwrap();
    for url in [&direct, &vip] {
        eventually_for(&format!("plaintext to {url} allowed"), patience(), || {
            (curl(&plain.ns, url, &[]).0 == 200).then_some(())
        });
    }

    // And back: refused again.
    manifests::write(
        &manifests_dir,
        "service.yaml",
        &manifests::service(&SERVICE_VIP.to_string(), manifests::DEFAULT_INBOUND_POLICY),
    )
    .unwrap();
    eventually_for("plaintext refused again", patience(), || {
        (curl(&plain.ns, &direct, &[]).0 == 403).then_some(())
    });
    // The meshed client is not affected by any of it.
    let client = ns_name(dep.load_from.as_deref().unwrap());
    assert_eq!(curl(&client, &vip, &[]).0, 200);

    sub.teardown(dep).await;
    sub.end_scenario().await;
}

/// A small suite over every kind of variant the netns substrate runs.
const SMALL: &str = r#"
name = "netns-small"
[defaults]
duration = "1s"
warmup = "1s"
connections = 2
variants = ["baseline", "weft", "weft-plaintext", "weft-client-only", "weft-server-only", "nginx"]
[[scenario]]
name = "h1"
rates = [100]
"#;

#[test]
fn bench_runs_a_suite_on_netns_and_leaves_nothing() {
    require_root("`bench run --substrate netns`");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "small.toml", SMALL);
    let out = dir.path().join("out");
    let child = bench()
        .args(["run", "--substrate", "netns", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "bench failed: {}\n{}",
        text(&result.stdout),
        text(&result.stderr)
    );
    for f in ["report.json", "report.md", "report.html", "latency.png"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().expect("runs");
    let variants: Vec<&str> = runs
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    for v in [
        "baseline",
        "weft",
        "weft-plaintext",
        "weft-client-only",
        "weft-server-only",
        "nginx",
    ] {
        assert!(variants.contains(&v), "{v} ran: {variants:?}");
    }
    for r in runs {
        assert_eq!(r["substrate"], "netns", "{r}");
        assert_eq!(r["errors"], 0, "{}: {}", r["variant"], r["errors_by_class"]);
        assert!(
            r["requests"].as_u64().unwrap() >= 90,
            "{}: {}",
            r["variant"],
            r["requests"]
        );
    }
    assert!(
        namespaces_of(pid).is_empty(),
        "left behind: {:?}",
        namespaces_of(pid)
    );
}

/// Long enough to strike mid-cell, with a meshed variant so proxies,
/// mesh-control and every kind of pod exist when we do.
const LONG: &str = r#"
name = "long"
[defaults]
duration = "120s"
warmup = "1s"
connections = 2
variants = ["weft", "baseline"]
[[scenario]]
name = "h1"
rates = [50]
"#;

/// Start a long netns run and wait until its meshed cell is loading;
/// returns bench, its namespaces and the processes inside them.
fn strike_ready(dir: &Path) -> (std::process::Child, Vec<String>, Vec<u32>) {
    let suite = write(dir, "long.toml", LONG);
    let child = bench()
        .args(["run", "--substrate", "netns", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(dir.join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Servers, control, both sidecars: at least a client pod with a proxy in it.
    let (names, pids) = eventually_for("the weft cell running in its pods", patience() * 2, || {
        let names = namespaces_of(pid);
        let client = names.iter().find(|n| n.contains("-client-"))?;
        if net::pids_in(client).is_empty() {
            return None;
        }
        let pids: Vec<u32> = names.iter().flat_map(|n| net::pids_in(n)).collect();
        Some((names, pids))
    });
    (child, names, pids)
}

fn all_gone(names: &[String], pids: &[u32]) -> bool {
    let ns_left = names.iter().any(|n| net::ns_path(n).exists());
    let procs_left = pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists());
    !ns_left && !procs_left
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// bench's watchdog (`bench __watchdog`, its child).
fn watchdog_of(pid: u32) -> Option<u32> {
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .find(|p| {
            p.stat().is_ok_and(|s| s.ppid == pid as i32)
                && p.cmdline()
                    .is_ok_and(|c| c.iter().any(|a| a == "__watchdog"))
        })
        .map(|p| p.pid as u32)
}

#[test]
fn killing_bench_leaves_no_namespace_or_process_once_its_watchdog_ran() {
    require_root("the netns kill -9 test");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, names, pids) = strike_ready(dir.path());
    kill9(child.id());
    let _ = child.wait();
    eventually_for(
        "the watchdog removed every namespace and process",
        patience(),
        || all_gone(&names, &pids).then_some(()),
    );
}

#[test]
fn ctrl_c_removes_every_namespace_and_process_before_bench_exits() {
    require_root("the netns Ctrl-C test");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, names, pids) = strike_ready(dir.path());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted by SIGINT");
    // bench itself cleaned up before exiting: nothing to wait for.
    assert!(
        all_gone(&names, &pids),
        "left after Ctrl-C: {names:?} / {pids:?}"
    );
    assert!(!dir.path().join("out").exists(), "no results written");
}

#[test]
fn bench_clean_removes_what_a_crashed_run_left() {
    require_root("the netns crash + bench clean test");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, names, pids) = strike_ready(dir.path());
    // The worst case: bench and its watchdog die together, so nothing
    // cleans up but the next bench.
    let watchdog = watchdog_of(child.id()).expect("bench runs a watchdog");
    kill9(watchdog);
    kill9(child.id());
    // Not reaped until the end: a killed bench may sit as a zombie for a
    // while (its parent busy), and must count as dead all the same.
    // Children die with bench (death signal); the namespaces stay.
    eventually_for("bench's children gone", patience(), || {
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    });
    assert!(
        names.iter().any(|n| net::ns_path(n).exists()),
        "namespaces outlive a killed bench and watchdog: {names:?}"
    );
    let out = run(bench().arg("clean"));
    assert!(out.status.success(), "bench clean: {}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("removed"), "{said}");
    assert!(
        all_gone(&names, &pids),
        "left after bench clean: {names:?} / {pids:?}"
    );
    // Nothing left to do the second time.
    let again = run(bench().arg("clean"));
    assert!(
        !text(&again.stdout).contains(&names[0]),
        "{}",
        text(&again.stdout)
    );
    let _ = child.wait();
}

#[test]
fn netns_without_root_fails_at_once_and_says_why() {
    require_root("the not-root test (it drops to uid 2102 itself)");
    let _serial = serial();
    // A copy any user can run: the workspace may sit under a private home.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("bench");
    std::fs::copy(bench_exe(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("setpriv")
        .args(["--reuid=2102", "--regid=2102", "--clear-groups"])
        .arg(&exe)
        .args([
            "run",
            "--substrate",
            "netns",
            "--suite",
            "quick",
            "--out",
            "/nonexistent/never",
        ])
        .current_dir(dir.path())
        .output()
        .expect("setpriv (util-linux) runs");
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(77),
        "exit code for missing privilege: {err}"
    );
    assert!(err.contains("needs root"), "{err}");
    assert!(
        err.contains("--substrate local"),
        "says what to do instead: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails at once, took {:?}",
        started.elapsed()
    );
}
