//! Command-line interface of the `mesh-proxy` binary.
//!
//! Values are taken as strings and converted in [`Args::into_config`] so that
//! every bad value is reported at once, each naming the flag and the value.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use mesh_identity::{SpiffeId, TrustAnchors};

use crate::config::{
    parse_byte_size, Config, ConfigError, Conns, Shedding, ControlTrust, Disabled, DiscoveryLimits, Limits, OpaquePorts, MeshConfig, DefaultInboundPolicy, Route, Secret, TcpForward, TcpService,
};

/// Weft's sidecar micro-proxy: forwards HTTP/1.1 and HTTP/2 (h2c) between an
/// application and its peers, and serves metrics and health on an admin port.
#[derive(Debug, Clone, Parser)]
#[command(name = "mesh-proxy", version, about)]
pub struct Args {
    /// Listener for the application's outbound requests (routed by authority).
    #[arg(long, env = "WEFT_PROXY_OUTBOUND_LISTEN", default_value = "127.0.0.1:4140")]
    pub outbound_listen: String,

    /// Listener for inbound requests, forwarded to --app (or, with
    /// --transparent, to each connection's original destination). Only
    /// started with --app or --transparent.
    #[arg(long, env = "WEFT_PROXY_INBOUND_LISTEN", default_value = "0.0.0.0:4143")]
    pub inbound_listen: String,

    /// Admin listener: /metrics, /ready, /live.
    #[arg(long, env = "WEFT_PROXY_ADMIN_LISTEN", default_value = "127.0.0.1:4191")]
    pub admin_listen: String,

    /// Outbound route AUTHORITY=ADDR[@SPIFFE_ID] (repeatable; env: comma
    /// separated). The request's exact host:port is matched first, then its
    /// host alone. With @SPIFFE_ID the upstream is a meshed proxy: mTLS
    /// verifying that identity, HTTP/2 between the proxies.
    #[arg(long = "route", env = "WEFT_PROXY_ROUTE", value_name = "AUTHORITY=ADDR[@ID]", value_delimiter = ',')]
    pub routes: Vec<String>,

    /// Opaque TCP forward LISTEN=ADDR[@SPIFFE_ID] (repeatable; env: comma
    /// separated): connections to LISTEN are relayed to ADDR, inside mTLS
    /// when @SPIFFE_ID names the peer proxy.
    #[arg(long = "tcp-forward", env = "WEFT_PROXY_TCP_FORWARD", value_name = "LISTEN=ADDR[@ID]", value_delimiter = ',')]
    pub tcp_forwards: Vec<String>,

    /// Opaque TCP to a Service LISTEN=AUTHORITY (repeatable; env: comma
    /// separated): connections to LISTEN are balanced over AUTHORITY's
    /// endpoints from --destination, meshed ones inside mTLS.
    #[arg(long = "tcp-service", env = "WEFT_PROXY_TCP_SERVICE", value_name = "LISTEN=AUTHORITY", value_delimiter = ',')]
    pub tcp_services: Vec<String>,

    /// This workload's SPIFFE ID (spiffe://TD/ns/NS/sa/SA). Turns on mTLS;
    /// needs --control, --token-file and --trust-anchor.
    #[arg(long, env = "WEFT_PROXY_IDENTITY", value_name = "SPIFFE_ID")]
    pub identity: Option<String>,

    /// mesh-control's identity gRPC address (host:port), reached over TLS
    /// and verified by --trust-anchor and --control-identity.
    #[arg(long, env = "WEFT_PROXY_CONTROL", value_name = "ADDR")]
    pub control: Option<String>,

    /// mesh-control's SPIFFE ID: --control, --destination and --policy are
    /// TLS only, and the server must present exactly this identity, chained
    /// to --trust-anchor (its DNS name or IP is not what is checked).
    /// [default: spiffe://<trust domain of --identity, else cluster.local>/ns/weft/sa/mesh-control]
    #[arg(long, env = "WEFT_PROXY_CONTROL_IDENTITY", value_name = "SPIFFE_ID")]
    pub control_identity: Option<String>,

    /// File holding the bootstrap token proving --identity (read once at start).
    #[arg(long, env = "WEFT_PROXY_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// File holding the trust anchor certificate(s), PEM, of the mesh's
    /// trust domain: for mTLS, and to verify mesh-control (also needed with
    /// only --destination/--policy). Or give them inline with --trust-anchor-pem.
    #[arg(long, env = "WEFT_PROXY_TRUST_ANCHOR", value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,

    /// The trust anchor certificate(s) themselves, PEM text, instead of
    /// --trust-anchor FILE (not both): how injected proxies get them, so a
    /// pod needs nothing mounted from the control plane's namespace.
    #[arg(long, env = "WEFT_PROXY_TRUST_ANCHOR_PEM", value_name = "PEM", hide_env_values = true)]
    pub trust_anchor_pem: Option<String>,

