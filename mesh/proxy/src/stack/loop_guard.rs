//! Explicit-mode loop refusal: a request whose authority names this
//! proxy's own outbound listener (say `Host: 127.0.0.1:4140`) would be
//! sent back to that listener, which would send it back again, one new
//! connection per hop until sockets or the request timeout run out. It
//! gets 502 `weft-proxy-error: loop: ...` at once instead, counted as
//! `weft_proxy_errors_total{kind="loop"}`.
//!
//! The check costs a port comparison per request (a string split and two
//! integer parses, no allocation); only a request whose port is the
//! listener's has its host looked at. `--transparent` connections never
//! come here: their target is the original destination, and the gate in
//! `intercept::orig_dst` refuses one that is the proxy itself.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{Request, Response};

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

/// Refuses requests addressed to this proxy's own outbound listener
/// (`None`: checks nothing, for `--transparent` connections).
#[derive(Debug, Clone)]
pub struct LoopGuardLayer {
    own: Option<OwnOutbound>,
}

impl LoopGuardLayer {
    /// Requests naming one of `own` are refused.
    pub fn new(own: Option<OwnOutbound>) -> Self {
        Self { own }
    }
}

impl<S> Layer<S> for LoopGuardLayer {
    type Service = LoopGuard<S>;

    fn layer(&self, inner: S) -> LoopGuard<S> {
        LoopGuard { inner, own: self.own.clone() }
    }
}

/// See [`LoopGuardLayer`].
#[derive(Debug)]
pub struct LoopGuard<S> {
    inner: S,
    own: Option<OwnOutbound>,
}

impl<S, B> Service<Request<B>> for LoopGuard<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        // Only a refused request's authority is copied (for its error).
        let looped = self.own.as_ref().and_then(|own| {
            let a = request_authority(&req)?;
            own.named_by(a).map(|listener| (a.to_owned(), listener))
        });
        async move {
            if let Some((authority, listener)) = looped {
                return Err(ProxyError::Loop { authority, listener });
            }
            self.inner.call(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
