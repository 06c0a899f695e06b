//! Why the proxy answered a request itself, as one vocabulary for the
//! `kind` metric label and the `weft-proxy-error` header. It lives with the
//! metrics (not with the error type) so that metrics depend on no part of
//! the request path.

/// A fieldless mirror of [`crate::http::error::ProxyError`], used as a metric
/// label and as the `weft-proxy-error` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// See [`crate::http::error::ProxyError::NoRoute`].
    NoRoute = 0,
    /// See [`crate::http::error::ProxyError::Connect`].
    Connect = 1,
    /// See [`crate::http::error::ProxyError::Timeout`].
    Timeout = 2,
    /// See [`crate::http::error::ProxyError::Upstream`] and [`crate::http::error::ProxyError::UnrequestedUpgrade`].
    Upstream = 3,
    /// See [`crate::http::error::ProxyError::BodyTooLarge`].
    BodyTooLarge = 4,
    /// See [`crate::http::error::ProxyError::NotCertified`].
    NotCertified = 5,
    /// See [`crate::http::error::ProxyError::Tls`].
    Tls = 6,
    /// See [`crate::http::error::ProxyError::Upgrade`] and [`crate::http::error::ProxyError::RequestBody`].
    BadRequest = 7,
    /// See [`crate::http::error::ProxyError::NoEndpoints`].
    NoEndpoints = 8,
    /// See [`crate::http::error::ProxyError::Unavailable`].
    Unavailable = 9,
    /// See [`crate::http::error::ProxyError::NoRouteMatch`].
    RouteNotFound = 10,
    /// See [`crate::http::error::ProxyError::NoBackend`].
    NoBackend = 11,
    /// See [`crate::http::error::ProxyError::Overloaded`]: a shed request.
    Overloaded = 12,
    /// See [`crate::http::error::ProxyError::Loop`]: a request to the proxy itself.
    Loop = 13,
    /// See [`crate::http::error::ProxyError::PoolFull`]: no connection to the endpoint came free.
    PoolFull = 14,
}

impl ErrorKind {
    /// Every kind, indexed by its discriminant.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::NoRoute,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Upstream,
        ErrorKind::BodyTooLarge,
        ErrorKind::NotCertified,
        ErrorKind::Tls,
        ErrorKind::BadRequest,
        ErrorKind::NoEndpoints,
        ErrorKind::Unavailable,
        ErrorKind::RouteNotFound,
        ErrorKind::NoBackend,
        ErrorKind::Overloaded,
        ErrorKind::Loop,
        ErrorKind::PoolFull,
    ];

    /// The kind whose label is `label` (a peer proxy's `weft-proxy-error-kind`).
    pub fn from_label(label: &[u8]) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str().as_bytes() == label)
    }

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream => "upstream",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::NotCertified => "not_certified",
            ErrorKind::Tls => "tls",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NoEndpoints => "no_endpoints",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::RouteNotFound => "route_not_found",
            ErrorKind::NoBackend => "no_backend",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Loop => "loop",
            ErrorKind::PoolFull => "pool_full",
        }
    }
}
