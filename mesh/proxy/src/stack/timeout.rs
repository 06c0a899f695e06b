//! The request timeout, to the last byte: from the request head to the end
//! of the response body. A response head that comes too late is a 504; a
//! body still streaming at the deadline is cut (the head is gone, so the
//! stream is reset, or the HTTP/1 connection closed) and counted in
//! `weft_response_body_timeouts_total`.
//!
//! One timer serves both halves: it is started here and handed to the
//! response body, so a request costs one timer entry, as before.

use std::{future::Future, pin::pin, time::Duration};

use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;

use super::{Layer, Service};
use crate::http::{
    body::{Deadline, ResponseBody},
    error::ProxyError,
};

/// Bounds each request by `after`, head and body.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    after: Duration,
    cut: Counter,
}

impl TimeoutLayer {
    /// `cut` counts bodies cut at the deadline.
    pub fn new(after: Duration, cut: Counter) -> Self {
        Self { after, cut }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, layer: self.clone() }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug)]
pub struct Timeout<S> {
    inner: S,
    layer: TimeoutLayer,
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        async move {
            let after = self.layer.after;
            // Boxed because it outlives this future: the body keeps it.
            let mut sleep = Box::pin(tokio::time::sleep(after));
            let resp = {
                let call = pin!(self.inner.call(req));
                tokio::select! {
                    biased;
                    resp = call => resp?,
                    () = sleep.as_mut() => return Err(ProxyError::RequestTimeout { after }),
                }
            };
            Ok(resp.map(|body| body.with_deadline(Deadline::new(sleep, after, self.layer.cut.clone()))))
        }
    }
}
