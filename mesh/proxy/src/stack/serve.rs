//! Serving HTTP on one downstream connection (every listener: explicit
//! outbound, inbound, transparent outbound), and the explicit-mode
//! listener itself.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http::{Request, Response};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
};
use tracing::debug;

use super::{flood::FloodIo, outbound::OutboundStack, shed::Arrived, validate::FramingIo, Service};
use crate::{
    metrics::tcp::{CloseError, CountingIo},
    config::{Conns, Limits},
    http::{
        admit::ConnLimit,
        body::ResponseBody,
        idle::{drive, Activity, Tracked},
        server::{serve_connections, Phase},
    },
};

/// Why a served connection ended early (hyper's error, boxed).
pub type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTP on `io` with `stack` until the connection ends (`activity`
/// is the connection's, from the accept loop): request
/// framing recorded for validation, HTTP/2 control-frame floods closed
/// ([`FloodIo`]), every request tracked from head to the
/// last body byte so idle connections close (`--header-read-timeout`
/// before the first request, `--http-idle-timeout` after), and a graceful
/// shutdown when the phase leaves `Running`. `watcher` is held to the end,
/// so a drain waits for this connection.
pub async fn serve_http<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    stack: S,
    limits: &Limits,
    activity: Activity,
    watcher: Watcher,
    phase: &mut watch::Receiver<Phase>,
) -> Result<(), ConnError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ResponseBody>> + 'static,
{
    let stack = Arc::new(stack);
    let (io, framing) = FramingIo::new(io, limits.max_header_bytes);
    let (io, flooded) = FloodIo::new(io);
    let requests = activity.clone();
    // Only shedding reads the stamp (off by default): no clock read per
    // request otherwise.
    let stamp = limits.shed.enabled();
    let service = service_fn(move |mut req| {
        // hyper calls this as it parses the head (HTTP/2: in the
        // connection's task, before the stream's own task first runs).
        if stamp {
            req.extensions_mut().insert(Arrived::now());
        }
        framing.mark(&mut req);
        let in_flight = requests.request();
        let stack = Arc::clone(&stack);
        async move { Ok::<_, Infallible>(stack.call(req).await.map(|body| Tracked::new(body, in_flight))) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let _watcher = watcher;
    let served = drive(conn, &activity, limits.header_read_timeout, Conns::current().http_idle_timeout, phase);
    tokio::select! {
        ended = served => ended,
        () = flooded.past_grace() => Err("HTTP/2 control-frame flood: GOAWAY not taken by the client in time; closed".into()),
    }
}

/// Serves the explicit-mode outbound listener until the phase leaves
/// `Running`, then closes the listening socket (new connections are
/// refused) and waits for the in-flight connections to finish. The caller
/// bounds the wait.
pub async fn serve_proxy(
    listener: TcpListener,
    stack: OutboundStack,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    limit: Arc<ConnLimit>,
    phase: watch::Receiver<Phase>,
) {
    serve_connections(listener, phase, limit, |stream, peer: SocketAddr, watcher, mut phase, activity| {
        let open = stack.metrics().connection_opened();
        let meter = stack.metrics().tcp().accept();
        // Explicit mode routes by authority; one stack per connection for
        // its metrics' label cache.
        let service = stack.service(None);
        let builder = Arc::clone(&builder);
        async move {
            let _open = open;
            // Protocol detection waits for the first bytes and has no timer
            // of its own: a silent client must not hold a socket forever,
            // and must not hold up a drain.
            // `peek` waits for real bytes; `readable()` may wake spuriously.
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)) => {
                    if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                        debug!(%peer, "client sent nothing in time; closing");
                        return;
                    }
                }
                _ = phase.wait_for(|p| *p != Phase::Running) => return,
            }
            // The app's side: no mesh identity.
            meter.identify(None, false);
            let stream = CountingIo::new(stream, Arc::clone(&meter), 0);
            // Boxed: hyper's connection state is allocated once bytes
            // arrive, not held by every silent connection (an idle flood).
            if let Err(e) = Box::pin(serve_http(&builder, stream, service, &limits, activity, watcher, &mut phase)).await {
                meter.failed(CloseError::of(&*e));
                debug!(%peer, error = %e, "downstream connection ended with error");
            }
        }
    })
    .await;
}
