//! Faults under load and overload: load at a fixed rate while the harness
//! disrupts the mesh at a known time, and the proxy pushed past its capacity.
//!
//! Windows are by scheduled send time, relative to the start of the
//! measured window: `before` is `[0, fault_at)`, `during` is
//! `[fault_at, fault_at + fault_for)`, `after` is the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::load::Percentiles;
use crate::report::Resource;

/// One fault-under-load run (one cell of a `mode = "fault"` scenario).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultRun {
    pub scenario: String,
    pub variant: String,
    pub substrate: String,
    pub repetition: u32,
    /// `replica-kill`, `control-restart`, `cert-rotation`, `endpoint-churn`,
    /// `peer-freeze`.
    pub fault: String,
    /// Offered rate, requests/s.
    pub rate: f64,
    pub duration_s: f64,
    /// Start and length of the disruption, seconds into the measured window.
    pub fault_at_s: f64,
    pub fault_for_s: f64,
    /// Whole measured window.
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub errors_by_class: BTreeMap<String, u64>,
    /// Failed requests that were idempotent (GET without a body), i.e. ones
    /// the mesh could have retried safely.
    pub idempotent_errors: u64,
    pub before: Window,
    pub during: Window,
    pub after: Window,
    /// Seconds from the start of the fault until the end of the last bad
    /// slice (errors, or p99 above twice the `before` p99); `0` if no slice
    /// was bad; `null` if the last slice of the run was still bad.
    pub recovery_s: Option<f64>,
    /// What the harness did and saw, in order (e.g. `12.0 s: SIGKILL server-1`).
    #[serde(default)]
    pub events: Vec<String>,
    /// The run in slices, for the chart.
    #[serde(default)]
    pub slices: Vec<Slice>,
    /// What the Weft proxies counted over the measured window, beside
    /// loadgen's count (as a `Run`'s); absent for variants without a Weft
    /// proxy and from older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_counts: Option<crate::CrossCheck>,
}

/// Requests scheduled in one window of a fault run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    /// Corrected latency of the responses scheduled in the window, µs.
    pub latency_us: Percentiles,
}

/// One slice of a run's timeline.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Slice {
    /// Start of the slice, seconds into the measured window.
    pub t_s: f64,
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub shed: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One overload run (one cell of a `mode = "overload"` scenario): the
/// capacity measured first, the overload at `factor` times it, and a run
/// at a sustainable rate right after.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OverloadRun {
    pub scenario: String,
    pub variant: String,
    pub substrate: String,
    pub repetition: u32,
    /// Closed-loop throughput, requests/s, with `capacity_concurrency` in flight.
    pub capacity_rps: f64,
    pub capacity_concurrency: u32,
    /// The capacity run itself (`rate` 0: closed loop).
    #[serde(default)]
    pub capacity: Phase,
    /// The offered overload: `factor x capacity_rps`.
    pub factor: f64,
    pub offered_rps: f64,
    /// Connections the load generator kept open during the overload.
    pub connections: u32,
    /// The overload phase.
    pub overload: Phase,
    /// Shed responses (`weft-proxy-error-kind: overloaded`) and their latency, µs.
    pub shed: u64,
    pub shed_latency_us: Percentiles,
    /// Latency of the overload's responses that were not shed (the
    /// requests the proxies admitted), µs; absent from older records.
    #[serde(default)]
    pub admitted_latency_us: Percentiles,
    /// Proxies and control plane during the overload (peak RSS: bounded?).
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Before the overload, at the sustainable rate: the normal p99.
    pub quiet: Phase,
    /// Right after the overload, at the same sustainable rate.
    pub recovery: Phase,
    #[serde(default)]
    pub slices: Vec<Slice>,
    /// CPUs each proxy was limited to (the scenario's `proxy_cpu`); absent:
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_cpu: Option<f64>,
    /// With `proxy_cpu`: the share of the proxies' CFS periods (10 ms) in
    /// which they were throttled, over the whole cell (capacity, quiet,
    /// overload, recovery): near 0 means the limit was not what saturated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_throttled: Option<f64>,
    /// As in `Run`: the mesh-proxy flags the scenario added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_args: Vec<String>,
    /// What the Weft proxies counted over the overload phase, beside
    /// loadgen's count of what it actually sent (its own `overflow` left
    /// out); absent without a Weft proxy and from older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_counts: Option<crate::CrossCheck>,
}

/// One load phase of an overload run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// Offered rate, requests/s.
    pub rate: f64,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub errors_by_class: BTreeMap<String, u64>,
    pub achieved_rps: f64,
    pub latency_us: Percentiles,
}

/// The hardening sections of a report; flattened into it, each a list
/// absent from older records (read as empty).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Hardening {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soak: Vec<crate::soak::Soak>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overload: Vec<OverloadRun>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Env, Report};

    #[test]
    fn sections_are_absent_when_empty_and_round_trip_when_not() {
        let mut r = Report::new("s", "2026-12-06T00:00:00Z", Env::default());
        let text = serde_json::to_string(&r).unwrap();
        for key in ["\"soak\"", "\"faults\"", "\"overload\""] {
            assert!(!text.contains(key), "{key} in {text}");
        }
        r.hardening.faults.push(FaultRun {
            scenario: "f".into(),
            variant: "weft".into(),
            substrate: "local".into(),
            repetition: 0,
            fault: "peer-freeze".into(),
            rate: 10.0,
            duration_s: 8.0,
            fault_at_s: 3.0,
            fault_for_s: 3.0,
            requests: 80,
            errors: 1,
            errors_by_class: BTreeMap::from([("timeout".into(), 1)]),
            idempotent_errors: 1,
            before: Window::default(),
            during: Window { requests: 30, errors: 1, latency_us: Percentiles::default() },
            after: Window::default(),
            recovery_s: None,
            events: vec!["3.00 s: SIGSTOP proxy-inbound-1 (pid 1)".into()],
            slices: vec![Slice { t_s: 0.5, requests: 5, errors: 0, shed: 0, p50_us: 1.0, p99_us: 2.0 }],
            proxy_counts: None,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"faults\":[{"), "{text}");
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
