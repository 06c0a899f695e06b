//! Weft control plane's discovery index: Services, endpoints with workload
//! identities, Gateway API routes and authorization policy, served as
//! watch-style lookups. Knows nothing of Kubernetes clients, YAML or gRPC.
//!
//! ```text
//!  backends (manifests dir | Kubernetes watchers)      gRPC servers (mesh-control)
//!        │ Change::{Upsert(Resource), Delete}                 ▲ watch::Receiver<Arc<View>>
//!        ▼                                                    │
//!  Index::apply ──> Store (objects + reverse indexes) ──> Touched (Services, identities
//!                    services, cluster IPs, slices by       the write reaches) ──> only the
//!                    service and by pod, routes by parent   watches filed under those are
//!                    and by backend, policies               recomputed; woken if changed
//!
//!  DiscoverDestination::watch_destination(authority)   -> DestinationView
//!  DiscoverPolicy::watch_outbound(authority, client ns) -> OutboundPolicy
//!  DiscoverPolicy::watch_inbound(workload, port)        -> InboundPolicy
//! ```
#![forbid(unsafe_code)]

mod destination;
mod inbound;
mod index;
pub mod model;
mod outbound;
pub mod route;
mod store;
pub mod target;
mod touched;
pub mod views;
mod watches;

pub use index::{DiscoverDestination, DiscoverPolicy, Index, LookupError, Stats};
pub use model::DefaultPolicy;
pub use target::Target;
pub use views::{DestinationView, Endpoint, InboundPolicy, OutboundPolicy, ProtocolHint, Workload};

/// What the index needs to know about the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// DNS domain of Services: `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Trust domain of workload identities: `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// Inbound default for namespaces without `weft.io/default-inbound-policy`.
    pub default_inbound_policy: DefaultPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            trust_domain: "cluster.local".to_owned(),
            default_inbound_policy: DefaultPolicy::AllUnauthenticated,
        }
    }
}
