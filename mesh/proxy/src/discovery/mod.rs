//! Where endpoints and policy come from, behind two small watch-style
//! traits, so the request path never sees a transport.
//!
//! ```text
//!  DestinationSource::resolve(authority) ─> watch<Option<Arc<EndpointSet>>>
//!  PolicySource::outbound(authority)     ─> watch<Option<Arc<OutboundPolicy>>>
//!  PolicySource::inbound(port)           ─> watch<Option<Arc<InboundPolicy>>>
//!        implemented by: grpc (mesh-control's Destination/Policy streams)
//!                        memory (tests, embedding)
//! ```
//!
//! `None` means "nothing known yet". A source never goes back to `None`:
//! when its stream breaks it keeps the last value in force and reconnects,
//! so the control plane going away never stops traffic.

pub mod accrual;
pub mod authz;
pub mod balance;
pub mod grpc;
pub mod memory;
pub mod outbound;
pub mod policy;
pub mod retry;

use std::{net::SocketAddr, sync::Arc};

use mesh_identity::SpiffeId;
use tokio::sync::watch;

use crate::discovery::policy::{InboundPolicy, OutboundPolicy};

/// How to talk to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolHint {
    /// Unmeshed or unknown: the request's own protocol, plaintext.
    Unknown,
    /// Meshed: Weft mTLS, HTTP over one HTTP/2 connection.
    H2,
    /// Meshed opaque TCP port (weft-tcp/1).
    Opaque,
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative balancing weight (10000 by default).
    pub weight: u32,
    /// The SPIFFE ID its certificate must carry; `None`: unmeshed.
    pub identity: Option<SpiffeId>,
    /// How to speak to it.
    pub hint: ProtocolHint,
}

impl Endpoint {
    /// An unmeshed endpoint with the default weight.
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, weight: DEFAULT_WEIGHT, identity: None, hint: ProtocolHint::Unknown }
    }
}

/// Destination's default endpoint weight.
pub const DEFAULT_WEIGHT: u32 = 10_000;

/// The current endpoints of an authority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// The control plane knows the authority (a Service). `false` with no
    /// endpoints: unknown, forward to the authority itself if it is an
    /// `ip:port`.
    pub exists: bool,
    /// Ready endpoints, in no particular order.
    pub endpoints: Vec<Endpoint>,
}

/// The receiving end of a resolution.
pub type Resolution = watch::Receiver<Option<Arc<EndpointSet>>>;
/// The receiving end of an outbound policy watch.
pub type OutboundWatch = watch::Receiver<Option<Arc<OutboundPolicy>>>;
/// The receiving end of an inbound policy watch.
pub type InboundWatch = watch::Receiver<Option<Arc<InboundPolicy>>>;

/// Resolves authorities to live endpoint sets.
pub trait DestinationSource: Send + Sync + 'static {
    /// Starts (or joins) watching `authority` (`host:port`, lower-case).
    fn resolve(&self, authority: &str) -> Resolution;
}

/// Streams outbound and inbound policy.
pub trait PolicySource: Send + Sync + 'static {
    /// The outbound policy of `authority` (`host:port`, lower-case).
    fn outbound(&self, authority: &str) -> OutboundWatch;
    /// The inbound policy of this workload's `port`.
    fn inbound(&self, port: u16) -> InboundWatch;
}
