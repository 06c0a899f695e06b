//! CSR checks: the request must parse, be signed by the key it carries
//! (proof of possession), carry an ECDSA P-256 key, and name exactly the
//! identity being certified.

use mesh_identity::SpiffeId;
use rcgen::{PublicKeyData, SubjectPublicKeyInfo, PKCS_ECDSA_P256_SHA256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Why a CSR is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is not valid DER PKCS#10: {0}")]
    Malformed(String),
    #[error("CSR signature does not verify with its own public key")]
    BadSignature,
    #[error("CSR key must be ECDSA P-256")]
    KeyType,
    #[error("CSR names no identity (it needs the URI SAN {requested})")]
    NoIdentity { requested: String },
    #[error("CSR names {found:?}, not the requested identity {requested}")]
    IdentityMismatch { requested: String, found: Vec<String> },
}

/// Checks `der` and returns the public key to certify.
pub fn check(der: &[u8], identity: &SpiffeId) -> Result<SubjectPublicKeyInfo, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let key = SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|_| CsrError::KeyType)?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::KeyType);
    }
    // Every name the CSR asks for, of any SAN type: a CSR that also asks for
    // a DNS name is as wrong as one for another SPIFFE ID.
    let names: Vec<String> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.iter().map(general_name)),
            _ => None,
        })
        .flatten()
        .collect();
    match names.as_slice() {
        [] => Err(CsrError::NoIdentity { requested: identity.to_string() }),
        [only] if only == identity.as_str() => Ok(key),
        _ => Err(CsrError::IdentityMismatch { requested: identity.to_string(), found: names }),
    }
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        // Bare URI so the comparison with the SPIFFE ID is exact.
        GeneralName::URI(uri) => (*uri).to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_identity::WorkloadKey;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn accepts_a_csr_for_the_requested_identity() {
        let key = WorkloadKey::generate().unwrap();
        let web = id("spiffe://td/ns/a/sa/web");
        let spki = check(&key.csr_der(&web).unwrap(), &web).unwrap();
        assert_eq!(spki.subject_public_key_info(), key.public_key_der());
    }

    #[test]
    fn refuses_mismatch_garbage_and_tampering() {
        let key = WorkloadKey::generate().unwrap();
        let web = id("spiffe://td/ns/a/sa/web");
        let db = id("spiffe://td/ns/a/sa/db");
        let csr = key.csr_der(&db).unwrap();
        assert!(matches!(check(&csr, &web), Err(CsrError::IdentityMismatch { .. })));
        assert!(matches!(check(b"not a csr", &web), Err(CsrError::Malformed(_))));
        // Flip a byte inside the signed part (the URI SAN text): signature must fail.
        let mut tampered = key.csr_der(&web).unwrap();
        let at = tampered.windows(3).position(|w| w == b"web").unwrap();
        tampered[at] = b'x';
        assert_eq!(check(&tampered, &id("spiffe://td/ns/a/sa/xeb")), Err(CsrError::BadSignature));
    }
}
