//! The request path as layers: one concern per file, each a [`Service`]
//! and its [`Layer`], assembled per direction in [`outbound`] and
//! [`inbound`].
//!
//! ```text
//!  downstream request                     outbound  inbound
//!    │ metrics     status class + latency     ✓        ✓  (+ per meshed client); per authority,
//!    │             route, peer to the last byte (metrics::http; route/peer noted by inner layers)
//!    │ errors      ProxyError -> HTTP / gRPC   ✓        ✓
//!    │ validate    HTTP/1 CL + TE, 1.1 no Host ✓        ✓  -> 400 (framing read by validate::FramingIo)
//!    │             (h2 control-frame floods: GOAWAY from flood::FloodIo, under the connection)
//!    │ loop_guard  authority = own listener    ✓           -> 502 loop (explicit mode only)
//!    │             weft-hops >= --max-hops     ✓        ✓  -> 502 loop; else forwarded with one more
//!    │ authorize   policy verdict -> 403                ✓  (per connection)
//!    │ shed        queue time in the proxy     ✓        ✓  overloaded (standing queue) -> 503 overloaded
//!    │ limit       in flight + bounded queue   ✓        ✓  full -> 503 overloaded
//!    │ timeout     deadline to the last byte   ✓        ✓  head late -> 504, body late -> cut
//!    │ body_limit  declared Content-Length     ✓        ✓  over --max-request-body-bytes -> 413
//!    ▼ forward     route, headers, upgrade, streamed body limit, upstream (see forward)
//! ```
//!
//! Layers are tower [`Layer`]s. Services implement this module's
//! [`Service`] rather than `tower::Service`: tower's trait needs a nameable
//! future, so every layer would need a hand-written future type or a box
//! per request; with `async` in the trait each layer reads as straight-line
//! code and the assembled stack is one future. Its one allocation per
//! request is `forward`'s (a new upstream connection boxes its dial too): that future is most of the stack's size, and each layer
//! moves its inner future into place when first polled, so boxing it keeps
//! what the admission layers build, move and the server copies into each
//! stream's task small (3 KiB against 16 KiB; a shed costs half the CPU,
//! see docs/FIGURES.md). Every layer is always ready (a full limit answers at once instead
//! of holding back readiness), so `poll_ready` has nothing to say here.

pub mod authorize;
pub mod body_limit;
pub mod errors;
pub mod flood;
pub mod forward;
pub mod inbound;
pub mod limit;
pub mod loop_guard;
pub mod metrics;
pub mod outbound;
pub mod serve;
pub mod shed;
pub mod timeout;
pub mod validate;

use std::{future::Future, sync::Arc};

pub use forward::{Forward, Forwarder, Via, CLIENT_ID_HEADER};
pub use tower::Layer;

/// An asynchronous function from a request to a response, shared by
/// every connection that calls it (`&self`).
pub trait Service<Req>: Send + Sync {
    /// What a call resolves to.
    type Response;

    /// Handles one request.
    fn call(&self, req: Req) -> impl Future<Output = Self::Response> + Send;
}

impl<S: Service<Req>, Req> Service<Req> for Arc<S> {
    type Response = S::Response;

    fn call(&self, req: Req) -> impl Future<Output = Self::Response> + Send {
        S::call(self, req)
    }
}

/// One listener direction's admission guards over its load-shed metrics:
/// the request caps (`limit`) and shedding by queue time (`shed`). Both
/// stacks build theirs here, so the two directions cannot drift apart.
fn admission(forwarder: &Forwarder, limits: &crate::config::Limits) -> (Arc<limit::Limiter>, Arc<shed::Shedder>) {
    let load_shed = forwarder.metrics().load_shed().clone();
    let limiter = limit::Limiter::new(
        limits.max_concurrent_requests,
        limits.max_queued_requests,
        limits.request_timeout,
        load_shed.clone(),
    );
    (limiter, shed::Shedder::new(limits.shed, load_shed))
}
