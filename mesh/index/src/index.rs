//! The index: one store behind a lock, and one watch channel per distinct
//! lookup, filed under what it reads (see `watches`). A write works out
//! what it changed from the store's reverse indexes (see `touched`),
//! recomputes only the lookups filed under that, and wakes those whose
//! value changed: its cost is the views it may change, whatever else is
//! watched. A lookup nobody watches any more (its streams closed) is
//! forgotten: by [`Index::prune_unwatched`], when a write visits it, or
//! when new lookups have doubled the map since the last pruning.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::model::{Change, Kind, Resource};
use crate::store::Store;
use crate::target::{AuthorityError, Target};
use crate::touched::Touched;
use crate::views::{DestinationView, InboundPolicy, OutboundPolicy, Workload};
use crate::watches::Watches;
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
        let mut applied = 0;
        for change in changes {
            let part = Touched::of(&shared.store, &change, &self.inner.config.trust_domain);
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
            let part = Touched::of(&shared.store, &change, &self.inner.config.trust_domain);
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
            watches: shared.destinations.len() + shared.outbound.len() + shared.inbound.len(),
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

    /// Recomputes the views `touched` may have changed, and only those
    /// (see [`Touched`] for what each kind of view reads).
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
        add(destinations.refresh(&touched.destinations(), |t, _| Some(destination::view(store, config, t))));
        add(outbound.refresh(&touched.outbound(), |(t, ns), _| Some(outbound::view(store, config, t, ns.as_deref()))));
        add(inbound.refresh(&touched.inbound_scope(), |(w, p), current| {
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
