//! Proxy configuration, validated once at startup.
//!
//! Every problem is collected and reported together so an operator fixes a
//! bad command line in one go rather than one flag per restart.

pub mod cli;
pub mod conns;
pub mod own;
pub mod shed;

pub use conns::Conns;
pub use shed::Shedding;

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use mesh_identity::SpiffeId;

/// Everything the proxy needs to start. Built from the CLI by
/// [`crate::config::cli::Args::into_config`] or directly by embedders and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the application sends its outbound traffic.
    pub outbound_listen: SocketAddr,
    /// Where peers reach the local application.
    pub inbound_listen: SocketAddr,
    /// `/metrics`, `/ready`, `/live`.
    pub admin_listen: SocketAddr,
    /// Static outbound routes, authority -> upstream address.
    pub routes: Vec<Route>,
    /// The local application; `None` disables the inbound listener.
    pub app: Option<SocketAddr>,
    /// Runtime worker threads; 1 selects tokio's current-thread runtime.
    pub threads: usize,
    /// Request size and time limits applied on both listeners.
    pub limits: Limits,
    /// Connection-level timeouts and limits (keepalive, idle, connect, body pace).
    pub conns: Conns,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Local TCP listeners whose bytes go to a fixed address (opaque TCP).
    pub tcp_forwards: Vec<TcpForward>,
    /// Local TCP listeners balanced over a Service's endpoints.
    pub tcp_services: Vec<TcpService>,
    /// This workload's identity and how to get certified; `None` runs
    /// plaintext only.
    pub mesh: Option<MeshConfig>,
    /// Who may reach an inbound port while its own policy is not known:
    /// before the first answer of `--policy`, while the control plane is
    /// unreachable at start, and always without `--policy`.
    pub default_inbound_policy: DefaultInboundPolicy,
    /// Tell the app who called: add `weft-client-id` to meshed inbound requests.
    pub forward_client_identity: bool,
    /// How to recognise mesh-control (`--trust-anchor`, `--control-identity`):
    /// the control plane is TLS only, so `--control`, `--destination` and
    /// `--policy` all need it.
    pub control_trust: Option<ControlTrust>,
    /// mesh-control's Destination gRPC address: authorities without a
    /// static route are resolved and balanced through it.
    pub destination: Option<String>,
    /// mesh-control's Policy gRPC address: outbound routes (with
    /// `destination`) and the inbound authorization policy of `--app`'s port
    /// (transparent: of each original destination's port).
    pub policy: Option<String>,
    /// Behind iptables `REDIRECT` rules (`weft init`): each connection goes
    /// to its original destination (`SO_ORIGINAL_DST`) instead of the Host
    /// header (outbound) or `app` (inbound, which then needs no `app`).
    pub transparent: bool,
    /// Features switched off for conformance testing (`--disable`); all
    /// on by default. Never for production.
    pub disabled: Disabled,
    /// `--transparent`: destination ports whose connections skip protocol
    /// detection (opaque TCP at once), besides those discovery names.
    pub opaque_ports: OpaquePorts,
    /// How many discovered authorities are kept, and for how long unused.
    pub discovery: DiscoveryLimits,
}

/// Bounds on the discovered-authority state (`--destination`): each
/// authority holds a Service and a backend set, each with its own stream to
/// mesh-control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLimits {
    /// An authority no request used for this long is dropped, and its
    /// streams closed (`--discovery-idle-timeout`).
    pub idle_timeout: Duration,
    /// Services (and, separately, backend sets) kept at most; the least
    /// recently used unused ones go first (`--max-discovered-authorities`).
    pub max_authorities: usize,
}

impl Default for DiscoveryLimits {
    /// 60 s: Linkerd's router caches kept idle entries 60 s (its outbound
    /// discovery cache now 5 s); longer than a typical poll or health-check
    /// period, so a periodic caller keeps its balancer statistics and
    /// connections, and an idle authority survives a control-plane restart.
    /// 400: two streams each stay under mesh-control's default 1,000
    /// streams per connection, with room for the inbound policy watches.
    /// Measured (debug build, `bench hostile --only distinct-hosts`): 5,000
    /// distinct Hosts grew the proxy by 13.7 MiB at this cap, i.e. at most
    /// ~35 KiB per held authority (Service, backend set, two h2 streams and
    /// allocator slack); a per-entry figure on a release build is still owed.
    fn default() -> Self {
        Self { idle_timeout: Duration::from_secs(60), max_authorities: 400 }
    }
}

