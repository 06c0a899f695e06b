//! Discovery through the real binary: `--destination` / `--policy` pointed
//! at an in-test gRPC control plane; balancing, traffic split, retries and
//! their budget, endpoint churn, a control-plane outage, and inbound
//! authorization between meshed proxies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use mesh_api::policy::v1 as pol;

use crate::{common::*, discovery_support::*, mesh_support::*};

async fn proxy_with(ctl: &FakeControl, extra: &[&str]) -> Proxy {
    let mut a = args(&["--destination", &ctl.addr().to_string(), "--policy", &ctl.addr().to_string()]);
    a.extend(ctl.trust_args());
    a.extend(args(extra));
    start_proxy(&a).await
}

/// Sends `n` GETs for `host` over `conns` keep-alive connections; returns
/// the statuses in order of completion.
async fn load(proxy: &Proxy, host: &str, n: usize, conns: usize) -> Vec<StatusCode> {
    let per = n.div_ceil(conns);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, host) = (proxy.outbound, host.to_owned());
        let count = per.min(n - (c * per).min(n));
        tasks.push(tokio::spawn(async move {
            let mut conn = H1::connect(addr).await.unwrap();
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                out.push(conn.send(get("/", &host)).await.unwrap().status());
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(within("load finishes", t).await.unwrap());
    }
    all
}

#[tokio::test]
async fn p2c_sends_most_requests_to_the_fast_replicas() {
    let ctl = FakeControl::start().await;
    let fast1 = Replica::start(Duration::ZERO).await;
    let fast2 = Replica::start(Duration::ZERO).await;
    let slow = Replica::start(Duration::from_millis(50)).await;
    ctl.state.set_endpoints("web.test:80", &[fast1.addr, fast2.addr, slow.addr]);
    let proxy = proxy_with(&ctl, &[]).await;
    let statuses = load(&proxy, "web.test", 600, 4).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let (f1, f2, s) = (fast1.hits(), fast2.hits(), slow.hits());
    let fast_share = (f1 + f2) as f64 / (f1 + f2 + s) as f64;
    assert!(fast_share >= 0.8, "fast {f1}+{f2}, slow {s}: {fast_share:.3}");
    assert!(f1 > 50 && f2 > 50, "both fast replicas used: {f1} {f2}");
}

#[tokio::test]
async fn weighted_split_90_10_stays_within_3_percent() {
    let ctl = FakeControl::start().await;
    let (a, b) = (Replica::start(Duration::ZERO).await, Replica::start(Duration::ZERO).await);
    ctl.state.set_endpoints("a.test:80", &[a.addr]);
    ctl.state.set_endpoints("b.test:80", &[b.addr]);
    ctl.state.set_outbound(
        "web.test:80",
        one_rule(pol::HttpRule { backends: vec![backend("a.test:80", 90), backend("b.test:80", 10)], ..Default::default() }, 7),
    );
    let proxy = proxy_with(&ctl, &[]).await;
    let n = 5000;
    let statuses = load(&proxy, "web.test", n, 4).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let share = a.hits() as f64 / n as f64;
    assert!((0.87..=0.93).contains(&share), "a got {} of {n} ({share:.3}), b {}", a.hits(), b.hits());
    assert_eq!(a.hits() + b.hits(), n);
}

fn retry_rule(ratio: f64, min_per_sec: u32, ttl_ms: u64) -> pol::HttpRule {
    pol::HttpRule {
        retry: Some(pol::Retry {
            http_statuses: vec![pol::StatusRange { start: 503, end: 503 }],
            max_retries: 3,
            budget: Some(pol::RetryBudget { retry_ratio: ratio, min_retries_per_second: min_per_sec, ttl_ms }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn retries_recover_a_flaky_backend_and_respect_the_budget() {
    let ctl = FakeControl::start().await;
    let good = Replica::start(Duration::ZERO).await;
    let flaky = Replica::start(Duration::ZERO).await;
    flaky.status.store(503, std::sync::atomic::Ordering::SeqCst);
    ctl.state.set_endpoints("web.test:80", &[good.addr, flaky.addr]);
    // Accrual off: only retries can hide the flaky replica. P2C sends the
    // fast-failing replica about half of the 300 requests, each needing a
    // retry (a few twice): a ratio of 0.5 plus the floor allowed 250 for
    // about 250 needed, and failed a few requests at the end whenever the
    // flaky share came out a little higher. A ratio of 1 leaves room.
    ctl.state.set_outbound("web.test:80", one_rule(retry_rule(1.0, 10, 10_000), 0));
    let down = Replica::start(Duration::ZERO).await;
    down.status.store(503, std::sync::atomic::Ordering::SeqCst);
    ctl.state.set_endpoints("down.test:80", &[down.addr]);
    let (ratio, floor, ttl) = (0.2, 2u32, Duration::from_secs(1));
    ctl.state.set_outbound("down.test:80", one_rule(retry_rule(ratio, floor, ttl.as_millis() as u64), 0));
    let proxy = proxy_with(&ctl, &[]).await;

    // Until the Policy stream's first answer arrives (up to 3 s on a loaded
    // machine) requests take the default route, without retries. Wait until
    // a request that reached the flaky replica still came back 200: the
    // retry rule is in force.
    eventually("the retry rule in force", || {
        let proxy = &proxy;
        let flaky = &flaky;
        async move {
            let before = flaky.hits();
            let ok = load(proxy, "web.test", 1, 1).await[0] == StatusCode::OK;
            (ok && flaky.hits() > before).then_some(())
        }
    })
    .await;

    let statuses = load(&proxy, "web.test", 300, 2).await;
    let failed: Vec<(usize, StatusCode)> =
        statuses.iter().enumerate().filter(|(_, s)| **s != StatusCode::OK).map(|(i, s)| (i, *s)).collect();
    // Which requests (by order) and what they got: a failure here once
    // (2 of 300, full suite under load) left no trace of why.
    assert!(
        failed.is_empty(),
        "retries hide the flaky replica; failed (request index, status): {failed:?}; good {} hits, flaky {} hits",
        good.hits(),
        flaky.hits()
    );
    assert!(flaky.hits() > 0, "the flaky replica was tried");

    // A backend failing every request: retries stay within the budget.
    let n = 1000;
    let started = Instant::now();
    let statuses = load(&proxy, "down.test", n, 2).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
    let bound = n as f64 * (1.0 + ratio) + f64::from(floor) * (secs + ttl.as_secs_f64());
    let hits = down.hits();
    assert!(hits as f64 <= bound, "{hits} requests reached the backend for {n} (bound {bound:.0})");
    assert!(hits > n, "some retries were made: {hits}");
}

#[tokio::test]
async fn endpoint_changes_apply_within_a_second() {
    let ctl = FakeControl::start().await;
    let (a, b, c) = (
        Replica::start(Duration::ZERO).await,
        Replica::start(Duration::ZERO).await,
        Replica::start(Duration::ZERO).await,
    );
    ctl.state.set_endpoints("web.test:80", &[a.addr, b.addr]);
    let proxy = proxy_with(&ctl, &[]).await;
    let mut conn = H1::connect(proxy.outbound).await.unwrap();
    for _ in 0..50 {
        assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
    }
    assert!(a.hits() > 0 && b.hits() > 0);

    // Remove a, add c.
    ctl.state.set_endpoints("web.test:80", &[b.addr, c.addr]);
    let changed = Instant::now();
    let mut a_after_1s = None;
    let deadline = changed + patience();
    while c.hits() == 0 || changed.elapsed() < Duration::from_millis(1500) {
        assert!(Instant::now() < deadline, "c never received a request");
        assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
        if a_after_1s.is_none() && changed.elapsed() >= Duration::from_secs(1) {
            a_after_1s = Some(a.hits());
        }
    }
    assert_eq!(Some(a.hits()), a_after_1s, "the removed endpoint got requests more than 1 s after the change");
    assert!(c.hits() > 0);
}

#[tokio::test]
async fn control_plane_outage_never_fails_requests() {
    let ctl = FakeControl::start().await;
    let (a, b) = (Replica::start(Duration::ZERO).await, Replica::start(Duration::ZERO).await);
    ctl.state.set_endpoints("web.test:80", &[a.addr, b.addr]);
    ctl.state.set_outbound("web.test:80", one_rule(pol::HttpRule::default(), 7));
    let proxy = proxy_with(&ctl, &[]).await;
    let mut conn = H1::connect(proxy.outbound).await.unwrap();
    for _ in 0..50 {
        assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
    }
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runner = {
        let addr = proxy.outbound;
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut conn = H1::connect(addr).await.unwrap();
            let mut failures = 0;
            let until = Instant::now() + Duration::from_secs(3);
            let mut sent = 0;
            while Instant::now() < until && sent < 20_000 {
                if !conn.send(get("/", "web.test")).await.is_ok_and(|r| r.status() == StatusCode::OK) {
                    failures += 1;
                }
                sent += 1;
                progress.store(sent, std::sync::atomic::Ordering::Relaxed);
            }
            (sent, failures)
        })
    };
    // Traffic is flowing before the outage.
    eventually("100 requests before the outage", || {
        let progress = Arc::clone(&progress);
        async move { (progress.load(std::sync::atomic::Ordering::Relaxed) >= 100).then_some(()) }
    })
    .await;
    ctl.kill();
    let (sent, failures) = within("traffic during the outage", runner).await.unwrap();
    assert_eq!(failures, 0, "{failures} of {sent} requests failed during the outage");
    assert!(sent > 100, "traffic flowed: {sent}");
    // The proxy keeps serving from the last state afterwards, too.
    assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn authorization_policy_allows_one_identity_and_refuses_another() {
    let (alice, mallory, server_id) = (sa("alice"), sa("mallory"), sa("server"));
    let m = MeshDir::new(&[&alice, &mallory, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    ctl.state.set_inbound(&server_id, only(&alice));
    let app = start_app().await;
    let server = m
        .proxy("server", &server_id, cp.addr, &args(&["--app", &app.addr.to_string(), "--policy", &ctl.addr().to_string()]))
        .await;
    let route = format!("web.test={}@{server_id}", server.inbound.unwrap());
    let a = m.proxy("alice", &alice, cp.addr, &args(&["--route", &route])).await;
    let b = m.proxy("mallory", &mallory, cp.addr, &args(&["--route", &route])).await;
    for p in [&server, &a, &b] {
        ready(p).await;
    }
    eventually("alice allowed", || async {
        let r = send_h1(a.outbound, get("/", "web.test")).await.ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    let r = send_h1(b.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let why = proxy_error(&r).unwrap();
    assert!(why.contains("unauthorized") && why.contains("sa/mallory"), "{why}");
    let metrics = server.metrics().await;
    let denied = metric(&metrics, r#"weft_inbound_authz_denied_total{protocol="http",reason="unauthorized"}"#);
    assert!(denied >= Some(1.0), "{metrics}");
    let log = server.stderr();
    assert!(log.contains("denied inbound http from spiffe://cluster.local/ns/default/sa/mallory"), "{log}");
    cp.stop().await;
}

/// A TCP server echoing every byte, counting connections.
async fn echo_server() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = conns.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, conns, task)
}

#[tokio::test]
async fn opaque_tcp_is_balanced_per_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ctl = FakeControl::start().await;
    let (a, a_conns, _ta) = echo_server().await;
    let (b, b_conns, _tb) = echo_server().await;
    ctl.state.set_endpoints("db.test:5432", &[a, b]);
    let proxy = proxy_with(&ctl, &["--tcp-service", "127.0.0.1:0=db.test:5432"]).await;
    let listen = proxy.tcp_service[0];
    // Held open: each open connection weighs on its endpoint's cost.
    let mut held = Vec::new();
    for i in 0..20u8 {
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        s.write_all(&[i; 3]).await.unwrap();
        let mut back = [0u8; 3];
        within("echo through the tcp service", s.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, [i; 3]);
        held.push(s);
    }
    let (na, nb) = (a_conns.load(std::sync::atomic::Ordering::SeqCst), b_conns.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(na + nb, 20);
    assert!(na >= 5 && nb >= 5, "connections spread over both endpoints: {na} / {nb}");
}

#[tokio::test]
async fn discovered_meshed_endpoints_are_reached_over_mtls() {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let app = start_app().await;
    let server = m
        .proxy("server", &server_id, cp.addr, &args(&["--app", &app.addr.to_string(), "--forward-client-identity"]))
        .await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    let inbound = server.inbound.unwrap();
    ctl.state.set_identity(inbound, &server_id);
    ctl.state.set_endpoints("web.test:80", &[inbound]);
    let client = m.proxy("client", &client_id, cp.addr, &args(&["--destination", &ctl.addr().to_string()])).await;
    ready(&server).await;
    ready(&client).await;
    let r = send_h1(client.outbound, get("/headers", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", proxy_error(&r));
    let seen = String::from_utf8_lossy(r.body()).into_owned();
    assert!(seen.contains(&format!("weft-client-id: {client_id}")), "the app learns the verified caller:\n{seen}");
    cp.stop().await;
}

fn slice(name: &str, service: &str, port: u16) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: test, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n- addresses: [127.0.0.1]\n"
    )
}

/// The real mesh-control serving a manifests directory: the wire contract
/// end to end (canonical backend authorities, deltas, weights).
#[tokio::test]
async fn real_control_plane_manifests_split_and_balance() {
    let m = MeshDir::new(&[]);
    let manifests = m.path("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let (a1, a2, b) = (
        Replica::start(Duration::ZERO).await,
        Replica::start(Duration::ZERO).await,
        Replica::start(Duration::ZERO).await,
    );
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: test}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web-v2, namespace: test}\nspec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: canary, namespace: test}\nspec:\n  parentRefs: [{group: core, kind: Service, name: web, port: 80}]\n  rules:\n  - backendRefs: [{name: web, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]\n",
    );
    yaml.push_str(&slice("web-1", "web", a1.addr.port()));
    yaml.push_str(&slice("web-2", "web", a2.addr.port()));
    yaml.push_str(&slice("web-v2-1", "web-v2", b.addr.port()));
    std::fs::write(manifests.join("web.yaml"), yaml).unwrap();
    let cp = m
        .control_with("127.0.0.1:0", "1h", &args(&["--manifests", manifests.to_str().unwrap(), "--manifests-poll", "50ms"]))
        .await;
    let cp_addr = cp.addr.to_string();
    let anchor = m.anchor();
    let proxy =
        start_proxy(&args(&["--destination", &cp_addr, "--policy", &cp_addr, "--trust-anchor", anchor.to_str().unwrap()]))
            .await;
    let n = 2000;
    let statuses = load(&proxy, "web.test", n, 4).await;
    let bad = statuses.iter().filter(|s| **s != StatusCode::OK).count();
    assert_eq!(bad, 0, "{bad} of {n} failed");
    let v1 = a1.hits() + a2.hits();
    let share = v1 as f64 / n as f64;
    assert!((0.86..=0.94).contains(&share), "web {v1} (split {} / {}), web-v2 {}: {share:.3}", a1.hits(), a2.hits(), b.hits());
    assert!(a1.hits() > 100 && a2.hits() > 100, "both web endpoints used: {} {}", a1.hits(), a2.hits());
    cp.stop().await;
}

/// The last `discovery: N open watch streams, M watched lookups` line of a
/// mesh-control log, as (N, M).
fn control_watches(log: &std::path::Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("open watch streams"))?;
    let rest = line.split("discovery: ").nth(1)?;
    let mut words = rest.split_whitespace();
    let open = words.next()?.parse().ok()?;
    let watches = words.nth(3)?.trim_end_matches(',').parse().ok()?;
    Some((open, watches))
}

/// Many distinct Hosts through a proxy discovering from the real
/// mesh-control, with a cap of 4 and a short idle timeout: the authority
/// gauges never pass the cap, idle authorities go and their streams close
/// at mesh-control, an evicted authority works again on its next request,
/// and an invalid authority gets 400 without any watch.
#[tokio::test]
async fn discovered_authorities_are_bounded_and_their_streams_closed() {
    let m = MeshDir::new(&[]);
    let manifests = m.path("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let app = Replica::start(Duration::ZERO).await;
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: test}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n",
    );
    yaml.push_str(&slice("web-1", "web", app.addr.port()));
    std::fs::write(manifests.join("web.yaml"), yaml).unwrap();
    let cp = m
        .control_with("127.0.0.1:0", "1h", &args(&["--manifests", manifests.to_str().unwrap(), "--manifests-poll", "50ms"]))
        .await;
    let cp_addr = cp.addr.to_string();
    let anchor = m.anchor();
    let proxy = start_proxy(&args(&[
        "--destination",
        &cp_addr,
        "--policy",
        &cp_addr,
        "--trust-anchor",
        anchor.to_str().unwrap(),
        "--max-discovered-authorities",
        "4",
        "--discovery-idle-timeout",
        "300ms",
    ]))
    .await;
    let series = |text: &str, s: &str| metric(text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));

    // Invalid: 400 from the proxy, and nothing watched.
    for bad in ["web.test:0", "web..test", "-web.test:80", "web.test:99999"] {
        let r = send_h1(proxy.outbound, get("/", bad)).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let why = proxy_error(&r).unwrap_or_default();
        assert!(why.contains("invalid authority"), "{bad}: {why}");
    }
    let text = proxy.metrics().await;
    assert_eq!(series(&text, "weft_discovery_authorities{cache=\"service\"}"), 0.0);
    assert_eq!(series(&text, "weft_discovery_streams{kind=\"destination\"}"), 0.0);
    assert_eq!(series(&text, "weft_discovery_streams{kind=\"policy\"}"), 0.0);

    // The known Service, then 40 unknown ones: never more than 4 held.
    let mut conn = H1::connect(proxy.outbound).await.unwrap();
    assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
    for i in 0..40 {
        let host = format!("host-{i}.test");
        assert_eq!(conn.send(get("/", &host)).await.unwrap().status(), StatusCode::BAD_GATEWAY, "{host}");
        let text = proxy.metrics().await;
        for cache in ["service", "backend"] {
            let held = series(&text, &format!("weft_discovery_authorities{{cache=\"{cache}\"}}"));
            assert!(held <= 4.0, "{held} {cache} entries after {host} with a cap of 4");
        }
        assert!(series(&text, "weft_discovery_streams{kind=\"destination\"}") <= 4.0);
    }
    let text = proxy.metrics().await;
    let evicted = series(&text, "weft_discovery_evictions_total{cache=\"service\",reason=\"capacity\"}")
        + series(&text, "weft_discovery_evictions_total{cache=\"service\",reason=\"idle\"}");
    assert!(evicted >= 37.0, "41 authorities, a cap of 4, {evicted} evicted:\n{text}");

    // Idle: everything goes, the proxy's streams close and so do mesh-control's.
    eventually("the proxy drops its idle authorities and closes their streams", || async {
        let text = proxy.metrics().await;
        let zero = |s: &str| metric(&text, s) == Some(0.0);
        (zero("weft_discovery_authorities{cache=\"service\"}")
            && zero("weft_discovery_authorities{cache=\"backend\"}")
            && zero("weft_discovery_streams{kind=\"destination\"}")
            && zero("weft_discovery_streams{kind=\"policy\"}"))
        .then_some(())
    })
    .await;
    eventually("mesh-control sees every stream closed and forgets their lookups", || async {
        (control_watches(&cp.log) == Some((0, 0))).then_some(())
    })
    .await;

    // Evicted, and back on the next request.
    let hits = app.hits();
    assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.hits(), hits + 1);
    cp.stop().await;
}
