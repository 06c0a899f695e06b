//! Hostile-client results (`bench hostile`): one [`Attack`] per (attack,
//! listener, mode) with what the proxy did, its memory and a well-behaved
//! client's p99 during the attack.

use serde::{Deserialize, Serialize};

/// What the proxy did with one attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Answered with an HTTP error status (`status`) and nothing reached the app.
    Refused,
    /// HTTP/2: a GOAWAY (`detail` names the error code), then the connection closed.
    Goaway,
    /// The connection was closed (FIN) without an answer.
    Closed,
    /// The connection was reset (RST).
    Reset,
    /// The proxy kept the connection and kept up (flood frames answered or
    /// ignored under back-pressure); memory decides the verdict.
    Absorbed,
    /// Every attempt was answered (e.g. many Hosts: a 5xx for each unknown
    /// one) and the connections stayed usable; memory decides the verdict.
    Served,
    /// The request (or a smuggled one) reached the app.
    Forwarded,
    /// Neither answered nor closed within the observation window.
    Hung,
    /// The harness could not run the attack (`detail` says why); never a pass.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Goaway => "goaway",
            Outcome::Closed => "closed",
            Outcome::Reset => "reset",
            Outcome::Absorbed => "absorbed",
            Outcome::Served => "served",
            Outcome::Forwarded => "forwarded",
            Outcome::Hung => "hung",
            Outcome::Error => "error",
        }
    }
}

/// Memory of the attacked proxy (VmRSS from `/proc/<pid>/status`), MiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Just before the attack.
    pub before_mib: f64,
    /// Largest VmRSS sampled (every 50 ms) during the attack.
    pub peak_mib: f64,
    /// After the attack's connections were closed and the proxy had 1 s to settle.
    pub after_mib: f64,
}

/// One attack against one listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attack {
    /// Stable attack name, e.g. `smuggle-cl-te`, `h2-rapid-reset`, `slowloris`.
    pub attack: String,
    /// The listener attacked: `outbound` or `inbound`.
    pub listener: String,
    /// `plaintext` (outbound; inbound with `--inbound-plaintext allow`) or
    /// `mtls` (inbound, the attacker holding a valid mesh certificate).
    pub mode: String,
    pub outcome: Outcome,
    /// The HTTP status of a refusal (or of the answer to a forwarded request).
    #[serde(default)]
    pub status: Option<u16>,
    /// What was seen, in words (e.g. `GOAWAY ENHANCE_YOUR_CALM after 1000 resets`).
    #[serde(default)]
    pub detail: String,
    /// From the attack's start (for slow attacks: its first byte) until the
    /// proxy closed the connection, seconds; `null` if it did not.
    #[serde(default)]
    pub closed_after_s: Option<f64>,
    pub memory: Memory,
    /// The memory bound the verdict used: peak minus before, MiB.
    pub memory_bound_mib: f64,
    /// p99 of a well-behaved client (open loop, fixed rate) through the
    /// attacked proxy while the attack ran, µs; `null` when not measured.
    #[serde(default)]
    pub p99_during_us: Option<f64>,
    /// The same client's p99 with no attack running, µs.
    #[serde(default)]
    pub p99_quiet_us: Option<f64>,
    /// Errors the well-behaved client saw during the attack.
    #[serde(default)]
    pub probe_errors: u64,
    /// Whether the outcome is one the attack allows and memory stayed within
    /// the bound (the p99 ratio is recorded, never judged: timing is noisy).
    pub pass: bool,
}

impl Attack {
    /// `p99_during_us / p99_quiet_us`, when both were measured.
    pub fn p99_ratio(&self) -> Option<f64> {
        match (self.p99_during_us, self.p99_quiet_us) {
            (Some(d), Some(q)) if q > 0.0 => Some(d / q),
            _ => None,
        }
    }

    /// Peak minus before, MiB.
    pub fn growth_mib(&self) -> f64 {
        self.memory.peak_mib - self.memory.before_mib
    }
}

/// The whole `bench hostile` run's setup, for the reader of the results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostileRun {
    /// `full` or `short` (CI: smaller counts and windows).
    pub size: String,
    /// Idle connections opened against each listener.
    pub idle_connections: u32,
    /// Distinct Host headers sent through the discovering outbound proxy.
    pub distinct_hosts: u32,
    /// How long a slow attack is watched for the proxy to close it, seconds.
    pub window_s: f64,
    /// The well-behaved client's rate, requests/s.
    pub probe_rate: f64,
    /// Extra flags every proxy was started with (empty: defaults).
    #[serde(default)]
    pub proxy_args: Vec<String>,
    /// The proxies' RLIMIT_NOFILE soft limit as started.
    #[serde(default)]
    pub proxy_nofile: Option<u64>,
    pub attacks: Vec<Attack>,
}
