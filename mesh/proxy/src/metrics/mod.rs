//! Proxy metrics, created once at startup.
//!
//! Every handle the request path touches is resolved here, up front, so
//! recording is a handful of relaxed atomic adds: no label hashing, no
//! `Family` lock, no allocation per request.

pub mod balance;
pub mod caps;
pub mod discovery;
pub mod error_kind;
pub mod histogram;
pub mod http;
pub mod load_shed;
pub mod tcp;

use std::{fmt, sync::Arc, time::Duration};

use ::http::StatusCode;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

pub use crate::identity::IdentityMetrics;
pub use self::discovery::{CacheMetrics, DiscoveryMetrics};
pub use self::load_shed::{LoadShedMetrics, ShedReason};
use crate::{
    identity::refusal::Refusal,
    metrics::{error_kind::ErrorKind, histogram::AtomicHistogram},
};

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local application towards a peer.
    Outbound,
    /// From a peer towards the local application.
    Inbound,
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    direction: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    protocol: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client_id: String,
    status_class: &'static str,
}

/// The process-wide registry plus the per-direction handles.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    outbound: DirectionMetrics,
    inbound: DirectionMetrics,
    by_client: Family<ClientLabels, Counter>,
    identity: IdentityMetrics,
    authz_denied: Family<AuthzLabels, Counter>,
    discovery: DiscoveryMetrics,
}

/// Inbound responses to one meshed client, by status class; resolved once
/// per connection so a request costs one atomic add.
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    by_status_class: [Counter; STATUS_CLASSES.len()],
}

impl ClientMetrics {
    /// Counts one response sent to this client.
    #[inline]
    pub fn record(&self, status: StatusCode) {
        self.by_status_class[status_class(status)].inc();
    }
}

fn status_class(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Handles for one direction; cloning shares the underlying atomics.
#[derive(Debug, Clone)]
pub struct DirectionMetrics {
    by_status_class: [Counter; STATUS_CLASSES.len()],
    errors: [Counter; ErrorKind::ALL.len()],
    latency: AtomicHistogram,
    connections: Counter,
    open_connections: Gauge,
    refused: [Counter; Refusal::ALL.len()],
    body_timeouts: Counter,
    shed: [Counter; Shed::ALL.len()],
    load_shed: LoadShedMetrics,
    http: Arc<http::HttpMetrics>,
    tcp: Arc<tcp::TcpMetrics>,
}

/// Why a downstream connection was closed by the proxy's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The direction's connection cap was reached with every connection
    /// busy: the new one was closed at accept.
    Limit = 0,
    /// The oldest idle connection was closed to make room for a new one.
    IdleEvicted = 1,
    /// The process was out of file descriptors (EMFILE/ENFILE): a pending
    /// connection was accepted on the reserve descriptor and closed.
    NoFds = 2,
}

impl Shed {
    /// Every reason, in label order.
    pub const ALL: [Shed; 3] = [Shed::Limit, Shed::IdleEvicted, Shed::NoFds];

    /// The `reason` label.
    pub fn as_label(self) -> &'static str {
        match self {
            Shed::Limit => "limit",
            Shed::IdleEvicted => "idle_evicted",
            Shed::NoFds => "no_fds",
        }
    }
}

/// An HTTP/2 frame kind a client may flood a connection with (budgets
/// and the GOAWAY: `stack::flood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Flood {
    /// PING (acknowledgements not counted).
    Ping = 0,
    /// SETTINGS (acknowledgements not counted).
    Settings = 1,
    /// DATA with no payload and no END_STREAM.
    EmptyData = 2,
    /// PRIORITY.
    Priority = 3,
}

impl H2Flood {
    /// Every kind, in label order.
    pub const ALL: [H2Flood; 4] = [H2Flood::Ping, H2Flood::Settings, H2Flood::EmptyData, H2Flood::Priority];

