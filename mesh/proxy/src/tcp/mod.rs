//! Opaque TCP: outbound `--tcp-forward` / `--tcp-service` listeners, the
//! transparent outbound relay to a connection's original destination, and
//! the relay both directions share.
//!
//! ```text
//!  client ──tcp──> LISTEN ──(mTLS, ALPN weft-tcp/1)──> peer inbound ──tcp──> app
//!                         └─(plaintext, no @ID)──────> ADDR
//! ```
//!
//! Each TCP connection gets its own TLS connection: opaque bytes cannot be
//! multiplexed without framing, and a per-connection handshake is what a
//! TCP client pays anyway.

pub mod detect;

use std::{io, net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use mesh_identity::SpiffeId;

use crate::{
    config::{Conns, TcpForward, TcpService},
    discovery::outbound::Outbound,
    identity::{MeshError, MeshTls, ALPN_WEFT_TCP},
    metrics::{
        tcp::{CloseError, ConnMeter, CountingIo},
        DirectionMetrics,
    },
    identity::refusal::{self, Refusal},
    http::admit::ConnLimit,
    http::server::{serve_connections, Phase},
};

/// Copies bytes both ways until both sides are done, or neither moved a
/// byte for `--tcp-idle-timeout`; returns (a->b, b->a).
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    crate::http::relay::relay_with_idle(a, b, Conns::current().tcp_idle_timeout).await
}

/// One `--tcp-forward` (a fixed address) or `--tcp-service` (a Service's
/// endpoints, balanced per connection) and what it needs to reach them.
pub struct TcpForwarder {
    dialer: Dialer,
    target: Target,
}

enum Target {
    Fixed { addr: SocketAddr, identity: Option<SpiffeId>, tls: Option<(TlsConnector, Arc<MeshTls>)> },
    Service { authority: String, outbound: Arc<Outbound>, mesh: Option<Arc<MeshTls>> },
}

impl TcpForwarder {
    /// A forwarder; meshed (`forward.identity` set) ones need `mesh`.
    pub fn new(forward: TcpForward, mesh: Option<&Arc<MeshTls>>, metrics: DirectionMetrics) -> Result<Arc<Self>, MeshError> {
        let tls = match (&forward.identity, mesh) {
            (None, _) => None,
            (Some(id), Some(mesh)) => Some((mesh.connector(id, ALPN_WEFT_TCP)?, Arc::clone(mesh))),
            (Some(id), None) => {
                return Err(MeshError::NotMeshed { route: format!("--tcp-forward {forward}"), identity: id.to_string() })
            }
        };
        let target = Target::Fixed { addr: forward.addr, identity: forward.identity, tls };
        Ok(Arc::new(Self { dialer: Dialer { listen: forward.listen, metrics }, target }))
    }

    /// Connections to `service.listen` are spread over the endpoints of
    /// `service.authority` (power of two choices over connect latency and
    /// open connections, with failure accrual); meshed endpoints get mTLS
    /// with ALPN weft-tcp/1.
    pub fn service(
        service: TcpService,
        outbound: Arc<Outbound>,
        mesh: Option<&Arc<MeshTls>>,
        metrics: DirectionMetrics,
    ) -> Arc<Self> {
        let target = Target::Service { authority: service.authority, outbound, mesh: mesh.cloned() };
        Arc::new(Self { dialer: Dialer { listen: service.listen, metrics }, target })
    }

