//! Connection-level timeouts through the real binary, with short configured
//! values: a stalled h2 preface, a slowloris on a plaintext inbound port, a
//! trickled request body, an idle opaque relay, a peer that accepts TCP and
//! never answers TLS, and a black-holed peer proxy found by its missing
//! PING acknowledgements.

use std::{sync::atomic::Ordering, time::Duration};

use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{common::*, mesh_support::*};

/// Waits (at most the patience) for the proxy to close `s`; what it sent first is returned.
async fn closed_by_proxy(what: &str, s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within(what, s.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A TCP server that accepts and then says nothing, ever (holding the sockets).
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_stalled_h2_preface_is_closed_on_both_listeners() {
    let app = start_app().await;
    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--app", &app.addr.to_string(), "--header-read-timeout", "1s"])).await;
    for (listener, addr) in [("outbound", p.outbound), ("inbound", p.inbound.unwrap())] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        closed_by_proxy(&format!("{listener}: half an h2 preface closed"), &mut s).await;
    }
    // Completed preface, no request: closed by the same bound.
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    closed_by_proxy("h2 connection without a request closed", &mut s).await;
    let resp = send_h1(p.outbound, get("/status/200", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.received.load(Ordering::SeqCst), 1, "nothing of the stalled connections reached the app");
}

#[tokio::test]
async fn slowloris_on_a_plaintext_inbound_port_stays_http_and_is_closed() {
    let app = start_app().await;
    let p = start_proxy(&args(&["--app", &app.addr.to_string(), "--header-read-timeout", "1s", "--detect-timeout", "200ms"])).await;
    let mut s = TcpStream::connect(p.inbound.unwrap()).await.unwrap();
    s.write_all(b"GET /slo").await.unwrap();
    // One byte every 300 ms: past the detect timeout, never a full head.
    let trickle = async {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(b"w").await.is_err() {
                return;
            }
        }
    };
    within("slowloris closed by the proxy", trickle).await;
    assert_eq!(app.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_trickled_request_body_gets_408() {
    let app = start_app().await;
    // The defaults: 240 bytes/s after a 5 s grace.
    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr)])).await;
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: web.test\r\ncontent-length: 100000\r\n\r\n").await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"b").await.is_err() {
                return;
            }
        }
    });
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match within("a response to the trickled body", rd.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    trickle.abort();
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("--min-request-body-rate"), "{head}");
    // A body sent at once is not affected.
    let resp = send_h1(p.outbound, post("/echo", "web.test", vec![b'x'; 50_000])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_opaque_relay_is_closed() {
    let (silent, _server) = silent_server().await;
    let p = start_proxy(&args(&["--tcp-forward", &format!("127.0.0.1:0={silent}"), "--tcp-idle-timeout", "1s"])).await;
    let mut s = TcpStream::connect(p.tcp[0]).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    closed_by_proxy("idle relay closed", &mut s).await;
}

/// Client proxy -> relay -> server proxy, with PINGs every second and one
/// second to answer; plus a TCP forward to a peer that never answers TLS.
#[tokio::test]
async fn a_black_holed_peer_is_left_for_a_new_connection_and_a_silent_tls_peer_times_out() {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let app = start_app().await;
    let (silent, _server) = silent_server().await;
    let keepalive = ["--http2-keepalive-interval", "1s", "--http2-keepalive-timeout", "1s"];
    let (_server, relay, client) = server_relay_client(&m, cp.addr, app.addr, &args(&keepalive), |_| {
        let mut a = args(&keepalive);
        a.extend(args(&["--request-timeout", "4s", "--connect-timeout", "1s"]));
        a.extend(args(&["--tcp-forward", &format!("127.0.0.1:0={silent}@{server_id}")]));
        a
    })
    .await;

    let resp = send_h1(client.outbound, get("/status/200", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(relay.connections.load(Ordering::SeqCst), 1);

    // The peer's connection goes silent without closing: the PINGs go
    // unanswered, the connection is dropped, and a later request dials anew.
    relay.black_hole();
    eventually("a request answered over a new connection after the black hole", || async {
        // Each attempt is bounded: the point is what happens while it waits.
        let sent = tokio::time::timeout(Duration::from_secs(8), send_h1(client.outbound, get("/status/200", "web.test"))).await;
        let resp = sent.ok()?.ok()?;
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(relay.connections.load(Ordering::SeqCst) >= 2, "a new connection was opened");

    // A peer that accepts TCP and never answers the ClientHello.
    let mut s = TcpStream::connect(client.tcp[0]).await.unwrap();
    closed_by_proxy("a TCP client of a silent TLS peer closed", &mut s).await;
    let log = std::fs::read_to_string(m.path("client.log")).unwrap();
    assert!(log.contains("handshake not completed within 1s"), "{log}");
}
