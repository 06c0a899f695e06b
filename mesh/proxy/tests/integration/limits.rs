//! Request limits and malformed or slow clients; after each, the proxy
//! keeps serving.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::common::*;

async fn proxy_with_limits(app: &App) -> Proxy {
    start_proxy(&args(&[
        "--route",
        &format!("web.test={}", app.addr),
        "--max-header-bytes",
        "8KiB",
        "--max-request-body-bytes",
        "1KiB",
    ]))
    .await
}

async fn still_serves(p: &Proxy) {
    let resp = send_h1(p.outbound, get("/status/200", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let app = start_app().await;
    let p = proxy_with_limits(&app).await;
    let big = "a".repeat(20_000);

    let mut raw = TcpStream::connect(p.outbound).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: {big}\r\n\r\n");
    // The proxy may answer and close before reading everything we send.
    let _ = raw.write_all(req.as_bytes()).await;
    assert_eq!(read_status_line(&mut raw).await, "HTTP/1.1 431 Request Header Fields Too Large");
    still_serves(&p).await;

    let mut h2 = h2_connect(p.outbound).await;
    let req = http::Request::get("http://web.test/")
        .version(http::Version::HTTP_2)
        .header("x-big", &big)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = send_h2(&mut h2, req).await.expect("h2 answers oversized headers with a response");
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let resp = send_h2(&mut h2, h2_get("/status/200", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "same h2 connection still usable");
    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 2, "oversized requests must not reach the app");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = start_app().await;
    let p = proxy_with_limits(&app).await;

    // Declared too large: refused before anything is forwarded.
    let resp = send_h1(p.outbound, post("/echo", "web.test", vec![b'x'; 2000])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(proxy_error(&resp).as_deref(), Some("request body exceeds the limit of 1024 bytes"));
    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 0);

    // At the limit exactly: forwarded.
    let resp = send_h1(p.outbound, post("/echo", "web.test", vec![b'y'; 1024])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().len(), 1024);

    // Streamed (chunked, no length) and crossing the limit mid-way.
    let mut raw = TcpStream::connect(p.outbound).await.unwrap();
    raw.write_all(b"POST /echo HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("200\r\n{}\r\n", "z".repeat(0x200));
    for _ in 0..4 {
        if raw.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = raw.write_all(b"0\r\n\r\n").await;
    assert_eq!(read_status_line(&mut raw).await, "HTTP/1.1 413 Payload Too Large");

    // h2 with a declared content-length.
    let mut h2 = h2_connect(p.outbound).await;
    let resp = send_h2(&mut h2, h2_post("/echo", "web.test", vec![b'x'; 5000])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    still_serves(&p).await;
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let app = start_app().await;
    let p = proxy_with_limits(&app).await;
    for garbage in [&b"GARBAGE\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost web.test\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"] {
        let mut raw = TcpStream::connect(p.outbound).await.unwrap();
        raw.write_all(garbage).await.unwrap();
        let status = read_status_line(&mut raw).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{:?} -> {status:?}", String::from_utf8_lossy(garbage));
    }
    still_serves(&p).await;
    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_client_headers_are_cut_off() {
    let app = start_app().await;
    let p = start_proxy(&args(&[
        "--route",
        &format!("web.test={}", app.addr),
        "--header-read-timeout",
        "500ms",
    ]))
    .await;

    let mut raw = TcpStream::connect(p.outbound).await.unwrap();
    let head = b"GET /status/200 HTTP/1.1\r\nHost: web.test\r\nX-Padding: slowly-slowly-slowly-slowly-slowly\r\n\r\n";
    // One byte every 100 ms: the whole head would take ~9 s, far past 500 ms.
    let started = tokio::time::Instant::now();
    let mut cut_off = false;
    for b in head.iter() {
        if raw.write_all(&[*b]).await.is_err() {
            cut_off = true;
            break;
        }
        // A closed connection shows up as a readable EOF (or a 408 then EOF).
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), raw.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(!text.starts_with("HTTP/1.1 200"), "slow client was served: {text}");
            }
            Err(_) => {}
        }
        assert!(started.elapsed() < patience(), "proxy never disconnected the slow client");
    }
    assert!(cut_off, "the whole head was accepted despite the header read timeout");

    // A client that connects and says nothing is closed too (protocol
    // detection would otherwise wait for its first byte forever).
    let mut silent = TcpStream::connect(p.outbound).await.unwrap();
    let mut buf = [0u8; 16];
    let n = within("silent client disconnected", silent.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "expected EOF, got {:?}", &buf[..n]);

    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 0);
    still_serves(&p).await;
}

/// Reads until the proxy closes the connection (a bounded wait).
async fn read_to_close(raw: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    within("the proxy closes the connection", raw.read_to_end(&mut buf)).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_and_a_missing_host_get_400() {
    let app = start_app().await;
    let p = proxy_with_limits(&app).await;
    let conflicting: [&[u8]; 3] = [
        b"POST /status/200 HTTP/1.1\r\nHost: web.test\r\nContent-Length: 64\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /status/200 HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /status/200 HTTP/1.1\nHost: web.test\nContent-Length: 64\nTransfer-Encoding: chunked\n\n0\n\n",
    ];
    for req in conflicting {
        let mut raw = TcpStream::connect(p.outbound).await.unwrap();
        raw.write_all(req).await.unwrap();
        let resp = read_to_close(&mut raw).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{:?} -> {resp:?}", String::from_utf8_lossy(req));
        assert!(resp.contains("weft-proxy-error: malformed request: both Content-Length and Transfer-Encoding"), "{resp}");
    }
    // Only the conflicting request of a keep-alive connection is refused; a
    // body that looks like a conflicting head is a body.
    let mut raw = TcpStream::connect(p.outbound).await.unwrap();
    let decoy = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let pipelined = format!(
        "POST /status/200 HTTP/1.1\r\nHost: web.test\r\nContent-Length: {}\r\n\r\n{decoy}\
         POST /status/200 HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         POST /status/200 HTTP/1.1\r\nHost: web.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        decoy.len()
    );
    raw.write_all(pipelined.as_bytes()).await.unwrap();
    let resp = read_to_close(&mut raw).await;
    // The app's bodies are "200", no status line inside them.
    let statuses: Vec<&str> = resp.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "200", "400"], "{resp}");

    let mut raw = TcpStream::connect(p.outbound).await.unwrap();
    raw.write_all(b"GET /status/200 HTTP/1.1\r\n\r\n").await.unwrap();
    let status = read_status_line(&mut raw).await;
    assert!(status.starts_with("HTTP/1.1 400"), "HTTP/1.1 without Host -> {status:?}");
    still_serves(&p).await;
    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 3, "only the two good pipelined requests and still_serves reached the app");
}

