//! `weft stat` through the real binaries: two real mesh-proxy processes
//! (a client's outbound, a server's inbound in front of an app), a known
//! number of requests and failures between them, and the real `weft stat
//! --admin ... --json`, whose counts must equal what was sent. (Build the
//! workspace's binaries first: `cargo build --workspace --bins`.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weft_testkit::{eventually_async as eventually, patience};

/// A binary of the workspace, next to this test's own directory.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(path.is_file(), "{} missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// An app answering 500 on /fail and 200 elsewhere.
async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let status = if req.uri().path() == "/fail" { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                    Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::from_static(b"ok"))).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

struct Proxy {
    _child: Child,
    outbound: SocketAddr,
    /// Only with --app.
    inbound: Option<SocketAddr>,
    admin: SocketAddr,
}

/// A plaintext mesh-proxy with `args`, its addresses read from its stdout.
async fn proxy(args: &[&str]) -> Proxy {
    let mut child = Command::new(bin("mesh-proxy"))
        .args(["--outbound-listen", "127.0.0.1:0", "--inbound-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--threads", "1"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut outbound, mut inbound, mut admin) = (None, None, None);
    while admin.is_none() {
        let line = tokio::time::timeout(patience(), lines.next_line()).await.unwrap().unwrap().expect("mesh-proxy exited");
        let parse = |prefix: &str| line.strip_prefix(prefix).map(|a| a.parse::<SocketAddr>().unwrap());
        outbound = outbound.or(parse("listening outbound "));
        inbound = inbound.or(parse("listening inbound "));
        admin = admin.or(parse("listening admin "));
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let p = Proxy { _child: child, outbound: outbound.unwrap(), inbound, admin: admin.unwrap() };
    eventually("the proxy ready", || async { (get(p.admin, "/ready", "x").await == Some(StatusCode::OK)).then_some(()) }).await;
    p
}

/// One HTTP/1 GET on a fresh connection: its status, None if it failed.
async fn get(to: SocketAddr, path: &str, host: &str) -> Option<StatusCode> {
    let stream = tokio::net::TcpStream::connect(to).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let req = Request::get(path).header("host", host).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(req).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// Responses the proxy at `admin` has counted, per direction.
async fn counted(admin: SocketAddr, direction: &str) -> f64 {
    let text = reqwest_text(admin).await;
    let e = mesh_stat::expo::parse(&text).unwrap();
    e.named(mesh_stat::window::RESPONSES).filter(|s| s.label("direction") == direction).map(|s| s.value).sum()
}

async fn reqwest_text(admin: SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/metrics").header("host", admin.to_string()).body(Empty::<Bytes>::new()).unwrap();
    let body = sender.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn weft_stat_counts_what_was_sent_through_two_real_proxies() {
    let app = app().await;
    let server = proxy(&["--app", &app.to_string(), "--default-inbound-policy", "all-unauthenticated"]).await;
    let client = proxy(&["--route", &format!("web.test={}", server.inbound.expect("the server proxy has an app"))]).await;
    // Traffic before the window must not count.
    assert_eq!(get(client.outbound, "/", "web.test").await, Some(StatusCode::OK));
    eventually("the early request counted", || async { (counted(server.admin, "inbound").await == 1.0).then_some(()) }).await;

    let admins = format!("client=http://{},server=http://{}", client.admin, server.admin);
    let mut stat = Command::new(bin("weft"))
        .args(["stat", "--admin", &admins, "--window", "10m", "--json", "--by", "authority"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(stat.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(patience(), stderr.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.contains("window started: 2 of 2 proxies scraped"), "{line}");

    let (ok, failed) = (30, 5);
    for i in 0..ok + failed {
        let path = if i < failed { "/fail" } else { "/" };
        let want = if i < failed { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
        assert_eq!(get(client.outbound, path, "web.test").await, Some(want), "request {i}");
    }
    // Responses are counted once their last byte is out: wait for both proxies.
    let all = f64::from(ok + failed + 1);
    eventually("both proxies counted every response", || async {
        (counted(client.admin, "outbound").await == all && counted(server.admin, "inbound").await == all).then_some(())
    })
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(stat.id().unwrap() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(patience(), stat.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let rows = report["rows"].as_array().unwrap();
    let row = |workload: &str, direction: &str| {
        rows.iter()
            .find(|r| r["workload"] == workload && r["direction"] == direction)
            .unwrap_or_else(|| panic!("no {workload} {direction} row in {report}"))
    };
    for (workload, direction) in [("client", "outbound"), ("server", "inbound")] {
        let r = row(workload, direction);
        assert_eq!(r["requests"], ok + failed, "{r}");
        assert_eq!(r["successes"], ok, "{r}");
        assert_eq!(r["success_rate"], f64::from(ok) / f64::from(ok + failed), "{r}");
        assert!(r["p50"].as_f64().is_some_and(|p| p > 0.0) && r["p99"].as_f64() >= r["p50"].as_f64(), "{r}");
        assert!(r["rps"].as_f64().is_some_and(|rps| rps > 0.0), "{r}");
    }
    assert_eq!(row("client", "outbound")["key"], "web.test:80", "the authority as the client proxy routed it");
    assert_eq!(rows.len(), 2, "only these two rows had traffic: {report}");

    // `weft top`: one JSON document per refresh, as many as --iterations;
    // nothing was sent meanwhile, so no row had traffic.
    let out = Command::new(bin("weft"))
        .args(["top", "--admin", &admins, "--interval", "100ms", "--iterations", "2", "--json"])
        .output();
    let out = tokio::time::timeout(patience(), out).await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    let refreshes: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(refreshes.len(), 2, "{refreshes:?}");
    for r in &refreshes {
        assert_eq!((&r["by"], &r["rows"], &r["errors"]), (&serde_json::json!("route"), &serde_json::json!([]), &serde_json::json!([])), "{r}");
    }
}

/// A fake Kubernetes API server on 127.0.0.1:0 for `weft stat --kube`: a
/// pod list, and a meshed pod's metrics through the pod proxy, 10 responses
/// at the first scrape and 25 at the second. Returns its address and the
/// requests it saw.
async fn fake_api() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let pod = |name: &str, meshed: bool, running: bool| {
        let state = if running { serde_json::json!({"running": {}}) } else { serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}) };
        let mut containers = vec![serde_json::json!({"name": "app"})];
        let mut statuses = vec![serde_json::json!({"name": "app", "ready": true, "restartCount": 0, "image": "app", "imageID": "", "state": {"running": {}}})];
        if meshed {
            containers.push(serde_json::json!({"name": "weft-proxy"}));
            statuses.push(serde_json::json!({"name": "weft-proxy", "ready": running, "restartCount": 0, "image": "p", "imageID": "", "state": state}));
        }
        serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "annotations": if meshed { serde_json::json!({"weft.io/injected": "true"}) } else { serde_json::json!({}) }},
            "spec": {"containers": containers},
            "status": {"phase": "Running", "containerStatuses": statuses}
        })
    };
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": [pod("web-1", true, true), pod("plain", false, true), pod("web-2", true, false)]
    })
    .to_string();
    let metrics = |n: u32| {
        format!(
            "# TYPE weft_http_responses counter\nweft_http_responses_total{{direction=\"inbound\",authority=\"web.shop.svc.cluster.local:80\",route=\"default\",peer=\"spiffe://cluster.local/ns/front/sa/front\",status_code=\"200\",grpc_status=\"\",classification=\"success\"}} {n}\n# EOF\n"
        )
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (log, list) = (Arc::clone(&log), list.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let request = format!("{} {}", req.method(), req.uri());
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    let scrapes = log.iter().filter(|r| r.contains("/proxy/metrics")).count();
                    let (status, body) = match request.as_str() {
                        "GET /api/v1/namespaces/shop/pods?&labelSelector=app%3Dweb" | "GET /api/v1/namespaces/shop/pods?labelSelector=app%3Dweb" => (200, list.clone()),
                        "GET /api/v1/namespaces/shop/pods/web-1:4191/proxy/metrics" => (200, metrics(if scrapes == 1 { 10 } else { 25 })),
                        _ => (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_owned()),
                    };
                    std::future::ready(Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap()))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn weft_stat_kube_scrapes_meshed_running_pods_through_the_api_server() {
    let (api, seen) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
             users:\n- name: fake\n  user:\n    token: weft-stat-test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
        ),
    )
    .unwrap();
    let out = Command::new(bin("weft"))
        .args(["stat", "--kube", "-n", "shop", "-l", "app=web", "--window", "100ms", "--json", "--by", "peer"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{:?}", seen.lock().unwrap());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only web-1 is meshed with a running proxy: {report}");
    assert_eq!(report["errors"], serde_json::json!([]), "web-2's stopped proxy is not scraped: {report}");
    assert_eq!(rows[0]["workload"], "shop/web-1");
    assert_eq!(rows[0]["key"], "spiffe://cluster.local/ns/front/sa/front");
    assert_eq!((rows[0]["requests"].as_u64(), rows[0]["successes"].as_u64()), (Some(15), Some(15)), "{report}");
    let scrapes = seen.lock().unwrap().iter().filter(|r| r.ends_with("/pods/web-1:4191/proxy/metrics")).count();
    assert_eq!(scrapes, 2, "{:?}", seen.lock().unwrap());
}

/// `weft stat --run` finds a running `bench run` (local substrate) through
/// its work dir's proxies.json and scrapes the cell's two proxies.
#[tokio::test]
async fn weft_stat_run_reads_the_proxies_of_a_running_bench_run() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let suite = dir.path().join("s.toml");
    std::fs::write(
        &suite,
        "name = \"s\"\n[defaults]\nduration = \"3s\"\nwarmup = \"0s\"\nconnections = 2\nvariants = [\"weft\"]\n[[scenario]]\nname = \"h1\"\nrates = [200]\n",
    )
    .unwrap();
    // The test binaries' siblings are built; without WEFT_BIN_DIR, bench run under
    // `cargo test` (CARGO set) rebuilds any sibling older than itself first, which
    // on a cold CI build took longer than the wait below.
    let bins = bin("bench").parent().unwrap().to_path_buf();
    let mut bench = Command::new(bin("bench"))
        .args(["run", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("TMPDIR", &tmp)
        .env("WEFT_BIN_DIR", &bins)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let published = || {
        let work = std::fs::read_dir(&tmp).ok()?.flatten().map(|e| e.path()).find(|p| p.join("proxies.json").is_file())?;
        let state = mesh_stat::state::RunState::read(&work).ok()?;
        (state.proxies.len() == 2).then_some(state)
    };
    let deadline = tokio::time::Instant::now() + patience();
    let state = loop {
        if let Some(state) = published() {
            break state;
        }
        // A bench that ended or hangs before publishing says why on stderr.
        if bench.try_wait().unwrap().is_some() || tokio::time::Instant::now() >= deadline {
            let _ = bench.start_kill();
            let out = bench.wait_with_output().await.unwrap();
            panic!(
                "the cell's proxies were not published within {:?} ({}); bench's stderr:\n{}",
                patience(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!((state.substrate.as_str(), state.variant.as_str()), ("local", "weft"));
    let out = Command::new(bin("weft"))
        .args(["stat", "--run", "--window", "1s", "--json"])
        .env("TMPDIR", &tmp)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let mut seen: Vec<(String, String)> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["requests"].as_u64() > Some(0) && r["success_rate"] == 1.0, "{r}");
            // loadgen's connections to the client proxy, the proxies' mTLS connection to the server one.
            assert!(r["tcp_open"].as_u64() >= Some(1), "{r}");
            (r["workload"].as_str().unwrap().to_owned(), r["direction"].as_str().unwrap().to_owned())
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [("proxy-inbound".into(), "inbound".into()), ("proxy-outbound".into(), "outbound".into())], "{report}");
    let done = tokio::time::timeout(patience() * 3, bench.wait_with_output()).await.unwrap().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
}

/// What a terminal received from `weft top`, split into frames at each
/// clear-screen + cursor-home it wrote (text before the first dropped).
fn frames(screen: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(screen);
    text.split("\x1b[2J\x1b[H").skip(1).map(str::to_owned).collect()
}

/// The REQUESTS figure of `workload`'s row in one frame, if it has one.
fn requests_in(frame: &str, workload: &str) -> Option<u64> {
    frame.lines().find(|l| l.starts_with(workload))?.split_whitespace().nth(2)?.parse().ok()
}

/// `weft top` on a real terminal: under a pseudo-terminal (util-linux
/// `script`), scraping two real proxies, it redraws its table in place
/// (each frame clears the screen and homes the cursor), the rows follow the
/// traffic sent between frames, and it ends by itself on `--iterations`
/// and on a Ctrl-C typed at the terminal, exit 0 both times.
#[tokio::test]
async fn weft_top_redraws_in_place_on_a_terminal() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    assert!(
        std::process::Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success()),
        "this test runs `weft top` under util-linux `script` (a pseudo-terminal): install util-linux"
    );
    let app = app().await;
    let server = proxy(&["--app", &app.to_string(), "--default-inbound-policy", "all-unauthenticated"]).await;
    let client = proxy(&["--route", &format!("web.test={}", server.inbound.expect("the server proxy has an app"))]).await;
    let admins = format!("client=http://{},server=http://{}", client.admin, server.admin);
    // `script` gives the command a pseudo-terminal for stdin/stdout and
    // copies what it writes to our pipe (and our pipe's bytes to it).
    let top = |bound: &str| {
        let cmd = format!("exec {} top --admin {admins} --interval 250ms --by workload {bound}", bin("weft").display());
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--command", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let into = Arc::clone(&screen);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf).await {
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (child, screen)
    };
    let shown = |screen: &Arc<Mutex<Vec<u8>>>| frames(&screen.lock().unwrap());

    // Bounded: idle frames, then traffic until two frames showed it, then idle again.
    let (mut bounded, screen) = top("--iterations 12");
    eventually("a first, idle frame", || async { (!shown(&screen).is_empty()).then_some(()) }).await;
    let busy_from = shown(&screen).len();
    let mut sent = 0;
    while shown(&screen)[busy_from..].iter().filter(|f| requests_in(f, "client").is_some()).count() < 2 {
        assert!(sent < 5_000, "5,000 requests sent and `weft top` never showed them: {:?}", shown(&screen));
        assert_eq!(get(client.outbound, "/", "web.test").await, Some(StatusCode::OK));
        sent += 1;
    }
    let out = tokio::time::timeout(patience(), bounded.wait()).await.expect("weft top ends after --iterations").unwrap();
    assert!(out.success(), "{out:?}");
    let all = shown(&screen);
    assert_eq!(all.len(), 12, "one frame per refresh: {all:?}");
    for f in &all {
        assert!(f.contains("WORKLOAD") && f.contains("REQUESTS"), "each frame is a whole table: {f:?}");
    }
    // The table changed as traffic came and went: idle (no row), busy
    // (a client row and a server row), and idle again once it stopped.
    let busy: Vec<u64> = all.iter().filter_map(|f| requests_in(f, "client")).collect();
    assert!(busy.len() >= 2 && busy.iter().all(|n| *n > 0), "{all:?}");
    assert!(requests_in(&all[0], "client").is_none(), "no traffic before the first frame: {all:?}");
    assert!(all.iter().any(|f| requests_in(f, "server").is_some()), "{all:?}");
    assert!(requests_in(all.last().unwrap(), "client").is_none(), "the last frame came after the traffic stopped: {all:?}");
    assert!(busy.iter().sum::<u64>() <= sent, "never more than was sent: {busy:?} of {sent}");

    // Unbounded: Ctrl-C typed at its terminal ends it cleanly.
    let (mut running, screen) = top("");
    eventually("a frame", || async { (!shown(&screen).is_empty()).then_some(()) }).await;
    let mut stdin = running.stdin.take().unwrap();
    stdin.write_all(b"\x03").await.unwrap();
    stdin.flush().await.unwrap();
    let out = tokio::time::timeout(patience(), running.wait()).await.expect("weft top ends on Ctrl-C").unwrap();
    assert!(out.success(), "Ctrl-C is a clean exit: {out:?}");
}
