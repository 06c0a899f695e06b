//! Gateway API HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1): the
//! fields Weft uses, as serde types kube can watch, and their conversion into
//! index routes. Only routes whose parentRefs name a Service (GAMMA) attach
//! to anything; Gateway parents are ignored.
//!
//! Route annotations (apply to every rule of the route that does not say
//! otherwise itself):
//! - `timeout.weft.io/request`, `timeout.weft.io/backend-request`: durations
//!   (GRPCRoute has no timeouts field).
//! - `retry.weft.io/http`: statuses, e.g. "5xx,429" or "500-504";
//!   `retry.weft.io/grpc`: codes, e.g. "unavailable,resource-exhausted" or "14";
//!   `retry.weft.io/limit`: retries per request (default 1);
//!   `retry.weft.io/backoff`: duration between attempts. An HTTPRoute rule's
//!   own `retry` (codes, attempts, backoff) wins over these.
//! - `retry.weft.io/budget-ratio` (default 0.2), `retry.weft.io/budget-min-per-second`
//!   (default 10), `retry.weft.io/budget-ttl` (default 10s).

use std::collections::BTreeMap;

use kube::CustomResource;
use mesh_index::model::{self, BackendRef, ObjectKey, ParentRef, Resource};
use mesh_index::route::{self as r, HttpFilter, PathMatch, Retry, RetryBudget, StringMatch, Timeouts, ValueMatch};
use serde::{Deserialize, Serialize};

