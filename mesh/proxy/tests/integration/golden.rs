//! The golden metrics (issue 15) through the real binaries: a known mix of
//! routes, statuses, a gRPC error, a retry and an opaque TCP relay between
//! meshed proxies certified by the real mesh-control, every counter and
//! histogram count asserted exactly; and 100,000 distinct Hosts leaving the
//! series count under its cap and the RSS bounded.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_api::policy::v1 as pol;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{common::*, discovery_support::*, mesh_support::*};

/// Every sample of an exposition, by series (`name{labels}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The app behind the server proxy, by path: `/a/flaky` answers 503 the
/// first time and 200 after; `/b/missing` 404; `/b/fail` 500; `/b/grpc` a
/// gRPC response whose trailers say NOT_FOUND (5); the rest 200 `ok`.
async fn mix_app() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flaky = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let flaky = Arc::clone(&flaky);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let flaky = Arc::clone(&flaky);
                    async move {
                        let path = req.uri().path().to_owned();
                        let _ = req.into_body().collect().await;
                        let full = |status: u16| {
                            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")).map_err(|e| match e {}).boxed());
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            r
                        };
                        let resp: Response<BoxBody<Bytes, Infallible>> = match path.as_str() {
                            "/a/flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => full(503),
                            "/b/missing" => full(404),
                            "/b/fail" => full(500),
                            "/b/grpc" => {
                                let mut trailers = HeaderMap::new();
                                trailers.insert("grpc-status", "5".parse().unwrap());
                                let frames = futures_util::stream::iter([
                                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                                    Ok(Frame::trailers(trailers)),
                                ]);
                                let mut r = Response::new(StreamBody::new(frames).boxed());
                                r.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                                r
                            }
                            _ => full(200),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, task)
}

