//! The index: one store behind a lock, and one watch channel per distinct
//! lookup. A write recomputes only the watched views that read what it
//! changed (see `Index::refresh`) and wakes those whose value changed. A lookup nobody watches any more (its streams
//! closed) is forgotten: by [`Index::prune_unwatched`], at the next write,
//! or when new lookups have doubled the map since the last pruning.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::model::{Change, Kind, ObjectKey, Resource};
use crate::store::Store;
use crate::target::{AuthorityError, Target};
use crate::views::{spiffe_namespace, DestinationView, InboundPolicy, OutboundPolicy, Workload};
use crate::{destination, inbound, outbound, Config};

/// A lookup that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("workload: {0}")]
    Workload(String),
}

/// Endpoint sets by authority, as watches: the receiver holds the current
/// view and wakes when it changes.
pub trait DiscoverDestination: Clone + Send + Sync + 'static {
    fn watch_destination(&self, authority: &str) -> Result<watch::Receiver<Arc<DestinationView>>, LookupError>;
}

/// Outbound and inbound policy, as watches.
pub trait DiscoverPolicy: Clone + Send + Sync + 'static {
    /// `client_namespace` selects consumer routes (GAMMA) declared in it.
    fn watch_outbound(
        &self,
        authority: &str,
        client_namespace: Option<&str>,
    ) -> Result<watch::Receiver<Arc<OutboundPolicy>>, LookupError>;
    /// `port` 0 means every port of the workload.
    fn watch_inbound(&self, workload: Workload, port: u16) -> Result<watch::Receiver<Arc<InboundPolicy>>, LookupError>;
}

/// Counters and sizes, for metrics and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Objects held, per kind.
    pub objects: Vec<(Kind, usize)>,
    /// Writes that changed something.
    pub changes_applied: u64,
    /// Distinct watched lookups (many streams may share one).
    pub watches: usize,
    /// Views recomputed and found changed (watchers woken).
    pub views_updated: u64,
    /// Views recomputed after writes (changed or not): only those a write
    /// may affect are.
    pub views_computed: u64,
    /// Endpoint addresses over every EndpointSlice.
    pub endpoints: usize,
}

/// The discovery index. Cheap to clone; every clone is the same index.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    store: Store,
    destinations: Watches<Target, DestinationView>,
    outbound: Watches<(Target, Option<String>), OutboundPolicy>,
    inbound: Watches<(Workload, u16), InboundPolicy>,
    changes_applied: u64,
    views_updated: u64,
    views_computed: u64,
    /// The last write that changed a watched view (woke watchers).
    last_update: Option<Instant>,
}

struct Watches<K, V> {
    by_key: HashMap<K, watch::Sender<Arc<V>>>,
    /// Lookups left after the last pruning: new lookups prune again once
    /// they have doubled it, so closed streams cannot pile up between writes.
    live: usize,
}

impl<K, V> Default for Watches<K, V> {
    fn default() -> Self {
        Self { by_key: HashMap::new(), live: 0 }
    }
}

/// Below this many lookups a map is not pruned on insert.
const PRUNE_FLOOR: usize = 64;

impl<K: Eq + Hash + Clone, V: PartialEq> Watches<K, V> {
    fn watch(&mut self, key: K, compute: impl FnOnce() -> V) -> watch::Receiver<Arc<V>> {
        // A lookup still here is current: every write refreshes or drops it.
        if let Some(tx) = self.by_key.get(&key) {
            return tx.subscribe();
        }
        if self.by_key.len() >= (2 * self.live).max(PRUNE_FLOOR) {
            self.prune();
        }
        let (tx, rx) = watch::channel(Arc::new(compute()));
        self.by_key.insert(key, tx);
        rx
    }

    /// Forgets lookups nobody watches; returns how many.
    fn prune(&mut self) -> usize {
        let before = self.by_key.len();
        self.by_key.retain(|_, tx| tx.receiver_count() > 0);
        self.live = self.by_key.len();
        before - self.live
    }

    /// Recomputes the watched views the write may have changed (`compute`,
    /// given a key and its current view, returns `None` for the others);
    /// forgets lookups nobody watches any more. Returns (views recomputed,
    /// views changed).
    fn refresh(&mut self, mut compute: impl FnMut(&K, &V) -> Option<V>) -> (u64, u64) {
        let (mut computed, mut updated) = (0, 0);
        self.by_key.retain(|key, tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            // A clone: the watch's lock is not held while computing.
            let current = Arc::clone(&tx.borrow());
            let Some(new) = compute(key, &current) else { return true };
            computed += 1;
            tx.send_if_modified(|cur| {
                let changed = **cur != new;
                if changed {
                    *cur = Arc::new(new);
                    updated += 1;
                }
                changed
            });
            true
        });
        self.live = self.by_key.len();
        (computed, updated)
    }
}

