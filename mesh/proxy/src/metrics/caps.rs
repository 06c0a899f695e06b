//! Bounded label values: every caller-controlled label (authority, route,
//! peer) goes through here before it names a series, so no client can
//! grow the proxy's metrics without bound (the crate README prints these
//! numbers).
//!
//! Values are interned: the first [`MAX_AUTHORITIES`] authorities of a
//! direction (and so on) get their own `Arc<str>`, later ones share
//! [`OTHER`]. A value never seen before costs one lock and one allocation,
//! once; the request path itself holds resolved handles (see `http`).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

/// Distinct `authority` values per direction; later ones are `other`.
pub const MAX_AUTHORITIES: usize = 100;
/// Distinct `route` values per authority; later ones are `other`.
pub const MAX_ROUTES_PER_AUTHORITY: usize = 100;
/// Distinct `peer` values per direction; later ones are `other`.
pub const MAX_PEERS: usize = 100;
/// Distinct label sets per family; past it a series is labelled
/// `authority="other",route="other",peer="other"` (other labels kept).
pub const MAX_LABEL_SETS: usize = 2000;

/// The label value of everything past a cap.
pub const OTHER: &str = "other";
/// The `route` of a request no route rule matched.
pub const DEFAULT_ROUTE: &str = "default";
/// The `peer` of a connection with no mesh identity.
pub const NO_PEER: &str = "none";

/// Shared label values, so a resolved label is an `Arc` clone.
#[derive(Debug, Clone)]
pub struct Common {
    pub other: Arc<str>,
    pub default_route: Arc<str>,
    pub no_peer: Arc<str>,
}

impl Default for Common {
    fn default() -> Self {
        Self { other: Arc::from(OTHER), default_route: Arc::from(DEFAULT_ROUTE), no_peer: Arc::from(NO_PEER) }
    }
}

/// At most `cap` distinct values; the rest map to `other`.
#[derive(Debug)]
pub struct Interned {
    cap: usize,
    values: Mutex<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
}

impl Interned {
    pub fn new(cap: usize, other: Arc<str>) -> Self {
        Self { cap, values: Mutex::default(), other }
    }

    /// The label for `value`: its own while under the cap, else `other`.
    pub fn get(&self, value: &str) -> Arc<str> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.get(value) {
            return Arc::clone(v);
        }
        if values.len() >= self.cap {
            return Arc::clone(&self.other);
        }
        let v: Arc<str> = Arc::from(value);
        values.insert(value.into(), Arc::clone(&v));
        v
    }

    /// Distinct values held (at most the cap).
    pub fn len(&self) -> usize {
        self.values.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was interned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A family's label sets created so far, against [`MAX_LABEL_SETS`].
#[derive(Debug, Default)]
pub struct SetBudget {
    used: AtomicUsize,
}

impl SetBudget {
    /// Takes one label set from the budget; `false` once it is spent.
    pub fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_LABEL_SETS).then_some(n + 1))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_is_other() {
        let i = Interned::new(2, Arc::from(OTHER));
        assert_eq!(&*i.get("a:80"), "a:80");
        assert_eq!(&*i.get("b:80"), "b:80");
        assert_eq!(&*i.get("c:80"), OTHER);
        assert_eq!(&*i.get("a:80"), "a:80", "values under the cap keep theirs");
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn budget_runs_out() {
        let b = SetBudget::default();
        assert_eq!((0..MAX_LABEL_SETS + 10).filter(|_| b.take()).count(), MAX_LABEL_SETS);
    }
}
