//! Scale sweeps: what one cost (proxy RSS and CPU, latency at a fixed light
//! load, or the control plane's memory and propagation time) does as one
//! dimension of the deployment grows (the `mode = "sweep"` scenarios).
//!
//! ```text
//!  SweepRun (scenario, variant, dimension) ── points: one per size, in size order
//!    load dimensions (endpoints, connections, authorities): a fresh deployment
//!      per size, scaled, then one load run at the fixed rate   -> SweepPoint::run
//!    services: the propagation harness at that many Services    -> SweepPoint::propagation
//! ```

use serde::{Deserialize, Serialize};

use crate::propagation::Propagation;
use crate::report::Run;

/// One sweep (one cell of a `mode = "sweep"` scenario).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepRun {
    pub scenario: String,
    /// `weft` for every dimension but `connections`, which any variant can take.
    pub variant: String,
    pub substrate: String,
    pub repetition: u32,
    /// `endpoints` (behind the one Service), `connections` (open client
    /// connections), `authorities` (distinct Services addressed by Host) or
    /// `services` (Services the control plane serves).
    pub dimension: String,
    /// The fixed light load of the load dimensions, requests/s; absent for `services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// The soft RLIMIT_NOFILE bench and the proxies ran with (bench raises
    /// it to the hard limit before a sweep); absent for `services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile_limit: Option<u64>,
    /// One per size, in the order of the scenario's `sizes`.
    pub points: Vec<SweepPoint>,
}

/// One size of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepPoint {
    pub size: usize,
    /// How the deployment was brought to `size` and what it held then
    /// (e.g. `10000 ready in proxy-outbound's balancer after 3.2 s`).
    #[serde(default)]
    pub setup: String,
    /// Setup time, seconds (writing manifests until the proxy held them all,
    /// or sending every distinct authority once).
    #[serde(default)]
    pub setup_s: f64,
    /// The measured proxy (`proxy-outbound`, else the variant's one proxy):
    /// peak RSS during the load window, bytes. Absent for `services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_rss_peak_bytes: Option<u64>,
    /// The same proxy's CPU seconds during the load window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_cpu_seconds: Option<f64>,
    /// The load run at the sweep's fixed rate, with every sampled process
    /// (load dimensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// The propagation harness at `size` Services (`services`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

impl SweepPoint {
    /// The cost a chart draws for this point: the proxy's peak RSS, or the
    /// control plane's for `services`, bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.proxy_rss_peak_bytes.or(self.propagation.as_ref().map(|p| p.control_rss_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Env, Report};

    #[test]
    fn absent_when_empty_and_round_trips() {
        let mut r = Report::new("s", "2026-12-07T00:00:00Z", Env::default());
        assert!(!serde_json::to_string(&r).unwrap().contains("\"sweeps\""));
        let prop = Propagation {
            scenario: "svc".into(),
            repetition: 0,
            services: 100,
            endpoints: 100,
            changes: 5,
            poll_ms: 250.0,
            startup_ms: 30.0,
            samples_ms: vec![1.0, 2.0],
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 2.0,
            control_rss_bytes: 10 << 20,
        };
        r.sweeps.push(SweepRun {
            scenario: "svc".into(),
            variant: "weft".into(),
            substrate: "local".into(),
            repetition: 0,
            dimension: "services".into(),
            rate: None,
            nofile_limit: None,
            points: vec![SweepPoint {
                size: 100,
                setup: String::new(),
                setup_s: 0.0,
                proxy_rss_peak_bytes: None,
                proxy_cpu_seconds: None,
                run: None,
                propagation: Some(prop),
            }],
        });
        let text = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.sweeps[0].points[0].rss_bytes(), Some(10 << 20));
    }
}