/// Ports known to carry opaque TCP (`--opaque-ports`): with
/// `--transparent`, connections to them are relayed without waiting for
/// the client's first bytes, so a server-speaks-first protocol gets no
/// detection delay even without a control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaquePorts(pub Vec<(u16, u16)>);

impl OpaquePorts {
    /// Linkerd's default opaque ports: SMTP (25, 587), MySQL (3306), Galera
    /// (4444), PostgreSQL (5432), Redis (6379), Elasticsearch transport
    /// (9300), memcached (11211). Server-speaks-first protocols, or ones
    /// where detection is known to misfire.
    pub const DEFAULT: &'static str = "25,587,3306,4444,5432,6379,9300,11211";

    /// Whether `port` is one of them.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }
}

impl Default for OpaquePorts {
    fn default() -> Self {
        Self::DEFAULT.parse().expect("the default list parses")
    }
}

impl FromStr for OpaquePorts {
    type Err = String;

    /// Parses `3306,5000-5010` (empty: none).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            match (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
                (Ok(lo), Ok(hi)) if lo > 0 && lo <= hi => out.push((lo, hi)),
                _ => {
                    return Err(format!(
                        "--opaque-ports {s:?}: {part:?} is not a port or a range lo-hi in 1..=65535 (e.g. 3306,5000-5010)"
                    ))
                }
            }
        }
        Ok(Self(out))
    }
}

/// Mesh features switched off with `--disable` (env `WEFT_PROXY_DISABLE`),
/// for conformance testing only: the conformance suite runs once with each
/// feature off and expects the tests of that feature to fail, which shows
/// the tests can fail. The proxy logs a warning per switch at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Disabled {
    /// Outbound routes ignored: every request to a Service goes to the
    /// Service itself (plain balancing), no matches, filters, splits,
    /// redirects, per-route timeouts or retries.
    pub routes: bool,
    /// Inbound authorization policy not enforced: as before any policy
    /// arrives (`--default-inbound-policy` decides).
    pub authz: bool,
    /// Route retries never happen.
    pub retries: bool,
    /// Route timeouts (`request`, `backendRequest`) ignored; only
    /// `--request-timeout` bounds an attempt.
    pub timeouts: bool,
}

impl Disabled {
    /// The feature names `--disable` takes.
    pub const NAMES: [&'static str; 4] = ["routes", "authz", "retries", "timeouts"];

    /// Whether anything is switched off.
    pub fn any(&self) -> bool {
        self.routes || self.authz || self.retries || self.timeouts
    }
}

impl fmt::Display for Disabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = [self.routes, self.authz, self.retries, self.timeouts];
        let names: Vec<&str> = Self::NAMES.iter().zip(on).filter(|(_, off)| *off).map(|(n, _)| *n).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Disabled {
    type Err = String;

    /// Parses a comma-separated list such as `routes,retries` (empty: none).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut d = Disabled::default();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "routes" => d.routes = true,
                "authz" => d.authz = true,
                "retries" => d.retries = true,
                "timeouts" => d.timeouts = true,
                other => {
                    return Err(format!(
                        "--disable {s:?}: unknown feature {other:?} (expected a comma-separated list of {}; \
                         for conformance testing only)",
                        Self::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(d)
    }
}

/// Meshed mode: who we are, where to get certified, whom to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// This workload's SPIFFE ID.
    pub identity: SpiffeId,
    /// mesh-control's identity gRPC address (`host:port`, reached over TLS).
    pub control: String,
    /// The SPIFFE ID mesh-control must present (`--control-identity`).
    pub control_identity: SpiffeId,
    /// The bootstrap token, read from `--token-file` at load.
    pub token: Secret,
    /// `--token-file`, re-read before every Certify (projected ServiceAccount
    /// tokens are rotated by the kubelet).
    pub token_file: PathBuf,
    /// Where the trust anchors came from, for messages: `--trust-anchor FILE`
    /// or `--trust-anchor-pem`.
    pub trust_anchor_source: String,
    /// Trust anchor certificates, PEM, read and checked at load.
    pub trust_anchor_pem: Vec<u8>,
}

/// Whom the control plane must be: its certificate chains to these trust
/// anchors and names exactly this SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTrust {
    /// mesh-control's SPIFFE ID.
    pub identity: SpiffeId,
    /// Where the trust anchors came from, for messages: `--trust-anchor FILE`
    /// or `--trust-anchor-pem`.
    pub trust_anchor_source: String,
    /// Trust anchor certificates, PEM, read and checked at load.
    pub trust_anchor_pem: Vec<u8>,
}

/// Bytes that must never be printed (tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A port's inbound authorization until its policy is known (and without
/// `--policy`): the names mesh-control uses for a port's default
/// (`config.weft.io/default-inbound-policy`, `--default-inbound-policy` of
/// mesh-control), so one vocabulary covers both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultInboundPolicy {
    /// Everyone, plaintext clients included (`all-unauthenticated`, alias `allow`).
    AllUnauthenticated,
    /// Any meshed (mTLS) client; plaintext refused. Strict by default: a
    /// proxy that has not heard its policy yet must not let in what the
    /// policy may refuse, and plaintext is what no policy needs to allow.
    #[default]
    AllAuthenticated,
    /// No one.
    Deny,
}

