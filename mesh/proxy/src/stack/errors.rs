//! Proxy failures become responses: an HTTP status with `weft-proxy-error`
//! naming the reason, or for a gRPC request a gRPC status a gRPC client
//! understands (trailers-only); each counted by kind.

use std::{future::Future, sync::Arc};

use http::{Request, Response};
use tracing::debug;

use super::{Layer, Service};
use crate::{
    http::{body::ResponseBody, error::ProxyError, headers::is_grpc},
    metrics::{error_kind::ErrorKind, Direction, DirectionMetrics},
};

/// Answers every [`ProxyError`] of the inner service.
#[derive(Debug, Clone)]
pub struct ErrorsLayer {
    direction: Direction,
    metrics: Arc<DirectionMetrics>,
}

impl ErrorsLayer {
    /// Errors counted in `metrics` (`weft_proxy_errors_total`).
    pub fn new(direction: Direction, metrics: Arc<DirectionMetrics>) -> Self {
        Self { direction, metrics }
    }
}

impl<S> Layer<S> for ErrorsLayer {
    type Service = Errors<S>;

    fn layer(&self, inner: S) -> Errors<S> {
        Errors { inner, layer: self.clone() }
    }
}

/// See [`ErrorsLayer`].
#[derive(Debug)]
pub struct Errors<S> {
    inner: S,
    layer: ErrorsLayer,
}

impl<S, B> Service<Request<B>> for Errors<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Response<ResponseBody>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        // Decided before the request is gone.
        let grpc = is_grpc(&req);
        async move {
            match self.inner.call(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    debug!(direction = %self.layer.direction, error = %e, "proxy error");
                    let kind = e.kind();
                    self.layer.metrics.record_error(kind);
                    if kind == ErrorKind::Timeout {
                        crate::metrics::http::note(|r| r.timeout = true);
                    }
                    match grpc {
                        true => e.into_grpc_response(),
                        false => e.into_response(),
                    }
                }
            }
        }
    }
}
