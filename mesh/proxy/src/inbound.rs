//! The inbound listener: detect the protocol, terminate Weft mTLS, apply
//! the plaintext policy, and hand the connection to HTTP or the TCP relay.
//!
//! ```text
//!  accept ─> detect (first bytes, --detect-timeout)
//!    ├ TLS ──> mTLS accept (client cert required, any SPIFFE ID of our trust domain)
//!    │           ├ ALPN weft/1     ─> HTTP (h2 from the peer proxy), client identity known
//!    │           └ ALPN weft-tcp/1 ─> TCP relay to --app
//!    ├ HTTP/1, h2c ─> plaintext allowed? HTTP : 403 (HTTP/1) / close
//!    └ opaque      ─> plaintext allowed? TCP relay to --app : close
//! ```
//!
//! "Allowed" is the port's policy once it is known (then judged per
//! request for HTTP), before that the proxy's `--default-inbound-policy`
//! (then plaintext is refused per connection, as a strict port does).
//!
//! With `--transparent` there is no `--app`: each connection goes to its
//! original destination (the pod IP and app port the peer dialed, before
//! iptables redirected it here), and its authorization policy is that
//! port's. A destination port that is one of the proxy's own, or a
//! connection that was not redirected, is refused first (orig_dst::Gate).
//!
//! Every refusal is one `refused inbound connection from <peer>: <reason>`
//! log line and one `weft_refused_connections_total` increment.

use std::{net::SocketAddr, sync::Arc};

use hyper_util::{
    rt::TokioExecutor,
    server::{
        conn::auto,
        graceful::Watcher,
    },
};
use mesh_identity::{peer_identity, SpiffeId, ALPN_WEFT};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, warn};

/// A downstream connection after detection, its bytes counted.
type Counted = CountingIo<PrefixedIo<TcpStream>>;

use crate::{
    metrics::tcp::{CloseError, ConnMeter, CountingIo},
    discovery::authz::{Authz, AuthzByPort, Traffic},
    config::{Limits, OpaquePorts},
    tcp::detect::{detect, detect_tls, Detected, PrefixedIo, Protocol},
    stack::{
        inbound::{Connection, InboundStack},
        serve::serve_http,
        Via,
    },
    http::upstream::{connect_from, local_app_source},
    identity::{MeshTls, ALPN_WEFT_TCP},
    intercept::orig_dst::Gate,
    discovery::policy::Verdict,
    identity::refusal::{self, Refusal},
    http::admit::ConnLimit,
    http::idle::Activity,
    http::server::{serve_connections, Phase},
    tcp::relay,
    intercept::transparent::DirectUpstreams,
};

/// Everything an inbound connection may need.
pub struct Inbound {
    /// The HTTP request path towards the app.
    pub stack: InboundStack,
    /// The hyper connection builder (limits applied).
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    /// Timeouts and sizes.
    pub limits: Limits,
    /// Where connections go: `--app`, or each one's original destination.
    pub app: App,
    /// Our identity; `None`: plaintext only.
    pub mesh: Option<Arc<MeshTls>>,
    /// `--max-inbound-connections`, shared with the IPv6 twin.
    pub conn_limit: Arc<ConnLimit>,
}

/// The application behind the inbound listener.
pub enum App {
    /// `--app`: every connection goes there. `authz` judges its port
    /// (`--policy`, the default until it is known; without `--policy`
    /// always the default).
    Fixed {
        /// The app's address.
        addr: SocketAddr,
        /// Its port's authorization.
        authz: Arc<Authz>,
    },
    /// `--transparent`: each connection's original destination.
    OriginalDst(Box<OriginalDstApp>),
}

/// Transparent inbound: the gate, the app upstreams, the per-port policies.
pub struct OriginalDstApp {
    gate: Gate,
    upstreams: DirectUpstreams,
    authz: AuthzByPort,
    opaque_ports: OpaquePorts,
}

impl OriginalDstApp {
    /// `gate` refuses own ports and unredirected connections; `authz`
    /// (`--policy`) judges each destination port by its own policy (which
    /// also says whether the port is opaque, as `opaque_ports` do).
    pub fn new(gate: Gate, authz: AuthzByPort, opaque_ports: OpaquePorts) -> Self {
        Self { gate, upstreams: DirectUpstreams::local_app(), authz, opaque_ports }
    }
}

/// Where one connection goes, decided when it is accepted.
struct Target {
    app: SocketAddr,
    /// Transparent: the address the app is dialed from (127.0.0.6, so the
    /// hairpin rule of `weft init` does not send it back here).
    app_source: Option<std::net::IpAddr>,
    /// Transparent: the app upstream for HTTP (else the forwarder's own).
    via: Option<Via>,
    authz: Arc<Authz>,
    /// Transparent: the destination port is opaque (no HTTP detection).
    opaque_port: bool,
}

