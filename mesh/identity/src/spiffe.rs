//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), the only names Weft
//! identities carry: one URI SAN in every workload certificate, no CN.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const SCHEME: &str = "spiffe://";
/// The SPIFFE spec caps a trust domain at 255 bytes and a whole ID at 2048.
const MAX_TRUST_DOMAIN: usize = 255;
const MAX_ID: usize = 2048;

/// A validated SPIFFE ID with a non-empty path (a workload, not a trust
/// domain). Compared and hashed by its canonical string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    /// Byte offset where the path (starting with `/`) begins.
    path_at: usize,
}

/// Why a string is not a usable SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{0:?} is not a SPIFFE ID: it must start with \"spiffe://\"")]
    Scheme(String),
    #[error("{0:?} is not a SPIFFE ID: the trust domain must be 1-255 characters of a-z, 0-9, '.', '-', '_'")]
    TrustDomain(String),
    #[error("{0:?} is not a workload SPIFFE ID: it needs a path such as /ns/<namespace>/sa/<service-account>")]
    NoPath(String),
    #[error("{0:?} is not a SPIFFE ID: path segments must be non-empty, not '.' or '..', and use only A-Z, a-z, 0-9, '.', '-', '_'")]
    Path(String),
    #[error("SPIFFE ID is longer than {MAX_ID} bytes")]
    TooLong,
}

impl SpiffeId {
    /// Parses and validates `s` per the SPIFFE ID spec (no query, fragment,
    /// port or user info; lowercase trust domain; clean path).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_ID {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.is_empty()
            || td.len() > MAX_TRUST_DOMAIN
            || !td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(SpiffeIdError::TrustDomain(s.to_owned()));
        }
        if path.is_empty() {
            return Err(SpiffeIdError::NoPath(s.to_owned()));
        }
        let clean_segment = |seg: &str| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !path[1..].split('/').all(clean_segment) {
            return Err(SpiffeIdError::Path(s.to_owned()));
        }
        Ok(Self { uri: s.to_owned(), path_at: SCHEME.len() + td.len() })
    }

    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, the
    /// shape every Weft workload identity has.
    pub fn workload(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"))
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.path_at]
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.uri[self.path_at..]
    }

    /// `(namespace, service_account)` when the path is exactly `/ns/<ns>/sa/<sa>`.
    pub fn namespace_and_service_account(&self) -> Option<(&str, &str)> {
        let mut segs = self.path()[1..].split('/');
        match (segs.next(), segs.next(), segs.next(), segs.next(), segs.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The whole ID as a URI string.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The SPIFFE ID of a DER certificate: its single URI SAN (X509-SVID
    /// rules: exactly one URI SAN, and it must be a SPIFFE ID).
    pub fn from_cert_der(der: &[u8]) -> Result<Self, CertIdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertIdentityError::Parse(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertIdentityError::Parse(e.to_string()))?
            .ok_or(CertIdentityError::NoUriSan)?;
        let mut uris = san.value.general_names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let uri = uris.next().ok_or(CertIdentityError::NoUriSan)?;
        if uris.next().is_some() {
            return Err(CertIdentityError::ManyUriSans);
        }
        Ok(Self::parse(uri)?)
    }
}

/// Why a certificate does not name a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertIdentityError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate has no URI subject alternative name (no SPIFFE ID)")]
    NoUriSan,
    #[error("certificate has more than one URI subject alternative name")]
    ManyUriSans,
    #[error(transparent)]
    Invalid(#[from] SpiffeIdError),
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_ids() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/default/sa/web");
        assert_eq!(id.namespace_and_service_account(), Some(("default", "web")));
        assert_eq!(id, SpiffeId::workload("cluster.local", "default", "web").unwrap());
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        let other = SpiffeId::parse("spiffe://td/a/b/c").unwrap();
        assert_eq!(other.namespace_and_service_account(), None);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:80/ns/a/sa/b",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a/sa/b#f",
            "spiffe://cluster.local/ns/a b/sa/c",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} must be rejected");
        }
    }
}
