//! HTTP/1 and HTTP/2 client connections on our own `TcpStream`s (hyper 1.x `conn` API).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error_class;
use crate::h1::{self, Chunked, Framing, WireError};
use crate::recorder::Outcome;
use crate::{LoadConfig, LoadError};

pub(crate) type ReqBody = Full<Bytes>;

/// Everything needed to connect and to build a request, prepared once.
#[derive(Debug)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// For error messages.
    pub display: String,
    method: Method,
    /// HTTP/2: absolute-form (scheme + authority, which becomes `:authority`).
    uri: Uri,
    /// Built once; each request clones a reference, not the bytes.
    body: Bytes,
    /// HTTP/1: the whole request as it goes on the wire, encoded once.
    h1_request: Bytes,
    timeout: Duration,
}

impl Target {
    pub async fn resolve(cfg: &LoadConfig) -> Result<Target, LoadError> {
        let authority = cfg.target.authority().expect("validated");
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((lookup, port))
            .await
            .and_then(|mut addrs| {
                addrs.next().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses")
                })
            })
            .map_err(|source| LoadError::Resolve {
                host: host.to_string(),
                source,
            })?;
        let path = cfg.target.path_and_query().map_or("/", |p| p.as_str());
        let authority_value = cfg.host.clone().unwrap_or_else(|| authority.to_string());
        let (method, body) = if cfg.body_size == 0 {
            (Method::GET, Bytes::new())
        } else {
            (Method::POST, Bytes::from(vec![b'x'; cfg.body_size]))
        };
        let (uri, h1_request) = if cfg.http2 {
            let uri = format!("http://{authority_value}{path}")
                .parse()
                .map_err(|e| {
                    LoadError::Config(vec![format!(
                        "host {authority_value:?}: cannot form a request URI: {e}"
                    )])
                })?;
            (uri, Bytes::new())
        } else {
            HeaderValue::from_str(&authority_value).map_err(|e| {
                LoadError::Config(vec![format!(
                    "host {authority_value:?}: not a valid header value: {e}"
                )])
            })?;
            let request = h1::encode_request(method.as_str(), path, &authority_value, &body);
            (Uri::default(), request)
        };
        Ok(Target {
            addr,
            display: cfg.target.to_string(),
            method,
            uri,
            body,
            h1_request,
            timeout: cfg.timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An HTTP/2 request.
    pub fn request(&self) -> Request<ReqBody> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        req
    }

    /// The HTTP/1 request's bytes.
    pub fn h1_request(&self) -> &[u8] {
        &self.h1_request
    }

    async fn tcp(&self) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(self.addr).await?;
        // Requests are small writes that must leave at once, not wait for Nagle.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Why a connection could not be opened (error class `connect`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("TCP connect: {0}")]
    Tcp(#[from] std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(#[from] hyper::Error),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(ConnectError::Timeout(limit)))
}

/// Bytes read per `read` call; a response head must fit in [`h1::MAX_HEAD`].
const READ_BUF: usize = 16 * 1024;

/// An HTTP/1.1 connection with one request in flight at a time (see [`crate::h1`]).
pub(crate) struct H1Conn {
    io: TcpStream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl H1Conn {
    pub async fn connect(target: &Target) -> Result<H1Conn, ConnectError> {
        with_timeout(target.timeout, async {
            Ok(H1Conn {
                io: target.tcp().await?,
                buf: vec![0; READ_BUF],
                start: 0,
                end: 0,
            })
        })
        .await
    }

    /// Resolves when the server closes the idle connection, fails it or sends bytes nobody
    /// asked for; drop it then. Cancel-safe: used in a `select!` with the next slot.
    pub async fn closed(&mut self) {
        loop {
            if self.io.readable().await.is_err() {
                return;
            }
            match self.io.try_read(&mut self.buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }

    /// Sends one request and reads its whole response. Returns the connection if it is still
    /// usable. The caller applies the timeout (dropping the connection with it).
    pub async fn exchange(mut self, req: &[u8]) -> (Option<H1Conn>, Outcome) {
        match self.round_trip(req).await {
            Ok((outcome, reusable)) => (reusable.then_some(self), outcome),
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/1 exchange failed");
                (None, Outcome::Failed(error_class::IO))
            }
        }
    }

    async fn round_trip(&mut self, req: &[u8]) -> Result<(Outcome, bool), WireError> {
        // Nothing is pipelined, and a response followed by stray bytes ends the connection:
        // the buffer is empty here.
        self.start = 0;
        self.end = 0;
        self.io.write_all(req).await?;
        let head = loop {
            let head = loop {
                if let Some(head) = h1::parse_head(&self.buf[self.start..self.end])? {
                    break head;
                }
                self.fill().await?;
            };
            self.start += head.len;
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(WireError::Upgrade);
            }
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if !head.status.is_informational() {
                break head;
            }
        };
        match head.framing {
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.start == self.end {
                        self.fill().await?;
                    }
                    let take = left.min((self.end - self.start) as u64);
                    self.start += take as usize;
                    left -= take;
                }
            }
            Framing::Chunked => {
                let mut chunked = Chunked::new();
                while chunked != Chunked::Done {
                    if self.start == self.end {
                        self.fill().await?;
                    }
                    self.start += chunked.skip(&self.buf[self.start..self.end])?;
                }
            }
            Framing::UntilClose => loop {
                self.start = 0;
                self.end = 0;
                match self.fill().await {
                    Ok(()) => {}
                    Err(WireError::Eof) => break,
                    Err(e) => return Err(e),
                }
            },
        }
        let outcome = if head.shed {
            Outcome::Shed(head.status)
        } else {
            Outcome::Response(head.status)
        };
        Ok((outcome, head.keep_alive && self.start == self.end))
    }

    /// Reads more into the buffer (making room first): at least one byte, or `Eof`.
    async fn fill(&mut self) -> Result<(), WireError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() <= h1::MAX_HEAD {
                // Only a head bigger than the buffer gets here (bodies are consumed as read).
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(WireError::HeadTooLarge);
            }
        }
        match self.io.read(&mut self.buf[self.end..]).await? {
            0 => Err(WireError::Eof),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }
}

