//! Body wrappers on the request path.
//!
//! [`RequestBody`] enforces the request-body limit while streaming (a
//! declared `Content-Length` is checked before forwarding, in `forward`).
//! [`ResponseBody`] is either an upstream's body or a short proxy-generated
//! one; for pooled HTTP/1 upstream connections it hands the connection back
//! to the pool once the body has been read to the end, because only then is
//! the connection free for the next request.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, client::conn::http1};
use prometheus_client::metrics::counter::Counter;
use tokio::{sync::OwnedSemaphorePermit, time::Sleep};

use crate::{
    http::{
        pace::{Pace, PaceError},
        pool::{self, StreamSlot},
    },
    metrics::http::Meter,
};

/// A pooled HTTP/1 upstream connection's request half.
pub type H1Sender = http1::SendRequest<RequestBody>;

/// An HTTP/1 connection on loan to one response body (`http::pool`).
pub type PooledSender = pool::PooledSender<RequestBody>;

/// A downstream request body that fails once more than `limit` bytes flow,
/// or a body already buffered in memory (a request that may be retried).
#[derive(Debug)]
pub struct RequestBody<B = Incoming> {
    inner: Inner<B>,
    remaining: u64,
    limit: u64,
    /// How slowly the client may send it (`http::pace`); `None`: no bound.
    pace: Option<Pace>,
}

#[derive(Debug)]
enum Inner<B> {
    Stream(B),
    Buffered(Option<Bytes>),
}

/// Why a [`RequestBody`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The body grew past the configured limit while streaming.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// Reading from the downstream client failed.
    #[error("reading the request body failed: {0}")]
    Downstream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The client sent the body too slowly.
    #[error(transparent)]
    Slow(#[from] PaceError),
}

impl<B> RequestBody<B> {
    /// Wraps `inner`, allowing at most `limit` bytes of data.
    pub fn new(inner: B, limit: u64) -> Self {
        Self { inner: Inner::Stream(inner), remaining: limit, limit, pace: None }
    }

    /// This body, cut when the client sends it slower than `pace` allows.
    pub fn paced(mut self, pace: Pace) -> Self {
        self.pace = Some(pace);
        self
    }

    /// A body whose bytes are already here (each retry gets a cheap clone).
    pub fn buffered(bytes: Bytes) -> Self {
        let len = bytes.len() as u64;
        Self { inner: Inner::Buffered((!bytes.is_empty()).then_some(bytes)), remaining: 0, limit: len, pace: None }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Inner::Stream(inner) => inner,
            Inner::Buffered(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        let polled = Pin::new(inner).poll_frame(cx);
        let polled = match (polled, &mut this.pace) {
            (Poll::Pending, Some(pace)) => return pace.poll_waiting(cx).map(|e| Some(Err(e.into()))),
            (polled, pace) => {
                if let (Poll::Ready(Some(Ok(frame))), Some(pace)) = (&polled, pace) {
                    pace.arrived(frame.data_ref().map_or(0, |d| d.len() as u64));
                }
                ready!(polled)
            }
        };
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.remaining = 0;
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit: this.limit })));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(RequestBodyError::Downstream(e.into())))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(inner) => inner.is_end_stream(),
            Inner::Buffered(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(inner) => inner.size_hint(),
            Inner::Buffered(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// What the downstream client receives.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    /// Past it the rest of an upstream body is refused (`stack::timeout`).
    deadline: Option<Deadline>,
    /// Held until the body is gone (a `stack::limit` slot).
    held: Option<OwnedSemaphorePermit>,
    /// The HTTP/2 stream it arrives on, counted until the body ends.
    stream: Option<StreamSlot>,
    /// Counts the response at its end, error or drop (`stack::metrics`).
    meter: Option<Meter>,
}

/// The request deadline, carried into the response body.
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    after: Duration,
    cut: Counter,
}

impl Deadline {
    /// A body still streaming when `sleep` fires is cut and counted in
    /// `cut`; `after` is the timeout, for the error.
    pub fn new(sleep: Pin<Box<Sleep>>, after: Duration, cut: Counter) -> Self {
        Self { sleep, after, cut }
    }
}

/// Why a response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream's body failed.
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// The request timeout passed with the body still streaming.
    #[error("the response body was not complete within the request timeout of {}; cut", humantime::format_duration(*.0))]
    Deadline(Duration),
}

#[derive(Debug)]
enum Kind {
    Upstream {
        body: Incoming,
        /// Returned to its pool when `body` ends; dropped (closing the
        /// connection) if the body is abandoned half-read.
        pooled: Option<PooledSender>,
        done: bool,
    },
    Full(Option<Bytes>),
}

