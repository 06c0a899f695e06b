//! A real `bench run --substrate kube` through the runner's cell loop
//! against a fake cluster: `kubectl` is a script first on PATH that records
//! its argv (and the kinds of what it is asked to apply), the API server is
//! a plain-HTTP fake in this process that records each request and answers
//! with canned objects: the Job's pod, terminated; its log with a canned
//! `loadgen-record:` line; the kubelet's stats summary. The record must
//! hold the canned figures, the calls must come in the runner's order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::*;

/// Appends one line to the shared calls log (the script appends too).
fn log(calls: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(calls).unwrap();
    writeln!(f, "{line}").unwrap();
}

fn fake_kubectl(dir: &Path, calls: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join("kubectl");
    std::fs::write(
        &p,
        format!(
            r#"#!/bin/sh
case "$*" in
  *"apply -f -") kinds=$(sed -n 's/^kind: //p' | tr '\n' ' '); echo "kubectl $* # $kinds" >> {calls} ;;
  *) echo "kubectl $*" >> {calls} ;;
esac
exit 0
"#,
            calls = calls.display()
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&p, perm).unwrap();
    bin
}

/// The canned load record the Job's pod prints, without its histograms.
const RECORD: &str = r#"{"protocol":"http1","mode":"open","rate":100.0,"connections":1,"body_size":0,"duration_s":1.0,"warmup_s":0.0,"requests":1234,"errors":5,"achieved_rps":123.4,"latency_us":{"p50":0.0,"p90":0.0,"p99":0.0,"p999":0.0,"p9999":0.0,"max":0.0,"mean":0.0},"service_time_us":{"p50":0.0,"p90":0.0,"p99":0.0,"p999":0.0,"p9999":0.0,"max":0.0,"mean":0.0},"histogram":"","service_histogram":""}"#;

/// [`RECORD`] with histograms (1, 2 and 4 ms) and the percentiles from
/// them: what a loadgen pod would print.
fn canned_load() -> record::Load {
    let mut load: record::Load = serde_json::from_str(RECORD).unwrap();
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    h.record_n(1_000, 900).unwrap();
    h.record_n(2_000, 300).unwrap();
    h.record_n(4_000, 34).unwrap();
    load.set_histograms(&h, &h).unwrap();
    load
}

fn pod(ns: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "status": {"containerStatuses": [{
            "name": "loadgen", "image": "reg.example/t/loadgen:dev", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0}}
        }]}
    })
}

/// One answer of the fake API server for `path` (with its query).
fn answer(path: &str, stats_round: &AtomicU64) -> (&'static str, String) {
    let json = "application/json";
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => (json, serde_json::json!({
            "major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "gitCommit": "", "gitTreeState": "",
            "buildDate": "", "goVersion": "", "compiler": "", "platform": ""
        }).to_string()),
        ["api", "v1", "nodes"] => (json, serde_json::json!({
            "apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [{"metadata": {"name": "node-a"}}]
        }).to_string()),
        ["api", "v1", "namespaces", ns, "pods"] => {
            let job = query.split('&').find_map(|kv| kv.strip_prefix("labelSelector=job-name%3D")).unwrap_or("none");
            (json, serde_json::json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod(ns, &format!("{job}-abcde"))]
            }).to_string())
        }
        ["api", "v1", "namespaces", ns, "pods", name] => (json, pod(ns, name).to_string()),
        ["api", "v1", "namespaces", _, "pods", _, "log"] => {
            ("text/plain", format!("loadgen: warming up\n{}\n", loadgen::record_line(&canned_load())))
        }
        ["api", "v1", "nodes", node, "proxy", "stats", "summary"] => {
            // The namespace is the run's: learnt from the pod requests.
            let k = stats_round.fetch_add(1, Ordering::SeqCst) + 1;
            (json, serde_json::json!({
                "node": {"nodeName": node},
                "pods": [{
                    "podRef": {"name": "server-7d9f-xyz", "namespace": NS.lock().unwrap().clone()},
                    "containers": [{
                        "name": "server",
                        // A quarter of a core, 10 MiB, a fresh sample every second.
                        "cpu": {"time": format!("2026-12-07T10:{:02}:{:02}Z", k / 60, k % 60), "usageNanoCores": 250_000_000u64, "usageCoreNanoSeconds": k * 250_000_000},
                        "memory": {"rssBytes": 10u64 << 20, "workingSetBytes": 12u64 << 20}
                    }]
                }]
            }).to_string())
        }
        _ => ("", String::new()),
    }
}

static NS: Mutex<String> = Mutex::new(String::new());