    /// Who may reach an inbound port until its policy is known (before
    /// --policy's first answer, while mesh-control is unreachable, and
    /// always without --policy): all-unauthenticated (alias allow),
    /// all-authenticated (meshed clients only) or deny. Refused plaintext
    /// HTTP/1 gets 403, other plaintext is closed. A plaintext-only proxy
    /// with an inbound listener and no --policy must say all-unauthenticated.
    /// [default: all-authenticated]
    #[arg(long, env = "WEFT_PROXY_DEFAULT_INBOUND_POLICY", value_name = "POLICY")]
    pub default_inbound_policy: Option<String>,

    /// Deprecated spelling of --default-inbound-policy: allow =
    /// all-unauthenticated, deny = all-authenticated.
    #[arg(long, env = "WEFT_PROXY_INBOUND_PLAINTEXT", value_name = "allow|deny", hide = true)]
    pub inbound_plaintext: Option<String>,

    /// Add `weft-client-id: <SPIFFE ID>` to inbound requests from meshed
    /// peers (the header is always removed from requests arriving from outside).
    #[arg(long, env = "WEFT_PROXY_FORWARD_CLIENT_IDENTITY")]
    pub forward_client_identity: bool,

    /// mesh-control's Destination gRPC address (may equal --control).
    /// Authorities without a --route are resolved through it, balanced
    /// (P2C over peak-EWMA latency) and routed by their outbound policy.
    #[arg(long, env = "WEFT_PROXY_DESTINATION", value_name = "ADDR")]
    pub destination: Option<String>,

    /// mesh-control's Policy gRPC address (may equal --control): outbound
    /// routes, retries and timeouts (with --destination), and who may reach
    /// --app (with --transparent: each original destination port; 403 for
    /// HTTP, closed for TCP). Without it: any meshed identity.
    #[arg(long, env = "WEFT_PROXY_POLICY", value_name = "ADDR")]
    pub policy: Option<String>,

    /// Local application address for the inbound listener (not with --transparent).
    #[arg(long, env = "WEFT_PROXY_APP", value_name = "ADDR")]
    pub app: Option<String>,

    /// Transparent mode, behind the iptables REDIRECT rules of `weft init`:
    /// each connection goes to its original destination (SO_ORIGINAL_DST),
    /// not to the Host header (outbound) or --app (inbound; --app and
    /// --route are then configuration errors). Outbound: HTTP/1 and h2 are
    /// resolved as `ip:port` through --destination (else sent straight to
    /// the original destination), anything else (or a client silent for
    /// --detect-timeout) is relayed as opaque TCP. Connections whose
    /// original destination is one of this proxy's own ports, or that were
    /// not redirected, are closed and counted (reason loop / no_original_dst).
    #[arg(long, env = "WEFT_PROXY_TRANSPARENT")]
    pub transparent: bool,

    /// Runtime worker threads; 1 runs everything on one thread.
    #[arg(long, env = "WEFT_PROXY_THREADS", default_value = "1")]
    pub threads: String,

    /// Largest request head accepted (larger: 431). At least 8192.
    #[arg(long, env = "WEFT_PROXY_MAX_HEADER_BYTES", default_value = "65536")]
    pub max_header_bytes: String,

    /// Largest request body forwarded (larger: 413).
    #[arg(long, env = "WEFT_PROXY_MAX_REQUEST_BODY_BYTES", default_value = "16MiB")]
    pub max_request_body_bytes: String,

    /// HTTP/1 clients that have not sent a full request head by then are disconnected.
    #[arg(long, env = "WEFT_PROXY_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,

    /// Longest time from a request's head to its response's last byte: a
    /// late response head gets 504, a body still streaming is cut (stream
    /// reset or connection closed). Long streams need a longer one.
    #[arg(long, env = "WEFT_PROXY_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,

    /// Requests in flight per listener direction (inbound, outbound); more
    /// wait in a short queue (--max-queued-requests).
    #[arg(long, env = "WEFT_PROXY_MAX_CONCURRENT_REQUESTS", default_value = "10000")]
    pub max_concurrent_requests: String,

    /// Requests per direction waiting for an in-flight slot (each at most
    /// --request-timeout); when full, requests get 503 with
    /// `weft-proxy-error: overloaded ...` at once. 0: no queue.
    #[arg(long, env = "WEFT_PROXY_MAX_QUEUED_REQUESTS", default_value = "100")]
    pub max_queued_requests: String,

    /// HTTP/2 streams one client may have open at once on one connection
    /// to this proxy (SETTINGS_MAX_CONCURRENT_STREAMS, every listener).
    /// The proxy's queue under overload is at most this times the open
    /// connections; past it a client holds its requests itself instead of
    /// the proxy holding them in memory. 100 is RFC 9113's recommended
    /// floor and the streams this proxy puts on one upstream connection
    /// (--upstream-http2-streams-per-connection), so a peer proxy opens
    /// another connection rather than queueing; below that, a peer's
    /// streams opened before it read this setting are refused.
    #[arg(long, env = "WEFT_PROXY_HTTP2_MAX_CONCURRENT_STREAMS", default_value = "100")]
    pub http2_max_concurrent_streams: String,

