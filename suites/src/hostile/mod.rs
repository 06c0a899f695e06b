//! `bench hostile`: attacks on a real Weft deployment's listeners, each
//! judged by what the proxy did, what it cost in memory, and how a
//! well-behaved client fared meanwhile.
//!
//! ```text
//!  substrate::hostile::HostileMesh (control, echo app, 3 proxies)
//!     │ targets: outbound/plaintext, inbound/mtls (a valid mesh certificate), inbound/plaintext
//!     ▼
//!  for each target, each attack that applies:       (slow ones together, as one group)
//!     Sampler (VmRSS every 50 ms) + Probe (loadgen run, fixed rate) + the attack
//!     ──> Finding { outcome, status, closed after } ──> record::hostile::Attack (verdict)
//!     ▼
//!  report.json (`hostile`), report.md, report.html
//! ```
//!
//! Attacks are written by hand where a well-behaved client library would
//! refuse to misbehave: HTTP/1 as raw bytes ([`h1`]), HTTP/2 frame by frame
//! ([`h2`]), TLS as a bare ClientHello ([`tls`]).

pub mod command;
pub mod conn;
pub mod h1;
pub mod h2;
pub mod mass;
pub mod measure;
pub mod tls;

use std::time::Duration;

use record::hostile::Outcome;

use conn::{End, Mode, Target};
use h1::Vector;

/// What one attack saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub detail: String,
    /// From the attack's start until the proxy closed the connection.
    pub closed_after: Option<Duration>,
}

impl Finding {
    pub fn error(detail: String) -> Finding {
        Finding { outcome: Outcome::Error, status: None, detail, closed_after: None }
    }

    /// No HTTP answer: how the connection ended (`bytes`: what came first).
    pub fn ended(end: End, bytes: &[u8]) -> Finding {
        let outcome = match end {
            End::Eof(_) => Outcome::Closed,
            End::Reset(_) => Outcome::Reset,
            End::Open => Outcome::Hung,
        };
        let detail = match bytes.is_empty() {
            true => String::new(),
            false => format!("{} bytes back", bytes.len()),
        };
        Finding { outcome, status: None, detail, closed_after: end.after() }
    }
}

/// `full` (the issue's figures) or `short` (ci/test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Full,
    Short,
}

/// Counts, windows and bounds of one run.
#[derive(Clone, Debug)]
pub struct Params {
    pub size: Size,
    pub idle_connections: u32,
    pub hosts: u32,
    /// How long a slow attack (and the idle connections) is watched for
    /// the proxy to close it: past the proxy's default 10 s header and
    /// 30 s request timeouts in `full`; in `short` past the 10 s ones with
    /// margin for a loaded CI machine, below the 30 s one.
    pub window: Duration,
    /// How long a flood runs.
    pub flood: Duration,
    /// Most frames a flood sends.
    pub flood_units: u64,
    /// How long a single exchange (smuggling, headers) waits for an answer.
    pub exchange: Duration,
    /// The well-behaved client's rate, requests/s.
    pub probe_rate: f64,
    /// Largest growth of the attacked proxy's RSS (peak minus before) an
    /// attack may cause, MiB.
    pub memory_bound_mib: f64,
    /// The same for the many-Hosts attack, whose state is what grows.
    pub hosts_bound_mib: f64,
    /// The three targets attacked one after another (`full`) or at once
    /// (`short`, to fit ci/test's budget; its p99 figures are then mixed).
    pub parallel: bool,
}

impl Params {
    pub fn of(size: Size) -> Params {
        match size {
            Size::Full => Params {
                size,
                idle_connections: 10_000,
                hosts: 5_000,
                window: Duration::from_secs(40),
                flood: Duration::from_secs(5),
                flood_units: 200_000,
                exchange: Duration::from_secs(3),
                probe_rate: 200.0,
                memory_bound_mib: 64.0,
                hosts_bound_mib: 32.0,
                parallel: false,
            },
            Size::Short => Params {
                size,
                idle_connections: 1_000,
                hosts: 1_000,
                window: Duration::from_secs(16),
                flood: Duration::from_secs(1),
                flood_units: 100_000,
                exchange: Duration::from_secs(2),
                probe_rate: 100.0,
                memory_bound_mib: 64.0,
                hosts_bound_mib: 16.0,
                parallel: true,
            },
        }
    }
}

