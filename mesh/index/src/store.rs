//! The objects the index holds, with the secondary indexes lookups need.
//! Mutated only through [`Store::apply`]; views are computed from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::model::{
    AuthorizationPolicy, Change, EndpointSlice, GrpcRoute, HttpRoute, Kind, Namespace, ObjectKey, Pod,
    Resource, Service,
};

#[derive(Debug, Default)]
pub(crate) struct Store {
    pub namespaces: HashMap<String, Namespace>,
    pub services: HashMap<ObjectKey, Service>,
    /// ClusterIP -> Service.
    pub cluster_ips: HashMap<IpAddr, ObjectKey>,
    pub slices: HashMap<ObjectKey, EndpointSlice>,
    /// Service -> its EndpointSlices.
    pub slices_by_service: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Pod -> the EndpointSlices naming it (its changes reach their Services).
    pub slices_by_pod: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    pub pods: HashMap<ObjectKey, Pod>,
    /// (namespace, service account) -> its pods: an identity's inbound
    /// policy reads only the slices naming them.
    pub pods_by_account: HashMap<(String, String), BTreeSet<ObjectKey>>,
    pub http_routes: HashMap<ObjectKey, HttpRoute>,
    pub grpc_routes: HashMap<ObjectKey, GrpcRoute>,
    /// Parent Service -> routes attached to it.
    pub http_routes_by_parent: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    pub grpc_routes_by_parent: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Backend Service -> routes naming it (its changes reach their parents).
    pub http_routes_by_backend: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    pub grpc_routes_by_backend: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Sorted so authorizations come out in a stable order.
    pub authorization_policies: BTreeMap<ObjectKey, AuthorizationPolicy>,
}

