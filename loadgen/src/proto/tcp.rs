//! Opaque TCP: the echo exchange (write `body_size` bytes, read as many back) over a
//! long-lived connection ([`Steady`]) or over a new connection each time ([`Churn`]), and the
//! echo server `loadgen serve --tcp-echo` answers both with.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::engine::{tcp_connect, Lane, OpenError, Peer};
use crate::error_class;

/// How long open connections get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Writes the payload and reads exactly as many bytes back. Checking the bytes themselves
/// costs nothing next to a round trip and catches a proxy that answers with something else.
async fn echo(stream: &mut TcpStream, peer: &Peer, buf: &mut Vec<u8>) -> Result<(), &'static str> {
    stream
        .write_all(&peer.payload)
        .await
        .map_err(|_| error_class::IO)?;
    buf.resize(peer.payload.len(), 0);
    stream.read_exact(buf).await.map_err(|_| error_class::IO)?;
    if buf[..] != peer.payload[..] {
        return Err(error_class::IO);
    }
    Ok(())
}

/// One long-lived connection, one echo in flight.
pub(crate) struct Steady {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Lane for Steady {
    fn open(peer: &Peer) -> impl Future<Output = Result<Self, OpenError>> + Send {
        async move {
            Ok(Steady {
                stream: tcp_connect(peer).await?,
                buf: Vec::new(),
            })
        }
    }

    fn exchange(&mut self, peer: &Peer) -> impl Future<Output = Result<(), &'static str>> + Send {
        echo(&mut self.stream, peer, &mut self.buf)
    }
}

/// A new connection per exchange: connect, echo, close (the close is not waited for, so the
/// sample is connect + echo).
pub(crate) struct Churn {
    buf: Vec<u8>,
}

impl Lane for Churn {
    const CHURN: bool = true;

    /// Connects once and closes again: the target must be reachable before the clock starts.
    fn open(peer: &Peer) -> impl Future<Output = Result<Self, OpenError>> + Send {
        async move {
            drop(tcp_connect(peer).await?);
            Ok(Churn { buf: Vec::new() })
        }
    }

    fn exchange(&mut self, peer: &Peer) -> impl Future<Output = Result<(), &'static str>> + Send {
        async move {
            let mut stream = tcp_connect(peer).await.map_err(|_| error_class::CONNECT)?;
            echo(&mut stream, peer, &mut self.buf).await
        }
    }
}

/// Echoes every byte of every connection until the client closes its side, then closes.
/// Serves until `shutdown` resolves, then stops accepting and gives open connections
/// [`SHUTDOWN_GRACE`] before they are dropped.
pub async fn serve_echo(listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE under a connection storm: keep serving the open ones.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        conns.spawn(echo_conn(stream));
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

async fn echo_conn(mut stream: TcpStream) {
    let (mut rd, mut wr) = stream.split();
    if let Err(e) = tokio::io::copy(&mut rd, &mut wr).await {
        tracing::debug!(error = %e, "echo connection ended with an error");
    }
    let _ = wr.shutdown().await;
}