    /// Weft proxies an HTTP request may pass through: each adds one to its
    /// `weft-hops` header, and a request that has passed this many already
    /// is a loop (502 with `weft-proxy-error: loop`). A meshed call passes
    /// two (outbound, inbound); the header reaches apps, so a loop through
    /// an app that forwards its request headers is caught too.
    #[arg(long, env = "WEFT_PROXY_MAX_HOPS", default_value = "16")]
    pub max_hops: String,

    /// Load shedding: when every request for --shed-interval waited longer
    /// than this inside the proxy before admission (HTTP/2 streams queued
    /// on a saturated proxy), requests that waited over twice this get 503
    /// with `weft-proxy-error-kind: overloaded`. A slow app never counts.
    /// 0s (the default): off, until the rule keeps goodput under overload
    /// (see stack::shed); e.g. 5ms to switch it on.
    #[arg(long, env = "WEFT_PROXY_SHED_TARGET", default_value = "0s")]
    pub shed_target: String,

    /// See --shed-target: how long the queue must stay over the target,
    /// and how often overload is judged.
    #[arg(long, env = "WEFT_PROXY_SHED_INTERVAL", default_value = "100ms")]
    pub shed_interval: String,

    /// Inbound: after a client's first byte, how long protocol detection
    /// may wait for enough bytes; undecided connections are opaque TCP.
    /// Transparent mode (both listeners): also how long a silent client is
    /// waited for before its connection is opaque TCP (server speaks first).
    #[arg(long, env = "WEFT_PROXY_DETECT_TIMEOUT", default_value = "1s")]
    pub detect_timeout: String,

    /// --transparent: destination ports relayed as opaque TCP at once,
    /// without waiting for the client's first bytes (server-speaks-first
    /// protocols), e.g. 3306,5000-5010; empty for none. Ports the control
    /// plane marks opaque (Service appProtocol, `config.weft.io/opaque-ports`)
    /// skip detection too.
    #[arg(long, env = "WEFT_PROXY_OPAQUE_PORTS", value_name = "PORTS", default_value = OpaquePorts::DEFAULT)]
    pub opaque_ports: String,

    /// HTTP/2 connections from clients send a PING after this long without
    /// a frame received.
    #[arg(long, env = "WEFT_PROXY_HTTP2_KEEPALIVE_INTERVAL", default_value = "10s")]
    pub http2_keepalive_interval: String,

    /// An HTTP/2 PING not acknowledged within this closes the connection
    /// (a vanished peer stops taking requests; new ones get a new connection).
    #[arg(long, env = "WEFT_PROXY_HTTP2_KEEPALIVE_TIMEOUT", default_value = "5s")]
    pub http2_keepalive_timeout: String,

    /// A client HTTP connection with no request in flight for this long is
    /// closed (HTTP/2: GOAWAY). Before its first request the bound is
    /// --header-read-timeout (a stalled h2 preface, a silent mTLS client).
    #[arg(long, env = "WEFT_PROXY_HTTP_IDLE_TIMEOUT", default_value = "1h")]
    pub http_idle_timeout: String,

    /// An opaque TCP relay with no byte either way for this long is closed.
    #[arg(long, env = "WEFT_PROXY_TCP_IDLE_TIMEOUT", default_value = "1h")]
    pub tcp_idle_timeout: String,

    /// A pooled upstream HTTP/1 connection unused for this long is closed.
    #[arg(long, env = "WEFT_PROXY_UPSTREAM_IDLE_TIMEOUT", default_value = "90s")]
    pub upstream_idle_timeout: String,

    /// HTTP/2 connections to upstreams (peer proxies included) with
    /// requests in flight send a PING after this long without a frame
    /// received.
    #[arg(long, env = "WEFT_PROXY_UPSTREAM_HTTP2_KEEPALIVE_INTERVAL", default_value = "1s")]
    pub upstream_http2_keepalive_interval: String,

    /// An upstream HTTP/2 PING not acknowledged within this closes the
    /// connection: its requests fail before any response head, and
    /// idempotent ones are sent to another endpoint (a frozen peer).
    #[arg(long, env = "WEFT_PROXY_UPSTREAM_HTTP2_KEEPALIVE_TIMEOUT", default_value = "2s")]
    pub upstream_http2_keepalive_timeout: String,

    /// HTTP/1 connections open to one upstream endpoint at once; a request
    /// finding all in use waits up to --connect-timeout for one, then 503
    /// (weft-proxy-error-kind: pool_full).
    #[arg(long, env = "WEFT_PROXY_MAX_CONNECTIONS_PER_ENDPOINT", default_value = "1024")]
    pub max_connections_per_endpoint: String,

    /// HTTP/2 connections open to one upstream endpoint (a peer proxy, an
    /// h2 app) at once: another is opened when every one carries
    /// --upstream-http2-streams-per-connection of this proxy's requests; past
    /// them all a request waits up to --connect-timeout for a stream, then 503.
    #[arg(long, env = "WEFT_PROXY_MAX_HTTP2_CONNECTIONS_PER_ENDPOINT", default_value = "8")]
    pub max_http2_connections_per_endpoint: String,

