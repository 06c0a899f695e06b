//! A certified key: the workload key plus the leaf and intermediates that
//! mesh-control issued for it, with the facts the certifier and TLS need.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::CertIdentityError;
use crate::{SpiffeId, WorkloadKey};

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
