//! gRPC over h2c: the client side of a run (`weft.bench.v1.Bench` calls through tonic's
//! generated client, on our own hyper HTTP/2 connection) and the service `loadgen serve`
//! answers them with (tonic's generated server, called from the HTTP server's handler).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use http::Uri;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Request, Response, Status};

use super::engine::{tcp_connect, OpenError, Peer};
use super::Proto;
use crate::error_class;
use crate::serve::State as Pacer;

/// Messages and services generated from `proto/weft/bench/v1/bench.proto`.
pub mod pb {
    tonic::include_proto!("weft.bench.v1");
}

use pb::bench_client::BenchClient;
use pb::bench_server::{Bench, BenchServer};
use pb::{Payload, StreamRequest};

/// tonic's client over one hyper HTTP/2 connection: no tower buffer, no hidden pool, so a
/// run's connections are exactly the ones it opened and counted.
#[derive(Clone)]
pub(crate) struct Channel(http2::SendRequest<tonic::body::Body>);

type Pending = Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pending;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Pending {
        Box::pin(self.0.send_request(req))
    }
}

/// One h2c connection carrying many calls.
pub(crate) struct Conn {
    client: BenchClient<Channel>,
    /// The same connection's sender, to see it closed (the client has no accessor).
    sender: http2::SendRequest<tonic::body::Body>,
}

impl Conn {
    pub(crate) async fn open(peer: &Peer) -> Result<Conn, OpenError> {
        let io = TokioIo::new(tcp_connect(peer).await?);
        let handshake = |detail: String| OpenError::Handshake {
            what: "HTTP/2",
            detail,
        };
        let (sender, driver) = http2::Builder::new(TokioExecutor::new())
            // Large windows: a benchmark should not be throttled by flow control.
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(io)
            .await
            .map_err(|e| handshake(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "gRPC connection ended");
            }
        });
        // The origin gives every call its scheme and `:authority` (what a proxy routes on).
        let origin: Uri = format!("http://{}", peer.authority)
            .parse()
            .map_err(|e| handshake(format!("authority {:?}: {e}", peer.authority)))?;
        Ok(Conn {
            client: BenchClient::with_origin(Channel(sender.clone()), origin),
            sender,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// One unary call, or one whole stream: `Err` is its error class.
    pub(crate) fn call(
        &self,
        peer: Arc<Peer>,
    ) -> impl Future<Output = Result<(), &'static str>> + Send + 'static {
        let mut client = self.client.clone();
        async move {
            match peer.proto {
                Proto::GrpcStream { messages } => {
                    let req = StreamRequest {
                        messages,
                        body: peer.payload.clone(),
                    };
                    let mut stream = client.server_stream(req).await.map_err(class)?.into_inner();
                    let mut got = 0;
                    // The trailers' status arrives as the last `message()`'s error.
                    while stream.message().await.map_err(class)?.is_some() {
                        got += 1;
                    }
                    if got == messages {
                        Ok(())
                    } else {
                        Err(error_class::IO)
                    }
                }
                _ => {
                    let req = Payload {
                        body: peer.payload.clone(),
                    };
                    client.unary(req).await.map_err(class)?;
                    Ok(())
                }
            }
        }
    }
}

/// A call's failure as an error class: a transport failure (tonic keeps its source) is `io`,
/// a status the far end sent (the server, or a proxy answering for it) is `grpc_status`.
fn class(status: Status) -> &'static str {
    if std::error::Error::source(&status).is_some() {
        error_class::IO
    } else {
        error_class::GRPC_STATUS
    }
}

/// `loadgen serve`'s side of `weft.bench.v1.Bench`, paced like an HTTP response.
pub(crate) struct Service(pub(crate) Arc<Pacer>);

impl Service {
    /// Answers one gRPC request (any path: unknown methods get UNIMPLEMENTED from tonic).
    pub(crate) async fn call(
        pacer: Arc<Pacer>,
        req: http::Request<Incoming>,
        arrived: Instant,
    ) -> http::Response<tonic::body::Body> {
        let mut req = req;
        req.extensions_mut().insert(Arrived(arrived));
        let mut svc = BenchServer::new(Service(pacer));
        match tower::Service::call(&mut svc, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// When the request head arrived: the delay counts from there, as for HTTP.
#[derive(Clone, Copy)]
struct Arrived(Instant);

fn arrived<T>(req: &Request<T>) -> Instant {
    req.extensions()
        .get::<Arrived>()
        .map_or_else(Instant::now, |a| a.0)
}

type Payloads = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl Bench for Service {
    async fn unary(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        if self.0.pace(arrived(&req)).await {
            return Err(Status::unavailable(
                "loadgen serve: injected error (--error-rate)",
            ));
        }
        Ok(Response::new(Payload { body: self.0.body() }))
    }

    type ServerStreamStream = Payloads;

    async fn server_stream(&self, req: Request<StreamRequest>) -> Result<Response<Payloads>, Status> {
        if self.0.pace(arrived(&req)).await {
            return Err(Status::unavailable(
                "loadgen serve: injected error (--error-rate)",
            ));
        }
        let body = self.0.body();
        let n = req.into_inner().messages as usize;
        let messages = std::iter::repeat_with(move || Ok(Payload { body: body.clone() })).take(n);
        Ok(Response::new(Box::pin(futures_util::stream::iter(messages))))
    }
}
