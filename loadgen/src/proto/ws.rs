//! WebSocket: the client lane (one upgrade per connection, then binary messages of
//! `body_size` bytes, each waited for its echo) and the server's upgrade and echo
//! (`loadgen serve --websocket`).

use std::future::Future;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::engine::{tcp_connect, Lane, OpenError, Peer};
use crate::error_class;

/// One upgraded connection, one message in flight.
pub(crate) struct WsLane {
    ws: WebSocketStream<TcpStream>,
}

impl Lane for WsLane {
    fn open(peer: &Peer) -> impl Future<Output = Result<Self, OpenError>> + Send {
        async move {
            let stream = tcp_connect(peer).await?;
            // The URI's authority becomes the Host header: what a proxy routes on.
            let uri = format!("ws://{}{}", peer.authority, peer.path);
            let (ws, _) =
                tokio_tungstenite::client_async(uri, stream)
                    .await
                    .map_err(|e| OpenError::Handshake {
                        what: "WebSocket",
                        detail: e.to_string(),
                    })?;
            Ok(WsLane { ws })
        }
    }

    fn exchange(&mut self, peer: &Peer) -> impl Future<Output = Result<(), &'static str>> + Send {
        async move {
            self.ws
                .send(Message::Binary(peer.payload.clone()))
                .await
                .map_err(|_| error_class::IO)?;
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) if b == peer.payload => return Ok(()),
                    // Control frames are answered by tungstenite itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => return Err(error_class::IO),
                }
            }
        }
    }
}

/// Whether `req` asks for a WebSocket upgrade.
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Answers an upgrade request with 101 and echoes the connection's messages once hyper hands
/// it over (the connection must be served with upgrades). Without a `Sec-WebSocket-Key`: 400.
pub(crate) fn accept(mut req: Request<Incoming>) -> Response<()> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                echo(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    resp
}

async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(msg) = ws.next().await {
        let reply = match msg {
            Ok(m @ (Message::Binary(_) | Message::Text(_))) => m,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
