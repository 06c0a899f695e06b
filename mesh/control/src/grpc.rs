//! gRPC services: `weft.identity.v1.Identity` (here, wrapping the
//! [`Authority`]), and the discovery services generic over the index traits.

pub mod destination;
pub mod policy;
pub mod streams;

use std::sync::Arc;

use mesh_api::identity::v1::identity_server::{Identity, IdentityServer};
use mesh_api::identity::v1::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use crate::authority::{Authority, RefusalKind};
use crate::metrics::ControlMetrics;
use crate::ratelimit::{retry_after, CertifyLimiter, Limited};
use crate::token::TokenVerifier;

/// What every caller whose token does not prove the identity it claims is
/// told, whatever the reason (unknown identity, wrong token, expired or
/// foreign ServiceAccount token): one status and one text, so answers do
/// not reveal which identities exist. The reason is logged here.
pub const NOT_PROVEN: &str = "the token does not prove this identity";

/// The gRPC face of an [`Authority`], behind Certify's rate limits.
#[derive(Debug)]
pub struct IdentityService<V> {
    authority: Arc<Authority<V>>,
    limiter: Arc<CertifyLimiter>,
    metrics: ControlMetrics,
}

impl<V: TokenVerifier> IdentityService<V> {
    /// Issued and refused certificates are counted in `metrics`.
    pub fn new(authority: Arc<Authority<V>>, limiter: Arc<CertifyLimiter>, metrics: ControlMetrics) -> IdentityServer<Self> {
        IdentityServer::new(Self { authority, limiter, metrics })
    }
}

#[tonic::async_trait]
impl<V: TokenVerifier> Identity for IdentityService<V> {
    async fn certify(&self, request: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        let peer = request.remote_addr();
        if let Err(which) = self.limiter.check(peer.map(|a| a.ip())) {
            let limits = self.limiter.limits();
            let (scope, rate) = match which {
                Limited::Global => ("all callers", limits.global),
                Limited::Peer => ("this client address", limits.per_peer),
            };
            tracing::warn!(peer = ?peer, scope, "Certify rate limit exceeded");
            self.metrics.certificate_refused("rate_limited");
            return Err(Status::resource_exhausted(format!(
                "Certify rate limit exceeded for {scope} ({} per second, bursts of {}); retry in {}",
                rate.per_second,
                rate.burst,
                humantime::format_duration(retry_after(rate))
            )));
        }
        let CertifyRequest { identity, token, csr_der } = request.into_inner();
        let certified = self.authority.certify(&identity, &token, &csr_der).await;
        match &certified {
            Ok(_) => self.metrics.certificate_issued(),
            Err(refusal) => self.metrics.certificate_refused(refusal.reason()),
        }
        match certified {
            Ok(issued) => Ok(Response::new(CertifyResponse {
                leaf_der: issued.leaf_der,
                chain_der: issued.chain_der,
                valid_until_unix_ms: (issued.not_after.unix_timestamp_nanos() / 1_000_000) as i64,
            })),
            Err(refusal) if refusal.is_unproven() => Err(Status::permission_denied(NOT_PROVEN)),
            Err(refusal) => {
                let message = format!("{identity}: {refusal}");
                Err(match refusal.kind() {
                    RefusalKind::InvalidArgument => Status::invalid_argument(message),
                    RefusalKind::PermissionDenied => Status::permission_denied(message),
                    RefusalKind::Unavailable => Status::unavailable(message),
                    RefusalKind::Internal => Status::internal(message),
                })
            }
        }
    }
}
