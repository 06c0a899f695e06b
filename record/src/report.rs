//! The report: one `report.json` per `bench run` (or `bench conformance`).
//!
//! Field meanings are documented here and in `reports/SCHEMA.md`; the two
//! must agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conformance::TestResult;
use crate::load::Load;
use crate::propagation::Propagation;

/// Version of the record layout written by this build. Bump on any change a
/// reader of an older record would misread, and teach [`crate::io`] to
/// migrate the older one.
pub const SCHEMA_VERSION: u32 = 2;

/// A whole run of the harness: the environment, then what was measured and
/// checked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`] once read or written by this build (older
    /// records are migrated on reading).
    pub schema: u32,
    /// Suite name (the `name` field of the suite file, e.g. `quick`; `conformance`
    /// for `bench conformance`).
    pub suite: String,
    /// UTC start of the run, RFC 3339 (e.g. `2026-11-26T13:40:00Z`).
    pub started_at: String,
    /// UTC end of the run, RFC 3339.
    #[serde(default)]
    pub finished_at: String,
    /// Where the numbers were measured.
    pub env: Env,
    /// Load runs: one entry per (scenario, variant, rate, repetition) cell, in run order.
    #[serde(default)]
    pub runs: Vec<Run>,
    /// Variants that were requested but could not run (e.g. a peer proxy
    /// binary is missing), and cells that failed. Never silently dropped.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Discovery propagation runs, one per (scenario, repetition).
    #[serde(default)]
    pub propagation: Vec<Propagation>,
    /// Conformance results, one per (test, substrate, variant).
    #[serde(default)]
    pub conformance: Vec<TestResult>,
    /// Hostile-client results (`bench hostile`), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostile: Option<crate::hostile::HostileRun>,
    /// Soak, fault-under-load and overload runs (`crate::soak`, `crate::faults`).
    #[serde(default, flatten)]
    pub hardening: crate::Hardening,
    /// Capacity-at-an-SLO searches (`mode = "capacity"`), one per
    /// (scenario, variant, repetition); absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<crate::CapacityRun>,
    /// Scale sweeps (`mode = "sweep"`), one per (scenario, variant,
    /// repetition); absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweeps: Vec<crate::SweepRun>,
    /// Derived from `runs` when the record is written (`crate::summary`):
    /// every load cell's figures with their spread and noise verdicts.
    /// Absent when empty; never an input to Weft's own readers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<crate::CellSummary>,
}

impl Report {
    /// An empty report of this build's schema: push runs, propagation and
    /// conformance results into it, set `finished_at`, then write it with
    /// [`crate::io::write_report_json`].
    pub fn new(suite: impl Into<String>, started_at: impl Into<String>, env: Env) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            suite: suite.into(),
            started_at: started_at.into(),
            finished_at: String::new(),
            env,
            runs: Vec::new(),
            skipped: Vec::new(),
            propagation: Vec::new(),
            conformance: Vec::new(),
            hostile: None,
            hardening: crate::Hardening::default(),
            capacity: Vec::new(),
            sweeps: Vec::new(),
            cells: Vec::new(),
        }
    }

    /// What a rendered page calls this record: a conformance report when it
    /// holds only conformance results, a benchmark report otherwise.
    pub fn title(&self) -> String {
        let kind = if self.runs.is_empty() && self.propagation.is_empty() && !self.conformance.is_empty() {
            "conformance"
        } else if self.runs.is_empty() && self.hostile.is_some() {
            "hostile-clients"
        } else {
            "benchmark"
        };
        format!("Weft {kind} report: {}", self.suite)
    }
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