impl DefaultInboundPolicy {
    /// Whether plaintext (unauthenticated) clients are let in.
    pub fn allows_plaintext(self) -> bool {
        self == Self::AllUnauthenticated
    }
}

impl FromStr for DefaultInboundPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" | "all-unauthenticated" => Ok(Self::AllUnauthenticated),
            "all-authenticated" => Ok(Self::AllAuthenticated),
            "deny" => Ok(Self::Deny),
            other => Err(format!(
                "--default-inbound-policy {other:?}: expected all-unauthenticated (or allow), all-authenticated or deny"
            )),
        }
    }
}

impl fmt::Display for DefaultInboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::Deny => "deny",
        })
    }
}

/// Limits applied to every downstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (HTTP/1 read buffer, HTTP/2 header list) accepted.
    pub max_header_bytes: usize,
    /// Largest request body forwarded; larger ones get 413.
    pub max_request_body_bytes: u64,
    /// HTTP/1 clients must send their full request head within this time.
    pub header_read_timeout: Duration,
    /// Upper bound from a request's head to its response's last byte: a
    /// late head is a 504, a body still streaming is cut.
    pub request_timeout: Duration,
    /// Requests in flight per listener direction (inbound, outbound); more
    /// wait in the queue.
    pub max_concurrent_requests: usize,
    /// Requests waiting for an in-flight slot per direction (at most the
    /// request timeout); past this, requests get 503 overloaded at once.
    pub max_queued_requests: usize,
    /// Shedding by queue time inside the proxy, below those caps.
    pub shed: Shedding,
    /// Inbound: after a client's first byte, how long to wait for enough
    /// bytes to tell TLS / HTTP / opaque TCP apart (then: opaque).
    pub detect_timeout: Duration,
    /// Weft proxies a request may pass through (each adds one to its
    /// `weft-hops` header); a request that already passed this many is a
    /// loop: 502 `kind=loop` (`stack::loop_guard`).
    pub max_hops: u32,
    /// HTTP/2 streams a client may have open on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS): what one connection can queue in
    /// the proxy.
    pub h2_max_concurrent_streams: u32,
}

/// `--max-hops` bounds: a meshed request passes two proxies (outbound and
/// inbound), so less than 2 refuses every meshed request.
pub const MAX_HOPS_RANGE: std::ops::RangeInclusive<u32> = 2..=1024;

/// `--http2-max-concurrent-streams` bounds: at least one stream, and no more
/// than a proxy should hold for one connection.
pub const H2_STREAMS_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;

/// The most requests in flight, or queued, per direction: far above what
/// one proxy serves, and far below tokio's semaphore limit.
pub const MAX_REQUEST_SLOTS: usize = 1 << 24;