    /// Accepts until the phase leaves `Running`, then waits for the open
    /// relays to finish (the caller bounds the wait).
    /// `limit` is the outbound direction's connection cap; a relay is
    /// busy for its whole life, never closed to make room.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, limit: Arc<ConnLimit>, phase: watch::Receiver<Phase>) {
        serve_connections(listener, phase, limit, |stream, peer, _, _, activity| {
            let this = Arc::clone(&self);
            let busy = activity.request();
            async move {
                let _busy = busy;
                this.connection(stream, peer).await
            }
        })
        .await;
    }

    async fn connection(&self, client: TcpStream, peer: SocketAddr) {
        let _open = self.dialer.metrics.connection_opened();
        let meter = self.dialer.metrics.tcp().accept();
        let _ = client.set_nodelay(true);
        let client = CountingIo::new(client, Arc::clone(&meter), 0);
        match &self.target {
            Target::Fixed { addr, identity, tls } => {
                let tls = tls.as_ref().map(|(c, m)| (c, m.as_ref()));
                self.dialer.dial_and_relay(client, &meter, peer, *addr, identity.as_ref(), tls).await;
            }
            Target::Service { authority, outbound, mesh } => {
                let authority = crate::discovery::outbound::normalize(authority);
                self.dialer.balanced(client, &meter, peer, &authority, outbound, mesh.as_ref()).await;
            }
        }
    }
}

/// Transparent outbound opaque TCP: each connection goes to its original
/// destination, resolved as `ip:port` through Destination when discovery is
/// on (meshed endpoints inside mTLS with ALPN weft-tcp/1, unknown ones
/// straight to the destination), else relayed there in plaintext.
pub struct OriginalDstRelay {
    dialer: Dialer,
    outbound: Option<Arc<Outbound>>,
    mesh: Option<Arc<MeshTls>>,
}

impl OriginalDstRelay {
    /// `listen` (the outbound listener) names the relay in log lines.
    pub fn new(listen: SocketAddr, outbound: Option<Arc<Outbound>>, mesh: Option<Arc<MeshTls>>, metrics: DirectionMetrics) -> Self {
        Self { dialer: Dialer { listen, metrics }, outbound, mesh }
    }

    /// Relays `client` (bytes already read put back in front) to `dst`;
    /// `meter` counts the connection (labelled here, by the upstream leg).
    pub async fn relay<C>(&self, client: C, meter: &ConnMeter, peer: SocketAddr, dst: SocketAddr)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.outbound {
            Some(outbound) => self.dialer.balanced(client, meter, peer, &dst.to_string(), outbound, self.mesh.as_ref()).await,
            None => self.dialer.dial_and_relay(client, meter, peer, dst, None, None).await,
        }
    }
}

/// Dialing and relaying, shared by every TCP path; `listen` names the
/// listener in log lines.
struct Dialer {
    listen: SocketAddr,
    metrics: DirectionMetrics,
}

impl Dialer {
    /// One endpoint of `authority` (already normalized) per connection.
    async fn balanced<C>(
        &self,
        client: C,
        meter: &ConnMeter,
        peer: SocketAddr,
        authority: &str,
        outbound: &Outbound,
        mesh: Option<&Arc<MeshTls>>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let set = outbound.backend(authority);
        let pick = match set.pick(None).await {
            Ok(p) => p,
            Err(e) => {
                meter.failed(CloseError::Io);
                warn!("tcp service {}: {e}; closing {peer}", self.listen);
                return;
            }
        };
        let ep = pick.handle().endpoint().clone();
        let connector = match (&ep.identity, mesh) {
            (Some(id), Some(mesh)) => match mesh.connector(id, ALPN_WEFT_TCP) {
                Ok(c) => Some((c, mesh.as_ref())),
                Err(e) => {
                    meter.failed(CloseError::Io);
                    warn!("tcp service {}: endpoint {} ({id}): {e}; closing {peer}", self.listen, ep.addr);
                    return;
                }
            },
            _ => None,
        };
        let tls = connector.as_ref().map(|(c, m)| (c, *m));
        // The pick (and its in-flight count) lives as long as the
        // connection: P2C weighs open connections. Connect time is not fed
        // into the estimate: for long-lived connections it says little
        // about load, and one slow handshake (peak EWMA) would outweigh many
        // open connections on the other endpoint.
        let connected = self.dial(meter, peer, ep.addr, ep.identity.as_ref(), tls).await;
        let ejected = set.balancer.observe(&pick, None, connected.is_some());
        if let Some(backoff) = ejected {
            set.count_ejection();
            warn!("endpoint {} of {authority} taken out of rotation for {backoff:?} after consecutive failures", ep.addr);
        }
        if let Some(upstream) = connected {
            self.relay(client, meter, peer, ep.addr, ep.identity.as_ref(), upstream).await;
        }
        drop(pick);
    }

