//! rustls configurations for Weft mTLS, fed by the certifier's watch so a
//! rotated certificate is used by the next handshake while established
//! connections keep the one they negotiated.
//!
//! ```text
//!   Certifier ──watch<Option<Arc<Credentials>>>──┬─> CurrentCert (ResolvesServerCert)
//!                                                └─> CurrentCert (ResolvesClientCert)
//!   TrustAnchors ──> MeshClient verifier (server side: any SPIFFE ID of our trust domain)
//!                └─> ExpectedServer verifier (client side: exactly the expected SPIFFE ID)
//! ```

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, CommonState, RootCertStore, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::verify::{ExpectedServer, MeshClient};
use crate::{Credentials, SpiffeId};

/// ALPN protocol id of Weft's proxy-to-proxy transport (mTLS carrying HTTP/2
/// between meshed proxies). Both configs built here offer only this value,
/// so a non-Weft TLS peer fails the handshake instead of speaking garbage.
pub const ALPN_WEFT: &[u8] = b"weft/1";

/// The receiving side of the certifier's channel: `None` until the first
/// certificate is issued.
pub type CredentialsWatch = watch::Receiver<Option<Arc<Credentials>>>;

/// Trust anchors (root certificates) of one trust domain. Workloads get them
/// out of band (a file the substrate or operator provides), never from the
/// control plane over the channel they are meant to secure.
#[derive(Clone)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
    trust_domain: String,
}

/// Building TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("trust anchor PEM: {0}")]
    Pem(String),
    #[error("trust anchor PEM holds no certificate")]
    NoAnchors,
    #[error("trust anchor certificate rejected: {0}")]
    Anchor(rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS 1.3 with aws-lc-rs unavailable: {0}")]
    Protocol(rustls::Error),
}

impl TrustAnchors {
    /// Parses every `CERTIFICATE` block of `pem` as a trust anchor for
    /// `trust_domain`.
    pub fn from_pem(trust_domain: &str, pem: &[u8]) -> Result<Self, TlsError> {
        let ders = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        Self::from_der(trust_domain, ders)
    }

    /// Uses DER `certs` as trust anchors for `trust_domain`.
    pub fn from_der(trust_domain: &str, certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoAnchors);
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(TlsError::Anchor)?;
        }
        Ok(Self { roots: Arc::new(roots), trust_domain: trust_domain.to_owned() })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("trust_domain", &self.trust_domain)
            .field("anchors", &self.roots.len())
            .finish()
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server config for Weft's inbound mTLS: TLS 1.3 only, ALPN `weft/1`,
/// clients must present a certificate chaining to `anchors` with a SPIFFE ID
/// of the anchors' trust domain, our certificate is the latest in `creds`.
/// Read the client's identity after the handshake with [`peer_identity`].
pub fn server_config(anchors: &TrustAnchors, creds: CredentialsWatch) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::clone(&anchors.roots), Arc::clone(&provider)).build()?;
    let verifier = MeshClient { inner: webpki, trust_domain: anchors.trust_domain.clone() };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CurrentCert(creds)));
    config.alpn_protocols = vec![ALPN_WEFT.to_vec()];
    // No resumption: a resumed session would carry the peer's old (possibly
    // expired or rotated-away) certificate instead of a freshly verified one.
    // Mesh connections are long-lived and pooled, so full handshakes are rare.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client config for connecting to exactly one peer identity: TLS 1.3
/// only, ALPN `weft/1`, the server must chain to `anchors` and its URI SAN
/// must equal `server` (the `ServerName` given to `connect` is not used for
/// verification, any value works; an IP address sends no SNI). Our client
/// certificate is the latest in `creds`. Build one per destination identity
/// and reuse it. Session resumption is off on both sides, so every
/// connection is a full handshake against current certificates.
pub fn client_config(anchors: &TrustAnchors, creds: CredentialsWatch, server: SpiffeId) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = ExpectedServer { roots: Arc::clone(&anchors.roots), expected: server, provider: Arc::clone(&provider) };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .dangerous() // a custom verifier: SPIFFE URI SAN instead of DNS names, still full chain validation
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CurrentCert(creds)));
    config.alpn_protocols = vec![ALPN_WEFT.to_vec()];
    // No resumption, as on the server: every connection verifies the peer's
    // current certificate and presents ours.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The verified SPIFFE ID of the peer of a finished handshake (client or
/// server side; pass `&ServerConnection` / `&ClientConnection`, or
/// `tls_stream.get_ref().1`).
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    SpiffeId::from_cert_der(leaf).ok()
}

/// Serves whatever certificate the certifier published last; read on every
/// handshake, so rotation needs no config rebuild.
pub(crate) struct CurrentCert(pub(crate) CredentialsWatch);

impl CurrentCert {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.borrow().as_ref().map(|c| Arc::clone(c.certified_key()))
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.0.borrow().as_ref().map(|c| c.identity().clone());
        f.debug_tuple("CurrentCert").field(&current).finish()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.0.borrow().is_some()
    }
}
