//! The outbound request path, assembled: explicit mode (routed by
//! authority) and `--transparent` (to each connection's original
//! destination) share one stack shape and one limit.

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceBuilder;

use super::{
    body_limit::BodyLimitLayer,
    errors::ErrorsLayer,
    forward::{Forward, Forwarder, Via},
    limit::{LimitLayer, Limiter},
    shed::{ShedLayer, Shedder},
    loop_guard::{LoopGuardLayer, OwnOutbound},
    metrics::MetricsLayer,
    timeout::TimeoutLayer,
    validate::ValidateLayer,
    Service,
};
use crate::{
    config::Limits,
    http::body::ResponseBody,
    metrics::{Direction, DirectionMetrics},
};

/// What every outbound request shares: built once per proxy.
#[derive(Debug, Clone)]
pub struct OutboundStack {
    forwarder: Arc<Forwarder>,
    metrics: Arc<DirectionMetrics>,
    limiter: Arc<Limiter>,
    shedder: Arc<Shedder>,
    timeout: Duration,
    body_limit: u64,
    max_hops: u32,
    /// Explicit mode: requests naming the outbound listener are loops.
    own: Option<OwnOutbound>,
}

impl OutboundStack {
    /// The outbound stack around `forwarder`, bounded by `limits`.
    pub fn new(forwarder: Arc<Forwarder>, limits: &Limits) -> Self {
        let metrics = Arc::new(forwarder.metrics().clone());
        let (limiter, shedder) = super::admission(&forwarder, limits);
        Self {
            forwarder,
            metrics,
            limiter,
            shedder,
            timeout: limits.request_timeout,
            body_limit: limits.max_request_body_bytes,
            max_hops: limits.max_hops,
            own: None,
        }
    }

    /// Refuses requests (routed by authority) that name `own`, the
    /// outbound listener itself.
    pub fn refusing_loops(mut self, own: OwnOutbound) -> Self {
        self.own = Some(own);
        self
    }

    /// The outbound direction's metrics.
    pub fn metrics(&self) -> &DirectionMetrics {
        &self.metrics
    }

    /// The request path: routed by authority, or (`--transparent`, one per
    /// connection) to `via`.
    /// Build one per connection: the metrics layer caches the label sets
    /// of the connection's requests.
    pub fn service(&self, via: Option<Via>) -> impl Service<Request<Incoming>, Response = Response<ResponseBody>> + 'static {
        // A transparent connection goes to its original destination,
        // whatever its requests' Host says: that is its authority.
        let authority = via.as_ref().map(|via| -> Arc<str> {
            match via {
                Via::Discovered(target) => Arc::from(target.authority()),
                Via::Upstream(up) => Arc::from(up.addr().to_string()),
            }
        });
        ServiceBuilder::new()
            .layer(MetricsLayer::new(Arc::clone(&self.metrics)).with_authority(authority))
            .layer(ErrorsLayer::new(Direction::Outbound, Arc::clone(&self.metrics)))
            .layer(ValidateLayer)
            .layer(LoopGuardLayer::new(self.own.clone().filter(|_| via.is_none()), self.max_hops))
            .layer(ShedLayer::new(Arc::clone(&self.shedder)))
            .layer(LimitLayer::new(Arc::clone(&self.limiter)))
            .layer(TimeoutLayer::new(self.timeout, self.metrics.body_timeouts().clone()))
            .layer(BodyLimitLayer::new(self.body_limit))
            .service(Forward::new(Arc::clone(&self.forwarder), via, None))
    }
}
