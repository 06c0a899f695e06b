//! A lock-free latency histogram that encodes through prometheus-client.
//!
//! prometheus-client's own `Histogram` takes a lock on every `observe`, which
//! would put a lock on the request path. This one keeps fixed buckets in
//! atomics: an observation is a short scan over the bounds plus three relaxed
//! `fetch_add`s. A scrape may see a count and a sum from slightly different
//! instants; Prometheus tolerates that and it never loses an observation.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds in seconds: 100µs .. 10s, roughly 1-2.5-5 per decade, which
/// resolves sub-millisecond proxy overhead as well as slow upstreams.
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Cheap to clone: clones share the same buckets.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Bucket bounds in nanoseconds, so observing compares integers.
    bounds_nanos: Box<[u64]>,
    bounds_seconds: Box<[f64]>,
    /// One more than the bounds: the last slot is the +Inf bucket.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram over the given ascending upper bounds (seconds); +Inf is implied.
    pub fn new(bounds_seconds: &[f64]) -> Self {
        debug_assert!(bounds_seconds.windows(2).all(|w| w[0] < w[1]));
        let bounds_nanos = bounds_seconds
            .iter()
            .map(|s| Duration::from_secs_f64(*s).as_nanos() as u64)
            .collect();
        let counts = (0..=bounds_seconds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds_nanos,
                bounds_seconds: bounds_seconds.into(),
                counts,
                sum_nanos: AtomicU64::new(0),
                count: AtomicU64::new(0),
            }),
        }
    }

    /// The histogram used for response latency.
    pub fn latency() -> Self {
        Self::new(&LATENCY_BUCKETS_SECONDS)
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let inner = &*self.inner;
        let idx = inner
            .bounds_nanos
            .iter()
            .position(|b| nanos <= *b)
            .unwrap_or(inner.bounds_nanos.len());
        inner.counts[idx].fetch_add(1, Relaxed);
        inner.sum_nanos.fetch_add(nanos, Relaxed);
        inner.count.fetch_add(1, Relaxed);
    }

    /// Total observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Relaxed)
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.inner.sum_nanos.load(Relaxed) as f64 / 1e9
    }

    /// Per-bucket (non-cumulative) counts with their upper bounds; the last
    /// bound is `f64::MAX`, which prometheus-client renders as `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let inner = &*self.inner;
        inner
            .bounds_seconds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(inner.counts.iter().map(|c| c.load(Relaxed)))
            .collect()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        // Derive count from the buckets read here so `_count` always equals
        // the +Inf bucket in one scrape, as Prometheus expects.
        let count = buckets.iter().map(|(_, c)| c).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::{encoding::text::encode, registry::Registry};

    #[test]
    fn observations_land_in_the_right_bucket() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500)); // <= 1ms
        h.observe(Duration::from_millis(1)); // boundary is inclusive
        h.observe(Duration::from_millis(5)); // <= 10ms
        h.observe(Duration::from_secs(3)); // +Inf
        assert_eq!(
            h.buckets(),
            vec![(0.001, 2), (0.01, 1), (f64::MAX, 1)]
        );
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 3.0065).abs() < 1e-9);
    }

    #[test]
    fn encodes_as_a_cumulative_prometheus_histogram() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        let mut reg = Registry::default();
        reg.register("lat_seconds", "test", h);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        assert!(out.contains("# TYPE lat_seconds histogram"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"0.001\"} 1"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"0.01\"} 2"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"+Inf\"} 2"), "{out}");
        assert!(out.contains("lat_seconds_count 2"), "{out}");
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let h = AtomicHistogram::latency();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = h.clone();
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe(Duration::from_micros(i % 2000 + t));
                    }
                });
            }
        });
        assert_eq!(h.count(), 40_000);
        assert_eq!(h.buckets().iter().map(|(_, c)| c).sum::<u64>(), 40_000);
    }
}
