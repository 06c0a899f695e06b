//! One request "from a pod": HTTP/1.1, h2c (prior knowledge) or gRPC over
//! h2c, on a fresh connection opened where the [`Dial`] says (inside the
//! pod's network namespace when it has one), read to the end.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadgen::echo::{self, Echo};

use super::Dial;

/// The protocol the app speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2c,
    /// A unary gRPC call over h2c: `path` is `/<service>/<method>`.
    Grpc,
}

/// A request as the app sends it.
#[derive(Clone, Debug)]
pub struct Req {
    pub proto: Proto,
    pub method: http::Method,
    /// Path and query, e.g. `/a?b=c`.
    pub path: String,
    /// Header fields, in order (repeats allowed).
    pub headers: Vec<(String, String)>,
    /// `Host` / `:authority` instead of the dialed one.
    pub host: Option<String>,
    pub body: Bytes,
    /// For the whole exchange, connect included.
    pub timeout: Duration,
}

impl Req {
    /// `GET path` over HTTP/1.1.
    pub fn get(path: &str) -> Req {
        Req {
            proto: Proto::Http1,
            method: http::Method::GET,
            path: path.into(),
            headers: Vec::new(),
            host: None,
            body: Bytes::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// A unary gRPC call to `/<service>/<method>`.
    pub fn grpc(service: &str, method: &str) -> Req {
        Req {
            proto: Proto::Grpc,
            method: http::Method::POST,
            path: format!("/{service}/{method}"),
            headers: Vec::new(),
            host: None,
            body: echo::grpc_frame(b"conformance"),
            timeout: Duration::from_secs(5),
        }
    }

    pub fn method(mut self, m: &str) -> Req {
        self.method = m.parse().unwrap_or(http::Method::GET);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn host(mut self, host: &str) -> Req {
        self.host = Some(host.into());
        self
    }

    pub fn proto(mut self, p: Proto) -> Req {
        self.proto = p;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Req {
        self.timeout = t;
        self
    }

    /// One line for failure messages: `GET /a (HTTP/1.1, x-h: v)`.
    pub fn describe(&self) -> String {
        let proto = match self.proto {
            Proto::Http1 => "HTTP/1.1",
            Proto::H2c => "h2c",
            Proto::Grpc => "gRPC",
        };
        let mut extra = vec![proto.to_string()];
        if let Some(h) = &self.host {
            extra.push(format!("Host: {h}"));
        }
        extra.extend(self.headers.iter().map(|(n, v)| format!("{n}: {v}")));
        format!("{} {} ({})", self.method, self.path, extra.join(", "))
    }
}

/// What came back.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// 0 when there was no response (see `error`).
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// What the echo server saw, if an echo server answered.
    pub echo: Option<Echo>,
    /// gRPC: the `grpc-status` trailer (or header, for a trailers-only answer).
    pub grpc_status: Option<u32>,
    /// Why there was no complete response (connect, protocol, timeout).
    pub error: Option<String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The workload whose echo server answered.
    pub fn backend(&self) -> Option<&str> {
        self.echo.as_ref().map(|e| e.replica.name.as_str())
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("no response: {e}");
        }
        let mut s = format!("{}", self.status);
        if let Some(g) = self.grpc_status {
            s.push_str(&format!(" grpc-status {g}"));
        }
        match &self.echo {
            Some(e) => s.push_str(&format!(
                " from {}/{} (pod {}), which saw {} {}{}",
                e.replica.namespace,
                e.replica.name,
                e.replica.pod,
                e.method,
                e.path,
                e.query
                    .as_ref()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default()
            )),
            None => {
                let body = String::from_utf8_lossy(&self.body);
                let body = body.trim();
                if !body.is_empty() {
                    s.push_str(&format!(
                        " body {:?}",
                        body.chars().take(160).collect::<String>()
                    ));
                }
            }
        }
        if let Some(p) = self.header("weft-proxy-error") {
            s.push_str(&format!(" (weft-proxy-error: {p})"));
        }
        s
    }
}

/// Send `req` as `dial` says. Never fails: a failed exchange is a reply
/// with `error` set.
pub async fn send(dial: &Dial, req: &Req) -> Reply {
    match &dial.netns {
        None => exchange(dial.clone(), req.clone()).await,
        Some(ns) => {
            let (d, r) = (dial.clone(), req.clone());
            match crate::substrate::enter::run_in(ns, 1, move || exchange(d, r)).await {
                Ok(reply) => reply,
                Err(e) => Reply {
                    error: Some(e.to_string()),
                    ..Reply::default()
                },
            }
        }
    }
}

async fn exchange(dial: Dial, req: Req) -> Reply {
    let timeout = req.timeout;
    match tokio::time::timeout(timeout, attempt(&dial, &req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Reply {
            error: Some(e),
            ..Reply::default()
        },
        Err(_) => Reply {
            error: Some(format!("no complete response within {timeout:?}")),
            ..Reply::default()
        },
    }
}

async fn attempt(dial: &Dial, req: &Req) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(dial.connect)
        .await
        .map_err(|e| format!("connect {}: {e}", dial.connect))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let authority = req.host.clone().unwrap_or_else(|| dial.authority.clone());
    let h2 = req.proto != Proto::Http1;
    let mut b = http::Request::builder().method(req.method.clone());
    b = if h2 {
        b.uri(format!("http://{authority}{}", req.path))
    } else {
        b.uri(&req.path).header(http::header::HOST, &authority)
    };
    if req.proto == Proto::Grpc {
        b = b
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
    }
    for (n, v) in &req.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    let request = b
        .body(Full::new(req.body.clone()))
        .map_err(|e| format!("cannot build the request {}: {e}", req.describe()))?;
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2c handshake with {}: {e}", dial.connect))?;
        tokio::spawn(conn);
        send.send_request(request).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1 handshake with {}: {e}", dial.connect))?;
        tokio::spawn(conn);
        send.send_request(request).await
    }
    .map_err(|e| format!("request to {}: {e}", dial.connect))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the response body: {e}"))?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let echo = if req.proto == Proto::Grpc {
        echo::grpc_payload(&body).and_then(|p| serde_json::from_slice(p).ok())
    } else if is_json && headers.contains_key(echo::REPLICA_HEADER) {
        serde_json::from_slice(&body).ok()
    } else {
        None
    };
    Ok(Reply {
        status,
        headers,
        body,
        echo,
        grpc_status,
        error: None,
    })
}

