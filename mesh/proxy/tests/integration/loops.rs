//! Loops that do not name the proxy they reach: a request going round two
//! proxies is refused by the `weft-hops` bound, and a discovered endpoint
//! that is the proxy's own listener is never dialed.

use std::time::Duration;

use http::StatusCode;

use crate::{common::*, discovery_support::*};

/// `--max-hops`' default.
const MAX_HOPS: f64 = 16.0;

async fn discovering(ctl: &FakeControl) -> Proxy {
    let mut a = args(&["--destination", &ctl.addr().to_string(), "--request-timeout", "5s"]);
    a.extend(ctl.trust_args());
    start_proxy(&a).await
}

fn count(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or(0.0)
}

/// A discovers `loop.test` at B's outbound listener; B's static route
/// sends `loop.test` back to A's. Neither request names the proxy it
/// reaches, so only the hop count stops it: one 502 loop after exactly
/// `--max-hops` forwards (A refuses the 17th arrival), not a connection
/// per hop until the request timeout.
#[tokio::test]
async fn a_loop_through_two_proxies_ends_at_the_hop_bound() {
    let ctl = FakeControl::start().await;
    let a = discovering(&ctl).await;
    let b = start_proxy(&args(&["--route", &format!("loop.test={}", a.outbound), "--request-timeout", "5s"])).await;
    ctl.state.set_endpoints("loop.test:80", &[b.outbound]);

    let r = within("the loop is answered", send_h1(a.outbound, get("/", "loop.test"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{:?}", proxy_error(&r));
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let loops = count(&ma, r#"weft_proxy_errors_total{direction="outbound",kind="loop"}"#)
        + count(&mb, r#"weft_proxy_errors_total{direction="outbound",kind="loop"}"#);
    assert_eq!(loops, 1.0, "one proxy refuses, once\n{ma}\n{mb}");
    let seen = |m: &str| count(m, r#"weft_requests_total{direction="outbound",status_class="5xx"}"#);
    assert_eq!(seen(&ma) + seen(&mb), MAX_HOPS + 1.0, "every arrival answered 502, 16 forwarded\n{ma}\n{mb}");
    assert_eq!(seen(&ma), 9.0, "A took hops 0, 2, .., 16 and refused the last\n{ma}");
}

/// Hops are counted outbound and inbound and reach the app (a meshed
/// call is two); the inbound side refuses a request past the bound.
#[tokio::test]
async fn hops_reach_the_app_and_inbound_refuses_past_the_bound() {
    let app = start_app().await;
    let server = start_proxy(&args(&["--app", &app.addr.to_string()])).await;
    let inbound = server.inbound.expect("inbound listener announced");
    let client = start_proxy(&args(&["--route", &format!("web.test={inbound}")])).await;

    let r = send_h1(client.outbound, get("/headers", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = String::from_utf8_lossy(r.body()).into_owned();
    assert!(seen.lines().any(|l| l == "weft-hops: 2"), "{seen}");

    let mut req = get("/headers", "web.test");
    req.headers_mut().insert("weft-hops", "16".parse().unwrap());
    let r = send_h1(inbound, req).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let why = proxy_error(&r).unwrap();
    assert!(why.starts_with("loop: ") && why.contains("--max-hops"), "{why}");
    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 1, "the refused request never reached the app");
}

/// Discovered endpoints that are the proxy's own outbound or admin
/// listener are left out of the balancer (warned, counted): alone, the
/// authority is refused as a loop at once; beside a real endpoint, only
/// that one gets requests.
#[tokio::test]
async fn discovered_endpoints_that_are_the_proxy_itself_are_never_dialed() {
    let ctl = FakeControl::start().await;
    let replica = Replica::start(Duration::ZERO).await;
    let proxy = discovering(&ctl).await;
    ctl.state.set_endpoints("self.test:80", &[proxy.outbound]);
    ctl.state.set_endpoints("admin.test:80", &[proxy.admin]);
    ctl.state.set_endpoints("mixed.test:80", &[proxy.outbound, replica.addr]);

    for host in ["self.test", "admin.test"] {
        let r = within("the loop is answered", send_h1(proxy.outbound, get("/", host))).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{host}: {:?}", proxy_error(&r));
        let why = proxy_error(&r).unwrap();
        assert!(why.starts_with(&format!("loop: every endpoint of {host}:80 is this proxy's own listener")), "{why}");
    }
    let mut conn = H1::connect(proxy.outbound).await.unwrap();
    for _ in 0..20 {
        assert_eq!(conn.send(get("/", "mixed.test")).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(replica.hits(), 20);

    let m = proxy.metrics().await;
    assert_eq!(count(&m, r#"weft_proxy_errors_total{direction="outbound",kind="loop"}"#), 2.0, "{m}");
    assert_eq!(count(&m, r#"weft_requests_total{direction="outbound",status_class="5xx"}"#), 2.0, "nothing went round: {m}");
    assert!(count(&m, "weft_discovery_self_endpoints_total") >= 3.0, "{m}");
    assert_eq!(count(&m, r#"weft_connections_total{direction="outbound"}"#), 3.0, "the proxy never dialed itself: {m}");
}
