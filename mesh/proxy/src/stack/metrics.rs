//! Counts every response sent downstream: status class and the time from
//! the request head to the response head, per direction and (inbound,
//! meshed clients) per client identity.

use std::{future::Future, sync::Arc, time::Instant};

use http::{Request, Response};

use super::{Layer, Service};
use crate::{
    http::body::ResponseBody,
    metrics::{ClientMetrics, DirectionMetrics},
};

/// Records each response in the direction's metrics, and in one meshed
/// client's when the connection has a verified client.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<DirectionMetrics>,
    client: Option<Arc<ClientMetrics>>,
}

impl MetricsLayer {
    /// Responses counted in `metrics`.
    pub fn new(metrics: Arc<DirectionMetrics>) -> Self {
        Self { metrics, client: None }
    }

    /// Also counted per client (`weft_inbound_requests_by_client_total`);
    /// resolved once per connection, so a request costs one atomic add.
    pub fn with_client(mut self, client: Option<Arc<ClientMetrics>>) -> Self {
        self.client = client;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner, layer: self.clone() }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S, B> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>>,
    B: Send,
{
    type Response = Response<ResponseBody>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        async move {
            let start = Instant::now();
            let resp = self.inner.call(req).await;
            self.layer.metrics.record_response(resp.status(), start.elapsed());
            if let Some(client) = &self.layer.client {
                client.record(resp.status());
            }
            resp
        }
    }
}
