//! The bounded map of discovered authorities behind [`super::Outbound`]:
//! Services and backend sets by authority, evicted when idle and, least
//! recently used first, when over the cap.
//!
//! ```text
//!  hit:    shard read lock ─> Arc clone + "last used" store (no allocation)
//!  miss:   insert lock ─> over the cap? evict the oldest unused ─> insert
//!  sweep:  every idle/4: drop entries unused for the idle timeout
//! ```
//!
//! An entry is in use while anything besides the map holds it (a request in
//! flight, a transparent connection's `Target`, an opaque TCP relay): it is
//! never evicted then, and its idle time starts over. Dropping an entry
//! drops its watch, which closes the control-plane stream behind it. When
//! every entry is in use the map may exceed the cap by those entries (they
//! are bounded by the connection and request limits) rather than fail them.

use std::{
    collections::{hash_map::RandomState, HashMap},
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::{config::DiscoveryLimits, metrics::CacheMetrics};

/// Shards of the map: hits on different authorities rarely share a lock.
const SHARDS: usize = 16;

pub(super) struct Slot<V> {
    value: Arc<V>,
    /// Milliseconds since the cache's epoch (the idle timeout).
    used: AtomicU64,
    /// The cache's use counter at the last use (least recently used order;
    /// many uses fall in one millisecond).
    order: AtomicU64,
}

pub(super) type Shard<V> = RwLock<HashMap<Arc<str>, Slot<V>>>;

/// Authority -> `Arc<V>`, bounded (see the module docs).
pub(crate) struct Cache<V> {
    shards: Box<[Shard<V>]>,
    hasher: RandomState,
    len: AtomicUsize,
    /// Counts uses, for the least-recently-used order.
    uses: AtomicU64,
    /// Serializes inserts so that the cap holds; hits never take it.
    inserting: Mutex<()>,
    limits: DiscoveryLimits,
    epoch: Instant,
    metrics: CacheMetrics,
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("len", &self.len()).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl<V> Cache<V> {
    pub fn new(limits: DiscoveryLimits, metrics: CacheMetrics) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            uses: AtomicU64::new(0),
            inserting: Mutex::new(()),
            limits,
            epoch: Instant::now(),
            metrics,
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// How often [`Cache::sweep`] should run: an entry lives at most a
    /// quarter longer than the idle timeout.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(15))
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn shard(&self, key: &str) -> &Shard<V> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The entry of `key`, made by `make` when there is none.
    pub fn get_or_insert_with(&self, key: &str, make: impl FnOnce(Arc<str>) -> Arc<V>) -> Arc<V> {
        if let Some(v) = self.get(key) {
            return v;
        }
        let _inserting = self.inserting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.get(key) {
            return v;
        }
        if self.len() >= self.limits.max_authorities {
            self.evict_least_recently_used();
        }
        let key: Arc<str> = Arc::from(key);
        let value = make(Arc::clone(&key));
        let slot = Slot {
            value: Arc::clone(&value),
            used: AtomicU64::new(self.now()),
            order: AtomicU64::new(self.uses.fetch_add(1, Ordering::Relaxed)),
        };
        write(self.shard(&key)).insert(key, slot);
        let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.entries.set(len as i64);
        value
    }

    fn get(&self, key: &str) -> Option<Arc<V>> {
        let shard = read(self.shard(key));
        let slot = shard.get(key)?;
        slot.used.store(self.now(), Ordering::Relaxed);
        slot.order.store(self.uses.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(Arc::clone(&slot.value))
    }

    /// Makes room for one entry (called with the insert lock held): drops
    /// the least recently used unused entries, a batch of 1/16 of the cap so
    /// a stream of new authorities does not scan the map on every insert.
    fn evict_least_recently_used(&self) {
        let max = self.limits.max_authorities;
        let want = (self.len() + 1).saturating_sub(max).max(1) + (max / 16).saturating_sub(1);
        let mut unused: Vec<(u64, Arc<str>)> = Vec::new();
        for shard in self.shards.iter() {
            for (k, slot) in read(shard).iter() {
                if Arc::strong_count(&slot.value) == 1 {
                    unused.push((slot.order.load(Ordering::Relaxed), Arc::clone(k)));
                }
            }
        }
        if unused.len() > want {
            unused.select_nth_unstable_by_key(want, |(used, _)| *used);
            unused.truncate(want);
        }
        let mut dropped = Vec::with_capacity(unused.len());
        for (order, key) in unused {
            let mut shard = write(self.shard(&key));
            // Under the write lock nobody can be between a lookup and its
            // clone: a count of one means really unused; a newer use means
            // it was picked up again since the scan.
            let still =
                shard.get(&key).is_some_and(|s| Arc::strong_count(&s.value) == 1 && s.order.load(Ordering::Relaxed) == order);
            if still {
                dropped.extend(shard.remove(&key));
            }
        }
        self.forget(dropped.len());
        self.metrics.capacity_evictions.inc_by(dropped.len() as u64);
        // Dropped (watches closed) outside the shard locks.
        drop(dropped);
    }

    /// Drops the entries nobody used for the idle timeout; entries in use
    /// count as used now. Returns how many were dropped.
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.now())
    }

    fn sweep_at(&self, now: u64) -> usize {
        let idle = self.limits.idle_timeout.as_millis() as u64;
        let mut dropped = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let expired: Vec<Arc<str>> = shard
                .iter()
                .filter_map(|(k, slot)| {
                    if Arc::strong_count(&slot.value) > 1 {
                        slot.used.store(now, Ordering::Relaxed);
                        return None;
                    }
                    (now.saturating_sub(slot.used.load(Ordering::Relaxed)) >= idle).then(|| Arc::clone(k))
                })
                .collect();
            for k in expired {
                dropped.extend(shard.remove(&k));
            }
        }
        let n = dropped.len();
        self.forget(n);
        self.metrics.idle_evictions.inc_by(n as u64);
        drop(dropped);
        n
    }

    fn forget(&self, n: usize) {
        if n > 0 {
            let len = self.len.fetch_sub(n, Ordering::Relaxed) - n;
            self.metrics.entries.set(len as i64);
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic under the lock leaves a map that is consistent per operation.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: usize, idle: Duration) -> Cache<String> {
        Cache::new(DiscoveryLimits { idle_timeout: idle, max_authorities: max }, CacheMetrics::default())
    }

    fn make(k: Arc<str>) -> Arc<String> {
        Arc::new(k.to_string())
    }

    /// Sets when `key` was last used (milliseconds since the cache's epoch,
    /// and as the use counter).
    fn used_at(c: &Cache<String>, key: &str, ms: u64) {
        let shard = read(c.shard(key));
        shard[key].used.store(ms, Ordering::Relaxed);
        shard[key].order.store(ms, Ordering::Relaxed);
    }

    fn held(c: &Cache<String>, key: &str) -> bool {
        read(c.shard(key)).contains_key(key)
    }

    #[test]
    fn the_cap_holds_and_the_least_recently_used_go_first() {
        let c = cache(4, Duration::from_secs(60));
        for k in ["a", "b", "c", "d"] {
            c.get_or_insert_with(k, make);
        }
        // "a" was used last: "b" is the oldest.
        for (k, at) in [("a", 1_000_000), ("b", 10), ("c", 20), ("d", 30)] {
            used_at(&c, k, at);
        }
        c.get_or_insert_with("e", make);
        assert_eq!(c.len(), 4);
        assert_eq!(c.metrics.entries.get(), 4);
        assert!(!held(&c, "b") && held(&c, "a") && held(&c, "c") && held(&c, "e"));
        assert_eq!(c.metrics.capacity_evictions.get(), 1);
    }

    #[test]
    fn entries_in_use_are_never_evicted() {
        let c = cache(2, Duration::from_secs(1));
        let kept = c.get_or_insert_with("held", make);
        c.get_or_insert_with("free", make);
        c.get_or_insert_with("new", make);
        assert!(held(&c, "held") && !held(&c, "free"));
        // Everything in use: over the cap rather than failing.
        let new = c.get("new").unwrap();
        c.get_or_insert_with("more", make);
        assert_eq!(c.len(), 3);
        drop(new);
        for k in ["held", "new", "more"] {
            used_at(&c, k, 0);
        }
        // "held" is in use: kept, and its idle time starts over.
        assert_eq!(c.sweep_at(2_000), 2);
        assert!(held(&c, "held"));
        drop(kept);
        assert_eq!(c.sweep_at(2_900), 0);
        assert_eq!(c.sweep_at(3_000), 1);
        assert_eq!((c.len(), c.metrics.entries.get(), c.metrics.idle_evictions.get()), (0, 0, 3));
    }

    #[test]
    fn a_flood_of_new_keys_stays_under_the_cap() {
        let c = cache(64, Duration::from_secs(60));
        for i in 0..5_000 {
            c.get_or_insert_with(&format!("host-{i}:80"), make);
            assert!(c.len() <= 64, "{} entries after {i}", c.len());
        }
        assert!(held(&c, "host-4999:80"));
        assert_eq!(c.len() as i64, c.metrics.entries.get());
    }
}
