//! Certificate verifiers for Weft mTLS. Both sides check the chain to the
//! trust anchors with webpki, then check names the SPIFFE way: by the peer's
//! single URI SAN, never by DNS name or CN.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};

use crate::spiffe::CertIdentityError;
use crate::SpiffeId;

/// Why a peer's otherwise valid certificate is not acceptable.
#[derive(thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer certificate: {0}")]
    NoIdentity(#[from] CertIdentityError),
    #[error("peer is {presented}, expected {expected}")]
    Unexpected { expected: SpiffeId, presented: SpiffeId },
    #[error("peer {presented} is outside trust domain {trust_domain}")]
    ForeignTrustDomain { trust_domain: String, presented: SpiffeId },
}

// rustls prints `OtherError` with `{:?}`; make that the readable message.
impl fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn reject(err: PeerIdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

/// Client side: the server must chain to the trust anchors (with a
/// server-auth EKU) and its URI SAN must equal the one identity this
/// connection expects. The TLS server name is ignored on purpose.
pub(crate) struct ExpectedServer {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) expected: SpiffeId,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ExpectedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectedServer").field("expected", &self.expected).finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ExpectedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = SpiffeId::from_cert_der(end_entity).map_err(|e| reject(e.into()))?;
        if presented != self.expected {
            return Err(reject(PeerIdentityError::Unexpected { expected: self.expected.clone(), presented }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Server side: webpki's client verifier (chain, client-auth EKU, validity),
/// then the client must carry a SPIFFE ID in our trust domain.
pub(crate) struct MeshClient {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) trust_domain: String,
}

impl fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshClient").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

impl ClientCertVerifier for MeshClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let presented = SpiffeId::from_cert_der(end_entity).map_err(|e| reject(e.into()))?;
        if presented.trust_domain() != self.trust_domain {
            return Err(reject(PeerIdentityError::ForeignTrustDomain {
                trust_domain: self.trust_domain.clone(),
                presented,
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
