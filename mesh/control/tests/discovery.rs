//! The real `mesh-control --manifests DIR` binary, through tonic clients:
//! Destination.Get streams the initial set and then edits of the directory;
//! Policy.WatchOutbound serves a weighted HTTPRoute; WatchInbound follows a
//! namespace's default.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use mesh_api::destination::v1::destination_client::DestinationClient;
use mesh_api::destination::v1::{update::Update as U, GetDestination, ProtocolHint};
use mesh_api::policy::v1::policy_client::PolicyClient;
use mesh_api::policy::v1::{inbound_port, DefaultPolicy, InboundPort, OutboundTarget};
use support::{eventually, patience, ControlPlane, Fixture};
use tonic::Streaming;

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn web(addrs: &[&str]) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("- addresses: [{a}]\n  targetRef: {{kind: Pod, name: web-{}}}", a.rsplit('.').next().unwrap()))
        .collect();
    let pods: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-{}, namespace: shop}}\nspec: {{serviceAccountName: web, containers: [{{name: app}}, {{name: weft-proxy}}]}}\nstatus: {{podIP: {a}}}\n",
                a.rsplit('.').next().unwrap()
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{clusterIP: 198.19.0.10, ports: [{{name: http, port: 80, appProtocol: http}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
{}
{}",
        eps.join("\n"),
        pods.join("")
    )
}

const SPLIT: &str = "apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {clusterIP: 198.19.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
    timeouts: {request: 5s}
";

fn addr_of(a: &mesh_api::destination::v1::SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = match a.ip.len() {
        4 => <[u8; 4]>::try_from(a.ip.as_slice()).unwrap().into(),
        _ => <[u8; 16]>::try_from(a.ip.as_slice()).unwrap().into(),
    };
    SocketAddr::new(ip, a.port as u16)
}

async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(patience(), stream.message())
        .await
        .expect("no update within the patience")
        .expect("stream error")
        .expect("stream ended")
}

async fn start(manifests: &Path, fixture: &Fixture) -> ControlPlane {
    let data = fixture.data_dir();
    ControlPlane::start(
        &fixture.logs(),
        "127.0.0.1:0",
        // An hour's poll: edits reach streams through the directory's notifications.
        &["--data-dir", data.to_str().unwrap(), "--manifests", manifests.to_str().unwrap(), "--manifests-poll", "1h"],
    )
    .await
}

