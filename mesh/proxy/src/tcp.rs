//! Opaque TCP: outbound `--tcp-forward` listeners and the relay both
//! directions share.
//!
//! ```text
//!  client ──tcp──> LISTEN ──(mTLS, ALPN weft-tcp/1)──> peer inbound ──tcp──> app
//!                         └─(plaintext, no @ID)──────> ADDR
//! ```
//!
//! Each TCP connection gets its own TLS connection: opaque bytes cannot be
//! multiplexed without framing, and a per-connection handshake is what a
//! TCP client pays anyway.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use crate::{
    config::TcpForward,
    identity::{MeshError, MeshTls, ALPN_WEFT_TCP},
    metrics::DirectionMetrics,
    refusal::{self, Refusal},
    server::{accept_backoff, Phase},
};

/// Bound on connecting to the forward's target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies bytes both ways until both sides are done; returns (a->b, b->a).
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(a, b).await
}

/// One `--tcp-forward` and what it needs to reach its target.
pub struct TcpForwarder {
    forward: TcpForward,
    tls: Option<(TlsConnector, Arc<MeshTls>)>,
    metrics: DirectionMetrics,
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
        Ok(Arc::new(Self { forward, tls, metrics }))
    }

    /// Accepts until the phase leaves `Running`, then waits for the open
    /// relays to finish (the caller bounds the wait).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut phase: watch::Receiver<Phase>) {
        let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p != Phase::Running) => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_backoff(e).await;
                    continue;
                }
            };
            let this = Arc::clone(&self);
            let open = open_tx.clone();
            tokio::spawn(async move {
                let _open = open;
                this.connection(stream, peer).await;
            });
        }
        drop(listener);
        drop(open_tx);
        // Every relay holds a sender; recv() yields None once all are gone.
        let _ = open_rx.recv().await;
    }

    async fn connection(&self, mut client: TcpStream, peer: SocketAddr) {
        let _open = self.metrics.connection_opened();
        let _ = client.set_nodelay(true);
        let target = self.forward.addr;
        let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!("tcp forward {}: connect to {target} failed: {e}; closing {peer}", self.forward.listen);
                return;
            }
            Err(_) => {
                warn!("tcp forward {}: connect to {target} timed out; closing {peer}", self.forward.listen);
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let Some((connector, mesh)) = &self.tls else {
            if let Err(e) = relay(&mut client, &mut { upstream }).await {
                debug!(%peer, %target, error = %e, "tcp relay ended with error");
            }
            return;
        };
        let identity = self.forward.identity.as_ref().map(ToString::to_string).unwrap_or_default();
        if !mesh.is_certified() {
            self.metrics.record_refusal(Refusal::NotCertified);
            warn!("refused outbound connection to {target} ({identity}): {}", Refusal::NotCertified);
            return;
        }
        let name = rustls::pki_types::ServerName::from(target.ip());
        let mut tls = match connector.connect(name, upstream).await {
            Ok(tls) => tls,
            Err(e) => {
                let reason = refusal::classify_io(&e);
                self.metrics.record_refusal(reason);
                warn!("refused outbound connection to {target} ({identity}): {reason}: {e}");
                return;
            }
        };
        if let Err(e) = relay(&mut client, &mut tls).await {
            // TLS 1.3: the server's verdict on our certificate arrives
            // after our handshake completed, as the first thing read.
            let reason = refusal::classify_io(&e);
            if reason != Refusal::Handshake {
                self.metrics.record_refusal(reason);
                warn!("refused outbound connection to {target} ({identity}): {reason}: {e}");
            } else {
                debug!(%peer, %target, error = %e, "tcp relay ended with error");
            }
        }
    }
}
