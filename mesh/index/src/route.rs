//! Gateway API HTTPRoute / GRPCRoute rules in the shape proxies use. Shared
//! by what backends write (`HttpRule<BackendRef>`) and what the index serves
//! (`HttpRule<WeightedBackend>`): only the backends differ, once resolved.
//! Regexes are kept as text; backends validate them before writing.

/// One HTTPRoute rule.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRule<B> {
    pub name: Option<String>,
    /// Empty matches everything.
    pub matches: Vec<HttpMatch>,
    pub filters: Vec<HttpFilter>,
    /// Empty: the parent Service itself.
    pub backends: Vec<B>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
    /// Upper-case; None for any.
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A header or query parameter match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(RequestRedirect),
    UrlRewrite(UrlRewrite),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderModifier {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301 or 302; None means 302.
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    ReplaceFullPath(String),
    ReplacePrefixMatch(String),
}

/// Gateway API HTTPRouteTimeouts, in milliseconds (None: no timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    pub request_ms: Option<u64>,
    pub backend_request_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Inclusive status ranges (HTTP rules).
    pub http_statuses: Vec<(u16, u16)>,
    /// gRPC status codes (gRPC rules).
    pub grpc_codes: Vec<u32>,
    pub max_retries: u32,
    pub backoff_ms: Option<u64>,
    pub budget: RetryBudget,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub retry_ratio: f64,
    pub min_retries_per_second: u32,
    pub ttl_ms: u64,
}

impl Default for RetryBudget {
    /// Linkerd's defaults: retries add at most 20% load, plus 10/s, over 10 s.
    fn default() -> Self {
        Self { retry_ratio: 0.2, min_retries_per_second: 10, ttl_ms: 10_000 }
    }
}

/// One GRPCRoute rule.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcRule<B> {
    pub name: Option<String>,
    pub matches: Vec<GrpcMatch>,
    /// Header modifiers only.
    pub filters: Vec<HttpFilter>,
    pub backends: Vec<B>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcMatch {
    pub method: Option<GrpcMethodMatch>,
    pub headers: Vec<ValueMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcMethodMatch {
    pub service: Option<String>,
    pub method: Option<String>,
    pub regex: bool,
}

/// A backend Service port as served to proxies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    /// `<svc>.<ns>.svc.<cluster-domain>:<port>`.
    pub authority: String,
    pub name: String,
    pub namespace: String,
    pub port: u16,
    /// Why the backend cannot be used (requests to it get 500).
    pub invalid: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeightedBackend {
    pub backend: Backend,
    pub weight: u32,
    pub filters: Vec<HttpFilter>,
}
