//! Loop refusal, two checks per request.
//!
//! **Own listener** (explicit mode): a request whose authority names this
//! proxy's own outbound listener (say `Host: 127.0.0.1:4140`) would be
//! sent back to that listener, which would send it back again, one new
//! connection per hop until sockets or the request timeout run out. It
//! gets 502 `weft-proxy-error: loop: ...` at once instead, counted as
//! `weft_proxy_errors_total{kind="loop"}`. The check costs a port
//! comparison per request (a string split and two integer parses, no
//! allocation); only a request whose port is the listener's has its host
//! looked at. `--transparent` connections never come here: their target is
//! the original destination, and the gate in `intercept::orig_dst` refuses
//! one that is the proxy itself.
//!
//! **Hop count** (both directions, every mode): a loop through several
//! proxies (A's route leads to B's outbound listener, whose route leads
//! back to A's) never names the proxy it reaches. Every Weft proxy sets
//! [`HOPS_HEADER`] on the requests it forwards to one more than it
//! received (absent: 0), and refuses one that arrives having passed
//! `--max-hops` proxies already, with the same `loop` error. The header is
//! the mesh's own and is only ever compared with the bound: a client that
//! forges a high count gets its own request refused; one that forges a low
//! count (or garbage, read as 0) gains at most one round of a loop, as
//! every proxy after it counts again.
//!
//! The inbound side keeps the header when it forwards to the app, as
//! `Via` (RFC 9110) and `CDN-Loop` (RFC 8586) reach the origin: stripping
//! it would lose a loop that passes through an app (an app that forwards
//! its request headers, or a proxy running as a sidecar's app, e.g. a
//! chain of explicit-mode proxies whose `--app` is the next one's outbound
//! listener). Linkerd 2 checks only its own outbound port (`localhost:4140`)
//! and Envoy has no hop bound of its own: its loops end when
//! `x-forwarded-for` outgrows the header limit (431). An app sees
//! `weft-hops: 2` on a meshed request; one that copies every header into
//! its own calls spends two hops per meshed call, so the default bound of
//! 16 allows eight such calls in a row.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{header::HeaderName, HeaderMap, HeaderValue, Request, Response};

use super::{Layer, Service};
use crate::http::{body::ResponseBody, error::ProxyError, router::request_authority};

/// The addresses this proxy's outbound listener was bound to.
#[derive(Debug, Clone)]
pub struct OwnOutbound(Arc<[SocketAddr]>);

impl OwnOutbound {
    /// The bound outbound listener address(es).
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self(addrs.into_iter().collect())
    }

    /// The listener `addr` reaches, if it is one of ours: the same address,
    /// or a loopback / unspecified address for a listener on an unspecified
    /// one (Linux delivers both to it).
    pub fn reached_by(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.0.iter().copied().find(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || addr.ip().is_unspecified()
                    || (own.ip().is_unspecified() && addr.ip().is_loopback()))
        })
    }

    /// The listener an authority (`host[:port]`, port 80 when absent)
    /// names, if it is one of ours. Names other than `localhost` are not
    /// resolved: a proxy does not resolve the Host it routes by either.
    pub fn named_by(&self, authority: &str) -> Option<SocketAddr> {
        let authority = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = split(authority)?;
        if !self.0.iter().any(|own| own.port() == port) {
            return None;
        }
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::from([127, 0, 0, 1]),
            Err(_) => return None,
        };
        self.reached_by(SocketAddr::new(ip, port))
    }
}

/// `host:port` -> (`host`, port); `[v6]:port` -> (`v6`, port); no port: 80.
fn split(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 80,
    };
    Some((host, port))
}

/// How many Weft proxies forwarded a request before this one.
pub const HOPS_HEADER: HeaderName = HeaderName::from_static("weft-hops");

/// The hop count a request arrived with: the largest number among its
/// `weft-hops` values (several lines: the worst one counts); absent or not
/// a number: 0. A number too large for `u32` counts as `u32::MAX`.
pub fn hops(headers: &HeaderMap) -> u32 {
    headers
        .get_all(&HOPS_HEADER)
        .iter()
        .filter_map(|v| {
            let digits = v.to_str().ok()?.trim();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse::<u32>().unwrap_or(u32::MAX))
        })
        .max()
        .unwrap_or(0)
}

/// `n` as a header value. The counts a mesh sees are small: those come
/// from a static table, where `HeaderValue::from(u32)` allocates twice
/// (two of the ~10 allocations of a proxied HTTP/1 request, per DHAT).
fn hops_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 17] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Refuses requests that have passed `max_hops` proxies and counts this
/// one on the others; explicit mode also refuses requests addressed to
/// this proxy's own outbound listener (`own`; `None`: inbound and
/// `--transparent` connections).
#[derive(Debug, Clone)]
pub struct LoopGuardLayer {
    own: Option<OwnOutbound>,
    max_hops: u32,
}

impl LoopGuardLayer {
    /// Requests naming one of `own`, or past `max_hops`, are refused.
    pub fn new(own: Option<OwnOutbound>, max_hops: u32) -> Self {
        Self { own, max_hops }
    }
}