    /// Requests carried at once on one upstream HTTP/2 connection before
    /// another is opened (RFC 9113 asks every peer to allow 100).
    #[arg(long, env = "WEFT_PROXY_UPSTREAM_HTTP2_STREAMS_PER_CONNECTION", default_value = "100")]
    pub upstream_http2_streams_per_connection: String,

    /// Inbound connections held at once (inbound listener and its IPv6
    /// twin). At the cap the oldest connection with no request in flight
    /// is closed to make room; with none, the new one is closed at accept
    /// (weft_shed_connections_total).
    #[arg(long, env = "WEFT_PROXY_MAX_INBOUND_CONNECTIONS", default_value = "4096")]
    pub max_inbound_connections: String,

    /// Outbound connections held at once (outbound listener, its IPv6 twin,
    /// --tcp-forward and --tcp-service listeners); as --max-inbound-connections.
    #[arg(long, env = "WEFT_PROXY_MAX_OUTBOUND_CONNECTIONS", default_value = "4096")]
    pub max_outbound_connections: String,

    /// Connecting to an upstream, the mTLS handshake with a meshed peer
    /// included, must be done within this (then 502 / the TCP client closed).
    #[arg(long, env = "WEFT_PROXY_CONNECT_TIMEOUT", default_value = "10s")]
    pub connect_timeout: String,

    /// A request body of known length (Content-Length) slower than this,
    /// bytes per second of waiting for the client, after
    /// --request-body-grace, is cut: 408 (0: no minimum).
    #[arg(long, env = "WEFT_PROXY_MIN_REQUEST_BODY_RATE", default_value = "240")]
    pub min_request_body_rate: String,

    /// How long a request body may be waited for before its rate counts.
    #[arg(long, env = "WEFT_PROXY_REQUEST_BODY_GRACE", default_value = "5s")]
    pub request_body_grace: String,

    /// Any request body (streams too) silent this long while the proxy waits
    /// for it is cut: 408 if no response started.
    #[arg(long, env = "WEFT_PROXY_REQUEST_BODY_IDLE_TIMEOUT", default_value = "5m")]
    pub request_body_idle_timeout: String,

    /// --destination: a discovered authority (Host, or original destination)
    /// no request used for this long is dropped and its control-plane
    /// streams closed; the next request resolves it again.
    #[arg(long, env = "WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT", default_value = "60s")]
    pub discovery_idle_timeout: String,

    /// --destination: discovered authorities kept at most (each holds two
    /// streams to mesh-control); past it the least recently used unused
    /// one is dropped. Authorities in use are never dropped.
    #[arg(long, env = "WEFT_PROXY_MAX_DISCOVERED_AUTHORITIES", default_value = "400")]
    pub max_discovered_authorities: String,

    /// On SIGTERM/SIGINT, how long in-flight requests may take before exiting anyway.
    #[arg(long, env = "WEFT_PROXY_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: String,

    /// FOR CONFORMANCE TESTING ONLY: switch mesh features off, a comma
    /// separated list of routes, authz, retries, timeouts (see
    /// `config::Disabled`). Hidden from --help: a production proxy never
    /// sets it, and each switch logs a warning at startup.
    #[arg(long, env = "WEFT_PROXY_DISABLE", value_name = "FEATURES", hide = true)]
    pub disable: Option<String>,
}

impl Args {
    /// Converts and validates every value, reporting all problems together.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut cfg = Config::default();

        let mut addr = |flag: &str, v: &str| -> Option<SocketAddr> {
            v.parse()
                .map_err(|_| problems.push(format!("{flag} {v:?}: not a socket address (ip:port)")))
                .ok()
        };
        if let Some(a) = addr("--outbound-listen", &self.outbound_listen) {
            cfg.outbound_listen = a;
        }
        if let Some(a) = addr("--inbound-listen", &self.inbound_listen) {
            cfg.inbound_listen = a;
        }
        if let Some(a) = addr("--admin-listen", &self.admin_listen) {
            cfg.admin_listen = a;
        }
        if let Some(app) = &self.app {
            cfg.app = addr("--app", app);
        }

        for r in &self.routes {
            match r.parse::<Route>() {
                Ok(route) => cfg.routes.push(route),
                Err(e) => problems.push(e),
            }
        }

        for f in &self.tcp_forwards {
            match f.parse::<TcpForward>() {
                Ok(fwd) => cfg.tcp_forwards.push(fwd),
                Err(e) => problems.push(e),
            }
        }
        for t in &self.tcp_services {
            match t.parse::<TcpService>() {
                Ok(svc) => cfg.tcp_services.push(svc),
                Err(e) => problems.push(e),
            }
        }
        let trust = self.control_trust(&mut problems);
        cfg.mesh = self.mesh_config(trust.as_ref(), &mut problems);
        cfg.control_trust = trust;
        cfg.forward_client_identity = self.forward_client_identity;
        cfg.destination = self.destination.clone();
        cfg.policy = self.policy.clone();
        cfg.transparent = self.transparent;
        match self.opaque_ports.parse::<OpaquePorts>() {
            Ok(p) => cfg.opaque_ports = p,
            Err(e) => problems.push(e),
        }
        if let Some(d) = &self.disable {
            match d.parse::<Disabled>() {
                Ok(d) => cfg.disabled = d,
                Err(e) => problems.push(e),
            }
        }
        cfg.default_inbound_policy = self.default_inbound_policy(&mut problems);

