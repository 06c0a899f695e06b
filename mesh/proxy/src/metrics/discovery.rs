//! The size of the discovery state: authorities held, streams open to
//! mesh-control, and why entries were dropped.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// One cache of discovered authorities (Services or backend sets).
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    /// Entries held.
    pub entries: Gauge,
    /// Entries dropped after the idle timeout.
    pub idle_evictions: Counter,
    /// Entries dropped to stay under the cap.
    pub capacity_evictions: Counter,
}

/// Handles for the discovered outbound path and its control-plane streams.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryMetrics {
    /// Services (policy watches) by authority.
    pub services: CacheMetrics,
    /// Backend sets (endpoint watches) by authority.
    pub backends: CacheMetrics,
    /// Destination.Get streams open to mesh-control.
    pub destination_streams: Gauge,
    /// Policy streams (outbound and inbound) open to mesh-control.
    pub policy_streams: Gauge,
    /// Discovered endpoints left out because they are this proxy's own
    /// listener (counted per endpoint update).
    pub self_endpoints: Counter,
    /// The balancers' endpoints and ejections.
    pub balancer: super::balance::BalancerMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvictionLabels {
    cache: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    kind: &'static str,
}

impl DiscoveryMetrics {
    /// Registers the discovery metrics and resolves every label set.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let entries = Family::<CacheLabels, Gauge>::default();
        let evictions = Family::<EvictionLabels, Counter>::default();
        let streams = Family::<StreamLabels, Gauge>::default();
        // One statement per handle: get_or_create's guard lives to the end
        // of its statement, and a second one in the same family would wait
        // for it forever.
        let cache = |cache: &'static str| {
            let entries = entries.get_or_create(&CacheLabels { cache }).clone();
            let idle_evictions = evictions.get_or_create(&EvictionLabels { cache, reason: "idle" }).clone();
            let capacity_evictions = evictions.get_or_create(&EvictionLabels { cache, reason: "capacity" }).clone();
            CacheMetrics { entries, idle_evictions, capacity_evictions }
        };
        let services = cache("service");
        let backends = cache("backend");
        let destination_streams = streams.get_or_create(&StreamLabels { kind: "destination" }).clone();
        let policy_streams = streams.get_or_create(&StreamLabels { kind: "policy" }).clone();
        let self_endpoints = Counter::default();
        let balancer = super::balance::BalancerMetrics::register(registry);
        let this = Self { services, backends, destination_streams, policy_streams, self_endpoints: self_endpoints.clone(), balancer };
        registry.register(
            "weft_discovery_authorities",
            "Discovered authorities held (--destination), by cache: service (outbound policy) and \
             backend (endpoints); at most --max-discovered-authorities each, plus entries in use",
            entries,
        );
        registry.register(
            "weft_discovery_evictions",
            "Discovered authorities dropped, by cache and reason (idle: unused for \
             --discovery-idle-timeout; capacity: least recently used over the cap)",
            evictions,
        );
        registry.register(
            "weft_discovery_streams",
            "Discovery streams held open to mesh-control, by kind (destination, policy)",
            streams,
        );
        registry.register(
            "weft_discovery_self_endpoints",
            "Discovered endpoints left out of a balancer because they are one of this proxy's own \
             listeners (dialing one would loop), counted per endpoint update",
            self_endpoints,
        );
        this
    }
}
