//! Shared pieces of Weft's fuzz targets: driving the proxy's real HTTP
//! serving path (`stack::serve::serve_http`, as every listener calls it:
//! the framing checks, the connection's idle and header timers, the hyper
//! builder, the inbound request stack) over an in-memory stream, so one
//! input is one connection without sockets.
#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use mesh_proxy::tcp::detect::{detect, Detected, PrefixedIo};
use mesh_proxy::stack::{
    inbound::{Connection, InboundStack},
    serve::serve_http,
    Forwarder,
};
use mesh_proxy::http::{idle::Activity, phase::Phase};
use mesh_proxy::discovery::authz::Authz;
use mesh_proxy::metrics::{Direction, Metrics};
use mesh_proxy::http::router::Router;
use mesh_proxy::http::server::http_builder;
use mesh_proxy::config::Conns;
use mesh_proxy::{DefaultInboundPolicy, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A current-thread runtime whose clock is paused: timers (the header read
/// timeout, detection) fire as soon as every task waits, so a stalled
/// input ends at once instead of holding the fuzzer for seconds.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

/// The inbound request path with no route: every request goes through the
/// proxy's real layers (metrics, errors, limit, timeout, size checks,
/// routing) without dialing anything.
fn stack() -> &'static InboundStack {
    static STACK: OnceLock<InboundStack> = OnceLock::new();
    STACK.get_or_init(|| {
        let metrics = Arc::new(Metrics::new());
        let router = Router::from_routes(&[]).expect("an empty route table");
        let forwarder =
            Forwarder::inbound(router, Limits::default(), metrics.direction(Direction::Inbound).clone(), false);
        InboundStack::new(forwarder, metrics, &Limits::default())
    })
}

/// A port that takes plaintext (`--default-inbound-policy
/// all-unauthenticated`), so inputs reach the layers behind authorization.
fn open_port() -> Arc<Authz> {
    static AUTHZ: OnceLock<Arc<Authz>> = OnceLock::new();
    Arc::clone(AUTHZ.get_or_init(|| Arc::new(Authz::new(80, &Metrics::new(), DefaultInboundPolicy::AllUnauthenticated))))
}

/// How far one input got, for the targets' own checks.
#[derive(Debug, Default)]
pub struct Served {
    /// Bytes the server wrote back.
    pub response: Vec<u8>,
}

/// Writes `input` to the proxy's HTTP serving path (`serve_http` with the
/// builder and limits the listeners use) as one client connection,
/// half-closes, and reads everything the server answers. With
/// `detect_first` the bytes first go through the inbound listener's
/// protocol detection, as a plaintext inbound connection does.
pub fn serve(input: &[u8], detect_first: bool) -> Served {
    let input = input.to_vec();
    runtime().block_on(async move {
        let limits = Limits::default();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let server_task = tokio::spawn(async move {
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let stack = stack().service(Connection { client: None, peer, authz: open_port(), via: None });
            let builder = http_builder(&limits, &Conns::default());
            let mut server = server;
            let prefix = if detect_first {
                match detect(&mut server, limits.detect_timeout, Duration::from_secs(5), limits.max_header_bytes).await {
                    Ok(Detected::Protocol(_, bytes)) => bytes,
                    Ok(Detected::Nothing | Detected::Silent) | Err(_) => return,
                }
            } else {
                bytes::Bytes::new()
            };
            // What the accept loop hands every connection: its activity (the
            // idle and header-read timers), a drain watcher, a running phase.
            let shutdown = GracefulShutdown::new();
            let (_running, mut phase) = tokio::sync::watch::channel(Phase::Running);
            let io = PrefixedIo::new(prefix, server);
            let _ = serve_http(&builder, io, stack, &limits, Activity::new(), shutdown.watcher(), &mut phase).await;
        });
        // Write and read at once: a server answering while the client still
        // writes must not fill the in-memory pipe and stall both.
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let write = async {
            let _ = wr.write_all(&input).await;
            let _ = wr.shutdown().await;
        };
        let mut response = Vec::new();
        let read = rd.read_to_end(&mut response);
        let (_, _) = tokio::join!(write, read);
        drop(client);
        let _ = server_task.await;
        Served { response }
    })
}
