//! Counts every response sent downstream. Per direction: status class and
//! the time to the response head (`weft_requests_total`,
//! `weft_response_latency_seconds`), and per meshed client; per
//! (authority, route, peer): the golden metrics of `metrics::http`, to the
//! response's last byte.
//!
//! The route and the answering peer are only known inside (discovery
//! matches the rule, the upstream knows whom it verified): the inner
//! layers note them in the request's task (`metrics::http::routed`), and
//! this layer, built once per connection, resolves the label set's handle
//! through a small per-connection cache: a keep-alive connection to one
//! authority resolves it once.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Instant,
};

use http::{header, uri::Authority, HeaderValue, Request, Response};

use super::{Layer, Service};
use crate::{
    discovery::outbound::normalize,
    http::body::ResponseBody,
    metrics::{
        http::{routed, Meter, RouteMetrics},
        ClientMetrics, DirectionMetrics,
    },
};

/// Label sets a connection keeps resolved (most use one).
const CACHED: usize = 4;

/// Records each response in the direction's metrics, and in one meshed
/// client's when the connection has a verified client.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<DirectionMetrics>,
    client: Option<Arc<ClientMetrics>>,
    /// Inbound: the connection's verified client.
    peer: Option<Arc<str>>,
    /// The authority every request of the connection goes to (transparent:
    /// its original destination), whatever its `Host`.
    authority: Option<Arc<str>>,
}

impl MetricsLayer {
    /// Responses counted in `metrics`.
    pub fn new(metrics: Arc<DirectionMetrics>) -> Self {
        Self { metrics, client: None, peer: None, authority: None }
    }

    /// Also counted per client (`weft_inbound_requests_by_client_total`);
    /// resolved once per connection, so a request costs one atomic add.
    pub fn with_client(mut self, client: Option<Arc<ClientMetrics>>) -> Self {
        self.client = client;
        self
    }

    /// The connection's peer identity (inbound mTLS), its `peer` label.
    pub fn with_peer(mut self, peer: Option<Arc<str>>) -> Self {
        self.peer = peer;
        self
    }

    /// Every request labelled with `authority` (normalized `host:port`).
    pub fn with_authority(mut self, authority: Option<Arc<str>>) -> Self {
        self.authority = authority;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner, layer: self.clone(), cache: Mutex::default() }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
    cache: Mutex<Vec<Cached>>,
}

/// One resolved label set, keyed by what the request said.
#[derive(Debug)]
struct Cached {
    /// The request's authority as received (before normalizing).
    authority: Box<str>,
    route: Option<Arc<str>>,
    peer: Option<Arc<str>>,
    handle: Arc<RouteMetrics>,
}

/// A request's authority, kept past the request (a cheap clone of bytes
/// the request already holds).
enum RequestAuthority {
    Uri(Authority),
    Host(HeaderValue),
    None,
}

impl RequestAuthority {
    fn of<B>(req: &Request<B>) -> Self {
        if let Some(a) = req.uri().authority() {
            return Self::Uri(a.clone());
        }
        match req.headers().get(header::HOST) {
            Some(h) => Self::Host(h.clone()),
            None => Self::None,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Uri(a) => a.as_str(),
            Self::Host(h) => h.to_str().unwrap_or("<invalid>"),
            Self::None => "<none>",
        }
    }
}

fn same(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

impl<S> Metrics<S> {
    fn handle(&self, authority: &str, route: Option<&Arc<str>>, peer: Option<&Arc<str>>) -> Arc<RouteMetrics> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.iter().find(|c| *c.authority == *authority && same(c.route.as_ref(), route) && same(c.peer.as_ref(), peer)) {
            return Arc::clone(&c.handle);
        }
        let handle = self.layer.metrics.http().resolve(&normalize(authority), route.map(|r| &**r), peer.map(|p| &**p));
        let entry = Cached { authority: authority.into(), route: route.cloned(), peer: peer.cloned(), handle: Arc::clone(&handle) };
        if cache.len() >= CACHED {
            cache.remove(0);
        }
        cache.push(entry);
        handle
    }
}

/// Counts its request as abandoned when the request's future is dropped
/// before the response head (hyper drops it when the client closes its
/// connection or resets its stream): the golden families would otherwise
/// never see it.
struct Abandoned<'a, S> {
    metrics: &'a Metrics<S>,
    authority: &'a RequestAuthority,
    armed: bool,
}

impl<S> Drop for Abandoned<'_, S> {
    fn drop(&mut self) {
        if self.armed {
            let layer = &self.metrics.layer;
            let authority = layer.authority.as_deref().unwrap_or_else(|| self.authority.as_str());
            self.metrics.handle(authority, None, layer.peer.as_ref()).record_abandoned();
        }
    }
}

impl<S, B> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>>,
    B: Send,
{
    type Response = Response<ResponseBody>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        let authority = match self.layer.authority {
            Some(_) => RequestAuthority::None,
            None => RequestAuthority::of(&req),
        };
        async move {
            let start = Instant::now();
            // Dropped before the response head: the client went away.
            let mut left = Abandoned { metrics: self, authority: &authority, armed: true };
            let (resp, routed) = routed(self.inner.call(req)).await;
            left.armed = false;
            let layer = &self.layer;
            layer.metrics.record_response(resp.status(), start.elapsed());
            if let Some(client) = &layer.client {
                client.record(resp.status());
            }
            let authority = layer.authority.as_deref().unwrap_or_else(|| authority.as_str());
            let peer = layer.peer.as_ref().or(routed.peer.as_ref());
            let handle = self.handle(authority, routed.route.as_ref(), peer);
            handle.record_request(&routed);
            let meter = Meter::new(handle, start, resp.status(), resp.headers());
            resp.map(|body| body.metered(meter))
        }
    }
}
