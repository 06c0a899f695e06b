//! A certified key: the workload key plus the leaf and intermediates that
//! mesh-control issued for it, with the facts the certifier and TLS need.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::CertIdentityError;
use crate::tls::provider;
use crate::{SpiffeId, TrustAnchors, WorkloadKey};

/// One issued certificate, ready for rustls. Immutable: rotation publishes a
/// new `Credentials`, so connections that hold the old one are undisturbed.
#[derive(Debug)]
pub struct Credentials {
    identity: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    serial: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// The issued certificate cannot be used with this key.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("issued certificate does not parse: {0}")]
    Parse(String),
    #[error("issued certificate names no usable identity: {0}")]
    Identity(#[from] CertIdentityError),
    #[error("issued certificate is for {issued}, expected {expected}")]
    WrongIdentity { expected: SpiffeId, issued: SpiffeId },
    #[error("issued certificate does not certify this workload's key: {0}")]
    KeyMismatch(rustls::Error),
    /// Not signed (through the intermediates sent with it) by one of our
    /// trust anchors, expired, not yet valid, or without client and server
    /// auth: a control plane of another mesh, or a broken issuer.
    #[error(
        "issued certificate is not trusted: {reason} (it must chain to the trust anchors of {trust_domain}; \
         check that mesh-control and this workload use the same trust anchor file)"
    )]
    Untrusted { trust_domain: String, reason: String },
}

impl Credentials {
    /// Binds `leaf_der` (and its intermediates, leaf's issuer first) to `key`,
    /// checking the leaf certifies exactly that key and, when `expected` is
    /// given, exactly that identity.
    pub fn new(
        key: &WorkloadKey,
        leaf_der: Vec<u8>,
        intermediates: Vec<Vec<u8>>,
        expected: Option<&SpiffeId>,
    ) -> Result<Self, CredentialsError> {
        let identity = SpiffeId::from_cert_der(&leaf_der)?;
        if let Some(expected) = expected {
            if *expected != identity {
                return Err(CredentialsError::WrongIdentity { expected: expected.clone(), issued: identity });
            }
        }
        let (serial, not_before, not_after) = {
            let (_, cert) =
                X509Certificate::from_der(&leaf_der).map_err(|e| CredentialsError::Parse(e.to_string()))?;
            let validity = cert.validity();
            (
                cert.raw_serial().to_vec(),
                unix_seconds(validity.not_before.timestamp()),
                unix_seconds(validity.not_after.timestamp()),
            )
        };
        let chain = std::iter::once(leaf_der)
            .chain(intermediates)
            .map(CertificateDer::from)
            .collect();
        let certified_key = CertifiedKey::new(chain, key.signing_key());
        certified_key.keys_match().map_err(CredentialsError::KeyMismatch)?;
        Ok(Self { identity, certified_key: Arc::new(certified_key), serial, not_before, not_after })
    }

    /// Checks the chain (leaf, then the intermediates sent with it) up to
    /// one of `anchors` at `now` with webpki: signatures, validity windows,
    /// and both the server- and client-auth usages mTLS needs. The
    /// certifier calls this before publishing anything mesh-control issued.
    pub fn verify_chain(&self, anchors: &TrustAnchors, now: SystemTime) -> Result<(), CredentialsError> {
        let untrusted = |e: rustls::Error| CredentialsError::Untrusted {
            trust_domain: anchors.trust_domain().to_owned(),
            reason: e.to_string(),
        };
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let chain = &self.certified_key.cert;
        let (leaf, intermediates) = chain.split_first().expect("a CertifiedKey holds at least the leaf");
        let parsed = ParsedCertificate::try_from(leaf).map_err(untrusted)?;
        let provider = provider();
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &anchors.roots(),
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )
        .map_err(untrusted)?;
        let client = WebPkiClientVerifier::builder_with_provider(anchors.roots(), provider)
            .build()
            .map_err(|e| CredentialsError::Untrusted {
                trust_domain: anchors.trust_domain().to_owned(),
                reason: e.to_string(),
            })?;
        client.verify_client_cert(leaf, intermediates, now).map_err(untrusted)?;
        Ok(())
    }

    /// The SPIFFE ID the leaf certifies.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The leaf's serial number (big-endian bytes as encoded).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf DER.
    pub fn leaf_der(&self) -> &CertificateDer<'static> {
        &self.certified_key.cert[0]
    }

    /// What rustls presents in handshakes.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }
}

fn unix_seconds(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}
