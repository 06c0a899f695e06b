//! A tower layer around mesh-control's gRPC routes that counts every call
//! by method and final gRPC status: from the response headers when tonic
//! answers trailers-only (refusals), else from the body's trailers (a watch
//! that mesh-control ends at shutdown gets `OK` there), and as `Cancelled`
//! when the body is dropped before its trailers (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};

use super::ControlMetrics;

/// gRPC's code for a call the client cancelled.
const CANCELLED: i32 = 1;
/// gRPC's code when a status is missing or unreadable.
const UNKNOWN: i32 = 2;

#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: ControlMetrics,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: ControlMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: ControlMetrics,
}

impl<S, B, ResBody> tower::Service<Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let mut pending = Some(Pending { metrics, path });
            // Trailers-only (tonic's refusals): the status is in the headers.
            if let Some(code) = grpc_status(response.headers()) {
                if let Some(p) = pending.take() {
                    p.record(code);
                }
            }
            Ok(response.map(|inner| CountedBody { inner, pending }))
        })
    }
}

/// A call not counted yet.
#[derive(Debug)]
struct Pending {
    metrics: ControlMetrics,
    path: String,
}

impl Pending {
    fn record(self, code: i32) {
        self.metrics.grpc_request(&self.path, code);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let value = headers.get("grpc-status")?;
    Some(value.to_str().ok().and_then(|v| v.parse().ok()).unwrap_or(UNKNOWN))
}

pin_project_lite::pin_project! {
    /// The response body; counts its call once, at its trailers, its end or its drop.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.record(CANCELLED);
            }
        }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(p) = this.pending.take() {
                        p.record(grpc_status(trailers).unwrap_or(UNKNOWN));
                    }
                }
            }
            // An error ends the stream without a status the client can read.
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                if let Some(p) = this.pending.take() {
                    p.record(UNKNOWN);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, Service, ServiceExt};

    async fn call<B: Send + 'static>(metrics: &ControlMetrics, response: Response<B>) -> Response<CountedBody<B>> {
        let mut response = Some(response);
        let service = tower::service_fn(move |_req: Request<()>| {
            let response = response.take().expect("one call");
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let mut service = GrpcMetricsLayer::new(metrics.clone()).layer(service);
        let request = Request::builder().uri("/weft.identity.v1.Identity/Certify").body(()).unwrap();
        service.ready().await.unwrap().call(request).await.unwrap()
    }

    #[tokio::test]
    async fn counts_trailers_only_trailers_and_cancelled_calls() {
        let metrics = ControlMetrics::default();
        // Trailers-only refusal.
        let refused = Response::builder().header("grpc-status", "7").body(Full::<Bytes>::default()).unwrap();
        drop(call(&metrics, refused).await);
        // A unary answer whose status comes in trailers.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = Full::new(Bytes::from_static(b"x")).with_trailers(async move { Some(Ok(trailers)) });
        let ok = call(&metrics, Response::new(body)).await;
        ok.into_body().collect().await.unwrap();
        // A stream dropped before its end.
        drop(call(&metrics, Response::new(Full::<Bytes>::default())).await);
        let text = metrics.encode();
        for code in ["PermissionDenied", "OK", "Cancelled"] {
            let line = format!(r#"weft_control_grpc_requests_total{{method="weft.identity.v1.Identity/Certify",code="{code}"}} 1"#);
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
