//! The request body limit, before anything is forwarded: a declared
//! `Content-Length` above `--max-request-body-bytes` is a 413 at once. A
//! streamed body crossing the limit later is cut by `http::body::RequestBody`
//! (wrapped in `forward`).

use std::future::Future;

use http::{Request, Response};
use http_body::Body;

use super::{Layer, Service};
use crate::http::{body::ResponseBody, error::ProxyError};

/// Refuses requests that declare a body larger than `limit` bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    limit: u64,
}

impl BodyLimitLayer {
    /// At most `limit` bytes of declared request body.
    pub fn new(limit: u64) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit { inner, limit: self.limit }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Debug)]
pub struct BodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Body + Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        // hyper exposes a validated Content-Length as the exact size hint.
        let declared = req.body().size_hint().lower();
        async move {
            if declared > self.limit {
                return Err(ProxyError::BodyTooLarge { limit: self.limit });
            }
            self.inner.call(req).await
        }
    }
}