/// Reads from `s` until the proxy closes it (EOF or reset), at most the patience.
async fn closed(what: &str, s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match within(what, s.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A TCP server echoing every connection until its client closes.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn wait_metric(p: &Proxy, series: &str, at_least: f64) {
    let series = series.to_owned();
    eventually(&format!("{series} >= {at_least}"), || async {
        metric(&p.metrics().await, &series).is_some_and(|v| v >= at_least).then_some(())
    })
    .await;
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_idle_connection_makes_room_and_busy_ones_refuse_new() {
    let app = start_app().await;
    let echo = echo_server().await;
    let p = start_proxy(&args(&[
        "--route",
        &format!("web.test={}", app.addr),
        "--tcp-forward",
        &format!("127.0.0.1:0={echo}"),
        "--max-outbound-connections",
        "2",
        "--header-read-timeout",
        "1h",
    ]))
    .await;
    let open = r#"weft_open_connections{direction="outbound"}"#;
    // An idle connection (never sends a byte), then a busy relay.
    let mut idle = TcpStream::connect(p.outbound).await.unwrap();
    wait_metric(&p, open, 1.0).await;
    let mut relay = TcpStream::connect(p.tcp[0]).await.unwrap();
    relay.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within("echo through the relay", relay.read_exact(&mut got)).await.unwrap();

    // At the cap: a client with work gets in, the idle one is closed.
    let resp = send_h1(p.outbound, get("/status/200", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    closed("the oldest idle connection closed to make room", &mut idle).await;
    wait_metric(&p, r#"weft_shed_connections_total{direction="outbound",reason="idle_evicted"}"#, 1.0).await;

    // Both slots busy (two relays): a new connection is closed at accept, counted.
    let mut relay2 = TcpStream::connect(p.tcp[0]).await.unwrap();
    relay2.write_all(b"pong").await.unwrap();
    within("echo through the second relay", relay2.read_exact(&mut got)).await.unwrap();
    let mut refused = TcpStream::connect(p.outbound).await.unwrap();
    let _ = refused.write_all(b"GET /status/200 HTTP/1.1\r\nHost: web.test\r\n\r\n").await;
    closed("a new connection refused at the cap", &mut refused).await;
    wait_metric(&p, r#"weft_shed_connections_total{direction="outbound",reason="limit"}"#, 1.0).await;
    // The relays were never cut.
    relay.write_all(b"more").await.unwrap();
    within("the first relay still works", relay.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"more");

    drop((relay, relay2));
    eventually("a slot frees when a relay ends", || async {
        send_h1(p.outbound, get("/status/200", "web.test")).await.is_ok_and(|r| r.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn at_the_connection_cap_keep_alive_clients_between_requests_are_spared() {
    let app = start_app().await;
    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--max-outbound-connections", "3", "--header-read-timeout", "1h"]))
        .await;
    // Two well-behaved keep-alive clients (HTTP/1 and h2), the oldest
    // connections, idle between their requests.
    let mut h1 = H1::connect(p.outbound).await.unwrap();
    assert_eq!(h1.send(get("/status/200", "web.test")).await.unwrap().status(), StatusCode::OK);
    let mut h2 = h2_connect(p.outbound).await;
    assert_eq!(send_h2(&mut h2, h2_get("/status/200", "web.test")).await.unwrap().status(), StatusCode::OK);
    // Silent connections past the cap: each new one makes room by closing
    // an older silent one, never a keep-alive connection.
    let mut silent = Vec::new();
    for n in 1..=4 {
        silent.push(TcpStream::connect(p.outbound).await.unwrap());
        wait_metric(&p, r#"weft_open_connections{direction="outbound"}"#, 3.0).await;
        if n > 1 {
            wait_metric(&p, r#"weft_shed_connections_total{direction="outbound",reason="idle_evicted"}"#, f64::from(n - 1)).await;
        }
    }
    for s in &mut silent[..3] {
        closed("an older silent connection closed to make room", s).await;
    }
    let resp = h1.send(get("/status/200", "web.test")).await.expect("the HTTP/1 keep-alive connection survived the cap");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send_h2(&mut h2, h2_get("/status/200", "web.test")).await.expect("the h2 connection survived the cap");
    assert_eq!(resp.status(), StatusCode::OK);
}

/// One HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Floods an h2c connection with `unit` frames (1,000 of them, answers left
/// unread), then reads what the proxy sent: the GOAWAY's error code and
/// debug text, if one came before the connection ended.
async fn h2_flood(addr: std::net::SocketAddr, unit: &[u8]) -> Option<(u32, String)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(h2_frame(0x4, 0, 0, &[]));
    for _ in 0..1000 {
        flood.extend_from_slice(unit);
    }
    // The proxy may close before it has read everything.
    let _ = s.write_all(&flood).await;
    let mut got = Vec::new();
    let _ = within("the proxy ends the flooded connection", s.read_to_end(&mut got)).await;
    let mut rest = &got[..];
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let payload = rest.get(9..9 + len)?;
        if rest[3] == 0x7 {
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            return Some((code, String::from_utf8_lossy(&payload[8..]).into_owned()));
        }
        rest = &rest[9 + len..];
    }
    None
}

#[tokio::test]
async fn ping_and_settings_floods_get_goaway_enhance_your_calm() {
    let app = start_app().await;
    let p = proxy_with_limits(&app).await;
    let ping = h2_frame(0x6, 0, 0, &[7; 8]);
    assert_eq!(h2_flood(p.outbound, &ping).await, Some((0xb, "too many PING frames".into())), "PING flood");
    let settings = h2_frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    assert_eq!(h2_flood(p.outbound, &settings).await, Some((0xb, "too many SETTINGS frames".into())), "SETTINGS flood");
    wait_metric(&p, r#"weft_h2_flood_closes_total{frame="ping"}"#, 1.0).await;
    wait_metric(&p, r#"weft_h2_flood_closes_total{frame="settings"}"#, 1.0).await;
    // A client's usual control frames are far below the budget.
    let mut h2 = h2_connect(p.outbound).await;
    for _ in 0..3 {
        assert_eq!(send_h2(&mut h2, h2_get("/status/200", "web.test")).await.unwrap().status(), StatusCode::OK);
    }
    still_serves(&p).await;
}

#[tokio::test]
async fn out_of_file_descriptors_the_proxy_sheds_new_connections_and_keeps_serving() {
    let app = start_app().await;
    let p = start_proxy_nofile(64, &args(&["--route", &format!("web.test={}", app.addr), "--header-read-timeout", "1h"])).await;
    // More silent connections than the proxy has descriptors: the first
    // ones are held (idle, 1 h header timeout), the rest must be shed
    // rather than left in the backlog.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(p.outbound).await.unwrap());
    }
    let mut last = held.pop().unwrap();
    closed("a connection past the descriptor limit is closed at accept", &mut last).await;
    drop(held);
    eventually("the proxy serves again once descriptors are free", || async {
        send_h1(p.outbound, get("/status/200", "web.test")).await.is_ok_and(|r| r.status() == StatusCode::OK).then_some(())
    })
    .await;
    wait_metric(&p, r#"weft_shed_connections_total{direction="outbound",reason="no_fds"}"#, 1.0).await;
}

/// The frames an h2c client gets back for `sent` (after the preface and an
/// empty SETTINGS), read until `until` picks one (bounded by the patience).
async fn h2_raw(addr: std::net::SocketAddr, sent: &[u8], until: impl Fn(u8, u32, &[u8]) -> bool) -> Vec<(u8, u32, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend_from_slice(sent);
    s.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let mut frames = Vec::new();
    within("the proxy's frames", async {
        let mut buf = [0u8; 4096];
        loop {
            while got.len() >= 9 {
                let len = (usize::from(got[0]) << 16) | (usize::from(got[1]) << 8) | usize::from(got[2]);
                if got.len() < 9 + len {
                    break;
                }
                let (kind, stream) = (got[3], u32::from_be_bytes(got[5..9].try_into().unwrap()) & 0x7fff_ffff);
                let payload = got[9..9 + len].to_vec();
                got.drain(..9 + len);
                let done = until(kind, stream, &payload);
                frames.push((kind, stream, payload));
                if done {
                    return;
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed the connection; frames so far: {frames:?}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    frames
}

/// SETTINGS_MAX_CONCURRENT_STREAMS in the server's first SETTINGS frame.
async fn advertised_streams(addr: std::net::SocketAddr) -> Option<u32> {
    let frames = h2_raw(addr, &[], |kind, _, _| kind == 0x4).await;
    let (_, _, settings) = frames.last().unwrap();
    settings.chunks(6).find(|p| p[..2] == [0, 3]).map(|p| u32::from_be_bytes(p[2..6].try_into().unwrap()))
}

/// A GET for `path` at web.test on `stream`, its head in one HPACK block of
/// static-table names and literal values (never indexed, no Huffman).
fn h2_get_frame(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    for (name, value) in [(4u8, path), (1, "web.test")] {
        block.push(0x10 | name); // literal, never indexed, indexed name
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    h2_frame(0x1, 0x4 | 0x1, stream, &block) // END_HEADERS | END_STREAM
}

#[tokio::test]
async fn http2_clients_are_told_the_stream_limit_and_a_stream_past_it_is_refused_unprocessed() {
    let app = start_app().await;
    let default = proxy_with_limits(&app).await;
    assert_eq!(advertised_streams(default.outbound).await, Some(100), "RFC 9113's recommended floor by default");

    let p = start_proxy(&args(&["--route", &format!("web.test={}", app.addr), "--http2-max-concurrent-streams", "2"])).await;
    assert_eq!(advertised_streams(p.outbound).await, Some(2));
    // A client that ignores it: two slow streams open, the third is refused
    // with REFUSED_STREAM (not processed, safe to retry) and never reaches
    // the app; the two are answered.
    let mut sent = h2_get_frame(1, "/delay/500");
    sent.extend(h2_get_frame(3, "/delay/500"));
    sent.extend(h2_get_frame(5, "/status/200"));
    let answered = std::sync::Mutex::new(Vec::new());
    let frames = h2_raw(p.outbound, &sent, |kind, stream, payload| {
        let mut a = answered.lock().unwrap();
        if kind == 0x3 || kind == 0x1 {
            a.push((kind, stream, payload.to_vec()));
        }
        a.iter().filter(|(k, _, _)| *k == 0x1).count() == 2 && a.iter().any(|(k, _, _)| *k == 0x3)
    })
    .await;
    let resets: Vec<_> = frames.iter().filter(|(k, _, _)| *k == 0x3).map(|(_, s, p)| (*s, p.clone())).collect();
    assert_eq!(resets, vec![(5, 7u32.to_be_bytes().to_vec())], "stream 5 refused: RST_STREAM REFUSED_STREAM");
    let heads: Vec<_> = frames.iter().filter(|(k, _, _)| *k == 0x1).map(|(_, s, _)| *s).collect();
    assert_eq!(heads, vec![1, 3], "the two streams within the limit are answered");
    still_serves(&p).await;
}
