//! The control plane's own security, through the real `mesh-control`
//! binary: TLS only, with its own SPIFFE identity from its CA; tokens never
//! on the wire in clear; clients refuse a control plane (or the
//! certificates it issues) from another root; Certify's rate limits and
//! one answer for every unproven caller; HTTP/2 stream limits.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_api::identity::v1::identity_client::IdentityClient;
use mesh_api::identity::v1::identity_server::{Identity, IdentityServer};
use mesh_api::identity::v1::{CertifyRequest, CertifyResponse};
use mesh_control::ca::Ca;
use mesh_control::tls::OwnCertificate;
use mesh_identity::{
    control_client_config, control_identity, control_incoming, ControlEndpoint, ListenerLimits, SpiffeId, TrustAnchors,
    WorkloadKey,
};
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Copies bytes both ways between clients and `target`, keeping a copy of
/// everything the clients sent.
struct Relay {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&sent);
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = cr.read(&mut buf).await {
                            record.lock().unwrap().extend_from_slice(&buf[..n]);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self { addr, sent, connections, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_token_crosses_the_wire_only_inside_tls() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let cp = fx.start("127.0.0.1:0", "1h").await;
    let relay = Relay::start(cp.addr).await;
    let certifier = certifier(control_endpoint(relay.addr, cp.anchors()), &web);
    tokio::time::timeout(patience(), certifier.ready()).await.expect("certified through the relay");
    let sent = relay.sent();
    // A TLS handshake record (content type 22, legacy version 3.x) opens the stream.
    assert!(sent.len() > 5 && sent[0] == 0x16 && sent[1] == 0x03, "no TLS ClientHello: {:02x?}", &sent[..sent.len().min(16)]);
    assert!(!contains(&sent, token_for(&web).as_bytes()), "the bootstrap token crossed the wire in clear");
    assert!(!contains(&sent, b"PRI * HTTP/2.0"), "a plaintext HTTP/2 preface crossed the wire");
    assert!(!contains(&sent, web.as_str().as_bytes()), "the identity crossed the wire in clear");
}

#[tokio::test]
async fn plaintext_grpc_gets_no_answer() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let cp = fx.start("127.0.0.1:0", "1h").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.addr))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let key = WorkloadKey::generate().unwrap();
    let request = CertifyRequest {
        identity: web.to_string(),
        token: token_for(&web).into_bytes(),
        csr_der: key.csr_der(&web).unwrap(),
    };
    let refused = IdentityClient::new(channel).certify(request).await.expect_err("plaintext h2c must fail");
    assert_ne!(refused.code(), tonic::Code::Ok);
    assert!(!cp.stderr().contains("issued certificate"), "{}", cp.stderr());
}

#[tokio::test]
async fn a_control_plane_from_another_root_or_with_another_identity_is_refused() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let cp = fx.start("127.0.0.1:0", "1h").await;
    // Another mesh-control (own CA) answering where ours should be.
    let other = Fixture::new();
    other.write_tokens(&[&web]);
    let rogue = other.start("127.0.0.1:0", "1h").await;

    let (via_rogue, via_ours) = (Relay::start(rogue.addr).await, Relay::start(cp.addr).await);
    let to_rogue = certifier(control_endpoint(via_rogue.addr, cp.anchors()), &web);
    // Ours, but expected under another name.
    let renamed = SpiffeId::workload(TD, "weft", "not-mesh-control").unwrap();
    let wrong_name = certifier(ControlEndpoint::new(&via_ours.addr.to_string(), cp.anchors(), renamed).unwrap(), &web);
    // What the refusal looks like: the handshake error, as a client sees it.
    let tls = tokio_rustls::TlsConnector::from(Arc::new(control_client_config(&cp.anchors(), control_identity(TD).unwrap()).unwrap()));
    let err = tls
        .connect(ServerName::try_from("mesh-control").unwrap(), TcpStream::connect(rogue.addr).await.unwrap())
        .await
        .expect_err("another root");
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(
        control_client_config(&cp.anchors(), SpiffeId::workload(TD, "weft", "not-mesh-control").unwrap()).unwrap(),
    ));
    let err = tls
        .connect(ServerName::try_from("mesh-control").unwrap(), TcpStream::connect(cp.addr).await.unwrap())
        .await
        .expect_err("wrong identity");
    assert!(
        err.to_string().contains("is spiffe://cluster.local/ns/weft/sa/mesh-control, expected spiffe://cluster.local/ns/weft/sa/not-mesh-control"),
        "{err}"
    );
    // Both certifiers keep trying and never get a certificate; neither
    // control plane ever saw a Certify (the token stayed with us).
    eventually("both certifiers retried after refusing the server", || async {
        (via_rogue.connections() >= 3 && via_ours.connections() >= 3).then_some(())
    })
    .await;
    for relay in [&via_rogue, &via_ours] {
        assert!(!contains(&relay.sent(), token_for(&web).as_bytes()));
    }
    assert!(!to_rogue.is_ready() && !wrong_name.is_ready());
    for log in [cp.stderr(), rogue.stderr()] {
        assert!(!log.contains("refused certification") && !log.contains("issued certificate"), "{log}");
    }
}