use super::convert::{annotations, created, key, parse_duration_ms, ConvertError, Problems};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(group = "gateway.networking.k8s.io", version = "v1", kind = "HTTPRoute", namespaced, schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(group = "gateway.networking.k8s.io", version = "v1", kind = "GRPCRoute", namespaced, schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    pub timeouts: Option<HttpRouteTimeouts>,
    pub retry: Option<HttpRouteRetry>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    pub path: Option<HttpPathMatch>,
    #[serde(default)]
    pub headers: Vec<NameValueMatch>,
    #[serde(default)]
    pub query_params: Vec<NameValueMatch>,
    pub method: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpPathMatch {
    /// Exact | PathPrefix (default) | RegularExpression.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}

/// Header or query parameter match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct NameValueMatch {
    /// Exact (default) | RegularExpression.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub type_: String,
    pub request_header_modifier: Option<HttpHeaderFilter>,
    pub response_header_modifier: Option<HttpHeaderFilter>,
    pub request_redirect: Option<HttpRequestRedirect>,
    pub url_rewrite: Option<HttpUrlRewrite>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpHeaderFilter {
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
    pub port: Option<i32>,
    pub status_code: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpUrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathModifier {
    /// ReplaceFullPath | ReplacePrefixMatch.
    #[serde(rename = "type")]
    pub type_: String,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpRouteRetry {
    #[serde(default)]
    pub codes: Vec<i32>,
    pub attempts: Option<i32>,
    pub backoff: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct GrpcRouteMatch {
    pub method: Option<GrpcMethodMatch>,
    #[serde(default)]
    pub headers: Vec<NameValueMatch>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct GrpcMethodMatch {
    /// Exact (default) | RegularExpression.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
}

/// Route-wide settings from annotations.
struct RouteDefaults {
    timeouts: Timeouts,
    http_statuses: Option<Vec<(u16, u16)>>,
    grpc_codes: Option<Vec<u32>>,
    limit: Option<u32>,
    backoff_ms: Option<u64>,
    budget: RetryBudget,
}

impl RouteDefaults {
    fn parse(annotations: &BTreeMap<String, String>, p: &mut Problems) -> Self {
        let get = |k: &str| annotations.get(k).map(|v| v.trim());
        let duration = |k: &str, p: &mut Problems| {
            get(k).and_then(|v| parse_duration_ms(v).map_err(|e| p.push(format!("annotation {k}: {e}"))).ok())
        };
        let timeouts = Timeouts {
            request_ms: duration("timeout.weft.io/request", p),
            backend_request_ms: duration("timeout.weft.io/backend-request", p),
        };
        let backoff_ms = duration("retry.weft.io/backoff", p);
        let budget_ttl = duration("retry.weft.io/budget-ttl", p);
        let http_statuses = get("retry.weft.io/http").map(|v| http_statuses(v, "annotation retry.weft.io/http", p));
        let grpc_codes = get("retry.weft.io/grpc").map(|v| grpc_codes(v, p));
        let limit = get("retry.weft.io/limit").and_then(|v| {
            v.parse::<u32>().map_err(|_| p.push(format!("annotation retry.weft.io/limit: {v:?} is not a count"))).ok()
        });
        let mut budget = RetryBudget::default();
        if let Some(v) = get("retry.weft.io/budget-ratio") {
            match v.parse::<f64>() {
                Ok(r) if (0.0..=1000.0).contains(&r) => budget.retry_ratio = r,
                _ => p.push(format!("annotation retry.weft.io/budget-ratio: {v:?} is not a number in 0..=1000")),
            }
        }
        if let Some(v) = get("retry.weft.io/budget-min-per-second") {
            match v.parse::<u32>() {
                Ok(n) => budget.min_retries_per_second = n,
                Err(_) => p.push(format!("annotation retry.weft.io/budget-min-per-second: {v:?} is not a count")),
            }
        }
        if let Some(ttl) = budget_ttl {
            if ttl == 0 {
                p.push("annotation retry.weft.io/budget-ttl: must be more than 0s");
            } else {
                budget.ttl_ms = ttl;
            }
        }
        Self { timeouts, http_statuses, grpc_codes, limit, backoff_ms, budget }
    }

    fn any_retry(&self) -> bool {
        self.http_statuses.is_some() || self.grpc_codes.is_some() || self.limit.is_some() || self.backoff_ms.is_some()
    }
}

/// "5xx,429,500-504" -> inclusive ranges within 100..=599.
fn http_statuses(value: &str, field: &str, p: &mut Problems) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = if let Some(class) = part.strip_suffix("xx") {
            class.parse::<u16>().ok().filter(|c| (1..=5).contains(c)).map(|c| (c * 100, c * 100 + 99))
        } else if let Some((lo, hi)) = part.split_once('-') {
            lo.trim().parse().ok().zip(hi.trim().parse().ok())
        } else {
            part.parse().ok().map(|s| (s, s))
        };
        match range {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => out.push((lo, hi)),
            _ => p.push(format!("{field}: {part:?} is not a status, a range lo-hi or a class like 5xx")),
        }
    }
    out
}

const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

fn grpc_codes(value: &str, p: &mut Problems) -> Vec<u32> {
    let mut out = Vec::new();
    for part in value.split(',').map(|s| s.trim().to_ascii_lowercase().replace('_', "-")).filter(|s| !s.is_empty()) {
        let code = part
            .parse::<u32>()
            .ok()
            .filter(|c| *c <= 16)
            .or_else(|| GRPC_CODES.iter().position(|n| *n == part).map(|i| i as u32));
        match code {
            Some(c) if c != 0 => out.push(c),
            _ => p.push(format!(
                "annotation retry.weft.io/grpc: {part:?} is not a gRPC status code (1..=16 or a name like unavailable)"
            )),
        }
    }
    out
}

fn parents(route_ns: &str, refs: &[ParentReference], p: &mut Problems) -> Vec<ParentRef> {
    let mut out = Vec::new();
    for (i, parent) in refs.iter().enumerate() {
        let core_group = matches!(parent.group.as_deref(), Some("" | "core"));
        if !(core_group && parent.kind.as_deref() == Some("Service")) {
            continue; // a Gateway or another kind: not a mesh attachment
        }
        let port = match parent.port {
            None => None,
            Some(n) => match u16::try_from(n) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    p.push(format!("spec.parentRefs[{i}].port: {n} is not in 1..=65535"));
                    continue;
                }
            },
        };
        let ns = parent.namespace.clone().unwrap_or_else(|| route_ns.to_owned());
        // GAMMA: a Service parent's sectionName is the name of one of its ports.
        let port_name = parent.section_name.clone().filter(|n| !n.is_empty());
        out.push(ParentRef { service: ObjectKey::new(ns, &parent.name), port, port_name });
    }
    out
}

fn backends(route_ns: &str, refs: &[HttpBackendRef], at: &str, grpc: bool, p: &mut Problems) -> Vec<BackendRef> {
    refs.iter()
        .enumerate()
        .map(|(i, b)| {
            let at = format!("{at}.backendRefs[{i}]");
            let is_service = matches!(b.group.as_deref(), None | Some("" | "core"))
                && matches!(b.kind.as_deref(), None | Some("Service"));
            let unsupported = (!is_service).then(|| {
                format!(
                    "backendRef kind {}/{} is not supported (only Services)",
                    b.group.as_deref().unwrap_or(""),
                    b.kind.as_deref().unwrap_or("")
                )
            });
            let port = b.port.and_then(|n| match u16::try_from(n) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    p.push(format!("{at}.port: {n} is not in 1..=65535"));
                    None
                }
            });
            let weight = match b.weight {
                None => 1,
                Some(w) if (0..=1_000_000).contains(&w) => w as u32,
                Some(w) => {
                    p.push(format!("{at}.weight: {w} is not in 0..=1000000"));
                    0
                }
            };
            BackendRef {
                service: ObjectKey::new(b.namespace.clone().unwrap_or_else(|| route_ns.to_owned()), &b.name),
                port,
                weight,
                unsupported,
                filters: filters(&b.filters, &format!("{at}.filters"), grpc, None, p),
            }
        })
        .collect()
}

fn check_regex(pattern: &str, at: &str, p: &mut Problems) {
    if let Err(e) = regex::Regex::new(pattern) {
        // The crate's message is a multi-line drawing; its last line says what is wrong.
        let text = e.to_string();
        let why = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim_start_matches("error: ");
        p.push(format!("{at}: regex {pattern:?} does not compile: {why}"));
    }
}

fn string_match(type_: Option<&str>, value: &str, at: &str, p: &mut Problems) -> StringMatch {
    match type_ {
        None | Some("Exact") => StringMatch::Exact(value.to_owned()),
        Some("RegularExpression") => {
            check_regex(value, at, p);
            StringMatch::Regex(value.to_owned())
        }
        Some(other) => {
            p.push(format!("{at}.type: {other:?} is not Exact or RegularExpression"));
            StringMatch::Exact(value.to_owned())
        }
    }
}

/// Gateway API: of entries with equivalent names only the first counts
/// (header names are case-insensitive, query parameter names are not).
fn value_matches(list: &[NameValueMatch], at: &str, case_insensitive: bool, p: &mut Problems) -> Vec<ValueMatch> {
    let same = |a: &str, b: &str| if case_insensitive { a.eq_ignore_ascii_case(b) } else { a == b };
    list.iter()
        .enumerate()
        .filter(|(i, m)| !list[..*i].iter().any(|earlier| same(&earlier.name, &m.name)))
        .map(|(i, m)| {
            let at = format!("{at}[{i}]");
            if m.name.is_empty() {
                p.push(format!("{at}.name: must not be empty"));
            }
            ValueMatch { name: m.name.clone(), value: string_match(m.type_.as_deref(), &m.value, &at, p) }
        })
        .collect()
}

fn header_modifier(f: Option<&HttpHeaderFilter>, at: &str, p: &mut Problems) -> r::HeaderModifier {
    let Some(f) = f else {
        p.push(format!("{at}: the filter's configuration is missing"));
        return r::HeaderModifier::default();
    };
    let pairs = |list: &[HttpHeader]| list.iter().map(|h| (h.name.clone(), h.value.clone())).collect::<Vec<_>>();
    for h in f.set.iter().chain(&f.add) {
        if h.name.is_empty() {
            p.push(format!("{at}: a header name is empty"));
        }
    }
    r::HeaderModifier { set: pairs(&f.set), add: pairs(&f.add), remove: f.remove.clone() }
}

fn path_modifier(
    m: Option<&HttpPathModifier>,
    at: &str,
    prefix_only: Option<bool>,
    p: &mut Problems,
) -> Option<r::PathModifier> {
    let m = m?;
    match (m.type_.as_str(), &m.replace_full_path, &m.replace_prefix_match) {
        ("ReplaceFullPath", Some(path), _) => Some(r::PathModifier::ReplaceFullPath(path.clone())),
        ("ReplacePrefixMatch", _, Some(prefix)) => {
            if prefix_only == Some(false) {
                p.push(format!("{at}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"));
            }
            Some(r::PathModifier::ReplacePrefixMatch(prefix.clone()))
        }
        (t, _, _) => {
            p.push(format!("{at}: type {t:?} needs its value (ReplaceFullPath + replaceFullPath, or ReplacePrefixMatch + replacePrefixMatch)"));
            None
        }
    }
}

/// `prefix_only`: whether every match of the rule is a path prefix (None for backend filters).
fn filters(
    list: &[HttpRouteFilter],
    at: &str,
    grpc: bool,
    prefix_only: Option<bool>,
    p: &mut Problems,
) -> Vec<HttpFilter> {
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                out.push(HttpFilter::RequestHeaderModifier(header_modifier(f.request_header_modifier.as_ref(), &at, p)))
            }
            "ResponseHeaderModifier" => out.push(HttpFilter::ResponseHeaderModifier(header_modifier(
                f.response_header_modifier.as_ref(),
                &at,
                p,
            ))),
            "RequestRedirect" if !grpc => {
                let Some(rr) = &f.request_redirect else {
                    p.push(format!("{at}: requestRedirect is missing"));
                    continue;
                };
                let status_code = match rr.status_code {
                    None => None,
                    Some(c @ (301 | 302 | 303 | 307 | 308)) => Some(c as u16),
                    Some(c) => {
                        p.push(format!("{at}.requestRedirect.statusCode: {c} is not 301, 302, 303, 307 or 308"));
                        None
                    }
                };
                let port = rr.port.and_then(|n| {
                    u16::try_from(n).ok().filter(|n| *n > 0).or_else(|| {
                        p.push(format!("{at}.requestRedirect.port: {n} is not in 1..=65535"));
                        None
                    })
                });
                if let Some(s) = rr.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
                    p.push(format!("{at}.requestRedirect.scheme: {s:?} is not http or https"));
                }
                out.push(HttpFilter::RequestRedirect(r::RequestRedirect {
                    scheme: rr.scheme.clone(),
                    hostname: rr.hostname.clone(),
                    path: path_modifier(rr.path.as_ref(), &format!("{at}.requestRedirect.path"), prefix_only, p),
                    port,
                    status_code,
                }));
            }
            "URLRewrite" if !grpc => {
                let Some(rw) = &f.url_rewrite else {
                    p.push(format!("{at}: urlRewrite is missing"));
                    continue;
                };
                out.push(HttpFilter::UrlRewrite(r::UrlRewrite {
                    hostname: rw.hostname.clone(),
                    path: path_modifier(rw.path.as_ref(), &format!("{at}.urlRewrite.path"), prefix_only, p),
                }));
            }
            other => p.push(format!(
                "{at}.type: {other:?} is not supported (RequestHeaderModifier, ResponseHeaderModifier{})",
                if grpc { "" } else { ", RequestRedirect, URLRewrite" }
            )),
        }
    }
    if out.iter().any(|f| matches!(f, HttpFilter::RequestRedirect(_)))
        && out.iter().any(|f| matches!(f, HttpFilter::UrlRewrite(_)))
    {
        p.push(format!("{at}: RequestRedirect and URLRewrite cannot be combined"));
    }
    out
}

