//! The discovered outbound path: authorities without a static `--route`
//! are resolved through Destination and routed by their outbound policy.
//!
//! ```text
//!  authority ─> Service (policy watch)  ── rule by precedence (404: none)
//!                 │ request filters: headers, rewrite; redirect -> 3xx
//!                 │ weighted backend pick (500: none usable)
//!                 ▼
//!               retry layer (discovery::retry): resend / retry, replay body
//!                 ▼
//!               attempt (attempt.rs): pick, backend timeout, balancer feedback
//!                 │
//!               BackendSet (Destination watch) ── Balancer: P2C + peak EWMA,
//!                 │                                failure accrual
//!                 ▼ response filters
//! ```
//!
//! Services and backend sets are created on first use and held in a
//! bounded map ([`cache`]): dropped when no request used them for
//! `--discovery-idle-timeout`, and least recently used first past
//! `--max-discovered-authorities`, never while in use. Dropping one ends its
//! watch task and closes its stream to the control plane. Their watch
//! tasks copy each update into lock-free cells (`ArcSwap`), so a request
//! only loads pointers. Only a request for an authority not held (new, or
//! dropped since) waits, bounded, for the control plane's first answer. An
//! authority that is not a valid `host:port` is refused (400) without a watch.

mod cache;

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use http::{header, HeaderValue, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tower::Layer as _;
use tracing::{debug, warn};

use self::attempt::Endpoints;
use crate::{
    discovery::balance::{Balancer, PickError},
    http::body::{RequestBody, ResponseBody},
    config::{
        own::{is_local_ip, OwnListeners},
        Disabled, DiscoveryLimits, Limits,
    },
    discovery::{DestinationSource, Endpoint, EndpointSet, PolicySource, ProtocolHint},
    http::error::ProxyError,
    identity::MeshTls,
    metrics::{DirectionMetrics, DiscoveryMetrics},
    discovery::policy::{
        route::{apply_rewrite, redirect_location, Filter},
        OutboundPolicy,
    },
    discovery::retry::RetryLayer,
    http::upstream::{MeshedPeer, Upstream},
};

/// How long a request for a never-seen authority waits for the control
/// plane's first answer (then: 503 for endpoints, the default route for policy).
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Makes the connections of a discovered endpoint.
#[derive(Debug, Clone)]
struct Connect {
    mesh: Option<Arc<MeshTls>>,
    metrics: DirectionMetrics,
    /// Never dialed: a connection to one comes back to this proxy.
    own: OwnListeners,
    /// Endpoints left out for being one of `own`.
    self_endpoints: Counter,
}

impl Connect {
    /// `endpoints` without this proxy's own listeners, and the first one
    /// left out (warned about and counted, per update).
    fn without_self<'a>(&self, authority: &str, endpoints: &'a [Endpoint]) -> (Cow<'a, [Endpoint]>, Option<SocketAddr>) {
        if self.own.is_empty() {
            return (Cow::Borrowed(endpoints), None);
        }
        let own = |e: &Endpoint| self.own.reached_by(e.addr, is_local_ip);
        let Some(first) = endpoints.iter().find_map(|e| own(e).map(|l| (e.addr, l))) else {
            return (Cow::Borrowed(endpoints), None);
        };
        let kept: Vec<Endpoint> = endpoints.iter().filter(|e| own(e).is_none()).cloned().collect();
        let dropped = endpoints.len() - kept.len();
        self.self_endpoints.inc_by(dropped as u64);
        warn!(
            "{authority}: {dropped} endpoint(s) left out, e.g. {} (this proxy's own listener {}): dialing it would loop; \
             the Service's endpoints must be the app's address, not the proxy's",
            first.0, first.1
        );
        (Cow::Owned(kept), Some(first.0))
    }

    fn upstream(&self, authority: &str, ep: &Endpoint) -> Option<Arc<Upstream>> {
        match (&ep.identity, ep.hint, &self.mesh) {
            (Some(id), ProtocolHint::H2 | ProtocolHint::Opaque, Some(mesh)) => {
                match MeshedPeer::new(mesh, id.clone(), self.metrics.clone()) {
                    Ok(peer) => Some(Upstream::meshed(ep.addr, peer)),
                    Err(e) => {
                        warn!("{authority}: endpoint {} ({id}) left out: {e}", ep.addr);
                        None
                    }
                }
            }
            (Some(id), _, None) => {
                debug!("{authority}: endpoint {} is meshed ({id}) but this proxy has no identity; plaintext", ep.addr);
                Some(Upstream::new(ep.addr))
            }
            _ => Some(Upstream::new(ep.addr)),
        }
    }
}

