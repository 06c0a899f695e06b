//! `--transparent` outbound: the listener iptables `REDIRECT`s the pod's
//! outbound TCP to. Every decision is made once per connection.
//!
//! ```text
//!  accept ─> original destination (orig_dst::Gate: loop / not redirected -> close)
//!         ─> opaque port (--opaque-ports, or discovery says so)? TCP at once
//!         ─> detect (first bytes; silent for --detect-timeout -> opaque)
//!              ├ HTTP/1, h2c ─> hyper ─> Via: discovered "ip:port" (Destination + Policy:
//!              │                          routes, balancing, retries, mTLS to meshed endpoints)
//!              │                     or the destination itself (no --destination)
//!              └ TLS, opaque ─> TCP: discovered "ip:port" (meshed: mTLS weft-tcp/1)
//!                               or a plain relay to the destination
//! ```
//!
//! Requests are counted by the same outbound stack as explicit
//! ones; `Host` is passed on unchanged (it names the service to the app,
//! not the hop).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use hyper_util::{
    rt::TokioExecutor,
    server::{
        conn::auto,
        graceful::Watcher,
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::debug;

use crate::{
    metrics::tcp::{CloseError, ConnMeter, CountingIo},
    config::{Limits, OpaquePorts},
    tcp::detect::{detect, Detected, PrefixedIo, Protocol},
    stack::{outbound::OutboundStack, serve::serve_http, Via},
    intercept::orig_dst::Gate,
    discovery::outbound::Outbound,
    http::admit::ConnLimit,
    http::idle::Activity,
    http::server::{serve_connections, Phase},
    tcp::OriginalDstRelay,
    http::upstream::{local_app_source, Upstream},
};

/// Plaintext upstreams by address, shared by every connection to one
/// destination (one HTTP/1 pool, one HTTP/2 connection each).
#[derive(Debug, Default)]
pub struct DirectUpstreams {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    /// Inbound: the pod's own app, dialed from [`local_app_source`].
    local_app: bool,
}

/// Past this many destinations, the ones no connection uses any more are
/// forgotten (their idle connections closed) before another is added.
const MAX_DIRECT_UPSTREAMS: usize = 1024;

impl DirectUpstreams {
    /// Inbound's upstreams: the pod's own app at its original destination,
    /// dialed from 127.0.0.6 so `weft init`'s hairpin rule lets it through.
    pub fn local_app() -> Self {
        Self { local_app: true, ..Self::default() }
    }

    /// The upstream for `addr` (taken once per connection, not per request).
    pub fn get(&self, addr: SocketAddr) -> Arc<Upstream> {
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(up) = map.get(&addr) {
            return Arc::clone(up);
        }
        if map.len() >= MAX_DIRECT_UPSTREAMS {
            // Still referenced: a connection or a pooled response holds it.
            map.retain(|_, up| Arc::strong_count(up) > 1);
        }
        let up = if self.local_app { Upstream::from_source(addr, local_app_source(addr)) } else { Upstream::new(addr) };
        map.insert(addr, Arc::clone(&up));
        up
    }

    /// Destinations currently remembered.
    pub fn len(&self) -> usize {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no destination is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The transparent outbound listener.
pub struct TransparentOutbound {
    gate: Gate,
    stack: OutboundStack,
    discovered: Option<Arc<Outbound>>,
    direct: DirectUpstreams,
    tcp: OriginalDstRelay,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    opaque_ports: OpaquePorts,
    conn_limit: Arc<ConnLimit>,
}

impl TransparentOutbound {
    /// `stack` is the outbound one (its metrics and limit count these requests);
    /// `discovered` resolves destinations (else they are dialed directly);
    /// `tcp` relays opaque connections, at once for `opaque_ports` and the
    /// ports discovery marks opaque.
    pub fn new(
        gate: Gate,
        stack: OutboundStack,
        discovered: Option<Arc<Outbound>>,
        tcp: OriginalDstRelay,
        builder: Arc<auto::Builder<TokioExecutor>>,
        limits: Limits,
        opaque_ports: OpaquePorts,
        conn_limit: Arc<ConnLimit>,
    ) -> Arc<Self> {
        Arc::new(Self { gate, stack, discovered, direct: DirectUpstreams::default(), tcp, builder, limits, opaque_ports, conn_limit })
    }

    /// An opaque destination skips detection: a server-speaks-first
    /// protocol's client waits for nothing but the connection itself.
    async fn is_opaque(&self, dst: SocketAddr) -> bool {
        if self.opaque_ports.contains(dst.port()) {
            return true;
        }
        match &self.discovered {
            Some(outbound) => outbound.target(&dst.to_string()).opaque().await,
            None => false,
        }
    }

    /// Accepts until the phase leaves `Running`, then closes the listening
    /// socket and waits for open connections (the caller bounds the wait).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, phase: watch::Receiver<Phase>) {
        let limit = Arc::clone(&self.conn_limit);
        serve_connections(listener, phase, limit, |stream, peer, watcher, phase, activity| {
            let this = Arc::clone(&self);
            async move { this.connection(stream, peer, watcher, phase, activity).await }
        })
        .await;
    }

    async fn connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        mut phase: watch::Receiver<Phase>,
        activity: Activity,
    ) {
        let _open = self.stack.metrics().connection_opened();
        let meter = self.stack.metrics().tcp().accept();
        let Some(dst) = self.gate.admit(&stream, peer) else { return };
        if self.is_opaque(dst).await {
            debug!(%peer, %dst, "opaque port: relayed without protocol detection");
            let _busy = activity.request();
            let stream = CountingIo::new(stream, Arc::clone(&meter), 0);
            return Box::pin(self.tcp.relay(stream, &meter, peer, dst)).await;
        }
        let limits = &self.limits;
        // A client silent for the detect timeout may be waiting for the
        // server to speak first (SMTP, MySQL, ...): relay it as bytes.
        let detected = tokio::select! {
            d = detect(&mut stream, limits.detect_timeout, limits.detect_timeout, limits.max_header_bytes) => d,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let (protocol, prefix) = match detected {
            Ok(Detected::Protocol(p, prefix)) => (p, prefix),
            Ok(Detected::Silent) => (Protocol::Opaque, Bytes::new()),
            Ok(Detected::Nothing) => {
                debug!(%peer, %dst, "client closed before sending anything");
                return;
            }
            Err(e) => {
                debug!(%peer, %dst, error = %e, "reading the first bytes failed");
                return;
            }
        };
        let read = prefix.len();
        let io = CountingIo::new(PrefixedIo::new(prefix, stream), Arc::clone(&meter), read);
        match protocol {
            Protocol::Http1 | Protocol::Http2 => {
                // The app's side: no mesh identity.
                meter.identify(None, false);
                Box::pin(self.serve_http(io, &meter, peer, dst, watcher, phase, activity)).await
            }
            Protocol::Tls | Protocol::Opaque => {
                let _busy = activity.request();
                Box::pin(self.tcp.relay(io, &meter, peer, dst)).await
            }
        }
    }

    /// Where this connection's requests go.
    fn via(&self, dst: SocketAddr) -> Via {
        match &self.discovered {
            Some(outbound) => Via::Discovered(outbound.target(&dst.to_string())),
            None => Via::Upstream(self.direct.get(dst)),
        }
    }

    async fn serve_http<I>(
        &self,
        io: I,
        meter: &ConnMeter,
        peer: SocketAddr,
        dst: SocketAddr,
        watcher: Watcher,
        mut phase: watch::Receiver<Phase>,
        activity: Activity,
    )
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stack = self.stack.service(Some(self.via(dst)));
        if let Err(e) = serve_http(&self.builder, io, stack, &self.limits, activity, watcher, &mut phase).await {
            meter.failed(CloseError::of(&*e));
            debug!(%peer, %dst, error = %e, "transparent outbound connection ended with error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_upstreams_are_shared_and_bounded() {
        let direct = DirectUpstreams::default();
        let a: SocketAddr = "198.18.0.2:8080".parse().unwrap();
        let held = direct.get(a);
        assert!(Arc::ptr_eq(&held, &direct.get(a)), "one upstream (one pool) per destination");
        for port in 1..=MAX_DIRECT_UPSTREAMS as u16 {
            direct.get(SocketAddr::new(a.ip(), port));
        }
        // The cap was reached: unused destinations were forgotten, the held one kept.
        assert!(direct.len() <= 2, "{}", direct.len());
        assert!(Arc::ptr_eq(&held, &direct.get(a)));
    }
}