        match self.threads.parse::<usize>() {
            Ok(n) => cfg.threads = n,
            Err(_) => problems.push(format!("--threads {:?}: not a whole number", self.threads)),
        }

        let mut size = |flag: &str, v: &str| -> Option<u64> {
            parse_byte_size(v).map_err(|e| problems.push(format!("{flag} {e}"))).ok()
        };
        let max_header = size("--max-header-bytes", &self.max_header_bytes);
        let max_body = size("--max-request-body-bytes", &self.max_request_body_bytes);

        let mut duration = |flag: &str, v: &str| -> Option<Duration> {
            humantime::parse_duration(v)
                .map_err(|e| problems.push(format!("{flag} {v:?}: {e} (e.g. 500ms, 10s, 1m)")))
                .ok()
        };
        let header_read_timeout = duration("--header-read-timeout", &self.header_read_timeout);
        let request_timeout = duration("--request-timeout", &self.request_timeout);
        let drain_timeout = duration("--drain-timeout", &self.drain_timeout);
        let detect_timeout = duration("--detect-timeout", &self.detect_timeout);
        let discovery_idle = duration("--discovery-idle-timeout", &self.discovery_idle_timeout);
        let shed_target = duration("--shed-target", &self.shed_target);
        let shed_interval = duration("--shed-interval", &self.shed_interval);

        let mut count = |flag: &str, v: &str| -> Option<usize> {
            v.parse::<usize>().map_err(|_| problems.push(format!("{flag} {v:?}: not a whole number"))).ok()
        };
        let max_concurrent = count("--max-concurrent-requests", &self.max_concurrent_requests);
        let max_queued = count("--max-queued-requests", &self.max_queued_requests);
        let max_discovered = count("--max-discovered-authorities", &self.max_discovered_authorities);
        let max_hops = count("--max-hops", &self.max_hops);
        let h2_streams = count("--http2-max-concurrent-streams", &self.http2_max_concurrent_streams);