/// An Identity service that answers with leaves from `good` until `rogue`
/// is set, then from `other` (another root), behind mesh-control's TLS
/// listener with a certificate from `good`.
struct TwoFaced {
    good: Arc<Ca>,
    other: Ca,
    rogue: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Identity for TwoFaced {
    async fn certify(&self, request: tonic::Request<CertifyRequest>) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = request.into_inner();
        let id = SpiffeId::parse(&r.identity).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let key = mesh_control::csr::check(&r.csr_der, &id).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let ca = if self.rogue.load(Ordering::SeqCst) { &self.other } else { &*self.good };
        let issued = ca
            .issue(&id, &key, Duration::from_secs(3), time::OffsetDateTime::now_utc())
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(CertifyResponse {
            leaf_der: issued.leaf_der,
            chain_der: issued.chain_der,
            valid_until_unix_ms: issued.not_after.unix_timestamp() * 1000,
        }))
    }
}

#[tokio::test]
async fn a_certificate_from_another_root_is_refused_and_the_current_one_kept() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let good = Arc::new(Ca::load_or_generate(a.path(), TD).unwrap());
    let other = Ca::load_or_generate(b.path(), TD).unwrap();
    let anchors = TrustAnchors::from_pem(TD, &std::fs::read(a.path().join("trust-anchor.pem")).unwrap()).unwrap();
    let own = OwnCertificate::start(Arc::clone(&good), control_identity(TD).unwrap(), Duration::from_secs(3600)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (rogue, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let service = TwoFaced { good, other, rogue: Arc::clone(&rogue), calls: Arc::clone(&calls) };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(service))
            .serve_with_incoming(control_incoming(listener, own.server_config().unwrap(), ListenerLimits::default())),
    );
    let web = workload("web");
    let certifier = certifier(control_endpoint(addr, anchors), &web);
    let first = tokio::time::timeout(patience(), certifier.ready()).await.expect("certified by the right root");
    rogue.store(true, Ordering::SeqCst);
    // 3 s certificates renew after ~2 s; wait for two refused renewals.
    let after = calls.load(Ordering::SeqCst);
    eventually("two renewals answered from another root", || {
        let n = calls.load(Ordering::SeqCst);
        async move { (n >= after + 2).then_some(()) }
    })
    .await;
    let current = certifier.current().expect("still certified");
    assert_eq!(current.serial(), first.serial(), "the certificate from another root was installed");
    server.abort();
}

