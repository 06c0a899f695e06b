//! The innermost service of both directions: what is left of a request
//! once the layers above have let it through.
//!
//! ```text
//!    │ router       authority -> upstream, or 502 "no route for ..."
//!    │ upgrade      an HTTP/1.1 Upgrade (not h2c) is kept aside, spliced after a 101
//!    │ headers      drop hop-by-hop fields; inbound: drop any weft-client-id
//!    │              from outside, restore the peer's HTTP/1 (weft-orig-proto),
//!    │              add the verified weft-client-id if configured;
//!    │              HTTP/1 target to origin-form
//!    │ body limit   streamed body crossing the limit -> 413 / reset
//!    ▼ upstream     pooled h1 / shared h2 connection -> 502 on failure
//!                   (meshed: mTLS + HTTP/2 to the peer proxy)
//! ```
//!
//! An outbound authority without a static route goes, after the same
//! header and body handling, to the discovered path
//! (`discovery::outbound`: routes, weighted backends, P2C balancing,
//! retries, per-route timeouts) instead of the single static upstream.

use std::{future::Future, sync::Arc};

use http::{uri::Uri, HeaderName, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;

use crate::{
    config::Conns,
    http::body::{RequestBody, ResponseBody},
    http::pace::Pace,
    config::Limits,
    http::error::{ProxyError, PROXY_ERROR_KIND_HEADER},
    http::headers::strip_hop_by_hop,
    metrics::{Direction, DirectionMetrics},
    http::orig_proto,
    discovery::outbound::Outbound,
    http::router::Router,
    http::upgrade,
    http::upstream::Upstream,
};

/// The verified SPIFFE ID of the meshed client, told to the app when
/// `--forward-client-identity` is set. Removed from every inbound request
/// first, so only this proxy can set it.
pub static CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("weft-client-id");

/// Forwards requests arriving on one listener.
#[derive(Debug)]
pub struct Forwarder {
    direction: Direction,
    router: Router,
    limits: Limits,
    metrics: DirectionMetrics,
    forward_client_identity: bool,
    /// Authorities without a static route, resolved through discovery.
    discovered: Option<Arc<Outbound>>,
}

impl Forwarder {
    /// A forwarder for one listener.
    pub fn new(direction: Direction, router: Router, limits: Limits, metrics: DirectionMetrics) -> Arc<Self> {
        Arc::new(Self { direction, router, limits, metrics, forward_client_identity: false, discovered: None })
    }

    /// The outbound forwarder: static routes first, then `discovered`.
    pub fn outbound(router: Router, discovered: Option<Arc<Outbound>>, limits: Limits, metrics: DirectionMetrics) -> Arc<Self> {
        Arc::new(Self { direction: Direction::Outbound, router, limits, metrics, forward_client_identity: false, discovered })
    }

    /// The inbound forwarder; with `forward_client_identity`, requests from
    /// meshed clients carry `weft-client-id`.
    pub fn inbound(router: Router, limits: Limits, metrics: DirectionMetrics, forward_client_identity: bool) -> Arc<Self> {
        Arc::new(Self { direction: Direction::Inbound, router, limits, metrics, forward_client_identity, discovered: None })
    }

    /// The metrics handles of this listener.
    pub fn metrics(&self) -> &DirectionMetrics {
        &self.metrics
    }

    /// Forwards one request, routed by authority (static routes, then
    /// discovery); `client_id` is the verified client's `weft-client-id`.
    pub async fn forward(&self, req: Request<Incoming>, client_id: Option<&HeaderValue>) -> Result<Response<ResponseBody>, ProxyError> {
        // Static routes win; the rest go through discovery when it is on.
        let upstream = match (self.router.route(&req), &self.discovered) {
            (Ok(up), _) => Some(up),
            (Err(_), Some(_)) => None,
            (Err(e), None) => return Err(e),
        };
        let (req, pending) = self.prepare(req, client_id);
        let resp = match upstream {
            Some(upstream) => self.send_upstream(upstream, req).await?,
            None => self.discovered.as_ref().expect("checked with the route").send(req).await?,
        };
        upgrade::finish(pending, self.from_app(resp))
    }

    /// Forwards one request of a `--transparent` connection: the target
    /// was decided once for the connection (its original destination), so
    /// there is no routing by authority; `Host` is passed on unchanged.
    pub async fn forward_via(
        &self,
        req: Request<Incoming>,
        via: &Via,
        client_id: Option<&HeaderValue>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (req, pending) = self.prepare(req, client_id);
        let resp = match via {
            Via::Upstream(upstream) => self.send_upstream(upstream, req).await?,
            Via::Discovered(target) => target.send(req).await?,
        };
        upgrade::finish(pending, self.from_app(resp))
    }

    /// Header handling both directions share, and the body limit. An
    /// upgrade the request asks for is taken out first and put back after
    /// the hop-by-hop fields are gone (see `upgrade`).
    #[inline]
    fn prepare(&self, mut req: Request<Incoming>, client_id: Option<&HeaderValue>) -> (Request<RequestBody>, Option<upgrade::Pending>) {
        // `bench gate`'s proof needs a build that is slower by a known amount.
        #[cfg(feature = "gate-test-delay")]
        {
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_micros(50) {
                std::hint::spin_loop();
            }
        }
        let pending = upgrade::take(&mut req);
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(p) = &pending {
            upgrade::restore_request(&mut parts.headers, p);
        }
        if self.direction == Direction::Inbound {
            parts.headers.remove(&CLIENT_ID_HEADER);
            orig_proto::restore(&mut parts);
            if let (true, Some(id)) = (self.forward_client_identity, client_id) {
                parts.headers.insert(CLIENT_ID_HEADER.clone(), id.clone());
            }
        }
        if parts.version != Version::HTTP_2 {
            to_origin_form(&mut parts);
        }
        // A validated Content-Length is the exact size hint: a finished
        // upload, which must arrive at a minimum rate (see `http::pace`).
        let pace = Pace::new(&Conns::current(), http_body::Body::size_hint(&body).exact().is_some_and(|n| n > 0));
        let body = RequestBody::new(body, self.limits.max_request_body_bytes).paced(pace);
        (Request::from_parts(parts, body), pending)
    }

    /// An inbound response comes from the app, never from a proxy: a
    /// `weft-proxy-error-kind` in it is forged, and the client's proxy
    /// would take it for this proxy's word that nothing reached the app
    /// (and send a POST again), so it goes.
    #[inline]
    fn from_app(&self, mut resp: Response<ResponseBody>) -> Response<ResponseBody> {
        if self.direction == Direction::Inbound {
            resp.headers_mut().remove(&PROXY_ERROR_KIND_HEADER);
        }
        resp
    }

    /// The request timeout is the `timeout` layer's, to the last byte.
    #[inline]
    async fn send_upstream(&self, upstream: &Arc<Upstream>, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        upstream.send(req).await
    }
}

/// [`Forwarder`] as the stack's innermost service, for one listener
/// (routed by authority) or one `--transparent` connection (`via`).
#[derive(Debug)]
pub struct Forward {
    forwarder: Arc<Forwarder>,
    via: Option<Via>,
    /// The verified client's SPIFFE ID as a header value (inbound mTLS).
    client_id: Option<HeaderValue>,
}

impl Forward {
    /// Requests through `forwarder`, to `via` when given.
    pub fn new(forwarder: Arc<Forwarder>, via: Option<Via>, client_id: Option<HeaderValue>) -> Self {
        Self { forwarder, via, client_id }
    }
}

impl super::Service<Request<Incoming>> for Forward {
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Self::Response> + Send {
        let client_id = self.client_id.as_ref();
        // Boxed: forwarding's future (routing, discovery, retries, the
        // upstream's pools) is most of the request path's size, and each
        // layer above moves its inner future into place when first polled,
        // and the server copies the whole into the stream's task. Boxed
        // here, only admitted requests build it, once; a request the
        // admission layers shed costs a small future.
        Box::pin(async move {
            match &self.via {
                None => self.forwarder.forward(req, client_id).await,
                Some(via) => self.forwarder.forward_via(req, via, client_id).await,
            }
        })
    }
}

/// Where a `--transparent` connection's requests go, decided once per
/// connection from its original destination.
#[derive(Debug, Clone)]
pub enum Via {
    /// One upstream: the original destination itself, plaintext in the
    /// request's own protocol (outbound without --destination), or the app
    /// (inbound).
    Upstream(Arc<Upstream>),
    /// The discovered path for the original destination's `ip:port`:
    /// Destination endpoints, Policy routes, balancing, retries, mTLS.
    Discovered(crate::discovery::outbound::Target),
}

/// HTTP/1 upstreams get `/path?query`. An absolute-form target (from
/// clients that treat us as an HTTP proxy) is rewritten, and its authority
/// replaces `Host` as RFC 9112 §3.2.2 requires of a proxy.
fn to_origin_form(parts: &mut http::request::Parts) {
    let Some(authority) = parts.uri.authority() else { return };
    if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(http::header::HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host() {
        let mut p = parts("http://svc:80/a/b?c=d", Some("stale"));
        to_origin_form(&mut p);
        assert_eq!(p.uri, "/a/b?c=d");
        assert_eq!(p.headers["host"], "svc:80");

        let mut p = parts("http://svc:80", None);
        to_origin_form(&mut p);
        assert_eq!(p.uri, "/");
        assert_eq!(p.headers["host"], "svc:80");
    }

    #[test]
    fn origin_form_is_untouched() {
        let mut p = parts("/already", Some("svc"));
        to_origin_form(&mut p);
        assert_eq!(p.uri, "/already");
        assert_eq!(p.headers["host"], "svc");
    }
}