/// hyper refuses HTTP/1 read buffers smaller than this (it panics), so the
/// header limit is validated against it up front.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_request_body_bytes: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 10_000,
            max_queued_requests: 100,
            shed: Shedding::default(),
            detect_timeout: Duration::from_secs(1),
            // Eight meshed app-to-app calls when every app forwards all of
            // its request's headers into the next one (two hops each).
            max_hops: 16,
            // RFC 9113's recommended floor and a peer proxy's streams per
            // connection; at 3x overload 200 held 1.7x the memory for no
            // more goodput (docs/FIGURES.md, "Overload, fifth session").
            h2_max_concurrent_streams: 100,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            outbound_listen: SocketAddr::from(([127, 0, 0, 1], 4140)),
            inbound_listen: SocketAddr::from(([0, 0, 0, 0], 4143)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 4191)),
            routes: Vec::new(),
            app: None,
            threads: 1,
            limits: Limits::default(),
            conns: Conns::default(),
            drain_timeout: Duration::from_secs(30),
            tcp_forwards: Vec::new(),
            tcp_services: Vec::new(),
            mesh: None,
            control_trust: None,
            default_inbound_policy: DefaultInboundPolicy::default(),
            forward_client_identity: false,
            destination: None,
            policy: None,
            transparent: false,
            disabled: Disabled::default(),
            opaque_ports: OpaquePorts::default(),
            discovery: DiscoveryLimits::default(),
        }
    }
}

impl Config {
    /// Checks cross-field invariants, returning every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.threads == 0 {
            problems.push("--threads 0: need at least one worker thread".to_owned());
        }
        if self.limits.max_header_bytes < MIN_HEADER_BYTES {
            problems.push(format!(
                "--max-header-bytes {}: must be at least {MIN_HEADER_BYTES}",
                self.limits.max_header_bytes
            ));
        }
        if u32::try_from(self.limits.max_header_bytes).is_err() {
            problems.push(format!(
                "--max-header-bytes {}: must fit in 32 bits (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE)",
                self.limits.max_header_bytes
            ));
        }
        if self.limits.max_concurrent_requests == 0 || self.limits.max_concurrent_requests > MAX_REQUEST_SLOTS {
            problems.push(format!(
                "--max-concurrent-requests {}: must be between 1 and {MAX_REQUEST_SLOTS}",
                self.limits.max_concurrent_requests
            ));
        }
        if !MAX_HOPS_RANGE.contains(&self.limits.max_hops) {
            problems.push(format!(
                "--max-hops {}: must be in {}..={} (a meshed request passes two proxies)",
                self.limits.max_hops,
                MAX_HOPS_RANGE.start(),
                MAX_HOPS_RANGE.end()
            ));
        }
        if !H2_STREAMS_RANGE.contains(&self.limits.h2_max_concurrent_streams) {
            problems.push(format!(
                "--http2-max-concurrent-streams {}: must be in {}..={} (streams one client may have open on one connection)",
                self.limits.h2_max_concurrent_streams,
                H2_STREAMS_RANGE.start(),
                H2_STREAMS_RANGE.end()
            ));
        }
        if self.limits.max_queued_requests > MAX_REQUEST_SLOTS {
            problems.push(format!(
                "--max-queued-requests {}: must be at most {MAX_REQUEST_SLOTS} (0: shed as soon as every slot is taken)",
                self.limits.max_queued_requests
            ));
        }
        for (name, d) in [
            ("--header-read-timeout", self.limits.header_read_timeout),
            ("--request-timeout", self.limits.request_timeout),
            ("--detect-timeout", self.limits.detect_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{name} 0s: must be greater than zero"));
            }
        }
        problems.extend(self.conns.problems());
        problems.extend(self.limits.shed.problems());
        if self.discovery.idle_timeout.is_zero() {
            problems.push("--discovery-idle-timeout 0s: must be greater than zero".to_owned());
        }
        if self.discovery.max_authorities == 0 {
            problems.push("--max-discovered-authorities 0: must be at least 1".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            if !seen.insert(route.authority.as_str()) {
                problems.push(format!(
                    "--route {route}: authority {:?} is routed more than once",
                    route.authority
                ));
            }
        }
        for (flag, addr) in [("--destination", &self.destination), ("--policy", &self.policy)] {
            if let Some(a) = addr {
                if let Err(e) = check_grpc_addr(a) {
                    problems.push(format!("{flag} {a:?}: {e}"));
                }
                if self.control_trust.is_none() {
                    problems.push(format!(
                        "{flag} {a}: mesh-control is reached over TLS only; give a usable --trust-anchor FILE or \
                         --trust-anchor-pem PEM (the mesh's trust anchor) to verify it"
                    ));
                }
            }
        }
        if self.control_trust.is_some() && self.mesh.is_none() && self.destination.is_none() && self.policy.is_none() {
            problems.push(
                "--trust-anchor given without --identity or --destination/--policy: nothing would use it".to_owned(),
            );
        }
        if self.destination.is_none() {
            for svc in &self.tcp_services {
                problems.push(format!("--tcp-service {svc}: needs --destination to resolve {:?}", svc.authority));
            }
        }
        if self.transparent {
            if let Some(app) = self.app {
                problems.push(format!(
                    "--app {app}: not used with --transparent (each inbound connection goes to its original \
                     destination, the pod IP and app port it was sent to); remove --app"
                ));
            }
            for route in &self.routes {
                problems.push(format!(
                    "--route {route}: not used with --transparent (requests go to their connection's original \
                     destination, resolved through --destination, not by Host); remove --route"
                ));
            }
        }
        let mesh_needed = |what: String| format!("{what}: mTLS needs this proxy's own identity (--identity, --control, --token-file, --trust-anchor)");
        if self.mesh.is_none() {
            for route in self.routes.iter().filter(|r| r.identity.is_some()) {
                problems.push(mesh_needed(format!("--route {route}")));
            }
            for fwd in self.tcp_forwards.iter().filter(|f| f.identity.is_some()) {
                problems.push(mesh_needed(format!("--tcp-forward {fwd}")));
            }
            // Without an identity no client can authenticate, and without
            // --policy nothing will ever let one in: refuse to start rather
            // than refuse every connection.
            let inbound = self.app.map(|a| format!("--app {a}")).or(self.transparent.then(|| "--transparent".to_owned()));
            if let (Some(inbound), None, false) = (inbound, &self.policy, self.default_inbound_policy.allows_plaintext()) {
                problems.push(format!(
                    "{inbound} on a plaintext-only proxy without --policy: the default inbound policy {} would refuse \
                     every client; pass --default-inbound-policy all-unauthenticated to accept plaintext clients, or \
                     give the proxy an identity (--identity, --control, --token-file, --trust-anchor)",
                    self.default_inbound_policy
                ));
            }
            if self.forward_client_identity {
                problems.push(mesh_needed("--forward-client-identity".to_owned()));
            }
        }
        ConfigError::from_problems(problems)
    }

    /// Whether this proxy has (or will get) a workload certificate.
    pub fn is_meshed(&self) -> bool {
        self.mesh.is_some()
    }
}