#[tokio::test]
async fn unknown_identity_and_wrong_token_get_byte_identical_answers() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let cp = fx.start("127.0.0.1:0", "1h").await;
    let key = WorkloadKey::generate().unwrap();
    let ask = |id: SpiffeId, token: &'static str| {
        let (channel, csr) = (cp.channel(), key.csr_der(&id).unwrap());
        async move {
            IdentityClient::new(channel)
                .certify(CertifyRequest { identity: id.to_string(), token: token.into(), csr_der: csr })
                .await
                .expect_err("refused")
        }
    };
    let unknown = ask(workload("ghost"), "token-guess").await;
    let mismatch = ask(web.clone(), "token-guess").await;
    assert_eq!(unknown.code(), tonic::Code::PermissionDenied);
    assert_eq!((unknown.code(), unknown.message().as_bytes()), (mismatch.code(), mismatch.message().as_bytes()));
    assert_eq!(unknown.details(), mismatch.details());
    // The operator still sees which was which.
    let log = cp.stderr();
    assert!(log.contains("no bootstrap token is registered") && log.contains("token does not match"), "{log}");
}

#[tokio::test]
async fn a_certify_burst_beyond_the_buckets_is_resource_exhausted() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let data = fx.data_dir();
    let tokens = fx.tokens_path();
    let start = |extra: &'static [&'static str]| {
        let (data, tokens) = (data.clone(), tokens.clone());
        let logs = fx.logs();
        async move {
            let mut args = vec!["--data-dir", data.to_str().unwrap(), "--bootstrap-tokens", tokens.to_str().unwrap()];
            args.extend_from_slice(extra);
            ControlPlane::start(&logs, "127.0.0.1:0", &args).await
        }
    };
    let key = WorkloadKey::generate().unwrap();
    let burst = |cp: &ControlPlane, n: usize| {
        let channel = cp.channel();
        let (id, token, csr) = (web.to_string(), token_for(&web), key.csr_der(&web).unwrap());
        async move {
            let mut codes = Vec::new();
            for _ in 0..n {
                let request = CertifyRequest { identity: id.clone(), token: token.clone().into_bytes(), csr_der: csr.clone() };
                codes.push(match IdentityClient::new(channel.clone()).certify(request).await {
                    Ok(_) => Ok(()),
                    Err(s) => Err((s.code(), s.message().to_owned())),
                });
            }
            codes
        }
    };
    // One refill per 1000 s: nothing comes back while the test runs.
    let per_peer = start(&["--certify-peer-burst", "3", "--certify-peer-rate", "0.001"]).await;
    let codes = burst(&per_peer, 6).await;
    assert!(codes[..3].iter().all(Result::is_ok), "{codes:?}");
    for c in &codes[3..] {
        let Err((code, message)) = c else { panic!("{codes:?}") };
        assert_eq!(*code, tonic::Code::ResourceExhausted, "{codes:?}");
        assert!(message.contains("Certify rate limit exceeded for this client address"), "{message}");
    }
    let global = start(&["--certify-burst", "2", "--certify-rate", "0.001"]).await;
    let codes = burst(&global, 4).await;
    assert!(codes[..2].iter().all(Result::is_ok), "{codes:?}");
    for c in &codes[2..] {
        let Err((code, message)) = c else { panic!("{codes:?}") };
        assert_eq!(*code, tonic::Code::ResourceExhausted, "{codes:?}");
        assert!(message.contains("for all callers"), "{message}");
    }
    // Refused before anything else: no signing, no token check.
    assert_eq!(global.stderr().matches("issued certificate").count(), 2, "{}", global.stderr());
}

/// HTTP/2 frames by hand, ignoring what the server advertises.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One frame: (type, flags, stream, payload).
async fn read_frame(conn: &mut tokio_rustls::client::TlsStream<TcpStream>) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    conn.read_exact(&mut head).await.unwrap();
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.unwrap();
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    (head[3], head[4], stream, payload)
}

