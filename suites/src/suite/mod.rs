//! Suite files: the scenario model, its TOML shape, and validation.
//!
//! A suite file is parsed in two passes. The first (`Raw*` types) keeps the
//! byte span of every value so that the second pass, validation, can report
//! *every* problem with `file:line:col`, not just the first one serde meets.
//! `suites/README.md` documents every field; keep the two in step.

mod capacity;
mod sweep;
mod validate;

pub use capacity::CapacityShape;
pub use sweep::{SweepDimension, SweepShape};

use validate::{RawSuite, Validator};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The suites shipped inside the binary, so `bench` works from any directory.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("quick", include_str!("../../quick.toml")),
    ("ci", include_str!("../../ci.toml")),
    ("full", include_str!("../../full.toml")),
    ("hardening", include_str!("../../hardening.toml")),
    ("soak", include_str!("../../soak.toml")),
    ("kind", include_str!("../../kind.toml")),
    ("capacity", include_str!("../../capacity.toml")),
    ("gate", include_str!("../../gate.toml")),
];

/// What sits between the load generator and the target server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// No hop at all: the floor every other variant is compared against.
    Baseline,
    /// Client-side and server-side sidecars (outbound -> inbound), each
    /// certified by the control plane, speaking mTLS to each other: the mesh
    /// as it is deployed.
    Weft,
    /// The same two sidecars without identities: plaintext between them, no
    /// control plane. `weft` minus this is the cost of mTLS.
    WeftPlaintext,
    /// Only the client-side (outbound) sidecar.
    WeftClientOnly,
    /// Only the server-side (inbound) sidecar.
    WeftServerOnly,
    /// One nginx reverse-proxy hop.
    Nginx,
    /// One HAProxy reverse-proxy hop.
    Haproxy,
    /// Two nginx in a chain like `weft`'s sidecars: the client-side one
    /// originates TLS with a client certificate, the server-side one (one
    /// per replica) requires and verifies it; certificates from one CA made
    /// per run (`substrate::peers_mtls`).
    NginxMtls,
    /// The same chain of two HAProxy.
    HaproxyMtls,
    /// Linkerd, installed by its CLI: a peer mesh on the kind/kube substrate only.
    Linkerd,
    /// Istio (sidecar mode, `profile=minimal`): a peer mesh on the kind/kube substrate only.
    Istio,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Baseline,
        Variant::Weft,
        Variant::WeftPlaintext,
        Variant::WeftClientOnly,
        Variant::WeftServerOnly,
        Variant::Nginx,
        Variant::Haproxy,
        Variant::NginxMtls,
        Variant::HaproxyMtls,
        Variant::Linkerd,
        Variant::Istio,
    ];

    /// A scenario's variants when it lists none: everything that runs on
    /// this machine (the cluster peers, and the two-proxy peer chains,
    /// only where a suite asks for them: a chain is two more processes per
    /// cell, which suites written before it did not budget for).
    pub fn defaults() -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|v| !v.cluster_only() && !v.is_peer_chain())
            .collect()
    }

    /// The two-proxy peer chains with mTLS between them (`nginx-mtls`, `haproxy-mtls`).
    pub fn is_peer_chain(self) -> bool {
        matches!(self, Variant::NginxMtls | Variant::HaproxyMtls)
    }

    /// Meshes that only a cluster runs (their own CLIs install them).
    pub fn cluster_only(self) -> bool {
        matches!(self, Variant::Linkerd | Variant::Istio)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Weft => "weft",
            Variant::WeftPlaintext => "weft-plaintext",
            Variant::WeftClientOnly => "weft-client-only",
            Variant::WeftServerOnly => "weft-server-only",
            Variant::Nginx => "nginx",
            Variant::Haproxy => "haproxy",
            Variant::NginxMtls => "nginx-mtls",
            Variant::HaproxyMtls => "haproxy-mtls",
            Variant::Linkerd => "linkerd",
            Variant::Istio => "istio",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Every variant name, comma separated, for error messages.
    pub fn names() -> String {
        Variant::ALL.map(Variant::as_str).join(", ")
    }

    /// Whether the variant runs Weft's own proxies (what `proxy_args` tunes).
    pub fn has_weft_proxy(self) -> bool {
        matches!(self, Variant::Weft | Variant::WeftPlaintext | Variant::WeftClientOnly | Variant::WeftServerOnly)
    }

    /// Whether the variant's sidecars get their identities from
    /// `mesh-control` (so the substrate must run one for its scenario).
    pub fn needs_control_plane(self) -> bool {
        matches!(self, Variant::Weft)
    }

    /// Whether the variant may run in a scenario with several server
    /// replicas: `weft` balances over them (Destination), nginx and HAProxy
    /// round-robin over them, `baseline` is the floor (replica 0 alone). The
    /// static-route variants (`--route AUTHORITY=ADDR`) reach exactly one
    /// address, so a row of theirs would silently measure something else
    /// than its neighbours.
    pub fn spreads_over_replicas(self) -> bool {
        matches!(
            self,
            Variant::Baseline
                | Variant::Weft
                | Variant::Nginx
                | Variant::Haproxy
                | Variant::NginxMtls
                | Variant::HaproxyMtls
                | Variant::Linkerd
                | Variant::Istio
        )
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application protocol the load generator speaks to the first hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c).
    Http2,
    /// gRPC unary calls over h2c (`weft.bench.v1.Bench/Unary`).
    Grpc,
    /// gRPC server streaming over h2c: one sample per stream of this many messages.
    GrpcStream { messages: u32 },
    /// Opaque TCP: `body_size` bytes echoed over long-lived connections.
    Tcp,
    /// Opaque TCP with a new connection per echo (the per-connection cost).
    TcpChurn,
    /// WebSocket: one upgrade per connection, then echoed messages of `body_size` bytes.
    WebSocket,
}

