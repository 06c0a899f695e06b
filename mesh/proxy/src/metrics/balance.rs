//! The discovered balancers: endpoints ready and ejected per authority
//! (read from the live balancers at each scrape, so an ejection that timed
//! out shows as ready without anything on the request path), and
//! ejections by failure accrual.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use super::caps::{Interned, MAX_AUTHORITIES, OTHER};

/// A balancer as the scrape sees it.
pub trait BalancerView: Send + Sync {
    /// The authority it balances (normalized `host:port`).
    fn authority(&self) -> &str;
    /// Endpoints (in rotation, taken out by failure accrual).
    fn endpoint_states(&self) -> (usize, usize);
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthorityLabels {
    authority: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    authority: Arc<str>,
    state: &'static str,
}

struct Inner {
    ejections: Family<AuthorityLabels, Counter>,
    authorities: Interned,
    sets: Mutex<Vec<Weak<dyn BalancerView>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerMetrics").field("authorities", &self.authorities.len()).finish_non_exhaustive()
    }
}

/// Handles for the balancer families; the default is unregistered.
#[derive(Debug, Clone)]
pub struct BalancerMetrics {
    inner: Arc<Inner>,
}

impl Default for BalancerMetrics {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                ejections: Family::default(),
                authorities: Interned::new(MAX_AUTHORITIES, Arc::from(OTHER)),
                sets: Mutex::default(),
            }),
        }
    }
}

impl BalancerMetrics {
    /// Registers `weft_balancer_ejections` and `weft_balancer_endpoints`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        registry.register(
            "weft_balancer_ejections",
            "Endpoints taken out of rotation by failure accrual (consecutive failures), by authority",
            this.inner.ejections.clone(),
        );
        registry.register_collector(Box::new(Endpoints(Arc::clone(&this.inner))));
        this
    }

    /// The ejection counter of `authority` (resolve once per balancer).
    pub fn ejections(&self, authority: &str) -> Counter {
        let authority = self.inner.authorities.get(authority);
        self.inner.ejections.get_or_create(&AuthorityLabels { authority }).clone()
    }

    /// Reports `set` at every scrape while it lives.
    pub fn watch(&self, set: Weak<dyn BalancerView>) {
        let mut sets = self.inner.sets.lock().unwrap_or_else(|e| e.into_inner());
        // Dropped balancers go now and then, so the list stays near the
        // number alive (the discovery cache bounds that).
        if sets.len() >= 64 && sets.len().is_power_of_two() {
            sets.retain(|w| w.strong_count() > 0);
        }
        sets.push(set);
    }
}

/// Encodes `weft_balancer_endpoints` from the live balancers.
#[derive(Debug)]
struct Endpoints(Arc<Inner>);

impl Collector for Endpoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut by: BTreeMap<Arc<str>, (usize, usize)> = BTreeMap::new();
        {
            let mut sets = self.0.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.retain(|w| w.strong_count() > 0);
            for set in sets.iter().filter_map(Weak::upgrade) {
                let (ready, ejected) = set.endpoint_states();
                let e = by.entry(self.0.authorities.get(set.authority())).or_default();
                e.0 += ready;
                e.1 += ejected;
            }
        }
        let mut family = encoder.encode_descriptor(
            "weft_balancer_endpoints",
            "Endpoints of the discovered balancers held now, by authority and state (ready: in \
             rotation; ejected: taken out by failure accrual until its backoff ends)",
            None,
            MetricType::Gauge,
        )?;
        for (authority, (ready, ejected)) in by {
            for (state, n) in [("ready", ready), ("ejected", ejected)] {
                let labels = StateLabels { authority: Arc::clone(&authority), state };
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, usize, usize);

    impl BalancerView for Fixed {
        fn authority(&self) -> &str {
            self.0
        }
        fn endpoint_states(&self) -> (usize, usize) {
            (self.1, self.2)
        }
    }

    #[test]
    fn live_balancers_are_reported_and_dropped_ones_are_not() {
        let mut r = Registry::default();
        let m = BalancerMetrics::register(&mut r);
        let a: Arc<dyn BalancerView> = Arc::new(Fixed("web:80", 2, 1));
        let b: Arc<dyn BalancerView> = Arc::new(Fixed("gone:80", 5, 0));
        m.watch(Arc::downgrade(&a));
        m.watch(Arc::downgrade(&b));
        m.ejections("web:80").inc();
        drop(b);
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, &r).unwrap();
        for line in [
            r#"weft_balancer_endpoints{authority="web:80",state="ready"} 2"#,
            r#"weft_balancer_endpoints{authority="web:80",state="ejected"} 1"#,
            r#"weft_balancer_ejections_total{authority="web:80"} 1"#,
        ] {
            assert!(t.contains(line), "missing {line} in\n{t}");
        }
        assert!(!t.contains("gone:80"), "{t}");
    }
}
