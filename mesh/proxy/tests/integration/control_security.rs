//! The proxy's channel to the control plane, through the real binaries:
//! tokens only inside TLS, a control plane of another root or under
//! another name refused, certificates from another root refused while the
//! current one stays in use.

use crate::{common::*, control_support::*, mesh_support::*};

/// The proxy's log, once it contains `needle`.
async fn log_with(path: &std::path::Path, needle: &str) -> String {
    eventually(&format!("proxy log mentions {needle:?}"), || async {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        log.contains(needle).then_some(log)
    })
    .await
}

async fn not_ready(p: &Proxy) {
    let (status, _) = p.admin_get("/ready").await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE, "/ready without a certificate");
}

#[tokio::test]
async fn the_bootstrap_token_reaches_mesh_control_only_inside_tls() {
    let web = sa("web");
    let m = MeshDir::new(&[&web]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let relay = Relay::start(cp.addr).await;
    let proxy = m.proxy("web", &web, relay.addr, &[]).await;
    ready(&proxy).await;
    let bytes = relay.bytes.lock().unwrap().clone();
    // Each direction opens with a TLS handshake record (type 22, version 3.x).
    assert!(bytes.len() > 5 && bytes[0] == 0x16 && bytes[1] == 0x03, "no TLS handshake: {:02x?}", &bytes[..bytes.len().min(8)]);
    let token = std::fs::read(m.path(&format!("token.{}", web.rsplit('/').next().unwrap()))).unwrap();
    assert!(!relay.saw(&token), "the bootstrap token crossed the wire in clear");
    assert!(!relay.saw(b"PRI * HTTP/2.0"), "plaintext HTTP/2 on the control channel");
    assert!(!relay.saw(web.as_bytes()), "the identity crossed the wire in clear");
}

#[tokio::test]
async fn a_control_plane_of_another_root_or_name_is_refused() {
    let web = sa("web");
    let m = MeshDir::new(&[&web]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    // Another mesh's control plane (its own CA) where ours should be.
    let other = MeshDir::new(&[&web]);
    let rogue = other.control("127.0.0.1:0", "1h").await;
    let to_rogue = m.proxy("to-rogue", &web, rogue.addr, &[]).await;
    // Ours, expected under another name.
    let renamed =
        m.proxy("renamed", &web, cp.addr, &args(&["--control-identity", "spiffe://cluster.local/ns/weft/sa/impostor"])).await;
    let log = log_with(&m.path("to-rogue.log"), "certification failed").await;
    assert!(log.contains("invalid peer certificate"), "{log}");
    let log = log_with(&m.path("renamed.log"), "certification failed").await;
    assert!(
        log.contains("expected spiffe://cluster.local/ns/weft/sa/impostor")
            && log.contains("is spiffe://cluster.local/ns/weft/sa/mesh-control"),
        "{log}"
    );
    for p in [&to_rogue, &renamed] {
        not_ready(p).await;
    }
    for log in [std::fs::read_dir(m.dir.path()).unwrap(), std::fs::read_dir(other.dir.path()).unwrap()]
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("control."))
        .map(|p| std::fs::read_to_string(p).unwrap())
    {
        assert!(!log.contains("refused certification") && !log.contains("issued certificate"), "a Certify got through:\n{log}");
    }
}

#[tokio::test]
async fn a_certificate_from_another_root_is_refused_and_the_current_one_kept() {
    let web = sa("web");
    let m = MeshDir::new(&[&web]);
    // Short certificates: the first renewal comes ~3 s after the first.
    let cp = m.control("127.0.0.1:0", "4s").await;
    let switch = Switch::start(cp.addr).await;
    let proxy = m.proxy("web", &web, switch.addr, &[]).await;
    ready(&proxy).await;
    let first = serials(&std::fs::read_to_string(m.path("web.log")).unwrap());
    assert_eq!(first.len(), 1, "{first:?}");
    // A control plane our anchors accept (mesh-control's issuer signed its
    // certificate), but that issues workload certificates from another root.
    let other = TestCa::new("another root");
    let router = tonic::transport::Server::builder().add_service(IssuesFrom::new(other.data()));
    let (rogue, _server) = serve_tls(router, control_tls(&m.path("data"), &control_id())).await;
    switch.switch_to(rogue);
    let log = log_with(&m.path("web.log"), "issued certificate is not trusted").await;
    assert!(log.contains("keeping_serial"), "{log}");
    assert_eq!(serials(&log), first, "a certificate from another root was installed");
    let (status, _) = proxy.admin_get("/ready").await;
    assert_eq!(status, http::StatusCode::OK, "still serving with the previous certificate");
}