fn retry_from(
    rule: Option<&HttpRouteRetry>,
    grpc: bool,
    d: &RouteDefaults,
    at: &str,
    p: &mut Problems,
) -> Option<Retry> {
    let (http_statuses, max_retries, backoff_ms) = match rule {
        Some(rr) => {
            let mut statuses = Vec::new();
            for c in &rr.codes {
                match u16::try_from(*c) {
                    Ok(c) if (400..=599).contains(&c) => statuses.push((c, c)),
                    _ => p.push(format!("{at}.retry.codes: {c} is not in 400..=599")),
                }
            }
            let attempts = match rr.attempts {
                None => d.limit.unwrap_or(1),
                Some(n) if n >= 0 => n as u32,
                Some(n) => {
                    p.push(format!("{at}.retry.attempts: {n} is negative"));
                    0
                }
            };
            let backoff = match &rr.backoff {
                Some(b) => parse_duration_ms(b).map_err(|e| p.push(format!("{at}.retry.backoff: {e}"))).ok(),
                None => d.backoff_ms,
            };
            let statuses = if statuses.is_empty() { d.http_statuses.clone().unwrap_or_default() } else { statuses };
            (statuses, attempts, backoff)
        }
        None if d.any_retry() => {
            (d.http_statuses.clone().unwrap_or_else(|| vec![(500, 599)]), d.limit.unwrap_or(1), d.backoff_ms)
        }
        None => return None,
    };
    let grpc_codes = if grpc { d.grpc_codes.clone().unwrap_or_else(|| vec![14]) } else { Vec::new() };
    Some(Retry {
        http_statuses: if grpc { Vec::new() } else { http_statuses },
        grpc_codes,
        max_retries,
        backoff_ms,
        budget: d.budget,
    })
}