    async fn dial_and_relay<C>(
        &self,
        client: C,
        meter: &ConnMeter,
        peer: SocketAddr,
        target: SocketAddr,
        identity: Option<&SpiffeId>,
        tls: Option<(&TlsConnector, &MeshTls)>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(upstream) = self.dial(meter, peer, target, identity, tls).await {
            self.relay(client, meter, peer, target, identity, upstream).await;
        }
    }

    /// Connects (and with `tls`, handshakes); failures are logged here
    /// and labelled on `meter` (the leg that was to be).
    async fn dial(
        &self,
        meter: &ConnMeter,
        peer: SocketAddr,
        target: SocketAddr,
        identity: Option<&SpiffeId>,
        tls: Option<(&TlsConnector, &MeshTls)>,
    ) -> Option<Upstream> {
        let within = Conns::current().connect_timeout;
        meter.identify(identity.map(SpiffeId::as_str), tls.is_some());
        let upstream = match tokio::time::timeout(within, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                meter.failed(CloseError::of_io(&e));
                warn!("tcp forward {}: connect to {target} failed: {e}; closing {peer}", self.listen);
                return None;
            }
            Err(_) => {
                meter.failed(CloseError::Timeout);
                warn!("tcp forward {}: connect to {target} timed out; closing {peer}", self.listen);
                return None;
            }
        };
        let _ = upstream.set_nodelay(true);
        let Some((connector, mesh)) = tls else {
            return Some(Upstream::Plain(upstream));
        };
        let identity = identity.map(ToString::to_string).unwrap_or_default();
        if !mesh.is_certified() {
            meter.failed(CloseError::Io);
            self.metrics.record_refusal(Refusal::NotCertified);
            warn!("refused outbound connection to {target} ({identity}): {}", Refusal::NotCertified);
            return None;
        }
        let name = rustls::pki_types::ServerName::from(target.ip());
        // Bounded like the connect: a peer that accepts and never answers
        // must not hold the client's connection forever.
        let handshake = tokio::time::timeout(within, connector.connect(name, upstream)).await.unwrap_or_else(|_| {
            let within = humantime::format_duration(within);
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("handshake not completed within {within}")))
        });
        match handshake {
            Ok(tls) => Some(Upstream::Tls(Box::new(tls))),
            Err(e) => {
                meter.failed(CloseError::of_io(&e));
                let reason = refusal::classify_io(&e);
                self.metrics.record_refusal(reason);
                warn!("refused outbound connection to {target} ({identity}): {reason}: {e}");
                None
            }
        }
    }

    async fn relay<C>(
        &self,
        mut client: C,
        meter: &ConnMeter,
        peer: SocketAddr,
        target: SocketAddr,
        identity: Option<&SpiffeId>,
        upstream: Upstream,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        match upstream {
            Upstream::Plain(mut s) => {
                if let Err(e) = relay(&mut client, &mut s).await {
                    meter.failed(CloseError::of_io(&e));
                    debug!(%peer, %target, error = %e, "tcp relay ended with error");
                }
            }
            Upstream::Tls(mut tls) => {
                if let Err(e) = relay(&mut client, &mut *tls).await {
                    meter.failed(CloseError::of_io(&e));
                    // TLS 1.3: the server's verdict on our certificate arrives
                    // after our handshake completed, as the first thing read.
                    let reason = refusal::classify_io(&e);
                    if reason != Refusal::Handshake {
                        let identity = identity.map(ToString::to_string).unwrap_or_default();
                        self.metrics.record_refusal(reason);
                        warn!("refused outbound connection to {target} ({identity}): {reason}: {e}");
                    } else {
                        debug!(%peer, %target, error = %e, "tcp relay ended with error");
                    }
                }
            }
        }
    }
}

/// A connected upstream, plain or inside Weft mTLS.
enum Upstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}
