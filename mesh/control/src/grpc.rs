//! gRPC services: `weft.identity.v1.Identity` (here, wrapping the
//! [`Authority`]), and the discovery services generic over the index traits.

pub mod destination;
pub mod policy;

use std::sync::Arc;

use mesh_api::identity::v1::identity_server::{Identity, IdentityServer};
use mesh_api::identity::v1::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use crate::authority::{Authority, RefusalKind};
use crate::token::TokenVerifier;

/// The gRPC face of an [`Authority`].
#[derive(Debug)]
pub struct IdentityService<V> {
    authority: Arc<Authority<V>>,
}

impl<V: TokenVerifier> IdentityService<V> {
    pub fn new(authority: Arc<Authority<V>>) -> IdentityServer<Self> {
        IdentityServer::new(Self { authority })
    }
}

#[tonic::async_trait]
impl<V: TokenVerifier> Identity for IdentityService<V> {
    async fn certify(&self, request: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        let CertifyRequest { identity, token, csr_der } = request.into_inner();
        match self.authority.certify(&identity, &token, &csr_der).await {
            Ok(issued) => Ok(Response::new(CertifyResponse {
                leaf_der: issued.leaf_der,
                chain_der: issued.chain_der,
                valid_until_unix_ms: (issued.not_after.unix_timestamp_nanos() / 1_000_000) as i64,
            })),
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
