//! Why a connection did not make it through the mTLS / plaintext-policy
//! gate (or, in `--transparent` mode, the original-destination check), in
//! words an operator can act on and as a metric label.
//!
//! Handshake failures arrive as `io::Error`s wrapping a `rustls::Error`;
//! mesh-identity's own identity checks arrive as a `PeerIdentityError`
//! inside `CertificateError::Other`. Both are unpacked here so a log line
//! says "unknown CA" or "wrong identity" rather than a debug dump.

use std::{fmt, io};

use mesh_identity::PeerIdentityError;
use rustls::{CertificateError, Error as TlsError};

/// The reason label of `weft_refused_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Plaintext on a port that requires mTLS.
    Plaintext = 0,
    /// The peer's chain does not lead to our trust anchors.
    UnknownCa = 1,
    /// The peer's certificate is expired (or not yet valid).
    Expired = 2,
    /// Valid chain, but not the SPIFFE ID expected (or another trust domain).
    WrongIdentity = 3,
    /// The peer presented no certificate (e.g. not certified yet).
    NoCertificate = 4,
    /// The peer aborted the handshake (it refused us).
    PeerRefused = 5,
    /// Any other TLS failure (malformed certificate, no common ALPN, ...).
    Handshake = 6,
    /// This proxy has no certificate yet, so it cannot take part.
    NotCertified = 7,
    /// `--transparent`: the original destination is one of this proxy's
    /// own listeners (a client dialed the proxy port, or a redirect loop).
    Loop = 8,
    /// `--transparent`: the connection has no original destination (it was
    /// not redirected by iptables).
    NoOriginalDst = 9,
}

impl Refusal {
    /// Every reason, indexed by its discriminant.
    pub const ALL: [Refusal; 10] = [
        Refusal::Plaintext,
        Refusal::UnknownCa,
        Refusal::Expired,
        Refusal::WrongIdentity,
        Refusal::NoCertificate,
        Refusal::PeerRefused,
        Refusal::Handshake,
        Refusal::NotCertified,
        Refusal::Loop,
        Refusal::NoOriginalDst,
    ];

    /// The metric label.
    pub fn as_label(self) -> &'static str {
        match self {
            Refusal::Plaintext => "plaintext",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::WrongIdentity => "wrong_identity",
            Refusal::NoCertificate => "no_certificate",
            Refusal::PeerRefused => "peer_refused",
            Refusal::Handshake => "handshake",
            Refusal::NotCertified => "not_certified",
            Refusal::Loop => "loop",
            Refusal::NoOriginalDst => "no_original_dst",
        }
    }

    /// The words used in log lines and proxy error responses.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Plaintext => "plaintext refused",
            Refusal::UnknownCa => "unknown CA",
            Refusal::Expired => "certificate expired",
            Refusal::WrongIdentity => "wrong identity",
            Refusal::NoCertificate => "no client certificate",
            Refusal::PeerRefused => "refused by peer",
            Refusal::Handshake => "TLS handshake failed",
            Refusal::NotCertified => "this proxy has no certificate yet",
            Refusal::Loop => "redirect loop",
            Refusal::NoOriginalDst => "no original destination",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Classifies a failed TLS accept/connect (or the first I/O after a TLS 1.3
/// client handshake, where the server's verdict arrives).
pub fn classify_io(err: &io::Error) -> Refusal {
    match err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
        Some(tls) => classify(tls),
        None => Refusal::Handshake,
    }
}

/// Classifies a rustls error.
pub fn classify(err: &TlsError) -> Refusal {
    match err {
        TlsError::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Refusal::UnknownCa,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Refusal::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Refusal::WrongIdentity
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<PeerIdentityError>() {
                Some(PeerIdentityError::Unexpected { .. } | PeerIdentityError::ForeignTrustDomain { .. }) => {
                    Refusal::WrongIdentity
                }
                _ => Refusal::Handshake,
            },
            _ => Refusal::Handshake,
        },
        TlsError::NoCertificatesPresented => Refusal::NoCertificate,
        TlsError::AlertReceived(_) => Refusal::PeerRefused,
        _ => Refusal::Handshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn classifies_rustls_errors() {
        assert_eq!(classify_io(&io(TlsError::InvalidCertificate(CertificateError::UnknownIssuer))), Refusal::UnknownCa);
        assert_eq!(classify_io(&io(TlsError::InvalidCertificate(CertificateError::BadSignature))), Refusal::UnknownCa);
        assert_eq!(classify_io(&io(TlsError::InvalidCertificate(CertificateError::Expired))), Refusal::Expired);
        assert_eq!(classify_io(&io(TlsError::NoCertificatesPresented)), Refusal::NoCertificate);
        assert_eq!(
            classify_io(&io(TlsError::AlertReceived(rustls::AlertDescription::BadCertificate))),
            Refusal::PeerRefused
        );
        assert_eq!(classify_io(&io::Error::from(io::ErrorKind::ConnectionReset)), Refusal::Handshake);
    }

    #[test]
    fn labels_index_all() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
