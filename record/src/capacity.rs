//! Capacity at an SLO: per variant, the highest open-loop arrival rate whose
//! latency percentile stays within a bound with no errors, found by a
//! ramp, a bisection and a validation run, with every probe kept.

use serde::{Deserialize, Serialize};

use crate::load::Load;
use crate::report::Resource;

/// One capacity search (one cell of a `mode = "capacity"` scenario).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CapacityRun {
    pub scenario: String,
    pub variant: String,
    pub substrate: String,
    pub repetition: u32,
    /// The SLO: `percentile` of the corrected latency at most `slo_us`, 0 errors.
    pub percentile: f64,
    pub slo_us: f64,
    /// The search's settings: first rate, highest rate tried, ramp factor,
    /// bisection tolerance (relative width of the last bracket).
    pub start_rate: f64,
    pub max_rate: f64,
    pub ramp_factor: f64,
    pub tolerance: f64,
    /// The highest rate that passed (validated when `validated`), requests/s;
    /// `0` when even `start_rate` failed.
    pub capacity_rps: f64,
    /// The validation run at `capacity_rps` passed too (`false` also when
    /// there was nothing to validate).
    pub validated: bool,
    /// What stopped the search above `capacity_rps`: `slo` (the percentile
    /// went over the bound), `errors`, `generator` (the load generator could
    /// not send on time: not the system's limit), `disturbed` (failing
    /// probes kept coming with the hypervisor taking more than
    /// `HostCpu::DISTURBED_STEAL` of the machine, beyond the re-probes a
    /// search allows), `max-rate` (the highest rate tried passed),
    /// `start-rate` (the first rate failed already).
    pub limited_by: String,
    /// Every probe in run order: ramp, bisection, validation.
    pub probes: Vec<Probe>,
}

/// One probe: an open-loop load run at one rate and its verdict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// `ramp`, `bisect` or `validate`.
    pub phase: String,
    /// `pass`, `slo`, `errors`, `generator` or `disturbed` (see
    /// [`CapacityRun::limited_by`]).
    pub verdict: String,
    /// The SLO's percentile of the corrected latency (from the scheduled
    /// send), µs.
    pub percentile_us: f64,
    /// The same percentile of the service time (from the actual send), µs.
    pub service_percentile_us: f64,
    /// The load run as loadgen returned it (rate, errors, late sends,
    /// histograms), flattened.
    #[serde(flatten)]
    pub load: Load,
    /// Processes sampled during the probe's window.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// The machine during the probe's window (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<crate::HostCpu>,
}

impl CapacityRun {
    /// The validation probes (one per attempt; the last one decided).
    pub fn validations(&self) -> impl Iterator<Item = &Probe> {
        self.probes.iter().filter(|p| p.phase == "validate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Env, Report};

    #[test]
    fn absent_when_empty_and_a_probe_round_trips_flat() {
        let mut r = Report::new("c", "2026-12-07T00:00:00Z", Env::default());
        assert!(!serde_json::to_string(&r).unwrap().contains("\"capacity\""));
        let load: Load = serde_json::from_str(
            r#"{"protocol":"http1","mode":"open","rate":250,"connections":2,"body_size":0,"duration_s":1,"requests":250,"errors":0,"late_sends":3,"achieved_rps":250,"latency_us":{"p50":1,"p90":2,"p99":3,"p999":4,"p9999":5,"max":6,"mean":1},"service_time_us":{"p50":1,"p90":2,"p99":3,"p999":4,"p9999":5,"max":6,"mean":1},"histogram":""}"#,
        )
        .unwrap();
        let probe = Probe { phase: "ramp".into(), verdict: "pass".into(), percentile_us: 3.0, service_percentile_us: 2.0, load, resources: vec![], host: Some(crate::HostCpu { steal: 0.25, busy: 0.5 }) };
        r.capacity.push(CapacityRun {
            scenario: "s".into(),
            variant: "weft".into(),
            substrate: "local".into(),
            repetition: 0,
            percentile: 99.0,
            slo_us: 5000.0,
            start_rate: 250.0,
            max_rate: 250.0,
            ramp_factor: 2.0,
            tolerance: 0.05,
            capacity_rps: 250.0,
            validated: false,
            limited_by: "max-rate".into(),
            probes: vec![probe],
        });
        let text = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &v["capacity"][0]["probes"][0];
        assert_eq!((p["rate"].as_f64(), p["late_sends"].as_u64(), p["percentile_us"].as_f64()), (Some(250.0), Some(3), Some(3.0)), "flat: {p}");
        assert_eq!(p["host"]["steal"].as_f64(), Some(0.25), "{p}");
    }
}