/// What a WebSocket session through a [`Dial`] saw.
#[derive(Clone, Debug, Default)]
pub struct WsSession {
    /// The server app's first message ([`super::apps::greeting`]).
    pub greeting: String,
    /// Messages sent and echoed back unchanged, in order.
    pub echoed: usize,
    /// Why the session stopped early.
    pub error: Option<String>,
}

/// Open `ws://<authority><path>` as `dial` says, read the greeting, send
/// `messages` text messages and one binary one of `binary_len` bytes, each
/// waiting for its echo, then close. Never fails: see [`WsSession::error`].
pub async fn websocket(dial: &Dial, path: &str, messages: usize, binary_len: usize) -> WsSession {
    let (d, path) = (dial.clone(), path.to_string());
    from_pod(dial, move || ws_session(d, path, messages, binary_len))
        .await
        .unwrap_or_else(|e| WsSession {
            error: Some(format!("the WebSocket session: {e}")),
            ..WsSession::default()
        })
}

/// How long a session from a pod may take.
const SESSION_LIMIT: Duration = Duration::from_secs(10);

/// Run `work` where `dial` says (inside the pod's network namespace when it
/// has one), within [`SESSION_LIMIT`].
async fn from_pod<T, F, Fut>(dial: &Dial, work: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let late = |_| format!("did not finish within {SESSION_LIMIT:?}");
    match &dial.netns {
        None => tokio::time::timeout(SESSION_LIMIT, work()).await.map_err(late),
        Some(ns) => crate::substrate::enter::run_in(ns, 1, move || async move {
            tokio::time::timeout(SESSION_LIMIT, work()).await
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(late),
    }
}

async fn ws_session(dial: Dial, path: String, messages: usize, binary_len: usize) -> WsSession {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut s = WsSession::default();
    let tcp = match tokio::net::TcpStream::connect(dial.connect).await {
        Ok(t) => t,
        Err(e) => {
            s.error = Some(format!("connect {}: {e}", dial.connect));
            return s;
        }
    };
    let url = format!("ws://{}{path}", dial.authority);
    let mut ws = match tokio_tungstenite::client_async(url.as_str(), tcp).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            s.error = Some(format!(
                "handshake for {url} answered {} {}",
                resp.status(),
                body.trim()
            ));
            return s;
        }
        Err(e) => {
            s.error = Some(format!("handshake for {url}: {e}"));
            return s;
        }
    };
    match ws.next().await {
        Some(Ok(Message::Text(t))) => s.greeting = t.to_string(),
        other => {
            s.error = Some(format!("no greeting from the app: {other:?}"));
            return s;
        }
    }
    let mut out: Vec<Message> = (0..messages)
        .map(|i| Message::text(format!("message {i}")))
        .collect();
    out.push(Message::binary(
        (0..binary_len).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    ));
    for m in out {
        if let Err(e) = ws.send(m.clone()).await {
            s.error = Some(format!("send: {e}"));
            return s;
        }
        match ws.next().await {
            Some(Ok(got)) if got == m => s.echoed += 1,
            other => {
                s.error = Some(format!(
                    "message {} came back as {:?}",
                    s.echoed,
                    other.map(|r| r.map(|m| m.len()))
                ));
                return s;
            }
        }
    }
    let _ = ws.close(None).await;
    s
}

