//! Protocol detection: what the app sends arrives as it was sent, through
//! both sidecars (over mTLS: the server sees the client's identity).

use std::time::{Duration, Instant};

use super::{fail, op_verdict};
use crate::conformance::expect;
use crate::conformance::routing::test;
use crate::conformance::topology::{self, svc, CLIENT, GRPC, HTTP, NS};
use crate::conformance::{run, Test, Verdict};
use crate::substrate::cluster::apps::{banner, greeting};
use crate::substrate::cluster::{
    identity, AppKind, Cluster, ClusterSpec, OpError, PortSpec, Proto, Req, ServiceSpec, To,
    WorkloadSpec,
};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshProtocolDetection",
            None,
            "HTTP/1.1, h2c (prior knowledge) and gRPC each reach the app through both sidecars in their own protocol, over mTLS (the app sees the client's identity)",
            topology::base,
            detection
        ),
        test!(
            "MeshWebSocket",
            None,
            "a WebSocket upgrade through both sidecars: 101, the app saw the client's mTLS identity on the upgrade, 5 text and a 64 KiB binary message echoed",
            websocket_topology,
            websocket
        ),
        test!(
            "MeshOpaqueTCP",
            None,
            "a client-speaks-first protocol that is not HTTP (a Service port with appProtocol tcp): a line and 256 KiB of every byte value echoed through both sidecars",
            tcp_topology,
            opaque_tcp
        ),
        test!(
            "MeshServerSpeaksFirst",
            None,
            "a server-speaks-first protocol on port 3306 (a default opaque port): the banner arrives within 500 ms (a proxy waiting 1 s to detect the client's protocol would miss it), then bytes are echoed, through both sidecars",
            tcp_topology,
            server_first
        ),
    ]
}

