//! The identity CA: a trust anchor (root) and an issuer (intermediate) that
//! signs short-lived workload leaves. Generated into the data directory on
//! first start and reused after, or brought by the operator as PEM files.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_identity::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// File names inside `--data-dir`.
pub const ANCHOR_FILE: &str = "trust-anchor.pem";
pub const ANCHOR_KEY_FILE: &str = "trust-anchor-key.pem";
pub const ISSUER_FILE: &str = "issuer.pem";
pub const ISSUER_KEY_FILE: &str = "issuer-key.pem";

const ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Leaves start this far in the past so a peer whose clock is slightly
/// behind ours does not see a not-yet-valid certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Loading, generating or using the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("data directory {dir} holds only part of a CA ({present:?}); restore the missing files or empty it")]
    Partial { dir: PathBuf, present: Vec<&'static str> },
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("issuer expired at {0}; rotate the issuer certificate")]
    IssuerExpired(OffsetDateTime),
}

/// A leaf issued for one workload.
#[derive(Debug, Clone)]
pub struct Issued {
    pub leaf_der: Vec<u8>,
    /// Intermediates, leaf's issuer first (no trust anchor).
    pub chain_der: Vec<Vec<u8>>,
    pub not_after: OffsetDateTime,
    pub serial: Vec<u8>,
}