fn timeouts(t: Option<&HttpRouteTimeouts>, d: &RouteDefaults, at: &str, p: &mut Problems) -> Timeouts {
    let Some(t) = t else { return d.timeouts };
    let mut parse = |v: &Option<String>, field: &str, default: Option<u64>| match v {
        Some(v) => {
            parse_duration_ms(v).map_err(|e| p.push(format!("{at}.timeouts.{field}: {e}"))).ok().filter(|ms| *ms > 0)
        } // Gateway API: 0s disables the timeout
        None => default,
    };
    let out = Timeouts {
        request_ms: parse(&t.request, "request", d.timeouts.request_ms),
        backend_request_ms: parse(&t.backend_request, "backendRequest", d.timeouts.backend_request_ms),
    };
    if let (Some(req), Some(backend)) = (out.request_ms, out.backend_request_ms) {
        if backend > req {
            p.push(format!("{at}.timeouts: backendRequest ({backend} ms) exceeds request ({req} ms)"));
        }
    }
    out
}

pub fn http_route(route: &HTTPRoute) -> Result<Resource, ConvertError> {
    let meta = &route.metadata;
    let mut p = Problems::new("HTTPRoute", meta);
    let key = key(meta);
    let d = RouteDefaults::parse(&annotations(meta), &mut p);
    let parents = parents(&key.namespace, &route.spec.parent_refs, &mut p);
    let mut rules = Vec::new();
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut matches = Vec::new();
        for (j, m) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
            let path = m.path.as_ref().map(|pm| {
                let value = pm.value.clone().unwrap_or_else(|| "/".to_owned());
                match pm.type_.as_deref() {
                    None | Some("PathPrefix") | Some("Exact") if !value.starts_with('/') => {
                        p.push(format!("{at}.path.value: {value:?} must start with '/'"));
                        PathMatch::Prefix("/".to_owned())
                    }
                    None | Some("PathPrefix") => PathMatch::Prefix(value),
                    Some("Exact") => PathMatch::Exact(value),
                    Some("RegularExpression") => {
                        check_regex(&value, &format!("{at}.path.value"), &mut p);
                        PathMatch::Regex(value)
                    }
                    Some(other) => {
                        p.push(format!("{at}.path.type: {other:?} is not Exact, PathPrefix or RegularExpression"));
                        PathMatch::Prefix(value)
                    }
                }
            });
            matches.push(model::HttpMatch {
                path,
                headers: value_matches(&m.headers, &format!("{at}.headers"), true, &mut p),
                query_params: value_matches(&m.query_params, &format!("{at}.queryParams"), false, &mut p),
                method: m.method.as_ref().map(|m| m.to_ascii_uppercase()),
            });
        }
        let prefix_only = matches.iter().all(|m| matches!(m.path, None | Some(PathMatch::Prefix(_))));
        rules.push(model::HttpRule {
            name: rule.name.clone(),
            filters: filters(&rule.filters, &format!("{at}.filters"), false, Some(prefix_only), &mut p),
            backends: backends(&key.namespace, &rule.backend_refs, &at, false, &mut p),
            timeouts: timeouts(rule.timeouts.as_ref(), &d, &at, &mut p),
            retry: retry_from(rule.retry.as_ref(), false, &d, &at, &mut p),
            matches,
        });
    }
    p.finish(Resource::HttpRoute(model::HttpRoute { created: created(meta), key, parents, rules }))
}

