//! The certificates `weft install` puts into the cluster: the mesh's trust
//! anchor and identity issuer (mesh-control's `--trust-anchor`,
//! `--issuer-cert`, `--issuer-key`), and the admission webhook's serving
//! certificate with the CA the API server trusts it by (the
//! MutatingWebhookConfiguration's caBundle). Generated with rcgen, or brought
//! by the operator as PEM files (and then rendered byte for byte, which keeps
//! golden tests deterministic).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// Generated certificates start this far in the past, so a node whose clock
/// is slightly behind does not see them as not yet valid.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A CA certificate and what it signs with, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The mesh's identity PKI: the trust anchor every proxy trusts (its key is
/// not rendered: it stays with the operator, or is dropped when generated)
/// and the issuer mesh-control signs workload certificates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPki {
    pub trust_anchor_pem: String,
    pub issuer: CertAndKey,
}

/// The webhook's serving certificate and the CA bundle that verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookPki {
    pub ca_pem: String,
    pub serving: CertAndKey,
}

/// Certificates that cannot be generated or are not usable as given.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Every problem with operator-provided PEM, each naming the input.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl IdentityPki {
    /// A new trust anchor (valid `anchor_lifetime`) and an issuer signed by it
    /// (valid `issuer_lifetime`, path length 0: it signs workloads only).
    pub fn generate(
        trust_domain: &str,
        anchor_lifetime: Duration,
        issuer_lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let (anchor_pem, anchor) = root(&format!("Weft trust anchor {trust_domain}"), anchor_lifetime, now)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(&format!("Weft issuer {trust_domain}"), issuer_lifetime, now);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.signed_by(&key, &anchor)?;
        Ok(Self { trust_anchor_pem: anchor_pem, issuer: CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() } })
    }

    /// Operator PEM (`what` names the inputs in errors, e.g. file names).
    /// Checks what can be checked here: each parses, the issuer is a CA
    /// valid at `now`, signed by the anchor, and matches its key.
    /// mesh-control checks the same again when it starts.
    pub fn from_pem(
        trust_anchor: (&str, String),
        issuer_cert: (&str, String),
        issuer_key: (&str, String),
        now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let mut problems = Vec::new();
        check_pair(&trust_anchor, &issuer_cert, &issuer_key, now, &mut problems, |_| Ok(()));
        if !problems.is_empty() {
            return Err(PkiError::Invalid(problems));
        }
        Ok(Self { trust_anchor_pem: trust_anchor.1, issuer: CertAndKey { cert_pem: issuer_cert.1, key_pem: issuer_key.1 } })
    }
}

impl WebhookPki {
    /// A CA and a serving certificate for `dns_name` signed by it, both valid `lifetime`.
    pub fn generate(dns_name: &str, lifetime: Duration, now: OffsetDateTime) -> Result<Self, PkiError> {
        let (ca_pem, ca) = root("Weft webhook CA", lifetime, now)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![dns_name.to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + lifetime;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &ca)?;
        Ok(Self { ca_pem, serving: CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() } })
    }

    /// Operator PEM: the serving certificate must be signed by the CA, match
    /// its key, be valid at `now` and name `dns_name` (the API server
    /// connects to that name).
    pub fn from_pem(
        ca: (&str, String),
        cert: (&str, String),
        key: (&str, String),
        dns_name: &str,
        now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let mut problems = Vec::new();
        check_pair(&ca, &cert, &key, now, &mut problems, |leaf| {
            let names: Vec<String> = leaf
                .extensions()
                .iter()
                .filter_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
                    _ => None,
                })
                .flatten()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect();
            if names.iter().any(|n| n == dns_name) {
                Ok(())
            } else {
                Err(format!("has DNS names {names:?}, not {dns_name} (the name the API server calls)"))
            }
        });
        if !problems.is_empty() {
            return Err(PkiError::Invalid(problems));
        }
        Ok(Self { ca_pem: ca.1, serving: CertAndKey { cert_pem: cert.1, key_pem: key.1 } })
    }
}

