//! Connections to one upstream address: a pool of HTTP/1 connections and
//! shared, multiplexed HTTP/2 connections (`http::pool`).
//!
//! The request path touches no lock. Idle HTTP/1 connections live in a
//! lock-free bounded queue (which also caps how many are open and closes
//! those parked too long); a request takes one, and the response body
//! parks it again when it has been read to the end (see
//! `body::ResponseBody`). HTTP/2 connections sit in an `ArcSwap` list, each
//! counting this proxy's streams on it (until their response bodies end);
//! a request takes the least loaded one with room, and only dialing one
//! more takes an async mutex, so a burst of requests after a disconnect
//! (or finding every connection full) opens one connection, not one each.
//!
//! A meshed upstream (a route with an expected SPIFFE ID) is always spoken
//! to over HTTP/2, inside mTLS: HTTP/1 requests are carried as HTTP/2
//! streams (see `orig_proto`), so one TLS handshake serves every request to
//! that (address, identity) until the connection ends, or a few when one
//! connection's streams are not enough.
//!
//! A pooled connection may have been closed by the upstream since it was
//! parked. hyper hands back a request it did not start writing
//! (`TrySendError::take_message`), so such a request is retried on another
//! connection; a request that was (even partly) written is never replayed.

use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use http::{Request, Response, Version};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_identity::SpiffeId;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpSocket, TcpStream},
    sync::OwnedSemaphorePermit,
};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use crate::{
    config::Conns,
    http::body::{H1Sender, PooledSender, RequestBody, RequestBodyError, ResponseBody},
    http::pool::{Checkout, Conn, Full, H2Conn, H2Pool, Pool, PoolIdle, StreamSlot},
    http::error::ProxyError,
    identity::MeshTls,
    metrics::{pool_connections, Direction, DirectionMetrics},
    http::orig_proto,
    identity::refusal::{self, Refusal},
    http::upgrade,
};

/// How to reach a meshed upstream: whom to expect there, and our identity.
pub struct MeshedPeer {
    identity: SpiffeId,
    /// `identity` as the `peer` metric label.
    label: Arc<str>,
    connector: TlsConnector,
    mesh: Arc<MeshTls>,
    metrics: DirectionMetrics,
}

impl MeshedPeer {
    /// A peer that must present `identity`; handshake refusals are counted
    /// in `metrics`.
    pub fn new(mesh: &Arc<MeshTls>, identity: SpiffeId, metrics: DirectionMetrics) -> Result<Self, crate::identity::MeshError> {
        let connector = mesh.connector(&identity, mesh_identity::ALPN_WEFT)?;
        let label = Arc::from(identity.as_str());
        Ok(Self { identity, label, connector, mesh: Arc::clone(mesh), metrics })
    }

    /// The SPIFFE ID expected from the peer.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }
}

impl fmt::Debug for MeshedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshedPeer").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// Idle HTTP/1 connections kept per upstream; more are closed when released.
pub const DEFAULT_MAX_IDLE_PER_UPSTREAM: usize = 256;

type H2Sender = http2::SendRequest<RequestBody>;

/// One upstream address and its connections.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    h1: Arc<Pool<RequestBody>>,
    h2: H2Pool<RequestBody>,
    meshed: Option<MeshedPeer>,
    /// The local address connections are made from (else the kernel's pick).
    source: Option<IpAddr>,
    /// `weft_pool_connections` of its direction: +1 for each open connection.
    pool: Gauge,
}

/// One upstream connection, counted in its direction's pool gauge while
/// its task runs.
struct OpenConn(Gauge);

