//! Inbound protocol detection: read the first bytes of a connection, decide
//! TLS / HTTP/2 / HTTP/1 / opaque TCP, and hand the bytes back in front of
//! the stream ([`PrefixedIo`]) so the chosen handler sees them unread.
//!
//! Reading (rather than `peek`) lets detection wait for more bytes without
//! spinning: `peek` returns the same bytes again at once when nothing new
//! arrived.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS handshake record (content type 22).
    Tls,
    /// The HTTP/2 connection preface (prior knowledge h2c).
    Http2,
    /// An HTTP/1.x request line.
    Http1,
    /// Anything else: relayed as bytes.
    Opaque,
}

/// The outcome of [`detect`].
#[derive(Debug)]
pub enum Detected {
    /// The protocol and the bytes read so far.
    Protocol(Protocol, Bytes),
    /// The peer closed without sending anything.
    Nothing,
    /// The peer sent nothing within the silent timeout (still open): a
    /// server-speaks-first protocol, or an idle client.
    Silent,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token accepted as HTTP/1 (longest registered methods are
/// ~17 bytes, e.g. `VERSION-CONTROL`).
const MAX_METHOD: usize = 24;

/// Decides from `buf`, or `None` when more bytes are needed.
pub fn classify(buf: &[u8], max_line: usize) -> Option<Protocol> {
    let first = *buf.first()?;
    if first == 0x16 {
        return Some(Protocol::Tls);
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return None;
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    // HTTP/1: `METHOD SP target SP HTTP/1.x CRLF`. The method token is
    // checked as soon as it ends, so most non-HTTP bytes are told apart at once.
    let Some(sp) = buf.iter().take(MAX_METHOD + 1).position(|&b| b == b' ') else {
        let prefix = &buf[..buf.len().min(MAX_METHOD + 1)];
        return if prefix.len() > MAX_METHOD || !prefix.iter().all(|&b| is_tchar(b)) { Some(Protocol::Opaque) } else { None };
    };
    if sp == 0 || !buf[..sp].iter().all(|&b| is_tchar(b)) {
        return Some(Protocol::Opaque);
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
            let http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
            Some(if http1 { Protocol::Http1 } else { Protocol::Opaque })
        }
        None if buf.len() >= max_line => Some(Protocol::Opaque),
        None => None,
    }
}

/// What bytes still undecided at the detect timeout are. `classify` calls
/// anything that cannot begin an HTTP request opaque at once, so these are
/// a prefix of the h2 preface or of an HTTP/1 request line: a client
/// trickling them (slowloris) stays HTTP, where the header read timeout and
/// the first-request bound close it, instead of becoming an opaque relay
/// with no timeout of its own. [`detect_tls`] decides from the first byte,
/// so an opaque port never gets here.
fn undecided(buf: &[u8]) -> Protocol {
    if H2_PREFACE.starts_with(buf) {
        Protocol::Http2
    } else {
        Protocol::Http1
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until the protocol is known. A peer that closes without a byte
/// gives [`Detected::Nothing`], one that sends nothing within
/// `silent_timeout` [`Detected::Silent`]; one that sent
/// something undecidable within `detect_timeout` is opaque.
pub async fn detect<S: AsyncRead + Unpin>(
    io: &mut S,
    detect_timeout: Duration,
    silent_timeout: Duration,
    max_line: usize,
) -> io::Result<Detected> {
    detect_with(io, detect_timeout, silent_timeout, |buf| classify(buf, max_line)).await
}

/// [`detect`] for an opaque port: only TLS (a peer proxy's handshake) is
/// told apart, from the first byte; anything else is opaque at once, never
/// waited on for an HTTP request line.
pub async fn detect_tls<S: AsyncRead + Unpin>(io: &mut S, silent_timeout: Duration) -> io::Result<Detected> {
    let first = |buf: &[u8]| buf.first().map(|&b| if b == 0x16 { Protocol::Tls } else { Protocol::Opaque });
    detect_with(io, silent_timeout, silent_timeout, first).await
}

async fn detect_with<S: AsyncRead + Unpin>(
    io: &mut S,
    detect_timeout: Duration,
    silent_timeout: Duration,
    classify: impl Fn(&[u8]) -> Option<Protocol>,
) -> io::Result<Detected> {
    // Empty until the first read is polled, and small then (`read_buf`
    // reserves 64 bytes): a silent connection, thousands of them in an
    // idle flood, holds no read buffer of 1 KiB.
    let mut buf = BytesMut::new();
    // The detection clock starts with the first byte, not the connection.
    let mut deadline = tokio::time::Instant::now() + silent_timeout;
    loop {
        if !buf.is_empty() {
            buf.reserve(1024);
        }
        let was_empty = buf.is_empty();
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        if was_empty && !buf.is_empty() {
            deadline = tokio::time::Instant::now() + detect_timeout;
        }
        match read {
            Ok(Ok(0)) if buf.is_empty() => return Ok(Detected::Nothing),
            // Closed after a partial prefix: whatever it is, it is not HTTP or TLS.
            Ok(Ok(0)) => return Ok(Detected::Protocol(Protocol::Opaque, buf.freeze())),
            Ok(Ok(_)) => {
                if let Some(p) = classify(&buf) {
                    return Ok(Detected::Protocol(p, buf.freeze()));
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if buf.is_empty() => return Ok(Detected::Silent),
            Err(_) => return Ok(Detected::Protocol(undecided(&buf), buf.freeze())),
        }
    }
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct PrefixedIo<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> PrefixedIo<S> {
    /// `prefix` is returned by reads before anything from `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(b: &[u8]) -> Option<Protocol> {
        classify(b, 8192)
    }

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(c(b""), None);
        assert_eq!(c(&[0x16, 0x03, 0x01]), Some(Protocol::Tls));
        assert_eq!(c(b"PRI * HT"), None);
        assert_eq!(c(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(c(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), Some(Protocol::Http1));
        assert_eq!(c(b"POST /a HTTP/1.0\n"), Some(Protocol::Http1));
        assert_eq!(c(b"GET /long/path/not/yet/ended"), None);
        assert_eq!(c(b"GE"), None);
        assert_eq!(c(b"\x00\x01binary"), Some(Protocol::Opaque));
        assert_eq!(c(b"hello world\r\n"), Some(Protocol::Opaque));
        assert_eq!(c(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Some(Protocol::Opaque));
        assert_eq!(c(b" GET"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET /aaaaaaaaaa", 10), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detect_reads_until_decided_and_prefix_replays() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let t = Duration::from_secs(5);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(b"GET / HT").await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(b"TP/1.1\r\n\r\nrest").await.unwrap();
            client
        });
        let Detected::Protocol(p, prefix) = detect(&mut server, t, t, 8192).await.unwrap() else { panic!("nothing") };
        assert_eq!(p, Protocol::Http1);
        let _client = writer.await.unwrap();
        let mut io = PrefixedIo::new(prefix, server);
        let mut got = vec![0u8; 20];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\nre");
    }

    #[tokio::test]
    async fn opaque_ports_only_tell_tls_apart() {
        use tokio::io::AsyncWriteExt;
        let t = Duration::from_secs(5);
        let (mut client, mut server) = tokio::io::duplex(64);
        // An HTTP-looking prefix is not waited on: opaque at once.
        client.write_all(b"GE").await.unwrap();
        assert!(matches!(detect_tls(&mut server, t).await.unwrap(), Detected::Protocol(Protocol::Opaque, b) if &b[..] == b"GE"));
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0x16, 0x03]).await.unwrap();
        assert!(matches!(detect_tls(&mut server, t).await.unwrap(), Detected::Protocol(Protocol::Tls, _)));
        let (_client, mut server) = tokio::io::duplex(64);
        assert!(matches!(detect_tls(&mut server, Duration::from_millis(20)).await.unwrap(), Detected::Silent));
    }

    #[tokio::test]
    async fn silence_and_partial_bytes_time_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let short = Duration::from_millis(50);
        assert!(matches!(detect(&mut server, short, short, 8192).await.unwrap(), Detected::Silent));
        use tokio::io::AsyncWriteExt;
        client.write_all(b"\x01HELLO").await.unwrap();
        assert!(matches!(
            detect(&mut server, short, short, 8192).await.unwrap(),
            Detected::Protocol(Protocol::Opaque, b) if &b[..] == b"\x01HELLO"
        ));
        // A plausible start of HTTP stays HTTP (slowloris), the h2 preface's
        // start stays h2: their own timeouts apply, not an opaque relay's.
        client.write_all(b"GET /slo").await.unwrap();
        assert!(matches!(detect(&mut server, short, short, 8192).await.unwrap(), Detected::Protocol(Protocol::Http1, _)));
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(matches!(detect(&mut server, short, short, 8192).await.unwrap(), Detected::Protocol(Protocol::Http2, _)));
        drop(client);
        assert!(matches!(detect(&mut server, short, short, 8192).await.unwrap(), Detected::Nothing));
    }
}
