//! Requests through outbound -> inbound -> app, and the proxy's own errors.

use bytes::Bytes;
use http::StatusCode;

use crate::common::*;

/// App, an inbound proxy in front of it, and an outbound proxy routing
/// `web.test` (any port) and `web.test:8080` to that inbound.
struct Chain {
    app: App,
    inbound: Proxy,
    outbound: Proxy,
}

async fn chain() -> Chain {
    let app = start_app().await;
    let inbound = start_proxy(&args(&["--app", &app.addr.to_string()])).await;
    let inbound_addr = inbound.inbound.expect("inbound listener announced").to_string();
    let outbound = start_proxy(&args(&[
        "--route",
        &format!("web.test:8080={inbound_addr}"),
        "--route",
        &format!("web.test={inbound_addr}"),
    ]))
    .await;
    Chain { app, inbound, outbound }
}

#[tokio::test]
async fn http1_through_outbound_and_inbound() {
    let c = chain().await;
    let mut conn = H1::connect(c.outbound.outbound).await.unwrap();

    // Bodies intact, larger than any single buffer on the way.
    let body: Bytes = (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    let resp = conn.send(post("/echo", "web.test:8080", body.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body(), &body);
    assert!(resp.headers().get("x-app-hop").is_none(), "response hop-by-hop field leaked");
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers()["x-app-kept"], "1");

    // Status codes pass through, on the same keep-alive connection, and the
    // bare host matches when the port has no route of its own.
    for code in [201u16, 404, 418, 500, 503] {
        let resp = conn.send(get(&format!("/status/{code}"), "WEB.test:9999")).await.unwrap();
        assert_eq!(resp.status().as_u16(), code);
        assert!(proxy_error(&resp).is_none());
    }

    // HTTP/1 stays HTTP/1 end to end.
    let resp = conn.send(get("/proto", "web.test")).await.unwrap();
    assert_eq!(resp.body(), "HTTP/1.1");

    // Hop-by-hop request fields are dropped, end-to-end ones kept.
    let req = http::Request::get("/headers")
        .header("host", "web.test")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("te", "gzip")
        .header("x-end-to-end", "kept")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = conn.send(req).await.unwrap();
    let seen = String::from_utf8_lossy(resp.body()).into_owned();
    assert!(seen.contains("x-end-to-end: kept"), "{seen}");
    assert!(seen.contains("host: web.test"), "{seen}");
    assert!(!seen.contains("x-hop"), "{seen}");
    assert!(!seen.contains("te: gzip"), "{seen}");

    // Many requests on fresh connections: the upstream pool is reused.
    for _ in 0..20 {
        let resp = send_h1(c.outbound.outbound, get("/", "web.test")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(c.app.received.load(std::sync::atomic::Ordering::SeqCst) >= 28);
    drop(c.inbound);
}

#[tokio::test]
async fn http2_through_outbound_and_inbound() {
    let c = chain().await;
    let mut h2 = h2_connect(c.outbound.outbound).await;

    let body: Bytes = vec![7u8; 300_000].into();
    let resp = send_h2(&mut h2, h2_post("/echo", "web.test:8080", body.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().len(), body.len());
    assert_eq!(resp.body(), &body);

    let resp = send_h2(&mut h2, h2_get("/proto", "web.test:8080")).await.unwrap();
    assert_eq!(resp.body(), "HTTP/2.0", "h2 must stay h2 through both hops");

    let resp = send_h2(&mut h2, h2_get("/status/404", "web.test:1")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Concurrent streams multiplexed on one downstream connection.
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let mut sender = h2.clone();
        tasks.push(tokio::spawn(async move {
            let payload = format!("stream {i}");
            let resp = send_h2(&mut sender, h2_post("/echo", "web.test", payload.clone())).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.body(), payload.as_bytes());
        }));
    }
    for t in tasks {
        within("concurrent h2 stream", t).await.unwrap();
    }
    drop(c.inbound);
}

#[tokio::test]
async fn no_route_dead_upstream_and_timeout() {
    let app = start_app().await;
    let dead = dead_addr().await;
    let p = start_proxy(&args(&[
        "--route",
        &format!("dead.test={dead}"),
        "--route",
        &format!("slow.test={}", app.addr),
        "--route",
        &format!("port80.test:80={}", app.addr),
        "--request-timeout",
        "300ms",
    ]))
    .await;

    // A port-less Host is port 80: the `:80` route answers it, no other port's does.
    let resp = send_h1(p.outbound, get("/", "port80.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", proxy_error(&resp));
    let resp = send_h1(p.outbound, get("/", "port80.test:81")).await.unwrap();
    assert_eq!(proxy_error(&resp).as_deref(), Some("no route for port80.test:81"));

    let resp = send_h1(p.outbound, get("/", "nowhere.test:81")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(proxy_error(&resp).as_deref(), Some("no route for nowhere.test:81"));

    let mut h2 = h2_connect(p.outbound).await;
    let resp = send_h2(&mut h2, h2_get("/", "nowhere.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(proxy_error(&resp).as_deref(), Some("no route for nowhere.test"));

    let resp = send_h1(p.outbound, get("/", "dead.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let reason = proxy_error(&resp).unwrap();
    assert!(reason.contains(&format!("connect to upstream {dead} failed")), "{reason}");

    let resp = send_h1(p.outbound, get("/delay/3000", "slow.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let reason = proxy_error(&resp).unwrap();
    assert!(reason.contains("did not respond within 300ms"), "{reason}");

    let resp = send_h2(&mut h2, h2_get("/delay/3000", "slow.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);

    // The same upstream still works for requests that answer in time.
    let resp = send_h1(p.outbound, get("/status/202", "slow.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(proxy_error(&resp).is_none());
    let resp = send_h2(&mut h2, h2_get("/status/202", "slow.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn multi_thread_runtime_serves_both_protocols() {
    let app = start_app().await;
    let p = start_proxy(&args(&["--threads", "2", "--route", &format!("web.test={}", app.addr)])).await;
    let mut h2 = h2_connect(p.outbound).await;
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let addr = p.outbound;
        let mut sender = h2.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("req {i}");
            let resp = send_h1(addr, post("/echo", "web.test", body.clone())).await.unwrap();
            assert_eq!(resp.body(), body.as_bytes());
            let resp = send_h2(&mut sender, h2_post("/echo", "web.test", body.clone())).await.unwrap();
            assert_eq!(resp.body(), body.as_bytes());
        }));
    }
    for t in tasks {
        within("request on the multi-thread proxy", t).await.unwrap();
    }
    let resp = send_h2(&mut h2, h2_get("/proto", "web.test")).await.unwrap();
    assert_eq!(resp.body(), "HTTP/2.0");
}
