//! Failures the proxy answers itself, and how each becomes a response.
//!
//! Every proxy-generated response carries `weft-proxy-error: <reason>` so a
//! client (or a test, or an operator with curl) can tell an upstream's 502
//! from the proxy's. A missing route is answered with 502 Bad Gateway rather
//! than 404: the proxy is a gateway that could not find an upstream, and a 404
//! would be indistinguishable from the application's own "not found".

use std::{io, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};

pub use crate::metrics::error_kind::ErrorKind;
use crate::{http::body::ResponseBody, http::orig_proto::UpgradeError, http::pace::PaceError, identity::refusal::Refusal};

/// Header naming why the proxy answered instead of an upstream.
pub static PROXY_ERROR_HEADER: HeaderName = HeaderName::from_static("weft-proxy-error");

/// The same failure's kind, as in `weft_proxy_errors_total{kind}`: what a
/// client proxy reads from its meshed peer (a peer that could not reach its
/// app before any response head: `connect`, `upstream`) to send the request
/// to another endpoint.
pub static PROXY_ERROR_KIND_HEADER: HeaderName = HeaderName::from_static("weft-proxy-error-kind");

/// Why a request was not (fully) forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request's authority.
    #[error("no route for {authority}")]
    NoRoute {
        /// The authority as received, or `<none>` when the request had none.
        authority: String,
    },
    /// The upstream could not be connected to.
    #[error("connect to upstream {addr} failed: {source}")]
    Connect {
        /// Upstream address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The upstream did not send a response head within the request timeout.
    #[error("upstream {addr} did not respond within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Upstream address.
        addr: SocketAddr,
        /// The configured request timeout.
        after: Duration,
    },
    /// The upstream connection failed (handshake, reset, protocol error).
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        /// Upstream address.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The request body is (or became, while streaming) larger than allowed.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The client sent the request body too slowly (`http::pace`): 408.
    #[error("{0}")]
    BodyTimeout(PaceError),
    /// A meshed route, but this proxy has no workload certificate yet.
    #[error("no workload certificate yet; cannot open mTLS to {addr}")]
    NotCertified {
        /// Upstream address.
        addr: SocketAddr,
    },
    /// The mTLS handshake with a meshed upstream failed.
    #[error("mTLS to {addr} ({identity}) refused: {reason}: {detail}")]
    Tls {
        /// Upstream address.
        addr: SocketAddr,
        /// The SPIFFE ID expected there.
        identity: String,
        /// Classified cause.
        reason: Refusal,
        /// rustls's words.
        detail: String,
    },
    /// An HTTP/1 request that cannot be carried over the mesh's HTTP/2.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    /// Discovery knows the Service, but it has no ready endpoints (or the
    /// control plane has not answered yet).
    #[error("no endpoints for {authority}{why}")]
    NoEndpoints {
        /// The Service authority.
        authority: String,
        /// Extra words, e.g. "; the control plane has not answered yet".
        why: &'static str,
    },
    /// Every endpoint is out of rotation after consecutive failures.
    #[error("all {endpoints} endpoint(s) of {authority} are failing (out of rotation after consecutive failures)")]
    Unavailable {
        /// The Service authority.
        authority: String,
        /// How many endpoints it has.
        endpoints: usize,
    },
    /// The Service has routes, and none matches the request (Gateway API: 404).
    #[error("no route of {authority} matches {method} {path}")]
    NoRouteMatch {
        /// The Service authority.
        authority: String,
        /// Request method.
        method: http::Method,
        /// Request path.
        path: String,
    },
    /// The matched rule has no usable backend (Gateway API: 500).
    #[error("route {rule} of {authority}: {reason}")]
    NoBackend {
        /// The Service authority.
        authority: String,
        /// Which rule.
        rule: String,
        /// Why no backend can take the request.
        reason: String,
    },
    /// Reading a request body kept for retries failed.
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
    /// The upstream answered `101 Switching Protocols` to a request that
    /// asked for no upgrade the proxy passed on.
    #[error("the upstream switched protocols (101) without an upgrade request it could honour")]
    UnrequestedUpgrade,
    /// No response head within the request timeout (`--request-timeout`),
    /// counted from the request head.
    #[error("the upstream did not respond within {} (--request-timeout)", humantime::format_duration(*.after))]
    RequestTimeout {
        /// The configured request timeout.
        after: Duration,
    },
    /// The listener direction's in-flight requests and queue are full: shed.
    #[error("overloaded: {in_flight} requests in flight and {queued} waiting already (--max-concurrent-requests, --max-queued-requests)")]
    Overloaded {
        /// The cap on requests in flight.
        in_flight: usize,
        /// The cap on requests waiting for a slot.
        queued: usize,
    },
    /// Every connection (HTTP/1) or stream (HTTP/2) the proxy may open to
    /// the endpoint is in use and none came free in time (`http::pool`):
    /// nothing was sent.
    #[error("upstream {addr}: {busy}, none free within {}", humantime::format_duration(*.waited))]
    PoolFull {
        /// Upstream address.
        addr: SocketAddr,
        /// What is in use, naming the flags that cap it.
        busy: String,
        /// How long the request waited for a connection.
        waited: Duration,
    },
    /// The listener direction is overloaded (every request of the last
    /// interval waited over the target inside the proxy) and this one
    /// waited past twice the target: shed (`stack::shed`).
    #[error("overloaded: this request waited {:.1} ms in the proxy, and none of the last {} waited less than {} (--shed-target, --shed-interval)", .waited.as_secs_f64() * 1e3, humantime::format_duration(*.interval), humantime::format_duration(*.target))]
    QueueTime {
        /// How long this request waited before admission.
        waited: Duration,
        /// `--shed-target`.
        target: Duration,
        /// `--shed-interval`.
        interval: Duration,
    },
    /// The request names this proxy's own outbound listener: forwarding it
    /// would loop (`stack::loop_guard`).
    #[error("loop: {authority} is this proxy's own outbound listener {listener}; address the destination itself, not the proxy")]
    Loop {
        /// The authority as received.
        authority: String,
        /// The listener it names.
        listener: SocketAddr,
    },
    /// The request has passed `--max-hops` Weft proxies already (its
    /// `weft-hops` header): some route or Service leads back through a
    /// proxy it passed (`stack::loop_guard`).
    #[error("loop: the request has passed {hops} Weft proxies (weft-hops), the most is {max} (--max-hops); a route, a Service's endpoints or an app that forwards requests leads back to a proxy it came through")]
    TooManyHops {
        /// The hop count the request arrived with.
        hops: u32,
        /// `--max-hops`.
        max: u32,
    },
    /// Every endpoint discovered for an authority is one of this proxy's
    /// own listeners: dialing one would send the request back to the proxy.
    #[error("loop: every endpoint of {authority} is this proxy's own listener (e.g. {endpoint}); a Service's endpoints must be the app's address, not the proxy's")]
    SelfEndpoints {
        /// The discovered authority.
        authority: String,
        /// One of the endpoints left out.
        endpoint: SocketAddr,
    },
    /// A discovered authority (Host) that is not a valid `host:port`: refused
    /// without asking the control plane (400).
    #[error("invalid authority {authority:?}: {reason}; expected host:port with a DNS name or an IP address and a port in 1..=65535")]
    InvalidAuthority {
        /// The authority as received (control characters escaped).
        authority: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request the proxy refuses to interpret (400), see `stack::validate`.
    #[error("malformed request: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ProxyError {
    /// The metric label for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxyError::NoRoute { .. } => ErrorKind::NoRoute,
            ProxyError::Loop { .. } | ProxyError::TooManyHops { .. } | ProxyError::SelfEndpoints { .. } => ErrorKind::Loop,
            ProxyError::Connect { .. } => ErrorKind::Connect,
            ProxyError::Timeout { .. } | ProxyError::RequestTimeout { .. } => ErrorKind::Timeout,
            ProxyError::Overloaded { .. } | ProxyError::QueueTime { .. } => ErrorKind::Overloaded,
            ProxyError::PoolFull { .. } => ErrorKind::PoolFull,
            ProxyError::Upstream { .. } | ProxyError::UnrequestedUpgrade => ErrorKind::Upstream,
            ProxyError::BodyTooLarge { .. } => ErrorKind::BodyTooLarge,
            ProxyError::NotCertified { .. } => ErrorKind::NotCertified,
            ProxyError::Tls { .. } => ErrorKind::Tls,
            ProxyError::Upgrade(_)
            | ProxyError::RequestBody(_)
            | ProxyError::Malformed { .. }
            | ProxyError::InvalidAuthority { .. }
            | ProxyError::BodyTimeout(_) => ErrorKind::BadRequest,
            ProxyError::NoEndpoints { .. } => ErrorKind::NoEndpoints,
            ProxyError::Unavailable { .. } => ErrorKind::Unavailable,
            ProxyError::NoRouteMatch { .. } => ErrorKind::RouteNotFound,
            ProxyError::NoBackend { .. } => ErrorKind::NoBackend,
        }
    }

    /// The status the downstream client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::Loop { .. }
            | ProxyError::TooManyHops { .. }
            | ProxyError::SelfEndpoints { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UnrequestedUpgrade
            | ProxyError::Tls { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::NotCertified { .. }
            | ProxyError::NoEndpoints { .. }
            | ProxyError::Unavailable { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::PoolFull { .. }
            | ProxyError::QueueTime { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upgrade(_)
            | ProxyError::RequestBody(_)
            | ProxyError::Malformed { .. }
            | ProxyError::InvalidAuthority { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NoRouteMatch { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoBackend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Timeout { .. } | ProxyError::RequestTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The gRPC status a gRPC client gets instead of [`ProxyError::status`]
    /// (GRPCRoute: no rule matches is UNIMPLEMENTED, an unusable backend
    /// UNAVAILABLE).
    pub fn grpc_code(&self) -> u32 {
        const INTERNAL: u32 = 13;
        const UNAVAILABLE: u32 = 14;
        match self {
            ProxyError::NoRouteMatch { .. } => 12, // UNIMPLEMENTED
            ProxyError::Timeout { .. } | ProxyError::RequestTimeout { .. } | ProxyError::BodyTimeout(_) => 4, // DEADLINE_EXCEEDED
            ProxyError::BodyTooLarge { .. } => 8,  // RESOURCE_EXHAUSTED
            ProxyError::Upgrade(_) | ProxyError::RequestBody(_) | ProxyError::Malformed { .. } => INTERNAL,
            ProxyError::InvalidAuthority { .. } => 3, // INVALID_ARGUMENT
            ProxyError::NoRoute { .. }
            | ProxyError::Loop { .. }
            | ProxyError::TooManyHops { .. }
            | ProxyError::SelfEndpoints { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UnrequestedUpgrade
            | ProxyError::Tls { .. }
            | ProxyError::NotCertified { .. }
            | ProxyError::NoEndpoints { .. }
            | ProxyError::Unavailable { .. }
            | ProxyError::NoBackend { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::PoolFull { .. }
            | ProxyError::QueueTime { .. } => UNAVAILABLE,
        }
    }

    /// The response a gRPC client gets: trailers-only (HTTP 200, the status
    /// in `grpc-status` / `grpc-message`), plus `weft-proxy-error`.
    pub fn into_grpc_response(self) -> Response<ResponseBody> {
        let code = self.grpc_code();
        let mut resp = self.into_response();
        *resp.status_mut() = StatusCode::OK;
        *resp.body_mut() = ResponseBody::empty();
        let h = resp.headers_mut();
        // grpc-message is percent-encoded: '%' and anything outside printable ASCII.
        let message: String = h[&PROXY_ERROR_HEADER]
            .as_bytes()
            .iter()
            .map(|&b| if (0x20..0x7f).contains(&b) && b != b'%' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(code));
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", v);
        }
        resp
    }

    /// The response sent downstream: status, `weft-proxy-error`,
    /// `weft-proxy-error-kind`, and the reason as a plain-text body.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let kind = self.kind();
        let reason = self.to_string();
        // Error texts come from our own formats and OS error strings; strip
        // anything a header value cannot hold rather than drop the header.
        let header = HeaderValue::from_str(&reason).unwrap_or_else(|_| {
            let clean: String = reason.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
            HeaderValue::from_str(&clean).unwrap_or(HeaderValue::from_static("proxy error"))
        });
        let mut body = reason.into_bytes();
        body.push(b'\n');
        let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(PROXY_ERROR_HEADER.clone(), header);
        h.insert(PROXY_ERROR_KIND_HEADER.clone(), HeaderValue::from_static(kind.as_str()));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers() {
        let r = ProxyError::NoRoute { authority: "web:80".into() }.into_response();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[&PROXY_ERROR_HEADER], "no route for web:80");

        let r = ProxyError::Timeout {
            addr: "127.0.0.1:9".parse().unwrap(),
            after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            r.headers()[&PROXY_ERROR_HEADER],
            "upstream 127.0.0.1:9 did not respond within 1s 500ms"
        );

        let r = ProxyError::BodyTooLarge { limit: 10 }.into_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn grpc_clients_get_grpc_statuses() {
        let e = ProxyError::NoRouteMatch { authority: "svc:80".into(), method: http::Method::POST, path: "/a.B/C".into() };
        let r = e.into_grpc_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "12");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert!(r.headers()["grpc-message"].to_str().unwrap().contains("/a.B/C"));
        let e = ProxyError::NoBackend { authority: "svc:80".into(), rule: "r".into(), reason: "100% gone".into() };
        let r = e.into_grpc_response();
        assert_eq!(r.headers()["grpc-status"], "14");
        assert!(r.headers()["grpc-message"].to_str().unwrap().contains("100%25 gone"));
    }

    #[test]
    fn kinds_index_all() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