/// The signing half of the mesh's PKI.
pub struct Ca {
    anchor_der: CertificateDer<'static>,
    issuer_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("issuer_not_after", &self.issuer_not_after).finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir`, or, when `dir` holds none of its files,
    /// generates a trust anchor and issuer for `trust_domain` there (key
    /// files mode 0600, directory 0700).
    pub fn load_or_generate(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let files = [ANCHOR_FILE, ANCHOR_KEY_FILE, ISSUER_FILE, ISSUER_KEY_FILE];
        let present: Vec<&'static str> = files.into_iter().filter(|f| dir.join(f).exists()).collect();
        if present.len() == files.len() {
            return Self::load(&dir.join(ANCHOR_FILE), &dir.join(ISSUER_FILE), &dir.join(ISSUER_KEY_FILE));
        }
        if !present.is_empty() {
            return Err(CaError::Partial { dir: dir.to_owned(), present });
        }
        let io = |path: &Path, e: std::io::Error| CaError::Io { path: path.to_owned(), reason: e.to_string() };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io(dir, e))?;

        let now = OffsetDateTime::now_utc();
        let anchor_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut anchor = ca_params(&format!("Weft trust anchor {trust_domain}"), now, ANCHOR_LIFETIME);
        anchor.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let anchor_cert = anchor.self_signed(&anchor_key)?;
        let anchor_issuer = Issuer::new(anchor, anchor_key);

        let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut issuer = ca_params(&format!("Weft issuer {trust_domain}"), now, ISSUER_LIFETIME);
        // The issuer signs leaves only, never another CA.
        issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuer.use_authority_key_identifier_extension = true;
        let issuer_cert = issuer.signed_by(&issuer_key, &anchor_issuer)?;

        // Certificates first, keys last: a crash in between leaves a
        // "partial" directory that is refused, never a silently new root.
        write_file(&dir.join(ANCHOR_FILE), anchor_cert.pem().as_bytes(), 0o644)?;
        write_file(&dir.join(ISSUER_FILE), issuer_cert.pem().as_bytes(), 0o644)?;
        write_file(&dir.join(ISSUER_KEY_FILE), issuer_key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join(ANCHOR_KEY_FILE), anchor_issuer.key().serialize_pem().as_bytes(), 0o600)?;
        tracing::info!(dir = %dir.display(), %trust_domain, "generated trust anchor and issuer");
        Self::load(&dir.join(ANCHOR_FILE), &dir.join(ISSUER_FILE), &dir.join(ISSUER_KEY_FILE))
    }

    /// Loads operator-provided PEM files (the trust anchor's key is not
    /// needed and should stay offline).
    pub fn load(anchor: &Path, issuer_cert: &Path, issuer_key: &Path) -> Result<Self, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| CaError::Io { path: path.to_owned(), reason: e.to_string() })
        };
        Self::from_pem(&read(anchor)?, &read(issuer_cert)?, &read(issuer_key)?).map_err(|e| match e {
            CaError::Invalid(problems) => CaError::Invalid(
                problems
                    .into_iter()
                    .map(|p| {
                        p.replace("trust anchor", &format!("trust anchor {}", anchor.display()))
                            .replace("issuer certificate", &format!("issuer certificate {}", issuer_cert.display()))
                            .replace("issuer key", &format!("issuer key {}", issuer_key.display()))
                    })
                    .collect(),
            ),
            other => other,
        })
    }

    /// Builds the CA from PEM text, checking everything and reporting every
    /// problem at once: the issuer must be a CA, signed by the anchor,
    /// currently valid, and match its key.
    pub fn from_pem(anchor_pem: &str, issuer_pem: &str, issuer_key_pem: &str) -> Result<Self, CaError> {
        let mut problems = Vec::new();
        let anchor_der = CertificateDer::from_pem_slice(anchor_pem.as_bytes())
            .map_err(|e| problems.push(format!("trust anchor: no PEM certificate: {e}")))
            .ok();
        let issuer_der = CertificateDer::from_pem_slice(issuer_pem.as_bytes())
            .map_err(|e| problems.push(format!("issuer certificate: no PEM certificate: {e}")))
            .ok();
        let key = KeyPair::from_pem(issuer_key_pem)
            .map_err(|e| problems.push(format!("issuer key: not a PEM private key rcgen can sign with: {e}")))
            .ok();
        let anchor = anchor_der.as_ref().and_then(|der| {
            X509Certificate::from_der(der)
                .map_err(|e| problems.push(format!("trust anchor: does not parse: {e}")))
                .ok()
                .map(|(_, c)| c)
        });
        let issuer = issuer_der.as_ref().and_then(|der| {
            X509Certificate::from_der(der)
                .map_err(|e| problems.push(format!("issuer certificate: does not parse: {e}")))
                .ok()
                .map(|(_, c)| c)
        });
        let mut issuer_not_after = None;
        if let Some(issuer) = &issuer {
            if !issuer.is_ca() {
                problems.push("issuer certificate: not a CA (basicConstraints cA is false)".to_owned());
            }
            if !issuer.validity().is_valid() {
                problems.push(format!(
                    "issuer certificate: not valid now (valid {} to {})",
                    issuer.validity().not_before,
                    issuer.validity().not_after
                ));
            }
            if let Some(anchor) = &anchor {
                if issuer.verify_signature(Some(anchor.public_key())).is_err() {
                    problems.push("issuer certificate: not signed by the trust anchor".to_owned());
                }
            }
            if let Some(key) = &key {
                if key.subject_public_key_info() != issuer.public_key().raw {
                    problems.push("issuer key: does not match the issuer certificate's public key".to_owned());
                }
            }
            issuer_not_after = Some(issuer.validity().not_after.to_datetime());
        }
        match (anchor_der, issuer_der, key, issuer_not_after) {
            (Some(anchor_der), Some(issuer_der), Some(key), Some(issuer_not_after)) if problems.is_empty() => {
                let issuer = Issuer::from_ca_cert_der(&issuer_der, key)?;
                Ok(Self { anchor_der, issuer_der, issuer, issuer_not_after })
            }
            _ => Err(CaError::Invalid(problems)),
        }
    }

    /// Signs a leaf for `identity` over `key`: no subject, the SPIFFE ID as
    /// the only (critical) URI SAN, client and server auth, valid for
    /// `lifetime` from `now` (whole seconds, and never past the issuer).
    pub fn issue(
        &self,
        identity: &SpiffeId,
        key: &SubjectPublicKeyInfo,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        if now >= self.issuer_not_after {
            return Err(CaError::IssuerExpired(self.issuer_not_after));
        }
        let not_after = (now + lifetime).min(self.issuer_not_after).replace_nanosecond(0).unwrap_or(now + lifetime);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.as_str().try_into()?)];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = params.signed_by(key, &self.issuer)?;
        Ok(Issued {
            leaf_der: leaf.der().to_vec(),
            chain_der: vec![self.issuer_der.to_vec()],
            not_after,
            serial,
        })
    }

    /// The trust anchor, DER.
    pub fn trust_anchor_der(&self) -> &CertificateDer<'static> {
        &self.anchor_der
    }
}

fn ca_params(name: &str, now: OffsetDateTime, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + lifetime;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params
}

/// 128 random bits, positive and of fixed length as DER INTEGER.
fn random_serial() -> Vec<u8> {
    let mut serial = vec![0u8; 16];
    // aws-lc-rs's CSPRNG failing means the process cannot do crypto at all.
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut serial)
        .expect("aws-lc-rs random number generator failed");
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// Writes `bytes` to a fresh temp file with `mode` and renames it into
/// place, so readers never see a half-written key.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |e: std::io::Error| CaError::Io { path: path.to_owned(), reason: e.to_string() };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_identity::{Credentials, WorkloadKey};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_then_reuses_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = Ca::load_or_generate(&data, "td").unwrap();
        let again = Ca::load_or_generate(&data, "td").unwrap();
        assert_eq!(first.trust_anchor_der(), again.trust_anchor_der());
        for key in [ANCHOR_KEY_FILE, ISSUER_KEY_FILE] {
            let mode = std::fs::metadata(data.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        std::fs::remove_file(data.join(ANCHOR_KEY_FILE)).unwrap();
        assert!(matches!(Ca::load_or_generate(&data, "td"), Err(CaError::Partial { .. })));
    }

    #[test]
    fn issues_a_leaf_the_workload_key_can_use() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_generate(dir.path(), "td").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let id = SpiffeId::parse("spiffe://td/ns/a/sa/web").unwrap();
        let spki = SubjectPublicKeyInfo::from_der(&key.public_key_der()).unwrap();
        let now = OffsetDateTime::now_utc();
        let issued = ca.issue(&id, &spki, Duration::from_secs(5), now).unwrap();
        let creds = Credentials::new(&key, issued.leaf_der, issued.chain_der, Some(&id)).unwrap();
        assert_eq!(creds.serial(), issued.serial);
        let until = creds.not_after().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(until as i64, issued.not_after.unix_timestamp());
        assert!(issued.not_after <= now + Duration::from_secs(5));
        assert!(issued.not_after > now + Duration::from_secs(3));
    }

    #[test]
    fn refuses_mismatched_operator_files_listing_every_problem() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        Ca::load_or_generate(a.path(), "td").unwrap();
        Ca::load_or_generate(b.path(), "td").unwrap();
        let err = Ca::load(&a.path().join(ANCHOR_FILE), &b.path().join(ISSUER_FILE), &a.path().join(ISSUER_KEY_FILE))
            .unwrap_err();
        let CaError::Invalid(problems) = err else { panic!("{err:?}") };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("not signed by the trust anchor")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("does not match")), "{problems:?}");
        // Using the anchor as the issuer: it is a CA, but its key file is the issuer's.
        assert!(Ca::load(&a.path().join(ANCHOR_FILE), &a.path().join(ISSUER_FILE), &a.path().join(ISSUER_KEY_FILE)).is_ok());
    }
}