/// A control-plane address: `host:port` (always TLS, so no scheme).
fn check_grpc_addr(addr: &str) -> Result<(), String> {
    if addr.contains("://") {
        return Err("give host:port without a scheme: mesh-control is always reached over TLS and verified by \
                    its SPIFFE ID (--control-identity)"
            .to_owned());
    }
    let uri: http::Uri = format!("http://{addr}").parse().map_err(|_| "not an address (expected host:port)".to_owned())?;
    match uri.authority() {
        Some(a) if a.port_u16().is_some() && !a.host().is_empty() => Ok(()),
        _ => Err("needs host and port, e.g. 127.0.0.1:8086".to_owned()),
    }
}

/// Splits `ADDR[@SPIFFE_ID]`.
fn parse_target(flag: &str, whole: &str, target: &str) -> Result<(SocketAddr, Option<SpiffeId>), String> {
    let (addr, identity) = match target.split_once('@') {
        Some((a, id)) => (a, Some(id)),
        None => (target, None),
    };
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| format!("{flag} {whole:?}: {addr:?} is not a socket address (ip:port)"))?;
    let identity = identity
        .map(|id| SpiffeId::parse(id).map_err(|e| format!("{flag} {whole:?}: {e}")))
        .transpose()?;
    Ok((addr, identity))
}

fn fmt_target(f: &mut fmt::Formatter<'_>, addr: SocketAddr, identity: Option<&SpiffeId>) -> fmt::Result {
    write!(f, "{addr}")?;
    match identity {
        Some(id) => write!(f, "@{id}"),
        None => Ok(()),
    }
}

/// An opaque TCP forward: connections to `listen` are relayed to `addr`,
/// inside Weft mTLS when `identity` names the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpForward {
    /// Local listening address (port 0 picks one; announced on stdout).
    pub listen: SocketAddr,
    /// Where the bytes go: the peer's inbound proxy (meshed) or the server itself.
    pub addr: SocketAddr,
    /// The peer's expected SPIFFE ID; `None` relays in plaintext.
    pub identity: Option<SpiffeId>,
}

