//! Weft's gRPC API between proxies and the control plane: protobuf messages
//! and tonic clients/servers generated at build time from `proto/` (compiled
//! by protox, no `protoc` needed).
#![forbid(unsafe_code)]

/// `weft.identity.v1`: workloads exchange a proof of identity and a CSR for a
/// short-lived certificate.
pub mod identity {
    pub mod v1 {
        tonic::include_proto!("weft.identity.v1");
    }
}
