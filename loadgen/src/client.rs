//! HTTP/1 and HTTP/2 client connections on our own `TcpStream`s (hyper 1.x `conn` API).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{self, Either};
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::error_class;
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
    /// Origin-form for HTTP/1, absolute-form (scheme + authority) for HTTP/2.
    uri: Uri,
    /// HTTP/1 only: HTTP/2 carries it in `:authority` via the absolute URI.
    host: Option<HeaderValue>,
    /// Built once; each request clones a reference, not the bytes.
    body: Bytes,
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
        let uri: Uri = if cfg.http2 {
            format!("http://{authority_value}{path}")
                .parse()
                .map_err(|e| {
                    LoadError::Config(vec![format!(
                        "host {authority_value:?}: cannot form a request URI: {e}"
                    )])
                })?
        } else {
            path.parse()
                .expect("a path taken from a valid URI is valid")
        };
        let host = if cfg.http2 {
            None
        } else {
            Some(HeaderValue::from_str(&authority_value).map_err(|e| {
                LoadError::Config(vec![format!(
                    "host {authority_value:?}: not a valid header value: {e}"
                )])
            })?)
        };
        let (method, body) = if cfg.body_size == 0 {
            (Method::GET, Bytes::new())
        } else {
            (Method::POST, Bytes::from(vec![b'x'; cfg.body_size]))
        };
        Ok(Target {
            addr,
            display: cfg.target.to_string(),
            method,
            uri,
            host,
            body,
            timeout: cfg.timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn request(&self) -> Request<ReqBody> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        if let Some(host) = &self.host {
            req.headers_mut().insert(header::HOST, host.clone());
        }
        req
    }

    async fn tcp(&self) -> std::io::Result<TokioIo<TcpStream>> {
        let stream = TcpStream::connect(self.addr).await?;
        // Requests are small writes that must leave at once, not wait for Nagle.
        stream.set_nodelay(true)?;
        Ok(TokioIo::new(stream))
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

type H1Driver = http1::Connection<TokioIo<TcpStream>, ReqBody>;

/// An HTTP/1 connection whose driver is polled by the task that uses it, so a request and its
/// response never cross threads on the client side.
pub(crate) struct H1Conn {
    sender: http1::SendRequest<ReqBody>,
    driver: Pin<Box<H1Driver>>,
}

impl H1Conn {
    pub async fn connect(target: &Target) -> Result<H1Conn, ConnectError> {
        with_timeout(target.timeout, async {
            let io = target.tcp().await?;
            // One flat write per request instead of writev: fewer, cheaper syscalls for the
            // small requests a benchmark sends.
            let (sender, driver) = http1::Builder::new().writev(false).handshake(io).await?;
            Ok(H1Conn {
                sender,
                driver: Box::pin(driver),
            })
        })
        .await
    }

    /// Resolves when the server closes the idle connection (or it fails); drop it then.
    pub async fn closed(&mut self) {
        let _ = self.driver.as_mut().await;
    }

    /// Waits until the connection can take a request, driving it meanwhile. False when it
    /// cannot (the server closed it, e.g. after `Connection: close`): reconnect, nothing was
    /// sent, so nothing failed.
    pub async fn ready(&mut self) -> bool {
        let H1Conn { sender, driver } = self;
        let ready = pin!(sender.ready());
        matches!(
            future::select(ready, driver.as_mut()).await,
            Either::Left((Ok(()), _))
        )
    }

    /// Sends one request and reads its whole response. Returns the connection if it is still
    /// usable. The caller applies the timeout (dropping the connection with it).
    pub async fn exchange(self, req: Request<ReqBody>) -> (Option<H1Conn>, Outcome) {
        let H1Conn { sender, mut driver } = self;
        let mut exchange = pin!(h1_exchange(sender, req));
        match future::select(exchange.as_mut(), driver.as_mut()).await {
            Either::Left(((sender, outcome), _)) => {
                let reusable = matches!(outcome, Outcome::Response(_) | Outcome::Shed(_))
                    && !sender.is_closed();
                (reusable.then_some(H1Conn { sender, driver }), outcome)
            }
            Either::Right(_) => {
                // The connection ended first; the response may still be complete in the
                // buffer. Dropping the driver makes a pending exchange fail instead of hang.
                drop(driver);
                let (_, outcome) = exchange.await;
                (None, outcome)
            }
        }
    }
}

async fn h1_exchange(
    mut sender: http1::SendRequest<ReqBody>,
    req: Request<ReqBody>,
) -> (http1::SendRequest<ReqBody>, Outcome) {
    // hyper's HTTP/1 sender is ready again only after the driver has seen the end of the
    // previous response; waiting here (the driver is polled alongside) avoids "not ready".
    if sender.ready().await.is_err() {
        return (sender, Outcome::Failed(error_class::IO));
    }
    let outcome = response_outcome(sender.send_request(req).await).await;
    (sender, outcome)
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
            let io = target.tcp().await?;
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
