//! HTTP/1 request validation: what hyper lets through and the proxy refuses
//! with 400 before routing, on every listener.
//!
//! - **Content-Length and Transfer-Encoding together** (RFC 9112 §6.1
//!   allows a server to go by Transfer-Encoding; nginx, Envoy and
//!   linkerd2-proxy refuse, and so does Weft: a front end that frames by
//!   Content-Length would disagree with us about where the request ends).
//!   hyper drops the Content-Length before the request reaches a service,
//!   so the request heads are read a second time from the bytes on the
//!   connection ([`FramingIo`]) and the conflicting request is marked.
//! - **HTTP/1.1 without Host** (RFC 9112 §3.2: a server MUST answer 400).

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use http::{header, Request, Response, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Layer, Service};
use crate::http::{body::ResponseBody, error::ProxyError};

/// Refuses what [`check`] refuses before the request goes further.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateLayer;

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Validate<S> {
        Validate { inner }
    }
}

/// See [`ValidateLayer`].
#[derive(Debug)]
pub struct Validate<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Validate<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl std::future::Future<Output = Self::Response> + Send {
        let checked = check(&req).map(|()| req);
        async move { self.inner.call(checked?).await }
    }
}

/// What the connection's reader saw, shared with the connection's service.
#[derive(Debug, Default)]
pub struct Framing {
    /// 1-based index of the first request head with both framing headers; 0: none.
    conflicting: AtomicU64,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

/// Request extension: the head of this request had both Content-Length and
/// Transfer-Encoding.
#[derive(Debug, Clone, Copy)]
pub struct ConflictingFraming;

impl Framing {
    /// Marks `req` when its head (the n-th on this HTTP/1 connection) had
    /// conflicting framing. hyper serves one HTTP/1 request at a time and
    /// closes the connection after such a request, so counting is exact.
    pub fn mark<B>(&self, req: &mut Request<B>) {
        if !matches!(req.version(), Version::HTTP_10 | Version::HTTP_11) {
            return;
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let c = self.conflicting.load(Ordering::Acquire);
        if c != 0 && c == n {
            req.extensions_mut().insert(ConflictingFraming);
        }
    }
}

/// The checks, in the order a request meets them; `Err` is answered 400
/// with a `weft-proxy-error` reason.
pub fn check<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.extensions().get::<ConflictingFraming>().is_some() {
        return Err(ProxyError::Malformed { reason: "both Content-Length and Transfer-Encoding (request smuggling risk)" });
    }
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST) {
        return Err(ProxyError::Malformed { reason: "HTTP/1.1 request without Host" });
    }
    Ok(())
}

/// Wraps a downstream connection's IO; reads pass through unchanged while
/// a copy of the HTTP/1 framing is followed (heads, Content-Length and
/// chunked bodies) to spot a head with both framing headers.
#[derive(Debug)]
pub struct FramingIo<I> {
    inner: I,
    scan: Scanner,
    framing: Arc<Framing>,
}