/// One measured cell: where and what was loaded, loadgen's [`Load`] as it
/// came out of the engine, and the resources the system under test used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Scenario name within the suite (e.g. `http1-small`).
    pub scenario: String,
    /// What was between the load generator and the server:
    /// `baseline`, `weft` (mTLS), `weft-plaintext`, `weft-client-only`, `weft-server-only`, `nginx`, `haproxy`, ...
    pub variant: String,
    /// Substrate the cell ran on: `local`, `netns`, `kind`.
    pub substrate: String,
    /// Repetition index, from 0.
    pub repetition: u32,
    /// The load and everything measured of it; its fields sit at the same
    /// level as the ones above in JSON.
    #[serde(flatten)]
    pub load: Load,
    /// One entry per sampled process of the system under test.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// What the cell's Weft proxies counted in the window, beside loadgen's
    /// count; absent for variants without a Weft proxy and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_counts: Option<crate::CrossCheck>,
    /// CPUs each proxy was limited to (the scenario's `proxy_cpu`); absent:
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_cpu: Option<f64>,
    /// mesh-proxy flags the scenario added to each Weft proxy
    /// (`proxy_args`); absent: the proxy's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_args: Vec<String>,
    /// How busy the machine was during the measured window, and how much
    /// of its CPU time the hypervisor gave to other guests; absent where
    /// the load ran elsewhere (kind) and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostCpu>,
}

/// The whole machine's CPU time over a window, from `/proc/stat` (all
/// CPUs together), as shares of the window's CPU time.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HostCpu {
    /// Share the hypervisor gave to other guests while this one had work
    /// (`steal`): time every process here waited for, unseen by its own
    /// CPU accounting. A virtual machine under a busy host shows it as
    /// stalls in the latency tails of every variant alike.
    pub steal: f64,
    /// Share spent running anything (user, system, interrupts), 0..1.
    pub busy: f64,
}

impl HostCpu {
    /// Above this share of stolen CPU time a window is disturbed: on the
    /// project's 2-core VM, a capacity probe's failure at such a window was
    /// the host's, not the system's (docs/FIGURES.md, "CPU stolen by the
    /// hypervisor").
    pub const DISTURBED_STEAL: f64 = 0.05;

    /// The hypervisor took more than [`HostCpu::DISTURBED_STEAL`].
    pub fn disturbed(&self) -> bool {
        self.steal > Self::DISTURBED_STEAL
    }
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
    /// Largest anonymous resident memory seen (`RssAnon`: heap, stacks and
    /// the process's own data), bytes, summed like `rss_peak_bytes`. The
    /// rest of the RSS is file-backed pages, mostly the executable's and
    /// its libraries' code, which every process of the same binary shares.
    /// Absent where the substrate cannot tell the two apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_anon_peak_bytes: Option<u64>,
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
        let l = &self.load;
        if l.duration_s <= 0.0 || l.achieved_rps <= 0.0 || !self.resources.iter().any(|r| r.role == "proxy") {
            return None;
        }
        let cpu: f64 = self.resources.iter().filter(|r| r.role == "proxy").map(|r| r.cpu_seconds).sum();
        Some(cpu / l.duration_s / (l.achieved_rps / 1000.0))
    }

    /// Peak RSS summed over `control` resources (the control plane), bytes;
    /// `None` if the variant ran without one.
    pub fn control_rss_peak(&self) -> Option<u64> {
        self.rss_peak_of("control")
    }

    /// Peak RSS summed over `proxy` resources, bytes; `None` if there are none.
    pub fn proxy_rss_peak(&self) -> Option<u64> {
        self.rss_peak_of("proxy")
    }

    /// Peak anonymous (private) memory summed over `proxy` resources,
    /// bytes; `None` if there are none or one of them lacks the figure.
    pub fn proxy_rss_anon_peak(&self) -> Option<u64> {
        let mut proxies = self.resources.iter().filter(|r| r.role == "proxy").peekable();
        proxies.peek()?;
        proxies.map(|r| r.rss_anon_peak_bytes).sum()
    }

    fn rss_peak_of(&self, role: &str) -> Option<u64> {
        let mut of_role = self.resources.iter().filter(|r| r.role == role).peekable();
        of_role.peek()?;
        Some(of_role.map(|r| r.rss_peak_bytes).sum())
    }
}
