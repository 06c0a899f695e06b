//! Harness for in-test control planes: they speak what mesh-control speaks
//! (TLS, ALPN h2, mesh-control's SPIFFE ID, `mesh_identity::control_incoming`),
//! with a certificate from a CA the test picks; a relay whose target can be
//! switched (cutting what was open); an Identity service issuing from
//! another root.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use mesh_api::identity::v1::{identity_server, CertifyRequest, CertifyResponse};
use mesh_identity::{control_server_config, Credentials, WorkloadKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use tokio::net::{TcpListener, TcpStream};

use crate::mesh_support::TD;

/// mesh-control's default identity (what proxies expect unless told otherwise).
pub fn control_id() -> String {
    format!("spiffe://{TD}/ns/weft/sa/mesh-control")
}

/// A CA for tests: a self-signed root that issues directly, written as
/// `trust-anchor.pem`, `issuer.pem` and `issuer-key.pem` (mesh-control's
/// data dir layout) into `dir`.
pub fn write_ca(dir: &Path, name: &str) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let root = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("trust-anchor.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("issuer.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("issuer-key.pem"), key.serialize_pem()).unwrap();
}

/// The issuer of a data dir (mesh-control's, or one from [`write_ca`]).
pub fn issuer(data: &Path) -> (Issuer<'static, KeyPair>, Vec<u8>) {
    let pem = std::fs::read_to_string(data.join("issuer.pem")).unwrap();
    let key = KeyPair::from_pem(&std::fs::read_to_string(data.join("issuer-key.pem")).unwrap()).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    (Issuer::from_ca_cert_pem(&pem, key).unwrap(), der)
}

/// A rustls server config presenting `identity`, issued by `data`'s issuer.
pub fn control_tls(data: &Path, identity: &str) -> Arc<rustls::ServerConfig> {
    let (issuer, issuer_der) = issuer(data);
    let key = WorkloadKey::generate().unwrap();
    let spki = SubjectPublicKeyInfo::from_der(&key.public_key_der()).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity.try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = params.signed_by(&spki, &issuer).unwrap();
    let creds = Credentials::new(&key, leaf.der().to_vec(), vec![issuer_der], None).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(Some(Arc::new(creds)));
    Arc::new(control_server_config(rx).unwrap())
}

/// A fresh CA in a temp dir, for a control plane the proxies trust through
/// `--trust-anchor <anchor()>`.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_ca(dir.path(), name);
        Self { dir }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn anchor(&self) -> PathBuf {
        self.dir.path().join("trust-anchor.pem")
    }
}

/// `weft.identity.v1.Identity` signing every CSR with `data`'s issuer
/// (another root than the proxies trust, in the tests that use it).
pub struct IssuesFrom {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
}

impl IssuesFrom {
    pub fn new(data: &Path) -> identity_server::IdentityServer<Self> {
        let (issuer, issuer_der) = issuer(data);
        identity_server::IdentityServer::new(Self { issuer, issuer_der })
    }
}

#[tonic::async_trait]
impl identity_server::Identity for IssuesFrom {
    async fn certify(&self, request: tonic::Request<CertifyRequest>) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        let csr = CertificateSigningRequestParams::from_der(&request.into_inner().csr_der.into())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let leaf = csr.signed_by(&self.issuer).map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(CertifyResponse {
            leaf_der: leaf.der().to_vec(),
            chain_der: vec![self.issuer_der.clone()],
            valid_until_unix_ms: 0,
        }))
    }
}

/// Serves `router` on 127.0.0.1:0 over mesh-control's TLS with `tls`.
pub async fn serve_tls(router: tonic::transport::server::Router, tls: Arc<rustls::ServerConfig>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = mesh_identity::control_incoming(listener, tls, mesh_identity::ListenerLimits::default());
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    (addr, task)
}

/// A TCP relay to a target that can be switched; switching cuts every
/// connection made so far, so clients reconnect to the new target.
pub struct Switch {
    pub addr: SocketAddr,
    target: Arc<Mutex<(SocketAddr, Vec<tokio::task::JoinHandle<()>>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
        for t in self.target.lock().unwrap().1.drain(..) {
            t.abort();
        }
    }
}

impl Switch {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new((target, Vec::new())));
        let state = Arc::clone(&target);
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mut state = state.lock().unwrap();
                let to = state.0;
                state.1.push(tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(to).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }));
            }
        });
        Self { addr, target, task }
    }

    pub fn switch_to(&self, to: SocketAddr) {
        let mut state = self.target.lock().unwrap();
        state.0 = to;
        for t in state.1.drain(..) {
            t.abort();
        }
    }
}
