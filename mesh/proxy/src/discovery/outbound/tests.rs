//! The discovered path against real in-process servers on 127.0.0.1, with
//! endpoints and policy from the in-memory source.

use std::{
    convert::Infallible,
    sync::atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use super::*;
use crate::{
    discovery::memory::MemorySource,
    metrics::{Direction, Metrics},
    discovery::policy::route::{Backend, PathMatch, Redirect, RouteMatch, RouteTable, Rule},
    discovery::retry::{BudgetConfig, RetryPolicy},
};

/// A server answering `status` (or 200) and counting requests.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    fail: Arc<std::sync::atomic::AtomicU16>,
    /// Milliseconds to wait before answering.
    delay: Arc<std::sync::atomic::AtomicU64>,
}

async fn server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let delay = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (h, f, d) = (hits.clone(), fail.clone(), delay.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (h, f, d) = (h.clone(), f.clone(), d.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let code = match f.load(Ordering::SeqCst) {
                        0 => 200,
                        c => c,
                    };
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *r.status_mut() = StatusCode::from_u16(code).unwrap();
                    let wait = Duration::from_millis(d.load(Ordering::SeqCst));
                    async move {
                        tokio::time::sleep(wait).await;
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    Server { addr, hits, fail, delay }
}

fn outbound(src: &Arc<MemorySource>) -> Arc<Outbound> {
    outbound_with(src, true)
}

/// Without a policy source every authority takes the default route at once.
fn outbound_with(src: &Arc<MemorySource>, policy: bool) -> Arc<Outbound> {
    outbound_disabled(src, policy, Disabled::default())
}

fn outbound_disabled(src: &Arc<MemorySource>, policy: bool, disabled: Disabled) -> Arc<Outbound> {
    let metrics = Metrics::new();
    Outbound::new(
        src.clone(),
        OutboundConfig {
            policy: policy.then(|| src.clone() as Arc<dyn PolicySource>),
            disabled,
            ..OutboundConfig::new(metrics.direction(Direction::Outbound).clone())
        },
    )
}

fn set(addrs: &[SocketAddr]) -> EndpointSet {
    EndpointSet { exists: true, endpoints: addrs.iter().map(|a| Endpoint::plain(*a)).collect() }
}

async fn get(o: &Outbound, host: &str, path: &str) -> Result<Response<ResponseBody>, ProxyError> {
    let req = Request::get(path)
        .header("host", host)
        .body(RequestBody::buffered(Bytes::new()))
        .unwrap();
    o.send(req).await
}

fn policy(rules: Vec<Rule>) -> OutboundPolicy {
    OutboundPolicy { routes: RouteTable::new(rules), grpc_routes: None, accrual: Default::default(), opaque: false }
}

#[tokio::test]
async fn weighted_split_redirect_and_no_match() {
    let (a, b) = (server().await, server().await);
    let src = MemorySource::new();
    src.set_endpoints("a:80", set(&[a.addr]));
    src.set_endpoints("b:80", set(&[b.addr]));
    src.set_outbound(
        "web:80",
        policy(vec![
            Rule {
                matches: vec![RouteMatch { path: Some(PathMatch::Prefix("/api".into())), ..Default::default() }],
                backends: vec![
                    Backend { authority: "a:80".into(), weight: 90, ..Default::default() },
                    Backend { authority: "b:80".into(), weight: 10, ..Default::default() },
                ],
                ..Rule::default()
            },
            Rule {
                matches: vec![RouteMatch { path: Some(PathMatch::Exact("/old".into())), ..Default::default() }],
                filters: vec![Filter::Redirect(Redirect {
                    scheme: None,
                    hostname: Some("new".into()),
                    path: None,
                    port: None,
                    status: StatusCode::MOVED_PERMANENTLY,
                })],
                ..Rule::default()
            },
        ]),
    );
    let o = outbound(&src);
    for _ in 0..1000 {
        assert_eq!(get(&o, "web", "/api/x").await.unwrap().status(), StatusCode::OK);
    }
    let share = a.hits.load(Ordering::SeqCst) as f64 / 1000.0;
    assert!((0.85..=0.95).contains(&share), "{share}");
    let r = get(&o, "web", "/old").await.unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()[header::LOCATION], "http://new/old");
    let e = get(&o, "web", "/elsewhere").await.unwrap_err();
    assert_eq!(e.status(), StatusCode::NOT_FOUND);
}

fn retry_policy(ratio: f32, min_per_sec: u32, consecutive_failures: u32) -> OutboundPolicy {
    let retry = Arc::new(RetryPolicy::new(
        3,
        vec![(503, 503)],
        BudgetConfig { ratio, min_per_sec, ttl: Duration::from_secs(10) },
    ));
    OutboundPolicy {
        accrual: crate::discovery::policy::AccrualConfig { consecutive_failures, ..Default::default() },
        ..policy(vec![Rule {
            backends: vec![Backend { authority: "svc:80".into(), weight: 1, ..Default::default() }],
            retry: Some(retry),
            ..Rule::default()
        }])
    }
}

#[tokio::test]
async fn retries_recover_a_flaky_backend() {
    let (good, bad) = (server().await, server().await);
    bad.fail.store(503, Ordering::SeqCst);
    let src = MemorySource::new();
    src.set_endpoints("svc:80", set(&[good.addr, bad.addr]));
    // Accrual off: every failure must be saved by a retry alone.
    src.set_outbound("svc:80", retry_policy(0.5, 10, 0));
    let o = outbound(&src);
    for _ in 0..100 {
        assert_eq!(get(&o, "svc:80", "/").await.unwrap().status(), StatusCode::OK);
    }
    assert!(bad.hits.load(Ordering::SeqCst) > 0, "the flaky endpoint was tried");
}

#[tokio::test]
async fn retries_stay_within_the_budget() {
    let (a, b) = (server().await, server().await);
    a.fail.store(503, Ordering::SeqCst);
    b.fail.store(503, Ordering::SeqCst);
    let src = MemorySource::new();
    src.set_endpoints("svc:80", set(&[a.addr, b.addr]));
    src.set_outbound("svc:80", retry_policy(0.2, 1, 0));
    let o = outbound(&src);
    let n = 300;
    for _ in 0..n {
        assert_eq!(get(&o, "svc:80", "/").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let sent = a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst);
    // 20 % of the requests plus the floor (1/s over the 10 s window).
    assert!(sent <= n + n / 5 + 10, "{sent} requests reached the backends for {n}");
    assert!(sent >= n + n / 5, "the budget was used: {sent}");
}

#[tokio::test]
async fn removed_endpoints_get_nothing_and_unknown_authorities_fail() {
    let (a, b) = (server().await, server().await);
    let src = MemorySource::new();
    src.set_endpoints("svc:80", set(&[a.addr, b.addr]));
    let o = outbound_with(&src, false);
    for _ in 0..20 {
        get(&o, "svc", "/").await.unwrap();
    }
    src.set_endpoints("svc:80", set(&[b.addr]));
    tokio::task::yield_now().await;
    let before = a.hits.load(Ordering::SeqCst);
    for _ in 0..50 {
        get(&o, "svc", "/").await.unwrap();
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), before);

    src.set_endpoints("gone:80", EndpointSet { exists: false, endpoints: vec![] });
    assert_eq!(get(&o, "gone", "/").await.unwrap_err().status(), StatusCode::BAD_GATEWAY);
    src.set_endpoints("empty:80", EndpointSet { exists: true, endpoints: vec![] });
    assert_eq!(get(&o, "empty", "/").await.unwrap_err().status(), StatusCode::SERVICE_UNAVAILABLE);
    // An unknown ip:port goes to itself.
    let direct = a.addr.to_string();
    src.set_endpoints(&direct, EndpointSet { exists: false, endpoints: vec![] });
    assert_eq!(get(&o, &direct, "/").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn disabled_routes_send_everything_to_the_service() {
    let (web, a) = (server().await, server().await);
    let src = MemorySource::new();
    src.set_endpoints("web:80", set(&[web.addr]));
    src.set_endpoints("a:80", set(&[a.addr]));
    src.set_outbound(
        "web:80",
        policy(vec![Rule {
            matches: vec![RouteMatch { path: Some(PathMatch::Exact("/only".into())), ..Default::default() }],
            backends: vec![Backend { authority: "a:80".into(), weight: 1, ..Default::default() }],
            ..Rule::default()
        }]),
    );
    let on = outbound(&src);
    assert_eq!(get(&on, "web", "/only").await.unwrap().status(), StatusCode::OK);
    assert_eq!(a.hits.load(Ordering::SeqCst), 1, "the route sent it to a");
    assert_eq!(get(&on, "web", "/other").await.unwrap_err().status(), StatusCode::NOT_FOUND);

    let off = outbound_disabled(&src, true, Disabled { routes: true, ..Default::default() });
    for path in ["/only", "/other"] {
        assert_eq!(get(&off, "web", path).await.unwrap().status(), StatusCode::OK, "{path}");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 1, "routes ignored: nothing more for a");
    assert_eq!(web.hits.load(Ordering::SeqCst), 2, "both went to the Service itself");
}

#[tokio::test]
async fn disabled_retries_send_each_request_once() {
    let bad = server().await;
    bad.fail.store(503, Ordering::SeqCst);
    let src = MemorySource::new();
    src.set_endpoints("svc:80", set(&[bad.addr]));
    // A budget far above what 10 requests can use, accrual off.
    src.set_outbound("svc:80", retry_policy(10.0, 100, 0));
    let on = outbound(&src);
    for _ in 0..10 {
        assert_eq!(get(&on, "svc", "/").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(bad.hits.swap(0, Ordering::SeqCst), 40, "1 attempt + 3 retries each");
    let off = outbound_disabled(&src, true, Disabled { retries: true, ..Default::default() });
    for _ in 0..10 {
        assert_eq!(get(&off, "svc", "/").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(bad.hits.load(Ordering::SeqCst), 10, "retries off: one attempt each");
}

#[tokio::test]
async fn disabled_timeouts_leave_only_the_request_timeout() {
    let slow = server().await;
    slow.delay.store(300, Ordering::SeqCst);
    let src = MemorySource::new();
    src.set_endpoints("svc:80", set(&[slow.addr]));
    src.set_outbound(
        "svc:80",
        policy(vec![Rule {
            backends: vec![Backend { authority: "svc:80".into(), weight: 1, ..Default::default() }],
            timeouts: crate::discovery::policy::route::Timeouts { request: None, backend_request: Some(Duration::from_millis(20)) },
            ..Rule::default()
        }]),
    );
    let on = outbound(&src);
    assert_eq!(get(&on, "svc", "/").await.unwrap_err().status(), StatusCode::GATEWAY_TIMEOUT);
    let off = outbound_disabled(&src, true, Disabled { timeouts: true, ..Default::default() });
    assert_eq!(get(&off, "svc", "/").await.unwrap().status(), StatusCode::OK);
}

/// `n` GETs to `svc:80`, served by `live` and `bad`, with no retry policy
/// and accrual off (`bad` stays in rotation): every one must be answered
/// by `live`.
async fn all_answered_by_live(live: &Server, bad: SocketAddr, n: usize) {
    let src = MemorySource::new();
    src.set_endpoints("svc:80", set(&[live.addr, bad]));
    src.set_outbound(
        "svc:80",
        OutboundPolicy {
            accrual: crate::discovery::policy::AccrualConfig { consecutive_failures: 0, ..Default::default() },
            ..policy(vec![Rule::to_service("svc:80")])
        },
    );
    let o = outbound(&src);
    for _ in 0..n {
        assert_eq!(get(&o, "svc", "/").await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), n, "every request answered by the live endpoint");
}

#[tokio::test]
async fn a_refused_connection_goes_to_another_endpoint_without_a_retry_policy() {
    let live = server().await;
    // An address nothing listens on.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    all_answered_by_live(&live, gone, 50).await;
}

#[tokio::test]
async fn an_idempotent_request_whose_connection_dies_goes_to_another_endpoint() {
    let live = server().await;
    // Accepts, then closes every connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = listener.local_addr().unwrap();
    let slammer = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    all_answered_by_live(&live, closing, 30).await;
    slammer.abort();
}
