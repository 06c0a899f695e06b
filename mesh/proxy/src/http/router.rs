//! Picks the upstream for a request from its authority.
//!
//! The authority is HTTP/2's `:authority` (or an HTTP/1 absolute-form target)
//! and otherwise the `Host` header. An exact `host:port` route wins; failing
//! that, a route for the bare host. The request's authority is first made
//! a key ([`crate::http::authority`]: lower-case, no userinfo, port 80 when
//! it named none), without allocating; routes are stored lower-case.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use http::{header, Request};

use mesh_identity::SpiffeId;

use crate::{
    config::Route,
    http::authority::{normalize, strip_port},
    http::error::ProxyError,
    identity::{MeshError, MeshTls},
    metrics::DirectionMetrics,
    http::upstream::{MeshedPeer, Upstream},
};

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

    /// Looks up an authority: its key (`host:port`, port 80 when it named
    /// none) first, then the bare host.
    pub fn lookup(&self, authority: &str) -> Option<&Arc<Upstream>> {
        if let Some(all) = &self.all {
            return Some(all);
        }
        // Userinfo, case and an implied port 80 never decide a route.
        let key = normalize(authority);
        self.routes.get(&*key).or_else(|| strip_port(&key).and_then(|host| self.routes.get(host)))
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
        // `Host: web` is web:80: its exact route wins over the bare host's.
        let r = router(&["web=127.0.0.1:4", "web:80=127.0.0.1:1"]);
        assert_eq!(addr_of(&r, "web"), Some(1));
        assert_eq!(addr_of(&r, "web:80"), Some(1));
        assert_eq!(addr_of(&r, "web:81"), Some(4));
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
