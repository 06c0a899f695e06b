//! Connection-level timeouts and limits: how long a connection, a
//! handshake or a request body may sit without progress, and how many
//! connections a listener holds and the proxy opens to one endpoint.
//!
//! Defaults follow linkerd2-proxy and Envoy where they have one: HTTP/2
//! keepalive PINGs every 10 s from clients' connections, an idle HTTP connection closed after 1 h
//! (Envoy's `idle_timeout`), an idle opaque TCP relay after 1 h (Envoy's
//! `tcp_proxy` `idle_timeout`), pooled upstream HTTP/1 connections after
//! 90 s (hyper-util's pool), a fixed-length request body slower than
//! 240 bytes/s after a 5 s grace cut (Kestrel's `MinRequestBodyDataRate`),
//! 1024 HTTP/1 connections per endpoint (Envoy's circuit breaker), HTTP/2
//! connections of 100 streams (RFC 9113's floor for a peer's limit; a peer
//! proxy allows 200), 8 per endpoint. Upstream
//! HTTP/2 connections with requests in flight PING after 1 s of silence and
//! give the answer 2 s: tighter than any default elsewhere, because a
//! frozen peer proxy holds requests a client would otherwise time out on
//! (the hardening suite's `peer-freeze`), and a peer that is alive answers
//! a PING from its connection task, whatever its app is doing.

use std::{sync::OnceLock, time::Duration};

/// Connection-level timeouts (`--http2-keepalive-*`,
/// `--http-idle-timeout`, `--connect-timeout`, `--request-body-*`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conns {
    /// Downstream HTTP/2 connections send a PING after this long without a
    /// frame received (idle ones too).
    pub h2_keepalive_interval: Duration,
    /// A PING not acknowledged within this closes the connection: a peer
    /// that vanished stops taking requests in seconds.
    pub h2_keepalive_timeout: Duration,
    /// A downstream HTTP connection with no request in flight for this long
    /// is closed (HTTP/2: GOAWAY). Before its first request the bound is
    /// `--header-read-timeout` (a stalled h2 preface, a silent mTLS client).
    pub http_idle_timeout: Duration,
    /// An opaque TCP relay with no byte in either direction for this long
    /// is closed.
    pub tcp_idle_timeout: Duration,
    /// Connecting to an upstream (TCP, and for meshed peers the mTLS
    /// handshake) must be done within this.
    pub connect_timeout: Duration,
    /// A request body of known length must arrive at least this fast
    /// (bytes/s, counting only time spent waiting for the client) once
    /// `request_body_grace` has passed; 0 switches the check off.
    pub min_request_body_rate: u64,
    /// Waiting for a request body this long is allowed before the rate counts.
    pub request_body_grace: Duration,
    /// Any request body (streams included) silent this long while the proxy
    /// waits for it is cut (408 if no response started).
    pub request_body_idle_timeout: Duration,
    /// A pooled upstream HTTP/1 connection parked this long is closed.
    pub upstream_idle_timeout: Duration,
    /// Upstream HTTP/2 connections with requests in flight send a PING
    /// after this long without a frame received (idle ones send none).
    pub upstream_h2_keepalive_interval: Duration,
    /// An upstream PING not acknowledged within this closes the connection:
    /// its in-flight requests fail with no response head, so idempotent
    /// ones go to another endpoint. Short: a frozen peer must cost less
    /// than a client's timeout; a live peer acknowledges at once.
    pub upstream_h2_keepalive_timeout: Duration,
    /// HTTP/1 connections open to one upstream endpoint at once (parked or
    /// in use); past it a request waits up to `connect_timeout` for one.
    pub max_connections_per_endpoint: usize,
    /// HTTP/2 connections open to one upstream endpoint at once.
    pub max_h2_connections_per_endpoint: usize,
    /// This proxy's requests on one upstream HTTP/2 connection before
    /// another is opened; past all of them a request waits up to
    /// `connect_timeout` for a stream.
    pub upstream_h2_streams_per_connection: usize,
    /// Downstream connections the inbound listener holds at once.
    pub max_inbound_connections: usize,
    /// Downstream connections the outbound listeners hold at once.
    pub max_outbound_connections: usize,
}

