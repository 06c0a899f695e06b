//! WebSocket (HTTP/1.1 Upgrade) end to end through real proxies: a real
//! handshake and message round trips over mTLS between the proxies (and on
//! a plaintext route), each side closing first, routing and authorization
//! applied to the upgrade request, and an h2c upgrade offer never passed on.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use mesh_api::policy::v1 as pol;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role, Message},
    WebSocketStream,
};

use crate::{common::*, discovery_support::*, mesh_support::*};

/// An HTTP/1.1 app that accepts WebSocket upgrades (echoing every message;
/// `close-me` makes it close first) and answers `/headers` with the
/// request's header lines. Records the head of every upgrade request.
pub struct WsApp {
    pub addr: SocketAddr,
    pub upgrades: Arc<Mutex<Vec<HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ws_app() -> WsApp {
    ws_app_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
}

/// [`ws_app`] on a listener of the caller's (e.g. in a pod namespace).
pub fn ws_app_on(listener: TcpListener) -> WsApp {
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&upgrades);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move { Ok::<_, Infallible>(ws_respond(req, &seen)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    WsApp { addr, upgrades, task }
}

fn ws_respond(mut req: Request<Incoming>, seen: &Mutex<Vec<HeaderMap>>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut lines: Vec<String> =
            req.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?"))).collect();
        lines.sort();
        return Response::new(Full::new(Bytes::from(lines.join("\n"))));
    };
    seen.lock().unwrap().push(req.headers().clone());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) if t.as_str() == "close-me" => {
                    let _ = ws.close(None).await;
                    // Read until the client's close reply ends the stream.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                Message::Text(_) | Message::Binary(_) => {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                }
                // tungstenite queues the close reply; the next read sends it
                // and ends the stream.
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
        .unwrap()
}

pub type Ws = WebSocketStream<TcpStream>;

/// A WebSocket handshake for `ws://{host}{path}` through the proxy at `proxy`.
async fn ws_connect(proxy: SocketAddr, host: &str, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    ws_handshake(TcpStream::connect(proxy).await.unwrap(), host, path).await
}

/// A WebSocket handshake for `ws://{host}{path}` on a connected stream.
pub async fn ws_handshake(tcp: TcpStream, host: &str, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let (ws, resp) = within("websocket handshake", tokio_tungstenite::client_async(format!("ws://{host}{path}"), tcp)).await?;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    Ok(ws)
}

/// The status a refused handshake got.
async fn ws_refused(proxy: SocketAddr, host: &str, path: &str) -> StatusCode {
    match ws_connect(proxy, host, path).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status(),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// Text and binary messages out and back, in order.
pub async fn round_trips(ws: &mut Ws, marker: &str) {
    for i in 0..5 {
        let text = format!("{marker}-{i}");
        within("send", ws.send(Message::text(text.clone()))).await.unwrap();
        let got = within("echo", ws.next()).await.expect("stream open").unwrap();
        assert_eq!(got, Message::text(text));
    }
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    within("send binary", ws.send(Message::binary(big.clone()))).await.unwrap();
    let got = within("binary echo", ws.next()).await.expect("stream open").unwrap();
    assert_eq!(got.into_data().as_ref(), &big[..]);
}

/// The client closes: its close frame crosses both proxies and the app's
/// reply comes back before the stream ends.
pub async fn client_closes(mut ws: Ws) {
    within("close", ws.close(None)).await.unwrap();
    loop {
        match within("close reply", ws.next()).await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(other)) => panic!("unexpected message after close: {other:?}"),
            Some(Err(e)) => panic!("closing failed: {e}"),
        }
    }
}

/// The app closes first: the client sees its close frame.
async fn server_closes(mut ws: Ws) {
    within("send", ws.send(Message::text("close-me"))).await.unwrap();
    match within("server close", ws.next()).await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the app's close frame, got {other:?}"),
    }
    // tungstenite answers the close; the stream then ends.
    while let Some(Ok(_)) = within("stream end", ws.next()).await {}
}