impl OpenConn {
    fn new(pool: &Gauge) -> Self {
        pool.inc();
        Self(pool.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An HTTP/1 pool parking at most `max_idle`, open connections capped by
/// `--max-connections-per-endpoint`.
fn h1_pool(max_idle: usize) -> Arc<Pool<RequestBody>> {
    Pool::new(max_idle, Conns::current().max_connections_per_endpoint)
}

/// The HTTP/2 connections to one upstream: `--max-http2-connections-per-endpoint`
/// of `--upstream-http2-streams-per-connection` streams each.
fn h2_pool() -> H2Pool<RequestBody> {
    let c = Conns::current();
    H2Pool::new(c.max_h2_connections_per_endpoint, c.upstream_h2_streams_per_connection)
}

/// The source address `--transparent` inbound dials the pod's app from
/// (IPv4; as Istio's 127.0.0.6). `weft init` exempts connections from it
/// before its hairpin rule, which sends the proxy's other connections to
/// its own pod IP back through the inbound listener: without the exemption
/// the inbound proxy's own forward to the app would loop into itself.
pub const LOCAL_APP_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// The source to dial the pod's own app at `addr` from (transparent
/// inbound): [`LOCAL_APP_SOURCE_V4`] for an IPv4 address that is not
/// loopback (loopback is never hairpinned), else the kernel's pick.
pub fn local_app_source(addr: SocketAddr) -> Option<IpAddr> {
    match addr.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() => Some(IpAddr::V4(LOCAL_APP_SOURCE_V4)),
        _ => None,
    }
}

/// Connects to `addr`, from `source` when given (any port).
pub async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

impl Upstream {
    /// An upstream with the default idle-pool size.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Self::with_max_idle(addr, DEFAULT_MAX_IDLE_PER_UPSTREAM)
    }

    /// An upstream keeping at most `max_idle` idle HTTP/1 connections.
    pub fn with_max_idle(addr: SocketAddr, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            addr,
            h1: h1_pool(max_idle),
            h2: h2_pool(),
            meshed: None,
            source: None,
            pool: pool_connections(Direction::Outbound),
        })
    }

    /// The local app behind the inbound listener (`--app`).
    pub fn app(addr: SocketAddr) -> Arc<Self> {
        Self::from_source(addr, None)
    }

    /// The local app, its connections made from `source` (transparent
    /// inbound: 127.0.0.6).
    pub fn from_source(addr: SocketAddr, source: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            addr,
            h1: h1_pool(DEFAULT_MAX_IDLE_PER_UPSTREAM),
            h2: h2_pool(),
            meshed: None,
            source,
            pool: pool_connections(Direction::Inbound),
        })
    }

    /// A meshed upstream: mTLS to `peer`, every request over HTTP/2.
    pub fn meshed(addr: SocketAddr, peer: MeshedPeer) -> Arc<Self> {
        Arc::new(Self {
            addr,
            h1: h1_pool(1),
            h2: h2_pool(),
            meshed: Some(peer),
            source: None,
            pool: pool_connections(Direction::Outbound),
        })
    }

    /// The expected SPIFFE ID of a meshed upstream.
    pub fn peer_identity(&self) -> Option<&SpiffeId> {
        self.meshed.as_ref().map(MeshedPeer::identity)
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Idle HTTP/1 connections currently parked.
    pub fn idle_h1(&self) -> usize {
        self.h1.parked()
    }

    /// HTTP/1 connections open now (parked or in use).
    pub fn open_h1(&self) -> usize {
        self.h1.open()
    }

    /// Sends `req` using the same HTTP version it arrived with.
    ///
    /// The caller bounds this with the request timeout; dropping the future
    /// drops the connection it was using, so a timed-out connection is never
    /// handed to another request.
    pub async fn send(self: &Arc<Self>, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        if upgrade::is_upgrade_request(&req) {
            // Rare, and its future (a dial, TLS, an HTTP/1 handshake) is
            // large: boxed, so every other request's future stays small.
            return Box::pin(self.send_upgrade(req)).await;
        }
        if let Some(peer) = &self.meshed {
            // The `peer` of the request's metrics: whom we verified (the
            // last attempt's, when retried).
            crate::metrics::http::note(|r| r.peer = Some(Arc::clone(&peer.label)));
            let (mut parts, body) = req.into_parts();
            let downstream = parts.version;
            orig_proto::upgrade(&mut parts)?;
            let mut resp = self.send_h2(Request::from_parts(parts, body)).await?;
            *resp.version_mut() = downstream;
            return Ok(resp);
        }
        if req.version() == Version::HTTP_2 {
            self.send_h2(req).await
        } else {
            self.send_h1(req).await
        }
    }

    /// On a parked connection, else a new one; at the per-endpoint cap
    /// the request waits up to `--connect-timeout` for either.
    async fn send_h1(self: &Arc<Self>, mut req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        let within = Conns::current().connect_timeout;
        loop {
            let checkout = self.h1.checkout(within).await.map_err(|full| ProxyError::PoolFull {
                addr: self.addr,
                busy: format!("{} connections open and in use (--max-connections-per-endpoint)", full.max_open),
                waited: full.waited,
            })?;
            let mut conn = match checkout {
                Checkout::Parked(mut conn) => {
                    if conn.sender.ready().await.is_err() {
                        continue;
                    }
                    match conn.sender.try_send_request(req).await {
                        Ok(resp) => return Ok(self.pooled_response(resp, conn)),
                        Err(mut e) => match e.take_message() {
                            // Not written: the parked connection had died. Try another.
                            Some(r) => {
                                req = r;
                                continue;
                            }
                            None => return Err(self.http_error(e.into_error())),
                        },
                    }
                }
                // Boxed: a dial's future is large and rare; inline, every
                // request's future (spawned per stream) would carry it.
                Checkout::Dial(slot) => Box::pin(self.dial_h1(slot)).await?,
            };
            conn.sender.ready().await.map_err(|e| self.http_error(e))?;
            return match conn.sender.try_send_request(req).await {
                Ok(resp) => Ok(self.pooled_response(resp, conn)),
                Err(e) => Err(self.http_error(e.into_error())),
            };
        }
    }

    /// An upgrade request gets a connection of its own, never pooled nor
    /// multiplexed: after a 101 it belongs to the upgraded protocol. Meshed:
    /// inside its own mTLS, HTTP/1.1 (see `upgrade` for why not the shared
    /// HTTP/2 connection).
    async fn send_upgrade(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        let tcp = self.connect().await?;
        let mut sender = match &self.meshed {
            None => self.h1_upgradable(tcp).await?,
            Some(peer) => {
                let tls = self.tls_connect(peer, tcp.into_inner()).await?;
                self.h1_upgradable(TokioIo::new(tls)).await?
            }
        };
        sender.ready().await.map_err(|e| self.http_error(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.http_error(e))?;
        Ok(resp.map(|body| ResponseBody::upstream(body, None)))
    }

    async fn h1_upgradable<T>(&self, io: TokioIo<T>) -> Result<H1Sender, ProxyError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(|e| self.http_error(e))?;
        let addr = self.addr;
        let open = OpenConn::new(&self.pool);
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "upstream upgrade connection ended");
            }
        });
        Ok(sender)
    }

    fn pooled_response(self: &Arc<Self>, resp: Response<Incoming>, conn: Conn<RequestBody>) -> Response<ResponseBody> {
        let pooled = PooledSender::new(Arc::clone(&self.h1), conn);
        resp.map(|body| ResponseBody::upstream(body, Some(pooled)))
    }

    async fn send_h2(&self, mut req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        let within = Conns::current().connect_timeout;
        // At most one retry: after a fresh dial, a refused request is an error.
        for attempt in 0..2 {
            let (conn, slot) = self.h2_stream(within).await?;
            let mut sender = conn.sender.clone();
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|body| ResponseBody::upstream(body, None).with_stream(slot))),
                Err(mut e) => match e.take_message() {
                    // Refused before a byte went out: the connection is
                    // going away. Leave it and try another.
                    Some(r) if attempt == 0 => {
                        self.h2.remove(&conn);
                        req = r;
                    }
                    _ => return Err(self.http_error(e.into_error())),
                },
            }
        }
        unreachable!("the second attempt always returns")
    }

    /// A stream on the least loaded connection with room; when every
    /// connection is at its mark, one more is dialed (one at a time: a
    /// burst opens one, not one each); past the cap the request waits up
    /// to `within` for a stream to end.
    async fn h2_stream(&self, within: std::time::Duration) -> Result<(Arc<H2Conn<RequestBody>>, StreamSlot), ProxyError> {
        let permit = self.h2.reserve(within).await.map_err(|full| self.h2_full(full))?;
        let permit = match self.h2.claim(permit) {
            Ok(stream) => return Ok(stream),
            Err(p) => p,
        };
        let _dialing = self.h2.dialing().await;
        let permit = match self.h2.claim(permit) {
            Ok(stream) => return Ok(stream),
            Err(p) => p,
        };
        let permit = if self.h2.may_dial() {
            permit
        } else {
            match self.h2.least_loaded(permit) {
                Ok(stream) => return Ok(stream),
                Err(p) => p,
            }
        };
        // Boxed: a dial's future (TCP, TLS, the HTTP/2 handshake) is
        // large and rare; inline, every request's future would carry it.
        let sender = Box::pin(self.dial_h2()).await?;
        Ok(self.h2.add(sender, permit))
    }

    async fn dial_h2(&self) -> Result<H2Sender, ProxyError> {
        let tcp = self.connect().await?;
        match &self.meshed {
            None => self.h2_handshake(tcp).await,
            Some(peer) => {
                let tls = self.tls_connect(peer, tcp.into_inner()).await?;
                self.h2_handshake(TokioIo::new(tls)).await
            }
        }
    }

    fn h2_full(&self, full: Full) -> ProxyError {
        let (conns, streams) = (self.h2.max_conns(), self.h2.per_conn());
        ProxyError::PoolFull {
            addr: self.addr,
            busy: format!(
                "{conns} HTTP/2 connections of {streams} streams in use (--max-http2-connections-per-endpoint, --upstream-http2-streams-per-connection)"
            ),
            waited: full.waited,
        }
    }

    /// HTTP/2 connections open now.
    pub fn h2_connections(&self) -> usize {
        self.h2.connections()
    }

    async fn h2_handshake<T>(&self, io: TokioIo<T>) -> Result<H2Sender, ProxyError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conns = Conns::current();
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // A peer that vanished (frozen, partitioned) with requests in
            // flight fails its PING and the connection closes: its requests
            // fail before any response head (idempotent ones are sent to
            // another endpoint, `discovery::retry`), new ones dial anew
            // instead of queueing behind TCP retransmits. An idle
            // connection sends none: the first request on a dead one finds
            // out within the same bound.
            .keep_alive_interval(conns.upstream_h2_keepalive_interval)
            .keep_alive_timeout(conns.upstream_h2_keepalive_timeout)
            .keep_alive_while_idle(false)
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(|e| self.http_error(e))?;
        let addr = self.addr;
        let meshed = self.meshed.as_ref().map(|p| (p.identity.clone(), p.metrics.clone()));
        let open = OpenConn::new(&self.pool);
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.await {
                // TLS 1.3: a server that refuses our certificate says so
                // after our side of the handshake, on this connection.
                match (meshed, tls_error_in(&e)) {
                    (Some((identity, metrics)), Some(tls)) => {
                        let reason = refusal::classify(tls);
                        metrics.record_refusal(reason);
                        warn!("refused outbound connection to {addr} ({identity}): {reason}: {tls}");
                    }
                    _ => debug!(%addr, error = %e, "upstream h2 connection ended"),
                }
            }
        });
        Ok(sender)
    }

    /// The mTLS handshake; refusals are logged once here, naming the peer
    /// and the reason, and counted.
    async fn tls_connect(
        &self,
        peer: &MeshedPeer,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProxyError> {
        if !peer.mesh.is_certified() {
            peer.metrics.record_refusal(Refusal::NotCertified);
            return Err(ProxyError::NotCertified { addr: self.addr });
        }
        let name = rustls::pki_types::ServerName::from(self.addr.ip());
        let within = Conns::current().connect_timeout;
        let handshake = tokio::time::timeout(within, peer.connector.connect(name, tcp)).await.unwrap_or_else(|_| {
            let within = humantime::format_duration(within);
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("handshake not completed within {within}")))
        });
        handshake.map_err(|e| {
            let reason = refusal::classify_io(&e);
            peer.metrics.record_refusal(reason);
            warn!("refused outbound connection to {} ({}): {reason}: {e}", self.addr, peer.identity);
            ProxyError::Tls { addr: self.addr, identity: peer.identity.to_string(), reason, detail: e.to_string() }
        })
    }

    /// A new pooled connection, in use, holding `slot` (one of the
    /// per-endpoint cap) while it lives; its task closes it once it has
    /// been parked in the pool for `--upstream-idle-timeout`.
    async fn dial_h1(&self, slot: OwnedSemaphorePermit) -> Result<Conn<RequestBody>, ProxyError> {
        let io = self.connect().await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| self.http_error(e))?;
        let addr = self.addr;
        let idle = PoolIdle::in_use();
        let expiry = idle.clone();
        let timeout = Conns::current().upstream_idle_timeout;
        let open = OpenConn::new(&self.pool);
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    debug!(%addr, error = %e, "upstream h1 connection ended");
                },
                () = expiry.expired(timeout) => debug!(%addr, ?timeout, "pooled upstream connection idle; closed"),
            }
        });
        Ok(Conn { sender, idle })
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, ProxyError> {
        let connect_err = |source: io::Error| ProxyError::Connect { addr: self.addr, source };
        let within = Conns::current().connect_timeout;
        let stream = match tokio::time::timeout(within, connect_from(self.addr, self.source)).await {
            Ok(connected) => connected.map_err(connect_err)?,
            Err(_) => {
                let within = humantime::format_duration(within);
                return Err(connect_err(io::Error::new(io::ErrorKind::TimedOut, format!("not connected within {within}"))));
            }
        };
        // Requests are small and latency-bound; never wait for Nagle.
        stream.set_nodelay(true).map_err(connect_err)?;
        Ok(TokioIo::new(stream))
    }

    /// Classifies a hyper error: our own body-limit error surfaces as 413,
    /// everything else is an upstream failure.
    fn http_error(&self, e: hyper::Error) -> ProxyError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            match err.downcast_ref::<RequestBodyError>() {
                Some(RequestBodyError::TooLarge { limit }) => return ProxyError::BodyTooLarge { limit: *limit },
                Some(RequestBodyError::Slow(pace)) => return ProxyError::BodyTimeout(pace.clone()),
                _ => {}
            }
            source = err.source();
        }
        ProxyError::Upstream { addr: self.addr, source: e }
    }
}

/// The rustls error somewhere in `err`'s source chain, if any.
fn tls_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls);
            }
        }
        source = e.source();
    }
    None
}
