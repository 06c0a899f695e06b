//! Downstream listeners: accept, detect HTTP/1 vs HTTP/2 (h2c prior
//! knowledge), serve with hyper, and drain gracefully on shutdown.

use std::{
    fs::File,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use futures_util::FutureExt as _;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    config::{Conns, Limits},
    http::{admit::ConnLimit, idle::Activity},
    metrics::{DirectionMetrics, Shed},
};

pub use crate::http::phase::Phase;

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
        // What one connection can queue in the proxy (--http2-max-concurrent-streams):
        // past it the client holds its requests, not this proxy's memory.
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
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
/// connection admitted by `limit` to `handle` on its own task, then close
/// the listening socket and wait until every connection is done: hyper
/// connections drain gracefully through their [`Watcher`], and every task
/// (TCP relays included) holds a sender of a channel whose close says all
/// are gone. The caller bounds the wait.
///
/// `handle` gets the connection's [`Activity`]: HTTP serving tracks its
/// requests there, relays hold it busy for their whole life; a connection
/// with nothing in flight may be closed (its task dropped) when `limit`
/// needs room for a new one.
pub(crate) async fn serve_connections<F, Fut>(
    listener: TcpListener,
    mut phase: watch::Receiver<Phase>,
    limit: Arc<ConnLimit>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher, watch::Receiver<Phase>, Activity) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    while let Some((stream, peer)) = accept_next(&listener, &mut phase, limit.metrics()).await {
        let Some(admitted) = limit.admit() else {
            drop(stream);
            continue;
        };
        let connection = handle(stream, peer, graceful.watcher(), phase.clone(), admitted.activity().clone());
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _open = open;
            tokio::select! {
                () = connection => {}
                () = admitted.evicted() => debug!(%peer, "idle connection closed to make room (connection cap)"),
            }
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
    metrics: Option<&DirectionMetrics>,
) -> Option<(TcpStream, SocketAddr)> {
    accept_until(listener, phase, |p| *p != Phase::Running, metrics).await
}

/// [`accept_next`] with the phase that stops accepting chosen by the caller
/// (the admin listener keeps answering `/ready` while traffic drains).
pub(crate) async fn accept_until(
    listener: &TcpListener,
    phase: &mut watch::Receiver<Phase>,
    stop: impl Fn(&Phase) -> bool,
    metrics: Option<&DirectionMetrics>,
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
            Err(e) if out_of_fds(&e) => shed_without_fds(listener, metrics, &e).await,
            Err(e) => accept_backoff(e).await,
        }
    }
}

/// Accept errors are mostly per-connection (the peer gave up) and can be
/// ignored; anything else is unexpected: back off briefly rather than spin.
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

/// EMFILE (this process) or ENFILE (the system) out of descriptors.
fn out_of_fds(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(nix::errno::Errno::EMFILE as i32) || code == Some(nix::errno::Errno::ENFILE as i32)
}

/// One descriptor held back for [`shed_without_fds`]: opened at start
/// ([`reserve_fd`]), given up to accept one pending connection when the
/// process is out of descriptors, taken again after.
static SPARE_FD: Mutex<Option<File>> = Mutex::new(None);

/// Sheds since the last log line, and when that line was written.
static SHED_LOG: Mutex<(u64, Option<Instant>)> = Mutex::new((0, None));

/// One warn line per this long while descriptors run out.
const SHED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Opens the reserve descriptor (once at start; again after each use).
pub(crate) fn reserve_fd() {
    let mut spare = SPARE_FD.lock().unwrap_or_else(|e| e.into_inner());
    if spare.is_none() {
        *spare = File::open("/dev/null").ok();
    }
}

/// Out of descriptors, the pending connection cannot be accepted and stays
/// in the backlog, so the listener is ready again at once: retrying spins,
/// sleeping lets clients wait for nothing. Instead close the reserve
/// descriptor, accept the pending connection on it and close it (the client
/// sees the connection closed, the backlog drains), then take the reserve
/// again. Counted (`weft_shed_connections_total{reason="no_fds"}`) and
/// logged at most once per [`SHED_LOG_INTERVAL`].
async fn shed_without_fds(listener: &TcpListener, metrics: Option<&DirectionMetrics>, e: &io::Error) {
    let spare = SPARE_FD.lock().unwrap_or_else(|e| e.into_inner()).take();
    let shed = match spare {
        Some(spare) => {
            drop(spare);
            // The connection is pending: the accept completes at once.
            let shed = matches!(listener.accept().now_or_never(), Some(Ok(_)));
            reserve_fd();
            shed
        }
        None => false,
    };
    if shed {
        if let Some(m) = metrics {
            m.record_shed(Shed::NoFds);
        }
    }
    {
        let mut log = SHED_LOG.lock().unwrap_or_else(|e| e.into_inner());
        log.0 += u64::from(shed);
        if log.1.is_none_or(|at| at.elapsed() >= SHED_LOG_INTERVAL) {
            warn!(
                error = %e,
                shed_since_last_line = log.0,
                "out of file descriptors: closing new connections at accept (raise the process's RLIMIT_NOFILE)"
            );
            *log = (0, Some(Instant::now()));
        }
    }
    if !shed {
        // No reserve (another listener holds it, or it could not be
        // reopened): nothing to shed with; yield briefly instead of spinning.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (a sidecar holds a
/// descriptor per downstream and upstream connection; distributions still
/// default the soft limit to 1024), logged.
pub(crate) fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open-files limit (RLIMIT_NOFILE); keeping it"),
        },
        Ok((soft, _)) => info!(limit = soft, "open-files limit (RLIMIT_NOFILE) already at its hard limit"),
        Err(e) => warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)"),
    }
}