/// HPACK literals without indexing (no Huffman): enough for a request head.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let fx = Fixture::new();
    let data = fx.data_dir();
    let cp = ControlPlane::start(&fx.logs(), "127.0.0.1:0", &["--data-dir", data.to_str().unwrap(), "--max-concurrent-streams", "2"]).await;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(control_client_config(&cp.anchors(), control_identity(TD).unwrap()).unwrap()));
    let mut conn =
        tls.connect(ServerName::try_from("mesh-control").unwrap(), TcpStream::connect(cp.addr).await.unwrap()).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    conn.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    // The server's SETTINGS announce the limit; acknowledge them.
    let advertised = tokio::time::timeout(patience(), async {
        loop {
            let (kind, flags, _, payload) = read_frame(&mut conn).await;
            if kind == 4 && flags & 1 == 0 {
                break payload
                    .chunks(6)
                    .find(|s| s[..2] == [0, 3])
                    .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
            }
        }
    })
    .await
    .expect("server SETTINGS");
    assert_eq!(advertised, Some(2), "SETTINGS_MAX_CONCURRENT_STREAMS");
    conn.write_all(&frame(4, 1, 0, &[])).await.unwrap();
    // Three watch requests whose bodies never come: all stay open.
    let authority = cp.addr.to_string();
    let head = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/weft.destination.v1.Destination/Get"),
        (":authority", &authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    for stream in [1u32, 3, 5] {
        conn.write_all(&frame(1, 0x4, stream, &head)).await.unwrap();
    }
    let reset = tokio::time::timeout(patience(), async {
        loop {
            let (kind, _, stream, payload) = read_frame(&mut conn).await;
            if kind == 3 {
                break (stream, u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]));
            }
        }
    })
    .await
    .expect("a RST_STREAM");
    // REFUSED_STREAM (7) on the third, which the server never started.
    assert_eq!(reset, (5, 7));
}

/// mesh-control with the injector's webhook on: a self-signed serving
/// certificate (rcgen) for `localhost`, a manifests directory whose
/// Namespace `shop` opts in. Returns the process, the webhook's address and
/// the certificate (PEM) a client trusts.
async fn start_webhook(fx: &Fixture) -> (tokio::process::Child, SocketAddr, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (fx.dir.path().join("tls.crt"), fx.dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let manifests = fx.dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("namespaces.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {weft.io/inject: enabled}}\n",
    )
    .unwrap();
    let stderr = std::fs::File::create(fx.logs().join("stderr.webhook")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-control"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(fx.data_dir())
        .arg("--manifests")
        .arg(&manifests)
        .args(["--webhook-listen", "127.0.0.1:0", "--webhook-cert"])
        .arg(&cert_path)
        .arg("--webhook-key")
        .arg(&key_path)
        .args(["--proxy-image", "ghcr.io/weft/mesh-proxy:test", "--init-image", "ghcr.io/weft/weft:test"])
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let mut webhook = None;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(patience(), lines.next_line()).await {
        if let Some(addr) = line.strip_prefix("listening webhook ") {
            webhook = Some(addr.parse().unwrap());
        }
        if line.starts_with("listening grpc ") {
            break;
        }
    }
    let addr = webhook.unwrap_or_else(|| {
        panic!("no `listening webhook` line; stderr:\n{}", std::fs::read_to_string(fx.logs().join("stderr.webhook")).unwrap())
    });
    (child, addr, cert.pem())
}

/// A TLS connection to the webhook offering `alpn`, trusting only `cert_pem`.
async fn tls_to(addr: SocketAddr, cert_pem: &str, alpn: &[u8]) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// One HTTPS request to the webhook (HTTP/2 when `h2`), trusting only `cert_pem`.
async fn https_as(h2: bool, addr: SocketAddr, cert_pem: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let tls = tls_to(addr, cert_pem, alpn).await.expect("TLS handshake with the webhook, verified against its certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    let io = hyper_util::rt::TokioIo::new(tls);
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        tokio::time::timeout(patience(), sender.send_request(request)).await.unwrap().unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        tokio::time::timeout(patience(), sender.send_request(request)).await.unwrap().unwrap()
    };
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes().to_vec())
}

async fn https(addr: SocketAddr, cert_pem: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    https_as(false, addr, cert_pem, method, path, body).await
}

/// Applies a response's JSON Patch to `object`; the pod as `weft inject` writes it.
fn patched_pod(response: &serde_json::Value, object: &serde_json::Value) -> String {
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).expect("a patch");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(object).unwrap();
    mesh_kube::yaml::to_yaml(&serde_json::to_value(&pod).unwrap()).unwrap()
}