fn serve(mut conn: TcpStream, calls: &Path, stats_round: &AtomicU64) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if let Some(ns) = path.strip_prefix("/api/v1/namespaces/").and_then(|r| r.split('/').next()) {
        *NS.lock().unwrap() = ns.to_string();
    }
    log(calls, &format!("api {method} {}", path.split('?').next().unwrap_or(path)));
    let (kind, text) = answer(path, stats_round);
    let status = if kind.is_empty() { "404 Not Found" } else { "200 OK" };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        if kind.is_empty() { "text/plain" } else { kind },
        text.len()
    );
}

fn fake_api_server(calls: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = calls.to_path_buf();
    let round = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            serve(conn, &calls, &round);
        }
    });
    port
}

const SUITE: &str = r#"name = "fake"
[defaults]
duration = "1s"
warmup = "0s"
repetitions = 2
connections = 1
variants = ["baseline", "nginx"]

[[scenario]]
name = "one"
rates = [100]

[[scenario]]
name = "two"
mode = "closed"
concurrency = 2
variants = ["baseline"]

[[scenario]]
name = "cap"
mode = "capacity"
slo = { max = "5ms" }
start_rate = 100
repetitions = 1
variants = ["baseline"]
"#;

#[test]
fn a_kube_run_goes_through_the_runners_cell_loop_and_records_the_jobs_figures() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let bin = fake_kubectl(dir.path(), &calls);
    let port = fake_api_server(&calls);
    let kubeconfig = write(
        dir.path(),
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    );
    let suite = write(dir.path(), "fake.toml", SUITE);
    let out_dir = dir.path().join("out");
    let out = run(bench()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("KUBECONFIG", &kubeconfig)
        .args(["run", "--substrate", "kube", "--context", "fake", "--registry", "reg.example/t", "--no-build", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out_dir));
    let stderr = text(&out.stderr);
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}\ncalls:\n{calls}");
    // The runner's own header, and its cell lines.
    assert!(stderr.contains("bench: suite fake ("), "{stderr}");
    assert!(stderr.contains("WARNING: skipping nginx in scenario one"), "{stderr}");

    let lines: Vec<&str> = calls.lines().collect();
    let ns = NS.lock().unwrap().clone();
    assert!(ns.starts_with("weft-bench-"), "{calls}");
    // Per call: what it must contain. Readings of the API in between are
    // checked per Job below.
    let kubectl: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("kubectl ")).collect();
    let expected: Vec<String> = vec![
        "kubectl --context fake cluster-info".into(),
        "kubectl --context fake apply -f - # Namespace ".into(),
        "kubectl --context fake apply -f - # Deployment Service ".into(),
        format!("kubectl --context fake rollout status deployment/server -n {ns} --timeout=300s"),
        "kubectl --context fake apply -f - # Job ".into(),
        format!("kubectl --context fake delete job load-1 -n {ns} --ignore-not-found --cascade=foreground"),
        "kubectl --context fake apply -f - # Job ".into(),
        format!("kubectl --context fake delete job load-4 -n {ns} --ignore-not-found --cascade=foreground"),
        format!("kubectl --context fake delete deployment,service -n {ns} -l weft.dev/run="),
        "kubectl --context fake apply -f - # Deployment Service ".into(),
        format!("kubectl --context fake rollout status deployment/server -n {ns} --timeout=300s"),
        "kubectl --context fake apply -f - # Job ".into(),
        format!("kubectl --context fake delete job load-5 -n {ns} --ignore-not-found --cascade=foreground"),
        "kubectl --context fake apply -f - # Job ".into(),
        format!("kubectl --context fake delete job load-6 -n {ns} --ignore-not-found --cascade=foreground"),
        format!("kubectl --context fake delete deployment,service -n {ns} -l weft.dev/run="),
        // The capacity search: its start rate fails (the canned record has
        // errors) and is probed again to confirm it, each probe a Job of its own.
        "kubectl --context fake apply -f - # Deployment Service ".into(),
        format!("kubectl --context fake rollout status deployment/server -n {ns} --timeout=300s"),
        "kubectl --context fake apply -f - # Job ".into(),
        format!("kubectl --context fake delete job load-7-p1 -n {ns} --ignore-not-found --cascade=foreground"),
        "kubectl --context fake apply -f - # Job ".into(),
        format!("kubectl --context fake delete job load-7-p2 -n {ns} --ignore-not-found --cascade=foreground"),
        format!("kubectl --context fake delete deployment,service -n {ns} -l weft.dev/run="),
        format!("kubectl --context fake delete namespace {ns} --ignore-not-found --wait=true --timeout=300s"),
    ];
    assert_eq!(kubectl.len(), expected.len(), "calls:\n{calls}");
    for (got, want) in kubectl.iter().zip(&expected) {
        assert!(got.starts_with(want.as_str()), "`{got}` is not `{want}...`; calls:\n{calls}");
    }
    // Each Job: applied, its pod found, sampled, its log read, then deleted.
    for job in ["load-1", "load-4", "load-5", "load-6", "load-7-p1", "load-7-p2"] {
        let delete = lines.iter().position(|l| l.contains(&format!("delete job {job} "))).unwrap();
        let apply = lines[..delete].iter().rposition(|l| l.ends_with("# Job ")).unwrap();
        let between = &lines[apply..delete];
        let at = |want: &str| between.iter().position(|l| *l == want).unwrap_or_else(|| panic!("{job}: no `{want}` between its apply and delete:\n{calls}"));
        let pods = at(&format!("api GET /api/v1/namespaces/{ns}/pods"));
        let stats = at("api GET /api/v1/nodes/node-a/proxy/stats/summary");
        let logs = at(&format!("api GET /api/v1/namespaces/{ns}/pods/{job}-abcde/log"));
        assert!(pods < stats && stats < logs, "{job}: pod, stats, log out of order:\n{calls}");
    }
    assert!(lines.iter().position(|l| *l == "api GET /api/v1/nodes").unwrap() < lines.iter().position(|l| l.ends_with("# Namespace ")).unwrap());

    // The record: the canned figures per cell, the stats summary's server.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let cells: Vec<(String, u64)> = runs.iter().map(|r| (r["scenario"].as_str().unwrap().to_string(), r["repetition"].as_u64().unwrap())).collect();
    assert_eq!(cells, [("one".to_string(), 0), ("one".into(), 1), ("two".into(), 0), ("two".into(), 1)], "{report:#}");
    for r in runs {
        assert_eq!((r["variant"].as_str(), r["substrate"].as_str()), (Some("baseline"), Some("kube")), "{r:#}");
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64(), r["achieved_rps"].as_f64()), (Some(1234), Some(5), Some(123.4)), "{r:#}");
        let canned = canned_load();
        assert!(canned.latency_us.p99 >= 4_000.0 && canned.latency_us.p50 < 1_100.0, "{:?}", canned.latency_us);
        assert_eq!(r["latency_us"]["p99"].as_f64(), Some(canned.latency_us.p99), "{r:#}");
        assert_eq!(r["latency_us"]["p50"].as_f64(), Some(canned.latency_us.p50), "{r:#}");
        assert_eq!(r["histogram"].as_str(), Some(canned.histogram.as_str()), "{r:#}");
        let res = r["resources"].as_array().unwrap();
        assert_eq!(res.len(), 1, "{r:#}");
        let server = &res[0];
        assert_eq!((server["component"].as_str(), server["role"].as_str()), (Some("server"), Some("server")));
        assert_eq!(server["rss_peak_bytes"].as_u64(), Some(10 << 20));
        let cpu = server["cpu_seconds"].as_f64().unwrap();
        assert!((cpu - 0.25).abs() < 1e-9, "a quarter core over the 1 s window: {cpu}");
        assert!(server["samples"].as_u64().unwrap() >= 1);
    }
    let cap = report["capacity"].as_array().unwrap();
    assert_eq!(cap.len(), 1, "{report:#}");
    assert_eq!((cap[0]["substrate"].as_str(), cap[0]["capacity_rps"].as_f64(), cap[0]["limited_by"].as_str()), (Some("kube"), Some(0.0), Some("start-rate")));
    let probes = cap[0]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "the start rate's failure confirmed: {report:#}");
    for probe in probes {
        assert_eq!((probe["rate"].as_f64(), probe["verdict"].as_str(), probe["errors"].as_u64()), (Some(100.0), Some("errors"), Some(5)), "{probe:#}");
    }
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report:#}");
    assert_eq!((skipped[0]["scenario"].as_str(), skipped[0]["variant"].as_str()), (Some("one"), Some("nginx")));
    assert_eq!(report["env"]["versions"]["kubernetes"].as_str(), Some("v1.31.0-fake"), "{:#}", report["env"]);
}

