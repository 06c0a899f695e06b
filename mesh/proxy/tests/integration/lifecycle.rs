//! Startup output, bad arguments, admin endpoints, metrics, graceful drain.

use std::sync::atomic::Ordering;

use http::StatusCode;
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test]
async fn bad_arguments_exit_64_naming_the_value() {
    for (bad, needle) in [
        (vec!["--route", "web.test=not-an-address"], "not-an-address"),
        (vec!["--route", "missing-equals"], "missing-equals"),
        (vec!["--admin-listen", "localhost:nope"], "localhost:nope"),
        (vec!["--request-timeout", "eventually"], "eventually"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ] {
        let out = within("mesh-proxy exits", tokio::process::Command::new(BIN).args(&bad).output())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{bad:?}: stderr does not name {needle:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing may be announced: {bad:?}");
    }
}

#[tokio::test]
async fn without_app_no_inbound_listener_is_announced() {
    let mut p = start_proxy(&[]).await;
    assert!(p.inbound.is_none());
    // No routes at all: the outbound listener still answers, with 502.
    let resp = send_h1(p.outbound, get("/", "anything.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    p.sigterm();
    assert!(p.wait().await.success());
}

#[tokio::test]
async fn metrics_count_by_direction_and_status_class() {
    let app = start_app().await;
    let inbound = start_proxy(&args(&["--app", &app.addr.to_string()])).await;
    let outbound = start_proxy(&args(&["--route", &format!("web.test={}", inbound.inbound.unwrap())])).await;

    assert_eq!(outbound.admin_get("/ready").await.0, StatusCode::OK);
    assert_eq!(outbound.admin_get("/live").await.0, StatusCode::OK);
    assert_eq!(outbound.admin_get("/nope").await.0, StatusCode::NOT_FOUND);

    let mut conn = H1::connect(outbound.outbound).await.unwrap();
    for _ in 0..3 {
        assert_eq!(conn.send(get("/", "web.test")).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(conn.send(get("/status/404", "web.test")).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(conn.send(get("/", "unrouted.test")).await.unwrap().status(), StatusCode::BAD_GATEWAY);
    let mut h2 = h2_connect(outbound.outbound).await;
    assert_eq!(send_h2(&mut h2, h2_get("/status/302", "web.test")).await.unwrap().status(), StatusCode::FOUND);

    let out = outbound.metrics().await;
    let expect = [
        (r#"weft_requests_total{direction="outbound",status_class="2xx"}"#, 3.0),
        (r#"weft_requests_total{direction="outbound",status_class="3xx"}"#, 1.0),
        (r#"weft_requests_total{direction="outbound",status_class="4xx"}"#, 1.0),
        (r#"weft_requests_total{direction="outbound",status_class="5xx"}"#, 1.0),
        (r#"weft_requests_total{direction="inbound",status_class="2xx"}"#, 0.0),
        (r#"weft_proxy_errors_total{direction="outbound",kind="no_route"}"#, 1.0),
        (r#"weft_response_latency_seconds_count{direction="outbound"}"#, 6.0),
        (r#"weft_response_latency_seconds_bucket{le="+Inf",direction="outbound"}"#, 6.0),
    ];
    for (series, want) in expect {
        assert_eq!(metric(&out, series), Some(want), "{series} in\n{out}");
    }

    // The inbound proxy saw the five routed requests, on its inbound side.
    let inb = inbound.metrics().await;
    assert_eq!(metric(&inb, r#"weft_requests_total{direction="inbound",status_class="2xx"}"#), Some(3.0), "{inb}");
    assert_eq!(metric(&inb, r#"weft_requests_total{direction="inbound",status_class="3xx"}"#), Some(1.0));
    assert_eq!(metric(&inb, r#"weft_requests_total{direction="inbound",status_class="4xx"}"#), Some(1.0));
    assert_eq!(metric(&inb, r#"weft_requests_total{direction="outbound",status_class="2xx"}"#), Some(0.0));
    assert!(inb.contains("# TYPE weft_response_latency_seconds histogram"), "{inb}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let app = start_app().await;
    let mut p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--drain-timeout", "20s"])).await;
    let outbound = p.outbound;

    let mut conn = H1::connect(outbound).await.unwrap();
    let slow = tokio::spawn(async move { conn.send(get("/delay/1000", "web.test")).await });
    eventually("slow request reaches the app", || async {
        (app.in_flight.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    p.sigterm();

    // Draining: not ready, and the listening socket is closed.
    eventually("/ready turns 503", || async {
        (p.admin_get("/ready").await.0 == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    eventually("new connections are refused", || async { TcpStream::connect(outbound).await.is_err().then_some(()) })
        .await;
    assert_eq!(app.in_flight.load(Ordering::SeqCst), 1, "the slow request was cut short");

    let resp = within("in-flight request completes", slow).await.unwrap().expect("in-flight request survives the drain");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body(), "delayed");

    let status = p.wait().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn drain_timeout_bounds_the_wait() {
    let app = start_app().await;
    let mut p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--drain-timeout", "200ms"])).await;
    let mut conn = H1::connect(p.outbound).await.unwrap();
    let stuck = tokio::spawn(async move { conn.send(get("/delay/60000", "web.test")).await });
    eventually("request reaches the app", || async { (app.in_flight.load(Ordering::SeqCst) == 1).then_some(()) })
        .await;
    let started = tokio::time::Instant::now();
    p.sigterm();
    let status = p.wait().await;
    assert!(status.success(), "exit status {status:?}");
    // Exited long before the request's 60 s; the request was cut off.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(within("client sees the cut", stuck).await.unwrap().is_err());
}

#[tokio::test]
async fn second_signal_cuts_the_drain_short() {
    let app = start_app().await;
    let mut p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--drain-timeout", "60s"])).await;
    let mut conn = H1::connect(p.outbound).await.unwrap();
    let stuck = tokio::spawn(async move { conn.send(get("/delay/60000", "web.test")).await });
    eventually("request reaches the app", || async { (app.in_flight.load(Ordering::SeqCst) == 1).then_some(()) })
        .await;
    p.sigterm();
    eventually("draining", || async {
        (p.admin_get("/ready").await.0 == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    p.sigterm();
    // Well within the 60 s drain timeout (patience bounds the wait).
    let status = p.wait().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(within("client sees the cut", stuck).await.unwrap().is_err());
}