/// Every attack the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    Smuggle(Vector),
    OversizeHeader,
    ManyHeaders,
    MissingHost,
    Slowloris,
    SlowBody,
    H2RapidReset,
    H2Continuation,
    H2SettingsFlood,
    H2PingFlood,
    H2StalledPreface,
    TlsHelloSilence,
    TcpSilence,
    PlaintextOnMtls,
    IdleConnections,
    DistinctHosts,
}

impl Attack {
    pub fn all() -> Vec<Attack> {
        let mut v: Vec<Attack> = Vector::ALL.iter().map(|v| Attack::Smuggle(*v)).collect();
        v.extend([
            Attack::OversizeHeader,
            Attack::ManyHeaders,
            Attack::MissingHost,
            Attack::Slowloris,
            Attack::SlowBody,
            Attack::H2RapidReset,
            Attack::H2Continuation,
            Attack::H2SettingsFlood,
            Attack::H2PingFlood,
            Attack::H2StalledPreface,
            Attack::TlsHelloSilence,
            Attack::TcpSilence,
            Attack::PlaintextOnMtls,
            Attack::IdleConnections,
            Attack::DistinctHosts,
        ]);
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Attack::Smuggle(v) => v.name(),
            Attack::OversizeHeader => "oversize-header",
            Attack::ManyHeaders => "many-headers",
            Attack::MissingHost => "missing-host",
            Attack::Slowloris => "slowloris",
            Attack::SlowBody => "slow-body",
            Attack::H2RapidReset => "h2-rapid-reset",
            Attack::H2Continuation => "h2-continuation-flood",
            Attack::H2SettingsFlood => "h2-settings-flood",
            Attack::H2PingFlood => "h2-ping-flood",
            Attack::H2StalledPreface => "h2-stalled-preface",
            Attack::TlsHelloSilence => "tls-hello-then-silence",
            Attack::TcpSilence => "tcp-connect-then-silence",
            Attack::PlaintextOnMtls => "plaintext-on-mtls",
            Attack::IdleConnections => "idle-connections",
            Attack::DistinctHosts => "distinct-hosts",
        }
    }

    /// Watched for a close over [`Params::window`]; run together.
    pub fn slow(self) -> bool {
        matches!(
            self,
            Attack::Slowloris | Attack::SlowBody | Attack::H2StalledPreface | Attack::TlsHelloSilence | Attack::TcpSilence
        )
    }

    pub fn applies(self, t: &Target) -> bool {
        match self {
            Attack::PlaintextOnMtls => matches!(t.mode, Mode::Mtls(_)),
            // Discovery happens on the outbound side only.
            Attack::DistinctHosts => t.listener == "outbound",
            _ => true,
        }
    }

    /// How long the well-behaved client runs beside it.
    pub fn planned(self, p: &Params) -> Duration {
        match self {
            _ if self.slow() => p.window,
            Attack::IdleConnections => p.window,
            Attack::H2RapidReset | Attack::H2Continuation | Attack::H2SettingsFlood | Attack::H2PingFlood => p.flood,
            Attack::DistinctHosts => p.flood * 2,
            _ => Duration::from_secs(1),
        }
    }

    pub fn memory_bound_mib(self, p: &Params) -> f64 {
        match self {
            Attack::DistinctHosts => p.hosts_bound_mib,
            _ => p.memory_bound_mib,
        }
    }

    pub async fn run(self, t: &Target, p: &Params) -> Finding {
        let host = t.authority.as_str();
        let every = Duration::from_secs(1);
        match self {
            Attack::Smuggle(v) => h1::exchange(t, &v.request(host), p.exchange).await,
            Attack::OversizeHeader => h1::exchange(t, &h1::oversize_header(host), p.exchange).await,
            Attack::ManyHeaders => h1::exchange(t, &h1::many_headers(host), p.exchange).await,
            Attack::MissingHost => h1::exchange(t, &h1::missing_host(), p.exchange).await,
            Attack::Slowloris => h1::slow(t, b"", &h1::slowloris_bytes(host), every, p.window).await,
            Attack::SlowBody => h1::slow(t, &h1::slow_body_head(host), b"b", every, p.window).await,
            Attack::H2RapidReset => h2::flood(t, h2::rapid_reset(host, p.flood_units), p.flood).await,
            Attack::H2Continuation => h2::flood(t, h2::continuation(host, p.flood_units), p.flood).await,
            Attack::H2SettingsFlood => h2::flood(t, h2::settings(p.flood_units), p.flood).await,
            Attack::H2PingFlood => h2::flood(t, h2::ping(p.flood_units), p.flood).await,
            Attack::H2StalledPreface => h2::stalled_preface(t, p.window).await,
            Attack::TlsHelloSilence => match tls::client_hello(t) {
                Ok(hello) => tls::then_silence(t, &hello, p.window).await,
                Err(e) => Finding::error(e),
            },
            Attack::TcpSilence => tls::then_silence(t, b"", p.window).await,
            Attack::PlaintextOnMtls => tls::plaintext_on_mtls(t, p.exchange).await,
            Attack::IdleConnections => mass::idle_connections(t, p.idle_connections, p.window).await,
            Attack::DistinctHosts => mass::distinct_hosts(t, p.hosts, p.window * 3).await,
        }
    }

    /// Whether the proxy's answer is one this attack allows (memory and the
    /// well-behaved client are judged by the caller).
    pub fn allows(self, f: &Finding) -> bool {
        use Outcome::*;
        let status = f.status.unwrap_or(0);
        match self {
            Attack::Smuggle(_) => match f.outcome {
                Refused => (400..500).contains(&status) || status == 501,
                Closed | Reset => true,
                _ => false,
            },
            Attack::OversizeHeader | Attack::ManyHeaders => match f.outcome {
                Refused => (400..500).contains(&status),
                Closed | Reset => true,
                _ => false,
            },
            Attack::MissingHost => f.outcome == Refused && status == 400,
            Attack::PlaintextOnMtls => match f.outcome {
                Refused => status == 403,
                Closed | Reset => true,
                _ => false,
            },
            _ if self.slow() => match f.outcome {
                Refused => status >= 400,
                Closed | Reset => true,
                _ => false,
            },
            // Must be cut off: each frame costs the proxy work.
            Attack::H2RapidReset | Attack::H2Continuation => matches!(f.outcome, Goaway | Closed | Reset),
            // Acknowledging under back-pressure is a correct answer too.
            Attack::H2SettingsFlood | Attack::H2PingFlood => matches!(f.outcome, Goaway | Closed | Reset | Absorbed),
            Attack::IdleConnections => matches!(f.outcome, Closed | Absorbed),
            Attack::DistinctHosts => f.outcome == Served,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_names_are_unique() {
        let all = Attack::all();
        let names: std::collections::BTreeSet<_> = all.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn forwarding_a_smuggling_vector_or_hanging_never_passes() {
        let f = |outcome, status| Finding { outcome, status, detail: String::new(), closed_after: None };
        let cl_te = Attack::Smuggle(Vector::ClTe);
        assert!(cl_te.allows(&f(Outcome::Refused, Some(400))));
        assert!(!cl_te.allows(&f(Outcome::Forwarded, Some(200))));
        assert!(!cl_te.allows(&f(Outcome::Refused, Some(502))));
        assert!(!Attack::Slowloris.allows(&f(Outcome::Hung, None)));
        assert!(Attack::Slowloris.allows(&f(Outcome::Refused, Some(408))));
        assert!(!Attack::MissingHost.allows(&f(Outcome::Refused, Some(404))));
        assert!(!Attack::H2RapidReset.allows(&f(Outcome::Absorbed, None)));
        assert!(Attack::H2PingFlood.allows(&f(Outcome::Absorbed, None)));
    }
}
