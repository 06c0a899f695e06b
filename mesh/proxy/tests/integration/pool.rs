//! The proxy's connections to one upstream, through the real binary: a
//! pooled HTTP/1 connection closed once idle (`--upstream-idle-timeout`),
//! never while in use.

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

use crate::common::*;

/// An HTTP/1 + h2c app that counts its connections (accepted, open now)
/// `/delay/MS` answers
/// after MS milliseconds, anything else at once.
pub struct ConnApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
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
        let [accepted, open, inf, pk] = std::array::from_fn(|_| Arc::new(AtomicUsize::new(0)));
        let (acc, op) = (accepted.clone(), open.clone());
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
        Self { addr, accepted, open, task }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
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
