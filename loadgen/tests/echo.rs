//! `loadgen serve --echo` through the real binary: what arrived comes back as JSON over
//! HTTP/1.1, h2c and gRPC, and the knobs set the status, a delay and response headers.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::Server;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadgen::echo::{self, Echo};

fn echo_server() -> Server {
    Server::start(&[
        "--echo",
        "--name",
        "echo-v1",
        "--namespace",
        "mesh",
        "--pod",
        "echo-v1-1",
    ])
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

async fn send(addr: SocketAddr, h2: bool, req: http::Request<Full<Bytes>>) -> Answer {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let resp = if h2 {
        let (mut s, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(c);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, c) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(c);
        s.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    }
}

#[tokio::test]
async fn http1_request_is_described_with_the_replica() {
    let server = echo_server();
    let req = http::Request::post("/some/path?b=2&a=%2F")
        .header("host", "echo-v1.mesh.svc.cluster.local:80")
        .header("x-one", "1")
        .header("x-two", "a")
        .header("x-two", "b")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    let a = send(server.addr, false, req).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers[echo::REPLICA_HEADER], "echo-v1-1");
    let e: Echo = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(e.method, "POST");
    assert_eq!(e.path, "/some/path");
    assert_eq!(e.query.as_deref(), Some("b=2&a=%2F"));
    assert_eq!(
        e.authority.as_deref(),
        Some("echo-v1.mesh.svc.cluster.local:80")
    );
    assert_eq!(e.proto, "HTTP/1.1");
    assert_eq!(e.header("x-one"), Some("1"));
    assert_eq!(e.headers["x-two"], vec!["a", "b"]);
    assert_eq!(e.body_len, 5);
    assert_eq!(e.replica.name, "echo-v1");
    assert_eq!(e.replica.namespace, "mesh");
    assert_eq!(e.replica.pod, "echo-v1-1");
}

#[tokio::test]
async fn h2c_request_reports_http2_and_its_authority() {
    let server = echo_server();
    let req = http::Request::get("http://echo-v2.mesh:8080/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(server.addr, true, req).await;
    assert_eq!(a.status, 200);
    let e: Echo = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(e.proto, "HTTP/2.0");
    assert_eq!(e.authority.as_deref(), Some("echo-v2.mesh:8080"));
    assert_eq!(e.path, "/x");
    assert_eq!(e.query, None);
}

#[tokio::test]
async fn knobs_set_status_delay_and_response_headers() {
    let server = echo_server();
    let req = http::Request::get("/")
        .header(echo::STATUS, "418")
        .header(echo::DELAY, "50ms")
        .header(echo::RESPONSE_HEADER, "x-from-app: yes")
        .header(echo::RESPONSE_HEADER, "x-other: 2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let started = std::time::Instant::now();
    let a = send(server.addr, false, req).await;
    assert_eq!(a.status, 418);
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert_eq!(a.headers["x-from-app"], "yes");
    assert_eq!(a.headers["x-other"], "2");
    // A mistaken knob is the client's error, named.
    let req = http::Request::get("/")
        .header(echo::STATUS, "teapot")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(server.addr, false, req).await;
    assert_eq!(a.status, 400);
    assert!(String::from_utf8_lossy(&a.body).contains("teapot"));
    // Readiness probes still get the plain answer.
    assert!(server.healthz());
}

#[tokio::test]
async fn grpc_request_gets_one_message_and_a_status_trailer() {
    let server = echo_server();
    let call = |code: Option<&str>| {
        let mut req = http::Request::post("http://echo.mesh:7070/pkg.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(c) = code {
            req = req.header(echo::GRPC_STATUS, c);
        }
        req.body(Full::new(echo::grpc_frame(b"hi"))).unwrap()
    };
    let a = send(server.addr, true, call(None)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/grpc");
    assert_eq!(a.trailers.as_ref().unwrap()["grpc-status"], "0");
    let e: Echo = serde_json::from_slice(echo::grpc_payload(&a.body).unwrap()).unwrap();
    assert_eq!(e.path, "/pkg.Echo/Say");
    assert_eq!(e.body_len, 7);
    let a = send(server.addr, true, call(Some("14"))).await;
    assert_eq!(a.trailers.unwrap()["grpc-status"], "14");
}

#[test]
fn echo_needs_a_name() {
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--echo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
}