impl Default for Conns {
    fn default() -> Self {
        Self {
            h2_keepalive_interval: Duration::from_secs(10),
            h2_keepalive_timeout: Duration::from_secs(5),
            http_idle_timeout: Duration::from_secs(3600),
            tcp_idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(10),
            min_request_body_rate: 240,
            request_body_grace: Duration::from_secs(5),
            request_body_idle_timeout: Duration::from_secs(300),
            upstream_idle_timeout: Duration::from_secs(90),
            upstream_h2_keepalive_interval: Duration::from_secs(1),
            upstream_h2_keepalive_timeout: Duration::from_secs(2),
            max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
            max_h2_connections_per_endpoint: 8,
            upstream_h2_streams_per_connection: 100,
            max_inbound_connections: DEFAULT_MAX_CONNECTIONS,
            max_outbound_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Connections per direction. Measured (debug build, `bench hostile --only
/// idle-connections`, 10,000 idle connections): the proxy grew 21 MiB on
/// outbound and inbound mTLS and 49 MiB on inbound plaintext at this cap,
/// about 5-12 KiB per held connection (its task, the detection buffer,
/// hyper's connection state), under the hostile test's 64 MiB bound; a
/// sidecar's app and peers need far fewer (peer proxies share one HTTP/2
/// connection).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// HTTP/1 connections to one endpoint: Envoy's default circuit breaker
/// (`max_connections` 1024 per cluster). An HTTP/1 connection carries one
/// request at a time, so this is also the most requests one endpoint gets
/// at once from this proxy over HTTP/1.
pub const DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT: usize = 1024;

/// The values every upstream connection of this process dials with.
static INSTALLED: OnceLock<Conns> = OnceLock::new();

impl Conns {
    /// Makes these the values [`Conns::current`] returns; the first call
    /// wins. Upstreams are made in many places (static routes, discovery,
    /// transparent destinations) and all dial alike, so the proxy installs
    /// its flags once at start instead of threading them through each.
    pub fn install(self) {
        let _ = INSTALLED.set(self);
    }

    /// The installed values, or the defaults (embedders and unit tests).
    pub fn current() -> Conns {
        INSTALLED.get().copied().unwrap_or_default()
    }

    /// Every problem with these values, each naming its flag.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, d) in [
            ("--http2-keepalive-interval", self.h2_keepalive_interval),
            ("--http2-keepalive-timeout", self.h2_keepalive_timeout),
            ("--http-idle-timeout", self.http_idle_timeout),
            ("--tcp-idle-timeout", self.tcp_idle_timeout),
            ("--upstream-idle-timeout", self.upstream_idle_timeout),
            ("--upstream-http2-keepalive-interval", self.upstream_h2_keepalive_interval),
            ("--upstream-http2-keepalive-timeout", self.upstream_h2_keepalive_timeout),
            ("--connect-timeout", self.connect_timeout),
            ("--request-body-idle-timeout", self.request_body_idle_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{name} 0s: must be greater than zero"));
            }
        }
        for (name, n) in [
            ("--max-inbound-connections", self.max_inbound_connections),
            ("--max-outbound-connections", self.max_outbound_connections),
            ("--max-connections-per-endpoint", self.max_connections_per_endpoint),
            ("--max-http2-connections-per-endpoint", self.max_h2_connections_per_endpoint),
            ("--upstream-http2-streams-per-connection", self.upstream_h2_streams_per_connection),
        ] {
            if n == 0 {
                problems.push(format!("{name} 0: must be at least 1"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_and_limits_are_refused_by_name() {
        assert!(Conns::default().problems().is_empty());
        let bad = Conns { h2_keepalive_timeout: Duration::ZERO, tcp_idle_timeout: Duration::ZERO, ..Conns::default() };
        let p = bad.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("--http2-keepalive-timeout") && p[1].contains("--tcp-idle-timeout"), "{p:?}");
    }
}