/// Messages per `grpc-stream` exchange: loadgen's default (the suite model
/// builds without loadgen, for the fuzz targets; the assertion below keeps
/// the two equal).
pub const GRPC_STREAM_MESSAGES: u32 = 10;

#[cfg(feature = "bench")]
const _: () = assert!(GRPC_STREAM_MESSAGES == loadgen::proto::DEFAULT_STREAM_MESSAGES);

impl Protocol {
    /// Every value a suite file's `protocol` takes, in the order errors list them.
    pub const NAMES: [&'static str; 7] =
        ["http1", "http2", "grpc", "grpc-stream", "tcp", "tcp-churn", "websocket"];

    /// A suite file's `protocol` value (`grpc-stream` with loadgen's
    /// default messages per stream).
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name {
            "http1" => Protocol::Http1,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-stream" => Protocol::GrpcStream {
                messages: GRPC_STREAM_MESSAGES,
            },
            "tcp" => Protocol::Tcp,
            "tcp-churn" => Protocol::TcpChurn,
            "websocket" => Protocol::WebSocket,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::GrpcStream { .. } => "grpc-stream",
            Protocol::Tcp => "tcp",
            Protocol::TcpChurn => "tcp-churn",
            Protocol::WebSocket => "websocket",
        }
    }

    /// The HTTP version a readiness GET (`/healthz`) uses where this
    /// protocol's own exchange is not the probe: h2c for gRPC.
    pub fn http(self) -> Protocol {
        match self {
            Protocol::Http2 | Protocol::Grpc | Protocol::GrpcStream { .. } => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }

    /// Plain HTTP requests (http1, http2), as opposed to the protocols
    /// loadgen drives with their own exchange (gRPC, TCP, WebSocket).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http2)
    }

    /// loadgen's protocol for this one (`None`: plain HTTP requests).
    #[cfg(feature = "bench")]
    pub fn load(self) -> Option<loadgen::proto::Proto> {
        use loadgen::proto::Proto;
        match self {
            Protocol::Http1 | Protocol::Http2 => None,
            Protocol::Grpc => Some(Proto::Grpc),
            Protocol::GrpcStream { messages } => Some(Proto::GrpcStream { messages }),
            Protocol::Tcp => Some(Proto::Tcp),
            Protocol::TcpChurn => Some(Proto::TcpChurn),
            Protocol::WebSocket => Some(Proto::WebSocket),
        }
    }

    /// Whether each exchange is one HTTP request a proxy counts (HTTP,
    /// gRPC calls): what the cross-check compares. An opaque relay counts
    /// no requests, and a WebSocket is one request (the upgrade) carrying
    /// every message of its connection.
    pub fn one_request_per_exchange(self) -> bool {
        !matches!(self, Protocol::Tcp | Protocol::TcpChurn | Protocol::WebSocket)
    }

    /// Opaque TCP: no HTTP anywhere on the path (the target is an echo).
    pub fn is_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::TcpChurn)
    }
}