/// What one write changed, as far as views depend on it: each view is
/// recomputed only when something it reads is here (see `Index::refresh`).
#[derive(Default)]
struct Touched {
    /// Namespaces of changed Services, EndpointSlices, Pods, and changed
    /// Namespaces: what endpoint sets and workloads read by namespace.
    namespaces: HashSet<String>,
    /// A Pod or a Namespace changed (a Service's endpoints may name pods of
    /// another namespace).
    pods_or_namespaces: bool,
    /// A Service, EndpointSlice, Pod or Namespace changed: address lookups
    /// (which scan every slice) and workloads known by IP depend on that.
    endpoints: bool,
    /// Changed Services: outbound policies read their own Service and
    /// their backends'.
    services: HashSet<ObjectKey>,
    /// Services whose attached routes changed (a route's parents before
    /// and after the write).
    route_parents: HashSet<ObjectKey>,
    /// Namespaces whose AuthorizationPolicies changed.
    policy_namespaces: HashSet<String>,
    /// Namespaces of the pods that changed slices name (before and after):
    /// a workload of one may start or stop backing the slice's Service.
    slice_pod_namespaces: HashSet<String>,
}

impl Touched {
    /// What `change` would touch, read before it is applied to `store`
    /// (a deleted or replaced route's old parents are only known then).
    fn of(store: &Store, change: &Change) -> Self {
        let mut t = Self::default();
        let (kind, key) = match change {
            Change::Upsert(r) => (r.kind(), r.key()),
            Change::Delete(kind, key) => (*kind, key),
        };
        let new = match change {
            Change::Upsert(r) => Some(r),
            Change::Delete(..) => None,
        };
        match kind {
            Kind::HttpRoute | Kind::GrpcRoute => {
                let old = match kind {
                    Kind::HttpRoute => store.http_routes.get(key).map(|r| &r.parents),
                    _ => store.grpc_routes.get(key).map(|r| &r.parents),
                };
                let new = match new {
                    Some(Resource::HttpRoute(r)) => Some(&r.parents),
                    Some(Resource::GrpcRoute(r)) => Some(&r.parents),
                    _ => None,
                };
                t.route_parents.extend(old.into_iter().chain(new).flatten().map(|p| p.service.clone()));
            }
            Kind::AuthorizationPolicy => {
                t.policy_namespaces.insert(key.namespace.clone());
            }
            Kind::Namespace | Kind::Service | Kind::EndpointSlice | Kind::Pod => {
                t.endpoints = true;
                t.pods_or_namespaces = matches!(kind, Kind::Pod | Kind::Namespace);
                t.namespaces.insert(if kind == Kind::Namespace { key.name.clone() } else { key.namespace.clone() });
                if kind == Kind::Service {
                    t.services.insert(key.clone());
                    // Its slices' workloads start or stop backing it.
                    let slices = store.slices_by_service.get(key).into_iter().flatten().filter_map(|k| store.slices.get(k));
                    let pods = slices.flat_map(|s| &s.endpoints).filter_map(|ep| ep.pod.as_ref());
                    t.slice_pod_namespaces.extend(pods.map(|p| p.namespace.clone()));
                }
                if kind == Kind::EndpointSlice {
                    let new = match new {
                        Some(Resource::EndpointSlice(s)) => Some(s),
                        _ => None,
                    };
                    let pods = store.slices.get(key).into_iter().chain(new).flat_map(|s| &s.endpoints);
                    t.slice_pod_namespaces.extend(pods.filter_map(|ep| ep.pod.as_ref()).map(|p| p.namespace.clone()));
                }
            }
        }
        t
    }

    fn merge(&mut self, other: Self) {
        self.namespaces.extend(other.namespaces);
        self.pods_or_namespaces |= other.pods_or_namespaces;
        self.endpoints |= other.endpoints;
        self.services.extend(other.services);
        self.route_parents.extend(other.route_parents);
        self.policy_namespaces.extend(other.policy_namespaces);
        self.slice_pod_namespaces.extend(other.slice_pod_namespaces);
    }

