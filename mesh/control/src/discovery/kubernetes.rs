//! Backend 2: the Kubernetes API through kube-rs watchers. One watcher per
//! kind (Namespaces, Services, EndpointSlices, Pods, HTTPRoutes, GRPCRoutes,
//! AuthorizationPolicies); this module only turns watch events into index
//! writes, with the same conversions as the manifests backend.
//!
//! A relist (`Init` .. `InitDone`, after a start or a broken watch) replaces
//! the kind atomically, so objects deleted while the watch was down go away.
//! An object that does not convert is logged and left out of the index (it
//! is not valid for the mesh, so nothing it said is kept).

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use mesh_index::model::{Change, Kind, ObjectKey, Resource};
use mesh_index::Index;
use serde::de::DeserializeOwned;

use super::convert::{self, ConvertError};
use crate::admin::Readiness;
use super::{authz, gateway};

/// Folds one kind's watcher events into the index.
pub struct KindSync<K> {
    kind: Kind,
    convert: fn(&K) -> Result<Resource, ConvertError>,
    /// Objects listed since `Init`, applied at `InitDone`.
    relist: Option<Vec<Resource>>,
    /// Told when the first list is in the index.
    readiness: Option<Readiness>,
}

impl<K: kube::Resource> KindSync<K> {
    pub fn new(kind: Kind, convert: fn(&K) -> Result<Resource, ConvertError>) -> Self {
        Self { kind, convert, relist: None, readiness: None }
    }

    /// Reports the first complete list to `readiness` (as [`first_list`]).
    pub fn reporting_to(mut self, readiness: &Readiness) -> Self {
        readiness.wait_for(first_list(self.kind));
        self.readiness = Some(readiness.clone());
        self
    }

    pub fn handle(&mut self, index: &Index, event: Event<K>) {
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(obj) => {
                if let Some(resource) = self.convert(&obj) {
                    self.relist.get_or_insert_with(Vec::new).push(resource);
                }
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let n = listed.len();
                let changed = index.replace_kind(self.kind, listed);
                tracing::info!(kind = self.kind.as_str(), objects = n, changed, "relisted");
                if let Some(readiness) = &self.readiness {
                    readiness.done(&first_list(self.kind));
                }
            }
            Event::Apply(obj) => {
                let change = match self.convert(&obj) {
                    Some(resource) => Change::Upsert(resource),
                    None => Change::Delete(self.kind, object_key(self.kind, obj.meta())),
                };
                index.apply([change]);
            }
            Event::Delete(obj) => {
                index.apply([Change::Delete(self.kind, object_key(self.kind, obj.meta()))]);
            }
        }
    }

    fn convert(&self, obj: &K) -> Option<Resource> {
        (self.convert)(obj).map_err(|e| tracing::warn!("{e} (left out of the index)")).ok()
    }
}

/// What readiness waits for until `kind` is listed once.
pub fn first_list(kind: Kind) -> String {
    format!("first list of {}", kind.as_str())
}

fn object_key(kind: Kind, meta: &ObjectMeta) -> ObjectKey {
    match kind {
        Kind::Namespace => ObjectKey::new("", meta.name.clone().unwrap_or_default()),
        _ => convert::key(meta),
    }
}

/// Starts following every kind (call inside the runtime); the returned
/// future stops them when `shutdown` completes (or when it is dropped).
/// Watch errors (API server unreachable, a CRD not installed) are logged
/// and retried with backoff. `readiness` waits for every kind's first list
/// from the moment this returns (a missing CRD, e.g. the Gateway API's,
/// keeps mesh-control unready, named in `/ready`).
pub fn run(
    client: Client,
    index: Index,
    readiness: &Readiness,
    shutdown: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(follow(
        Api::<core::Namespace>::all(client.clone()),
        index.clone(),
        KindSync::new(Kind::Namespace, convert::namespace).reporting_to(readiness),
    ));
    tasks.spawn(follow(
        Api::<core::Service>::all(client.clone()),
        index.clone(),
        KindSync::new(Kind::Service, convert::service).reporting_to(readiness),
    ));
    tasks.spawn(follow(
        Api::<discovery::EndpointSlice>::all(client.clone()),
        index.clone(),
        KindSync::new(Kind::EndpointSlice, convert::endpoint_slice).reporting_to(readiness),
    ));
    tasks.spawn(follow(Api::<core::Pod>::all(client.clone()), index.clone(), KindSync::new(Kind::Pod, convert::pod).reporting_to(readiness)));
    tasks.spawn(follow(
        Api::<gateway::HTTPRoute>::all(client.clone()),
        index.clone(),
        KindSync::new(Kind::HttpRoute, gateway::http_route).reporting_to(readiness),
    ));
    tasks.spawn(follow(
        Api::<gateway::GRPCRoute>::all(client.clone()),
        index.clone(),
        KindSync::new(Kind::GrpcRoute, gateway::grpc_route).reporting_to(readiness),
    ));
    tasks.spawn(follow(
        Api::<authz::AuthorizationPolicy>::all(client),
        index,
        KindSync::new(Kind::AuthorizationPolicy, authz::authorization_policy).reporting_to(readiness),
    ));
    async move {
        shutdown.await;
        tasks.abort_all();
    }
}

