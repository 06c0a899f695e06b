//! Picks the upstream for a request from its authority.
//!
//! The authority is HTTP/2's `:authority` (or an HTTP/1 absolute-form target)
//! and otherwise the `Host` header. An exact `host:port` route wins; failing
//! that, a route for the bare host; an authority without a port also
//! matches its host's `:80` route (HTTP's default port, RFC 9110 §4.2.1:
//! `Host: svc` is `svc:80`). Matching is ASCII case-insensitive, done
//! without allocating: routes are stored lower-case and a request authority
//! with upper-case letters is lowered into a stack buffer.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use http::{header, Request};

use mesh_identity::SpiffeId;

use crate::{
    config::Route,
    http::error::ProxyError,
    identity::{MeshError, MeshTls},
    metrics::DirectionMetrics,
    http::upstream::{MeshedPeer, Upstream},
};

/// DNS names are at most 253 bytes; with a port and brackets this is ample.
const MAX_AUTHORITY_LEN: usize = 320;

/// Authority -> upstream table, or a single upstream for everything.
#[derive(Debug)]
pub struct Router {
    routes: HashMap<Box<str>, Arc<Upstream>>,
    /// Inbound: every request goes to the local application.
    all: Option<Arc<Upstream>>,
}

impl Router {
    /// A table of plaintext static routes. Routes naming the same address
    /// share one [`Upstream`], and so one connection pool. Routes with an
    /// identity need [`Router::meshed`].
    pub fn from_routes(routes: &[Route]) -> Result<Self, MeshError> {
        Self::meshed(routes, None)
    }

    /// A table of static routes; those with an expected identity are meshed
    /// through `mesh` (refusals counted in `metrics`). Routes naming the same
    /// (address, identity) share one [`Upstream`]: one pool, one HTTP/2
    /// connection, one TLS handshake.
    pub fn meshed(routes: &[Route], mesh: Option<(&Arc<MeshTls>, &DirectionMetrics)>) -> Result<Self, MeshError> {
        let mut by_target: HashMap<(SocketAddr, Option<SpiffeId>), Arc<Upstream>> = HashMap::new();
        let mut table = HashMap::with_capacity(routes.len());
        for r in routes {
            let key = (r.addr, r.identity.clone());
            let up = match by_target.get(&key) {
                Some(up) => Arc::clone(up),
                None => {
                    let up = match (&r.identity, mesh) {
                        (None, _) => Upstream::new(r.addr),
                        (Some(id), Some((mesh, metrics))) => {
                            Upstream::meshed(r.addr, MeshedPeer::new(mesh, id.clone(), metrics.clone())?)
                        }
                        (Some(id), None) => return Err(MeshError::NotMeshed { route: r.to_string(), identity: id.to_string() }),
                    };
                    by_target.insert(key, Arc::clone(&up));
                    up
                }
            };
            table.insert(r.authority.to_ascii_lowercase().into_boxed_str(), up);
        }
        Ok(Self { routes: table, all: None })
    }

    /// Sends every request to `upstream`, whatever its authority.
    pub fn single(upstream: Arc<Upstream>) -> Self {
        Self { routes: HashMap::new(), all: Some(upstream) }
    }

    /// The upstream for `req`, or the no-route error naming its authority.
    pub fn route<B>(&self, req: &Request<B>) -> Result<&Arc<Upstream>, ProxyError> {
        if let Some(all) = &self.all {
            return Ok(all);
        }
        let authority = request_authority(req);
        authority
            .and_then(|a| self.lookup(a))
            .ok_or_else(|| ProxyError::NoRoute {
                authority: authority.unwrap_or("<none>").to_owned(),
            })
    }

    /// Looks up an authority: exact `host:port` first, then the bare host,
    /// or for a port-less authority its `host:80`.
    pub fn lookup(&self, authority: &str) -> Option<&Arc<Upstream>> {
        if let Some(all) = &self.all {
            return Some(all);
        }
        // Userinfo is never part of routing (and never in a Host header).
        let authority = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        // Initialised only on the rare upper-case path.
        let mut buf: [u8; MAX_AUTHORITY_LEN];
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            let n = authority.len();
            if n > MAX_AUTHORITY_LEN {
                return None;
            }
            buf = [0u8; MAX_AUTHORITY_LEN];
            buf[..n].copy_from_slice(authority.as_bytes());
            buf[..n].make_ascii_lowercase();
            // Lower-casing ASCII bytes keeps valid UTF-8 valid.
            std::str::from_utf8(&buf[..n]).ok()?
        } else {
            authority
        };
        if let Some(up) = self.routes.get(authority) {
            return Some(up);
        }
        match strip_port(authority) {
            Some(host) => self.routes.get(host),
            None => {
                let n = authority.len();
                let mut with_port = [0u8; MAX_AUTHORITY_LEN + 3];
                if n > MAX_AUTHORITY_LEN {
                    return None;
                }
                with_port[..n].copy_from_slice(authority.as_bytes());
                with_port[n..n + 3].copy_from_slice(b":80");
                // An ASCII suffix keeps valid UTF-8 valid.
                self.routes.get(std::str::from_utf8(&with_port[..n + 3]).ok()?)
            }
        }
    }
}