    fn namespace(&self, ns: &str) -> bool {
        self.namespaces.contains(ns)
    }

    /// Whether the outbound policy `current` of Service `service` reads
    /// something that changed: the Service, its routes, or a backend.
    fn outbound_service(&self, service: &ObjectKey, current: &OutboundPolicy) -> bool {
        if self.services.contains(service) || self.route_parents.contains(service) {
            return true;
        }
        if self.services.is_empty() {
            return false;
        }
        let backends = current
            .http_routes
            .iter()
            .flat_map(|r| r.rules.iter().flat_map(|rule| &rule.backends))
            .chain(current.grpc_routes.iter().flat_map(|r| r.rules.iter().flat_map(|rule| &rule.backends)));
        backends.into_iter().any(|b| {
            self.services.iter().any(|s| s.name == b.backend.name && s.namespace == b.backend.namespace)
        })
    }

    /// Whether the inbound policy `current` of `workload` reads something
    /// that changed: objects of its own namespace, of the namespaces of
    /// the Services it backs (their slices, policies), or a slice naming
    /// pods of its namespace; by IP, any endpoint change.
    fn inbound(&self, workload: &Workload, current: &InboundPolicy, trust_domain: &str) -> bool {
        let backed = || current.services.iter().filter_map(|a| a.split('.').nth(1));
        if backed().any(|ns| self.namespace(ns) || self.policy_namespaces.contains(ns)) {
            return true;
        }
        match workload {
            Workload::Ip(_) => self.endpoints,
            Workload::Identity(id) => match spiffe_namespace(id, trust_domain) {
                Some(ns) => self.namespace(ns) || self.policy_namespaces.contains(ns) || self.slice_pod_namespaces.contains(ns),
                // Not of this trust domain: no pod is it, nothing it backs
                // changes but by the namespaces above.
                None => false,
            },
        }
    }
}

impl Index {
    pub fn new(config: Config) -> Self {
        Self { inner: Arc::new(Inner { config, shared: Mutex::new(Shared::default()) }) }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Applies `changes` atomically: watchers see all of them or none.
    /// Returns how many changed something.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> usize {
        let mut shared = self.lock();
        let mut touched = Touched::default();
        let applied = changes
            .into_iter()
            .filter(|c| {
                let part = Touched::of(&shared.store, c);
                let changed = shared.store.apply(c.clone());
                if changed {
                    touched.merge(part);
                }
                changed
            })
            .count();
        if applied > 0 {
            shared.changes_applied += applied as u64;
            self.refresh(&mut shared, &touched);
        }
        applied
    }

    /// Replaces every object of `kind` with `objects` (a watcher's relist):
    /// objects not listed are deleted, in the same atomic step.
    pub fn replace_kind(&self, kind: Kind, objects: Vec<Resource>) -> usize {
        let mut shared = self.lock();
        let listed: std::collections::HashSet<_> = objects.iter().map(|o| o.key().clone()).collect();
        let deletes: Vec<Change> = shared
            .store
            .keys(kind)
            .into_iter()
            .filter(|k| !listed.contains(k))
            .map(|k| Change::Delete(kind, k))
            .collect();
        let mut applied = 0;
        let mut touched = Touched::default();
        for change in deletes.into_iter().chain(objects.into_iter().filter(|o| o.kind() == kind).map(Change::Upsert)) {
            let part = Touched::of(&shared.store, &change);
            if shared.store.apply(change) {
                touched.merge(part);
                applied += 1;
            }
        }
        if applied > 0 {
            shared.changes_applied += applied as u64;
            self.refresh(&mut shared, &touched);
        }
        applied
    }

    /// Forgets every lookup nobody watches any more (all its streams
    /// closed); returns how many went.
    pub fn prune_unwatched(&self) -> usize {
        let mut shared = self.lock();
        shared.destinations.prune() + shared.outbound.prune() + shared.inbound.prune()
    }

    /// A Namespace's `weft.io/inject` (`Some(true)` enabled, `Some(false)`
    /// disabled); `None` when it says nothing or is not known (yet). The
    /// injector's webhook asks this for pods that do not say themselves.
    pub fn namespace_inject(&self, namespace: &str) -> Option<bool> {
        self.lock().store.namespaces.get(namespace).and_then(|ns| ns.inject)
    }

