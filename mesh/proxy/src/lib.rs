//! mesh-proxy: Weft's sidecar micro-proxy, forwarding HTTP/1.1, HTTP/2 and opaque TCP between an application and its peers, with zero-config mTLS between meshed proxies.
//!
//! ```text
//!            app                                                peer
//!             │ HTTP/1.1 or h2c                                   │
//!   ┌─────────▼──────────┐  meshed route: mTLS, ONE h2 conn  ┌──────────▼──────────┐
//!   │ outbound listener  │ ────────────────────────────────> │ inbound listener    │
//!   │ route by authority │  plaintext route: same protocol   │ detect -> mTLS/HTTP │
//!   └────────────────────┘ ────────────────────────────────> │ /TCP -> app         │
//!   tcp-forward listeners ──(mTLS, ALPN weft-tcp/1)────────> └─────────────────────┘
//!        admin listener: /metrics (Prometheus), /ready, /live
//!        identity: key in memory, certified by mesh-control, rotated at 70 %
//! ```
//!
//! The modules are trees, one per part of the proxy, each depending only on
//! the ones above it in this list (no import loops; `tests/module_graph.rs`
//! checks every level and prints the graph):
//!
//! ```text
//!  config     flags and their validation (config), the CLI (config::cli)
//!  identity   workload certificate, TLS configs (identity), refusal (why a handshake failed)
//!  metrics    lock-free recording (metrics, metrics::histogram), error_kind (the reasons' vocabulary)
//!  http       HTTP core: headers, body, upstream pools, error responses, upgrade,
//!             orig_proto (HTTP/1 over the proxies' HTTP/2), router (static routes), server (accept, drain)
//!  discovery  sources (grpc, memory), policy, outbound (the discovered path), balance (P2C),
//!             accrual (failure accrual), retry (the retry layer: resend, policy, budget), authz (inbound authorization)
//!  stack      the request path as layers (metrics, errors, authorize, limit, timeout, body_limit, forward),
//!             assembled per direction (stack::outbound, stack::inbound); the explicit listener
//!  tcp        protocol detection (tcp::detect), opaque TCP relays and forwarders
//!  intercept  --transparent: orig_dst (SO_ORIGINAL_DST, loop gate), transparent (outbound listener)
//!  inbound    the inbound listener: detect -> mTLS / plaintext policy -> HTTP or TCP -> app
//!  admin      /metrics, /ready, /live
//! ```
//!
//! Entry points: [`run`] serves until SIGTERM/SIGINT; [`serve`] takes any
//! shutdown future, for embedding and tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod intercept;
pub mod metrics;
pub mod stack;
pub mod tcp;

use std::{
    future::Future,
    io::{self, Write},
    net::SocketAddr,
    sync::Arc,
};

use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, info, warn};