/// The pods and pod-proxy scrapes of a fake API server for the kube
/// cross-check: `server-1` (meshed) always; the Job's pod `load-1-abcde`
/// (meshed) while `job_up`, its proxy counting 1,200 outbound requests; the
/// server's proxy 100 inbound more at every scrape; a pod without a proxy.
fn xcheck_answer(path: &str, job_up: bool, server_scrapes: &AtomicU64) -> (u16, String) {
    let pod = |name: &str, meshed: bool| {
        let mut statuses = vec![serde_json::json!({"name": "app", "ready": true, "restartCount": 0, "image": "a", "imageID": "", "state": {"running": {}}})];
        let mut annotations = serde_json::json!({});
        if meshed {
            statuses.push(serde_json::json!({"name": "weft-proxy", "ready": true, "restartCount": 0, "image": "p", "imageID": "", "state": {"running": {}}}));
            annotations = serde_json::json!({"weft.io/injected": "true"});
        }
        serde_json::json!({"metadata": {"name": name, "namespace": "xc", "annotations": annotations}, "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running", "containerStatuses": statuses}})
    };
    let metrics = |direction: &str, n: u64, started: u64| {
        let labels = format!("direction=\"{direction}\",authority=\"server.xc.svc.cluster.local:8080\",route=\"default\",peer=\"none\"");
        format!(
            "# TYPE weft_http_requests counter\nweft_http_requests_total{{{labels}}} {n}\n# TYPE weft_http_responses counter\n\
             weft_http_responses_total{{{labels},status_code=\"200\",grpc_status=\"\",classification=\"success\"}} {n}\n\
             # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started}\n# EOF\n"
        )
    };
    match path.split('?').next().unwrap_or(path) {
        "/api/v1/namespaces/xc/pods" => {
            let mut items = vec![pod("server-1", true), pod("plain", false)];
            if job_up {
                items.push(pod("load-1-abcde", true));
            }
            (200, serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}).to_string())
        }
        "/api/v1/namespaces/xc/pods/server-1:4191/proxy/metrics" => {
            let n = server_scrapes.fetch_add(1, Ordering::SeqCst) + 1;
            (200, metrics("inbound", 100 * n, 1_000))
        }
        "/api/v1/namespaces/xc/pods/load-1-abcde:4191/proxy/metrics" if job_up => (200, metrics("outbound", 1_200, 2_000)),
        _ => (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_string()),
    }
}

