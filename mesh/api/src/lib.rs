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

/// `weft.destination.v1`: proxies resolve an authority to a stream of
/// endpoint-set changes (with each endpoint's identity and protocol hint).
pub mod destination {
    pub mod v1 {
        tonic::include_proto!("weft.destination.v1");
    }
}

/// `weft.policy.v1`: outbound routes (Gateway API HTTPRoute/GRPCRoute in a
/// proxy-friendly form) and inbound authorizations, as streams.
pub mod policy {
    pub mod v1 {
        tonic::include_proto!("weft.policy.v1");
    }
}
