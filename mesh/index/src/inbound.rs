//! Inbound policy of a workload port: which Service ports it backs, which
//! AuthorizationPolicies target them, and the default when none does.

use std::collections::{BTreeMap, BTreeSet};

use crate::destination::{pod_identity, port_protocol};
use crate::model::{Clients, DefaultPolicy, EndpointSlice, Kind, ObjectKey, PolicyTarget, PortRef, Protocol};
use crate::store::Store;
use crate::target::canonical_authority;
use crate::views::{spiffe_namespace, Authorization, InboundPolicy, Meta, Workload};
use crate::Config;

pub(crate) fn view(store: &Store, config: &Config, workload: &Workload, port: u16) -> InboundPolicy {
    // (Service, port number, port name, protocol) this workload port backs.
    let mut backed: BTreeMap<(ObjectKey, u16), (String, Protocol)> = BTreeMap::new();
    let mut workload_ns: Option<String> = match workload {
        Workload::Identity(id) => spiffe_namespace(id, &config.trust_domain).map(str::to_owned),
        Workload::Ip(_) => None,
    };
    // By identity: only the slices naming pods of its service account
    // (a pod's identity is its namespace and service account); by IP, all.
    let candidates: Box<dyn Iterator<Item = (&ObjectKey, &EndpointSlice)>> = match workload {
        Workload::Identity(id) => {
            let account = spiffe_account(id, &config.trust_domain);
            let pods = account.and_then(|a| store.pods_by_account.get(&a)).into_iter().flatten();
            let keys: BTreeSet<&ObjectKey> = pods.filter_map(|p| store.slices_by_pod.get(p)).flatten().collect();
            Box::new(keys.into_iter().filter_map(|k| Some((k, store.slices.get(k)?))))
        }
        Workload::Ip(_) => Box::new(store.slices.iter()),
    };
    for (key, slice) in candidates {
        let svc_key = ObjectKey::new(&key.namespace, &slice.service);
        let Some(svc) = store.services.get(&svc_key) else { continue };
        for slice_port in slice.ports.iter().filter(|p| port == 0 || p.port == port) {
            let Some(sport) = svc.ports.iter().find(|p| p.name == slice_port.name) else { continue };
            // Readiness does not matter: an unready pod still gets traffic
            // from probes and stragglers, and must enforce the same policy.
            let ours = slice.endpoints.iter().find(|ep| match workload {
                Workload::Ip(ip) => ep.addresses.contains(ip),
                Workload::Identity(id) => pod_identity(store, config, ep).as_deref() == Some(id.as_str()),
            });
            if let Some(ep) = ours {
                let protocol = port_protocol(store, sport, ep, slice_port.port);
                backed.insert((svc_key.clone(), sport.port), (sport.name.clone(), protocol));
            }
        }
    }
    if workload_ns.is_none() {
        if let Workload::Ip(ip) = workload {
            let mut pods: Vec<&ObjectKey> =
                store.pods.iter().filter(|(_, p)| p.ips.contains(ip)).map(|(k, _)| k).collect();
            pods.sort();
            workload_ns = pods.first().map(|k| k.namespace.clone());
        }
    }
    if workload_ns.is_none() {
        workload_ns = backed.keys().next().map(|(k, _)| k.namespace.clone());
    }
    let default_policy = workload_ns
        .as_ref()
        .and_then(|ns| store.namespaces.get(ns))
        .and_then(|ns| ns.default_inbound_policy)
        .unwrap_or(config.default_inbound_policy);

    let mut explicit: BTreeMap<ObjectKey, Authorization> = BTreeMap::new();
    for ((svc_key, number), (name, _)) in &backed {
        for (key, policy) in store.authorization_policies.range(ObjectKey::new(&svc_key.namespace, "")..) {
            if key.namespace != svc_key.namespace {
                break;
            }
            let targets_service = match &policy.target {
                PolicyTarget::Service(s) => *s == svc_key.name,
                PolicyTarget::Namespace => true,
            };
            let targets_port = policy.ports.is_empty()
                || policy.ports.iter().any(|p| match p {
                    PortRef::Number(n) => n == number,
                    PortRef::Name(n) => !n.is_empty() && n == name,
                });
            if targets_service && targets_port {
                explicit.entry(key.clone()).or_insert_with(|| Authorization {
                    meta: Meta { kind: Some(Kind::AuthorizationPolicy), key: key.clone() },
                    clients: policy.clients.clone(),
                });
            }
        }
    }
    let is_explicit = !explicit.is_empty();
    let authorizations = if is_explicit {
        explicit.into_values().collect()
    } else {
        default_authorizations(default_policy, workload_ns.as_deref().unwrap_or(""))
    };
    let mut protocols: BTreeSet<Protocol> = backed.values().map(|(_, p)| *p).collect();
    let protocol = match (protocols.len(), protocols.pop_first()) {
        (1, Some(p)) => p,
        _ => Protocol::Detect,
    };
    InboundPolicy {
        default_policy,
        explicit: is_explicit,
        authorizations,
        protocol,
        services: backed.keys().map(|(k, p)| canonical_authority(k, *p, &config.cluster_domain)).collect(),
    }
}

/// `spiffe://<td>/ns/<ns>/sa/<sa>` -> (ns, sa).
fn spiffe_account(id: &str, trust_domain: &str) -> Option<(String, String)> {
    let ns = spiffe_namespace(id, trust_domain)?;
    let sa = id.rsplit_once("/sa/")?.1;
    Some((ns.to_owned(), sa.to_owned()))
}

fn default_authorizations(default: DefaultPolicy, namespace: &str) -> Vec<Authorization> {
    let meta = Meta { kind: None, key: ObjectKey::new(namespace, default.to_string()) };
    match default {
        DefaultPolicy::AllUnauthenticated => vec![Authorization {
            meta,
            clients: Clients { any_meshed: true, unauthenticated: true, ..Clients::default() },
        }],
        DefaultPolicy::AllAuthenticated => {
            vec![Authorization { meta, clients: Clients { any_meshed: true, ..Clients::default() } }]
        }
        DefaultPolicy::Deny => Vec::new(),
    }
}
