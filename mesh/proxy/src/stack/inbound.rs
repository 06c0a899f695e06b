//! The inbound request path, assembled once per connection (the client's
//! identity, its port's policy and, transparent, the app upstream are
//! known when it is accepted) from parts every connection shares.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use mesh_identity::SpiffeId;
use tower::ServiceBuilder;

use super::{
    authorize::AuthorizeLayer,
    body_limit::BodyLimitLayer,
    errors::ErrorsLayer,
    forward::{Forward, Forwarder, Via},
    limit::{LimitLayer, Limiter},
    loop_guard::LoopGuardLayer,
    shed::{ShedLayer, Shedder},
    metrics::MetricsLayer,
    timeout::TimeoutLayer,
    validate::ValidateLayer,
    Service,
};
use crate::{
    config::Limits,
    discovery::authz::Authz,
    http::body::ResponseBody,
    metrics::{Direction, DirectionMetrics, Metrics},
};

/// What every inbound connection's stack shares: built once per proxy.
#[derive(Debug, Clone)]
pub struct InboundStack {
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
    direction: Arc<DirectionMetrics>,
    limiter: Arc<Limiter>,
    shedder: Arc<Shedder>,
    timeout: Duration,
    body_limit: u64,
    max_hops: u32,
}

/// Who is on the other end of one inbound connection, and what it may reach.
#[derive(Debug)]
pub struct Connection {
    /// The client's verified SPIFFE ID (mTLS); `None`: plaintext.
    pub client: Option<SpiffeId>,
    /// The client's address, for the refusal log.
    pub peer: SocketAddr,
    /// The port's authorization (its policy, or the default until known).
    pub authz: Arc<Authz>,
    /// Transparent: the app upstream (else the forwarder's own router).
    pub via: Option<Via>,
}

impl InboundStack {
    /// The inbound stack around `forwarder`, bounded by `limits`; `metrics`
    /// for the per-client counts.
    pub fn new(forwarder: Arc<Forwarder>, metrics: Arc<Metrics>, limits: &Limits) -> Self {
        let direction = Arc::new(forwarder.metrics().clone());
        let (limiter, shedder) = super::admission(&forwarder, limits);
        Self {
            forwarder,
            metrics,
            direction,
            limiter,
            shedder,
            timeout: limits.request_timeout,
            body_limit: limits.max_request_body_bytes,
            max_hops: limits.max_hops,
        }
    }

    /// The inbound direction's metrics.
    pub fn metrics(&self) -> &DirectionMetrics {
        &self.direction
    }

    /// The request path of one connection.
    pub fn service(&self, conn: Connection) -> impl Service<Request<Incoming>, Response = Response<ResponseBody>> + 'static {
        // Resolved once per connection: a request costs one atomic add for
        // the per-client count and a header value clone.
        let client_metrics = conn.client.as_ref().map(|id| Arc::new(self.metrics.client(id.as_str())));
        let client_header = conn.client.as_ref().and_then(|id| HeaderValue::from_str(id.as_str()).ok());
        let peer = conn.client.as_ref().map(|id| Arc::from(id.as_str()));
        ServiceBuilder::new()
            .layer(MetricsLayer::new(Arc::clone(&self.direction)).with_client(client_metrics).with_peer(peer))
            .layer(ErrorsLayer::new(Direction::Inbound, Arc::clone(&self.direction)))
            .layer(ValidateLayer)
            .layer(LoopGuardLayer::new(None, self.max_hops))
            .layer(AuthorizeLayer::new(conn.authz, conn.client, conn.peer))
            .layer(ShedLayer::new(Arc::clone(&self.shedder)))
            .layer(LimitLayer::new(Arc::clone(&self.limiter)))
            .layer(TimeoutLayer::new(self.timeout, self.direction.body_timeouts().clone()))
            .layer(BodyLimitLayer::new(self.body_limit))
            .service(Forward::new(Arc::clone(&self.forwarder), conn.via, client_header))
    }
}
