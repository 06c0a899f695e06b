//! Readiness probes: one real HTTP request, HTTP/1.1 or h2c, over a fresh
//! connection, so "ready" means the whole chain answers, not just that a port
//! is open. For gRPC, TCP and WebSocket the probe is one exchange of that
//! protocol (loadgen's own, `loadgen::proto::probe`): a chain that carries
//! HTTP but not, say, opaque TCP is not ready for a TCP cell.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::suite::Protocol;

/// GET `path` from `addr` with `Host: host` (or the address). Returns the
/// status code, or a one-line reason the request failed.
pub async fn get(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    protocol: Protocol,
) -> Result<u16, String> {
    fetch(addr, host, path, protocol).await.map(|(status, _)| status)
}

/// [`get`], with the response body.
pub async fn fetch(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    protocol: Protocol,
) -> Result<(u16, Bytes), String> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let authority = host.map(str::to_string).unwrap_or_else(|| addr.to_string());
        let uri: http::Uri = format!("http://{authority}{path}")
            .parse()
            .map_err(|e| format!("bad uri: {e}"))?;
        let mut req = http::Request::get(uri);
        let protocol = protocol.http();
        if protocol == Protocol::Http1 {
            req = req.header(http::header::HOST, &authority);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = match protocol {
            Protocol::Http1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1 handshake: {e}"))?;
                tokio::spawn(conn);
                send.send_request(req)
                    .await
                    .map_err(|e| format!("HTTP/1 request: {e}"))?
            }
            _ => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("h2c handshake: {e}"))?;
                tokio::spawn(conn);
                send.send_request(req)
                    .await
                    .map_err(|e| format!("h2c request: {e}"))?
            }
        };
        let status = resp.status().as_u16();
        // Read the body so a proxy sees a complete exchange.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no response from {addr} within 2s")),
    }
}

/// Poll [`get`] until it returns 200 or `patience` runs out; the error is
/// the last failure seen.
pub async fn until_ok(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    protocol: Protocol,
    patience: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last;
    loop {
        last = match protocol.load() {
            Some(proto) => match exchange(addr, host, proto).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            None => match get(addr, host, path, protocol).await {
                Ok(200) => return Ok(()),
                Ok(code) => format!("GET {path} via {addr} answered {code}"),
                Err(e) => e,
            },
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{last} (gave up after {patience:?})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One exchange of `proto` with `addr` (Host / `:authority` `host`), 2 s at
/// most: a gRPC call, an echo of 16 bytes, a WebSocket message.
async fn exchange(addr: SocketAddr, host: Option<&str>, proto: loadgen::proto::Proto) -> Result<(), String> {
    let cfg = loadgen::LoadConfig {
        target: format!("http://{addr}/healthz").parse().map_err(|e| format!("bad uri: {e}"))?,
        host: host.map(str::to_string),
        proto: Some(proto),
        body_size: 16,
        timeout: Duration::from_secs(2),
        ..loadgen::LoadConfig::default()
    };
    loadgen::proto::probe(&cfg)
        .await
        .map_err(|e| format!("{proto} via {addr}: {e}"))
}

/// [`until_ok`] from inside the network namespace `netns` (a
/// `/run/netns/NAME` path) when given, else from here.
pub async fn until_ok_from(
    netns: Option<&std::path::Path>,
    addr: SocketAddr,
    host: Option<String>,
    path: &'static str,
    protocol: Protocol,
    patience: Duration,
) -> Result<(), String> {
    super::enter::maybe_in(netns, 1, move || async move {
        until_ok(addr, host.as_deref(), path, protocol, patience).await
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
}