/// What Destination said about an authority, in a lock-free cell.
#[derive(Debug)]
pub(crate) struct BackendSet {
    authority: Arc<str>,
    pub(crate) balancer: Balancer,
    /// `None` until the first answer; then whether the Service exists.
    exists: ArcSwapOption<bool>,
    /// An endpoint left out for being this proxy's own listener, when no
    /// other endpoint is left (the set's requests are loops).
    only_self: ArcSwapOption<SocketAddr>,
    first: tokio::sync::watch::Receiver<Option<Arc<EndpointSet>>>,
    deadline: Instant,
    connect: Connect,
    /// `weft_balancer_ejections_total` of this authority.
    ejections: Counter,
    /// Dropped with the set: ends its watch task (and with it the stream).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl crate::metrics::balance::BalancerView for BackendSet {
    fn authority(&self) -> &str {
        &self.authority
    }

    fn endpoint_states(&self) -> (usize, usize) {
        self.balancer.states()
    }
}

impl BackendSet {
    /// Counts an endpoint taken out of rotation by failure accrual.
    pub(crate) fn count_ejection(&self) {
        self.ejections.inc();
    }

    /// Applies one resolution. An unknown `ip:port` authority is forwarded
    /// to itself, as it would be without a control plane. Endpoints that
    /// are this proxy's own listeners are left out.
    fn apply(&self, set: &EndpointSet, connect: &Connect) {
        let own = (!set.exists && set.endpoints.is_empty())
            .then(|| self.authority.parse::<SocketAddr>().ok())
            .flatten();
        let itself;
        let listed: &[Endpoint] = match own {
            Some(addr) => {
                itself = [Endpoint::plain(addr)];
                &itself
            }
            None => &set.endpoints,
        };
        let (endpoints, left_out) = connect.without_self(&self.authority, listed);
        self.balancer.update(&endpoints, |e| connect.upstream(&self.authority, e));
        self.only_self.store(left_out.filter(|_| endpoints.is_empty()).map(Arc::new));
        self.exists.store(Some(Arc::new(set.exists || own.is_some())));
        debug!(authority = %self.authority, endpoints = set.endpoints.len(), exists = set.exists, "endpoints updated");
    }

    pub(crate) async fn pick(&self, avoid: Option<SocketAddr>) -> Result<crate::discovery::balance::Pick, ProxyError> {
        if self.exists.load().is_none() {
            // Requests wait for the control plane's first answer until
            // FIRST_ANSWER_WAIT after the authority was first seen; later
            // ones fail fast until it answers.
            let mut rx = self.first.clone();
            let _ = tokio::time::timeout_at(self.deadline, rx.wait_for(Option::is_some)).await;
            // The watch task may be a step behind the channel: apply here
            // (applying the same set twice keeps the same endpoints).
            if self.exists.load().is_none() {
                let current = rx.borrow().clone();
                if let Some(set) = current {
                    self.apply(&set, &self.connect);
                }
            }
        }
        match self.balancer.pick(avoid) {
            Ok(p) => Ok(p),
            Err(PickError::AllEjected { endpoints }) => {
                Err(ProxyError::Unavailable { authority: self.authority.to_string(), endpoints })
            }
            Err(PickError::NoEndpoints) => Err(match (self.only_self.load_full(), self.exists.load().as_deref()) {
                (Some(endpoint), _) => ProxyError::SelfEndpoints { authority: self.authority.to_string(), endpoint: *endpoint },
                (None, None) => ProxyError::NoEndpoints {
                    authority: self.authority.to_string(),
                    why: "; the control plane has not answered yet",
                },
                (None, Some(true)) => ProxyError::NoEndpoints { authority: self.authority.to_string(), why: "" },
                (None, Some(false)) => ProxyError::NoRoute { authority: self.authority.to_string() },
            }),
        }
    }
}