async fn follow<K>(api: Api<K>, index: Index, mut sync: KindSync<K>)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => sync.handle(&index, event),
            Err(e) => tracing::warn!(kind = sync.kind.as_str(), "watch: {e} (retrying)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use mesh_index::DiscoverDestination;

    fn svc(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("shop".into()), ..ObjectMeta::default() },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort { port: 80, ..ServicePort::default() }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn exists(index: &Index, authority: &str) -> bool {
        index.watch_destination(authority).unwrap().borrow().exists
    }

    #[test]
    fn apply_delete_and_relist_update_the_index() {
        let index = Index::new(mesh_index::Config::default());
        let mut sync = KindSync::new(Kind::Service, convert::service);
        sync.handle(&index, Event::Apply(svc("web", "10.96.0.1")));
        sync.handle(&index, Event::Apply(svc("api", "10.96.0.2")));
        assert!(exists(&index, "web.shop:80") && exists(&index, "10.96.0.2:80"));

        sync.handle(&index, Event::Delete(svc("web", "10.96.0.1")));
        assert!(!exists(&index, "web.shop:80"));

        // A restarted watch lists only `db`: `api` was deleted while the
        // watch was down and must go, but only once the relist is complete.
        sync.handle(&index, Event::Init);
        sync.handle(&index, Event::InitApply(svc("db", "10.96.0.3")));
        assert!(exists(&index, "api.shop:80"), "nothing changes before InitDone");
        assert!(!exists(&index, "db.shop:80"));
        sync.handle(&index, Event::InitDone);
        assert!(!exists(&index, "api.shop:80"));
        assert!(exists(&index, "db.shop:80"));
    }

    #[test]
    fn an_object_that_turns_invalid_leaves_the_index() {
        let index = Index::new(mesh_index::Config::default());
        let mut sync = KindSync::new(Kind::Service, convert::service);
        sync.handle(&index, Event::Apply(svc("web", "10.96.0.1")));
        assert!(exists(&index, "web.shop:80"));
        sync.handle(&index, Event::Apply(svc("web", "not-an-ip")));
        assert!(!exists(&index, "web.shop:80"));
    }

    #[test]
    fn route_and_policy_events_reach_the_index() {
        use mesh_index::DiscoverPolicy;
        let index = Index::new(mesh_index::Config::default());
        KindSync::new(Kind::Service, convert::service).handle(&index, Event::Apply(svc("web", "10.96.0.1")));
        let route: gateway::HTTPRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": "web"}],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
        }))
        .unwrap();
        let mut routes = KindSync::new(Kind::HttpRoute, gateway::http_route);
        routes.handle(&index, Event::Apply(route.clone()));
        assert_eq!(index.watch_outbound("web.shop:80", None).unwrap().borrow().http_routes.len(), 1);
        routes.handle(&index, Event::Delete(route));
        assert!(index.watch_outbound("web.shop:80", None).unwrap().borrow().http_routes.is_empty());

        let policy: authz::AuthorizationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.weft.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"targetRef": {"kind": "Namespace"}, "from": {"anyMeshed": true}}
        }))
        .unwrap();
        let mut policies = KindSync::new(Kind::AuthorizationPolicy, authz::authorization_policy);
        policies.handle(&index, Event::Init);
        policies.handle(&index, Event::InitApply(policy));
        policies.handle(&index, Event::InitDone);
        assert!(index.stats().objects.contains(&(Kind::AuthorizationPolicy, 1)));
    }
}
