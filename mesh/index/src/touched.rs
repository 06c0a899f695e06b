//! What one write changed, as far as views depend on it, found through the
//! store's reverse indexes (never by scanning the views): which Services'
//! endpoint sets and outbound policies, which workload identities'
//! inbound policies, and whether address lookups may have moved.

use std::collections::HashSet;

use crate::model::{Change, Kind, ObjectKey, Pod, Resource};
use crate::store::Store;
use crate::views::{spiffe_namespace, workload_identity, InboundPolicy, Workload};
use crate::watches::{Scope, Tag};

#[derive(Default)]
pub(crate) struct Touched {
    /// Services whose endpoint set may have changed: the Service, its
    /// slices, the pods they name, those pods' Namespaces.
    endpoint_services: HashSet<ObjectKey>,
    /// Services whose outbound policy may have changed: the Service, the
    /// routes attached to it (before and after), the Services its routes
    /// name as backends.
    outbound_services: HashSet<ObjectKey>,
    /// Workload identities (of pods, meshed or not) whose inbound policy
    /// may have changed: the pods a changed slice or Service names, a
    /// changed pod (before and after).
    identities: HashSet<String>,
    /// A Service, EndpointSlice, Pod or Namespace changed: address lookups
    /// (which scan every slice) and workloads known by IP depend on that.
    endpoints: bool,
    /// A route changed: outbound policies of addresses (ClusterIPs) too.
    routes: bool,
    /// Namespaces written: their workloads' default policy and meshing.
    namespaces: HashSet<String>,
    /// Namespaces whose AuthorizationPolicies changed.
    policy_namespaces: HashSet<String>,
}

impl Touched {
    /// What `change` would touch, read before it is applied to `store`
    /// (a deleted or replaced object's old links are only known then).
    pub fn of(store: &Store, change: &Change, trust_domain: &str) -> Self {
        let mut t = Self::default();
        let (kind, key) = match change {
            Change::Upsert(r) => (r.kind(), r.key()),
            Change::Delete(kind, key) => (*kind, key),
        };
        let new = match change {
            Change::Upsert(r) => Some(r),
            Change::Delete(..) => None,
        };
        let identity = |pod: &Pod| workload_identity(trust_domain, &pod.key.namespace, &pod.service_account);
        match kind {
            Kind::HttpRoute | Kind::GrpcRoute => {
                t.routes = true;
                let old = match kind {
                    Kind::HttpRoute => store.http_routes.get(key).map(|r| &r.parents),
                    _ => store.grpc_routes.get(key).map(|r| &r.parents),
                };
                let new = match new {
                    Some(Resource::HttpRoute(r)) => Some(&r.parents),
                    Some(Resource::GrpcRoute(r)) => Some(&r.parents),
                    _ => None,
                };
                t.outbound_services.extend(old.into_iter().chain(new).flatten().map(|p| p.service.clone()));
            }
            Kind::AuthorizationPolicy => {
                t.policy_namespaces.insert(key.namespace.clone());
            }
            Kind::Service => {
                t.endpoints = true;
                t.endpoint_services.insert(key.clone());
                t.outbound_services.insert(key.clone());
                // Routes naming it as a backend resolve it.
                let http = store.http_routes_by_backend.get(key).into_iter().flatten();
                let http = http.filter_map(|r| store.http_routes.get(r)).flat_map(|r| &r.parents);
                let grpc = store.grpc_routes_by_backend.get(key).into_iter().flatten();
                let grpc = grpc.filter_map(|r| store.grpc_routes.get(r)).flat_map(|r| &r.parents);
                t.outbound_services.extend(http.chain(grpc).map(|p| p.service.clone()));
                // Its slices' workloads start or stop backing it.
                let slices = store.slices_by_service.get(key).into_iter().flatten().filter_map(|k| store.slices.get(k));
                let pods = slices.flat_map(|s| &s.endpoints).filter_map(|ep| store.pods.get(ep.pod.as_ref()?));
                t.identities.extend(pods.map(identity));
            }
            Kind::EndpointSlice => {
                t.endpoints = true;
                let new = match new {
                    Some(Resource::EndpointSlice(s)) => Some(s),
                    _ => None,
                };
                for slice in store.slices.get(key).into_iter().chain(new) {
                    t.endpoint_services.insert(ObjectKey::new(&key.namespace, &slice.service));
                    let pods = slice.endpoints.iter().filter_map(|ep| store.pods.get(ep.pod.as_ref()?));
                    t.identities.extend(pods.map(identity));
                }
            }
            Kind::Pod => {
                t.endpoints = true;
                let slices = store.slices_by_pod.get(key).into_iter().flatten().filter_map(|k| store.slices.get(k));
                t.endpoint_services.extend(slices.map(|s| ObjectKey::new(&s.key.namespace, &s.service)));
                let new = match new {
                    Some(Resource::Pod(p)) => Some(p),
                    _ => None,
                };
                t.identities.extend(store.pods.get(key).into_iter().chain(new).map(identity));
            }
            Kind::Namespace => {
                t.endpoints = true;
                // Its pods' meshing: the endpoint sets that name them.
                let named = store.slices_by_pod.iter().filter(|(pod, _)| pod.namespace == key.name);
                let slices = named.flat_map(|(_, slices)| slices).filter_map(|k| store.slices.get(k));
                t.endpoint_services.extend(slices.map(|s| ObjectKey::new(&s.key.namespace, &s.service)));
                t.namespaces.insert(key.name.clone());
            }
        }
        t
    }

