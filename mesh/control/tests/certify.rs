//! mesh-control issues certificates only for proven identities: leaves chain
//! to the trust anchor, carry the SPIFFE ID as URI SAN, live as configured;
//! the CA survives restarts; operator roots work; refusals are clear.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_api::identity::v1::identity_client::IdentityClient;
use mesh_api::identity::v1::{CertifyRequest, CertifyResponse};
use mesh_identity::{SpiffeId, WorkloadKey};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::*;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

async fn certify(cp: &ControlPlane, identity: &str, token: &str, csr_der: Vec<u8>) -> Result<CertifyResponse, tonic::Status> {
    let mut client = IdentityClient::new(cp.channel());
    client
        .certify(CertifyRequest { identity: identity.to_owned(), token: token.as_bytes().to_vec(), csr_der })
        .await
        .map(|r| r.into_inner())
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn anchor_der(pem_path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(pem_path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    pem.contents
}

/// Checks leaf -> issuer -> anchor signatures and the leaf's identity facts.
fn assert_leaf(resp: &CertifyResponse, anchor: &[u8], id: &SpiffeId, lifetime: Duration) {
    assert_eq!(resp.chain_der.len(), 1, "chain is the issuer only");
    let leaf = parse(&resp.leaf_der);
    let issuer = parse(&resp.chain_der[0]);
    let anchor = parse(anchor);
    leaf.verify_signature(Some(issuer.public_key())).expect("leaf signed by issuer");
    issuer.verify_signature(Some(anchor.public_key())).expect("issuer signed by trust anchor");
    assert!(leaf.subject().iter_common_name().next().is_none(), "no CN");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN is critical with an empty subject");
    let names: Vec<_> = san.value.general_names.iter().collect();
    assert_eq!(names, vec![&GeneralName::URI(id.as_str())]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert!(!leaf.is_ca());
    let not_after = leaf.validity().not_after.timestamp();
    assert_eq!(resp.valid_until_unix_ms, not_after * 1000);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let remaining = not_after - now;
    let lifetime = lifetime.as_secs() as i64;
    assert!(remaining <= lifetime && remaining >= lifetime - 5, "remaining {remaining}s, lifetime {lifetime}s");
}

#[tokio::test]
async fn issues_chained_leaf_and_keeps_the_ca_across_restarts() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let cp = fx.start("127.0.0.1:0", "90s").await;
    let key = WorkloadKey::generate().unwrap();
    let resp = certify(&cp, web.as_str(), &token_for(&web), key.csr_der(&web).unwrap()).await.unwrap();
    let anchor_path = fx.data_dir().join("trust-anchor.pem");
    let anchor = anchor_der(&anchor_path);
    assert_leaf(&resp, &anchor, &web, Duration::from_secs(90));
    // The key mesh-identity made is the key certified.
    let leaf = parse(&resp.leaf_der);
    assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());
    assert!(cp.stderr().contains("issued certificate"), "{}", cp.stderr());
    assert!(cp.stop().await.success(), "SIGTERM exits 0");

    let cp = fx.start("127.0.0.1:0", "1h").await;
    assert_eq!(anchor_der(&anchor_path), anchor, "restart reuses the trust anchor");
    let resp = certify(&cp, web.as_str(), &token_for(&web), key.csr_der(&web).unwrap()).await.unwrap();
    assert_leaf(&resp, &anchor, &web, Duration::from_secs(3600));
    assert!(cp.stop().await.success());
}

#[tokio::test]
async fn operator_trust_anchor_and_issuer_are_used() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    // The operator's own root and intermediate, made outside mesh-control.
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "operator root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name.push(DnType::CommonName, "operator issuer");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let int_cert = int.signed_by(&int_key, &root_issuer).unwrap();
    let dir = fx.dir.path();
    std::fs::write(dir.join("root.pem"), root_cert.pem()).unwrap();
    std::fs::write(dir.join("int.pem"), int_cert.pem()).unwrap();
    std::fs::write(dir.join("int-key.pem"), int_key.serialize_pem()).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let cp = ControlPlane::start(
        &fx.logs(),
        "127.0.0.1:0",
        &[
            "--trust-anchor", &p("root.pem"),
            "--issuer-cert", &p("int.pem"),
            "--issuer-key", &p("int-key.pem"),
            "--bootstrap-tokens", &p("tokens"),
            "--cert-lifetime", "10m",
        ],
    )
    .await;
    let key = WorkloadKey::generate().unwrap();
    let resp = certify(&cp, web.as_str(), &token_for(&web), key.csr_der(&web).unwrap()).await.unwrap();
    assert_leaf(&resp, root_cert.der(), &web, Duration::from_secs(600));
    assert_eq!(resp.chain_der[0], int_cert.der().to_vec());
    assert!(!fx.data_dir().exists(), "no CA generated when the operator brings one");
    assert!(cp.stop().await.success());
}