impl<I> FramingIo<I> {
    /// `max_head` bounds the bytes kept for one incomplete head (past it the
    /// scan stops; hyper refuses such a head itself).
    pub fn new(inner: I, max_head: usize) -> (Self, Arc<Framing>) {
        let framing = Arc::new(Framing::default());
        (Self { inner, scan: Scanner::new(max_head), framing: Arc::clone(&framing) }, framing)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FramingIo<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if let Some(n) = this.scan.feed(&buf.filled()[before..]) {
                this.framing.conflicting.store(n, Ordering::Release);
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FramingIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
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

/// Where in the byte stream the scan is.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping a Content-Length body.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its line end.
    ChunkData(u64),
    /// Skipping the line end after chunk data.
    ChunkEnd,
    /// Trailer lines until an empty one.
    Trailers,
    /// Nothing more to follow: a conflicting head was found (hyper closes
    /// after it), an upgrade or CONNECT, HTTP/2, or bytes hyper refuses too.
    Done,
}

#[derive(Debug)]
struct Scanner {
    state: State,
    /// The incomplete head or line.
    pending: Vec<u8>,
    heads: u64,
    max_head: usize,
}

impl Scanner {
    fn new(max_head: usize) -> Self {
        Self { state: State::Head, pending: Vec::new(), heads: 0, max_head }
    }

    /// Follows `bytes`; the 1-based index of a head with both framing
    /// headers, the first time one is seen.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            match self.state {
                State::Done => return None,
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n { State::Head } else { State::Body(left - n) };
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n { State::ChunkEnd } else { State::ChunkData(left - n) };
                }
                State::Head => {
                    let start = self.pending.len();
                    self.pending.extend_from_slice(bytes);
                    match self.head() {
                        Ok(Some((used, found))) => {
                            bytes = &bytes[used - start..];
                            self.pending.clear();
                            if found.is_some() {
                                return found;
                            }
                        }
                        Ok(None) => {
                            if self.pending.len() > self.max_head {
                                self.stop();
                            }
                            return None;
                        }
                        Err(()) => {
                            self.stop();
                            return None;
                        }
                    }
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        self.pending.extend_from_slice(bytes);
                        if self.pending.len() > self.max_head {
                            self.stop();
                        }
                        return None;
                    };
                    self.pending.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut self.pending);
                    self.line(trim_cr(&line));
                }
            }
        }
        None
    }

    fn stop(&mut self) {
        self.state = State::Done;
        self.pending = Vec::new();
    }

    /// One complete line in a chunked body.
    fn line(&mut self, line: &[u8]) {
        self.state = match self.state {
            State::ChunkEnd => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => {
                let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let size = std::str::from_utf8(&line[..digits]).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
                match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Done,
                }
            }
        };
    }

    /// Parses the pending head: `Ok(None)` incomplete, `Ok(Some((length,
    /// conflicting index)))` complete, `Err` not a head hyper would take.
    #[allow(clippy::type_complexity)]
    fn head(&mut self) -> Result<Option<(usize, Option<u64>)>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let used = match req.parse(&self.pending) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        self.heads += 1;
        let (mut cl, mut te, mut upgrade) = (None, false, req.method == Some("CONNECT"));
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()).or(Some(u64::MAX));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if cl.is_some() && te {
            self.stop();
            return Ok(Some((used, Some(self.heads))));
        }
        self.state = match (upgrade, te, cl) {
            (true, _, _) => State::Done,
            (_, true, _) => State::ChunkSize,
            (_, _, Some(u64::MAX)) => State::Done,
            (_, _, Some(0) | None) => State::Head,
            (_, _, Some(n)) => State::Body(n),
        };
        Ok(Some((used, None)))
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Option<u64> {
        let mut s = Scanner::new(1 << 16);
        chunks.iter().find_map(|c| s.feed(c))
    }

    #[test]
    fn conflicting_heads_are_found_in_any_order_and_split() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(&[cl_te]), Some(1));
        let te_cl = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(&[te_cl]), Some(1));
        let bare_lf = b"POST / HTTP/1.1\nHost: a\nContent-Length: 64\nTransfer-Encoding: chunked\n\n0\n\n";
        assert_eq!(scan(&[bare_lf]), Some(1));
        let (a, b) = cl_te.split_at(30);
        assert_eq!(scan(&[a, b]), Some(1), "a head split across reads");
    }

    #[test]
    fn bodies_are_skipped_to_the_next_head() {
        let first = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 49\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The second "head" is the first request's body: not a head at all.
        assert_eq!(scan(&[first]), None);
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n";
        let bad = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(&[chunked, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", bad]), Some(3));
    }

    #[test]
    fn h2_and_upgrades_end_the_scan() {
        assert_eq!(scan(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), None);
        let up = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(scan(&[up, b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]), None);
    }

    #[test]
    fn marks_only_the_conflicting_request() {
        let f = Framing::default();
        f.conflicting.store(2, Ordering::Release);
        let mut one = Request::get("/").header("host", "a").body(()).unwrap();
        f.mark(&mut one);
        assert!(check(&one).is_ok());
        let mut two = Request::get("/").header("host", "a").body(()).unwrap();
        f.mark(&mut two);
        assert!(matches!(check(&two), Err(ProxyError::Malformed { .. })));
        let no_host = Request::get("/").body(()).unwrap();
        assert!(matches!(check(&no_host), Err(ProxyError::Malformed { .. })));
        let h2 = Request::get("/").version(Version::HTTP_2).body(()).unwrap();
        assert!(check(&h2).is_ok());
    }
}
