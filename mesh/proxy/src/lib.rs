//! mesh-proxy: Weft's sidecar micro-proxy, forwarding HTTP/1.1 and HTTP/2 between an application and its peers.
//!
//! ```text
//!            app                                           peer
//!             │ HTTP/1.1 or h2c                              │
//!   ┌─────────▼──────────┐                        ┌──────────▼─────────┐
//!   │ outbound listener  │                        │ inbound listener   │
//!   │ route by authority │ ─── same protocol ───> │ everything -> app  │
//!   └────────────────────┘                        └────────────────────┘
//!        admin listener: /metrics (Prometheus), /ready, /live
//! ```
//!
//! One module per concern: [`config`]/[`cli`] (validated at load),
//! [`router`] (authority -> upstream), [`headers`] (hop-by-hop removal),
//! [`body`] (body limit, pooled response bodies), [`upstream`] (connection
//! pools), [`error`] (proxy-generated responses), [`metrics`] and
//! [`histogram`] (lock-free recording), [`forward`] (the stack, assembled),
//! [`server`] (listeners, graceful drain) and [`admin`].
//!
//! Entry points: [`run`] serves until SIGTERM/SIGINT; [`serve`] takes any
//! shutdown future, for embedding and tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod forward;
pub mod headers;
pub mod histogram;
pub mod metrics;
pub mod router;
pub mod server;
pub mod upstream;

use std::{
    future::Future,
    io::{self, Write},
    net::SocketAddr,
    sync::Arc,
};

use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

pub use crate::config::{Config, ConfigError, Limits, Route};
use crate::{
    admin::Health,
    forward::Forwarder,
    metrics::{Direction, Metrics},
    router::Router,
    server::Phase,
    upstream::Upstream,
};

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot bind the {listener} listener to {addr}: {source} (is the port in use, or the address not local?)")]
    Bind {
        /// `outbound`, `inbound` or `admin`.
        listener: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// Announcing the bound addresses on stdout failed.
    #[error("cannot write the listening addresses to stdout: {0}")]
    Announce(#[source] io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] io::Error),
}

/// Serves until SIGTERM or SIGINT, then drains and returns. A second signal
/// during the drain cuts it short.
///
/// Signal handlers are installed before the listeners are announced, so a
/// signal sent as soon as the addresses are read is a graceful shutdown,
/// never the default kill.
pub async fn run(config: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let (first_tx, first) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(async move {
        for (n, tx) in [(1, first_tx), (2, second_tx)] {
            tokio::select! {
                _ = term.recv() => info!(n, "SIGTERM received"),
                _ = int.recv() => info!(n, "SIGINT received"),
            }
            let _ = tx.send(());
        }
    });
    let result = serve_until(
        config,
        async move {
            let _ = first.await;
        },
        async move {
            // A dropped sender (signal task gone) must not force anything.
            if second.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
    )
    .await;
    signals.abort();
    result
}

/// Binds every listener, prints `listening <name> <ip:port>` per listener on
/// stdout, serves until `shutdown` completes, then stops accepting, reports
/// not-ready, and lets in-flight requests finish for up to the drain timeout.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    serve_until(config, shutdown, std::future::pending()).await
}

/// [`serve`], with `force` ending the drain early when it completes.
async fn serve_until(
    config: Config,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) -> Result<(), RunError> {
    config.validate()?;
    let outbound = bind("outbound", config.outbound_listen).await?;
    let inbound = match config.app {
        Some(_) => Some(bind("inbound", config.inbound_listen).await?),
        None => None,
    };
    let admin = bind("admin", config.admin_listen).await?;
    announce(&outbound, inbound.as_ref(), &admin).map_err(RunError::Announce)?;

    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let builder = Arc::new(server::http_builder(&config.limits));
    let limits = config.limits;

    let admin_task = tokio::spawn(admin::serve_admin(admin, Arc::clone(&metrics), health.clone(), phase.clone()));
    let mut proxies = Vec::with_capacity(2);
    let outbound_fwd = Forwarder::new(
        Direction::Outbound,
        Router::from_routes(&config.routes),
        limits,
        metrics.direction(Direction::Outbound).clone(),
    );
    proxies.push(tokio::spawn(server::serve_proxy(
        outbound,
        outbound_fwd,
        Arc::clone(&builder),
        limits.header_read_timeout,
        phase.clone(),
    )));
    if let (Some(listener), Some(app)) = (inbound, config.app) {
        let inbound_fwd = Forwarder::new(
            Direction::Inbound,
            Router::single(Upstream::new(app)),
            limits,
            metrics.direction(Direction::Inbound).clone(),
        );
        proxies.push(tokio::spawn(server::serve_proxy(
            listener,
            inbound_fwd,
            Arc::clone(&builder),
            limits.header_read_timeout,
            phase.clone(),
        )));
    }
    health.set_ready(true);
    info!(routes = config.routes.len(), app = ?config.app, "proxy ready");

    shutdown.await;
    health.set_ready(false);
    phase_tx.send_replace(Phase::Draining);
    info!(timeout = %humantime::format_duration(config.drain_timeout), "draining in-flight requests");
    tokio::select! {
        drained = tokio::time::timeout(config.drain_timeout, futures_util::future::join_all(proxies)) => match drained {
            Ok(_) => info!("drained"),
            Err(_) => warn!("drain timeout reached; exiting with requests still in flight"),
        },
        _ = force => warn!("second signal; exiting with requests still in flight"),
    }
    phase_tx.send_replace(Phase::Exiting);
    let _ = admin_task.await;
    Ok(())
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { listener, addr, source })
}

/// Tools bind port 0 and read the real addresses from these lines.
fn announce(outbound: &TcpListener, inbound: Option<&TcpListener>, admin: &TcpListener) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening outbound {}", outbound.local_addr()?)?;
    if let Some(inbound) = inbound {
        writeln!(out, "listening inbound {}", inbound.local_addr()?)?;
    }
    writeln!(out, "listening admin {}", admin.local_addr()?)?;
    out.flush()
}
