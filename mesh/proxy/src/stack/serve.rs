//! The explicit-mode HTTP listener: every connection served by one
//! outbound stack.

use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch};
use tracing::debug;

use super::{outbound::OutboundStack, validate::FramingIo, Service as _};
use crate::http::{
    idle::{drive, Activity, Tracked},
    server::{accept_next, Phase},
};

/// Serves one proxy listener until the phase leaves `Running`, then closes
/// the listening socket (new connections are refused) and waits for the
/// in-flight connections to finish. The caller bounds the wait.
pub async fn serve_proxy(
    listener: TcpListener,
    stack: OutboundStack,
    builder: Arc<auto::Builder<TokioExecutor>>,
    header_read_timeout: Duration,
    max_head: usize,
    http_idle_timeout: Duration,
    mut phase: watch::Receiver<Phase>,
) {
    let service = Arc::new(stack.service(None));
    let graceful = GracefulShutdown::new();
    loop {
        let Some((stream, peer)) = accept_next(&listener, &mut phase).await else {
            break;
        };
        let service = Arc::clone(&service);
        let open = stack.metrics().connection_opened();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let mut phase = phase.clone();
        tokio::spawn(async move {
            let _open = open;
            // Protocol detection waits for the first bytes and has no timer
            // of its own: a silent client must not hold a socket forever, and
            // must not hold up a drain.
            // `peek` waits for real bytes; `readable()` may wake spuriously.
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(header_read_timeout, stream.peek(&mut first)) => {
                    if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                        debug!(%peer, "client sent nothing in time; closing");
                        return;
                    }
                }
                _ = phase.wait_for(|p| *p != Phase::Running) => return,
            }
            let (io, framing) = FramingIo::new(stream, max_head);
            let activity = Activity::new();
            let requests = activity.clone();
            let service = service_fn(move |mut req| {
                framing.mark(&mut req);
                let in_flight = requests.request();
                let service = Arc::clone(&service);
                async move { Ok::<_, Infallible>(service.call(req).await.map(|body| Tracked::new(body, in_flight))) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            // The drain waits for this task through the watcher; `drive`
            // shuts the connection down on the phase change itself.
            let _watcher = watcher;
            if let Err(e) = drive(conn, &activity, header_read_timeout, http_idle_timeout, &mut phase).await {
                debug!(%peer, error = %e, "downstream connection ended with error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