pub use crate::config::{Config, ConfigError, Disabled, Limits, OpaquePorts, MeshConfig, DefaultInboundPolicy, Route, TcpForward, TcpService};
use crate::{
    admin::Health,
    discovery::authz::{Authz, AuthzByPort},
    discovery::outbound::{Outbound, OutboundConfig},
    stack::{inbound::InboundStack, loop_guard::OwnOutbound, outbound::OutboundStack, Forwarder},
    identity::{MeshError, MeshTls},
    inbound::{App, Inbound, OriginalDstApp},
    metrics::{Direction, Metrics},
    intercept::orig_dst::{Gate, OwnListeners},
    http::router::Router,
    http::admit::ConnLimit,
    http::server::Phase,
    tcp::{OriginalDstRelay, TcpForwarder},
    intercept::transparent::TransparentOutbound,
    http::upstream::Upstream,
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
        /// `outbound`, `inbound`, `tcp` or `admin`.
        listener: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The mesh identity or its TLS configuration could not be set up.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// Announcing the bound addresses on stdout failed.
    #[error("cannot write the listening addresses to stdout: {0}")]
    Announce(#[source] io::Error),
    /// A control-plane address could not be used.
    #[error(transparent)]
    Discovery(#[from] discovery::grpc::AddressError),
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
    // Before any upstream exists: every one dials with these.
    config.conns.install();
    // Before the first socket: a listener out of descriptors sheds with
    // the reserve one (http::server::shed_without_fds).
    http::server::raise_nofile();
    http::server::reserve_fd();
    if config.disabled.any() {
        for feature in config.disabled.to_string().split(',') {
            warn!(
                "TESTING ONLY: --disable {feature}: this proxy does NOT apply {} (conformance testing switch; never use in production)",
                match feature {
                    "routes" => "outbound routes (every request goes to the Service itself)",
                    "authz" => "inbound authorization policy (--default-inbound-policy judges every client)",
                    "retries" => "route retries",
                    _ => "route timeouts",
                }
            );
        }
    }
    let outbound = bind("outbound", config.outbound_listen).await?;
    let inbound = match config.app.is_some() || config.transparent {
        true => Some(bind("inbound", config.inbound_listen).await?),
        false => None,
    };
    let mut tcp = Vec::with_capacity(config.tcp_forwards.len());
    for fwd in &config.tcp_forwards {
        tcp.push(bind("tcp", fwd.listen).await?);
    }
    let mut tcp_services = Vec::with_capacity(config.tcp_services.len());
    for svc in &config.tcp_services {
        tcp_services.push(bind("tcp-service", svc.listen).await?);
    }
    let admin = bind("admin", config.admin_listen).await?;
    // A dual-stack pod's IPv6 TCP is redirected (ip6tables, `weft init`) to
    // the same ports on ::1 and ::.
    let (outbound6, inbound6) = match (config.transparent, &inbound) {
        (true, Some(inbound)) => (
            bind_v6_twin("outbound", outbound.local_addr().unwrap_or(config.outbound_listen))?,
            bind_v6_twin("inbound", inbound.local_addr().unwrap_or(config.inbound_listen))?,
        ),
        _ => (None, None),
    };

    // Transparent mode refuses connections whose original destination is
    // one of these (a client dialing the proxy directly, or a loop); the
    // discovered path never dials one. Explicit mode's inbound listener is
    // the exception there: it forwards to `--app`, so it is how a workload
    // calls its own Service (transparent: its gate refuses a connection
    // that was not redirected to it, so it is left out too).
    let (own, own_for_discovery) = {
        let mut own = vec![outbound.local_addr(), admin.local_addr()];
        own.extend(
            outbound6.iter().chain(&inbound6).chain(&tcp).chain(&tcp_services).map(TcpListener::local_addr),
        );
        let own: Vec<SocketAddr> = own.into_iter().filter_map(Result::ok).collect();
        let inbound_addr = inbound.as_ref().and_then(|l| l.local_addr().ok());
        let all = OwnListeners::new(own.iter().copied().chain(inbound_addr));
        let dialed = match config.transparent {
            true => all.clone(),
            false => OwnListeners::new(own),
        };
        (all, dialed)
    };

    let metrics = Arc::new(Metrics::new());
    let health = Health::new(config.is_meshed());
    // Certification starts before the listeners are announced, so a tool
    // polling /ready sees not-ready until the first certificate, never a gap.
    let mesh = match &config.mesh {
        Some(mesh) => {
            let health = health.clone();
            Some(MeshTls::start(mesh, metrics.identity().clone(), move || health.set_certified(true))?)
        }
        None => None,
    };
    let outbound_metrics = metrics.direction(Direction::Outbound).clone();
    let router = Router::meshed(&config.routes, mesh.as_ref().map(|m| (m, &outbound_metrics)))?;
    let (discovered, authz) = discovery_sources(&config, mesh.as_ref(), &metrics, &outbound_metrics, own_for_discovery)?;
    if let InboundAuthz::AppPort(Some(authz)) = &authz {
        // Transparent ports are learnt from traffic, so only --app's port
        // can hold readiness back (see README, Inbound authorization).
        health.wait_for_policy(Arc::clone(authz));
    }
    let tcp_forwarders = config
        .tcp_forwards
        .iter()
        .map(|f| TcpForwarder::new(f.clone(), mesh.as_ref(), outbound_metrics.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let service_forwarders: Vec<_> = match &discovered {
        Some(outbound) => config
            .tcp_services
            .iter()
            .map(|s| TcpForwarder::service(s.clone(), Arc::clone(outbound), mesh.as_ref(), outbound_metrics.clone()))
            .collect(),
        None => Vec::new(),
    };
    // Explicit mode: a request naming the outbound listener, or a static
    // route to it, would come straight back (stack::loop_guard).
    let own_outbound = OwnOutbound::new(outbound.local_addr().ok());
    let looping: Vec<String> = config
        .routes
        .iter()
        .filter_map(|r| own_outbound.reached_by(r.addr).map(|l| format!("--route {r}: {} is this proxy's own outbound listener {l}; every request would loop", r.addr)))
        .collect();
    ConfigError::from_problems(looping)?;

    announce(&outbound, inbound.as_ref(), &tcp, &tcp_services, &admin).map_err(RunError::Announce)?;

    let (phase_tx, phase) = watch::channel(Phase::Running);
    let outbound_limit = ConnLimit::new(config.conns.max_outbound_connections, "outbound", Some(outbound_metrics.clone()));
    let inbound_limit =
        ConnLimit::new(config.conns.max_inbound_connections, "inbound", Some(metrics.direction(Direction::Inbound).clone()));
    let builder = Arc::new(http::server::http_builder(&config.limits, &config.conns));
    let limits = config.limits;

    let admin_task = tokio::spawn(admin::serve_admin(admin, Arc::clone(&metrics), health.clone(), phase.clone()));
    let mut proxies = Vec::with_capacity(2 + tcp.len());
    if config.transparent {
        let listen = outbound.local_addr().unwrap_or(config.outbound_listen);
        let gate = Gate::new(Direction::Outbound, own.clone(), outbound_metrics.clone());
        let tcp = OriginalDstRelay::new(listen, discovered.clone(), mesh.clone(), outbound_metrics.clone());
        let stack = OutboundStack::new(Forwarder::outbound(router, discovered.clone(), limits, outbound_metrics), &limits);
        let transparent = TransparentOutbound::new(
            gate,
            stack,
            discovered,
            tcp,
            Arc::clone(&builder),
            limits,
            config.opaque_ports.clone(),
            Arc::clone(&outbound_limit),
        );
        if let Some(listener) = outbound6 {
            proxies.push(tokio::spawn(Arc::clone(&transparent).serve(listener, phase.clone())));
        }
        proxies.push(tokio::spawn(transparent.serve(outbound, phase.clone())));
    } else {
        let stack = OutboundStack::new(Forwarder::outbound(router, discovered, limits, outbound_metrics), &limits)
            .refusing_loops(own_outbound);
        proxies.push(tokio::spawn(stack::serve::serve_proxy(
            outbound,
            stack,
            Arc::clone(&builder),
            limits,
            Arc::clone(&outbound_limit),
            phase.clone(),
        )));
    }
    let default = config.default_inbound_policy;
    let app = match (config.app, authz) {
        (Some(addr), InboundAuthz::AppPort(authz)) => {
            let authz = authz.unwrap_or_else(|| Arc::new(Authz::new(addr.port(), &metrics, default)));
            Some(App::Fixed { addr, authz })
        }
        (None, InboundAuthz::PerPort(authz)) if config.transparent => {
            let gate = Gate::new(Direction::Inbound, own, metrics.direction(Direction::Inbound).clone());
            Some(App::OriginalDst(Box::new(OriginalDstApp::new(gate, authz, config.opaque_ports.clone()))))
        }
        _ => None,
    };
    if let (Some(listener), Some(app)) = (inbound, app) {
        // Transparent inbound forwards through `Via`, never by route.
        let router = match &app {
            App::Fixed { addr, .. } => Router::single(Upstream::app(*addr)),
            App::OriginalDst(_) => Router::from_routes(&[])?,
        };
        let forwarder = Forwarder::inbound(
            router,
            limits,
            metrics.direction(Direction::Inbound).clone(),
            config.forward_client_identity,
        );
        let inbound = Arc::new(Inbound {
            stack: InboundStack::new(forwarder, Arc::clone(&metrics), &limits),
            builder: Arc::clone(&builder),
            limits,
            app,
            mesh: mesh.clone(),
            conn_limit: inbound_limit,
        });
        if let Some(listener6) = inbound6 {
            proxies.push(tokio::spawn(Arc::clone(&inbound).serve(listener6, phase.clone())));
        }
        proxies.push(tokio::spawn(inbound.serve(listener, phase.clone())));
    }
    for (listener, fwd) in tcp.into_iter().zip(tcp_forwarders).chain(tcp_services.into_iter().zip(service_forwarders)) {
        proxies.push(tokio::spawn(fwd.serve(listener, Arc::clone(&outbound_limit), phase.clone())));
    }
    health.set_ready(true);
    info!(
        routes = config.routes.len(),
        tcp_forwards = config.tcp_forwards.len(),
        app = ?config.app,
        transparent = config.transparent,
        identity = ?mesh.as_ref().map(|m| m.identity().to_string()),
        default_inbound_policy = %config.default_inbound_policy,
        destination = ?config.destination,
        policy = ?config.policy,
        disabled = %config.disabled,
        "proxy listening"
    );

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

/// The inbound authorization policy, when `--policy` is given.
enum InboundAuthz {
    /// `--app`'s port.
    AppPort(Option<Arc<Authz>>),
    /// `--transparent`: each original destination's port.
    PerPort(AuthzByPort),
}

/// The discovered outbound path and the inbound authorization, when configured.
type Discovered = (Option<Arc<Outbound>>, InboundAuthz);

/// The discovered outbound path (`--destination`, with `--policy` routes;
/// never dialing `own`) and the inbound authorization (`--policy` with
/// `--app` or `--transparent`).
fn discovery_sources(
    config: &Config,
    mesh: Option<&Arc<MeshTls>>,
    metrics: &Arc<Metrics>,
    outbound_metrics: &metrics::DirectionMetrics,
    own: OwnListeners,
) -> Result<Discovered, RunError> {
    use discovery::grpc::{GrpcDestination, GrpcPolicy, Workload};
    let context = mesh.map_or_else(String::new, |m| context_token(m.identity()));
    let workload = match (mesh, config.inbound_listen.ip()) {
        (Some(m), _) => Some(Workload::Identity(m.identity().to_string())),
        (None, ip) if !ip.is_unspecified() => Some(Workload::Ip(ip)),
        (None, _) => None,
    };
    // validate() refuses --destination/--policy without --trust-anchor.
    let untrusted = |flag: &'static str, addr: &str| discovery::grpc::AddressError {
        flag,
        addr: addr.to_owned(),
        reason: "mesh-control is reached over TLS only: give --trust-anchor".to_owned(),
    };
    let policy = match &config.policy {
        Some(addr) => {
            let trust = config.control_trust.as_ref().ok_or_else(|| untrusted("--policy", addr))?;
            Some(GrpcPolicy::new(addr, trust, context.clone(), workload, metrics.discovery().policy_streams.clone())?)
        }
        None => None,
    };
    let discovered = match &config.destination {
        Some(addr) => Some(Outbound::new(
            GrpcDestination::new(
                addr,
                config.control_trust.as_ref().ok_or_else(|| untrusted("--destination", addr))?,
                context,
                metrics.discovery().destination_streams.clone(),
            )?,
            OutboundConfig {
                policy: policy.clone().map(|p| p as Arc<dyn discovery::PolicySource>),
                mesh: mesh.cloned(),
                limits: config.limits,
                disabled: config.disabled,
                bounds: config.discovery,
                gauges: metrics.discovery().clone(),
                own,
                ..OutboundConfig::new(outbound_metrics.clone())
            },
        )),
        None => None,
    };
    let (enforce, default) = (!config.disabled.authz, config.default_inbound_policy);
    let authz = match (&policy, config.app) {
        _ if config.transparent => {
            let source = policy.clone().map(|p| p as Arc<dyn discovery::PolicySource>);
            InboundAuthz::PerPort(AuthzByPort::new(source, Arc::clone(metrics), enforce, default))
        }
        (Some(p), Some(app)) => InboundAuthz::AppPort(Some(Authz::start(p.as_ref(), app.port(), metrics, enforce, default))),
        _ => InboundAuthz::AppPort(None),
    };
    Ok((discovered, authz))
}

/// Who is asking, for Destination and Policy: the identity and its
/// namespace (the control plane picks consumer routes by the namespace).
/// SPIFFE IDs hold no characters JSON would need escaped.
fn context_token(id: &mesh_identity::SpiffeId) -> String {
    match id.namespace_and_service_account() {
        Some((ns, _)) => format!("{{\"ns\":\"{ns}\",\"identity\":\"{id}\"}}"),
        None => format!("{{\"identity\":\"{id}\"}}"),
    }
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { listener, addr, source })
}

/// The IPv6 twin of a bound transparent listener: `127.0.0.1:P` gets
/// `[::1]:P`, `0.0.0.0:P` gets `[::]:P` (IPv6 only; the IPv4 listener keeps
/// IPv4), P being the port the IPv4 listener got. None for other addresses
/// or a namespace without IPv6.
fn bind_v6_twin(listener: &'static str, v4: SocketAddr) -> Result<Option<TcpListener>, RunError> {
    use std::net::{Ipv6Addr, SocketAddrV6};
    let ip = match v4 {
        SocketAddr::V4(a) if a.ip().is_loopback() => Ipv6Addr::LOCALHOST,
        SocketAddr::V4(a) if a.ip().is_unspecified() => Ipv6Addr::UNSPECIFIED,
        _ => return Ok(None),
    };
    let addr = SocketAddr::V6(SocketAddrV6::new(ip, v4.port(), 0, 0));
    // A kernel without IPv6 refuses the socket itself (EAFNOSUPPORT).
    let socket = match socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, Some(socket2::Protocol::TCP)) {
        Ok(socket) => socket,
        Err(e) => {
            debug!(%addr, listener, error = %e, "no IPv6 sockets here; IPv4 only");
            return Ok(None);
        }
    };
    let bound = (|| {
        socket.set_only_v6(true)?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    })();
    match bound {
        Ok(l) => {
            info!(%addr, listener, "listening on the IPv6 twin too");
            Ok(Some(l))
        }
        // IPv6 disabled in this namespace (no ::1): nothing can be redirected to it.
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
            debug!(%addr, listener, error = %e, "no IPv6 address here; IPv4 only");
            Ok(None)
        }
        Err(source) => Err(RunError::Bind { listener, addr, source }),
    }
}

/// Tools bind port 0 and read the real addresses from these lines; `tcp`
/// lines come in `--tcp-forward` order, `tcp-service` lines in
/// `--tcp-service` order, and admin is always last.
fn announce(
    outbound: &TcpListener,
    inbound: Option<&TcpListener>,
    tcp: &[TcpListener],
    tcp_services: &[TcpListener],
    admin: &TcpListener,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening outbound {}", outbound.local_addr()?)?;
    if let Some(inbound) = inbound {
        writeln!(out, "listening inbound {}", inbound.local_addr()?)?;
    }
    for t in tcp {
        writeln!(out, "listening tcp {}", t.local_addr()?)?;
    }
    for t in tcp_services {
        writeln!(out, "listening tcp-service {}", t.local_addr()?)?;
    }
    writeln!(out, "listening admin {}", admin.local_addr()?)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_token_names_the_namespace_for_consumer_routes() {
        let id = mesh_identity::SpiffeId::parse("spiffe://cluster.local/ns/gamma-consumer/sa/consumer").unwrap();
        assert_eq!(
            context_token(&id),
            r#"{"ns":"gamma-consumer","identity":"spiffe://cluster.local/ns/gamma-consumer/sa/consumer"}"#
        );
    }
}