async fn response_outcome(res: hyper::Result<http::Response<Incoming>>) -> Outcome {
    let resp = match res {
        Ok(resp) => resp,
        Err(_) => return Outcome::Failed(error_class::IO),
    };
    let status: StatusCode = resp.status();
    // The kind, not the reason's words: every way a proxy sheds (its
    // request caps, its queue time) is kind `overloaded`.
    let shed = resp
        .headers()
        .get("weft-proxy-error-kind")
        .is_some_and(|v| v.as_bytes() == b"overloaded");
    // Read and drop frames one by one: nothing is collected or copied.
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Outcome::Failed(error_class::IO);
        }
    }
    if shed {
        Outcome::Shed(status)
    } else {
        Outcome::Response(status)
    }
}

/// An HTTP/2 connection; its driver runs as its own task because many streams share it.
pub(crate) struct H2Conn {
    sender: http2::SendRequest<ReqBody>,
}

impl H2Conn {
    pub async fn connect(target: &Target) -> Result<H2Conn, ConnectError> {
        with_timeout(target.timeout, async {
            let io = TokioIo::new(target.tcp().await?);
            let (sender, driver) = http2::Builder::new(TokioExecutor::new())
                // Large windows: a benchmark should not be throttled by flow control.
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            });
            Ok(H2Conn { sender })
        })
        .await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Starts a stream now; the returned future owns everything and yields the outcome and the
    /// time it completed.
    pub fn start(
        &mut self,
        req: Request<ReqBody>,
        timeout: Duration,
    ) -> impl Future<Output = (Outcome, Instant)> + Send + 'static {
        let response = self.sender.send_request(req);
        async move {
            let outcome =
                tokio::time::timeout(timeout, async { response_outcome(response.await).await })
                    .await
                    .unwrap_or(Outcome::Failed(error_class::TIMEOUT));
            (outcome, Instant::now())
        }
    }
}
