//! One load run as loadgen measures it: [`Load`] (what `loadgen run --json`
//! writes, and what every [`Run`](crate::Run) of a report embeds) and its
//! [`Percentiles`].

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::hist::{self, HistogramError};

/// Percentiles of a latency distribution, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// All zero for an empty histogram. Quantiles are HDR "highest equivalent"
    /// values, i.e. at most 0.1 % above the true sample at 3 significant digits.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64;
        Self { p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), p9999: q(0.9999), max: h.max() as f64, mean: h.mean() }
    }
}

/// Everything measured by one load run, over its measured window only, with
/// the shape of the load it was asked for. Lossless: the histograms are in it.
///
/// In a report this sits flattened inside a [`Run`](crate::Run), so a
/// `report.json` run and a `loadgen run --json` file have the same fields.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Load {
    /// Application protocol spoken by the load generator: `http1` or `http2`.
    pub protocol: String,
    /// `open` (fixed arrival rate) or `closed` (fixed concurrency, max throughput).
    pub mode: String,
    /// Target arrival rate in requests/s for open-loop runs; `null` for closed loop.
    pub rate: Option<f64>,
    /// In-flight requests for closed-loop runs; `null` for open loop.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Connections the load generator opened before the clock started.
    pub connections: u32,
    /// Request body size in bytes (0: GET without a body); `bench` scenarios
    /// have the server answer with bodies of the same size.
    pub body_size: u64,
    /// Length of the measured window in seconds (warm-up excluded).
    pub duration_s: f64,
    /// Warm-up length in seconds (not in any statistic).
    #[serde(default)]
    pub warmup_s: f64,
    /// Requests scheduled in the measured window that finished (successes and errors).
    pub requests: u64,
    /// Subset of `requests` that failed.
    pub errors: u64,
    /// Failures by class: `status_4xx`, `status_5xx`, `connect`, `timeout`, `io`, `overflow`.
    #[serde(default)]
    pub errors_by_class: BTreeMap<String, u64>,
    /// Open loop: requests sent more than 1 ms after their scheduled time
    /// because the generator had no free connection or CPU. Their latency
    /// still counts from the scheduled time; this says how often it happened.
    #[serde(default)]
    pub late_sends: u64,
    /// Subset of `errors` never written to a connection: the slot found
    /// the in-flight cap full (`overflow`), its connection could not be
    /// (re)made (`connect`), or it was still queued `timeout` after its
    /// time (`timeout`). No proxy on the way can have seen these. `0` in
    /// records written before it was kept.
    #[serde(default)]
    pub not_sent: u64,
    /// Requests scheduled outside the measured window (in the warm-up)
    /// that were written to a connection: in no other figure, but a proxy
    /// on the way counted them. `0` in records written before it was kept.
    #[serde(default)]
    pub sent_outside_window: u64,
    /// Responses (any status) completed during the window, per second of window.
    pub achieved_rps: f64,
    /// TCP connections opened, reconnects included. `0` in records from
    /// schema 1, which did not keep it.
    #[serde(default)]
    pub connections_opened: u64,
    /// Latency from each request's *scheduled* send time to the end of its
    /// response (coordinated-omission corrected), microseconds.
    pub latency_us: Percentiles,
    /// Latency from the *actual* send to the end of the response, microseconds.
    pub service_time_us: Percentiles,
    /// The corrected latency histogram (µs), HDR V2 deflate, base64 ([`hist`]).
    pub histogram: String,
    /// The service-time histogram (µs), same encoding.
    #[serde(default)]
    pub service_histogram: String,
}

impl Load {
    /// The corrected latency histogram, decoded.
    pub fn latency_histogram(&self) -> Result<Histogram<u64>, HistogramError> {
        hist::decode(&self.histogram)
    }

    /// The service-time histogram, decoded.
    pub fn service_time_histogram(&self) -> Result<Histogram<u64>, HistogramError> {
        hist::decode(&self.service_histogram)
    }

    /// Set both histograms and the percentiles taken from them, so the two
    /// can never disagree.
    pub fn set_histograms(&mut self, latency: &Histogram<u64>, service_time: &Histogram<u64>) -> Result<(), HistogramError> {
        self.histogram = hist::encode(latency)?;
        self.service_histogram = hist::encode(service_time)?;
        self.latency_us = Percentiles::from_histogram(latency);
        self.service_time_us = Percentiles::from_histogram(service_time);
        Ok(())
    }

    /// Failed requests as a fraction of all requests (0 when none completed).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u64> {
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let p = Percentiles::from_histogram(&h);
        // 3 significant digits: each quantile within 0.1 % of the exact rank value.
        for (got, want) in [(p.p50, 5_000.0), (p.p90, 9_000.0), (p.p99, 9_900.0), (p.p999, 9_990.0), (p.p9999, 9_999.0)] {
            assert!((got - want).abs() <= want * 0.001 + 1.0, "{got} vs {want}");
        }
        assert!((p.max - 10_000.0).abs() <= 10.0);
        assert!((p.mean - 5_000.5).abs() < 5.0);
        assert_eq!(Percentiles::from_histogram(&histogram()), Percentiles::default());
    }

    #[test]
    fn histograms_and_percentiles_are_set_together() {
        let mut h = histogram();
        for v in [100u64, 200, 300] {
            h.record(v).unwrap();
        }
        let mut load = Load {
            protocol: "http1".into(),
            mode: "open".into(),
            rate: Some(10.0),
            concurrency: None,
            connections: 1,
            body_size: 0,
            duration_s: 1.0,
            warmup_s: 0.0,
            requests: 3,
            errors: 0,
            errors_by_class: BTreeMap::new(),
            late_sends: 0,
            not_sent: 0,
            sent_outside_window: 0,
            achieved_rps: 3.0,
            connections_opened: 1,
            latency_us: Percentiles::default(),
            service_time_us: Percentiles::default(),
            histogram: String::new(),
            service_histogram: String::new(),
        };
        load.set_histograms(&h, &histogram()).unwrap();
        assert_eq!(load.latency_histogram().unwrap(), h);
        assert_eq!(load.latency_us, Percentiles::from_histogram(&h));
        assert_eq!(load.service_time_histogram().unwrap().len(), 0);
        assert_eq!(load.service_time_us, Percentiles::default());
    }
}