        let defaults = Limits::default();
        cfg.limits = Limits {
            max_header_bytes: max_header
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .unwrap_or(defaults.max_header_bytes),
            max_request_body_bytes: max_body.unwrap_or(defaults.max_request_body_bytes),
            header_read_timeout: header_read_timeout.unwrap_or(defaults.header_read_timeout),
            request_timeout: request_timeout.unwrap_or(defaults.request_timeout),
            max_concurrent_requests: max_concurrent.unwrap_or(defaults.max_concurrent_requests),
            max_queued_requests: max_queued.unwrap_or(defaults.max_queued_requests),
            shed: Shedding {
                target: shed_target.unwrap_or(defaults.shed.target),
                interval: shed_interval.unwrap_or(defaults.shed.interval),
            },
            detect_timeout: detect_timeout.unwrap_or(defaults.detect_timeout),
            max_hops: max_hops.map_or(defaults.max_hops, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            h2_max_concurrent_streams: h2_streams
                .map_or(defaults.h2_max_concurrent_streams, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        };
        if let Some(d) = drain_timeout {
            cfg.drain_timeout = d;
        }
        let d = DiscoveryLimits::default();
        cfg.discovery = DiscoveryLimits {
            idle_timeout: discovery_idle.unwrap_or(d.idle_timeout),
            max_authorities: max_discovered.unwrap_or(d.max_authorities),
        };
        cfg.conns = self.conns(&mut problems);

        if let Err(e) = cfg.validate() {
            problems.extend(e.problems);
        }
        ConfigError::from_problems(problems)?;
        Ok(cfg)
    }

    /// The connection timeouts; bad values are problems, and
    /// their defaults are kept.
    fn conns(&self, problems: &mut Vec<String>) -> Conns {
        let d = Conns::default();
        let mut duration = |flag: &str, v: &str, default: Duration| -> Duration {
            humantime::parse_duration(v).unwrap_or_else(|e| {
                problems.push(format!("{flag} {v:?}: {e} (e.g. 500ms, 10s, 1m)"));
                default
            })
        };
        let mut c = Conns {
            h2_keepalive_interval: duration("--http2-keepalive-interval", &self.http2_keepalive_interval, d.h2_keepalive_interval),
            h2_keepalive_timeout: duration("--http2-keepalive-timeout", &self.http2_keepalive_timeout, d.h2_keepalive_timeout),
            http_idle_timeout: duration("--http-idle-timeout", &self.http_idle_timeout, d.http_idle_timeout),
            tcp_idle_timeout: duration("--tcp-idle-timeout", &self.tcp_idle_timeout, d.tcp_idle_timeout),
            upstream_idle_timeout: duration("--upstream-idle-timeout", &self.upstream_idle_timeout, d.upstream_idle_timeout),
            upstream_h2_keepalive_interval: duration(
                "--upstream-http2-keepalive-interval",
                &self.upstream_http2_keepalive_interval,
                d.upstream_h2_keepalive_interval,
            ),
            upstream_h2_keepalive_timeout: duration(
                "--upstream-http2-keepalive-timeout",
                &self.upstream_http2_keepalive_timeout,
                d.upstream_h2_keepalive_timeout,
            ),
            connect_timeout: duration("--connect-timeout", &self.connect_timeout, d.connect_timeout),
            request_body_grace: duration("--request-body-grace", &self.request_body_grace, d.request_body_grace),
            request_body_idle_timeout: duration(
                "--request-body-idle-timeout",
                &self.request_body_idle_timeout,
                d.request_body_idle_timeout,
            ),
            ..d
        };
        for (flag, v, slot) in [
            ("--max-inbound-connections", &self.max_inbound_connections, &mut c.max_inbound_connections),
            ("--max-outbound-connections", &self.max_outbound_connections, &mut c.max_outbound_connections),
            ("--max-connections-per-endpoint", &self.max_connections_per_endpoint, &mut c.max_connections_per_endpoint),
            (
                "--max-http2-connections-per-endpoint",
                &self.max_http2_connections_per_endpoint,
                &mut c.max_h2_connections_per_endpoint,
            ),
            (
                "--upstream-http2-streams-per-connection",
                &self.upstream_http2_streams_per_connection,
                &mut c.upstream_h2_streams_per_connection,
            ),
        ] {
            match v.parse::<usize>() {
                Ok(n) => *slot = n,
                Err(_) => problems.push(format!("{flag} {v:?}: not a whole number of connections")),
            }
        }
        match self.min_request_body_rate.parse::<u64>() {
            Ok(n) => c.min_request_body_rate = n,
            Err(_) => problems.push(format!(
                "--min-request-body-rate {:?}: not a whole number of bytes per second (0: no minimum)",
                self.min_request_body_rate
            )),
        }
        c
    }

    /// The meshed-mode settings: all four flags or none. Reads the token and
    /// the trust anchors now, so a bad file is a configuration error.
    fn mesh_config(&self, trust: Option<&ControlTrust>, problems: &mut Vec<String>) -> Option<MeshConfig> {
        let given = [
            ("--identity", self.identity.is_some()),
            ("--control", self.control.is_some()),
            ("--token-file", self.token_file.is_some()),
            ("--trust-anchor", self.trust_anchor.is_some() || self.trust_anchor_pem.is_some()),
        ];
        // --trust-anchor alone is for --destination/--policy.
        if given[..3].iter().all(|(_, g)| !g) {
            return None;
        }
        if given.iter().any(|(_, g)| !g) {
            let missing: Vec<&str> = given.iter().filter(|(_, g)| !g).map(|(f, _)| *f).collect();
            let present: Vec<&str> = given.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect();
            problems.push(format!(
                "{} given without {}: meshed mode needs --identity, --control, --token-file and --trust-anchor together",
                present.join(", "),
                missing.join(", ")
            ));
            return None;
        }
        let (id, control, token_file) = (self.identity.as_deref()?, self.control.as_deref()?, self.token_file.as_ref()?);
        let before = problems.len();
        let identity = SpiffeId::parse(id).map_err(|e| problems.push(format!("--identity {e}"))).ok();
        if control.trim().is_empty() {
            problems.push("--control \"\": need mesh-control's address (host:port)".to_owned());
        }
        let token = match std::fs::read(token_file) {
            Ok(bytes) => {
                let token = bytes.trim_ascii().to_vec();
                if token.is_empty() {
                    problems.push(format!("--token-file {}: the file is empty", token_file.display()));
                }
                token
            }
            Err(e) => {
                problems.push(format!("--token-file {}: {e}", token_file.display()));
                Vec::new()
            }
        };
        if problems.len() > before {
            return None;
        }
        // Its problems (file, control identity) were reported by control_trust.
        let trust = trust?;
        Some(MeshConfig {
            identity: identity?,
            control: control.to_owned(),
            control_identity: trust.identity.clone(),
            token: Secret(token),
            token_file: token_file.clone(),
            trust_anchor_source: trust.trust_anchor_source.clone(),
            trust_anchor_pem: trust.trust_anchor_pem.clone(),
        })
    }

    /// `--trust-anchor` (read and checked now) and `--control-identity`
    /// (default: mesh-control's in --identity's trust domain).
    /// `--default-inbound-policy`, or its old spelling `--inbound-plaintext`
    /// (not both: one would silently lose).
    fn default_inbound_policy(&self, problems: &mut Vec<String>) -> DefaultInboundPolicy {
        let old = self.inbound_plaintext.as_deref().and_then(|p| match p {
            "allow" => Some(DefaultInboundPolicy::AllUnauthenticated),
            "deny" => Some(DefaultInboundPolicy::AllAuthenticated),
            other => {
                problems.push(format!(
                    "--inbound-plaintext {other:?}: expected allow or deny (or use --default-inbound-policy)"
                ));
                None
            }
        });
        let new = self.default_inbound_policy.as_deref().and_then(|p| p.parse().map_err(|e| problems.push(e)).ok());
        match (new, old) {
            (Some(new), Some(old)) if new != old => {
                problems.push(format!(
                    "--default-inbound-policy {new} and --inbound-plaintext {} disagree; give only \
                     --default-inbound-policy (--inbound-plaintext allow = all-unauthenticated, deny = all-authenticated)",
                    self.inbound_plaintext.as_deref().unwrap_or_default()
                ));
                new
            }
            (new, old) => new.or(old).unwrap_or_default(),
        }
    }

    fn control_trust(&self, problems: &mut Vec<String>) -> Option<ControlTrust> {
        if self.trust_anchor.is_none() && self.trust_anchor_pem.is_none() {
            if let Some(id) = &self.control_identity {
                problems.push(format!("--control-identity {id}: needs --trust-anchor to verify mesh-control with"));
            }
            return None;
        }
        let domain = self
            .identity
            .as_deref()
            .and_then(|i| SpiffeId::parse(i).ok())
            .map_or_else(|| "cluster.local".to_owned(), |i| i.trust_domain().to_owned());
        let before = problems.len();
        let identity = match &self.control_identity {
            Some(id) => SpiffeId::parse(id).map_err(|e| problems.push(format!("--control-identity {e}"))).ok(),
            None => mesh_identity::control_identity(&domain)
                .map_err(|e| problems.push(format!("--control-identity (default from --identity): {e}")))
                .ok(),
        };
        let (source, pem) = self.trust_anchor_source(problems)?;
        if let Err(e) = TrustAnchors::from_pem(&domain, &pem) {
            problems.push(format!("{source}: {e}"));
        }
        if problems.len() > before {
            return None;
        }
        Some(ControlTrust { identity: identity?, trust_anchor_source: source, trust_anchor_pem: pem })
    }

    /// The trust anchors' PEM from `--trust-anchor FILE` or inline from
    /// `--trust-anchor-pem`, exactly one of them, and how to name where they
    /// came from in messages. Both go through the same checks afterwards.
    fn trust_anchor_source(&self, problems: &mut Vec<String>) -> Option<(String, Vec<u8>)> {
        const INLINE: &str = "--trust-anchor-pem (env WEFT_PROXY_TRUST_ANCHOR_PEM)";
        match (&self.trust_anchor, &self.trust_anchor_pem) {
            (Some(file), Some(_)) => {
                problems.push(format!(
                    "--trust-anchor {} and {INLINE} both given: give the trust anchors once, as a file or inline",
                    file.display()
                ));
                None
            }
            (Some(file), None) => {
                let source = format!("--trust-anchor {}", file.display());
                match std::fs::read(file) {
                    Ok(pem) => Some((source, pem)),
                    Err(e) => {
                        problems.push(format!("{source}: {e}"));
                        None
                    }
                }
            }
            (None, Some(pem)) if pem.trim().is_empty() => {
                problems.push(format!("{INLINE}: empty; give the trust anchor certificate(s), PEM"));
                None
            }
            (None, Some(pem)) => Some((INLINE.to_owned(), pem.clone().into_bytes())),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["mesh-proxy"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("clap accepts").into_config()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn all_bad_values_are_reported_together() {
        let err = parse(&[
            "--route",
            "web=oops",
            "--admin-listen",
            "nowhere",
            "--request-timeout",
            "soon",
            "--max-request-body-bytes",
            "lots",
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in ["oops", "nowhere", "soon", "lots"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(err.problems.len(), 4, "{text}");
    }

    #[test]
    fn connection_timeouts_and_limits_parse_and_name_bad_values() {
        let cfg = parse(&["--http2-keepalive-interval", "2s", "--tcp-idle-timeout", "3m", "--min-request-body-rate", "7"]).unwrap();
        assert_eq!(cfg.conns.h2_keepalive_interval, Duration::from_secs(2));
        assert_eq!(cfg.conns.tcp_idle_timeout, Duration::from_secs(180));
        assert_eq!(cfg.conns.min_request_body_rate, 7);
        let err = parse(&["--connect-timeout", "0s", "--min-request-body-rate", "fast", "--http-idle-timeout", "later"]).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        for needle in ["--connect-timeout 0s", "\"fast\"", "\"later\""] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn meshed_flags_go_together_and_files_are_read() {
        let err = parse(&["--identity", "spiffe://cluster.local/ns/a/sa/b"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--control") && text.contains("--token-file") && text.contains("--trust-anchor"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "").unwrap();
        let anchor = dir.path().join("anchor.pem");
        std::fs::write(&anchor, "not a pem").unwrap();
        let err = parse(&[
            "--identity",
            "spiffe://cluster.local/ns/a/sa/b",
            "--control",
            "127.0.0.1:8086",
            "--token-file",
            token.to_str().unwrap(),
            "--trust-anchor",
            anchor.to_str().unwrap(),
            "--inbound-plaintext",
            "maybe",
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("is empty"), "{text}");
        assert!(text.contains("anchor.pem"), "{text}");
        assert!(text.contains("maybe"), "{text}");
    }

    #[test]
    fn repeated_routes_and_app() {
        let cfg = parse(&[
            "--route",
            "a:80=127.0.0.1:1",
            "--route",
            "b=127.0.0.1:2",
            "--app",
            "127.0.0.1:3",
            "--default-inbound-policy",
            "all-unauthenticated",
            "--threads",
            "2",
            "--max-request-body-bytes",
            "1KiB",
        ])
        .unwrap();
        assert_eq!(cfg.routes.len(), 2);
        assert_eq!(cfg.app, Some("127.0.0.1:3".parse().unwrap()));
        assert_eq!(cfg.threads, 2);
        assert_eq!(cfg.limits.max_request_body_bytes, 1024);
    }

    #[test]
    fn default_inbound_policy_and_its_old_spelling() {
        assert_eq!(parse(&[]).unwrap().default_inbound_policy, DefaultInboundPolicy::AllAuthenticated, "strict by default");
        for (flag, want) in [
            ("allow", DefaultInboundPolicy::AllUnauthenticated),
            ("all-unauthenticated", DefaultInboundPolicy::AllUnauthenticated),
            ("all-authenticated", DefaultInboundPolicy::AllAuthenticated),
            ("deny", DefaultInboundPolicy::Deny),
        ] {
            assert_eq!(parse(&["--default-inbound-policy", flag]).unwrap().default_inbound_policy, want, "{flag}");
        }
        let old = parse(&["--inbound-plaintext", "allow"]).unwrap();
        assert_eq!(old.default_inbound_policy, DefaultInboundPolicy::AllUnauthenticated);
        let err = parse(&["--default-inbound-policy", "open"]).unwrap_err().to_string();
        assert!(err.contains("\"open\"") && err.contains("all-authenticated"), "{err}");
        let err = parse(&["--default-inbound-policy", "deny", "--inbound-plaintext", "allow"]).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
        let err = parse(&["--app", "127.0.0.1:1"]).unwrap_err().to_string();
        assert!(err.contains("--app 127.0.0.1:1 on a plaintext-only proxy"), "{err}");
    }

    #[test]
    fn disable_takes_a_list_of_features_and_is_hidden() {
        assert!(!parse(&[]).unwrap().disabled.any(), "everything on by default");
        let cfg = parse(&["--disable", "routes,authz"]).unwrap();
        assert!(cfg.disabled.routes && cfg.disabled.authz && !cfg.disabled.retries && !cfg.disabled.timeouts);
        assert_eq!(cfg.disabled.to_string(), "routes,authz");
        let cfg = parse(&["--disable", "retries, timeouts"]).unwrap();
        assert!(cfg.disabled.retries && cfg.disabled.timeouts && !cfg.disabled.routes);
        let err = parse(&["--disable", "routes,mtls"]).unwrap_err().to_string();
        assert!(err.contains("\"mtls\"") && err.contains("conformance testing only"), "{err}");
        let help = <Args as clap::CommandFactory>::command().render_help().to_string();
        assert!(!help.contains("--disable"), "{help}");
    }

    #[test]
    fn discovery_needs_a_trust_anchor_and_a_plain_address() {
        let err = parse(&["--destination", "127.0.0.1:8086", "--policy", "http://127.0.0.1:8086"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--destination 127.0.0.1:8086: mesh-control is reached over TLS only; give a usable --trust-anchor FILE or"), "{text}");
        assert!(text.contains("--policy \"http://127.0.0.1:8086\": give host:port without a scheme"), "{text}");
        let err = parse(&["--trust-anchor", "/nonexistent/anchor.pem", "--control-identity", "spiffe://x"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--trust-anchor /nonexistent/anchor.pem") && text.contains("--control-identity"), "{text}");
    }

    #[test]
    fn transparent_needs_no_app_and_refuses_app_and_routes() {
        let open = ["--default-inbound-policy", "allow"];
        let cfg = parse(&[&["--transparent"][..], &open].concat()).unwrap();
        assert!(cfg.transparent);
        assert_eq!(cfg.app, None);
        assert!(!parse(&[]).unwrap().transparent, "off by default");

        let err = parse(&[&["--transparent", "--app", "127.0.0.1:8080", "--route", "web:80=127.0.0.1:1"][..], &open].concat()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 2, "{text}");
        assert!(text.contains("--app 127.0.0.1:8080: not used with --transparent"), "{text}");
        assert!(text.contains("--route web:80=127.0.0.1:1: not used with --transparent"), "{text}");
        // Explicit TCP listeners stay usable next to transparent mode.
        let cfg = parse(&[&["--transparent", "--tcp-forward", "127.0.0.1:0=127.0.0.1:5432"][..], &open].concat()).unwrap();
        assert_eq!(cfg.tcp_forwards.len(), 1);
    }
}