#[tokio::test]
async fn the_injector_webhook_answers_a_recorded_admission_review_over_https() {
    let fx = Fixture::new();
    let (_control, addr, cert) = start_webhook(&fx).await;
    // The webhook writes the trust anchor it serves with (its data
    // directory's) into the proxy: `weft inject --trust-anchor` given that
    // same file must write the same pod.
    let anchor = std::fs::read_to_string(fx.data_dir().join("trust-anchor.pem")).unwrap();
    let config = mesh_kube::inject::Config {
        proxy_image: "ghcr.io/weft/mesh-proxy:test".into(),
        init_image: "ghcr.io/weft/weft:test".into(),
        trust_anchor_pem: anchor.clone(),
        ..mesh_kube::inject::Config::default()
    };
    // The webhook injects with mesh-control's own identity, which is
    // what the CLI assumes by default.
    assert_eq!(config.control_identity, control_identity(TD).unwrap().to_string());

    let recorded = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../kube/tests/fixtures/admission-review-v1.json")).unwrap();
    let request: serde_json::Value = serde_json::from_slice(&recorded).unwrap();
    let (status, body) = https(addr, &cert, "POST", "/inject", recorded).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((review["apiVersion"].as_str(), review["kind"].as_str()), (Some("admission.k8s.io/v1"), Some("AdmissionReview")));
    let response = &review["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let object = &request["request"]["object"];
    let cli = mesh_kube::inject::manifests::inject_stream(&serde_json::to_string(object).unwrap(), &config).unwrap();
    assert_eq!(patched_pod(response, object), cli.yaml, "the webhook's pod is not weft inject's");
    assert!(cli.yaml.contains("WEFT_PROXY_TRUST_ANCHOR_PEM") && !cli.yaml.contains("weft-trust-anchor"), "{}", cli.yaml);

    // A pod that says nothing is injected in `shop` (its Namespace in the
    // manifests directory opts in) and left alone elsewhere.
    let mut plain = request.clone();
    plain["request"]["object"]["metadata"]["annotations"] = serde_json::json!({});
    for (namespace, injected) in [("shop", true), ("other", false)] {
        plain["request"]["namespace"] = namespace.into();
        let (status, body) = https(addr, &cert, "POST", "/inject", serde_json::to_vec(&plain).unwrap()).await;
        let response = &serde_json::from_slice::<serde_json::Value>(&body).unwrap()["response"];
        assert_eq!((status, &response["allowed"]), (200, &serde_json::json!(true)), "{namespace}");
        assert_eq!(response.get("patch").is_some(), injected, "{namespace}: {response}");
    }

    // Not an AdmissionReview v1: 400; wrong path or method; a body past the bound.
    assert_eq!(https(addr, &cert, "POST", "/inject", b"{\"kind\":\"Pod\"}".to_vec()).await.0, 400);
    assert_eq!(https(addr, &cert, "POST", "/mutate", Vec::new()).await.0, 404);
    assert_eq!(https(addr, &cert, "GET", "/inject", Vec::new()).await.0, 405);
    let huge = vec![b' '; mesh_control::webhook::MAX_BODY_BYTES + 1];
    assert_eq!(https(addr, &cert, "POST", "/inject", huge).await.0, 413);

    // HTTP/2 (what the API server usually speaks): the same answer.
    let (status, body) = https_as(true, addr, &cert, "POST", "/inject", serde_json::to_vec(&request).unwrap()).await;
    let response = &serde_json::from_slice::<serde_json::Value>(&body).unwrap()["response"];
    assert_eq!((status, &response["uid"], &response["allowed"]), (200, &request["request"]["uid"], &serde_json::json!(true)));
    assert_eq!(patched_pod(response, object), cli.yaml);

    // A renewed certificate in the files is served without a restart.
    let key = rcgen::KeyPair::generate().unwrap();
    let renewed = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(fx.dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(fx.dir.path().join("tls.crt"), renewed.pem()).unwrap();
    eventually("the webhook serves the renewed certificate", || async {
        tls_to(addr, &renewed.pem(), b"http/1.1").await.ok().map(|_| ())
    })
    .await;
    assert!(tls_to(addr, &cert, b"http/1.1").await.is_err(), "the old certificate is no longer served");
}
