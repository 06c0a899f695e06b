//! Downstream listeners: accept, detect HTTP/1 vs HTTP/2 (h2c prior
//! knowledge), serve with hyper, and drain gracefully on shutdown.

use std::{io, net::SocketAddr, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tracing::{debug, warn};

use crate::config::{Conns, Limits};

/// Lifecycle phases broadcast to every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting and serving.
    Running,
    /// Not accepting; in-flight requests finish.
    Draining,
    /// Everything stops, including the admin listener.
    Exiting,
}

/// Streams one client may have open on one HTTP/2 connection (hyper's
/// default, stated: a bound, not a throughput knob; a peer proxy with more
/// requests opens more connections).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// The hyper connection builder shared by the proxy listeners.
pub fn http_builder(limits: &Limits, conns: &Conns) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers a head larger than its read buffer with 431.
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        // The h2 crate answers an oversized header list with 431 itself.
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A vanished client (or peer proxy) is found by its missing PING
        // acknowledgement, not ~15 minutes of TCP retransmits.
        .keep_alive_interval(conns.h2_keepalive_interval)
        .keep_alive_timeout(conns.h2_keepalive_timeout)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        // Rapid reset (CVE-2023-44487): streams a client opens and resets
        // before we accept them, and streams we reset for its protocol
        // errors, are bounded; past them the connection gets GOAWAY.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        // Grow the windows with the measured bandwidth-delay product
        // instead of a fixed 1 MiB, so one busy connection is not capped.
        .adaptive_window(true);
    b
}

/// Accept from `listener` until the phase leaves `Running`, handing each
/// connection to `handle` on its own task, then close the listening socket
/// and wait until every connection is done: hyper connections drain
/// gracefully through their [`Watcher`], and every task (TCP relays
/// included) holds a sender of a channel whose close says all are gone.
/// The caller bounds the wait.
pub(crate) async fn serve_connections<F, Fut>(listener: TcpListener, mut phase: watch::Receiver<Phase>, handle: F)
where
    F: Fn(TcpStream, SocketAddr, Watcher, watch::Receiver<Phase>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    while let Some((stream, peer)) = accept_next(&listener, &mut phase).await {
        let connection = handle(stream, peer, graceful.watcher(), phase.clone());
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _open = open;
            connection.await;
        });
    }
    drop(listener);
    drop(open_tx);
    graceful.shutdown().await;
    let _ = open_rx.recv().await;
}

/// The next connection of `listener` (TCP_NODELAY set), or `None` once the
/// phase leaves `Running`. Every traffic listener's accept loop goes through here.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    phase: &mut watch::Receiver<Phase>,
) -> Option<(TcpStream, SocketAddr)> {
    accept_until(listener, phase, |p| *p != Phase::Running).await
}

/// [`accept_next`] with the phase that stops accepting chosen by the caller
/// (the admin listener keeps answering `/ready` while traffic drains).
pub(crate) async fn accept_until(
    listener: &TcpListener,
    phase: &mut watch::Receiver<Phase>,
    stop: impl Fn(&Phase) -> bool,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(&stop) => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "set TCP_NODELAY failed");
                }
                return Some((stream, peer));
            }
            Err(e) => accept_backoff(e).await,
        }
    }
}

/// Accept errors are mostly per-connection (the peer gave up) and can be
/// ignored; running out of descriptors is not, and retrying at once would
/// spin, so back off briefly.
pub(crate) async fn accept_backoff(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => debug!(error = %e, "accept failed"),
        _ => {
            warn!(error = %e, "accept failed; backing off");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