impl fmt::Display for TcpForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.listen)?;
        fmt_target(f, self.addr, self.identity.as_ref())
    }
}

impl FromStr for TcpForward {
    type Err = String;

    /// Parses `LISTEN=ADDR[@SPIFFE_ID]`, e.g. `127.0.0.1:0=127.0.0.1:4143@spiffe://cluster.local/ns/db/sa/db`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (listen, target) = s.split_once('=').ok_or_else(|| {
            format!("--tcp-forward {s:?}: expected LISTEN=ADDR[@SPIFFE_ID], e.g. 127.0.0.1:5432=10.0.0.7:4143")
        })?;
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| format!("--tcp-forward {s:?}: {listen:?} is not a socket address (ip:port)"))?;
        let (addr, identity) = parse_target("--tcp-forward", s, target)?;
        Ok(TcpForward { listen, addr, identity })
    }
}

/// A discovered opaque TCP forward: connections to `listen` are balanced
/// over the endpoints of `authority` (needs `--destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpService {
    /// Local listening address (port 0 picks one; announced on stdout).
    pub listen: SocketAddr,
    /// The Service authority (`host:port`, lower-case) resolved through Destination.
    pub authority: String,
}

impl fmt::Display for TcpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.listen, self.authority)
    }
}

impl FromStr for TcpService {
    type Err = String;

    /// Parses `LISTEN=AUTHORITY`, e.g. `127.0.0.1:5432=db.prod.svc.cluster.local:5432`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (listen, authority) = s
            .split_once('=')
            .ok_or_else(|| format!("--tcp-service {s:?}: expected LISTEN=AUTHORITY, e.g. 127.0.0.1:5432=db.prod:5432"))?;
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| format!("--tcp-service {s:?}: {listen:?} is not a socket address (ip:port)"))?;
        let ok = authority
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| a.port_u16().is_some() && !a.host().is_empty() && !authority.contains('@'));
        if !ok {
            return Err(format!("--tcp-service {s:?}: {authority:?} is not host:port"));
        }
        Ok(TcpService { listen, authority: authority.to_ascii_lowercase() })
    }
}

/// One static route: requests whose authority is `authority` go to `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `host` or `host:port`, stored lower-case (authorities are case-insensitive).
    pub authority: String,
    /// Upstream socket address.
    pub addr: SocketAddr,
    /// The upstream's expected SPIFFE ID: set, the route is meshed (mTLS,
    /// HTTP/2 between the proxies); unset, plaintext in the request's protocol.
    pub identity: Option<SpiffeId>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.authority)?;
        fmt_target(f, self.addr, self.identity.as_ref())
    }
}

impl FromStr for Route {
    type Err = String;

    /// Parses `AUTHORITY=ADDR[@SPIFFE_ID]`, e.g. `web.default:80=127.0.0.1:8080`
    /// or `web:80=10.0.0.7:4143@spiffe://cluster.local/ns/default/sa/web`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (authority, target) = s.split_once('=').ok_or_else(|| {
            format!("--route {s:?}: expected AUTHORITY=ADDR[@SPIFFE_ID], e.g. web:80=127.0.0.1:8080")
        })?;
        if authority.is_empty() || authority.parse::<http::uri::Authority>().is_err() {
            return Err(format!(
                "--route {s:?}: {authority:?} is not a valid authority (host or host:port)"
            ));
        }
        let (addr, identity) = parse_target("--route", s, target)?;
        Ok(Route {
            authority: authority.to_ascii_lowercase(),
            addr,
            identity,
        })
    }
}

/// Parses a byte size such as `65536`, `64KiB`, `16MiB`, `1GiB`, `10kB`, `5MB`.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 65536, 64KiB, 16MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("{s:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, kB, MB, GB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Every configuration problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// Each names the offending flag and value.
    pub problems: Vec<String>,
}