/// How load is offered.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadShape {
    /// Open loop: each rate (requests/s) is one point of the matrix.
    Open { rates: Vec<f64> },
    /// Closed loop: a fixed number of requests in flight, as fast as possible.
    Closed { concurrency: usize },
    /// No load: the control plane's discovery propagation (a manifests edit
    /// until a `Destination.Get` stream sees it) at `services` Services with
    /// `endpoints` endpoints in all, over `changes` edits.
    Propagation(PropagationShape),
    /// Open loop at rates a search picks: the highest rate within an SLO.
    Capacity(CapacityShape),
    /// One dimension grown over sizes, a cost measured at each.
    Sweep(SweepShape),
}

/// The scale of a propagation measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropagationShape {
    pub services: usize,
    /// In all, spread evenly: a multiple of `services`.
    pub endpoints: usize,
    /// Edits measured, each to a different Service (at most `services`).
    pub changes: usize,
}

/// One validated scenario with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub load: LoadShape,
    pub duration: Duration,
    pub warmup: Duration,
    pub repetitions: u32,
    pub connections: usize,
    pub protocol: Protocol,
    pub body_size: usize,
    pub server_delay: Duration,
    pub server_threads: usize,
    /// Target server replicas (each behind its own sidecar for `weft`).
    pub replicas: usize,
    /// The last replica answers after this delay instead of `server_delay`
    /// (`None`: every replica is alike).
    pub slow_replica_delay: Option<Duration>,
    /// Each proxy of a variant held to this many CPUs once deployed, as a
    /// pod's CPU limit holds a sidecar (`None`: unlimited; see `cpu_limit`).
    pub proxy_cpu: Option<f64>,
    /// mesh-proxy flags added to every Weft proxy of the scenario (e.g.
    /// `["--max-concurrent-requests", "256"]`); the flags a substrate sets
    /// itself are refused when the suite is read.
    pub proxy_args: Vec<String>,
    pub timeout: Duration,
    pub variants: Vec<Variant>,
    /// Soak, fault or overload: what the runner does around the load
    /// (`None`: a plain measurement).
    pub hardening: Option<Hardening>,
}