/// The kube substrate's cross-check (`PodWindow`) through kube-rs and
/// mesh-stat's pod-proxy client against a fake API server: the meshed pods
/// are listed and scraped before the Job and after its record; the Job's
/// own sidecar (counters from zero) is compared with everything loadgen
/// sent, warm-up included; a Job whose sidecar is gone by then makes the
/// cell not comparable, not a made-up figure.
#[test]
fn the_kube_cross_check_reads_the_proxies_through_the_api_servers_pod_proxy() {
    use suites::substrate::kube::xcheck::PodWindow;
    let job_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (up, log) = (Arc::clone(&job_up), Arc::clone(&seen));
    std::thread::spawn(move || {
        let scrapes = AtomicU64::new(0);
        for mut conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut h = String::new();
            while reader.read_line(&mut h).unwrap_or(0) > 0 && h != "\r\n" {
                h.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.split('?').next().unwrap_or("").to_string());
            let (status, body) = xcheck_answer(&path, up.load(Ordering::SeqCst), &scrapes);
            let _ = write!(conn, "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        }
    });
    let mut load = canned_load();
    (load.requests, load.not_sent, load.sent_outside_window) = (1_000, 0, 200);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();

        let window = PodWindow::open(&client, "xc").await.unwrap();
        job_up.store(true, Ordering::SeqCst);
        let c = window.close(&client, "xc", "load-1-abcde", true, &load).await.unwrap();
        assert_eq!(c.requests_family, "weft_http_requests_total");
        assert_eq!(c.compared, "xc/load-1-abcde", "{c:?}");
        assert_eq!((c.proxy_requests, c.loadgen_requests, c.loadgen_outside_window), (1_200, 1_200, 200), "{c:?}");
        assert!(!c.flagged && c.not_comparable.is_none(), "{c:?}");
        let names: Vec<(&str, &str)> = c.proxies.iter().map(|p| (p.component.as_str(), p.role.as_str())).collect();
        assert_eq!(names, [("xc/load-1-abcde", "outbound"), ("xc/server-1", "inbound")], "the pod without a proxy is not scraped");
        assert_eq!(c.proxies[1].own_requests(), 100, "the server's proxy: the difference of its two scrapes");

        // The Job's sidecar stopped before the second scrape: said, not guessed.
        job_up.store(false, Ordering::SeqCst);
        let window = PodWindow::open(&client, "xc").await.unwrap();
        let c = window.close(&client, "xc", "load-1-abcde", true, &load).await.unwrap();
        assert!(!c.flagged, "{c:?}");
        let why = c.not_comparable.as_deref().unwrap_or_default();
        assert!(why.starts_with("xc/load-1-abcde: not scraped after the window: "), "{c:?}");
    });
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|p| p == "/api/v1/namespaces/xc/pods" || p.ends_with(":4191/proxy/metrics")), "{seen:?}");
}