    /// The `frame` label.
    pub fn as_label(self) -> &'static str {
        match self {
            H2Flood::Ping => "ping",
            H2Flood::Settings => "settings",
            H2Flood::EmptyData => "empty_data",
            H2Flood::Priority => "priority",
        }
    }

    /// The frame as RFC 9113 names it, for log lines.
    pub fn frame_name(self) -> &'static str {
        match self {
            H2Flood::Ping => "PING",
            H2Flood::Settings => "SETTINGS",
            H2Flood::EmptyData => "empty DATA",
            H2Flood::Priority => "PRIORITY",
        }
    }

    /// Counts one connection closed for this flood.
    pub fn record(self) {
        H2_FLOODS.get_or_create(&FloodLabels { frame: self.as_label() }).inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FloodLabels {
    frame: &'static str,
}

/// Upstream connections open (HTTP/1 pooled or in use, HTTP/2, upgraded),
/// by direction: process-wide because an upstream is made long before any
/// direction's handles are at hand, and changes only per connection.
static POOL_CONNECTIONS: std::sync::LazyLock<Family<DirectionLabels, Gauge>> = std::sync::LazyLock::new(Family::default);

/// The gauge of upstream connections open in `direction` (see
/// `weft_pool_connections`); held by an upstream, moved per connection.
pub fn pool_connections(direction: Direction) -> Gauge {
    POOL_CONNECTIONS.get_or_create(&DirectionLabels { direction: direction.as_str() }).clone()
}

/// Process-wide, not per direction: counted inside a connection's IO,
/// where no direction's handles are at hand (and a flood is rare).
static H2_FLOODS: std::sync::LazyLock<Family<FloodLabels, Counter>> = std::sync::LazyLock::new(Family::default);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    direction: &'static str,
    reason: &'static str,
}

