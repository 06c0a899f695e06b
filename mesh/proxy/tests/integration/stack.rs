//! The request path's layers through the real binary: the request timeout
//! reaches the last byte of the response, and a full concurrency limit
//! sheds at once with 503 overloaded.

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
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{client::conn, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::common::*;

/// An upstream that sends a response head at once, then one body chunk
/// every 100 ms, 100 chunks in all (10 s): far past a 1 s request timeout.
/// Counts the responses it finished writing.
async fn trickling_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let done = Arc::clone(&finished);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                // Read the whole request head (a GET: no body) first.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if stream.write_all(b"1\r\nx\r\n").await.is_err() {
                        return;
                    }
                }
                if stream.write_all(b"0\r\n\r\n").await.is_ok() {
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, finished)
}

#[tokio::test]
async fn a_body_trickling_past_the_request_timeout_is_cut() {
    let (upstream, finished) = trickling_upstream().await;
    let p = start_proxy(&args(&["--route", &format!("trickle.test={upstream}"), "--request-timeout", "1s"])).await;

    let stream = TcpStream::connect(p.outbound).await.unwrap();
    let (mut sender, conn) = conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = within("response head", sender.send_request(get("/", "trickle.test"))).await.unwrap();
    // The head came in time: the status is the upstream's.
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.headers().get("weft-proxy-error"));
    let body = within("the body to end, cut or complete", resp.into_body().collect()).await;
    assert!(body.is_err(), "the body must be cut at the request timeout, got it whole: {:?}", body.map(|b| b.to_bytes().len()));
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the upstream's response must not have been read to its end");

    let text = p.metrics().await;
    assert_eq!(metric(&text, r#"weft_response_body_timeouts_total{direction="outbound"}"#), Some(1.0), "{text}");
    // Counted as a response (its head was sent), not as a proxy error.
    assert_eq!(metric(&text, r#"weft_requests_total{direction="outbound",status_class="2xx"}"#), Some(1.0), "{text}");
}

/// An upstream that holds every request until `open` turns true, counting
/// the ones it holds.
async fn gated_upstream(open: watch::Receiver<bool>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (open, count) = (open.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (mut open, count) = (open.clone(), Arc::clone(&count));
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = open.wait_for(|o| *o).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, held)
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_are_shed_with_503_overloaded() {
    let (open_tx, open) = watch::channel(false);
    let (upstream, held) = gated_upstream(open).await;
    let p = start_proxy(&args(&[
        "--route",
        &format!("slow.test={upstream}"),
        "--max-concurrent-requests",
        "2",
        "--max-queued-requests",
        "0",
    ]))
    .await;

    // Two requests take both slots and wait at the upstream.
    let first: Vec<_> =
        (0..2).map(|_| tokio::spawn(async move { send_h1(p.outbound, get("/", "slow.test")).await.map(|r| r.status()) })).collect();
    eventually("both requests held by the upstream", || {
        let held = Arc::clone(&held);
        async move { (held.load(Ordering::SeqCst) == 2).then_some(()) }
    })
    .await;

    // The next ones are answered by the proxy itself, at once, HTTP/1 and h2.
    for _ in 0..2 {
        let resp = send_h1(p.outbound, get("/", "slow.test")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let reason = proxy_error(&resp).unwrap_or_default();
        assert!(reason.starts_with("overloaded"), "{reason:?}");
    }
    let mut h2 = h2_connect(p.outbound).await;
    let resp = send_h2(&mut h2, h2_get("/", "slow.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(held.load(Ordering::SeqCst), 2, "a shed request must never reach the upstream");

    // The first two complete once the upstream answers, and free their slots.
    open_tx.send_replace(true);
    for r in first {
        assert_eq!(within("a held request", r).await.unwrap().unwrap(), StatusCode::OK);
    }
    let resp = send_h1(p.outbound, get("/", "slow.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let text = p.metrics().await;
    assert_eq!(metric(&text, r#"weft_proxy_errors_total{direction="outbound",kind="overloaded"}"#), Some(3.0), "{text}");
}

#[tokio::test]
async fn the_limit_flags_are_validated() {
    let out = tokio::process::Command::new(BIN)
        .args(["--max-concurrent-requests", "0", "--max-queued-requests", "many"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-concurrent-requests 0"), "{err}");
    assert!(err.contains("--max-queued-requests \"many\""), "{err}");
}