/// What a raw TCP session through a [`Dial`] saw.
#[derive(Clone, Debug, Default)]
pub struct TcpSession {
    /// The server's first line, when it speaks first.
    pub banner: Option<String>,
    /// From connected to the banner's last byte.
    pub banner_after: Option<Duration>,
    /// Whether the payload came back byte for byte.
    pub echoed: bool,
    pub error: Option<String>,
}

/// Connect as `dial` says; when `server_first`, read the server's first
/// line (timing it) before sending anything; then send `payload` and read
/// it back. Never fails: see [`TcpSession::error`].
pub async fn tcp(dial: &Dial, server_first: bool, payload: &[u8]) -> TcpSession {
    let (d, payload) = (dial.clone(), payload.to_vec());
    from_pod(dial, move || tcp_session(d, server_first, payload))
        .await
        .unwrap_or_else(|e| TcpSession {
            error: Some(format!("the TCP session: {e}")),
            ..TcpSession::default()
        })
}

async fn tcp_session(dial: Dial, server_first: bool, payload: Vec<u8>) -> TcpSession {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpSession::default();
    let mut stream = match tokio::net::TcpStream::connect(dial.connect).await {
        Ok(t) => t,
        Err(e) => {
            s.error = Some(format!("connect {}: {e}", dial.connect));
            return s;
        }
    };
    let _ = stream.set_nodelay(true);
    let connected = std::time::Instant::now();
    let mut buf = Vec::new();
    if server_first {
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\n") {
            match stream.read(&mut byte).await {
                Ok(1) => buf.push(byte[0]),
                Ok(_) => {
                    s.error = Some(format!(
                        "closed after {:?} of banner",
                        String::from_utf8_lossy(&buf)
                    ));
                    return s;
                }
                Err(e) => {
                    s.error = Some(format!("reading the banner: {e}"));
                    return s;
                }
            }
        }
        s.banner_after = Some(connected.elapsed());
        s.banner = Some(String::from_utf8_lossy(&buf).into_owned());
    }
    if let Err(e) = stream.write_all(&payload).await {
        s.error = Some(format!("send: {e}"));
        return s;
    }
    let mut back = vec![0u8; payload.len()];
    match stream.read_exact(&mut back).await {
        Ok(_) => s.echoed = back == payload,
        Err(e) => s.error = Some(format!("reading the echo: {e}")),
    }
    s
}
