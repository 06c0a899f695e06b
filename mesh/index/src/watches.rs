//! One watch channel per distinct lookup, filed under what the lookup
//! reads first (a Service, a workload identity), so that a write visits
//! the lookups filed under what it changed and no others: its cost is the
//! views it may change, not the views watched.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::watch;

use crate::model::ObjectKey;
use crate::target::Target;
use crate::views::Workload;

/// What a lookup is filed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    /// A Service's endpoint set or outbound policy.
    Service(ObjectKey),
    /// The inbound policy of a workload identity.
    Identity(String),
}

/// How a write finds a lookup.
pub(crate) enum Reads {
    /// Through its tag.
    Tag(Tag),
    /// An address: resolved by scanning what the index holds, so any write
    /// of the kinds it reads may change it.
    Wide,
    /// Never changes (a name outside the cluster).
    Nothing,
}

/// A lookup key of one of the watch maps.
pub(crate) trait Lookup: Eq + Hash + Clone {
    fn reads(&self) -> Reads;
}

fn target_reads(target: &Target) -> Reads {
    match target {
        Target::Service { service, .. } => Reads::Tag(Tag::Service(service.clone())),
        Target::Addr(_) => Reads::Wide,
        Target::External { .. } => Reads::Nothing,
    }
}

impl Lookup for Target {
    fn reads(&self) -> Reads {
        target_reads(self)
    }
}

impl Lookup for (Target, Option<String>) {
    fn reads(&self) -> Reads {
        target_reads(&self.0)
    }
}

impl Lookup for (Workload, u16) {
    fn reads(&self) -> Reads {
        match &self.0 {
            Workload::Identity(id) => Reads::Tag(Tag::Identity(id.clone())),
            Workload::Ip(_) => Reads::Wide,
        }
    }
}

/// Which lookups of one map a write visits.
pub(crate) struct Scope {
    pub tags: Vec<Tag>,
    /// Also every address lookup.
    pub wide: bool,
    /// Every lookup (writes rare enough not to be worth filing: Namespaces,
    /// AuthorizationPolicies); `compute` still decides which to recompute.
    pub all: bool,
}

pub(crate) struct Watches<K, V> {
    pub by_key: HashMap<K, watch::Sender<Arc<V>>>,
    by_tag: HashMap<Tag, HashSet<K>>,
    wide: HashSet<K>,
    /// Lookups left after the last pruning: new lookups prune again once
    /// they have doubled it, so closed streams cannot pile up between writes.
    live: usize,
}

impl<K, V> Default for Watches<K, V> {
    fn default() -> Self {
        Self { by_key: HashMap::new(), by_tag: HashMap::new(), wide: HashSet::new(), live: 0 }
    }
}

/// Below this many lookups a map is not pruned on insert.
const PRUNE_FLOOR: usize = 64;

impl<K: Lookup, V: PartialEq> Watches<K, V> {
    pub fn watch(&mut self, key: K, compute: impl FnOnce() -> V) -> watch::Receiver<Arc<V>> {
        // A lookup still here is current: every write that may change it refreshes it.
        if let Some(tx) = self.by_key.get(&key) {
            return tx.subscribe();
        }
        if self.by_key.len() >= (2 * self.live).max(PRUNE_FLOOR) {
            self.prune();
        }
        let (tx, rx) = watch::channel(Arc::new(compute()));
        match key.reads() {
            Reads::Tag(tag) => {
                self.by_tag.entry(tag).or_default().insert(key.clone());
            }
            Reads::Wide => {
                self.wide.insert(key.clone());
            }
            Reads::Nothing => {}
        }
        self.by_key.insert(key, tx);
        rx
    }

    fn forget(&mut self, key: &K) {
        self.by_key.remove(key);
        match key.reads() {
            Reads::Tag(tag) => {
                if let Some(keys) = self.by_tag.get_mut(&tag) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_tag.remove(&tag);
                    }
                }
            }
            Reads::Wide => {
                self.wide.remove(key);
            }
            Reads::Nothing => {}
        }
    }

    /// Forgets lookups nobody watches; returns how many.
    pub fn prune(&mut self) -> usize {
        let gone: Vec<K> = self.by_key.iter().filter(|(_, tx)| tx.receiver_count() == 0).map(|(k, _)| k.clone()).collect();
        for key in &gone {
            self.forget(key);
        }
        self.live = self.by_key.len();
        gone.len()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Recomputes the lookups in `scope` (`compute`, given a key and its
    /// current view, returns `None` for those the write cannot change) and
    /// wakes those whose view changed; forgets visited lookups nobody
    /// watches any more. Returns (views recomputed, views changed).
    pub fn refresh(&mut self, scope: &Scope, mut compute: impl FnMut(&K, &V) -> Option<V>) -> (u64, u64) {
        let visit: Vec<K> = if scope.all {
            self.by_key.keys().cloned().collect()
        } else {
            let mut keys: HashSet<&K> = scope.tags.iter().filter_map(|t| self.by_tag.get(t)).flatten().collect();
            if scope.wide {
                keys.extend(&self.wide);
            }
            keys.into_iter().cloned().collect()
        };
        let (mut computed, mut updated) = (0, 0);
        for key in visit {
            let Some(tx) = self.by_key.get(&key) else { continue };
            if tx.receiver_count() == 0 {
                self.forget(&key);
                continue;
            }
            // A clone: the watch's lock is not held while computing.
            let current = Arc::clone(&tx.borrow());
            let Some(new) = compute(&key, &current) else { continue };
            computed += 1;
            tx.send_if_modified(|cur| {
                let changed = **cur != new;
                if changed {
                    *cur = Arc::new(new);
                    updated += 1;
                }
                changed
            });
        }
        (computed, updated)
    }
}
