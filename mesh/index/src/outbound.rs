//! Outbound policy of a Service port: its protocol, failure accrual and the
//! GAMMA routes attached to it, with backendRefs resolved against the index.

use std::collections::BTreeSet;

use crate::destination::{endpoint_protocol, service_port};
use crate::model::{BackendRef, Kind, ObjectKey, ParentRef};
use crate::route::{Backend, GrpcRule, HttpRule, WeightedBackend};
use crate::store::Store;
use crate::target::{canonical_authority, Target};
use crate::views::{Meta, OutboundGrpcRoute, OutboundHttpRoute, OutboundPolicy};
use crate::Config;

pub(crate) fn view(store: &Store, config: &Config, target: &Target, client_ns: Option<&str>) -> OutboundPolicy {
    let (key, port) = match target {
        Target::Service { service, port } => (service.clone(), *port),
        Target::Addr(addr) => match store.cluster_ips.get(&addr.ip()) {
            Some(service) => (service.clone(), addr.port()),
            // A pod address: no routes (they attach to Services), but the
            // protocol of the port it backs (an opaque port skips detection).
            None => {
                let protocol = endpoint_protocol(store, *addr).unwrap_or_default();
                return OutboundPolicy { protocol, ..OutboundPolicy::default() };
            }
        },
        Target::External { .. } => return OutboundPolicy::default(),
    };
    let Some((svc, sport)) = service_port(store, &key, port) else {
        return OutboundPolicy::default();
    };
    let port_name = sport.name.as_str();
    let http_keys = attached(store.http_routes_by_parent.get(&key), &key, (port, port_name), client_ns, |k| {
        store.http_routes.get(k).map(|r| (r.created, r.parents.as_slice()))
    });
    let grpc_keys = attached(store.grpc_routes_by_parent.get(&key), &key, (port, port_name), client_ns, |k| {
        store.grpc_routes.get(k).map(|r| (r.created, r.parents.as_slice()))
    });
    let http_routes = http_keys
        .iter()
        .filter_map(|k| store.http_routes.get(k))
        .map(|r| OutboundHttpRoute {
            meta: Meta { kind: Some(Kind::HttpRoute), key: r.key.clone() },
            rules: r.rules.iter().map(|rule| resolve_http(store, config, rule)).collect(),
        })
        .collect();
    let grpc_routes = grpc_keys
        .iter()
        .filter_map(|k| store.grpc_routes.get(k))
        .map(|r| OutboundGrpcRoute {
            meta: Meta { kind: Some(Kind::GrpcRoute), key: r.key.clone() },
            rules: r.rules.iter().map(|rule| resolve_grpc(store, config, rule)).collect(),
        })
        .collect();
    OutboundPolicy {
        exists: true,
        service: Backend {
            authority: canonical_authority(&key, port, &config.cluster_domain),
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            port,
            invalid: None,
        },
        protocol: sport.protocol,
        failure_accrual: svc.failure_accrual,
        http_routes,
        grpc_routes,
    }
}

/// Routes attached to `service:port` (a parentRef naming the Service, and
/// its `port` and `sectionName` when given), oldest first. GAMMA: a route in the
/// Service's own namespace (producer route) applies to every client; a route
/// in the client's namespace (consumer route) applies to that namespace's
/// clients only, and when there is one, it replaces the producer routes.
fn attached<'s>(
    candidates: Option<&BTreeSet<ObjectKey>>,
    service: &ObjectKey,
    (port, port_name): (u16, &str),
    client_ns: Option<&str>,
    lookup: impl Fn(&ObjectKey) -> Option<(i64, &'s [ParentRef])>,
) -> Vec<ObjectKey> {
    let mut producer = Vec::new();
    let mut consumer = Vec::new();
    for key in candidates.into_iter().flatten() {
        let Some((created, parents)) = lookup(key) else { continue };
        let to_this_port = |p: &ParentRef| {
            &p.service == service
                && p.port.is_none_or(|p| p == port)
                && p.port_name.as_deref().is_none_or(|n| n == port_name)
        };
        if !parents.iter().any(to_this_port) {
            continue;
        }
        if key.namespace == service.namespace {
            producer.push((created, key.clone()));
        } else if Some(key.namespace.as_str()) == client_ns {
            consumer.push((created, key.clone()));
        }
    }
    let mut chosen = if consumer.is_empty() { producer } else { consumer };
    chosen.sort();
    chosen.into_iter().map(|(_, k)| k).collect()
}

fn resolve_http(store: &Store, config: &Config, rule: &HttpRule<BackendRef>) -> HttpRule<WeightedBackend> {
    HttpRule {
        name: rule.name.clone(),
        matches: rule.matches.clone(),
        filters: rule.filters.clone(),
        backends: rule.backends.iter().map(|b| resolve_backend(store, config, b)).collect(),
        timeouts: rule.timeouts,
        retry: rule.retry.clone(),
    }
}

fn resolve_grpc(store: &Store, config: &Config, rule: &GrpcRule<BackendRef>) -> GrpcRule<WeightedBackend> {
    GrpcRule {
        name: rule.name.clone(),
        matches: rule.matches.clone(),
        filters: rule.filters.clone(),
        backends: rule.backends.iter().map(|b| resolve_backend(store, config, b)).collect(),
        timeouts: rule.timeouts,
        retry: rule.retry.clone(),
    }
}

fn resolve_backend(store: &Store, config: &Config, b: &BackendRef) -> WeightedBackend {
    let port = b.port.unwrap_or(0);
    let invalid = if let Some(why) = &b.unsupported {
        Some(why.clone())
    } else if b.port.is_none() {
        Some(format!("backendRef to Service {} has no port (required for Services)", b.service))
    } else if !store.services.contains_key(&b.service) {
        Some(format!("Service {} not found", b.service))
    } else if service_port(store, &b.service, port).is_none() {
        Some(format!("Service {} has no port {port}", b.service))
    } else {
        None
    };
    WeightedBackend {
        backend: Backend {
            authority: canonical_authority(&b.service, port, &config.cluster_domain),
            name: b.service.name.clone(),
            namespace: b.service.namespace.clone(),
            port,
            invalid,
        },
        weight: b.weight,
        filters: b.filters.clone(),
    }
}