impl Inbound {
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

    fn target(&self, stream: &TcpStream, peer: SocketAddr) -> Option<Target> {
        match &self.app {
            App::Fixed { addr, authz } => Some(Target { app: *addr, app_source: None, via: None, authz: authz.clone(), opaque_port: false }),
            App::OriginalDst(t) => {
                let dst = t.gate.admit(stream, peer)?;
                Some(Target {
                    app: dst,
                    app_source: local_app_source(dst),
                    via: Some(Via::Upstream(t.upstreams.get(dst))),
                    authz: t.authz.port(dst.port()),
                    opaque_port: t.opaque_ports.contains(dst.port()),
                })
            }
        }
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
        let Some(target) = self.target(&stream, peer) else { return };
        let limits = &self.limits;
        // A silent client must not hold a socket forever, nor a drain. In
        // transparent mode it may be a plaintext client of a
        // server-speaks-first app port (anything may be redirected here):
        // after --detect-timeout it is opaque TCP, as outbound.
        let transparent = matches!(self.app, App::OriginalDst(_));
        if transparent {
            // The port's watch may have started with this connection.
            target.authz.loaded().await;
        }
        let silent = if transparent { limits.detect_timeout } else { limits.header_read_timeout };
        // An opaque port: only a peer proxy's TLS is told apart (it speaks
        // first, at once); plaintext bytes are relayed without waiting for
        // an HTTP request line. A silent plaintext client still waits
        // --detect-timeout: nothing tells it from a peer yet to speak.
        let opaque = target.opaque_port || target.authz.policy().is_some_and(|p| p.opaque);
        let detecting = async {
            match opaque {
                true => detect_tls(&mut stream, silent).await,
                false => detect(&mut stream, limits.detect_timeout, silent, limits.max_header_bytes).await,
            }
        };
        let detected = tokio::select! {
            d = detecting => d,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let (protocol, prefix) = match detected {
            Ok(Detected::Protocol(p, prefix)) => (p, prefix),
            Ok(Detected::Silent) if transparent => (Protocol::Opaque, bytes::Bytes::new()),
            Ok(Detected::Nothing | Detected::Silent) => {
                debug!(%peer, "client sent nothing in time; closing");
                return;
            }
            Err(e) => {
                debug!(%peer, error = %e, "reading the first bytes failed");
                return;
            }
        };
        let read = prefix.len();
        let io = CountingIo::new(PrefixedIo::new(prefix, stream), Arc::clone(&meter), read);
        if protocol != Protocol::Tls || self.mesh.is_none() {
            meter.identify(None, false);
        }
        // The port's policy, once loaded, judges plaintext per request
        // (HTTP: 403; TCP: closed); until then a default that refuses
        // plaintext refuses the connection at once.
        let refuse_plaintext = !target.authz.judged_by_policy() && target.authz.verdict(None) != Verdict::Allow;
        match (protocol, &self.mesh) {
            (Protocol::Tls, Some(mesh)) => Box::pin(self.meshed(mesh, io, &meter, peer, watcher, phase, target, activity)).await,
            // Every handler is boxed: a connection still in detection
            // (thousands in an idle flood) holds only what detection needs.
            (_, _) if refuse_plaintext => Box::pin(self.refuse_plaintext(protocol, io, peer, &target.authz)).await,
            (Protocol::Http1 | Protocol::Http2, _) => {
                Box::pin(self.serve_http(io, &meter, peer, watcher, phase, None, target, activity)).await
            }
            (Protocol::Tls | Protocol::Opaque, _) => {
                if tcp_allowed(&target.authz, None, peer) {
                    let _busy = activity.request();
                    Box::pin(self.relay_to_app(io, &meter, peer, target.app, target.app_source)).await
                }
            }
        }
    }

    async fn meshed(
        &self,
        mesh: &MeshTls,
        io: Counted,
        meter: &Arc<ConnMeter>,
        peer: SocketAddr,
        watcher: Watcher,
        phase: watch::Receiver<Phase>,
        target: Target,
        activity: Activity,
    ) {
        let accepted = tokio::time::timeout(self.limits.header_read_timeout, mesh.acceptor().accept(io)).await;
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                meter.identify(None, true);
                meter.failed(CloseError::of_io(&e));
                let reason = if mesh.is_certified() { refusal::classify_io(&e) } else { Refusal::NotCertified };
                return self.refused(peer, reason, &e.to_string());
            }
            Err(_) => {
                meter.identify(None, true);
                meter.failed(CloseError::Timeout);
                let within = humantime::format_duration(self.limits.header_read_timeout);
                return self.refused(peer, Refusal::Handshake, &format!("handshake not completed within {within}"));
            }
        };
        let (_, conn) = tls.get_ref();
        // The verifier only accepts certificates carrying a SPIFFE ID.
        let client = peer_identity(conn);
        meter.identify(client.as_ref().map(SpiffeId::as_str), true);
        match conn.alpn_protocol() {
            Some(ALPN_WEFT) => self.serve_http(tls, meter, peer, watcher, phase, client, target, activity).await,
            Some(ALPN_WEFT_TCP) => {
                debug!(%peer, client = ?client, "meshed tcp");
                if tcp_allowed(&target.authz, client.as_ref(), peer) {
                    let _busy = activity.request();
                    self.relay_to_app(tls, meter, peer, target.app, target.app_source).await
                }
            }
            other => {
                let alpn = other.map(String::from_utf8_lossy);
                self.refused(peer, Refusal::Handshake, &format!("unexpected ALPN {alpn:?}"));
            }
        }
    }

    fn refused(&self, peer: SocketAddr, reason: Refusal, detail: &str) {
        self.stack.metrics().record_refusal(reason);
        warn!("refused inbound connection from {peer}: {reason}: {detail}");
    }

    async fn serve_http<I>(
        &self,
        io: I,
        meter: &ConnMeter,
        peer: SocketAddr,
        watcher: Watcher,
        mut phase: watch::Receiver<Phase>,
        client: Option<SpiffeId>,
        target: Target,
        activity: Activity,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stack = self.stack.service(Connection { client, peer, authz: target.authz, via: target.via });
        if let Err(e) = serve_http(&self.builder, io, stack, &self.limits, activity, watcher, &mut phase).await {
            meter.failed(CloseError::of(&*e));
            debug!(%peer, error = %e, "inbound connection ended with error");
        }
    }

    async fn relay_to_app<I>(&self, mut io: I, meter: &ConnMeter, peer: SocketAddr, addr: SocketAddr, source: Option<std::net::IpAddr>)
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let mut app = match connect_from(addr, source).await {
            Ok(app) => app,
            Err(e) => {
                meter.failed(CloseError::of_io(&e));
                warn!("inbound tcp from {peer}: connect to app {addr} failed: {e}");
                return;
            }
        };
        let _ = app.set_nodelay(true);
        if let Err(e) = relay(&mut io, &mut app).await {
            meter.failed(CloseError::of_io(&e));
            debug!(%peer, error = %e, "inbound tcp relay ended with error");
        }
    }

    /// Plaintext on a strict port: HTTP/1 gets a 403 naming why (cheap, and
    /// far clearer to a person with curl than a reset); the rest is closed.
    async fn refuse_plaintext(&self, protocol: Protocol, mut io: Counted, peer: SocketAddr, authz: &Authz) {
        let what = match protocol {
            Protocol::Http1 => "HTTP/1",
            Protocol::Http2 => "HTTP/2 (h2c)",
            Protocol::Tls => "TLS without Weft identity",
            Protocol::Opaque => "opaque TCP",
        };
        let why = match authz.awaiting_policy() {
            true => "no policy for it yet",
            false => "no policy for it",
        };
        self.refused(
            peer,
            Refusal::Plaintext,
            &format!(
                "{what} on a port that requires Weft mTLS (port {}, {why}: --default-inbound-policy {})",
                authz.port(),
                authz.default_name()
            ),
        );
        if protocol != Protocol::Http1 {
            return;
        }
        const BODY: &str = "plaintext refused: this port requires Weft mTLS\n";
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nweft-proxy-error: plaintext refused\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        // Bounded: a client that neither reads nor closes gets no more time.
        let wrote = tokio::time::timeout(self.limits.header_read_timeout.min(std::time::Duration::from_secs(2)), async {
            io.write_all(response.as_bytes()).await?;
            io.shutdown().await?;
            // Closing with unread request bytes would reset the connection
            // and could destroy the 403 before the client reads it: drain a
            // bounded amount first.
            let mut sink = [0u8; 4096];
            let mut left = 64 * 1024;
            while left > 0 {
                let n = io.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left -= n.min(left);
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        if let Ok(Err(e)) = wrote {
            debug!(%peer, error = %e, "writing the 403 failed");
        }
    }
}

/// The authorization verdict for a TCP connection (counted and logged when
/// refused).
fn tcp_allowed(authz: &Authz, client: Option<&SpiffeId>, peer: SocketAddr) -> bool {
    match authz.verdict(client) {
        Verdict::Allow => true,
        v => {
            authz.refused(Traffic::Tcp, v, client, peer, true);
            false
        }
    }
}