impl Store {
    /// Applies one change; returns whether anything changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Upsert(resource) => self.upsert(resource),
            Change::Delete(kind, key) => self.delete(kind, &key),
        }
    }

    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Namespace => self.namespaces.len(),
            Kind::Service => self.services.len(),
            Kind::EndpointSlice => self.slices.len(),
            Kind::Pod => self.pods.len(),
            Kind::HttpRoute => self.http_routes.len(),
            Kind::GrpcRoute => self.grpc_routes.len(),
            Kind::AuthorizationPolicy => self.authorization_policies.len(),
        }
    }

    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        match kind {
            Kind::Namespace => self.namespaces.keys().map(|n| ObjectKey::new("", n.clone())).collect(),
            Kind::Service => self.services.keys().cloned().collect(),
            Kind::EndpointSlice => self.slices.keys().cloned().collect(),
            Kind::Pod => self.pods.keys().cloned().collect(),
            Kind::HttpRoute => self.http_routes.keys().cloned().collect(),
            Kind::GrpcRoute => self.grpc_routes.keys().cloned().collect(),
            Kind::AuthorizationPolicy => self.authorization_policies.keys().cloned().collect(),
        }
    }

    fn upsert(&mut self, resource: Resource) -> bool {
        let kind = resource.kind();
        let key = resource.key().clone();
        if self.holds(&resource) {
            return false;
        }
        self.delete(kind, &key);
        match resource {
            Resource::Namespace(ns) => {
                self.namespaces.insert(ns.key.name.clone(), ns);
            }
            Resource::Service(svc) => {
                for ip in &svc.cluster_ips {
                    self.cluster_ips.insert(*ip, key.clone());
                }
                self.services.insert(key, svc);
            }
            Resource::EndpointSlice(slice) => {
                self.slices_by_service
                    .entry(ObjectKey::new(&key.namespace, &slice.service))
                    .or_default()
                    .insert(key.clone());
                for pod in slice.endpoints.iter().filter_map(|ep| ep.pod.as_ref()) {
                    self.slices_by_pod.entry(pod.clone()).or_default().insert(key.clone());
                }
                self.slices.insert(key, slice);
            }
            Resource::Pod(pod) => {
                self.pods_by_account.entry(account(&pod)).or_default().insert(key.clone());
                self.pods.insert(key, pod);
            }
            Resource::HttpRoute(route) => {
                link(&mut self.http_routes_by_parent, route.parents.iter().map(|p| &p.service), &key);
                link(&mut self.http_routes_by_backend, http_backends(&route), &key);
                self.http_routes.insert(key, route);
            }
            Resource::GrpcRoute(route) => {
                link(&mut self.grpc_routes_by_parent, route.parents.iter().map(|p| &p.service), &key);
                link(&mut self.grpc_routes_by_backend, grpc_backends(&route), &key);
                self.grpc_routes.insert(key, route);
            }
            Resource::AuthorizationPolicy(policy) => {
                self.authorization_policies.insert(key, policy);
            }
        }
        true
    }

    /// Whether the store holds exactly `resource` (compared in place: no clone).
    fn holds(&self, resource: &Resource) -> bool {
        let key = resource.key();
        match resource {
            Resource::Namespace(o) => self.namespaces.get(&key.name) == Some(o),
            Resource::Service(o) => self.services.get(key) == Some(o),
            Resource::EndpointSlice(o) => self.slices.get(key) == Some(o),
            Resource::Pod(o) => self.pods.get(key) == Some(o),
            Resource::HttpRoute(o) => self.http_routes.get(key) == Some(o),
            Resource::GrpcRoute(o) => self.grpc_routes.get(key) == Some(o),
            Resource::AuthorizationPolicy(o) => self.authorization_policies.get(key) == Some(o),
        }
    }

    fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
            Kind::Service => match self.services.remove(key) {
                Some(svc) => {
                    for ip in &svc.cluster_ips {
                        // Another Service may have taken the IP over meanwhile.
                        if self.cluster_ips.get(ip) == Some(key) {
                            self.cluster_ips.remove(ip);
                        }
                    }
                    true
                }
                None => false,
            },
            Kind::EndpointSlice => match self.slices.remove(key) {
                Some(slice) => {
                    unlink_one(&mut self.slices_by_service, &ObjectKey::new(&key.namespace, &slice.service), key);
                    unlink(&mut self.slices_by_pod, slice.endpoints.iter().filter_map(|ep| ep.pod.as_ref()), key);
                    true
                }
                None => false,
            },
            Kind::Pod => match self.pods.remove(key) {
                Some(pod) => {
                    let account = account(&pod);
                    if let Some(pods) = self.pods_by_account.get_mut(&account) {
                        pods.remove(key);
                        if pods.is_empty() {
                            self.pods_by_account.remove(&account);
                        }
                    }
                    true
                }
                None => false,
            },
            Kind::HttpRoute => match self.http_routes.remove(key) {
                Some(route) => {
                    unlink(&mut self.http_routes_by_parent, route.parents.iter().map(|p| &p.service), key);
                    unlink(&mut self.http_routes_by_backend, http_backends(&route), key);
                    true
                }
                None => false,
            },
            Kind::GrpcRoute => match self.grpc_routes.remove(key) {
                Some(route) => {
                    unlink(&mut self.grpc_routes_by_parent, route.parents.iter().map(|p| &p.service), key);
                    unlink(&mut self.grpc_routes_by_backend, grpc_backends(&route), key);
                    true
                }
                None => false,
            },
            Kind::AuthorizationPolicy => self.authorization_policies.remove(key).is_some(),
        }
    }
}

/// A pod's (namespace, service account), `default` when unset (as its identity).
pub(crate) fn account(pod: &Pod) -> (String, String) {
    let sa = if pod.service_account.is_empty() { "default" } else { &pod.service_account };
    (pod.key.namespace.clone(), sa.to_owned())
}

fn http_backends(route: &HttpRoute) -> impl Iterator<Item = &ObjectKey> {
    route.rules.iter().flat_map(|r| &r.backends).map(|b| &b.service)
}

fn grpc_backends(route: &GrpcRoute) -> impl Iterator<Item = &ObjectKey> {
    route.rules.iter().flat_map(|r| &r.backends).map(|b| &b.service)
}

fn link<'a>(map: &mut HashMap<ObjectKey, BTreeSet<ObjectKey>>, parents: impl Iterator<Item = &'a ObjectKey>, child: &ObjectKey) {
    for parent in parents {
        map.entry(parent.clone()).or_default().insert(child.clone());
    }
}

fn unlink<'a>(map: &mut HashMap<ObjectKey, BTreeSet<ObjectKey>>, parents: impl Iterator<Item = &'a ObjectKey>, child: &ObjectKey) {
    for parent in parents {
        unlink_one(map, parent, child);
    }
}

fn unlink_one(map: &mut HashMap<ObjectKey, BTreeSet<ObjectKey>>, parent: &ObjectKey, child: &ObjectKey) {
    if let Some(children) = map.get_mut(parent) {
        children.remove(child);
        if children.is_empty() {
            map.remove(parent);
        }
    }
}