pub fn grpc_route(route: &GRPCRoute) -> Result<Resource, ConvertError> {
    let meta = &route.metadata;
    let mut p = Problems::new("GRPCRoute", meta);
    let key = key(meta);
    let d = RouteDefaults::parse(&annotations(meta), &mut p);
    let parents = parents(&key.namespace, &route.spec.parent_refs, &mut p);
    let mut rules = Vec::new();
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut matches = Vec::new();
        for (j, m) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
            let method = m.method.as_ref().map(|mm| {
                let regex = match mm.type_.as_deref() {
                    None | Some("Exact") => false,
                    Some("RegularExpression") => true,
                    Some(other) => {
                        p.push(format!("{at}.method.type: {other:?} is not Exact or RegularExpression"));
                        false
                    }
                };
                let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
                let (service, method) = (nonempty(&mm.service), nonempty(&mm.method));
                if service.is_none() && method.is_none() {
                    p.push(format!("{at}.method: one of service or method is required"));
                }
                if regex {
                    for v in service.iter().chain(method.iter()) {
                        check_regex(v, &format!("{at}.method"), &mut p);
                    }
                }
                model::GrpcMethodMatch { service, method, regex }
            });
            matches.push(model::GrpcMatch {
                method,
                headers: value_matches(&m.headers, &format!("{at}.headers"), true, &mut p),
            });
        }
        rules.push(model::GrpcRule {
            name: rule.name.clone(),
            matches,
            filters: filters(&rule.filters, &format!("{at}.filters"), true, None, &mut p),
            backends: backends(&key.namespace, &rule.backend_refs, &at, true, &mut p),
            timeouts: d.timeouts,
            retry: retry_from(None, true, &d, &at, &mut p),
        });
    }
    p.finish(Resource::GrpcRoute(model::GrpcRoute { created: created(meta), key, parents, rules }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_match_of_a_name_counts() {
        let meta = kube::api::ObjectMeta { name: Some("r".into()), namespace: Some("ns".into()), ..Default::default() };
        let mut p = Problems::new("HTTPRoute", &meta);
        let m = |name: &str, value: &str| NameValueMatch { type_: None, name: name.into(), value: value.into() };
        let list = [m("X-Version", "1"), m("x-version", "2"), m("other", "3")];
        let headers = value_matches(&list, "h", true, &mut p);
        let seen: Vec<_> = headers.iter().map(|v| (v.name.as_str(), &v.value)).collect();
        assert_eq!(seen, [("X-Version", &StringMatch::Exact("1".into())), ("other", &StringMatch::Exact("3".into()))]);
        // Query parameter names are case-sensitive: both kept.
        assert_eq!(value_matches(&list, "q", false, &mut p).len(), 3);
    }
}