/// The hardening modes (see `suites/README.md`): each runs the `weft`
/// variant only.
#[derive(Clone, Debug, PartialEq)]
pub enum Hardening {
    /// Steady open-loop load while RSS and open fds are sampled.
    Soak(SoakShape),
    /// Open-loop load with a disruption at a known time.
    Fault(FaultShape),
    /// Capacity (closed loop at the scenario's `concurrency`), then
    /// `factor` x capacity open loop, then a sustainable rate again.
    Overload(OverloadShape),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoakShape {
    /// Time between samples.
    pub interval: Duration,
    /// Samples before this are not judged.
    pub settle: Duration,
    /// Width of the windows whose medians are compared.
    pub window: Duration,
    /// Allowed max/min of the window medians, minus 1 (0.10: 10 %).
    pub tolerance: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// One server replica (app and sidecar) SIGKILLed; its endpoint stays
    /// published, as before the kubelet notices.
    ReplicaKill,
    /// mesh-control SIGKILLed, started again `fault_for` later.
    ControlRestart,
    /// Certificates short-lived enough that every proxy renews every `fault_every`.
    CertRotation,
    /// The last replica's endpoint removed and added back every `fault_every`.
    EndpointChurn,
    /// The last replica's server sidecar SIGSTOPped for `fault_for`, then SIGCONT.
    PeerFreeze,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::ReplicaKill,
        Fault::ControlRestart,
        Fault::CertRotation,
        Fault::EndpointChurn,
        Fault::PeerFreeze,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::ReplicaKill => "replica-kill",
            Fault::ControlRestart => "control-restart",
            Fault::CertRotation => "cert-rotation",
            Fault::EndpointChurn => "endpoint-churn",
            Fault::PeerFreeze => "peer-freeze",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Whether the fault acts on one of several replicas.
    pub fn needs_replicas(self) -> bool {
        matches!(self, Fault::ReplicaKill | Fault::EndpointChurn | Fault::PeerFreeze)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultShape {
    pub fault: Fault,
    /// Start of the disruption, from the start of the measured window.
    pub at: Duration,
    /// Length of the disruption window (for a kill: how long it is watched
    /// as "during").
    pub length: Duration,
    /// Period of repeated disruptions (churn, rotation).
    pub every: Duration,
}

impl FaultShape {
    /// The certificate lifetime that makes proxies (which renew at 70 % of
    /// it) rotate every `every`, for [`Fault::CertRotation`].
    pub fn cert_lifetime(&self) -> Option<Duration> {
        (self.fault == Fault::CertRotation)
            .then(|| Duration::from_secs((self.every.as_secs_f64() / 0.7).round().max(1.0) as u64))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverloadShape {
    /// Offered overload as a multiple of the measured capacity.
    pub factor: f64,
    /// Length of the capacity measurement.
    pub capacity_duration: Duration,
    /// The sustainable rate before and after, as a fraction of capacity.
    pub sustainable: f64,
}

/// A validated suite.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// Where it came from: a path, or `embedded:NAME`.
    pub origin: String,
    pub scenarios: Vec<Scenario>,
}

/// One problem found in a suite file, located by line and column (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read suite file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no suite named `{name}`: not a file, not ./suites/{name}.toml, and not one of the built-in suites ({})", builtin_names())]
    NotFound { name: String },
    /// One line per problem, each `file:line:col: message`.
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn builtin_names() -> String {
    EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}:{}:{}: {}", p.line, p.col, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- loading ------------------------------------------------------------------

/// Resolve `--suite`: an existing path, else `./suites/NAME.toml`, else a
/// built-in suite by name.
pub fn resolve(spec: &str) -> Result<Suite, SuiteError> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return load_file(as_path);
    }
    let local = Path::new("suites").join(format!("{spec}.toml"));
    if !spec.contains('/') && local.is_file() {
        return load_file(&local);
    }
    match EMBEDDED.iter().find(|(n, _)| *n == spec) {
        Some((name, text)) => parse(text, &format!("embedded:{name}")),
        None => Err(SuiteError::NotFound {
            name: spec.to_string(),
        }),
    }
}

/// Load and validate a suite file.
pub fn load_file(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parse and validate suite text; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Suite, SuiteError> {
    let raw: RawSuite = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        SuiteError::Invalid {
            file: file.to_string(),
            problems: vec![Problem {
                line,
                col,
                message: e.message().trim().to_string(),
            }],
        }
    })?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let suite = v.suite(raw, file);
    if v.problems.is_empty() {
        Ok(suite)
    } else {
        v.problems.sort_by_key(|p| (p.line, p.col));
        // A bad value in [defaults] is found once per scenario inheriting it.
        v.problems.dedup();
        Err(SuiteError::Invalid {
            file: file.to_string(),
            problems: v.problems,
        })
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, text[line_start..offset].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "t.toml") {
            Err(SuiteError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
                .collect(),
            Ok(_) => panic!("expected problems, suite parsed"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn embedded_suites_are_valid() {
        for (name, text) in EMBEDDED {
            let s = parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&s.name, name);
            assert!(!s.scenarios.is_empty());
            // `weft` vs `weft-plaintext` is the cost of mTLS: never one without
            // the other where both can run (one replica; a load scenario; not
            // a cluster suite, where Weft always runs with mTLS; not the
            // same-run gate's, which compares two builds of one variant).
            for sc in s
                .scenarios
                .iter()
                .filter(|sc| {
                    *name != "gate"
                        && sc.replicas == 1
                        && sc.hardening.is_none()
                        && !matches!(sc.load, LoadShape::Propagation(_))
                        && !sc.variants.iter().any(|v| v.cluster_only())
                })
            {
                assert_eq!(
                    sc.variants.contains(&Variant::Weft),
                    sc.variants.contains(&Variant::WeftPlaintext),
                    "{name}: {}",
                    sc.name
                );
            }
        }
    }

    #[test]
    fn only_meshed_variants_need_the_control_plane() {
        let needs: Vec<&str> = Variant::ALL
            .into_iter()
            .filter(|v| v.needs_control_plane())
            .map(Variant::as_str)
            .collect();
        assert_eq!(needs, ["weft"]);
        let s = parse(
            "name = \"t\"\n[[scenario]]\nname = \"a\"\nrates = [1]\nvariants = [\"baseline\", \"weft-plaintext\"]\n[[scenario]]\nname = \"b\"\nrates = [1]\nvariants = [\"weft\"]\n[[scenario]]\nname = \"c\"\nrates = [1]\n",
            "t",
        )
        .unwrap();
        let topo: Vec<bool> = s
            .scenarios
            .iter()
            .map(|sc| crate::substrate::ScenarioTopology::of(sc).control_plane)
            .collect();
        assert_eq!(
            topo,
            [false, true, true],
            "the default (every variant) includes weft"
        );
    }

    #[test]
    fn defaults_are_inherited_and_overridden() {
        let s = parse(
            r#"
name = "x"
[defaults]
duration = "3s"
connections = 4
variants = ["baseline", "weft"]
rates = [100]
[[scenario]]
name = "a"
[[scenario]]
name = "b"
duration = "1s"
protocol = "http2"
mode = "closed"
concurrency = 2
"#,
            "t",
        )
        .unwrap();
        let a = &s.scenarios[0];
        assert_eq!(a.duration, Duration::from_secs(3));
        assert_eq!(a.connections, 4);
        assert_eq!(a.load, LoadShape::Open { rates: vec![100.0] });
        assert_eq!(a.variants, vec![Variant::Baseline, Variant::Weft]);
        let b = &s.scenarios[1];
        assert_eq!(b.duration, Duration::from_secs(1));
        assert_eq!(b.protocol, Protocol::Http2);
        assert_eq!(b.load, LoadShape::Closed { concurrency: 2 });
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let p = problems(
            r#"name = "bad"
[defaults]
duration = "0s"
variants = ["baseline", "envoy"]
[[scenario]]
name = "a"
rates = [100, -5, 0]
[[scenario]]
name = "a"
rates = [10]
variants = []
[[scenario]]
name = "c"
mode = "closed"
warmup = "soon"
"#,
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("3:12 `duration` must be longer than 0"),
            "{joined}"
        );
        assert!(
            joined.contains("4:25 unknown variant `envoy`: expected one of baseline, weft, weft-plaintext, weft-client-only, weft-server-only, nginx, haproxy"),
            "{joined}"
        );
        assert!(
            joined.contains("7:15 rate must be a positive number of requests/s, got -5"),
            "{joined}"
        );
        assert!(
            joined.contains("7:19 rate must be a positive number"),
            "{joined}"
        );
        assert!(
            joined.contains("9:8 duplicate scenario name `a` (first used on line 6)"),
            "{joined}"
        );
        assert!(joined.contains("11:12 `variants` is empty"), "{joined}");
        assert!(
            joined.contains("closed-loop scenario needs `concurrency = N`"),
            "{joined}"
        );
        assert!(
            joined.contains("15:10 `warmup` = \"soon\" is not a duration"),
            "{joined}"
        );
        assert_eq!(p.len(), 8, "each problem once: {joined}");
    }

    #[test]
    fn unknown_fields_and_syntax_errors_have_a_location() {
        let e = parse(
            "name = \"x\"\n[[scenario]]\nname = \"a\"\nrate = [1]\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml:4:1: unknown field `rate`"), "{e}");
        let e = parse("name = \"x\"\n[[scenario]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:2:"), "{e}");
        let e = parse(
            "name = \"x\"\n[[scenario]]\nname = \"a\"\nrates = [1]\nconnections = \"many\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml:5:"), "{e}");
    }