/// A self-signed CA: its PEM and the issuer that signs with it.
fn root(name: &str, lifetime: Duration, now: OffsetDateTime) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params(name, lifetime, now);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn ca_params(name: &str, lifetime: Duration, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + lifetime;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

/// Checks that `cert` is signed by `ca`, matches `key` and is valid at
/// `now`, plus `extra` on the certificate; pushes every problem, each
/// prefixed with the input's name.
fn check_pair(
    ca: &(&str, String),
    cert: &(&str, String),
    key: &(&str, String),
    now: OffsetDateTime,
    problems: &mut Vec<String>,
    extra: impl FnOnce(&X509Certificate<'_>) -> Result<(), String>,
) {
    let ca_der = der(ca, problems);
    let cert_der = der(cert, problems);
    let key_pair = KeyPair::from_pem(&key.1)
        .map_err(|e| problems.push(format!("{}: not a PEM private key (PKCS#8, ECDSA or RSA): {e}", key.0)))
        .ok();
    let ca_x509 = parsed(&ca_der, ca.0, problems);
    let leaf = parsed(&cert_der, cert.0, problems);
    let (Some(ca_x509), Some(leaf)) = (ca_x509, leaf) else {
        return;
    };
    if !ca_x509.is_ca() {
        problems.push(format!("{}: not a CA certificate (basicConstraints cA is false)", ca.0));
    }
    if leaf.verify_signature(Some(ca_x509.public_key())).is_err() {
        problems.push(format!("{}: not signed by {}", cert.0, ca.0));
    }
    let at = x509_parser::time::ASN1Time::from_timestamp(now.unix_timestamp()).ok();
    for (name, c) in [(ca.0, &ca_x509), (cert.0, &leaf)] {
        if at.is_some_and(|at| !c.validity().is_valid_at(at)) {
            problems.push(format!(
                "{name}: not valid now (valid {} to {})",
                c.validity().not_before,
                c.validity().not_after
            ));
        }
    }
    if let Some(key_pair) = key_pair {
        if rcgen::PublicKeyData::subject_public_key_info(&key_pair) != leaf.public_key().raw {
            problems.push(format!("{}: does not match the public key of {}", key.0, cert.0));
        }
    }
    if let Err(problem) = extra(&leaf) {
        problems.push(format!("{}: {problem}", cert.0));
    }
}

fn parsed<'a>(der: &'a Option<CertificateDer<'static>>, name: &str, problems: &mut Vec<String>) -> Option<X509Certificate<'a>> {
    let der = der.as_ref()?;
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| problems.push(format!("{name}: does not parse as X.509: {e}")))
        .ok()
}

fn der(input: &(&str, String), problems: &mut Vec<String>) -> Option<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(input.1.as_bytes())
        .map_err(|e| problems.push(format!("{}: no PEM CERTIFICATE block: {e}", input.0)))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn named(name: &'static str, pem: &str) -> (&'static str, String) {
        (name, pem.to_owned())
    }

    #[test]
    fn generated_identity_pki_is_accepted_as_operator_input() {
        let now = OffsetDateTime::now_utc();
        let pki = IdentityPki::generate("cluster.local", 3650 * DAY, 365 * DAY, now).unwrap();
        let again = IdentityPki::from_pem(
            named("anchor", &pki.trust_anchor_pem),
            named("issuer", &pki.issuer.cert_pem),
            named("key", &pki.issuer.key_pem),
            now,
        )
        .unwrap();
        assert_eq!(again, pki);
    }

    #[test]
    fn mismatched_or_expired_identity_pki_is_refused_naming_each_input() {
        let now = OffsetDateTime::now_utc();
        let one = IdentityPki::generate("cluster.local", 3650 * DAY, 365 * DAY, now).unwrap();
        let other = IdentityPki::generate("cluster.local", 3650 * DAY, 365 * DAY, now).unwrap();
        let err = IdentityPki::from_pem(
            named("a.pem", &other.trust_anchor_pem),
            named("i.pem", &one.issuer.cert_pem),
            named("k.pem", &other.issuer.key_pem),
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("i.pem: not signed by a.pem"), "{err}");
        assert!(err.contains("k.pem: does not match the public key of i.pem"), "{err}");

        let later = now + 400 * DAY;
        let err = IdentityPki::from_pem(
            named("a.pem", &one.trust_anchor_pem),
            named("i.pem", &one.issuer.cert_pem),
            named("k.pem", &one.issuer.key_pem),
            later,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("i.pem: not valid now"), "{err}");
        assert!(!err.contains("a.pem"), "the anchor is still valid: {err}");

        let err = IdentityPki::from_pem(named("a.pem", "junk"), named("i.pem", ""), named("k.pem", "x"), now)
            .unwrap_err()
            .to_string();
        for name in ["a.pem: no PEM", "i.pem: no PEM", "k.pem: not a PEM private key"] {
            assert!(err.contains(name), "{name} in {err}");
        }
    }

    #[test]
    fn webhook_certificate_must_name_the_service() {
        let now = OffsetDateTime::now_utc();
        let pki = WebhookPki::generate("weft-control.weft.svc", 365 * DAY, now).unwrap();
        let input = |pki: &WebhookPki| {
            (named("ca", &pki.ca_pem), named("crt", &pki.serving.cert_pem), named("key", &pki.serving.key_pem))
        };
        let (ca, crt, key) = input(&pki);
        assert_eq!(WebhookPki::from_pem(ca, crt, key, "weft-control.weft.svc", now).unwrap(), pki);
        let (ca, crt, key) = input(&pki);
        let err = WebhookPki::from_pem(ca, crt, key, "weft-control.mesh.svc", now).unwrap_err().to_string();
        assert!(err.contains("crt: has DNS names [\"weft-control.weft.svc\"], not weft-control.mesh.svc"), "{err}");
    }
}