/// One target authority's outbound policy.
#[derive(Debug)]
struct Service {
    authority: Arc<str>,
    current: ArcSwapOption<OutboundPolicy>,
    default: Arc<OutboundPolicy>,
    deadline: Instant,
    first: Option<tokio::sync::watch::Receiver<Option<Arc<OutboundPolicy>>>>,
    disabled: Disabled,
    /// Dropped with the Service: ends its watch task (and with it the stream).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Service {
    /// The policy as the proxy applies it: `--disable`d features taken out.
    fn effective(&self, policy: Arc<OutboundPolicy>) -> Arc<OutboundPolicy> {
        match policy.without(self.disabled, &self.authority) {
            Some(p) => Arc::new(p),
            None => policy,
        }
    }

    async fn policy(&self) -> Arc<OutboundPolicy> {
        if let Some(p) = self.current.load_full() {
            return p;
        }
        let Some(rx) = &self.first else { return Arc::clone(&self.default) };
        let mut rx = rx.clone();
        let _ = tokio::time::timeout_at(self.deadline, rx.wait_for(Option::is_some)).await;
        let got = rx.borrow().clone();
        match got {
            Some(p) => self.effective(p),
            None => {
                // No answer: the default route until one comes (the watch
                // task replaces it), and no more waiting.
                self.current.compare_and_swap(&None::<Arc<OutboundPolicy>>, Some(Arc::clone(&self.default)));
                Arc::clone(&self.default)
            }
        }
    }
}

/// Resolves, routes, balances and retries requests to discovered authorities.
pub struct Outbound {
    destination: Arc<dyn DestinationSource>,
    policy: Option<Arc<dyn PolicySource>>,
    services: cache::Cache<Service>,
    backends: cache::Cache<BackendSet>,
    connect: Connect,
    limits: Limits,
    disabled: Disabled,
    balancer: crate::metrics::balance::BalancerMetrics,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("services", &self.services.len())
            .field("backends", &self.backends.len())
            .finish_non_exhaustive()
    }
}

/// How an [`Outbound`] is built, but for its Destination source. Start
/// from [`OutboundConfig::new`] (defaults for everything but the metrics)
/// and set the fields that differ.
#[derive(Clone)]
pub struct OutboundConfig {
    /// Route policy per authority; `None`: every authority takes its
    /// default route at once.
    pub policy: Option<Arc<dyn PolicySource>>,
    /// Makes meshed endpoints mTLS peers; `None`: plaintext to all.
    pub mesh: Option<Arc<MeshTls>>,
    /// The outbound direction's request and connection metrics.
    pub metrics: DirectionMetrics,
    pub limits: Limits,
    /// Features taken out of every policy (conformance testing).
    pub disabled: Disabled,
    /// At most `bounds.max_authorities` Services and as many backend sets,
    /// each dropped after `bounds.idle_timeout` unused.
    pub bounds: DiscoveryLimits,
    /// Gauges that follow those numbers (default: unregistered).
    pub gauges: DiscoveryMetrics,
    /// This proxy's listeners: endpoints that are one of them are never
    /// dialed (default: none known).
    pub own: OwnListeners,
}

impl OutboundConfig {
    /// No policy source, no mesh identity, default limits and bounds,
    /// nothing disabled, unregistered gauges.
    pub fn new(metrics: DirectionMetrics) -> Self {
        Self {
            policy: None,
            mesh: None,
            metrics,
            limits: Limits::default(),
            disabled: Disabled::default(),
            bounds: DiscoveryLimits::default(),
            gauges: DiscoveryMetrics::default(),
            own: OwnListeners::default(),
        }
    }
}

