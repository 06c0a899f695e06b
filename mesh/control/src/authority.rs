//! The identity authority: decides whether to certify and signs. Knows
//! nothing of gRPC; `grpc` maps its refusals to statuses.

use std::sync::Arc;
use std::time::Duration;

use mesh_identity::{SpiffeId, SpiffeIdError};
use time::OffsetDateTime;

use crate::ca::{Ca, CaError, Issued};
use crate::csr::{self, CsrError};
use crate::token::{TokenError, TokenVerifier};

/// Why a certification request was refused. Nothing is issued for any of these.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("invalid identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("identity must be spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    NotWorkload,
    #[error("identity is outside trust domain {trust_domain}")]
    ForeignTrustDomain { trust_domain: String },
    #[error("token refused: {0}")]
    Token(#[from] TokenError),
    #[error("CSR refused: {0}")]
    Csr(#[from] CsrError),
    #[error("signing failed: {0}")]
    Ca(#[from] CaError),
}

/// How a refusal should be reported to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request can never succeed as sent.
    InvalidArgument,
    /// The caller did not prove the identity, or may not have it.
    PermissionDenied,
    /// Try again later.
    Unavailable,
    /// Our fault.
    Internal,
}

impl Refusal {
    /// The caller did not prove the identity (which one it was, and why,
    /// is for our log only: see `grpc::NOT_PROVEN`).
    pub fn is_unproven(&self) -> bool {
        matches!(self, Self::Token(_)) && self.kind() == RefusalKind::PermissionDenied
    }

    /// A short word for metrics (`weft_control_certificates_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Identity(_) => "invalid_identity",
            Self::NotWorkload => "not_workload",
            Self::ForeignTrustDomain { .. } => "foreign_trust_domain",
            Self::Token(TokenError::UnknownIdentity) => "unknown_identity",
            Self::Token(TokenError::Mismatch) => "token_mismatch",
            Self::Token(TokenError::NotConfigured) => "no_verifier",
            Self::Token(TokenError::NotAuthenticated(_)) => "token_not_authenticated",
            Self::Token(TokenError::AudienceMismatch { .. }) => "token_audience",
            Self::Token(TokenError::IdentityMismatch { .. }) => "token_identity_mismatch",
            Self::Token(TokenError::Unavailable(_)) => "verifier_unavailable",
            Self::Csr(_) => "invalid_csr",
            Self::Ca(_) => "signing_failed",
        }
    }

    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::Identity(_) | Self::NotWorkload | Self::Csr(_) => RefusalKind::InvalidArgument,
            Self::ForeignTrustDomain { .. } | Self::Token(TokenError::UnknownIdentity | TokenError::Mismatch) => {
                RefusalKind::PermissionDenied
            }
            Self::Token(
                TokenError::NotConfigured
                | TokenError::NotAuthenticated(_)
                | TokenError::AudienceMismatch { .. }
                | TokenError::IdentityMismatch { .. },
            ) => RefusalKind::PermissionDenied,
            Self::Token(TokenError::Unavailable(_)) => RefusalKind::Unavailable,
            Self::Ca(_) => RefusalKind::Internal,
        }
    }
}

/// Issues leaves for proven identities of one trust domain.
#[derive(Debug)]
pub struct Authority<V> {
    ca: Arc<Ca>,
    verifier: V,
    trust_domain: String,
    lifetime: Duration,
}

impl<V: TokenVerifier> Authority<V> {
    pub fn new(ca: impl Into<Arc<Ca>>, verifier: V, trust_domain: String, lifetime: Duration) -> Self {
        Self { ca: ca.into(), verifier, trust_domain, lifetime }
    }

    /// Checks, in order, the identity's shape and trust domain, the token,
    /// then the CSR (so an unproven caller learns nothing about CSR rules),
    /// and signs. Every refusal is logged with the identity and reason.
    pub async fn certify(&self, identity: &str, token: &[u8], csr_der: &[u8]) -> Result<Issued, Refusal> {
        let result = self.check_and_issue(identity, token, csr_der).await;
        match &result {
            Ok(issued) => tracing::info!(
                identity,
                serial = %hex(&issued.serial),
                not_after = %issued.not_after,
                "issued certificate"
            ),
            Err(reason) => tracing::warn!(identity, %reason, "refused certification"),
        }
        result
    }

    async fn check_and_issue(&self, identity: &str, token: &[u8], csr_der: &[u8]) -> Result<Issued, Refusal> {
        let id = SpiffeId::parse(identity)?;
        if id.trust_domain() != self.trust_domain {
            return Err(Refusal::ForeignTrustDomain { trust_domain: self.trust_domain.clone() });
        }
        if id.namespace_and_service_account().is_none() {
            return Err(Refusal::NotWorkload);
        }
        self.verifier.verify(&id, token).await?;
        let key = csr::check(csr_der, &id)?;
        Ok(self.ca.issue(&id, &key, self.lifetime, OffsetDateTime::now_utc())?)
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