    #[test]
    fn mode_conflicts_are_reported() {
        let p = problems("name = \"x\"\n[[scenario]]\nname = \"a\"\nmode = \"closed\"\nconcurrency = 0\nrates = [1]\n[[scenario]]\nname = \"b\"\nmode = \"sideways\"\n");
        let joined = p.join("\n");
        assert!(
            joined.contains("5:15 `concurrency` must be between 1"),
            "{joined}"
        );
        assert!(
            joined.contains("6:9 `rates` is for open-loop scenarios"),
            "{joined}"
        );
        assert!(joined.contains("9:8 unknown mode `sideways`"), "{joined}");
    }

    #[test]
    fn proxy_cpu_is_inherited_and_bounded() {
        let s = parse(
            "name = \"c\"\n[defaults]\nrates = [1]\nproxy_cpu = 0.3\n[[scenario]]\nname = \"a\"\n[[scenario]]\nname = \"b\"\nproxy_cpu = 1.5\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(s.scenarios[0].proxy_cpu, Some(0.3));
        assert_eq!(s.scenarios[1].proxy_cpu, Some(1.5));
        assert_eq!(resolve("quick").unwrap().scenarios[0].proxy_cpu, None);
        let p = problems("name = \"c\"\n[defaults]\nrates = [1]\n[[scenario]]\nname = \"a\"\nproxy_cpu = 0\n");
        assert_eq!(p, vec!["6:13 `proxy_cpu` must be between 0.1 and 64, got 0".to_string()], "{p:?}");
    }

    #[test]
    fn proxy_args_are_tuning_flags_only() {
        let s = parse(
            "name = \"c\"\n[defaults]\nrates = [1]\n[[scenario]]\nname = \"a\"\nproxy_args = [\"--max-concurrent-requests\", \"256\", \"--max-queued-requests=0\"]\n[[scenario]]\nname = \"b\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(s.scenarios[0].proxy_args, ["--max-concurrent-requests", "256", "--max-queued-requests=0"]);
        assert!(s.scenarios[1].proxy_args.is_empty());
        let p = problems("name = \"c\"\n[defaults]\nrates = [1]\n[[scenario]]\nname = \"a\"\nproxy_args = [\"--threads\", \"4\", \"256\", \"--app=1.2.3.4:5\"]\n");
        assert_eq!(
            p,
            vec![
                "6:15 `proxy_args`: `--threads` is set by the substrate for each proxy; only tuning flags may be given (see `mesh-proxy --help`)".to_string(),
                "6:33 `proxy_args`: `256` is neither a `--flag` nor the value after one".to_string(),
                "6:40 `proxy_args`: `--app` is set by the substrate for each proxy; only tuning flags may be given (see `mesh-proxy --help`)".to_string(),
            ],
            "{p:?}"
        );
    }

    #[test]
    fn replicas_and_a_slow_replica() {
        let s = parse(
            "name = \"r\"\n[defaults]\nslow_replica_delay = \"20ms\"\nrates = [1]\n[[scenario]]\nname = \"one\"\n[[scenario]]\nname = \"three\"\nreplicas = 3\nslow_replica_delay = \"50ms\"\nvariants = [\"baseline\", \"weft\", \"nginx\", \"haproxy\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.scenarios[0].replicas, 1, "the default");
        assert_eq!(
            s.scenarios[0].slow_replica_delay,
            Some(Duration::from_millis(20)),
            "inherited, unused with one replica"
        );
        assert_eq!(s.scenarios[1].replicas, 3);
        assert_eq!(
            s.scenarios[1].slow_replica_delay,
            Some(Duration::from_millis(50))
        );
        let topo = crate::substrate::ScenarioTopology::of(&s.scenarios[1]);
        assert_eq!(
            (topo.replicas, topo.slow_replica_delay),
            (3, Some(Duration::from_millis(50)))
        );
    }

    #[test]
    fn replica_problems_are_located() {
        let p = problems(
            r#"name = "r"
[defaults]
rates = [1]
[[scenario]]
name = "a"
replicas = 0
[[scenario]]
name = "b"
slow_replica_delay = "50ms"
[[scenario]]
name = "c"
replicas = 2
variants = ["weft", "weft-plaintext"]
[[scenario]]
name = "d"
replicas = 2
slow_replica_delay = "slow"
"#,
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("6:12 `replicas` must be between 1 and 64, got 0"),
            "{joined}"
        );
        assert!(
            joined.contains("9:22 `slow_replica_delay` needs `replicas` of 2 or more"),
            "{joined}"
        );
        assert!(
            joined.contains("13:21 variant `weft-plaintext` routes statically to one address"),
            "{joined}"
        );
        assert!(joined.contains("16:12 `replicas` > 1 with the default variants, which include weft-plaintext, weft-client-only, weft-server-only"), "{joined}");
        assert!(
            joined.contains("17:22 `slow_replica_delay` = \"slow\" is not a duration"),
            "{joined}"
        );
        assert_eq!(p.len(), 5, "{joined}");
    }

    #[test]
    fn propagation_scenarios() {
        let s = parse(
            "name = \"p\"\n[defaults]\nrates = [1]\nvariants = [\"baseline\"]\n[[scenario]]\nname = \"d\"\nmode = \"propagation\"\n[[scenario]]\nname = \"e\"\nmode = \"propagation\"\nservices = 10\nendpoints = 30\nchanges = 4\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            s.scenarios[0].load,
            LoadShape::Propagation(PropagationShape {
                services: 1000,
                endpoints: 2000,
                changes: 20
            })
        );
        assert_eq!(
            s.scenarios[1].load,
            LoadShape::Propagation(PropagationShape {
                services: 10,
                endpoints: 30,
                changes: 4
            })
        );
        assert_eq!(
            s.scenarios[1].variants,
            [Variant::Weft],
            "the control plane alone"
        );
        let cells = crate::plan::cells(&s);
        assert_eq!(cells.len(), 2);
        assert_eq!(
            crate::plan::label(&s, &cells[1]),
            "e propagation 10 svc/30 ep x4 rep 1/1"
        );

        let p = problems(
            "name = \"p\"\n[[scenario]]\nname = \"a\"\nmode = \"propagation\"\nservices = 3\nendpoints = 7\nchanges = 5\nrates = [1]\nvariants = [\"weft\"]\n[[scenario]]\nname = \"b\"\nrates = [1]\nservices = 2\n",
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("6:13 `endpoints` (7) must be a multiple of `services` (3)"),
            "{joined}"
        );
        assert!(
            joined.contains("7:11 `changes` (5) may not exceed `services` (3)"),
            "{joined}"
        );
        assert!(
            joined.contains("8:9 `rates` is for load scenarios"),
            "{joined}"
        );
        assert!(
            joined.contains("9:12 `variants` has no meaning for mode = \"propagation\""),
            "{joined}"
        );
        assert!(
            joined.contains("13:12 `services` is for mode = \"propagation\" scenarios"),
            "{joined}"
        );
        assert_eq!(p.len(), 5, "{joined}");
    }

    #[test]
    fn hardening_modes() {
        let s = parse(
            "name = \"h\"\n[defaults]\nrates = [10]\nduration = \"20s\"\n[[scenario]]\nname = \"s\"\nmode = \"soak\"\nsettle = \"5s\"\nflat_window = \"5s\"\n[[scenario]]\nname = \"f\"\nmode = \"fault\"\nfault = \"cert-rotation\"\nfault_at = \"0s\"\nfault_for = \"20s\"\nfault_every = \"10s\"\n[[scenario]]\nname = \"o\"\nmode = \"overload\"\nconcurrency = 4\n",
            "t",
        )
        .unwrap();
        for sc in &s.scenarios {
            assert_eq!(sc.variants, [Variant::Weft], "{}: weft by default", sc.name);
        }
        assert!(matches!(&s.scenarios[0].hardening, Some(Hardening::Soak(k)) if k.tolerance == 0.10 && k.interval == Duration::from_secs(5)));
        let Some(Hardening::Fault(f)) = &s.scenarios[1].hardening else { panic!() };
        assert_eq!(f.cert_lifetime(), Some(Duration::from_secs(14)), "renewed at 70 %: every ~10 s");
        assert_eq!(crate::substrate::ScenarioTopology::of(&s.scenarios[1]).cert_lifetime, Some(Duration::from_secs(14)));
        assert_eq!(crate::substrate::ScenarioTopology::of(&s.scenarios[0]).cert_lifetime, None);
        assert!(matches!(&s.scenarios[2].hardening, Some(Hardening::Overload(o)) if o.factor == 3.0));
        assert_eq!(s.scenarios[2].load, LoadShape::Closed { concurrency: 4 });

        let p = problems(
            "name = \"h\"\n[defaults]\nrates = [10]\nduration = \"10s\"\n[[scenario]]\nname = \"a\"\nmode = \"fault\"\nfault = \"meteor\"\n[[scenario]]\nname = \"b\"\nmode = \"fault\"\nfault = \"replica-kill\"\nvariants = [\"nginx\"]\n[[scenario]]\nname = \"c\"\nsettle = \"1m\"\n[[scenario]]\nname = \"d\"\nmode = \"soak\"\n[[scenario]]\nname = \"e\"\nmode = \"fault\"\nfault = \"peer-freeze\"\nreplicas = 2\nfault_at = \"8s\"\n",
        );
        let joined = p.join("\n");
        assert!(joined.contains("8:9 unknown fault `meteor`: expected one of replica-kill, control-restart, cert-rotation, endpoint-churn, peer-freeze"), "{joined}");
        assert!(joined.contains("12:9 fault `replica-kill` acts on one of several replicas"), "{joined}");
        assert!(joined.contains("13:12 soak, fault and overload scenarios run the mesh itself"), "{joined}");
        assert!(joined.contains("16:10 `settle` is for mode = \"soak\" scenarios"), "{joined}");
        assert!(joined.contains("must fit in `duration` (10s): flatness compares at least two windows"), "{joined}");
        assert!(joined.contains("`fault_at` + `fault_for` (8s + 5s) must fit in `duration` (10s)"), "{joined}");
        assert_eq!(p.len(), 6, "{joined}");
    }

    #[test]
    fn missing_scenarios_and_name() {
        let p = problems("description = \"nothing\"\n");
        assert!(
            p.iter().any(|p| p.contains("missing top-level `name")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("no [[scenario]] tables")),
            "{p:?}"
        );
    }
}
