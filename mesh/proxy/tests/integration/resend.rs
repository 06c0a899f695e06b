//! A replica that goes away mid-request: an idempotent request that got no
//! response head is sent again to another endpoint, a POST is not (it may
//! have been processed). Through the real binaries: a plaintext endpoint
//! that resets, and a meshed one whose app resets behind its sidecar (the
//! app of a killed replica going first).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use http::StatusCode;
use mesh_api::policy::v1 as pol;
use tokio::{io::AsyncReadExt, net::TcpListener, task::JoinHandle};

use crate::{common::*, discovery_support::*, mesh_support::*};

/// An app that reads each request head and resets the connection without
/// an answer, counting GETs and POSTs.
struct Resetter {
    addr: std::net::SocketAddr,
    gets: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Resetter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resetter {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gets, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (g, p) = (Arc::clone(&gets), Arc::clone(&posts));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (g, p) = (Arc::clone(&g), Arc::clone(&p));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    match &head[..4] {
                        b"GET " => g.fetch_add(1, Ordering::SeqCst),
                        _ => p.fetch_add(1, Ordering::SeqCst),
                    };
                    // RST, not FIN: the connection dies as a killed process's does.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
                });
            }
        });
        Self { addr, gets, posts, task }
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
}

/// The good app answers after 50 ms, so the balancer (peak EWMA over
/// exactly two endpoints) keeps preferring the quicker failing one: every
/// request meets the failure first. (Not a timing assertion: a failing
/// endpoint that happens to be slower only makes the loops below longer.)
const SLOW: &str = "/delay/50";

/// GETs to `host` until one has reached the resetting app (bounded): every
/// one answered 200 by the other endpoint. Then POSTs to `post_host` (the
/// same two endpoints behind a balancer of its own: the first has learnt to
/// shun the resetting app) until one reaches the resetting app: that one
/// gets 502 and is not sent elsewhere.
async fn gets_resent_posts_not(outbound: std::net::SocketAddr, host: &str, post_host: &str, resetter: &Resetter, good: &App) {
    let before = resetter.gets();
    let seen = || resetter.gets() - before;
    for i in 0..300 {
        if seen() >= 1 {
            break;
        }
        let r = send_h1(outbound, get(SLOW, host)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET #{i} to {host} (the resetting app saw {} of them): {:?}", seen(), proxy_error(&r));
    }
    assert!(seen() >= 1, "{host}: the resetting app saw none of 300 GETs");
    let host = post_host;
    for i in 0..300 {
        let (posts, answered) = (resetter.posts(), good.received.load(Ordering::SeqCst));
        let r = send_h1(outbound, post(SLOW, host, "once")).await.unwrap();
        if resetter.posts() > posts {
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "POST #{i} to {host} reached the resetting app: {:?}", proxy_error(&r));
            assert_eq!(good.received.load(Ordering::SeqCst), answered, "{host}: the POST the resetting app took was not sent again");
            return;
        }
        assert_eq!(r.status(), StatusCode::OK, "POST #{i} to {host}: {:?}", proxy_error(&r));
    }
    panic!("{host}: no POST of 300 reached the resetting app");
}

