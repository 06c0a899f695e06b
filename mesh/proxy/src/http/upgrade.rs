//! HTTP/1.1 `Upgrade` (WebSocket and any other protocol but h2c) through
//! the proxy: the upgrade request is routed, authorized and forwarded like
//! any request; after a `101 Switching Protocols` the two connections are
//! spliced and bytes flow both ways until either side closes.
//!
//! ```text
//!  app ─GET Upgrade: websocket─> outbound ─(own HTTP/1.1 conn, mTLS weft/1)─> inbound ─> app
//!      <──────── 101 ────────── splice  <──────────── 101 ──────────────── splice <─ 101
//!      <═══════════════ bytes both ways until either side closes ═══════════════════>
//! ```
//!
//! Between two proxies an upgrade does NOT ride the shared HTTP/2
//! connection: it gets a dedicated HTTP/1.1 connection inside its own mTLS
//! (ALPN `weft/1`; the inbound proxy serves HTTP/1.1 and HTTP/2 on it
//! alike), as Linkerd does. Chosen over HTTP/2 extended CONNECT (RFC 8441)
//! because an upgraded stream is long-lived and bulk: on the shared
//! connection it would share flow-control windows and TCP head-of-line
//! blocking with every request to that peer, and it would die with that
//! connection (a GOAWAY on the peer's drain, a reset); on its own
//! connection it lives exactly as long as the two ends want, and the
//! upgrade is plain HTTP/1.1 end to end, with no `:protocol` translation
//! in either proxy. The cost, one TLS handshake per upgrade, is what the
//! client paid for its own connection anyway.
//!
//! Hop-by-hop handling stays as for every request (`headers`): `Connection`,
//! `Upgrade` and what `Connection` names are removed; only a request whose
//! `Connection` carries the `upgrade` token and whose `Upgrade` names a
//! protocol other than `h2c` gets `Connection: upgrade` and its `Upgrade`
//! back. An h2c upgrade attempt (`Upgrade: h2c`, `HTTP2-Settings`) is
//! forwarded as the plain HTTP/1.1 request it also is: the upstream never
//! sees the offer, so it never switches protocols under the proxy.

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::{http::body::ResponseBody, http::error::ProxyError, http::headers::strip_hop_by_hop};

/// A downstream upgrade request waiting for the upstream's answer.
#[derive(Debug)]
pub struct Pending {
    downstream: OnUpgrade,
    protocols: HeaderValue,
}

/// Whether `headers` ask for an upgrade: `Connection` carries the
/// `upgrade` token. Returns the `Upgrade` protocols to forward (h2c taken
/// out), or `None`.
fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let protocols: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect();
    if protocols.is_empty() {
        return None;
    }
    HeaderValue::from_str(&protocols.join(", ")).ok()
}

/// Takes the upgrade an HTTP/1.1 request asks for, before its hop-by-hop
/// fields are removed. `None`: not an upgrade (or only h2c), or hyper is
/// not holding the connection for one.
pub fn take<B>(req: &mut Request<B>) -> Option<Pending> {
    if req.version() != Version::HTTP_11 || req.extensions().get::<OnUpgrade>().is_none() {
        return None;
    }
    let protocols = requested(req.headers())?;
    Some(Pending { downstream: hyper::upgrade::on(req), protocols })
}

/// Puts the upgrade back on a request whose hop-by-hop fields were removed.
pub fn restore_request(headers: &mut HeaderMap, pending: &Pending) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, pending.protocols.clone());
}

/// Whether a request (after [`restore_request`]) must be sent as an upgrade:
/// on its own HTTP/1.1 connection, never pooled or multiplexed.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE)
}

/// The upstream's response to a request that may have asked for an
/// upgrade: hop-by-hop fields removed; a `101` to an upgrade request gets
/// `Connection: upgrade` and the upstream's `Upgrade` back, and a task
/// splicing the two upgraded connections once the `101` has gone
/// downstream. A `101` nobody asked for is a bad gateway.
pub fn finish(pending: Option<Pending>, mut resp: Response<ResponseBody>) -> Result<Response<ResponseBody>, ProxyError> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(resp.headers_mut());
        return Ok(resp);
    }
    let Some(pending) = pending else {
        return Err(ProxyError::UnrequestedUpgrade);
    };
    let upstream = hyper::upgrade::on(&mut resp);
    let protocol = resp.headers().get(header::UPGRADE).cloned().unwrap_or_else(|| pending.protocols.clone());
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, protocol);
    tokio::spawn(splice(pending.downstream, upstream));
    Ok(resp)
}

/// Copies bytes both ways between the two upgraded connections until both
/// directions are closed (a half-close is passed on), or neither moved a
/// byte for `--tcp-idle-timeout`.
async fn splice(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (down, up) = tokio::join!(downstream, upstream);
    let (down, up) = match (down, up) {
        (Ok(d), Ok(u)) => (d, u),
        (d, u) => {
            debug!(downstream = ?d.err(), upstream = ?u.err(), "upgrade not completed");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    let idle = crate::config::Conns::current().tcp_idle_timeout;
    match crate::http::relay::relay_with_idle(&mut down, &mut up, idle).await {
        Ok((sent, received)) => debug!(sent, received, "upgraded connection closed"),
        Err(e) => debug!(error = %e, "upgraded connection ended with error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_connection_upgrade_with_a_protocol_other_than_h2c_asks() {
        assert_eq!(requested(&headers(&[("connection", "Upgrade"), ("upgrade", "websocket")])).unwrap(), "websocket");
        assert_eq!(
            requested(&headers(&[("connection", "keep-alive, upgrade"), ("upgrade", "h2c, websocket")])).unwrap(),
            "websocket"
        );
        // Upgrade without Connection: upgrade is not an upgrade (RFC 9110 §7.8).
        assert!(requested(&headers(&[("upgrade", "websocket")])).is_none());
        // An h2c offer is never passed on.
        assert!(requested(&headers(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")])).is_none());
        assert!(requested(&headers(&[("connection", "upgrade")])).is_none());
    }

    #[test]
    fn take_needs_http11_and_a_connection_held_by_hyper() {
        let mut req = Request::get("/ws").header("connection", "upgrade").header("upgrade", "websocket").body(()).unwrap();
        assert!(take(&mut req).is_none(), "no OnUpgrade: hyper is not holding the connection");
        let mut h2 = Request::get("/ws")
            .version(Version::HTTP_2)
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(take(&mut h2).is_none());
        let mut h = headers(&[("x-kept", "1")]);
        restore_request(&mut h, &Pending { downstream: hyper::upgrade::on(&mut h2), protocols: HeaderValue::from_static("websocket") });
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        let req = Request::get("/").header("upgrade", "websocket").body(()).unwrap();
        assert!(is_upgrade_request(&req));
    }

    #[test]
    fn a_101_nobody_asked_for_is_a_bad_gateway() {
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let err = finish(None, resp).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let mut resp = Response::new(ResponseBody::empty());
        resp.headers_mut().insert("connection", HeaderValue::from_static("x-hop"));
        resp.headers_mut().insert("x-hop", HeaderValue::from_static("1"));
        let resp = finish(None, resp).unwrap();
        assert!(resp.headers().is_empty(), "hop-by-hop fields removed as always");
    }
}