impl std::fmt::Debug for OutboundConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundConfig")
            .field("policy", &self.policy.is_some())
            .field("mesh", &self.mesh.is_some())
            .field("limits", &self.limits)
            .field("disabled", &self.disabled)
            .field("bounds", &self.bounds)
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// The discovered path over `destination`, built as `config` says.
    /// Call within a tokio runtime: the idle sweep is a task (it ends with
    /// the `Outbound`).
    pub fn new(destination: Arc<dyn DestinationSource>, config: OutboundConfig) -> Arc<Self> {
        let OutboundConfig { policy, mesh, metrics, limits, disabled, bounds, gauges, own } = config;
        let this = Arc::new(Self {
            destination,
            policy,
            services: cache::Cache::new(bounds, gauges.services),
            backends: cache::Cache::new(bounds, gauges.backends),
            connect: Connect { mesh, metrics, own, self_endpoints: gauges.self_endpoints },
            limits,
            disabled,
            balancer: gauges.balancer,
        });
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sweep(Arc::downgrade(&this)));
            }
            Err(_) => warn!("discovery: no tokio runtime; idle authorities are dropped only over the cap"),
        }
        this
    }

    fn service(&self, key: &str) -> Arc<Service> {
        self.services.get_or_insert_with(key, |key| {
            let first = self.policy.as_ref().map(|p| p.outbound(&key));
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let svc = Arc::new(Service {
                authority: Arc::clone(&key),
                current: ArcSwapOption::empty(),
                default: Arc::new(OutboundPolicy::default_for(&key)),
                deadline: Instant::now() + FIRST_ANSWER_WAIT,
                first: first.clone(),
                disabled: self.disabled,
                _stop: stop,
            });
            if let Some(rx) = first {
                tokio::spawn(follow(rx, Arc::downgrade(&svc), stopped, |svc, p| {
                    svc.current.store(Some(svc.effective(p)));
                }));
            }
            svc
        })
    }

    pub(crate) fn backend(&self, authority: &str) -> Arc<BackendSet> {
        self.backends.get_or_insert_with(authority, |key| {
            let rx = self.destination.resolve(&key);
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let set = Arc::new(BackendSet {
                authority: Arc::clone(&key),
                balancer: Balancer::new(),
                exists: ArcSwapOption::empty(),
                only_self: ArcSwapOption::empty(),
                first: rx.clone(),
                deadline: Instant::now() + FIRST_ANSWER_WAIT,
                connect: self.connect.clone(),
                ejections: self.balancer.ejections(&key),
                _stop: stop,
            });
            tokio::spawn(follow(rx, Arc::downgrade(&set), stopped, |set, eps| set.apply(&eps, &set.connect)));
            let view: Arc<dyn crate::metrics::balance::BalancerView> = set.clone();
            self.balancer.watch(Arc::downgrade(&view));
            set
        })
    }

    /// Forwards a request whose (static-route-less) authority is `authority`.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        let svc = match crate::http::router::request_authority(&req) {
            Some(authority) => {
                let key = normalize(authority);
                if let Err(reason) = check_authority(&key) {
                    return Err(ProxyError::InvalidAuthority { authority: authority.escape_debug().to_string(), reason });
                }
                self.service(&key)
            }
            None => return Err(ProxyError::NoRoute { authority: "<none>".to_owned() }),
        };
        self.send_service(&svc, req).await
    }

    /// The discovered target `authority` (e.g. a transparent connection's
    /// original destination `ip:port`, always valid), looked up once: its
    /// requests go through [`Target::send`] without another lookup, and the
    /// entry stays while the `Target` lives.
    pub fn target(self: &Arc<Self>, authority: &str) -> Target {
        Target { service: self.service(&normalize(authority)), outbound: Arc::clone(self) }
    }

    async fn send_service(&self, svc: &Service, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        let key: &str = &svc.authority;
        let policy = svc.policy().await;
        let table = match &policy.grpc_routes {
            Some(grpc) if crate::http::headers::is_grpc(&req) => grpc,
            _ => &policy.routes,
        };
        let Some((rule, matched)) = table.select(&req) else {
            return Err(ProxyError::NoRouteMatch {
                authority: key.to_owned(),
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
            });
        };
        crate::metrics::http::note(|r| r.route.clone_from(&rule.label));
        let (mut parts, body) = req.into_parts();
        let backend = rule.pick_backend();
        let filters = rule.filters.iter().chain(backend.iter().flat_map(|b| b.filters.iter()));
        for f in filters.clone() {
            match f {
                Filter::RequestHeaders(m) => m.apply(&mut parts.headers),
                Filter::Rewrite(rw) => apply_rewrite(rw, &mut parts, matched),
                Filter::Redirect(r) => {
                    let probe = Request::from_parts(parts, ());
                    let location = redirect_location(r, &probe, key, matched);
                    return Ok(redirect(r.status, &location));
                }
                Filter::ResponseHeaders(_) => {}
            }
        }
        let no_backend = |reason: String| ProxyError::NoBackend { authority: key.to_string(), rule: rule.name.clone(), reason };
        let backend = backend.ok_or_else(|| no_backend("no backend with a weight above 0".to_owned()))?;
        if let Some(why) = &backend.invalid {
            return Err(no_backend(format!("backend {}: {why}", backend.authority)));
        }
        let set = self.backend(&backend.authority);
        set.balancer.set_accrual(policy.accrual);

        let deadline = rule.timeouts.request.map(|d| Instant::now() + d);
        let per_attempt = rule.timeouts.backend_request.unwrap_or(self.limits.request_timeout);
        let attempts = Endpoints { set: &set, per_attempt, deadline };
        let mut resp = RetryLayer::new(key, rule.retry.as_deref(), deadline)
            .layer(attempts)
            .call(Request::from_parts(parts, body))
            .await?;
        for f in filters {
            if let Filter::ResponseHeaders(m) = f {
                m.apply(resp.headers_mut());
            }
        }
        Ok(resp)
    }
}