#[tokio::test]
async fn a_reset_before_the_response_head_resends_idempotent_requests_only() {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let (good_app, resetter) = (start_app().await, Resetter::start().await);
    let good = m.proxy("good", &server_id, cp.addr, &args(&["--app", &good_app.addr.to_string()])).await;
    let bad = m.proxy("bad", &server_id, cp.addr, &args(&["--app", &resetter.addr.to_string()])).await;
    // A replica whose app is gone (stopped before its sidecar): the sidecar
    // cannot connect to it, nothing reaches an app.
    let gone = m.proxy("gone", &server_id, cp.addr, &args(&["--app", &dead_addr().await.to_string()])).await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    let (good_in, bad_in) = (good.inbound.unwrap(), bad.inbound.unwrap());
    ctl.state.set_identity(good_in, &server_id);
    ctl.state.set_identity(bad_in, &server_id);
    for svc in ["meshed.test:80", "meshed-post.test:80"] {
        ctl.state.set_endpoints(svc, &[good_in, bad_in]);
    }
    for svc in ["plain.test:80", "plain-post.test:80"] {
        ctl.state.set_endpoints(svc, &[good_app.addr, resetter.addr]);
    }
    let gone_in = gone.inbound.unwrap();
    ctl.state.set_identity(gone_in, &server_id);
    ctl.state.set_endpoints("gone.test:80", &[good_in, gone_in]);
    // Failure accrual off, no retry policy: only resends can hide the reset.
    for svc in ["meshed.test:80", "meshed-post.test:80", "plain.test:80", "plain-post.test:80", "gone.test:80"] {
        ctl.state.set_outbound(svc, one_rule(pol::HttpRule::default(), 0));
    }
    let control = ctl.addr().to_string();
    let client = m.proxy("client", &client_id, cp.addr, &args(&["--destination", &control, "--policy", &control])).await;
    ready(&good).await;
    ready(&bad).await;
    ready(&gone).await;
    ready(&client).await;

    gets_resent_posts_not(client.outbound, "plain.test", "plain-post.test", &resetter, &good_app).await;
    // The meshed replica's sidecar answers for its app: no response head came.
    gets_resent_posts_not(client.outbound, "meshed.test", "meshed-post.test", &resetter, &good_app).await;

    // The peer's `weft-proxy-error-kind: connect`: any method goes elsewhere
    // (an empty POST: its body is kept for free). One refusal is enough: the
    // balancer then shuns the failing endpoint.
    let refused = || async { metric(&gone.metrics().await, r#"weft_proxy_errors_total{direction="inbound",kind="connect"}"#).unwrap_or(0.0) };
    for i in 0..300 {
        if refused().await >= 1.0 {
            break;
        }
        let r = send_h1(client.outbound, post(SLOW, "gone.test", "")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "empty POST #{i} to gone.test: {:?}", proxy_error(&r));
    }
    assert!(refused().await >= 1.0, "gone.test: no POST of 300 reached the sidecar of the gone app");
    cp.stop().await;
}

/// An app that answers every request with a forged `weft-proxy-error-kind:
/// connect` (a peer proxy's word that nothing reached the app), counting them.
async fn forger() -> (std::net::SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    counter.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 502 Bad Gateway\r\nweft-proxy-error-kind: connect\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test]
async fn an_apps_forged_proxy_error_kind_does_not_make_its_clients_resend() {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let good_app = start_app().await;
    let (forger_addr, forged, task) = forger().await;
    let good = m.proxy("good", &server_id, cp.addr, &args(&["--app", &good_app.addr.to_string()])).await;
    let bad = m.proxy("forger", &server_id, cp.addr, &args(&["--app", &forger_addr.to_string()])).await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    let (good_in, bad_in) = (good.inbound.unwrap(), bad.inbound.unwrap());
    ctl.state.set_identity(good_in, &server_id);
    ctl.state.set_identity(bad_in, &server_id);
    ctl.state.set_endpoints("forged.test:80", &[good_in, bad_in]);
    ctl.state.set_outbound("forged.test:80", one_rule(pol::HttpRule::default(), 0));
    let control = ctl.addr().to_string();
    let client = m.proxy("client", &client_id, cp.addr, &args(&["--destination", &control, "--policy", &control])).await;
    ready(&good).await;
    ready(&bad).await;
    ready(&client).await;

    // The app's 502 reaches the client as the app's answer: its sidecar
    // drops the forged kind, so the client's proxy sends the POST once.
    for i in 0..300 {
        let (before, answered) = (forged.load(Ordering::SeqCst), good_app.received.load(Ordering::SeqCst));
        let r = send_h1(client.outbound, post(SLOW, "forged.test", "")).await.unwrap();
        if forged.load(Ordering::SeqCst) > before {
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "POST #{i} reached the forging app: {:?}", proxy_error(&r));
            assert!(r.headers().get("weft-proxy-error-kind").is_none(), "the forged kind reached the client: {:?}", r.headers());
            assert_eq!(good_app.received.load(Ordering::SeqCst), answered, "the POST the forging app answered was sent again");
            task.abort();
            cp.stop().await;
            return;
        }
        assert_eq!(r.status(), StatusCode::OK, "POST #{i}: {:?}", proxy_error(&r));
    }
    panic!("no POST of 300 reached the forging app");
}

/// Sends `signal` to a proxy process.
fn signal(p: &Proxy, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(p.child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// Two meshed replicas; one's sidecar is frozen (SIGSTOP, a real process)
/// with GETs in flight through it. The client proxy's PINGs to it go
/// unanswered, the connection is declared dead, the GETs in flight fail
/// before any response head and go to the other replica, and so does
/// every GET while the sidecar stays frozen. `--request-timeout 8s` is the
/// client's patience: waiting out the freeze instead (as the proxy did
/// with 10 s PINGs) answers the GETs in flight 504.
#[tokio::test]
async fn a_frozen_peer_proxy_costs_no_idempotent_request() {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let (app_a, app_b) = (start_app().await, start_app().await);
    let a = m.proxy("a", &server_id, cp.addr, &args(&["--app", &app_a.addr.to_string()])).await;
    let b = m.proxy("b", &server_id, cp.addr, &args(&["--app", &app_b.addr.to_string()])).await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    let (a_in, b_in) = (a.inbound.unwrap(), b.inbound.unwrap());
    ctl.state.set_identity(a_in, &server_id);
    ctl.state.set_identity(b_in, &server_id);
    ctl.state.set_endpoints("frozen.test:80", &[a_in, b_in]);
    ctl.state.set_outbound("frozen.test:80", one_rule(pol::HttpRule::default(), 1));
    let control = ctl.addr().to_string();
    let client = m
        .proxy(
            "client",
            &client_id,
            cp.addr,
            &args(&[
                "--destination",
                &control,
                "--policy",
                &control,
                "--upstream-http2-keepalive-interval",
                "500ms",
                "--upstream-http2-keepalive-timeout",
                "1s",
                "--connect-timeout",
                "1s",
                "--request-timeout",
                "8s",
            ]),
        )
        .await;
    for p in [&a, &b, &client] {
        ready(p).await;
    }
    // Both replicas have answered: the client holds a connection to each.
    for i in 0..300 {
        if app_a.received.load(Ordering::SeqCst) > 0 && app_b.received.load(Ordering::SeqCst) > 0 {
            break;
        }
        let r = send_h1(client.outbound, get("/", "frozen.test")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "warm-up GET #{i}: {:?}", proxy_error(&r));
    }
    assert!(app_b.received.load(Ordering::SeqCst) > 0, "replica b answered none of 300 GETs");

    // GETs in flight on both replicas (the balancer spreads them by their
    // requests in flight), then b's sidecar frozen while its app answers.
    let in_flight: Vec<_> = (0..8).map(|_| tokio::spawn(send_h1(client.outbound, get("/delay/1500", "frozen.test")))).collect();
    eventually("a GET in flight at replica b", || async { (app_b.in_flight.load(Ordering::SeqCst) > 0).then_some(()) }).await;
    signal(&b, nix::sys::signal::Signal::SIGSTOP);
    let at_a = app_a.received.load(Ordering::SeqCst);
    for (i, sent) in in_flight.into_iter().enumerate() {
        let r = sent.await.unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET #{i} in flight during the freeze: {:?}", proxy_error(&r));
    }
    assert!(app_a.received.load(Ordering::SeqCst) > at_a, "the GETs stuck at the frozen replica were sent to a");
    // And the GETs after it, the sidecar still frozen.
    for i in 0..10 {
        let r = send_h1(client.outbound, get("/", "frozen.test")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET #{i} after the freeze: {:?}", proxy_error(&r));
    }
    signal(&b, nix::sys::signal::Signal::SIGCONT);
    cp.stop().await;
}