    pub fn stats(&self) -> Stats {
        let shared = self.lock();
        Stats {
            objects: Kind::ALL.iter().map(|k| (*k, shared.store.len(*k))).collect(),
            changes_applied: shared.changes_applied,
            watches: shared.destinations.by_key.len() + shared.outbound.by_key.len() + shared.inbound.by_key.len(),
            views_updated: shared.views_updated,
            views_computed: shared.views_computed,
            endpoints: shared.store.slices.values().map(|s| s.endpoints.len()).sum(),
        }
    }

    /// When the last write that changed a watched view was applied (None
    /// before any): streams measure propagation from it to their message.
    pub fn last_update(&self) -> Option<Instant> {
        self.lock().last_update
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock left a store that every write keeps
        // consistent per change; serving it beats taking discovery down.
        self.inner.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Recomputes the views `touched` may have changed, and only those:
    /// a write costs the views that read what it changed.
    /// - Endpoint sets of a Service: objects of its namespace (the Service,
    ///   its slices, their pods, the Namespace), or pods elsewhere when its
    ///   endpoints name some. Address lookups: any Service, slice, Pod or
    ///   Namespace. A name outside the cluster never resolves.
    /// - Outbound policy of a Service: the Service, the routes attached to
    ///   it (before and after the write), the Services its routes' backends
    ///   name. Of an address: as address lookups, and routes.
    /// - Inbound policy: see [`Touched::inbound`].
    fn refresh(&self, shared: &mut Shared, touched: &Touched) {
        let config = &self.inner.config;
        let Shared { store, destinations, outbound, inbound, views_updated, views_computed, last_update, .. } = shared;
        let mut add = |(computed, updated): (u64, u64)| {
            *views_computed += computed;
            *views_updated += updated;
            if updated > 0 {
                *last_update = Some(Instant::now());
            }
        };
        add(destinations.refresh(|t, _| match t {
            Target::External { .. } => None,
            Target::Service { service, .. }
                if !touched.namespace(&service.namespace)
                    && !(touched.pods_or_namespaces && destination::names_pods_elsewhere(store, service)) =>
            {
                None
            }
            Target::Addr(_) if !touched.endpoints => None,
            _ => Some(destination::view(store, config, t)),
        }));
        add(outbound.refresh(|(t, ns), current| match t {
            Target::External { .. } => None,
            Target::Service { service, .. } if !touched.outbound_service(service, current) => None,
            Target::Addr(_) if !touched.endpoints && touched.route_parents.is_empty() => None,
            _ => Some(outbound::view(store, config, t, ns.as_deref())),
        }));
        add(inbound.refresh(|(w, p), current| {
            touched.inbound(w, current, &config.trust_domain).then(|| inbound::view(store, config, w, *p))
        }));
    }

    fn parse(&self, authority: &str) -> Result<Target, LookupError> {
        Ok(Target::parse(authority, &self.inner.config.cluster_domain)?)
    }
}

impl DiscoverDestination for Index {
    fn watch_destination(&self, authority: &str) -> Result<watch::Receiver<Arc<DestinationView>>, LookupError> {
        let target = self.parse(authority)?;
        let mut shared = self.lock();
        let Shared { store, destinations, .. } = &mut *shared;
        let config = &self.inner.config;
        Ok(destinations.watch(target.clone(), || destination::view(store, config, &target)))
    }
}

impl DiscoverPolicy for Index {
    fn watch_outbound(
        &self,
        authority: &str,
        client_namespace: Option<&str>,
    ) -> Result<watch::Receiver<Arc<OutboundPolicy>>, LookupError> {
        let target = self.parse(authority)?;
        let mut shared = self.lock();
        let Shared { store, outbound, .. } = &mut *shared;
        let config = &self.inner.config;
        let key = (target, client_namespace.filter(|ns| !ns.is_empty()).map(str::to_owned));
        Ok(outbound.watch(key.clone(), || outbound::view(store, config, &key.0, key.1.as_deref())))
    }

    fn watch_inbound(&self, workload: Workload, port: u16) -> Result<watch::Receiver<Arc<InboundPolicy>>, LookupError> {
        if let Workload::Identity(id) = &workload {
            if !id.starts_with("spiffe://") {
                return Err(LookupError::Workload(format!("identity {id:?} is not a SPIFFE ID (spiffe://...)")));
            }
        }
        let mut shared = self.lock();
        let Shared { store, inbound, .. } = &mut *shared;
        let config = &self.inner.config;
        let key = (workload, port);
        Ok(inbound.watch(key.clone(), || inbound::view(store, config, &key.0, key.1)))
    }
}