#[tokio::test]
async fn refusals_name_the_reason_and_issue_nothing() {
    let fx = Fixture::new();
    let web = workload("web");
    let db = workload("db");
    fx.write_tokens(&[&web, &db]);
    let cp = fx.start("127.0.0.1:0", "1h").await;
    let key = WorkloadKey::generate().unwrap();
    let foreign = id("spiffe://evil.example/ns/default/sa/web");
    // (what, identity, token, CSR, expected status, reason in status and log)
    type Case = (&'static str, SpiffeId, String, Vec<u8>, tonic::Code, &'static str);
    let cases: Vec<Case> = vec![
        ("wrong token", web.clone(), "token-nope".into(), key.csr_der(&web).unwrap(), tonic::Code::PermissionDenied, "token does not match"),
        ("unknown identity", workload("ghost"), "token-x".into(), key.csr_der(&workload("ghost")).unwrap(), tonic::Code::PermissionDenied, "no bootstrap token is registered"),
        // db's valid token, but the CSR asks for web: impersonation attempt.
        ("CSR for another identity", db.clone(), token_for(&db), key.csr_der(&web).unwrap(), tonic::Code::InvalidArgument, "not the requested identity"),
        ("malformed CSR", web.clone(), token_for(&web), b"\x30\x03\x02\x01\x00 not DER".to_vec(), tonic::Code::InvalidArgument, "CSR is not valid DER"),
        ("foreign trust domain", foreign.clone(), token_for(&web), key.csr_der(&foreign).unwrap(), tonic::Code::PermissionDenied, "outside trust domain cluster.local"),
    ];
    for (what, identity, token, csr, code, reason) in &cases {
        let status = certify(&cp, identity.as_str(), token, csr.clone()).await.expect_err(what);
        assert_eq!(status.code(), *code, "{what}: {status:?}");
        if reason.contains("token") || reason.contains("registered") {
            // Which of the two it was is for the log only (no enumeration).
            assert_eq!(status.message(), mesh_control::grpc::NOT_PROVEN, "{what}: {status:?}");
        } else {
            assert!(status.message().contains(reason), "{what}: {status:?}");
        }
    }
    // Bad CSR signature: tamper with the signed SAN bytes of a valid CSR.
    let mut tampered = key.csr_der(&web).unwrap();
    let at = tampered.windows(3).position(|w| w == b"web").unwrap();
    tampered[at] = b'x';
    let xeb = workload("xeb");
    let status = certify(&cp, xeb.as_str(), "any", tampered.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "token is checked before the CSR");
    fx.write_tokens(&[&web, &db, &xeb]);
    let status = certify(&cp, xeb.as_str(), &token_for(&xeb), tampered).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("signature does not verify"), "{status:?}");

    let log = cp.stderr();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused certification")).collect();
    assert_eq!(refusals.len(), cases.len() + 2, "{log}");
    for (what, identity, _, _, _, reason) in &cases {
        assert!(
            refusals.iter().any(|l| l.contains(identity.as_str()) && l.contains(reason)),
            "{what}: no log line with {identity} and {reason:?}:\n{log}"
        );
    }
    assert!(!log.contains("issued certificate"), "nothing may be issued:\n{log}");
}

#[tokio::test]
async fn config_errors_exit_64_naming_the_value() {
    let fx = Fixture::new();
    let bin = env!("CARGO_BIN_EXE_mesh-control");
    let data = fx.data_dir();
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    let out = run(&["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--cert-lifetime", "0s", "--trust-domain", "Bad Domain"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--cert-lifetime 0s") && err.contains("\"Bad Domain\""), "both problems reported: {err}");
    std::fs::write(fx.tokens_path(), "spiffe://cluster.local/ns/a/sa/b\n").unwrap();
    let out = run(&["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--bootstrap-tokens", fx.tokens_path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("tokens:1: expected `<spiffe-id> <token>`"), "{err}");
    let out = run(&["--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
}
