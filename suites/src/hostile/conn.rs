//! Connections to an attacked listener and reading what comes back: raw
//! TCP, or TLS with a valid mesh certificate for the mTLS listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A byte stream to the attacked listener.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type Io = Box<dyn Stream>;

/// How the attacker reaches the listener.
#[derive(Clone)]
pub enum Mode {
    Plaintext,
    /// TLS 1.3 with ALPN `weft/1` and a client certificate the proxy accepts.
    Mtls(Arc<rustls::ClientConfig>),
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Plaintext => "plaintext",
            Mode::Mtls(_) => "mtls",
        }
    }
}

/// One attacked listener.
#[derive(Clone)]
pub struct Target {
    /// `outbound` or `inbound`.
    pub listener: &'static str,
    pub mode: Mode,
    pub addr: SocketAddr,
    /// The proxy process behind it (its memory is measured).
    pub pid: u32,
    /// Host / :authority the requests name.
    pub authority: String,
    /// Where the well-behaved client sends (through the attacked proxy),
    /// and the Host it names.
    pub probe_addr: SocketAddr,
    pub probe_host: Option<String>,
}

impl Target {
    pub fn label(&self) -> String {
        format!("{}/{}", self.listener, self.mode.as_str())
    }

    /// A connection in the listener's mode (TLS handshake done for mTLS).
    pub async fn connect(&self) -> std::io::Result<Io> {
        let tcp = TcpStream::connect(self.addr).await?;
        let _ = tcp.set_nodelay(true);
        match &self.mode {
            Mode::Plaintext => Ok(Box::new(tcp)),
            Mode::Mtls(cfg) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg)).connect(name, tcp).await?;
                Ok(Box::new(tls))
            }
        }
    }

    /// A plain TCP connection, whatever the mode (handshake-level attacks).
    pub async fn connect_raw(&self) -> std::io::Result<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// How reading ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    /// The proxy closed (FIN, or TLS ended without close_notify), after this long.
    Eof(Duration),
    /// The proxy reset the connection, after this long.
    Reset(Duration),
    /// Still open at the deadline.
    Open,
}

impl End {
    pub fn after(self) -> Option<Duration> {
        match self {
            End::Eof(d) | End::Reset(d) => Some(d),
            End::Open => None,
        }
    }
}

/// Read whatever arrives until the proxy closes or `deadline`; `since` is
/// what the close time is measured from.
pub async fn read_to_close<R: AsyncRead + Unpin + ?Sized>(io: &mut R, since: Instant, deadline: Instant) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return (got, End::Open),
            Ok(Ok(0)) => return (got, End::Eof(since.elapsed())),
            Ok(Ok(n)) => {
                // Bounded: a proxy that streams forever must not fill our memory.
                if got.len() < 1 << 20 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Ok(Err(e)) => return (got, classify(&e, since)),
        }
    }
}

/// An I/O error on the attacker's side, as an end of the connection.
pub fn classify(e: &std::io::Error, since: Instant) -> End {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted => End::Reset(since.elapsed()),
        // rustls: the peer closed without close_notify; a broken pipe on write.
        UnexpectedEof | BrokenPipe => End::Eof(since.elapsed()),
        _ => End::Reset(since.elapsed()),
    }
}

/// The HTTP/1 responses in `bytes`: (status, head + body text) each, split
/// on status lines (enough to tell a refusal from an echo of the app).
pub fn h1_responses(bytes: &[u8]) -> Vec<(u16, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(i) = rest.find("HTTP/1.") {
        let from = &rest[i..];
        let status = from.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let next = from[1..].find("HTTP/1.").map_or(from.len(), |j| j + 1);
        out.push((status, from[..next].to_owned()));
        rest = &from[next..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_split_on_status_lines() {
        let r = h1_responses(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{\"path\":\"/x\"}");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, 400);
        assert_eq!(r[1].0, 200);
        assert!(r[1].1.contains("/x"));
        assert!(h1_responses(b"").is_empty());
    }
}
