//! Pod apps besides the echo server, served from a listener the substrate
//! binds where the pod's app belongs (on `local` 127.0.0.1:0, in a pod's
//! network namespace on `netns`).
//!
//! The WebSocket app: an HTTP/1.1 server answering `/healthz` with 200,
//! any other plain request with 200 and its headers (one `name: value` per
//! line), and a WebSocket upgrade with 101, then a first text message
//! `hello <pod> client-id=<weft-client-id of the upgrade request or ->`
//! followed by an echo of every text and binary message.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which app a workload's pods run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppKind {
    /// `loadgen serve --echo`.
    #[default]
    Echo,
    /// [`serve_websocket`].
    WebSocket,
    /// [`serve_tcp`] without a banner: a client-speaks-first opaque protocol.
    TcpEcho,
    /// [`serve_tcp`] with a banner: a server-speaks-first protocol (as SMTP
    /// or MySQL).
    Banner,
}

impl AppKind {
    /// Answers HTTP (so readiness can be probed with `GET /healthz`).
    pub fn speaks_http(self) -> bool {
        matches!(self, AppKind::Echo | AppKind::WebSocket)
    }
}

/// The line a [`AppKind::Banner`] app sends as soon as a client connects.
pub fn banner(pod: &str) -> String {
    format!("220 {pod} ready\r\n")
}

/// Serve raw TCP as pod `pod`: with `banner`, send [`banner`] at once on
/// every connection; then echo every byte until the client closes.
pub async fn serve_tcp(listener: TcpListener, pod: String, banner_first: bool) {
    use tokio::io::AsyncWriteExt;
    while let Ok((mut stream, _)) = listener.accept().await {
        let line = banner(&pod);
        tokio::spawn(async move {
            if banner_first && stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// The first message of every WebSocket session: `hello <pod> client-id=<id>`.
pub fn greeting(pod: &str, client_id: Option<&str>) -> String {
    format!("hello {pod} client-id={}", client_id.unwrap_or("-"))
}

/// Serve the WebSocket app as pod `pod` until the task is dropped.
pub async fn serve_websocket(listener: TcpListener, pod: String) {
    while let Ok((stream, _)) = listener.accept().await {
        let pod = pod.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let pod = pod.clone();
                async move { Ok::<_, Infallible>(respond(req, pod)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn respond(mut req: Request<Incoming>, pod: String) -> Response<Full<Bytes>> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key.filter(|_| req.uri().path() != "/healthz") else {
        let mut lines: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        lines.sort();
        return Response::new(Full::new(Bytes::from(lines.join("\n"))));
    };
    let client_id = req
        .headers()
        .get("weft-client-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws
            .send(Message::text(greeting(&pod, client_id.as_deref())))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                }
                // tungstenite queues the close reply; the next read sends it.
                _ => {}
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}