impl ConfigError {
    pub(crate) fn from_problems(problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parses_and_lowercases() {
        let r: Route = "Web.Default:80=127.0.0.1:8080".parse().unwrap();
        assert_eq!(r.authority, "web.default:80");
        assert_eq!(r.addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn route_errors_name_the_value() {
        let e = "web=nonsense".parse::<Route>().unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
        let e = "no-equals".parse::<Route>().unwrap_err();
        assert!(e.contains("no-equals"), "{e}");
        let e = "bad host=127.0.0.1:1".parse::<Route>().unwrap_err();
        assert!(e.contains("bad host"), "{e}");
    }

    #[test]
    fn route_with_identity() {
        let r: Route = "web:80=127.0.0.1:4143@spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        assert_eq!(r.addr, "127.0.0.1:4143".parse().unwrap());
        assert_eq!(r.identity.as_ref().map(|i| i.as_str()), Some("spiffe://cluster.local/ns/default/sa/web"));
        assert_eq!(r.to_string(), "web:80=127.0.0.1:4143@spiffe://cluster.local/ns/default/sa/web");
        let e = "web=127.0.0.1:1@http://nope".parse::<Route>().unwrap_err();
        assert!(e.contains("http://nope"), "{e}");
    }

    #[test]
    fn tcp_forward_parses() {
        let f: TcpForward = "127.0.0.1:0=127.0.0.1:9@spiffe://td/ns/a/sa/b".parse().unwrap();
        assert_eq!(f.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(f.to_string(), "127.0.0.1:0=127.0.0.1:9@spiffe://td/ns/a/sa/b");
        let f: TcpForward = "127.0.0.1:1=127.0.0.1:2".parse().unwrap();
        assert!(f.identity.is_none());
        assert!("x=127.0.0.1:2".parse::<TcpForward>().unwrap_err().contains("\"x\""));
    }

    #[test]
    fn tcp_service_parses_and_needs_destination() {
        let t: TcpService = "127.0.0.1:0=DB.prod:5432".parse().unwrap();
        assert_eq!(t.authority, "db.prod:5432");
        assert!("127.0.0.1:0=db".parse::<TcpService>().unwrap_err().contains("\"db\""));
        let cfg = Config { tcp_services: vec![t], ..Config::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("--destination"));
    }

    #[test]
    fn meshed_features_need_an_identity() {
        let cfg = Config {
            routes: vec!["a=127.0.0.1:1@spiffe://td/ns/a/sa/b".parse().unwrap()],
            tcp_forwards: vec!["127.0.0.1:0=127.0.0.1:2@spiffe://td/ns/a/sa/b".parse().unwrap()],
            app: Some("127.0.0.1:3".parse().unwrap()),
            forward_client_identity: true,
            ..Config::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(err.to_string().contains("--default-inbound-policy all-unauthenticated"), "{err}");
        let open = Config { default_inbound_policy: DefaultInboundPolicy::AllUnauthenticated, app: cfg.app, ..Config::default() };
        assert!(open.validate().is_ok(), "plaintext-only with an explicit permissive default");
        let watched = Config { policy: Some("127.0.0.1:8086".into()), ..open.clone() };
        assert!(watched.validate().is_err_and(|e| !e.to_string().contains("--default-inbound-policy")), "a policy may allow plaintext later");
    }

    #[test]
    fn opaque_ports() {
        let d = OpaquePorts::default();
        assert!(d.contains(3306) && d.contains(25) && !d.contains(80) && !d.contains(8080));
        let p: OpaquePorts = "7000, 5000-5010".parse().unwrap();
        assert!(p.contains(7000) && p.contains(5005) && !p.contains(5011) && !p.contains(3306));
        assert!("".parse::<OpaquePorts>().unwrap().0.is_empty());
        for bad in ["0", "9-3", "http", "70000"] {
            assert!(bad.parse::<OpaquePorts>().unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("65536").unwrap(), 65536);
        assert_eq!(parse_byte_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_byte_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_byte_size("5MB").unwrap(), 5_000_000);
        assert!(parse_byte_size("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_byte_size("").is_err());
    }

    #[test]
    fn validate_reports_every_problem() {
        let cfg = Config {
            threads: 0,
            limits: Limits {
                max_header_bytes: 10,
                h2_max_concurrent_streams: 0,
                ..Limits::default()
            },
            routes: vec!["a=127.0.0.1:1".parse().unwrap(), "a=127.0.0.1:2".parse().unwrap()],
            ..Config::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(err.to_string().contains("--http2-max-concurrent-streams 0: must be in 1..=10000"), "{err}");
        assert!(Config::default().validate().is_ok());
    }
}
