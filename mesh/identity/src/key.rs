//! The workload's private key: ECDSA P-256, generated in memory and never
//! written anywhere, plus the CSR that asks mesh-control to certify it.

use std::fmt;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;

use crate::SpiffeId;

/// An in-memory ECDSA P-256 key pair.
pub struct WorkloadKey {
    pair: KeyPair,
    signing: Arc<dyn SigningKey>,
}

/// Key generation or CSR building failed (both mean the crypto library
/// refused; not something a caller can fix by retrying with other input).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating an ECDSA P-256 key: {0}")]
    Generate(rcgen::Error),
    #[error("loading the generated key into rustls: {0}")]
    Load(rustls::Error),
    #[error("building a CSR for {identity}: {source}")]
    Csr { identity: SpiffeId, source: rcgen::Error },
}

impl WorkloadKey {
    /// Generates a fresh key with aws-lc-rs.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(KeyError::Generate)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        let signing = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der).map_err(KeyError::Load)?;
        Ok(Self { pair, signing })
    }

    /// A DER PKCS#10 CSR whose only name is `identity`, as a URI SAN (the
    /// subject is left empty: Weft never reads CNs).
    pub fn csr_der(&self, identity: &SpiffeId) -> Result<Vec<u8>, KeyError> {
        let csr_err = |source| KeyError::Csr { identity: identity.clone(), source };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.as_str().try_into().map_err(csr_err)?)];
        let csr = params.serialize_request(&self.pair).map_err(csr_err)?;
        Ok(csr.der().to_vec())
    }

    /// DER SubjectPublicKeyInfo of the key.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.pair)
    }

    pub(crate) fn signing_key(&self) -> Arc<dyn SigningKey> {
        Arc::clone(&self.signing)
    }
}

impl fmt::Debug for WorkloadKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkloadKey(ECDSA P-256)")
    }
}