#[tokio::test]
async fn websocket_crosses_both_proxies_over_mtls_and_plaintext_routes() {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let m = MeshDir::new(&[&client_id, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let app = ws_app().await;
    let plain = format!("plain.test={}", app.addr);
    let (_server, relay, client) =
        server_relay_client(&m, cp.addr, app.addr, &args(&["--forward-client-identity"]), |_| args(&["--route", &plain])).await;

    // Meshed: both proxies, mTLS between them.
    let marker = "weft-ws-marker-5d1e";
    let mut ws = ws_connect(client.outbound, "web.test", "/chat").await.unwrap();
    round_trips(&mut ws, marker).await;
    client_closes(ws).await;
    let mut ws = ws_connect(client.outbound, "web.test", "/chat").await.unwrap();
    round_trips(&mut ws, marker).await;
    server_closes(ws).await;
    // Each upgrade had an mTLS connection of its own.
    assert_eq!(relay.connections.load(Ordering::SeqCst), 2);
    assert!(relay.total() > 2 * 64 * 1024, "the messages crossed the relay: {} bytes", relay.total());
    assert!(!relay.saw(marker.as_bytes()), "a message crossed the wire in the clear");
    assert!(!relay.saw(b"websocket"), "the upgrade request crossed the wire in the clear");
    {
        let seen = app.upgrades.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["weft-client-id"], client_id.as_str(), "the app learns the verified caller");
        assert_eq!(seen[0]["host"], "web.test");
        assert!(seen[0].get("weft-orig-proto").is_none());
    }

    // A plaintext route: the upgrade goes straight to the app.
    let mut ws = ws_connect(client.outbound, "plain.test", "/chat").await.unwrap();
    round_trips(&mut ws, "plain").await;
    client_closes(ws).await;

    // An h2c upgrade offer is never passed on: the app gets a plain
    // HTTP/1.1 request and the client a plain 200.
    let text = raw_http(
        client.outbound,
        "GET /headers HTTP/1.1\r\nhost: plain.test\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n\
         http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\nx-kept: 1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("x-kept: 1"), "{text}");
    assert!(!lower.contains("upgrade") && !lower.contains("http2-settings"), "the h2c offer reached the app:\n{text}");

    let metrics = client.metrics().await;
    assert!(
        metric(&metrics, r#"weft_requests_total{direction="outbound",status_class="1xx"}"#) >= Some(3.0),
        "{metrics}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_are_routed_and_authorized() {
    let (alice, mallory, server_id) = (sa("alice"), sa("mallory"), sa("server"));
    let m = MeshDir::new(&[&alice, &mallory, &server_id]);
    let cp = m.control("127.0.0.1:0", "1h").await;
    let ctl = FakeControl::start_signed_by(&m.path("data")).await;
    ctl.state.set_inbound(&server_id, only(&alice));
    let app = ws_app().await;
    let server = m
        .proxy("server", &server_id, cp.addr, &args(&["--app", &app.addr.to_string(), "--policy", &ctl.addr().to_string()]))
        .await;
    let inbound = server.inbound.unwrap();
    ctl.state.set_identity(inbound, &server_id);
    ctl.state.set_endpoints("web.test:80", &[inbound]);
    // Upgrades to /chat get a header from the route; nothing else matches.
    ctl.state.set_outbound(
        "web.test:80",
        one_rule(
            pol::HttpRule {
                matches: vec![pol::HttpMatch {
                    path: Some(pol::PathMatch { kind: Some(pol::path_match::Kind::Prefix("/chat".into())) }),
                    ..Default::default()
                }],
                filters: vec![pol::HttpFilter {
                    kind: Some(pol::http_filter::Kind::RequestHeaderModifier(pol::HeaderModifier {
                        set: vec![pol::Header { name: "x-route".into(), value: "chat".into() }],
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            },
            0,
        ),
    );
    let discovery = args(&["--destination", &ctl.addr().to_string(), "--policy", &ctl.addr().to_string()]);
    let a = m.proxy("alice", &alice, cp.addr, &discovery).await;
    let b = m.proxy("mallory", &mallory, cp.addr, &discovery).await;
    for p in [&server, &a, &b] {
        ready(p).await;
    }
    let mut ws = eventually("alice's upgrade accepted", || async { ws_connect(a.outbound, "web.test", "/chat/room").await.ok() }).await;
    round_trips(&mut ws, "alice").await;
    client_closes(ws).await;
    assert_eq!(app.upgrades.lock().unwrap()[0]["x-route"], "chat", "the route's filter applied to the upgrade");
    assert_eq!(ws_refused(a.outbound, "web.test", "/elsewhere").await, StatusCode::NOT_FOUND, "no rule matches");
    assert_eq!(ws_refused(b.outbound, "web.test", "/chat").await, StatusCode::FORBIDDEN, "mallory is not authorized");
    assert_eq!(app.upgrades.lock().unwrap().len(), 1, "refused upgrades never reached the app");
    cp.stop().await;
}

#[tokio::test]
async fn a_silent_websocket_is_closed_after_the_tcp_idle_timeout() {
    let app = ws_app().await;
    let p = start_proxy(&args(&["--route", &format!("plain.test={}", app.addr), "--tcp-idle-timeout", "1s"])).await;
    let mut ws = ws_connect(p.outbound, "plain.test", "/chat").await.unwrap();
    round_trips(&mut ws, "before the silence").await;
    // Neither side says anything: the proxy ends the splice (no close
    // frame: it relays bytes, it does not speak WebSocket).
    match within("the silent websocket closed by the proxy", ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("a message on a silent websocket: {other:?}"),
    }
}