/// Copies each value of a watch into its owner until the owner is dropped
/// (`stopped` fires with it), then drops the receiver: the last receiver
/// gone closes the control-plane stream.
async fn follow<O, T>(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<T>>>,
    owner: Weak<O>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    apply: impl Fn(&O, Arc<T>),
) {
    loop {
        let current = rx.borrow_and_update().clone();
        let Some(owner) = owner.upgrade() else { return };
        if let Some(value) = current {
            apply(&owner, value);
        }
        drop(owner);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = &mut stopped => return,
        }
    }
}

/// Drops idle Services and backend sets every quarter idle timeout, until
/// the `Outbound` goes.
async fn sweep(outbound: Weak<Outbound>) {
    let Some(every) = outbound.upgrade().map(|o| o.services.sweep_interval()) else { return };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(o) = outbound.upgrade() else { return };
        let (services, backends) = (o.services.sweep(), o.backends.sweep());
        if services + backends > 0 {
            debug!(services, backends, "dropped idle discovered authorities");
        }
    }
}

/// A discovered authority resolved once, for every request of one
/// transparent connection.
#[derive(Debug, Clone)]
pub struct Target {
    outbound: Arc<Outbound>,
    service: Arc<Service>,
}

impl Target {
    /// Routes, balances and retries `req` as [`Outbound::send`] does for
    /// this target's authority, whatever the request's `Host`.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, ProxyError> {
        self.outbound.send_service(&self.service, req).await
    }

    /// Whether the control plane says this target is an opaque TCP port
    /// (waits, bounded, for its first policy answer; no policy: no).
    pub async fn opaque(&self) -> bool {
        self.service.policy().await.opaque
    }

    /// The Destination key (`host:port`, lower-case).
    pub fn authority(&self) -> &str {
        &self.service.authority
    }
}

fn redirect(status: StatusCode, location: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// The Destination key of an authority (lower-case `host:port`, port 80
/// when the request named none, no userinfo), without allocating.
pub use crate::http::authority::normalize;

mod attempt;

/// Whether a normalized authority is a `host:port` worth asking the
/// control plane about: a DNS name (labels of letters, digits, `-`, `_`,
/// at most 63 characters, 253 in all), an IPv4 address or a bracketed IPv6
/// address, and a port in 1..=65535. `Err` says what is wrong.
pub fn check_authority(authority: &str) -> Result<(), &'static str> {
    let Some((host, port)) = authority.rsplit_once(':') else { return Err("no port") };
    match port.parse::<u16>() {
        Ok(0) => return Err("port 0"),
        Ok(_) if port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err("the port is not a number in 1..=65535"),
    }
    if host.is_empty() {
        return Err("empty host");
    }
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err("the bracketed host is not an IPv6 address"),
        };
    }
    if host.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
        return Err("control or non-ASCII characters in the host");
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("an empty label in the host name");
        }
        if label.len() > 63 {
            return Err("a host name label longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("a host name may hold only letters, digits, '-', '_' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a host name label starts or ends with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod bounded_tests;
#[cfg(test)]
mod tests;