impl<S> Layer<S> for LoopGuardLayer {
    type Service = LoopGuard<S>;

    fn layer(&self, inner: S) -> LoopGuard<S> {
        LoopGuard { inner, own: self.own.clone(), max_hops: self.max_hops }
    }
}

/// See [`LoopGuardLayer`].
#[derive(Debug)]
pub struct LoopGuard<S> {
    inner: S,
    own: Option<OwnOutbound>,
    max_hops: u32,
}

impl<S, B> Service<Request<B>> for LoopGuard<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, mut req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        // Only a refused request's authority is copied (for its error).
        let looped = self.own.as_ref().and_then(|own| {
            let a = request_authority(&req)?;
            own.named_by(a).map(|listener| (a.to_owned(), listener))
        });
        let hops = hops(req.headers());
        let refused = match looped {
            Some((authority, listener)) => Some(ProxyError::Loop { authority, listener }),
            None if hops >= self.max_hops => Some(ProxyError::TooManyHops { hops, max: self.max_hops }),
            None => {
                req.headers_mut().insert(HOPS_HEADER, hops_value(hops + 1));
                None
            }
        };
        async move {
            if let Some(e) = refused {
                return Err(e);
            }
            self.inner.call(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_values_read_as_their_number() {
        for n in [0, 1, 9, 10, 16, 17, 255, u32::MAX] {
            assert_eq!(hops_value(n).to_str().unwrap(), n.to_string());
            let mut h = HeaderMap::new();
            h.insert(&HOPS_HEADER, hops_value(n));
            assert_eq!(hops(&h), n);
        }
    }

    #[test]
    fn own_listener_is_recognised_by_authority() {
        let own = OwnOutbound::new(["127.0.0.1:4140".parse().unwrap()]);
        for yes in ["127.0.0.1:4140", "localhost:4140", "LOCALHOST:4140", "0.0.0.0:4140", "user@127.0.0.1:4140"] {
            assert_eq!(own.named_by(yes), Some("127.0.0.1:4140".parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.1:4141", "127.0.0.2:4140", "web:4140", "127.0.0.1", "[::1]:4140", "127.0.0.1:x", ""] {
            assert_eq!(own.named_by(no), None, "{no}");
        }
        let any = OwnOutbound::new(["0.0.0.0:80".parse().unwrap(), "[::]:80".parse().unwrap()]);
        assert!(any.named_by("127.0.0.1").is_some(), "no port is 80");
        assert!(any.named_by("[::1]:80").is_some());
        assert!(any.named_by("10.0.0.1:80").is_none(), "other local addresses are not known");
        assert!(any.reached_by("127.0.0.1:80".parse().unwrap()).is_some());
    }

    #[test]
    fn hop_count_is_the_largest_number_and_garbage_is_zero() {
        let mut h = HeaderMap::new();
        assert_eq!(hops(&h), 0);
        h.append(&HOPS_HEADER, HeaderValue::from_static("3"));
        h.append(&HOPS_HEADER, HeaderValue::from_static(" 7 "));
        h.append(&HOPS_HEADER, HeaderValue::from_static("x9"));
        assert_eq!(hops(&h), 7);
        let mut h = HeaderMap::new();
        h.insert(&HOPS_HEADER, HeaderValue::from_static("-1"));
        assert_eq!(hops(&h), 0);
        h.insert(&HOPS_HEADER, HeaderValue::from_static("99999999999999"));
        assert_eq!(hops(&h), u32::MAX);
    }

    struct Echo;

    impl Service<Request<()>> for Echo {
        type Response = Result<Response<ResponseBody>, ProxyError>;

        async fn call(&self, req: Request<()>) -> Self::Response {
            let mut resp = Response::new(ResponseBody::empty());
            if let Some(v) = req.headers().get(&HOPS_HEADER) {
                resp.headers_mut().insert(&HOPS_HEADER, v.clone());
            }
            Ok(resp)
        }
    }

    #[tokio::test]
    async fn each_proxy_adds_a_hop_and_refuses_past_the_bound() {
        let guard = LoopGuardLayer::new(None, 3).layer(Echo);
        let req = |hops: Option<&'static str>| {
            let mut r = Request::get("/").header("host", "web:80").body(()).unwrap();
            if let Some(h) = hops {
                r.headers_mut().insert(&HOPS_HEADER, HeaderValue::from_static(h));
            }
            r
        };
        let forwarded = |r: Result<Response<ResponseBody>, ProxyError>| r.unwrap().headers()[&HOPS_HEADER].clone();
        assert_eq!(forwarded(guard.call(req(None)).await), "1");
        assert_eq!(forwarded(guard.call(req(Some("2"))).await), "3");
        assert_eq!(forwarded(guard.call(req(Some("junk"))).await), "1");
        match guard.call(req(Some("3"))).await {
            Err(e @ ProxyError::TooManyHops { hops: 3, max: 3 }) => assert_eq!(e.kind().as_str(), "loop"),
            other => panic!("expected a loop refusal, got {other:?}"),
        }
    }
}
