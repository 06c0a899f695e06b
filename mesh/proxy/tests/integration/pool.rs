//! The proxy's connections to one upstream, through the real binary: a
//! pooled HTTP/1 connection closed once idle (`--upstream-idle-timeout`),
//! never while in use; at most `--max-connections-per-endpoint` open, a
//! request beyond it waiting for one, then a 503 `pool_full`; more HTTP/2
//! connections to a busy peer proxy, bounded too.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use crate::{common::*, mesh_support::*};

/// An HTTP/1 + h2c app that counts its connections (accepted, open now)
/// and its requests in flight (and the most at once); `/delay/MS` answers
/// after MS milliseconds, anything else at once.
pub struct ConnApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements its counter when the connection's task ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnApp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let [accepted, open, in_flight, peak] = std::array::from_fn(|_| Arc::new(AtomicUsize::new(0)));
        let (acc, op, inf, pk) = (accepted.clone(), open.clone(), in_flight.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                op.fetch_add(1, Ordering::SeqCst);
                let open = Open(op.clone());
                let (inf, pk) = (inf.clone(), pk.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (inf, pk) = (inf.clone(), pk.clone());
                        async move {
                            let now = inf.fetch_add(1, Ordering::SeqCst) + 1;
                            pk.fetch_max(now, Ordering::SeqCst);
                            if let Some(ms) = req.uri().path().strip_prefix("/delay/") {
                                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                            }
                            inf.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                    drop(open);
                });
            }
        });
        Self { addr, accepted, open, in_flight, peak, task }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests it answered at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_pooled_upstream_connection_is_closed_once_idle_never_in_use() {
    let app = ConnApp::start().await;
    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--upstream-idle-timeout", "1s"])).await;
    // In use for longer than the idle timeout: not closed under the request.
    let r = send_h1(p.outbound, get("/delay/1500", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", proxy_error(&r));
    assert_eq!(app.accepted(), 1);
    // Parked in the pool and unused: the proxy closes it.
    eventually("the parked connection closed by the proxy", || async { (app.open() == 0).then_some(()) }).await;
    let r = send_h1(p.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", proxy_error(&r));
    assert_eq!(app.accepted(), 2, "the next request dialed anew");
}

#[tokio::test]
async fn connections_to_an_endpoint_are_capped_and_a_request_waits_bounded_for_one() {
    // Six requests at once, two connections allowed: the rest wait for one.
    let app = ConnApp::start().await;
    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--max-connections-per-endpoint", "2"])).await;
    let sent: Vec<_> = (0..6).map(|_| tokio::spawn(send_h1(p.outbound, get("/delay/300", "web.test")))).collect();
    for s in sent {
        let r = s.await.unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{:?}", proxy_error(&r));
    }
    assert!(app.accepted() <= 2 && app.peak() <= 2, "{} connections, {} requests at once", app.accepted(), app.peak());

    // One connection allowed and busy: a request waits --connect-timeout,
    // then 503 pool_full, and nothing of it reaches the app.
    let app = ConnApp::start().await;
    let p = start_proxy(&args(&[
        "--route",
        &format!("web.test={}", app.addr),
        "--max-connections-per-endpoint",
        "1",
        "--connect-timeout",
        "500ms",
    ]))
    .await;
    let busy = tokio::spawn(send_h1(p.outbound, get("/delay/3000", "web.test")));
    eventually("the slow request at the app", || async { (app.in_flight() == 1).then_some(()) }).await;
    let r = send_h1(p.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{:?}", proxy_error(&r));
    assert_eq!(r.headers()["weft-proxy-error-kind"], "pool_full");
    assert!(proxy_error(&r).unwrap().contains("--max-connections-per-endpoint"), "{:?}", proxy_error(&r));
    let r = busy.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the request holding the connection: {:?}", proxy_error(&r));
    assert_eq!((app.accepted(), app.peak()), (1, 1));
    let metrics = p.metrics().await;
    assert_eq!(metric(&metrics, r#"weft_proxy_errors_total{direction="outbound",kind="pool_full"}"#), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_busy_peer_gets_more_http2_connections_and_a_request_past_them_gets_503() {
    let m = MeshDir::new(&[&sa("client"), &sa("server")]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let app = ConnApp::start().await;
    let client_args = ["--upstream-http2-streams-per-connection", "4", "--max-http2-connections-per-endpoint", "3", "--connect-timeout", "1s"];
    let (_server, relay, client) = server_relay_client(&m, cp.addr, app.addr, &[], |_| args(&client_args)).await;
    // Twelve slow requests at once to the peer: three connections of four.
    let sent: Vec<_> = (0..12).map(|_| tokio::spawn(send_h1(client.outbound, get("/delay/4000", "web.test")))).collect();
    eventually("twelve requests at the app", || async { (app.in_flight() == 12).then_some(()) }).await;
    assert_eq!(relay.connections.load(Ordering::SeqCst), 3, "connections from the client proxy to its peer");
    // Every stream taken: the next one waits --connect-timeout, then 503.
    let r = send_h1(client.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{:?}", proxy_error(&r));
    assert_eq!(r.headers()["weft-proxy-error-kind"], "pool_full");
    assert!(proxy_error(&r).unwrap().contains("--max-http2-connections-per-endpoint"), "{:?}", proxy_error(&r));
    for (i, s) in sent.into_iter().enumerate() {
        let r = s.await.unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "slow request #{i}: {:?}", proxy_error(&r));
    }
    // Their streams ended: the next request takes one, on a connection held.
    let r = send_h1(client.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", proxy_error(&r));
    assert_eq!(relay.connections.load(Ordering::SeqCst), 3);
    cp.stop().await;
}
