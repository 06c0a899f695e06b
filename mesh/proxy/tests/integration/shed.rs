//! Load shedding by queue time (`stack::shed`) through the real binary: a
//! one-thread proxy handed more HTTP/2 streams at once than it can start
//! within the target sheds with 503 `overloaded`, and the same proxy with
//! the same flags, whose requests wait 300 ms on a slow app, sheds nothing
//! (the app's latency is not the proxy's queue).
//!
//! The overload is a burst, not a steady closed loop: a closed loop driven
//! from this process on a busy 2-core machine keeps the proxy's *sockets*
//! full, not its run queue (the least queue time measured per interval
//! stayed at 4-240 µs), because the clients here are starved of CPU just
//! as much as the proxy. A burst of `CONNECTIONS x STREAMS` streams read
//! at once leaves the last ones waiting behind thousands of stream tasks
//! in the proxy's run queue, whatever the build or the machine's load.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::join_all;
use http::StatusCode;

use crate::common::*;

/// The burst: connections x streams (the proxy's limit per connection).
const CONNECTIONS: usize = 16;
const STREAMS: usize = 200;

/// A short interval and a low target, so that a burst lasting a few
/// intervals is a standing queue; a slow app's requests never wait in the
/// proxy, so the same flags must never shed them.
async fn shedding_proxy(app: &App) -> Proxy {
    start_proxy(&args(&[
        "--route",
        &format!("web.test={}", app.addr),
        "--threads",
        "1",
        "--shed-target",
        "1ms",
        "--shed-interval",
        "10ms",
    ]))
    .await
}

#[derive(Debug, Default)]
struct Outcomes {
    ok: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
}

impl Outcomes {
    fn get(&self) -> (u64, u64, u64) {
        (self.ok.load(Ordering::Relaxed), self.shed.load(Ordering::Relaxed), self.other.load(Ordering::Relaxed))
    }
}

/// Sends `streams` requests for `path` at once on each of `conns` fresh h2
/// connections (opened first, so the requests leave together).
async fn burst(p: &Proxy, conns: usize, streams: usize, path: &str, out: &Outcomes) {
    let conns = join_all((0..conns).map(|_| h2_connect(p.outbound))).await;
    let requests = conns.iter().flat_map(|h2| {
        (0..streams).map(move |_| {
            let mut h2 = h2.clone();
            async move {
                let counter = match send_h2(&mut h2, h2_get(path, "web.test")).await {
                    Ok(r) if r.status() == StatusCode::OK => &out.ok,
                    Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE
                        && r.headers().get("weft-proxy-error-kind").is_some_and(|k| k == "overloaded")
                        && proxy_error(&r).is_some_and(|e| e.starts_with("overloaded: this request waited")) =>
                    {
                        &out.shed
                    }
                    _ => &out.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    join_all(requests).await;
}

fn queue_time_sheds(metrics: &str) -> f64 {
    metric(metrics, r#"weft_shed_requests_total{direction="outbound",reason="queue_time"}"#).expect("the shed counter is exposed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_proxy_is_shed_and_a_slow_app_is_not() {
    let app = start_app().await;
    let p = shedding_proxy(&app).await;

    // A slow app: rounds of requests each held 300 ms by the app, over
    // many judged intervals. Were the app's time the proxy's queue, every
    // one would be shed.
    let slow = Outcomes::default();
    for _ in 0..4 {
        burst(&p, 2, 16, "/delay/300", &slow).await;
    }
    assert_eq!(slow.get(), (4 * 2 * 16, 0, 0), "a slow app is not the proxy's overload (ok, shed, other)");
    assert_eq!(queue_time_sheds(&p.metrics().await), 0.0);

    // Bursts of 3,200 streams at once to a fast app (bounded: until the
    // proxy has shed, at most the patience).
    let fast = Outcomes::default();
    let mut bursts = 0;
    eventually("a burst past the proxy's capacity is shed", || {
        bursts += 1;
        let (p, fast) = (&p, &fast);
        async move {
            burst(p, CONNECTIONS, STREAMS, "/status/200", fast).await;
            (fast.shed.load(Ordering::Relaxed) > 0).then_some(())
        }
    })
    .await;
    let (ok, shed, other) = fast.get();
    assert!(ok > 0, "the requests that waited less are admitted and served ({ok} ok, {shed} shed, {bursts} bursts)");
    assert_eq!(other, 0, "nothing but 200s and 503 overloaded ({ok} ok, {shed} shed)");
    let text = p.metrics().await;
    assert_eq!(queue_time_sheds(&text), shed as f64, "every shed counted by reason");
    assert_eq!(
        metric(&text, r#"weft_proxy_errors_total{direction="outbound",kind="overloaded"}"#),
        Some(shed as f64),
        "and as a proxy error of kind overloaded"
    );

    // The burst is over: the next interval is judged calm, requests pass.
    let mut h2 = h2_connect(p.outbound).await;
    eventually("the proxy recovers", || {
        let (mut h2, p) = (h2.clone(), &p);
        async move {
            let ok = send_h2(&mut h2, h2_get("/status/200", "web.test")).await.is_ok_and(|r| r.status() == StatusCode::OK);
            let calm = metric(&p.metrics().await, r#"weft_load_shed_overloaded{direction="outbound"}"#) == Some(0.0);
            (ok && calm).then_some(())
        }
    })
    .await;
    let resp = send_h2(&mut h2, h2_get("/status/200", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
