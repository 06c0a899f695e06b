//! Zero-config mTLS between real proxies certified by a real mesh-control:
//! what crosses the wire, what the app sees, refusals, rotation under load,
//! a control-plane outage, and readiness before the first certificate.

use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use http::StatusCode;

use crate::{common::*, mesh_support::*};

/// Client proxy -> relay -> server proxy -> app, all meshed, plus a TCP
/// forward through the same relay (its bytes end up at the HTTP app).
struct Meshed {
    m: MeshDir,
    cp: Option<Control>,
    app: App,
    server: Proxy,
    relay: Relay,
    client: Proxy,
}

async fn meshed(lifetime: &str, server_extra: &[&str]) -> Meshed {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", lifetime).await;
    let app = start_app().await;
    let (server, relay, client) = server_relay_client(&m, cp.addr, app.addr, &args(server_extra), |relay| {
        args(&["--tcp-forward", &format!("127.0.0.1:0={relay}@{server_id}")])
    })
    .await;
    Meshed { m, cp: Some(cp), app, server, relay, client }
}

fn raw_post(path: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: web.test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
}

#[tokio::test]
async fn meshed_bytes_are_encrypted_and_the_app_learns_the_caller() {
    let t = meshed("1h", &["--forward-client-identity"]).await;
    let marker = "weft-marker-7f3a9c";

    // HTTP/1 from the app: echoed intact, still HTTP/1.1 at the server's app.
    let mut conn = H1::connect(t.client.outbound).await.unwrap();
    let resp = conn.send(post("/echo", "web.test", format!("{marker}-h1"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body(), format!("{marker}-h1").as_str());
    let resp = conn.send(get("/proto", "web.test")).await.unwrap();
    assert_eq!(resp.body(), "HTTP/1.1");

    // The app learns the verified caller; spoofed values from the outside
    // (and the proxies' own transport header) never reach it.
    let req = http::Request::get("/headers")
        .header("host", "web.test")
        .header("weft-client-id", sa("admin"))
        .header("weft-orig-proto", "HTTP/1.0")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let seen = String::from_utf8_lossy(conn.send(req).await.unwrap().body()).into_owned();
    assert!(seen.contains(&format!("weft-client-id: {}", sa("client"))), "{seen}");
    assert!(!seen.contains("sa/admin"), "spoofed identity reached the app:\n{seen}");
    assert!(!seen.contains("weft-orig-proto"), "{seen}");
    assert!(seen.contains("host: web.test"), "{seen}");

    for _ in 0..5 {
        let resp = send_h1(t.client.outbound, get("/", "web.test")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    // HTTP/2 from the app stays HTTP/2.
    let mut h2 = h2_connect(t.client.outbound).await;
    let resp = send_h2(&mut h2, h2_post("/echo", "web.test", format!("{marker}-h2"))).await.unwrap();
    assert_eq!(resp.body(), format!("{marker}-h2").as_str());
    let resp = send_h2(&mut h2, h2_get("/proto", "web.test")).await.unwrap();
    assert_eq!(resp.body(), "HTTP/2.0");

    // Every HTTP request, from three downstream connections and both
    // versions, crossed the mesh on one TLS connection.
    assert_eq!(t.relay.connections.load(Ordering::SeqCst), 1);

    // Opaque TCP, through its own mTLS connection.
    let text = raw_http(t.client.tcp[0], &raw_post("/echo", &format!("{marker}-tcp"))).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(&format!("{marker}-tcp")), "{text}");
    assert_eq!(t.relay.connections.load(Ordering::SeqCst), 2);

    assert!(t.relay.total() > 1000, "the relay saw hardly anything: {} bytes", t.relay.total());
    for needle in ["-h1", "-h2", "-tcp"] {
        let clear = format!("{marker}{needle}");
        assert!(!t.relay.saw(clear.as_bytes()), "{clear} crossed the wire in the clear");
    }
    assert!(!t.relay.saw(b"web.test"), "the authority crossed the wire in the clear");

    let metrics = t.server.metrics().await;
    let series = format!(r#"weft_inbound_requests_by_client_total{{client_id="{}",status_class="2xx"}}"#, sa("client"));
    assert!(metric(&metrics, &series).unwrap_or(0.0) >= 10.0, "{metrics}");
    assert!(t.app.received.load(Ordering::SeqCst) >= 10);
    drop(t.m);
}

#[tokio::test]
async fn refusals_name_peer_and_reason() {
    let (server_id, client_id) = (sa("server"), sa("client"));
    let m = MeshDir::new(&[&server_id, &client_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let app = start_app().await;
    // Strict by default: no --default-inbound-policy.
    let server = m.proxy("server", &server_id, cp.addr, &args(&["--app", &app.addr.to_string()])).await;
    ready(&server).await;
    let inbound = server.inbound.unwrap();
    let route = |id: &str| args(&["--route", &format!("web.test={inbound}@{id}")]);

    // 1. Plaintext HTTP to a meshed port: 403 and a log line; opaque bytes: closed.
    let text = raw_http(inbound, &raw_post("/echo", "hi")).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("weft-proxy-error: plaintext refused"), "{text}");
    let text = raw_http(inbound, "\x00\x01\x02 not http\r\n").await;
    assert_eq!(text, "", "opaque plaintext must be closed without an answer");
    eventually("plaintext refusal logged", || async {
        server.stderr().contains("refused inbound connection from 127.0.0.1:").then_some(())?;
        server.stderr().contains("plaintext refused: HTTP/1 on a port that requires Weft mTLS").then_some(())
    })
    .await;
    assert_eq!(app.received.load(Ordering::SeqCst), 0, "plaintext reached the app");

    // 2. The client expected another identity: it refuses the server.
    let wrong = m.proxy("wrong", &client_id, cp.addr, &route(&sa("database"))).await;
    ready(&wrong).await;
    let resp = send_h1(wrong.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let reason = proxy_error(&resp).unwrap();
    assert!(reason.contains("wrong identity"), "{reason}");
    let line = format!("refused outbound connection to {inbound} ({}): wrong identity", sa("database"));
    eventually("wrong identity logged", || async { wrong.stderr().contains(&line).then_some(()) }).await;
    assert!(wrong.stderr().contains(&format!("expected {}", sa("database"))), "{}", wrong.stderr());

    // 3. A client certified by another CA (its own mesh-control and data
    //    dir, same trust domain name) that trusts our anchor too (it could
    //    not use a certificate that does not chain to its own anchors).
    let other = MeshDir::new(&[&client_id]);
    let other_cp = other.control("127.0.0.1:0", "1h").await;
    let mut foreign_args = other.identity_args(&client_id, other_cp.addr);
    let anchor_at = foreign_args.iter().position(|a| a == "--trust-anchor").unwrap() + 1;
    let both = m.path("both-anchors.pem");
    let mut pem = std::fs::read(other.anchor()).unwrap();
    pem.extend(std::fs::read(m.anchor()).unwrap());
    std::fs::write(&both, pem).unwrap();
    foreign_args[anchor_at] = both.to_str().unwrap().to_owned();
    foreign_args.extend(route(&server_id));
    let foreign = start_proxy_logged(&foreign_args, &m.path("foreign.log")).await;
    ready(&foreign).await;
    let resp = send_h1(foreign.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    eventually("unknown CA logged by the server", || async { server.stderr().contains(": unknown CA: ").then_some(()) })
        .await;

    // 4. An expired certificate from the right CA: certified by a second
    //    mesh-control on the same CA with a 2 s lifetime, which then stops.
    let short_cp = m.control("127.0.0.1:0", "2s").await;
    let expired = m.proxy("expired", &client_id, short_cp.addr, &route(&server_id)).await;
    ready(&expired).await;
    short_cp.stop().await;
    let expiry = metric(&expired.metrics().await, "weft_identity_certificate_expiry_timestamp_seconds").unwrap();
    eventually("the client's certificate expires", || async {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        // The certificate may have been renewed once before the stop.
        let expiry = metric(&expired.metrics().await, "weft_identity_certificate_expiry_timestamp_seconds").unwrap();
        (now > expiry.max(0.0) + 1.0).then_some(())
    })
    .await;
    assert!(expiry > 0.0);
    let resp = send_h1(expired.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    eventually("expired certificate logged by the server", || async {
        server.stderr().contains(": certificate expired: ").then_some(())
    })
    .await;

    let metrics = server.metrics().await;
    for reason in ["plaintext", "unknown_ca", "expired", "peer_refused"] {
        let series = format!(r#"weft_refused_connections_total{{direction="inbound",reason="{reason}"}}"#);
        assert!(metric(&metrics, &series).unwrap_or(0.0) >= 1.0, "{series} missing in\n{metrics}");
    }
    assert_eq!(app.received.load(Ordering::SeqCst), 0, "a refused client reached the app");
    drop((other, other_cp, foreign, wrong));
}

/// Continuous traffic for `duration` (a request every 20 ms, a fresh TCP
/// tunnel every 25th); returns (requests, failures as text).
async fn traffic(t: &Meshed, duration: Duration, until: impl Fn() -> bool) -> (usize, Vec<String>) {
    let mut conn = H1::connect(t.client.outbound).await.unwrap();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut n = 0;
    // The count bound covers the whole time bound: a caller waiting for
    // `until` (a renewal due 7 s in) must not run out of requests first.
    let max = ((duration + patience()).as_millis() / 20) as usize * 2 + 100;
    while n < max && (start.elapsed() < duration || !until()) && start.elapsed() < duration + patience() {
        n += 1;
        match conn.send(get("/", "web.test")).await {
            Ok(r) if r.status() == StatusCode::OK => {}
            Ok(r) => failures.push(format!("request {n}: {} {:?}", r.status(), proxy_error(&r))),
            Err(e) => {
                failures.push(format!("request {n}: {e}"));
                conn = H1::connect(t.client.outbound).await.unwrap();
            }
        }
        if n % 25 == 0 {
            // A new mTLS handshake with whatever certificates are current.
            let text = raw_http(t.client.tcp[0], &raw_post("/echo", "tunnel")).await;
            if !text.starts_with("HTTP/1.1 200") {
                failures.push(format!("tunnel at {n}: {text:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (n, failures)
}

#[tokio::test]
async fn rotation_under_continuous_traffic_loses_nothing() {
    let t = meshed("5s", &[]).await;
    // Without --forward-client-identity the app gets no identity header,
    // and a spoofed one is still removed.
    let req = http::Request::get("/headers")
        .header("host", "web.test")
        .header("weft-client-id", sa("admin"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let seen = String::from_utf8_lossy(send_h1(t.client.outbound, req).await.unwrap().body()).into_owned();
    assert!(!seen.contains("weft-client-id"), "{seen}");

    let (n, failures) = traffic(&t, Duration::from_secs(30), || true).await;
    assert!(failures.is_empty(), "{} of {n} failed: {failures:#?}", failures.len());
    for p in [&t.client, &t.server] {
        let serials: HashSet<String> = serials(&p.stderr()).into_iter().collect();
        assert!(serials.len() >= 4, "expected several rotations in 30 s of 5 s certificates, got {serials:?}");
        let metrics = p.metrics().await;
        assert!(metric(&metrics, "weft_identity_certificates_total").unwrap() >= 4.0, "{metrics}");
    }
    let metrics = t.server.metrics().await;
    assert!(!metrics.lines().any(|l| l.starts_with("weft_refused_connections_total") && !l.ends_with(" 0")), "{metrics}");
}

#[tokio::test]
async fn control_plane_outage_keeps_traffic_and_recertifies_after() {
    let mut t = meshed("10s", &[]).await;
    let before: HashSet<String> = serials(&t.client.stderr()).into_iter().collect();
    let cp = t.cp.take().unwrap();
    let addr = cp.addr;
    cp.stop().await;

    // Traffic continues until both proxies have tried to renew and failed
    // (renewal is due at 7 s of the 10 s lifetime).
    let failed = || t.client.stderr().contains("certification failed") && t.server.stderr().contains("certification failed");
    let (n, failures) = traffic(&t, Duration::from_secs(2), failed).await;
    assert!(failed(), "renewal never failed during the outage");
    assert!(failures.is_empty(), "{} of {n} failed during the outage: {failures:#?}", failures.len());

    // Back on the same address: both proxies re-certify by themselves.
    let cp = t.m.control(&addr.to_string(), "10s").await;
    eventually("new certificates after the outage", || async {
        let now: HashSet<String> = serials(&t.client.stderr()).into_iter().collect();
        let server_n = serials(&t.server.stderr()).len();
        (now.difference(&before).next().is_some() && server_n >= 2).then_some(())
    })
    .await;
    let (n, failures) = traffic(&t, Duration::from_secs(1), || true).await;
    assert!(failures.is_empty(), "{} of {n} failed after the outage: {failures:#?}", failures.len());
    cp.stop().await;
}

/// The kubelet rewrites a projected ServiceAccount token before it expires;
/// renewals must present the token file as it is now, not the token read at
/// start (which mesh-control refuses once it has expired). Here mesh-control
/// accepts only a new token from a moment on, and the proxy's file gets it.
#[tokio::test]
async fn renewals_present_the_token_file_as_it_is_now() {
    let id = sa("rotating");
    let m = MeshDir::new(&[&id]);
    let cp = m.control("127.0.0.1:0", "3s").await;
    let p = m.proxy("rotating", &id, cp.addr, &args(&[])).await;
    ready(&p).await;
    let before = serials(&p.stderr()).len();
    // mesh-control re-reads its token file when it changes: the old token is
    // refused from here on.
    std::fs::write(m.path("tokens"), format!("{id} token-rotated\n")).unwrap();
    std::fs::write(m.path(&token_name(&id)), "token-rotated\n").unwrap();
    eventually("two renewals with the rotated token", || async {
        (serials(&p.stderr()).len() >= before + 2).then_some(())
    })
    .await;
    assert_eq!(p.admin_get("/ready").await.0, StatusCode::OK);
    cp.stop().await;
}

#[tokio::test]
async fn ready_only_after_the_first_certificate() {
    let id = sa("late");
    let m = MeshDir::new(&[&id]);
    // Generate the CA (the anchor must exist before the proxy starts), then stop.
    let cp = m.control("127.0.0.1:0", "1h").await;
    let addr = cp.addr;
    cp.stop().await;

    let p = m.proxy("late", &id, addr, &args(&[])).await;
    let (status, body) = p.admin_get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no workload certificate"), "{body}");
    eventually("a failed certification attempt", || async { p.stderr().contains("certification failed").then_some(()) })
        .await;
    assert_eq!(p.admin_get("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p.admin_get("/live").await.0, StatusCode::OK);

    let cp = m.control(&addr.to_string(), "1h").await;
    ready(&p).await;
    assert_eq!(serials(&p.stderr()).len(), 1, "{}", p.stderr());
    cp.stop().await;
}

#[tokio::test]
async fn meshed_flags_are_validated_together() {
    let out = tokio::process::Command::new(BIN)
        .args(["--identity", "spiffe://cluster.local/ns/a/sa/b", "--route", "a=127.0.0.1:1@spiffe://x/ns/a/sa/b"])
        .args(["--inbound-plaintext", "sometimes"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["--control", "--token-file", "--trust-anchor", "sometimes"] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
}