async fn detection(c: &Cluster) -> Verdict {
    let id = identity(NS, "client");
    let cases = [
        ("HTTP/1.1", Req::get("/proto"), HTTP, "HTTP/1.1"),
        ("h2c", Req::get("/proto").proto(Proto::H2c), HTTP, "HTTP/2.0"),
        ("gRPC", Req::grpc("weft.Echo", "Proto"), GRPC, "HTTP/2.0"),
    ];
    for (name, req, port, want_proto) in cases {
        let deadline = Instant::now() + run::patience();
        loop {
            let r = match c.send(CLIENT, &svc("echo-v1", port), &req).await {
                Ok(r) => r,
                Err(e) => return expect::dial_verdict(name, e),
            };
            let grpc_ok = req.proto != Proto::Grpc || r.grpc_status == Some(0);
            let seen = r.echo.as_ref().map(|e| (e.proto.clone(), e.header("weft-client-id").map(str::to_string)));
            let good = r.error.is_none()
                && r.status == 200
                && grpc_ok
                && seen.as_ref().is_some_and(|(p, who)| p == want_proto && who.as_deref() == Some(id.as_str()));
            if good {
                break;
            }
            if Instant::now() >= deadline {
                return fail(
                    format!("{name}: {} from {CLIENT} to echo-v1:{port}", req.describe()),
                    format!("200{} from echo-v1, whose app saw {want_proto} from {id}", if req.proto == Proto::Grpc { " grpc-status 0" } else { "" }),
                    match seen {
                        Some((p, who)) => format!("{}; the app saw {p} from {}", r.describe(), who.unwrap_or_else(|| "no weft-client-id".into())),
                        None => r.describe(),
                    },
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Verdict::Pass
}

/// The WebSocket workload's pod, behind Service `ws`.
const WS_POD: &str = "ws-0";
const WS_MESSAGES: usize = 5;
const WS_BINARY: usize = 64 * 1024;

fn websocket_topology() -> ClusterSpec {
    let mut spec = topology::base();
    spec.workloads.push(WorkloadSpec {
        name: "ws".into(),
        namespace: NS.into(),
        service_account: "ws".into(),
        replicas: 1,
        meshed: true,
        app: AppKind::WebSocket,
    });
    spec.services.push(ServiceSpec {
        name: "ws".into(),
        namespace: NS.into(),
        ports: vec![PortSpec {
            name: "http".into(),
            port: HTTP,
            target_port: 8080,
            app_protocol: Some("http".into()),
        }],
        selects: vec!["ws".into()],
    });
    spec
}

async fn websocket(c: &Cluster) -> Verdict {
    let to = svc("ws", HTTP);
    if let Err(v) = super::warm(c, CLIENT, &to).await {
        return v;
    }
    let id = identity(NS, "client");
    let want = greeting(WS_POD, Some(&id));
    let deadline = Instant::now() + run::patience();
    loop {
        let s = match c.websocket(CLIENT, &to, "/chat", WS_MESSAGES, WS_BINARY).await {
            Ok(s) => s,
            Err(e) => return expect::dial_verdict("websocket", e),
        };
        if s.error.is_none() && s.greeting == want && s.echoed == WS_MESSAGES + 1 {
            return Verdict::Pass;
        }
        if Instant::now() >= deadline {
            return fail(
                format!("a WebSocket session ws://ws.{NS}.svc.cluster.local:{HTTP}/chat from {CLIENT}"),
                format!("101, the greeting {want:?}, {WS_MESSAGES} text and one {WS_BINARY}-byte binary message echoed"),
                format!(
                    "greeting {:?}, {} echoed{}",
                    s.greeting,
                    s.echoed,
                    s.error.map(|e| format!(", then: {e}")).unwrap_or_default()
                ),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Opaque TCP: a client-speaks-first protocol that is not HTTP.
const TCP_PORT: u16 = 9000;
/// A server-speaks-first protocol on MySQL's port (in the proxies' default
/// opaque ports: no detection wait on a transparent outbound).
const BANNER_PORT: u16 = 3306;
/// How long the banner may take through both sidecars: half of the
/// detection timeout (1 s) a proxy waiting for the client would add.
const BANNER_BOUND: Duration = Duration::from_millis(500);

fn tcp_topology() -> ClusterSpec {
    let mut spec = topology::base();
    for (name, kind, port, proto) in [
        ("tcp-echo", AppKind::TcpEcho, TCP_PORT, Some("tcp")),
        ("banner", AppKind::Banner, BANNER_PORT, None),
    ] {
        spec.workloads.push(WorkloadSpec {
            name: name.into(),
            namespace: NS.into(),
            service_account: name.into(),
            replicas: 1,
            meshed: true,
            app: kind,
        });
        spec.services.push(ServiceSpec {
            name: name.into(),
            namespace: NS.into(),
            ports: vec![PortSpec {
                name: "tcp".into(),
                port,
                target_port: port,
                app_protocol: proto.map(str::to_string),
            }],
            selects: vec![name.into()],
        });
    }
    spec
}

/// Connections pod `pod`'s sidecar accepted inbound.
async fn inbound_connections(c: &Cluster, pod: &str) -> Result<f64, OpError> {
    c.metric(pod, "weft_connections", &["direction=\"inbound\""]).await
}

/// Payload sizes: a line and 256 KiB of every byte value.
fn payloads() -> Vec<Vec<u8>> {
    vec![
        b"not http, just bytes\n".to_vec(),
        (0..256 * 1024).map(|i| (i % 256) as u8).collect(),
    ]
}

/// Wait until a session from [`CLIENT`] to `to` echoes (the sidecar learns
/// a Service on its first connection for it); the last session otherwise.
async fn warm_tcp(c: &Cluster, to: &To, server_first: bool) -> Result<(), Verdict> {
    let deadline = Instant::now() + run::patience();
    loop {
        let s = match c.tcp(CLIENT, to, server_first, b"warm-up\n").await {
            Ok(s) => s,
            Err(e) => return Err(expect::dial_verdict("warm-up", e)),
        };
        if s.echoed && s.error.is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail(
                format!("a raw TCP session from {CLIENT} to {to}"),
                format!("bytes echoed within {:?}", run::patience()),
                s.error.unwrap_or_else(|| "different bytes came back".into()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn opaque_tcp(c: &Cluster) -> Verdict {
    let to = To::service("tcp-echo", NS, TCP_PORT);
    if let Err(v) = warm_tcp(c, &to, false).await {
        return v;
    }
    let before = match inbound_connections(c, "tcp-echo-0").await {
        Ok(n) => n,
        Err(e) => return op_verdict(c, "read tcp-echo-0's sidecar metrics", e),
    };
    for payload in payloads() {
        let s = match c.tcp(CLIENT, &to, false, &payload).await {
            Ok(s) => s,
            Err(e) => return expect::dial_verdict("opaque TCP", e),
        };
        if !s.echoed || s.error.is_some() {
            return fail(
                format!("{} bytes over raw TCP from {CLIENT} to {to}", payload.len()),
                "every byte echoed back by tcp-echo-0's app",
                s.error.unwrap_or_else(|| "different bytes came back".into()),
            );
        }
    }
    through_the_mesh(c, "tcp-echo-0", before, 2).await
}

/// Pod `pod`'s sidecar accepted at least `n` more connections than
/// `before`: the sessions went through the mesh, not around it.
async fn through_the_mesh(c: &Cluster, pod: &str, before: f64, n: usize) -> Verdict {
    match super::settled_metric(c, pod, "weft_connections", &["direction=\"inbound\""]).await {
        Ok(after) if after - before >= n as f64 => Verdict::Pass,
        Ok(after) => fail(
            format!("{n} TCP sessions to pod {pod}"),
            format!("its sidecar accepted them (weft_connections_total inbound up by {n})"),
            format!("up by {}", after - before),
        ),
        Err(e) => op_verdict(c, &format!("read {pod}'s sidecar metrics"), e),
    }
}

async fn server_first(c: &Cluster) -> Verdict {
    let to = To::service("banner", NS, BANNER_PORT);
    if let Err(v) = warm_tcp(c, &to, true).await {
        return v;
    }
    let before = match inbound_connections(c, "banner-0").await {
        Ok(n) => n,
        Err(e) => return op_verdict(c, "read banner-0's sidecar metrics", e),
    };
    let want = banner("banner-0");
    for payload in payloads() {
        let s = match c.tcp(CLIENT, &to, true, &payload).await {
            Ok(s) => s,
            Err(e) => return expect::dial_verdict("server speaks first", e),
        };
        let in_time = s.banner_after.is_some_and(|d| d <= BANNER_BOUND);
        if s.banner.as_deref() != Some(want.as_str()) || !in_time || !s.echoed || s.error.is_some() {
            return fail(
                format!("a client of {to} from {CLIENT} that waits for the server's banner, then sends {} bytes", payload.len()),
                format!("the banner {want:?} within {BANNER_BOUND:?} of connecting, then the bytes echoed"),
                format!(
                    "banner {:?} after {:?}, echoed: {}{}",
                    s.banner,
                    s.banner_after,
                    s.echoed,
                    s.error.map(|e| format!(", {e}")).unwrap_or_default()
                ),
            );
        }
    }
    through_the_mesh(c, "banner-0", before, 2).await
}