impl ResponseBody {
    fn of(kind: Kind) -> Self {
        Self { kind, deadline: None, held: None, stream: None, meter: None }
    }

    /// A body produced by the proxy itself.
    pub fn full(bytes: Bytes) -> Self {
        Self::of(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::of(Kind::Full(None))
    }

    /// An upstream body; `pooled` goes back to its pool when the body ends.
    pub fn upstream(body: Incoming, pooled: Option<PooledSender>) -> Self {
        Self::of(Kind::Upstream { body, pooled, done: false })
    }

    /// This body, cut when `deadline` passes before its end. A body already
    /// complete (the proxy's own, or an empty one) needs no timer.
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        if !self.is_end_stream() && matches!(self.kind, Kind::Upstream { .. }) {
            self.deadline = Some(deadline);
        }
        self
    }

    /// This body, counting `stream` on its HTTP/2 connection until it ends.
    pub fn with_stream(mut self, stream: StreamSlot) -> Self {
        self.stream = Some(stream);
        self
    }

    /// This body, holding `permit` until it is dropped.
    pub fn hold(mut self, permit: OwnedSemaphorePermit) -> Self {
        self.held = Some(permit);
        self
    }

    /// This body, counted by `meter` when it ends (success), fails or is
    /// dropped before its end (failure).
    pub fn metered(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // Checked before every frame: a body that keeps streaming is cut too.
        if let Some(deadline) = &mut this.deadline {
            if deadline.sleep.as_mut().poll(cx).is_ready() {
                deadline.cut.inc();
                let after = deadline.after;
                // Dropping the upstream body resets its stream (h2) or,
                // unpooled, closes its connection (HTTP/1).
                this.deadline = None;
                this.kind = Kind::Full(None);
                this.stream = None;
                if let Some(m) = &mut this.meter {
                    m.body_timeout();
                    m.finish(true);
                }
                return Poll::Ready(Some(Err(ResponseBodyError::Deadline(after))));
            }
        }
        match &mut this.kind {
            Kind::Full(bytes) => {
                let frame = bytes.take();
                if let (None, Some(m)) = (&frame, &mut this.meter) {
                    m.finish(false);
                }
                Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
            }
            Kind::Upstream { body, pooled, done } => {
                let frame = ready!(Pin::new(body).poll_frame(cx)).map(|f| f.map_err(ResponseBodyError::from));
                match &frame {
                    None => {
                        *done = true;
                        if let Some(p) = pooled.take() {
                            p.release();
                        }
                        // Complete: the timer is not needed any more, and
                        // the stream is free for another request.
                        this.deadline = None;
                        this.stream = None;
                        if let Some(m) = &mut this.meter {
                            m.finish(false);
                        }
                    }
                    Some(Err(_)) => {
                        // The upstream connection is broken: never reuse it.
                        pooled.take();
                        if let Some(m) = &mut this.meter {
                            m.finish(true);
                        }
                    }
                    Some(Ok(f)) => {
                        if let (Some(t), Some(m)) = (f.trailers_ref(), &mut this.meter) {
                            m.trailers(t);
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, done, .. } => *done || body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may never poll a body it already knows is empty (HEAD, 204,
        // Content-Length: 0), or poll past its declared length, so
        // completion is also checked here.
        if let Some(mut m) = self.meter.take() {
            m.finish(!self.is_end_stream());
        }
        if let Kind::Upstream { body, pooled, done } = &mut self.kind {
            if let Some(p) = pooled.take() {
                if *done || body.is_end_stream() {
                    p.release();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn request_body_within_limit_passes_through() {
        let body = RequestBody::new(Full::new(Bytes::from_static(b"hello")), 5);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
    }

    #[tokio::test]
    async fn request_body_over_limit_fails_mid_stream() {
        let chunks = futures_util::stream::iter(
            (0..4).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"0123456789")))),
        );
        let mut body = RequestBody::new(StreamBody::new(chunks), 25);
        let mut seen = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => seen += f.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("limit not enforced"),
            }
        };
        assert_eq!(seen, 20);
        assert!(matches!(err, RequestBodyError::TooLarge { limit: 25 }));
    }

    #[tokio::test]
    async fn full_response_body() {
        let b = ResponseBody::full(Bytes::from_static(b"abc"));
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(&b.collect().await.unwrap().to_bytes()[..], b"abc");
        assert!(ResponseBody::empty().is_end_stream());
    }
}