#[tokio::test]
async fn destination_streams_the_set_then_directory_edits() {
    let fixture = Fixture::new();
    let manifests = fixture.dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write(&manifests, "web.yaml", &web(&["198.18.0.1", "198.18.0.2"]));
    let cp = start(&manifests, &fixture).await;
    let mut client = DestinationClient::new(cp.channel());

    let get =
        |authority: &str| GetDestination { authority: authority.into(), context_token: r#"{"ns":"test"}"#.into() };
    let mut stream = client.get(get("web.shop.svc.cluster.local:80")).await.unwrap().into_inner();
    let Some(U::Add(first)) = next(&mut stream).await.update else { panic!("first message must be the full set") };
    let mut addrs: Vec<SocketAddr> = first.endpoints.iter().map(|e| addr_of(e.addr.as_ref().unwrap())).collect();
    addrs.sort();
    assert_eq!(addrs, ["198.18.0.1:8080".parse().unwrap(), "198.18.0.2:8080".parse::<SocketAddr>().unwrap()]);
    for e in &first.endpoints {
        assert_eq!(e.identity, "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(e.protocol_hint, ProtocolHint::H2 as i32);
        assert_eq!(e.weight, 10_000);
        assert_eq!(e.labels["service"], "web");
    }

    // Remove 198.18.0.2, add 198.18.0.3: a Remove then an Add.
    write(&manifests, "web.yaml", &web(&["198.18.0.1", "198.18.0.3"]));
    let Some(U::Remove(removed)) = next(&mut stream).await.update else { panic!("expected a Remove") };
    assert_eq!(
        removed.addrs.iter().map(addr_of).collect::<Vec<_>>(),
        ["198.18.0.2:8080".parse::<SocketAddr>().unwrap()]
    );
    let Some(U::Add(added)) = next(&mut stream).await.update else { panic!("expected an Add") };
    let added: Vec<_> = added.endpoints.iter().map(|e| addr_of(e.addr.as_ref().unwrap())).collect();
    assert_eq!(added, ["198.18.0.3:8080".parse::<SocketAddr>().unwrap()]);

    // The ClusterIP resolves to the same Service.
    let mut by_ip = client.get(get("198.19.0.10:80")).await.unwrap().into_inner();
    let Some(U::Add(set)) = next(&mut by_ip).await.update else { panic!() };
    assert_eq!(set.endpoints.len(), 2);

    // Unknown authority: NoEndpoints{exists:false}, then it appears.
    let mut later = client.get(get("web-v2.shop:80")).await.unwrap().into_inner();
    assert_eq!(
        next(&mut later).await.update,
        Some(U::NoEndpoints(mesh_api::destination::v1::NoEndpoints { exists: false }))
    );
    write(&manifests, "split.yaml", SPLIT);
    assert_eq!(
        next(&mut later).await.update,
        Some(U::NoEndpoints(mesh_api::destination::v1::NoEndpoints { exists: true }))
    );

    // Deleting the file empties the Service's set.
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    let update = next(&mut stream).await.update;
    assert_eq!(update, Some(U::NoEndpoints(mesh_api::destination::v1::NoEndpoints { exists: false })));

    // A malformed authority is refused.
    let err = client.get(get("web.shop")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(cp.stop().await.success());
}

#[tokio::test]
async fn policy_serves_weighted_routes_and_inbound_defaults() {
    let fixture = Fixture::new();
    let manifests = fixture.dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write(&manifests, "web.yaml", &web(&["198.18.0.1"]));
    write(&manifests, "split.yaml", SPLIT);
    let cp = start(&manifests, &fixture).await;
    let mut client = PolicyClient::new(cp.channel());

    let target = OutboundTarget { authority: "web.shop:80".into(), context_token: String::new() };
    let mut outbound = client.watch_outbound(target).await.unwrap().into_inner();
    let policy = next(&mut outbound).await;
    assert!(policy.exists);
    assert_eq!(policy.service.as_ref().unwrap().authority, "web.shop.svc.cluster.local:80");
    assert_eq!(policy.protocol, mesh_api::policy::v1::Protocol::Http1 as i32);
    assert_eq!(policy.failure_accrual.as_ref().unwrap().consecutive_failures, 7);
    let rule = &policy.http_routes[0].rules[0];
    let backends: Vec<(String, u32, String)> = rule
        .backends
        .iter()
        .map(|b| {
            let be = b.backend.as_ref().unwrap();
            (be.authority.clone(), b.weight, be.invalid.clone())
        })
        .collect();
    assert_eq!(
        backends,
        [
            ("web.shop.svc.cluster.local:80".to_owned(), 90, String::new()),
            ("web-v2.shop.svc.cluster.local:80".to_owned(), 10, String::new())
        ]
    );
    assert_eq!(rule.timeouts.as_ref().unwrap().request_ms, 5_000);

    // Removing the route streams a policy without it.
    std::fs::remove_file(manifests.join("split.yaml")).unwrap();
    let policy = next(&mut outbound).await;
    assert!(policy.exists && policy.http_routes.is_empty());

    // Inbound: default allow, then a namespace default deny.
    let port = InboundPort {
        workload: Some(inbound_port::Workload::Identity("spiffe://cluster.local/ns/shop/sa/web".into())),
        port: 8080,
    };
    let mut inbound = client.watch_inbound(port).await.unwrap().into_inner();
    let p = next(&mut inbound).await;
    assert_eq!(p.default_policy, DefaultPolicy::AllUnauthenticated as i32);
    assert!(!p.explicit && p.authorizations.len() == 1 && p.authorizations[0].allow_plaintext);
    assert_eq!(p.services, ["web.shop.svc.cluster.local:80"]);
    write(
        &manifests,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {weft.io/default-inbound-policy: deny}}\n",
    );
    let p = next(&mut inbound).await;
    assert_eq!(p.default_policy, DefaultPolicy::Deny as i32);
    assert!(p.authorizations.is_empty());

    // Then an explicit policy.
    write(
        &manifests,
        "authz.yaml",
        "apiVersion: policy.weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: front, namespace: shop}\nspec:\n  targetRef: {kind: Service, name: web}\n  from: {namespaces: [front]}\n",
    );
    let p = next(&mut inbound).await;
    assert!(p.explicit);
    assert_eq!(p.authorizations[0].namespaces, ["front"]);
    assert_eq!(p.authorizations[0].meta.as_ref().unwrap().name, "front");

    let err = client.watch_inbound(InboundPort { workload: None, port: 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(cp.stop().await.success());
}

#[tokio::test]
async fn config_errors_exit_64_and_crd_prints() {
    let fixture = Fixture::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-control"))
        .args([
            "--data-dir",
            fixture.data_dir().to_str().unwrap(),
            "--manifests",
            "/nonexistent/weft",
            "--cluster-domain",
            "bad domain",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--manifests /nonexistent/weft: not a directory"), "{stderr}");
    assert!(stderr.contains("--cluster-domain \"bad domain\""), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-control")).arg("crd").output().unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("kind: CustomResourceDefinition") && yaml.contains("name: authorizationpolicies.policy.weft.io"),
        "{yaml}"
    );
    assert!(yaml.contains("x-kubernetes-int-or-string: true"), "{yaml}");
}

/// The last `discovery: N open watch streams, M watched lookups` line, as (N, M).
fn watch_counts(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr.lines().rev().find(|l| l.contains("open watch streams"))?;
    let mut words = line.split("discovery: ").nth(1)?.split_whitespace();
    let open = words.next()?.parse().ok()?;
    let watches = words.nth(3)?.parse().ok()?;
    Some((open, watches))
}

async fn counts_become(cp: &ControlPlane, what: &str, want: (u64, u64)) {
    eventually(&format!("{what}: mesh-control logs {want:?}"), || async {
        (watch_counts(&cp.stderr()) == Some(want)).then_some(())
    })
    .await;
}

/// Streams for authorities nobody knows hold state only while open: once
/// the client cancels them, mesh-control forgets their lookups (no write
/// to the index needed), and says so in its log.
#[tokio::test]
async fn closed_streams_free_their_watches() {
    let fixture = Fixture::new();
    let manifests = fixture.dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write(&manifests, "web.yaml", &web(&["198.18.0.1"]));
    let cp = start(&manifests, &fixture).await;
    let mut destination = DestinationClient::new(cp.channel());
    let mut policy = PolicyClient::new(cp.channel());
    let mut streams = Vec::new();
    for i in 0..100 {
        let authority = format!("unknown-{i}.nowhere.svc.cluster.local:80");
        let mut d = destination
            .get(GetDestination { authority: authority.clone(), context_token: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            next(&mut d).await.update,
            Some(U::NoEndpoints(mesh_api::destination::v1::NoEndpoints { exists: false }))
        );
        let mut p = policy.watch_outbound(OutboundTarget { authority, context_token: String::new() }).await.unwrap().into_inner();
        next(&mut p).await;
        streams.push((d, p));
    }
    counts_become(&cp, "200 streams open, 200 lookups", (200, 200)).await;
    // Dropping a tonic stream cancels it (RST_STREAM): the server drops its watch.
    streams.truncate(10);
    counts_become(&cp, "90 streams cancelled", (20, 20)).await;
    drop(streams);
    counts_become(&cp, "every stream cancelled", (0, 0)).await;
    assert!(cp.stop().await.success());
}

/// The value of the exposition line `series` (name and labels as printed), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` on the real binary counts Certify calls and certificates by
/// outcome, watch streams while open and by final code once closed, the
/// index's sizes, and one propagation sample per stream and write.
#[tokio::test]
async fn admin_metrics_count_calls_streams_certificates_and_propagation() {
    use mesh_api::identity::v1::identity_client::IdentityClient;
    use mesh_api::identity::v1::CertifyRequest;
    use support::{token_for, workload, TD};

    let fixture = Fixture::new();
    let manifests = fixture.dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write(&manifests, "web.yaml", &web(&["198.18.0.1", "198.18.0.2"]));
    let web_id = workload("web");
    fixture.write_tokens(&[&web_id]);
    let (data, tokens) = (fixture.data_dir(), fixture.tokens_path());
    let cp = ControlPlane::start(
        &fixture.logs(),
        "127.0.0.1:0",
        &[
            "--data-dir", data.to_str().unwrap(),
            "--bootstrap-tokens", tokens.to_str().unwrap(),
            "--trust-domain", TD,
            "--manifests", manifests.to_str().unwrap(),
            "--manifests-poll", "50ms",
            "--admin-listen", "127.0.0.1:0",
        ],
    )
    .await;

    // Certify: two issued, one wrong token, one malformed CSR.
    let key = mesh_identity::WorkloadKey::generate().unwrap();
    let mut identity = IdentityClient::new(cp.channel());
    let request = |token: String, csr_der: Vec<u8>| CertifyRequest {
        identity: web_id.to_string(),
        token: token.into_bytes(),
        csr_der,
    };
    for _ in 0..2 {
        identity.certify(request(token_for(&web_id), key.csr_der(&web_id).unwrap())).await.unwrap();
    }
    let denied = identity.certify(request("token-nope".into(), key.csr_der(&web_id).unwrap())).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let invalid = identity.certify(request(token_for(&web_id), b"not DER".to_vec())).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    // One Destination and one outbound Policy stream, then one edit.
    let mut destinations = DestinationClient::new(cp.channel());
    let get = GetDestination { authority: "web.shop.svc.cluster.local:80".into(), context_token: String::new() };
    let mut stream = destinations.get(get).await.unwrap().into_inner();
    assert!(matches!(next(&mut stream).await.update, Some(U::Add(_))));
    let target = OutboundTarget { authority: "web.shop:80".into(), context_token: String::new() };
    let mut outbound = PolicyClient::new(cp.channel()).watch_outbound(target).await.unwrap().into_inner();
    assert!(next(&mut outbound).await.exists);
    write(&manifests, "web.yaml", &web(&["198.18.0.1", "198.18.0.3"]));
    assert!(matches!(next(&mut stream).await.update, Some(U::Remove(_))));
    assert!(matches!(next(&mut stream).await.update, Some(U::Add(_))));

    let certify = "weft_control_grpc_requests_total{method=\"weft.identity.v1.Identity/Certify\"";
    let open = |m: &str| format!("weft_control_grpc_streams{{method=\"weft.{m}\"}}");
    let (status, text) = cp.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for (series, want) in [
        (format!("{certify},code=\"OK\"}}"), 2.0),
        (format!("{certify},code=\"PermissionDenied\"}}"), 1.0),
        (format!("{certify},code=\"InvalidArgument\"}}"), 1.0),
        ("weft_control_certificates_issued_total".to_owned(), 2.0),
        ("weft_control_certificates_refused_total{reason=\"token_mismatch\"}".to_owned(), 1.0),
        ("weft_control_certificates_refused_total{reason=\"invalid_csr\"}".to_owned(), 1.0),
        (open("destination.v1.Destination/Get"), 1.0),
        (open("policy.v1.Policy/WatchOutbound"), 1.0),
        ("weft_control_index_services".to_owned(), 1.0),
        ("weft_control_index_endpoints".to_owned(), 2.0),
        ("weft_control_index_policies".to_owned(), 0.0),
        // The edit changed the endpoint set, not web's outbound policy: one
        // stream answered one write.
        ("weft_control_propagation_seconds_count".to_owned(), 1.0),
    ] {
        assert_eq!(metric(&text, &series), Some(want), "{series} in\n{text}");
    }
    assert!(metric(&text, "process_resident_memory_bytes").is_some_and(|b| b > 0.0), "{text}");
    assert!(metric(&text, "process_cpu_seconds_total").is_some(), "{text}");

    // Closing the streams: the gauges go back to 0 and each call is counted once, as cancelled.
    drop((stream, outbound));
    let text = eventually("the closed streams counted", || async {
        let (_, text) = cp.admin_get("/metrics").await;
        (metric(&text, &open("destination.v1.Destination/Get")) == Some(0.0)
            && metric(&text, &open("policy.v1.Policy/WatchOutbound")) == Some(0.0))
        .then_some(text)
    })
    .await;
    for method in ["destination.v1.Destination/Get", "policy.v1.Policy/WatchOutbound"] {
        let series = format!("weft_control_grpc_requests_total{{method=\"weft.{method}\",code=\"Cancelled\"}}");
        assert_eq!(metric(&text, &series), Some(1.0), "{series} in\n{text}");
    }
    assert!(cp.stop().await.success());
}

/// The propagation harness's Kubernetes backend (its fake API server's
/// EndpointSlice watch) through the real binary, at a small scale: every
/// MODIFIED event reaches the watching stream. (The manifests backend's
/// run is suites/tests/discovery.rs's.)
#[tokio::test]
async fn the_propagation_harness_follows_a_kubernetes_watch() {
    use mesh_control::propagation::{measure, Backend, PropagationConfig};
    let mut cfg = PropagationConfig::new(env!("CARGO_BIN_EXE_mesh-control"));
    cfg.backend = Backend::Kubernetes;
    cfg.services = 20;
    cfg.changes = 3;
    cfg.poll = std::time::Duration::from_millis(10);
    cfg.patience = patience();
    let report = measure(&cfg).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.services, report.endpoints, report.samples.len()), (20, 40, 3), "{report}");
    assert!(report.rss_kib > 0, "{report}");
}