impl Metrics {
    /// Registers every metric and resolves every label combination.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency = Family::<DirectionLabels, AtomicHistogram>::new_with_constructor(
            AtomicHistogram::latency as fn() -> AtomicHistogram,
        );
        let connections = Family::<DirectionLabels, Counter>::default();
        let open = Family::<DirectionLabels, Gauge>::default();
        let refused = Family::<RefusalLabels, Counter>::default();
        let body_timeouts = Family::<DirectionLabels, Counter>::default();
        let shed = Family::<ShedLabels, Counter>::default();
        let load_shed = load_shed::LoadShedFamilies::register(&mut registry);
        let (http_out, http_in) = http::register(&mut registry);
        let (http_out, http_in) = (Arc::new(http_out), Arc::new(http_in));
        let (tcp_out, tcp_in) = tcp::register(&mut registry);
        registry.register_collector(Box::new(mesh_process::ProcessCollector));

        let resolve = |direction: Direction| {
            let d = direction.as_str();
            DirectionMetrics {
                by_status_class: STATUS_CLASSES.map(|class| {
                    requests
                        .get_or_create(&RequestLabels { direction: d, status_class: class })
                        .clone()
                }),
                errors: ErrorKind::ALL.map(|kind| {
                    errors
                        .get_or_create(&ErrorLabels { direction: d, kind: kind.as_str() })
                        .clone()
                }),
                latency: latency.get_or_create(&DirectionLabels { direction: d }).clone(),
                connections: connections.get_or_create(&DirectionLabels { direction: d }).clone(),
                open_connections: open.get_or_create(&DirectionLabels { direction: d }).clone(),
                refused: Refusal::ALL.map(|r| {
                    refused
                        .get_or_create(&RefusalLabels { direction: d, reason: r.as_label() })
                        .clone()
                }),
                body_timeouts: body_timeouts.get_or_create(&DirectionLabels { direction: d }).clone(),
                shed: Shed::ALL.map(|r| shed.get_or_create(&ShedLabels { direction: d, reason: r.as_label() }).clone()),
                load_shed: load_shed.direction(d),
                http: Arc::clone(match direction {
                    Direction::Outbound => &http_out,
                    Direction::Inbound => &http_in,
                }),
                tcp: Arc::clone(match direction {
                    Direction::Outbound => &tcp_out,
                    Direction::Inbound => &tcp_in,
                }),
            }
        };
        let outbound = resolve(Direction::Outbound);
        let inbound = resolve(Direction::Inbound);

        registry.register(
            "weft_requests",
            "Responses sent to downstream clients, by direction and status class \
             (proxy-generated errors included; see weft_proxy_errors_total)",
            requests,
        );
        registry.register(
            "weft_proxy_errors",
            "Responses generated by the proxy itself instead of an upstream, by cause",
            errors,
        );
        registry.register(
            "weft_response_latency_seconds",
            "Time from receiving a request head to sending the response head",
            latency,
        );
        registry.register(
            "weft_response_body_timeouts",
            "Responses cut mid-body (stream reset, or HTTP/1 connection closed) because the request \
             timeout passed after the head was sent; a late head is a 504 in weft_proxy_errors_total",
            body_timeouts,
        );
        registry.register("weft_connections", "Downstream connections accepted", connections);
        registry.register("weft_open_connections", "Downstream connections currently open", open);
        registry.register(
            "weft_refused_connections",
            "Connections refused or failed at the mTLS / plaintext-policy gate, or (--transparent) \
             refused for their original destination (loop, no_original_dst), by direction and reason",
            refused,
        );
        registry.register(
            "weft_shed_connections",
            "Downstream connections closed by the proxy's own limits, by direction and reason \
             (limit: closed at accept, the connection cap reached with all busy; idle_evicted: the \
             oldest idle connection closed to make room; no_fds: out of file descriptors)",
            shed,
        );
        for kind in H2Flood::ALL {
            drop(H2_FLOODS.get_or_create(&FloodLabels { frame: kind.as_label() }));
        }
        registry.register(
            "weft_h2_flood_closes",
            "Downstream HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for sending more \
             control frames of a kind than its budget (PING, SETTINGS, empty DATA, PRIORITY), by frame",
            H2_FLOODS.clone(),
        );
        for d in [Direction::Outbound, Direction::Inbound] {
            drop(pool_connections(d));
        }
        registry.register(
            "weft_pool_connections",
            "Upstream connections open, by direction (outbound: to peers and destinations; inbound: \
             to the local app): pooled HTTP/1 ones (parked or in use), HTTP/2 ones and upgraded ones",
            POOL_CONNECTIONS.clone(),
        );
        let by_client = Family::<ClientLabels, Counter>::default();
        registry.register(
            "weft_inbound_requests_by_client",
            "Inbound responses sent to meshed clients, by the client's verified SPIFFE ID and status class",
            by_client.clone(),
        );
        let identity = IdentityMetrics::default();
        registry.register(
            "weft_identity_certificates",
            "Workload certificates installed (the first one and every rotation)",
            identity.certificates.clone(),
        );
        registry.register(
            "weft_identity_certificate_expiry_timestamp_seconds",
            "Unix time at which the current workload certificate expires (0 until the first)",
            identity.expiry.clone(),
        );

        let authz_denied = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "weft_inbound_authz_denied",
            "Inbound requests (protocol=http, answered 403) and connections (protocol=tcp, closed) \
             refused by the authorization policy, by reason (unauthorized: a meshed client no \
             authorization names; unauthenticated: a plaintext client)",
            authz_denied.clone(),
        );

        let discovery = DiscoveryMetrics::register(&mut registry);

        Self { registry, outbound, inbound, by_client, identity, authz_denied, discovery }
    }

    /// The counter of authorization refusals for `protocol` (`http`, `tcp`)
    /// and `reason`; resolve once, increment per refusal.
    pub fn authz_denied(&self, protocol: &'static str, reason: &'static str) -> Counter {
        self.authz_denied.get_or_create(&AuthzLabels { protocol, reason }).clone()
    }

    /// Handles for one meshed client's inbound requests.
    pub fn client(&self, client_id: &str) -> ClientMetrics {
        ClientMetrics {
            by_status_class: STATUS_CLASSES.map(|class| {
                self.by_client
                    .get_or_create(&ClientLabels { client_id: client_id.to_owned(), status_class: class })
                    .clone()
            }),
        }
    }

    /// The discovery state's gauges and counters.
    pub fn discovery(&self) -> &DiscoveryMetrics {
        &self.discovery
    }

    /// The workload certificate metrics.
    pub fn identity(&self) -> &IdentityMetrics {
        &self.identity
    }

    /// Handles for one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionMetrics {
        match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        }
    }

    /// Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DirectionMetrics {
    /// Records a response head sent downstream.
    #[inline]
    pub fn record_response(&self, status: StatusCode, elapsed: Duration) {
        self.by_status_class[status_class(status)].inc();
        self.latency.observe(elapsed);
    }

    /// Records a response the proxy generated itself.
    #[inline]
    pub fn record_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }

    /// The counter of response bodies cut at the request deadline.
    pub fn body_timeouts(&self) -> &Counter {
        &self.body_timeouts
    }

    /// Records a connection refused (or failed) at the mTLS / policy gate,
    /// or for its original destination.
    pub fn record_refusal(&self, reason: Refusal) {
        self.refused[reason as usize].inc();
    }

    /// Records a connection closed by the proxy's own limits.
    pub fn record_shed(&self, reason: Shed) {
        self.shed[reason as usize].inc();
    }

    /// Requests shed at admission, and the shedding state.
    pub fn load_shed(&self) -> &LoadShedMetrics {
        &self.load_shed
    }

    /// The golden HTTP metrics of this direction.
    pub fn http(&self) -> &Arc<http::HttpMetrics> {
        &self.http
    }

    /// The per-connection TCP metrics of this direction.
    pub fn tcp(&self) -> &Arc<tcp::TcpMetrics> {
        &self.tcp
    }

    /// Marks a downstream connection open until the guard drops.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        self.open_connections.inc();
        ConnectionGuard { gauge: self.open_connections.clone() }
    }
}

