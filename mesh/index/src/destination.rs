//! Endpoint sets: Service port -> EndpointSlices -> ready addresses, each
//! with its Pod's identity and whether it is meshed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::model::{EndpointSlice, ObjectKey, Protocol, Service, ServicePort, SliceEndpoint};
use crate::store::Store;
use crate::target::Target;
use crate::views::{workload_identity, DestinationView, Endpoint, ProtocolHint, DEFAULT_WEIGHT};
use crate::Config;

pub(crate) fn view(store: &Store, config: &Config, target: &Target) -> DestinationView {
    match target {
        Target::Service { service, port } => service_view(store, config, service, *port),
        Target::Addr(addr) => match store.cluster_ips.get(&addr.ip()) {
            Some(service) => service_view(store, config, service, addr.port()),
            None => endpoint_view(store, config, *addr),
        },
        Target::External { .. } => DestinationView::default(),
    }
}

fn service_view(store: &Store, config: &Config, key: &ObjectKey, port: u16) -> DestinationView {
    let Some((svc, sport)) = service_port(store, key, port) else {
        return DestinationView::default();
    };
    let mut endpoints = BTreeMap::new();
    for slice in store.slices_by_service.get(key).into_iter().flatten().filter_map(|k| store.slices.get(k)) {
        let Some(slice_port) = slice.ports.iter().find(|p| p.name == sport.name) else { continue };
        for ep in slice.endpoints.iter().filter(|ep| ep.ready) {
            for ip in &ep.addresses {
                let addr = SocketAddr::new(*ip, slice_port.port);
                endpoints.insert(addr, endpoint(store, config, svc, sport, slice, ep, addr));
            }
        }
    }
    DestinationView { exists: true, endpoints }
}

/// An address that is not a ClusterIP: one ready endpoint of some Service, or unknown.
fn endpoint_view(store: &Store, config: &Config, addr: SocketAddr) -> DestinationView {
    // Sorted so that an address listed by two slices always resolves the same way.
    let mut slices: Vec<(&ObjectKey, &EndpointSlice)> = store.slices.iter().collect();
    slices.sort_unstable_by_key(|(k, _)| *k);
    for (key, slice) in slices {
        let svc_key = ObjectKey::new(&key.namespace, &slice.service);
        let Some(svc) = store.services.get(&svc_key) else { continue };
        for slice_port in slice.ports.iter().filter(|p| p.port == addr.port()) {
            let Some(sport) = svc.ports.iter().find(|p| p.name == slice_port.name) else { continue };
            if let Some(ep) = slice.endpoints.iter().find(|ep| ep.ready && ep.addresses.contains(&addr.ip())) {
                let endpoint = endpoint(store, config, svc, sport, slice, ep, addr);
                return DestinationView { exists: true, endpoints: BTreeMap::from([(addr, endpoint)]) };
            }
        }
    }
    DestinationView::default()
}

/// The protocol an endpoint speaks on its target port: the Service port's,
/// or opaque when its pod's `config.weft.io/opaque-ports` says so.
pub(crate) fn port_protocol(store: &Store, sport: &ServicePort, ep: &SliceEndpoint, target_port: u16) -> Protocol {
    let pod_opaque = ep.pod.as_ref().and_then(|k| store.pods.get(k)).is_some_and(|p| p.is_opaque(target_port));
    if pod_opaque {
        Protocol::Opaque
    } else {
        sport.protocol
    }
}

/// The protocol of the Service port an endpoint address (pod IP and target
/// port) backs, whether or not it is ready; `None` for an unknown address.
/// Several Service ports backed by one address that disagree: Detect.
pub(crate) fn endpoint_protocol(store: &Store, addr: SocketAddr) -> Option<Protocol> {
    let mut found: Option<Protocol> = None;
    for (key, slice) in &store.slices {
        let Some(svc) = store.services.get(&ObjectKey::new(&key.namespace, &slice.service)) else { continue };
        let Some(ep) = slice.endpoints.iter().find(|ep| ep.addresses.contains(&addr.ip())) else { continue };
        for slice_port in slice.ports.iter().filter(|p| p.port == addr.port()) {
            let Some(sport) = svc.ports.iter().find(|p| p.name == slice_port.name) else { continue };
            let protocol = port_protocol(store, sport, ep, addr.port());
            found = Some(match found {
                Some(p) if p != protocol => Protocol::Detect,
                _ => protocol,
            });
        }
    }
    found
}

pub(crate) fn service_port<'s>(store: &'s Store, key: &ObjectKey, port: u16) -> Option<(&'s Service, &'s ServicePort)> {
    let svc = store.services.get(key)?;
    let sport = svc.ports.iter().find(|p| p.port == port)?;
    Some((svc, sport))
}

/// The identity of the pod behind an endpoint, if the pod is known and meshed.
pub(crate) fn pod_identity(store: &Store, config: &Config, ep: &SliceEndpoint) -> Option<String> {
    let pod = store.pods.get(ep.pod.as_ref()?)?;
    let ns_inject = store.namespaces.get(&pod.key.namespace).and_then(|ns| ns.inject);
    // An injected proxy is meshed whatever the annotations say; otherwise the
    // pod's annotation wins over its namespace's.
    let meshed = pod.has_proxy || pod.inject.or(ns_inject) == Some(true);
    meshed.then(|| workload_identity(&config.trust_domain, &pod.key.namespace, &pod.service_account))
}

fn endpoint(
    store: &Store,
    config: &Config,
    svc: &Service,
    sport: &ServicePort,
    slice: &EndpointSlice,
    ep: &SliceEndpoint,
    addr: SocketAddr,
) -> Endpoint {
    let identity = pod_identity(store, config, ep);
    let hint = match (&identity, port_protocol(store, sport, ep, addr.port())) {
        (None, _) => ProtocolHint::Unknown,
        (Some(_), Protocol::Opaque) => ProtocolHint::Opaque,
        (Some(_), _) => ProtocolHint::H2,
    };
    let mut labels = BTreeMap::from([
        ("namespace".to_owned(), slice.key.namespace.clone()),
        ("service".to_owned(), svc.key.name.clone()),
    ]);
    if let Some(pod) = &ep.pod {
        labels.insert("pod".to_owned(), pod.name.clone());
        if let Some(p) = store.pods.get(pod) {
            let sa = if p.service_account.is_empty() { "default" } else { &p.service_account };
            labels.insert("serviceaccount".to_owned(), sa.to_owned());
        }
    }
    if let Some(node) = &ep.node {
        labels.insert("node".to_owned(), node.clone());
    }
    if let Some(zone) = &ep.zone {
        labels.insert("zone".to_owned(), zone.clone());
    }
    Endpoint { addr, weight: DEFAULT_WEIGHT, identity, hint, labels }
}
