//! Failing closed through the real binaries: inbound authorization before
//! (or without) the port's policy is the proxy's strict default and holds
//! `/ready` back; a request addressed to the proxy's own outbound listener
//! is refused as a loop instead of going round.

use http::StatusCode;

use crate::{common::*, control_support::Switch, discovery_support::*, mesh_support::*};

const PLAINTEXT_GET: &str = "GET / HTTP/1.1\r\nhost: web.test\r\nconnection: close\r\n\r\n";

/// `--policy` pointing at nothing: the default judges. The strict default
/// (no flag) lets a meshed client in and refuses plaintext; `deny` refuses
/// the meshed client too; `/ready` names the port still waiting.
#[tokio::test]
async fn unreachable_policy_source_leaves_the_strict_default_and_not_ready() {
    let (alice, server_id) = (sa("alice"), sa("server"));
    let m = MeshDir::new(&[&alice, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let app = start_app().await;
    let nowhere = dead_addr().await.to_string();
    let inbound = |extra: &[&str]| {
        let mut a = args(&["--app", &app.addr.to_string(), "--policy", &nowhere]);
        a.extend(args(extra));
        a
    };
    let strict = m.proxy("strict", &server_id, cp.addr, &inbound(&[])).await;
    let closed = m.proxy("closed", &server_id, cp.addr, &inbound(&["--default-inbound-policy", "deny"])).await;
    let (s_in, c_in) = (strict.inbound.unwrap(), closed.inbound.unwrap());
    let routes = args(&["--route", &format!("web.test={s_in}@{server_id}"), "--route", &format!("closed.test={c_in}@{server_id}")]);
    let client = m.proxy("alice", &alice, cp.addr, &routes).await;
    ready(&client).await;

    // A meshed client is let in (once the server is certified).
    eventually("alice allowed by the strict default", || async {
        let r = send_h1(client.outbound, get("/", "web.test")).await.ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    // Plaintext is refused, per connection, counted as a plaintext refusal.
    let text = raw_http(s_in, PLAINTEXT_GET).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("weft-proxy-error: plaintext refused"), "{text}");
    let metrics = strict.metrics().await;
    let refused = metric(&metrics, r#"weft_refused_connections_total{direction="inbound",reason="plaintext"}"#);
    assert_eq!(refused, Some(1.0), "{metrics}");
    let log = strict.stderr();
    let port = app.addr.port();
    let line = format!("on a port that requires Weft mTLS (port {port}, no policy for it yet: --default-inbound-policy all-authenticated)");
    assert!(log.contains(&line), "{log}");
    // Certified, listening, and still not ready: the policy never came.
    let (status, body) = strict.admin_get("/ready").await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: no inbound policy yet for port {port}\n").as_str()));

    // deny: the meshed client is refused too, as the authorization policy refuses.
    let r = eventually("closed is certified and answers alice", || async {
        let r = send_h1(client.outbound, get("/", "closed.test")).await.ok()?;
        (r.status() != StatusCode::BAD_GATEWAY && r.status() != StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let why = proxy_error(&r).unwrap();
    assert!(why.contains("unauthorized") && why.contains("sa/alice"), "{why}");
    let metrics = closed.metrics().await;
    let denied = metric(&metrics, r#"weft_inbound_authz_denied_total{protocol="http",reason="unauthorized"}"#);
    assert!(denied >= Some(1.0), "{metrics}");
    assert_eq!(app.received.load(std::sync::atomic::Ordering::SeqCst), 1, "only alice's request to the strict port");
    cp.stop().await;
}

/// The policy arrives late (the control plane was unreachable at start):
/// `/ready` turns 200 then, and the policy judges from that moment.
#[tokio::test]
async fn late_policy_makes_the_proxy_ready_and_applies() {
    let (alice, mallory, server_id) = (sa("alice"), sa("mallory"), sa("server"));
    let m = MeshDir::new(&[&alice, &mallory, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    ctl.state.set_inbound(&server_id, only(&alice));
    // The policy source is unreachable until switched to the control plane.
    let link = Switch::start(dead_addr().await).await;
    let app = start_app().await;
    let server = m
        .proxy("server", &server_id, cp.addr, &args(&["--app", &app.addr.to_string(), "--policy", &link.addr.to_string()]))
        .await;
    let route = args(&["--route", &format!("web.test={}@{server_id}", server.inbound.unwrap())]);
    let a = m.proxy("alice", &alice, cp.addr, &route).await;
    let b = m.proxy("mallory", &mallory, cp.addr, &route).await;
    for p in [&a, &b] {
        ready(p).await;
    }
    eventually("mallory let in by the default before the policy", || async {
        let r = send_h1(b.outbound, get("/", "web.test")).await.ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    let (status, body) = server.admin_get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("no inbound policy yet"), "{body}");

    link.switch_to(ctl.addr());
    ready(&server).await;
    // Ready means the policy is in force: mallory is refused at once.
    let r = send_h1(b.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{:?}", proxy_error(&r));
    let r = send_h1(a.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The last policy stays when the control plane goes away again.
    ctl.kill();
    link.switch_to(dead_addr().await);
    let r = send_h1(b.outbound, get("/", "web.test")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.admin_get("/ready").await.0, StatusCode::OK, "an outage does not make it unready");
    cp.stop().await;
}

/// Explicit mode: `Host` naming the proxy's own outbound listener would
/// be resolved (unknown to the control plane: sent to itself) and come
/// straight back. It gets one 502 loop answer, and only one request is
/// ever seen by the proxy.
#[tokio::test]
async fn a_request_to_the_proxy_itself_is_refused_as_a_loop() {
    let ctl = FakeControl::start().await;
    let mut a = args(&["--destination", &ctl.addr().to_string(), "--request-timeout", "5s"]);
    a.extend(ctl.trust_args());
    let proxy = start_proxy(&a).await;
    let own = proxy.outbound.to_string();
    for host in [own.as_str(), &format!("localhost:{}", proxy.outbound.port())] {
        let r = within("the loop is answered", send_h1(proxy.outbound, get("/", host))).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{host}: {:?}", proxy_error(&r));
        let why = proxy_error(&r).unwrap();
        assert!(why.starts_with("loop: ") && why.contains("own outbound listener"), "{why}");
    }
    let metrics = proxy.metrics().await;
    let loops = metric(&metrics, r#"weft_proxy_errors_total{direction="outbound",kind="loop"}"#);
    assert_eq!(loops, Some(2.0), "{metrics}");
    let seen = metric(&metrics, r#"weft_requests_total{direction="outbound",status_class="5xx"}"#);
    assert_eq!(seen, Some(2.0), "no request went round: {metrics}");
    assert_eq!(metric(&metrics, r#"weft_connections_total{direction="outbound"}"#), Some(2.0), "{metrics}");
}

/// A static route to the proxy's own outbound listener can never work:
/// the proxy refuses to start, naming the route.
#[tokio::test]
async fn a_static_route_to_the_proxy_itself_is_refused_at_start() {
    let port = dead_addr().await.port();
    let out = tokio::process::Command::new(BIN)
        .args(["--outbound-listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
        .args(["--route", &format!("self.test=127.0.0.1:{port}")])
        .output();
    let out = within("the proxy exits", out).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--route self.test=127.0.0.1:{port}: 127.0.0.1:{port} is this proxy's own outbound listener")), "{err}");
}