/// A TCP server echoing every byte.
async fn echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// `web.test`: rule `a` (path /a, retried on 503 once) and the unnamed
/// rule 1 (path /b) of HTTPRoute `web`.
fn web_policy() -> pol::OutboundPolicy {
    let prefix = |p: &str| pol::HttpMatch {
        path: Some(pol::PathMatch { kind: Some(pol::path_match::Kind::Prefix(p.into())) }),
        ..Default::default()
    };
    pol::OutboundPolicy {
        exists: true,
        http_routes: vec![pol::HttpRoute {
            meta: Some(pol::Meta { kind: "HTTPRoute".into(), namespace: "test".into(), name: "web".into() }),
            rules: vec![
                pol::HttpRule {
                    name: "a".into(),
                    matches: vec![prefix("/a")],
                    retry: Some(pol::Retry {
                        http_statuses: vec![pol::StatusRange { start: 503, end: 503 }],
                        max_retries: 1,
                        budget: Some(pol::RetryBudget { retry_ratio: 0.2, min_retries_per_second: 10, ttl_ms: 10_000 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                pol::HttpRule { matches: vec![prefix("/b")], ..Default::default() },
            ],
        }],
        ..Default::default()
    }
}

/// `sum` of the changes of every series of `families` between two scrapes
/// that is not listed in `expected`, and every listed one's change.
fn check_deltas(before: &HashMap<String, f64>, after: &HashMap<String, f64>, families: &[&str], expected: &[(String, f64)]) {
    let delta = |s: &str| after.get(s).copied().unwrap_or(0.0) - before.get(s).copied().unwrap_or(0.0);
    let mut wrong = Vec::new();
    for (series, want) in expected {
        if !after.contains_key(series) {
            wrong.push(format!("missing {series}"));
        } else if delta(series) != *want {
            wrong.push(format!("{series}: {} (want {want})", delta(series)));
        }
    }
    for series in after.keys() {
        let listed = expected.iter().any(|(s, _)| s == series);
        if !listed && families.iter().any(|f| series.starts_with(f)) && delta(series) != 0.0 {
            wrong.push(format!("unexpected change {series}: {}", delta(series)));
        }
    }
    wrong.sort();
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
}

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

#[tokio::test]
async fn golden_metrics_count_a_known_mix_exactly() {
    let (client_id, server_id, db_id) = (sa("client"), sa("server"), sa("db"));
    let m = MeshDir::new(&[&client_id, &server_id, &db_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let (app, _app_task) = mix_app().await;
    let (echo_addr, _echo_task) = echo().await;
    let server = m.proxy("server", &server_id, cp.addr, &args(&["--app", &app.to_string()])).await;
    let db = m.proxy("db", &db_id, cp.addr, &args(&["--app", &echo_addr.to_string()])).await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    let inbound = server.inbound.unwrap();
    ctl.state.set_identity(inbound, &server_id);
    ctl.state.set_endpoints("web.test:80", &[inbound]);
    ctl.state.set_endpoints("plain.test:80", &[inbound]);
    ctl.state.set_outbound("web.test:80", web_policy());
    ctl.state.set_outbound("plain.test:80", pol::OutboundPolicy { exists: true, ..Default::default() });
    let ctl_addr = ctl.addr().to_string();
    let forward = format!("127.0.0.1:0={}@{db_id}", db.inbound.unwrap());
    let client = m
        .proxy("client", &client_id, cp.addr, &args(&["--destination", &ctl_addr, "--policy", &ctl_addr, "--tcp-forward", &forward]))
        .await;
    for p in [&server, &db, &client] {
        ready(p).await;
    }
    // Both routes' policies in force (requests before the first Policy
    // answer take the default route): warm up until the named routes show.
    eventually("the route rules in force", || async {
        for (path, host) in [("/a/ok", "web.test"), ("/b/ok", "web.test"), ("/ok", "plain.test")] {
            let r = send_h1(client.outbound, get(path, host)).await.ok()?;
            (r.status() == StatusCode::OK).then_some(())?;
        }
        let text = client.metrics().await;
        (text.contains(r#"route="web/a""#) && text.contains(r#"route="web/1""#)).then_some(())
    })
    .await;
    // Warm-up connections closed before the baseline.
    let closed = |text: &str| {
        let s = samples(text);
        let get = |k: &str| s.get(k).copied().unwrap_or(0.0);
        let l = r#"direction="outbound",peer="none",tls="plaintext""#;
        let closed: f64 = ["", "reset", "timeout", "io"]
            .iter()
            .map(|e| get(&format!("weft_tcp_connections_closed_total{{{l},error=\"{e}\"}}")))
            .sum();
        (get(&format!("weft_tcp_connections_opened_total{{{l}}}")), closed)
    };
    eventually("warm-up connections closed", || async {
        let (opened, closed) = closed(&client.metrics().await);
        (opened == closed).then_some(())
    })
    .await;
    let (c0, s0, d0) = (samples(&client.metrics().await), samples(&server.metrics().await), samples(&db.metrics().await));

    // The mix: one HTTP/1 keep-alive connection, one h2c connection.
    let mut h1 = H1::connect(client.outbound).await.unwrap();
    let mut statuses = Vec::new();
    for (path, host) in [
        ("/a/ok", "web.test"),
        ("/a/ok", "web.test"),
        ("/a/ok", "web.test"),
        ("/a/flaky", "web.test"),
        ("/b/missing", "web.test"),
        ("/b/missing", "web.test"),
        ("/b/fail", "web.test"),
        ("/ok", "plain.test"),
        ("/ok", "plain.test"),
    ] {
        statuses.push(h1.send(get(path, host)).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 404, 404, 500, 200, 200]);
    // Its connection task is aborted at the end: the socket closes at once.
    let (mut h2, h2_conn) = {
        let stream = TcpStream::connect(client.outbound).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        (sender, tokio::spawn(conn))
    };
    let mut grpc = h2_post("/b/grpc", "web.test", Bytes::from_static(b"\0\0\0\0\0"));
    grpc.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
    grpc.headers_mut().insert("te", "trailers".parse().unwrap());
    let resp = within("grpc response", h2.send_request(grpc)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = within("grpc body", resp.into_body().collect()).await.unwrap();
    assert_eq!(body.trailers().and_then(|t| t.get("grpc-status")).map(|v| v.to_str().unwrap().to_owned()).as_deref(), Some("5"));
    drop((h1, h2));
    h2_conn.abort();

    // Opaque TCP, meshed to db: 1000 bytes each way.
    let mut tcp = TcpStream::connect(client.tcp[0]).await.unwrap();
    let sent: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    tcp.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    within("echo through the meshed relay", tcp.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, sent);
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("relay closes", tcp.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    drop(tcp);

    // Counted at the last byte: wait for the connections' ends, not for time.
    eventually("every downstream connection of the mix closed", || async {
        let text = client.metrics().await;
        let (opened, closed) = closed(&text);
        let relay_closed = samples(&text)
            .get(&format!(r#"weft_tcp_connections_closed_total{{direction="outbound",peer="{db_id}",tls="mtls",error=""}}"#))
            .copied();
        (opened == closed && relay_closed == Some(1.0)).then_some(())
    })
    .await;
    let c1 = samples(&client.metrics().await);
    // The server counts at its own last byte: wait until all 11 are in.
    let responses = |s: &HashMap<String, f64>| -> f64 {
        s.iter().filter(|(k, _)| k.starts_with("weft_http_responses_total{") && k.contains("direction=\"inbound\"")).map(|(_, v)| v).sum()
    };
    let s1 = eventually("the server counted every response", || async {
        let s1 = samples(&server.metrics().await);
        (responses(&s1) - responses(&s0) >= 11.0).then_some(s1)
    })
    .await;

    let http_families = [
        "weft_http_requests_total",
        "weft_http_responses_total",
        "weft_http_response_duration_seconds_count",
        "weft_http_retries_total",
        "weft_http_retry_budget_exhausted_total",
        "weft_http_timeouts_total",
    ];
    let tcp_families = ["weft_tcp_connections_opened_total", "weft_tcp_connections_closed_total", "weft_tcp_connection_duration_seconds_count"];
    let families: Vec<&str> = http_families.iter().chain(&tcp_families).copied().collect();

    // The client proxy, outbound: peer = the server it verified.
    let out = |authority: &str, route: &str| format!(r#"direction="outbound",authority="{authority}",route="{route}",peer="{server_id}""#);
    let (a, b, plain) = (out("web.test:80", "web/a"), out("web.test:80", "web/1"), out("plain.test:80", "default"));
    let resp = |l: &str, code: u16, grpc: &str, class: &str| {
        series("weft_http_responses_total", &format!(r#"{l},status_code="{code}",grpc_status="{grpc}",classification="{class}""#))
    };
    let dur = |l: &str, class: &str| series("weft_http_response_duration_seconds_count", &format!(r#"{l},classification="{class}""#));
    let relay = format!(r#"direction="outbound",peer="{db_id}",tls="mtls""#);
    let app_side = r#"direction="outbound",peer="none",tls="plaintext""#;
    let expected = vec![
        (series("weft_http_requests_total", &a), 4.0),
        (resp(&a, 200, "", "success"), 4.0),
        (dur(&a, "success"), 4.0),
        (series("weft_http_requests_total", &b), 4.0),
        (resp(&b, 404, "", "success"), 2.0),
        (resp(&b, 500, "", "failure"), 1.0),
        (resp(&b, 200, "5", "failure"), 1.0),
        (dur(&b, "success"), 2.0),
        (dur(&b, "failure"), 2.0),
        (series("weft_http_requests_total", &plain), 2.0),
        (resp(&plain, 200, "", "success"), 2.0),
        (dur(&plain, "success"), 2.0),
        (series("weft_http_retries_total", r#"authority="web.test:80",route="web/a""#), 1.0),
        (series("weft_tcp_connections_opened_total", &relay), 1.0),
        (series("weft_tcp_connections_closed_total", &format!(r#"{relay},error="""#)), 1.0),
        (series("weft_tcp_read_bytes_total", &relay), 1000.0),
        (series("weft_tcp_write_bytes_total", &relay), 1000.0),
        (series("weft_tcp_connection_duration_seconds_count", r#"direction="outbound",tls="mtls""#), 1.0),
        (series("weft_tcp_connections_opened_total", app_side), 2.0),
        (series("weft_tcp_connections_closed_total", &format!(r#"{app_side},error="""#)), 2.0),
        (series("weft_tcp_connection_duration_seconds_count", r#"direction="outbound",tls="plaintext""#), 2.0),
    ];
    check_deltas(&c0, &c1, &families, &expected);
    // The balancers: one endpoint each, in rotation; nothing ejected.
    for authority in ["web.test:80", "plain.test:80"] {
        for (state, want) in [("ready", 1.0), ("ejected", 0.0)] {
            let g = series("weft_balancer_endpoints", &format!(r#"authority="{authority}",state="{state}""#));
            assert_eq!(c1.get(&g), Some(&want), "{g}");
        }
        let e = series("weft_balancer_ejections_total", &format!(r#"authority="{authority}""#));
        assert_eq!(c1.get(&e), Some(&0.0), "{e}");
    }
    // Upstream connections: the meshed HTTP/2 ones to the server (the relay
    // is not pooled); the server's to its app.
    assert!(c1[r#"weft_pool_connections{direction="outbound"}"#] >= 1.0);
    assert!(s1[r#"weft_pool_connections{direction="inbound"}"#] >= 1.0);
    // The histogram's +Inf bucket is its count.
    let inf = format!(r#"weft_http_response_duration_seconds_bucket{{le="+Inf",{b},classification="failure"}}"#);
    assert_eq!(c1.get(&inf).copied(), c1.get(&dur(&b, "failure")).copied(), "{inf}");

    // The server proxy, inbound: peer = the client it verified; its app
    // saw the flaky request twice; no route rules inbound.
    let inb = |authority: &str| format!(r#"direction="inbound",authority="{authority}",route="default",peer="{client_id}""#);
    let (web, plain) = (inb("web.test:80"), inb("plain.test:80"));
    let expected = vec![
        (series("weft_http_requests_total", &web), 9.0),
        (resp(&web, 200, "", "success"), 4.0),
        (resp(&web, 503, "", "failure"), 1.0),
        (resp(&web, 404, "", "success"), 2.0),
        (resp(&web, 500, "", "failure"), 1.0),
        (resp(&web, 200, "5", "failure"), 1.0),
        (dur(&web, "success"), 6.0),
        (dur(&web, "failure"), 3.0),
        (series("weft_http_requests_total", &plain), 2.0),
        (resp(&plain, 200, "", "success"), 2.0),
        (dur(&plain, "success"), 2.0),
    ];
    // The client proxy's connection to it is not the test's to close.
    check_deltas(&s0, &s1, &http_families, &expected);

    // The db proxy, inbound: one mTLS connection from the client, closed;
    // its bytes are TLS records, so at least the payload each way.
    let db_in = format!(r#"direction="inbound",peer="{client_id}",tls="mtls""#);
    let expected = vec![
        (series("weft_tcp_connections_opened_total", &db_in), 1.0),
        (series("weft_tcp_connections_closed_total", &format!(r#"{db_in},error="""#)), 1.0),
        (series("weft_tcp_connection_duration_seconds_count", r#"direction="inbound",tls="mtls""#), 1.0),
    ];
    let d1 = eventually("the db proxy saw the relay close", || async {
        let d = samples(&db.metrics().await);
        let closed: f64 = d.iter().filter(|(k, _)| k.starts_with("weft_tcp_connections_closed_total{") && k.contains(&db_in)).map(|(_, v)| v).sum();
        (closed >= 1.0).then_some(d)
    })
    .await;
    check_deltas(&d0, &d1, &families, &expected);
    for dir in ["read", "write"] {
        let bytes = d1[&series(&format!("weft_tcp_{dir}_bytes_total"), &db_in)] - d0.get(&series(&format!("weft_tcp_{dir}_bytes_total"), &db_in)).unwrap_or(&0.0);
        assert!(bytes >= 1000.0, "{dir}: {bytes} bytes");
    }
    // The standard process families are there.
    let text = client.metrics().await;
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "no {name}");
    }
    cp.stop().await;
}

/// An HTTP/1 app that answers every request head it reads with a fixed
/// 200 (GETs without bodies only): cheap enough that the proxy is what a
/// load test measures.
async fn raw_app() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut heads = HeadCounter::default();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let out = RESPONSE.repeat(heads.feed(&buf[..n], b"\r\n\r\n"));
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Counts a marker in a byte stream read in pieces.
#[derive(Default)]
struct HeadCounter {
    tail: Vec<u8>,
}

impl HeadCounter {
    fn feed(&mut self, chunk: &[u8], marker: &[u8]) -> usize {
        self.tail.extend_from_slice(chunk);
        let found = self.tail.windows(marker.len()).filter(|w| *w == marker).count();
        let keep = self.tail.len().min(marker.len() - 1);
        self.tail.drain(..self.tail.len() - keep);
        found
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `hosts` pipelined GETs (`Host: h<i>.test`, `i` from `first`) over
/// one keep-alive connection, `batch` at a time; every answer must be 200.
async fn pipelined(addr: SocketAddr, first: usize, hosts: usize, batch: usize) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut ok) = (0, 0);
    let mut statuses = HeadCounter::default();
    let mut other = HeadCounter::default();
    while ok < hosts {
        let n = batch.min(hosts - sent);
        let mut reqs = Vec::with_capacity(n * 48);
        for i in first + sent..first + sent + n {
            reqs.extend_from_slice(format!("GET / HTTP/1.1\r\nhost: h{i}.test\r\n\r\n").as_bytes());
        }
        s.write_all(&reqs).await.unwrap();
        sent += n;
        while ok < sent {
            let got = within("pipelined responses", s.read(&mut buf)).await.unwrap();
            assert!(got > 0, "the proxy closed the connection after {ok} responses");
            ok += statuses.feed(&buf[..got], b"HTTP/1.1 200 ");
            let answered = other.feed(&buf[..got], b"HTTP/1.1 ");
            assert!(answered <= ok + 1 || answered == 0, "a non-200 answer");
        }
    }
}

/// 100,000 distinct Host headers through the real proxy (inbound, plaintext
/// `--app`, HTTP/1 keep-alive, pipelined over 4 connections): every request
/// counted, at most 100 authorities plus `other`, and the proxy's RSS grows
/// by less than 20 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_hosts_stay_under_the_caps() {
    const HOSTS: usize = 100_000;
    const CONNS: usize = 4;
    const WARM: usize = 2_000;
    let (app, _task) = raw_app().await;
    let proxy = start_proxy(&args(&["--app", &app.to_string()])).await;
    let inbound = proxy.inbound.unwrap();
    let pid = proxy.child.id().unwrap();
    // Warm-up: pools, buffers and the first 100 authorities are allocated.
    pipelined(inbound, HOSTS, WARM, 200).await;
    let before = vm_rss_kib(pid);
    let started = std::time::Instant::now();
    let per = HOSTS / CONNS;
    let tasks: Vec<_> = (0..CONNS).map(|c| tokio::spawn(pipelined(inbound, c * per, per, 256))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let after = vm_rss_kib(pid);
    let text = proxy.metrics().await;
    let s = samples(&text);
    let requests: Vec<(&String, &f64)> = s.iter().filter(|(k, _)| k.starts_with("weft_http_requests_total{direction=\"inbound\"")).collect();
    let total: f64 = requests.iter().map(|(_, v)| **v).sum();
    let other = s
        .get(r#"weft_http_requests_total{direction="inbound",authority="other",route="default",peer="none"}"#)
        .copied()
        .unwrap_or(0.0);
    let growth_kib = after.saturating_sub(before);
    eprintln!(
        "{HOSTS} hosts in {took:?}: {} inbound request series, {} lines of metrics, VmRSS {before} -> {after} KiB (+{growth_kib} KiB)",
        requests.len(),
        text.lines().count()
    );
    assert_eq!(total, (HOSTS + WARM) as f64, "every request counted");
    assert!(requests.len() <= 101, "{} series: at most 100 authorities and other", requests.len());
    assert!(other >= (HOSTS + WARM - 100) as f64, "past the cap: other ({other})");
    // Samples in all: each label set is about 38 (two histograms of 17,
    // requests, responses, two timeout kinds): 101 sets, plus the rest.
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 5_000, "{series} samples in all");
    assert!(growth_kib < 20 * 1024, "RSS grew by {growth_kib} KiB");
}

/// A client that goes away before its response head (HTTP/1: closes its
/// connection; HTTP/2: resets its stream) is counted in
/// `weft_http_requests_abandoned_total`, and in no other HTTP family.
#[tokio::test]
async fn a_request_whose_client_left_before_the_head_is_counted_abandoned() {
    let app = start_app().await;
    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr)])).await;
    let abandoned = r#"weft_http_requests_abandoned_total{direction="outbound",authority="web.test:80"}"#;
    // HTTP/1: the connection closed while the app still holds the request.
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"GET /delay/30000 HTTP/1.1\r\nhost: web.test\r\n\r\n").await.unwrap();
    eventually("the request at the app", || async { (app.received.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    drop(s);
    eventually("the HTTP/1 request counted abandoned", || async { (metric(&p.metrics().await, abandoned) == Some(1.0)).then_some(()) }).await;
    // HTTP/2: the stream reset, the connection kept.
    let mut h2 = h2_connect(p.outbound).await;
    let call = tokio::spawn(async move { h2.send_request(h2_get("/delay/30000", "web.test:80")).await.map(|_| ()) });
    eventually("the h2 request at the app", || async { (app.received.load(Ordering::SeqCst) == 2).then_some(()) }).await;
    call.abort();
    eventually("the h2 request counted abandoned", || async { (metric(&p.metrics().await, abandoned) == Some(2.0)).then_some(()) }).await;
    let text = p.metrics().await;
    for family in ["weft_http_requests_total{", "weft_http_responses_total{", "weft_http_response_duration_seconds_count{"] {
        let counted: f64 = text.lines().filter(|l| l.starts_with(family)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum();
        assert_eq!(counted, 0.0, "{family}: {text}");
    }
}
