//! The result record: one `report.json` per `bench run`, schema version 1.
//!
//! Every later stage (comparison, rendering, gates) reads this record and
//! nothing else, so a report or a gate can be re-run on old results without
//! re-running load. Field meanings are documented here and in
//! `reports/SCHEMA.md`; the two must agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the record layout written by this build. Bump on any change a
/// reader of an older record would misread.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole `bench run`: the environment, then one [`Run`] per measured cell.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`] for records written by this build.
    pub schema: u32,
    /// Suite name (the `name` field of the suite file, e.g. `quick`).
    pub suite: String,
    /// UTC start of the run, RFC 3339 (e.g. `2026-11-26T13:40:00Z`).
    pub started_at: String,
    /// UTC end of the run, RFC 3339.
    #[serde(default)]
    pub finished_at: String,
    /// Where the numbers were measured.
    pub env: Env,
    /// One entry per (scenario, variant, rate, repetition) cell, in run order.
    pub runs: Vec<Run>,
    /// Variants that were requested but could not run (e.g. a peer proxy
    /// binary is missing). Never silently dropped.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

/// The machine and build a record was measured on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Env {
    /// Host name.
    pub host: String,
    /// Logical CPUs available to the run.
    pub cores: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// `git rev-parse --short HEAD` of the tree that was built, `unknown` outside git;
    /// suffixed `-dirty` when the tree had uncommitted changes.
    pub git_rev: String,
    /// Versions of the things measured: `weft`, `nginx`, `haproxy`, `rustc`, ...
    pub versions: BTreeMap<String, String>,
}

/// One measured cell.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Scenario name within the suite (e.g. `http1-small`).
    pub scenario: String,
    /// What was between the load generator and the server:
    /// `baseline`, `weft` (mTLS), `weft-plaintext`, `weft-client-only`, `weft-server-only`, `nginx`, `haproxy`, ...
    pub variant: String,
    /// Substrate the cell ran on: `local`, `netns`, `kind`.
    pub substrate: String,
    /// Application protocol spoken by the load generator: `http1` or `http2`.
    pub protocol: String,
    /// `open` (fixed arrival rate) or `closed` (fixed concurrency, max throughput).
    pub mode: String,
    /// Target arrival rate in requests/s for open-loop cells; `null` for closed loop.
    pub rate: Option<f64>,
    /// In-flight requests for closed-loop cells; `null` for open loop.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Connections the load generator opened.
    pub connections: u32,
    /// Request and response body size in bytes.
    pub body_size: u64,
    /// Repetition index, from 0.
    pub repetition: u32,
    /// Length of the measured window in seconds (warm-up excluded).
    pub duration_s: f64,
    /// Warm-up length in seconds (not in any statistic).
    #[serde(default)]
    pub warmup_s: f64,
    /// Requests completed in the measured window (successes and errors).
    pub requests: u64,
    /// Requests that failed in the measured window.
    pub errors: u64,
    /// Failures by class: `status_4xx`, `status_5xx`, `connect`, `timeout`, `io`, ...
    #[serde(default)]
    pub errors_by_class: BTreeMap<String, u64>,
    /// Open loop: requests sent more than 1 ms after their scheduled time
    /// because the generator had no free connection or CPU. Their latency
    /// still counts from the scheduled time; this says how often it happened.
    #[serde(default)]
    pub late_sends: u64,
    /// Completed requests per second over the measured window.
    pub achieved_rps: f64,
    /// Latency from each request's *scheduled* send time to the end of its
    /// response (coordinated-omission corrected), microseconds.
    pub latency_us: Percentiles,
    /// Latency from the *actual* send to the end of the response, microseconds.
    pub service_time_us: Percentiles,
    /// The corrected latency histogram (µs), HDR V2 deflate, base64.
    pub histogram: String,
    /// The service-time histogram (µs), HDR V2 deflate, base64.
    #[serde(default)]
    pub service_histogram: String,
    /// One entry per sampled process of the system under test.
    #[serde(default)]
    pub resources: Vec<Resource>,
}

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

/// Resource use of one process during the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Resource {
    /// Component name, unique within the run: `proxy-outbound`, `proxy-inbound`,
    /// `nginx`, `haproxy`, `server`, `control`, ...
    pub component: String,
    /// What it is: `proxy` (a mesh or peer proxy hop, the thing compared),
    /// `server` (the target app), or `control` (control plane).
    pub role: String,
    /// Largest resident set size seen, bytes (for multi-process peers: the sum over
    /// the process tree at each sample).
    pub rss_peak_bytes: u64,
    /// Mean resident set size over the samples, bytes.
    pub rss_mean_bytes: u64,
    /// CPU seconds (user + system) used during the measured window.
    pub cpu_seconds: f64,
    /// Number of samples taken (every 250 ms).
    #[serde(default)]
    pub samples: u32,
}

/// A requested variant that did not run, with the reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub scenario: String,
    pub variant: String,
    pub reason: String,
}

impl Run {
    /// Proxy CPU per 1000 rps: cores kept busy by all `proxy` resources
    /// (CPU-seconds / measured seconds) per 1000 achieved requests/s, the unit
    /// Istio and Linkerd publish ("0.2 vCPU per 1000 rps"). `None` when no
    /// proxy was sampled or no requests completed.
    pub fn proxy_cpu_per_krps(&self) -> Option<f64> {
        let cpu: f64 = self.resources.iter().filter(|r| r.role == "proxy").map(|r| r.cpu_seconds).sum();
        if self.duration_s <= 0.0 || self.achieved_rps <= 0.0 || !self.resources.iter().any(|r| r.role == "proxy") {
            return None;
        }
        Some(cpu / self.duration_s / (self.achieved_rps / 1000.0))
    }

    /// Peak RSS summed over `control` resources (the control plane), bytes;
    /// `None` if the variant ran without one.
    pub fn control_rss_peak(&self) -> Option<u64> {
        let mut any = false;
        let sum = self
            .resources
            .iter()
            .filter(|r| r.role == "control")
            .inspect(|_| any = true)
            .map(|r| r.rss_peak_bytes)
            .sum();
        any.then_some(sum)
    }

    /// Peak RSS summed over `proxy` resources, bytes; `None` if there are none.
    pub fn proxy_rss_peak(&self) -> Option<u64> {
        let mut any = false;
        let sum = self
            .resources
            .iter()
            .filter(|r| r.role == "proxy")
            .inspect(|_| any = true)
            .map(|r| r.rss_peak_bytes)
            .sum();
        any.then_some(sum)
    }
}