/// The request's authority: from the URI when present (HTTP/2, absolute-form
/// HTTP/1), else the `Host` header.
pub fn request_authority<B>(req: &Request<B>) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str());
    }
    req.headers().get(header::HOST)?.to_str().ok()
}

/// `host:port` -> `host`; `[::1]:80` -> `[::1]`; no port -> `None`.
fn strip_port(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // An unbracketed IPv6 literal has colons but no port.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router {
        let routes: Vec<Route> = routes.iter().map(|r| r.parse().unwrap()).collect();
        Router::from_routes(&routes).unwrap()
    }

    fn addr_of(r: &Router, authority: &str) -> Option<u16> {
        r.lookup(authority).map(|u| u.addr().port())
    }

    #[test]
    fn exact_match_beats_host_only() {
        let r = router(&["web:8080=127.0.0.1:1", "web=127.0.0.1:2"]);
        assert_eq!(addr_of(&r, "web:8080"), Some(1));
        assert_eq!(addr_of(&r, "web:9090"), Some(2));
        assert_eq!(addr_of(&r, "web"), Some(2));
        assert_eq!(addr_of(&r, "other"), None);
        assert_eq!(addr_of(&r, "other:8080"), None);
    }

    #[test]
    fn a_port_less_authority_is_port_80() {
        let r = router(&["web:80=127.0.0.1:1", "api:8080=127.0.0.1:2", "[::1]:80=127.0.0.1:3"]);
        assert_eq!(addr_of(&r, "web"), Some(1));
        assert_eq!(addr_of(&r, "WEB"), Some(1));
        assert_eq!(addr_of(&r, "u@web"), Some(1));
        assert_eq!(addr_of(&r, "[::1]"), Some(3));
        assert_eq!(addr_of(&r, "api"), None, "only the default port is implied");
        assert_eq!(addr_of(&r, "web:8080"), None);
        assert_eq!(addr_of(&r, &"a".repeat(MAX_AUTHORITY_LEN + 1)), None);
        // A bare-host route still wins over nothing, and an exact one over it.
        let r = router(&["web=127.0.0.1:4", "web:80=127.0.0.1:1"]);
        assert_eq!(addr_of(&r, "web"), Some(4));
        assert_eq!(addr_of(&r, "web:80"), Some(1));
    }

    #[test]
    fn case_insensitive_and_userinfo_ignored() {
        let r = router(&["web.default:80=127.0.0.1:1"]);
        assert_eq!(addr_of(&r, "WEB.Default:80"), Some(1));
        assert_eq!(addr_of(&r, "user@web.default:80"), Some(1));
    }

    #[test]
    fn ipv6_authorities() {
        let r = router(&["[::1]=127.0.0.1:1"]);
        assert_eq!(addr_of(&r, "[::1]:8080"), Some(1));
        assert_eq!(strip_port("::1"), None);
    }

    #[test]
    fn routes_to_one_address_share_a_pool() {
        let r = router(&["a=127.0.0.1:1", "b=127.0.0.1:1"]);
        assert!(Arc::ptr_eq(r.lookup("a").unwrap(), r.lookup("b").unwrap()));
    }

    #[test]
    fn identity_routes_need_a_mesh() {
        let routes: Vec<Route> = vec!["a=127.0.0.1:1@spiffe://td/ns/a/sa/b".parse().unwrap()];
        let err = Router::from_routes(&routes).unwrap_err();
        assert!(err.to_string().contains("spiffe://td/ns/a/sa/b"), "{err}");
    }

    #[test]
    fn authority_from_uri_then_host() {
        let req = Request::get("http://svc:1/x").header("host", "other").body(()).unwrap();
        assert_eq!(request_authority(&req), Some("svc:1"));
        let req = Request::get("/x").header("host", "svc:2").body(()).unwrap();
        assert_eq!(request_authority(&req), Some("svc:2"));
        let req = Request::get("/x").body(()).unwrap();
        assert_eq!(request_authority(&req), None);
    }

    #[test]
    fn no_route_error_names_authority() {
        let r = router(&["a=127.0.0.1:1"]);
        let req = Request::get("/").header("host", "nope:81").body(()).unwrap();
        let err = r.route(&req).unwrap_err();
        assert_eq!(err.to_string(), "no route for nope:81");
        let req = Request::get("/").body(()).unwrap();
        assert_eq!(r.route(&req).unwrap_err().to_string(), "no route for <none>");
    }
}