/// Decrements the open-connections gauge on drop.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_direction_and_class() {
        let m = Metrics::new();
        let out = m.direction(Direction::Outbound);
        out.record_response(StatusCode::OK, Duration::from_millis(1));
        out.record_response(StatusCode::OK, Duration::from_millis(1));
        out.record_response(StatusCode::BAD_GATEWAY, Duration::from_millis(1));
        out.record_error(ErrorKind::NoRoute);
        m.direction(Direction::Inbound)
            .record_response(StatusCode::NOT_FOUND, Duration::from_millis(1));
        let text = m.encode();
        for line in [
            r#"weft_requests_total{direction="outbound",status_class="2xx"} 2"#,
            r#"weft_requests_total{direction="outbound",status_class="5xx"} 1"#,
            r#"weft_requests_total{direction="inbound",status_class="4xx"} 1"#,
            r#"weft_requests_total{direction="inbound",status_class="2xx"} 0"#,
            r#"weft_proxy_errors_total{direction="outbound",kind="no_route"} 1"#,
            r#"weft_response_latency_seconds_count{direction="outbound"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn refusals_and_clients() {
        let m = Metrics::new();
        m.direction(Direction::Inbound).record_refusal(Refusal::Plaintext);
        m.client("spiffe://td/ns/a/sa/b").record(StatusCode::OK);
        let text = m.encode();
        for line in [
            r#"weft_refused_connections_total{direction="inbound",reason="plaintext"} 1"#,
            r#"weft_refused_connections_total{direction="outbound",reason="wrong_identity"} 0"#,
            r#"weft_inbound_requests_by_client_total{client_id="spiffe://td/ns/a/sa/b",status_class="2xx"} 1"#,
            "weft_identity_certificates_total 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn connection_gauge_follows_guards() {
        let m = Metrics::new();
        let g1 = m.direction(Direction::Inbound).connection_opened();
        let _g2 = m.direction(Direction::Inbound).connection_opened();
        drop(g1);
        let text = m.encode();
        assert!(text.contains(r#"weft_open_connections{direction="inbound"} 1"#), "{text}");
        assert!(text.contains(r#"weft_connections_total{direction="inbound"} 2"#), "{text}");
    }
}