    pub fn merge(&mut self, other: Self) {
        self.endpoint_services.extend(other.endpoint_services);
        self.outbound_services.extend(other.outbound_services);
        self.identities.extend(other.identities);
        self.endpoints |= other.endpoints;
        self.routes |= other.routes;
        self.namespaces.extend(other.namespaces);
        self.policy_namespaces.extend(other.policy_namespaces);
    }

    /// Endpoint sets: of the Services touched, and of addresses when
    /// endpoints moved.
    pub fn destinations(&self) -> Scope {
        Scope { tags: self.endpoint_services.iter().cloned().map(Tag::Service).collect(), wide: self.endpoints, all: false }
    }

    /// Outbound policies: of the Services touched; of addresses (ClusterIPs
    /// or pod addresses) when endpoints or routes moved.
    pub fn outbound(&self) -> Scope {
        Scope {
            tags: self.outbound_services.iter().cloned().map(Tag::Service).collect(),
            wide: self.endpoints || self.routes,
            all: false,
        }
    }

    /// Inbound policies: of the identities touched, of workloads by IP when
    /// endpoints moved, and every one (checked by [`Touched::inbound`]) when
    /// a Namespace or an AuthorizationPolicy changed.
    pub fn inbound_scope(&self) -> Scope {
        Scope {
            tags: self.identities.iter().cloned().map(Tag::Identity).collect(),
            wide: self.endpoints,
            all: !self.namespaces.is_empty() || !self.policy_namespaces.is_empty(),
        }
    }

    /// Whether the inbound policy `current` of `workload` reads something
    /// that changed: its identity's pods, the policies of the namespaces of
    /// the Services it backs, its own namespace (default policy, meshing,
    /// policies); by IP, any endpoint change.
    pub fn inbound(&self, workload: &Workload, current: &InboundPolicy, trust_domain: &str) -> bool {
        let backed = || current.services.iter().filter_map(|a| a.split('.').nth(1));
        if backed().any(|ns| self.policy_namespaces.contains(ns)) {
            return true;
        }
        match workload {
            Workload::Ip(_) => self.endpoints,
            Workload::Identity(id) => {
                self.identities.contains(id)
                    || spiffe_namespace(id, trust_domain)
                        .is_some_and(|ns| self.namespaces.contains(ns) || self.policy_namespaces.contains(ns))
            }
        }
    }
}
