//! HTTP routes in the proxy's own terms (a proxy-friendly form of Gateway
//! API HTTPRoute/GRPCRoute): matches, filters, weighted backends, timeouts
//! and retries, and the table that picks a rule for a request.
//!
//! A [`RouteTable`] is built once per policy update: every (rule, match)
//! pair is sorted by Gateway API precedence up front, so choosing a rule is
//! one linear scan of cheap comparisons, first hit wins.

use std::{sync::Arc, time::Duration};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use regex::Regex;

use crate::discovery::retry::RetryPolicy;

/// How a request path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact(String),
    /// Path-element prefix: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    Prefix(String),
    /// The whole path matches the regular expression.
    Regex(Regex),
}

impl PathMatch {
    /// A full-match regex (Gateway API regexes match the whole value).
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Regex::new(&format!("^(?:{pattern})$")).map(PathMatch::Regex)
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => prefix_len(p, path).is_some(),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// Bytes of `path` covered by the path-element prefix `prefix`, if it matches.
fn prefix_len(prefix: &str, path: &str) -> Option<usize> {
    let p = prefix.trim_end_matches('/');
    if !path.starts_with(p) {
        return None;
    }
    match path.as_bytes().get(p.len()) {
        None | Some(b'/') => Some(p.len()),
        Some(_) => None,
    }
}

/// How a header or query parameter value is matched.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Exactly this value.
    Exact(String),
    /// The whole value matches.
    Regex(Regex),
}

impl ValueMatch {
    /// A full-match regex.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Regex::new(&format!("^(?:{pattern})$")).map(ValueMatch::Regex)
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == value,
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

/// One HTTPRouteMatch: every present condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Path condition; `None` matches every path.
    pub path: Option<PathMatch>,
    /// Method condition.
    pub method: Option<Method>,
    /// Header conditions (names are case-insensitive).
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Query parameter conditions (names are exact; values compared raw,
    /// without percent-decoding).
    pub query: Vec<(String, ValueMatch)>,
    /// A GRPCRoute match: characters of the service and of the method it
    /// names exactly (0 for any, or a regex). GRPCRoute precedence is by
    /// these, then header matches, not by the path match's kind.
    pub grpc: Option<(usize, usize)>,
}

impl RouteMatch {
    /// Whether `req` satisfies every condition.
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        if let Some(m) = &self.method {
            if req.method() != m {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if !p.matches(req.uri().path()) {
                return false;
            }
        }
        for (name, value) in &self.headers {
            let hit = req
                .headers()
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| value.matches(v)));
            if !hit {
                return false;
            }
        }
        if !self.query.is_empty() {
            let query = req.uri().query().unwrap_or("");
            for (name, value) in &self.query {
                let hit = query.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == name && value.matches(v)
                });
                if !hit {
                    return false;
                }
            }
        }
        true
    }

    /// Gateway API precedence, larger first. HTTPRoute: exact path, then
    /// regex, then the longest prefix; then a method; then more headers;
    /// then more query parameters. GRPCRoute: more characters of exactly
    /// matched service, then of method, then more headers. Ties keep the
    /// configured order (routes oldest first, rules in order).
    fn precedence(&self) -> (u8, usize, usize, usize, usize) {
        if let Some((service, method)) = self.grpc {
            return (0, service, method, self.headers.len(), 0);
        }
        let (kind, len) = match &self.path {
            Some(PathMatch::Exact(p)) => (3, p.len()),
            Some(PathMatch::Regex(r)) => (2, r.as_str().len()),
            Some(PathMatch::Prefix(p)) => (1, p.trim_end_matches('/').len()),
            None => (1, 0),
        };
        (kind, len, usize::from(self.method.is_some()), self.headers.len(), self.query.len())
    }
}

/// Set / add / remove header fields.
#[derive(Debug, Clone, Default)]
pub struct HeaderModifier {
    /// Replace (or create) these fields.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these fields.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove these fields.
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the modification in Gateway API order: set, add, remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// How a path is rewritten (redirects and URL rewrites).
#[derive(Debug, Clone)]
pub enum PathModifier {
    /// Replace the whole path.
    Full(String),
    /// Replace the prefix the rule matched on with this one.
    Prefix(String),
}

impl PathModifier {
    /// The new path for `path`, given the prefix the rule matched (if any).
    pub fn apply(&self, path: &str, matched: Option<&RouteMatch>) -> String {
        match self {
            PathModifier::Full(p) => p.clone(),
            PathModifier::Prefix(new) => {
                let cut = match matched.and_then(|m| m.path.as_ref()) {
                    Some(PathMatch::Prefix(p)) => prefix_len(p, path).unwrap_or(0),
                    _ => 0,
                };
                let rest = &path[cut..];
                let new = new.trim_end_matches('/');
                match (new.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_owned(),
                    (true, false) => rest.to_owned(),
                    (false, _) => format!("{new}{rest}"),
                }
            }
        }
    }
}

/// An HTTP redirect answered by the proxy.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// `http` or `https`; `None` keeps the request's (`http` here).
    pub scheme: Option<String>,
    /// New host; `None` keeps the request's.
    pub hostname: Option<String>,
    /// New path; `None` keeps the request's.
    pub path: Option<PathModifier>,
    /// New port; `None` keeps the request's.
    pub port: Option<u16>,
    /// 301 or 302 (Gateway API), any 3xx accepted.
    pub status: StatusCode,
}

/// Rewrites the request before it is forwarded.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// New `Host` / `:authority`.
    pub hostname: Option<String>,
    /// New path (the query is kept).
    pub path: Option<PathModifier>,
}

/// A rule's filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Modify request headers before forwarding.
    RequestHeaders(HeaderModifier),
    /// Modify response headers before answering.
    ResponseHeaders(HeaderModifier),
    /// Answer with a redirect instead of forwarding.
    Redirect(Redirect),
    /// Rewrite host and/or path before forwarding.
    Rewrite(Rewrite),
}

/// One weighted backend: a Service authority resolved through Destination.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    /// `name.ns.svc.cluster.local:port` (or any authority Destination knows).
    pub authority: String,
    /// Relative share of requests; 0 never receives any.
    pub weight: u32,
    /// Applied to requests sent to this backend, after the rule's filters.
    pub filters: Vec<Filter>,
    /// Why this backend cannot be used (its requests get 500), if so.
    pub invalid: Option<String>,
}

/// Per-rule timeouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole request, all retries included, until the response head.
    pub request: Option<Duration>,
    /// Each attempt on a backend, until its response head.
    pub backend_request: Option<Duration>,
}

/// One HTTPRouteRule.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Any of these must match; none means every request.
    pub matches: Vec<RouteMatch>,
    /// Applied in order.
    pub filters: Vec<Filter>,
    /// Weighted backends; empty with no redirect answers 500 (Gateway API).
    pub backends: Vec<Backend>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Retries, if any.
    pub retry: Option<Arc<RetryPolicy>>,
    /// `route namespace/name rule N`, for logs.
    pub name: String,
    /// `ROUTE/RULE` (the rule's name, else its index), the `route` metric
    /// label; `None`: a default route.
    pub label: Option<Arc<str>>,
}

impl Rule {
    /// The default rule for a Service without routes: everything goes to
    /// the Service itself.
    pub fn to_service(authority: &str) -> Self {
        Rule { backends: vec![Backend { authority: authority.to_owned(), weight: 1, ..Backend::default() }], ..Rule::default() }
    }

    /// A backend by weight; `None` when there is none with weight > 0.
    pub fn pick_backend(&self) -> Option<&Backend> {
        match self.backends.as_slice() {
            [] => None,
            [only] => (only.weight > 0).then_some(only),
            many => {
                let total: u64 = many.iter().map(|b| u64::from(b.weight)).sum();
                if total == 0 {
                    return None;
                }
                let mut x = fastrand::u64(0..total);
                many.iter().find(|b| {
                    let w = u64::from(b.weight);
                    if x < w {
                        true
                    } else {
                        x -= w;
                        false
                    }
                })
            }
        }
    }
}

/// A Service's rules, ordered for matching.
#[derive(Debug, Clone)]
pub struct RouteTable {
    rules: Vec<Rule>,
    /// (rule index, match index or `None` for a rule without matches),
    /// in precedence order.
    order: Vec<(usize, Option<usize>)>,
}

impl RouteTable {
    /// Orders every (rule, match) pair by precedence.
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut order: Vec<(usize, Option<usize>)> = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            if rule.matches.is_empty() {
                order.push((r, None));
            }
            for m in 0..rule.matches.len() {
                order.push((r, Some(m)));
            }
        }
        // A rule without matches ranks as the weakest match of its table's kind.
        let grpc = rules.iter().flat_map(|r| &r.matches).any(|m| m.grpc.is_some());
        let default = RouteMatch { grpc: grpc.then_some((0, 0)), ..RouteMatch::default() };
        let key = |&(r, m): &(usize, Option<usize>)| m.map_or(&default, |m| &rules[r].matches[m]).precedence();
        // Stable: equal precedence keeps the configured order.
        order.sort_by_key(|e| std::cmp::Reverse(key(e)));
        Self { rules, order }
    }

    /// The table used when a Service has no routes.
    pub fn default_for(authority: &str) -> Self {
        Self::new(vec![Rule::to_service(authority)])
    }

    /// The rule for `req` and the match that selected it; `None`: no rule
    /// matches (404).
    pub fn select<B>(&self, req: &Request<B>) -> Option<(&Rule, Option<&RouteMatch>)> {
        self.order.iter().find_map(|&(r, m)| {
            let rule = &self.rules[r];
            match m {
                None => Some((rule, None)),
                Some(m) => {
                    let m = &rule.matches[m];
                    m.matches(req).then_some((rule, Some(m)))
                }
            }
        })
    }

    /// The rules, as configured.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// `host[:port]` (userinfo dropped) -> (host, port).
fn host_and_port(authority: &str) -> (&str, Option<u16>) {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => (h, p.parse().ok()),
        _ => (authority, None),
    }
}

/// Builds the `Location` of a redirect for a request to the Service port
/// `authority` (`host:port`; in transparent mode the original destination).
///
/// Gateway API `HTTPRequestRedirectFilter`: an empty hostname keeps the
/// request's own (its `Host` / `:authority`, falling back to `authority`);
/// an empty port is the scheme's well-known port when the scheme is set,
/// else the listener's, which for a mesh is the Service port; a port that
/// is the scheme's default (http 80, https 443) is left out.
pub fn redirect_location<B>(r: &Redirect, req: &Request<B>, authority: &str, matched: Option<&RouteMatch>) -> String {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let (service_host, req_port) = host_and_port(authority);
    let req_host = crate::http::router::request_authority(req)
        .map(|a| host_and_port(a).0)
        .filter(|h| !h.is_empty())
        .unwrap_or(service_host);
    let host = r.hostname.as_deref().unwrap_or(req_host);
    // RFC 9110: a scheme's default port is left out.
    let port = r.port.or(if r.scheme.is_some() { None } else { req_port });
    let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
    let path = match &r.path {
        Some(m) => m.apply(req.uri().path(), matched),
        None => req.uri().path().to_owned(),
    };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port {
        loc.push_str(&format!(":{p}"));
    }
    loc.push_str(&path);
    if let Some(q) = req.uri().query() {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

/// Applies a URL rewrite to the request head in place.
pub fn apply_rewrite(rw: &Rewrite, parts: &mut http::request::Parts, matched: Option<&RouteMatch>) {
    if let Some(host) = &rw.hostname {
        if let Ok(v) = HeaderValue::from_str(host) {
            parts.headers.insert(header::HOST, v);
        }
        if parts.uri.authority().is_some() {
            let mut p = parts.uri.clone().into_parts();
            if let Ok(a) = host.parse() {
                p.authority = Some(a);
                if let Ok(u) = http::Uri::from_parts(p) {
                    parts.uri = u;
                }
            }
        }
    }
    if let Some(pm) = &rw.path {
        let new_path = pm.apply(parts.uri.path(), matched);
        let pq = match parts.uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let mut p = parts.uri.clone().into_parts();
        if let Ok(pq) = pq.parse() {
            p.path_and_query = Some(pq);
            if let Ok(u) = http::Uri::from_parts(p) {
                parts.uri = u;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn rule(name: &str, matches: Vec<RouteMatch>) -> Rule {
        Rule { matches, backends: vec![Backend { authority: name.into(), weight: 1, ..Backend::default() }], ..Rule::default() }
    }

    fn picked(t: &RouteTable, r: &Request<()>) -> Option<String> {
        t.select(r).map(|(rule, _)| rule.backends[0].authority.clone())
    }

    #[test]
    fn prefix_matches_path_elements() {
        let m = PathMatch::Prefix("/foo".into());
        assert!(m.matches("/foo"));
        assert!(m.matches("/foo/bar"));
        assert!(!m.matches("/foobar"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
        assert!(PathMatch::Prefix("/foo/".into()).matches("/foo/x"));
        assert!(PathMatch::regex("/v[0-9]+/.*").unwrap().matches("/v2/x"));
        assert!(!PathMatch::regex("/v[0-9]+").unwrap().matches("/v2/x"), "regexes match the whole path");
    }

    #[test]
    fn precedence_exact_then_regex_then_longest_prefix_then_method_headers_query() {
        let t = RouteTable::new(vec![
            rule("any", vec![]),
            rule("prefix-a", vec![RouteMatch { path: Some(PathMatch::Prefix("/a".into())), ..Default::default() }]),
            rule("prefix-ab", vec![RouteMatch { path: Some(PathMatch::Prefix("/a/b".into())), ..Default::default() }]),
            rule("exact", vec![RouteMatch { path: Some(PathMatch::Exact("/a/b/c".into())), ..Default::default() }]),
            rule("regex", vec![RouteMatch { path: Some(PathMatch::regex("/a/b/r.*").unwrap()), ..Default::default() }]),
            rule(
                "post",
                vec![RouteMatch {
                    path: Some(PathMatch::Prefix("/a".into())),
                    method: Some(Method::POST),
                    ..Default::default()
                }],
            ),
            rule(
                "header",
                vec![RouteMatch {
                    path: Some(PathMatch::Prefix("/a".into())),
                    headers: vec![(HeaderName::from_static("x-canary"), ValueMatch::Exact("1".into()))],
                    ..Default::default()
                }],
            ),
            rule(
                "query",
                vec![RouteMatch {
                    path: Some(PathMatch::Prefix("/a".into())),
                    query: vec![("v".into(), ValueMatch::regex("[0-9]+").unwrap())],
                    ..Default::default()
                }],
            ),
        ]);
        assert_eq!(picked(&t, &req("GET", "/a/b/c", &[])).as_deref(), Some("exact"));
        assert_eq!(picked(&t, &req("GET", "/a/b/rx", &[])).as_deref(), Some("regex"));
        assert_eq!(picked(&t, &req("GET", "/a/b/x", &[])).as_deref(), Some("prefix-ab"));
        assert_eq!(picked(&t, &req("POST", "/a/x", &[("x-canary", "1")])).as_deref(), Some("post"));
        assert_eq!(picked(&t, &req("GET", "/a/x", &[("x-canary", "1")])).as_deref(), Some("header"));
        assert_eq!(picked(&t, &req("GET", "/a/x?w=1&v=12", &[])).as_deref(), Some("query"));
        assert_eq!(picked(&t, &req("GET", "/a/x?v=no", &[])).as_deref(), Some("prefix-a"));
        assert_eq!(picked(&t, &req("GET", "/ab", &[])).as_deref(), Some("any"));
    }

    #[test]
    fn grpc_precedence_is_service_then_method_then_headers() {
        let grpc = |name: &str, path: PathMatch, chars: (usize, usize), headers: usize| {
            let headers = (0..headers).map(|i| (HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(), ValueMatch::Exact("1".into()))).collect();
            rule(name, vec![RouteMatch { path: Some(path), headers, grpc: Some(chars), ..Default::default() }])
        };
        let t = RouteTable::new(vec![
            // Method only (a regex on the path), listed first.
            grpc("method-only", PathMatch::regex("/[^/]+/Get").unwrap(), (0, 3), 0),
            grpc("service-only", PathMatch::Prefix("/pkg.Svc".into()), (7, 0), 0),
            grpc("service-only-header", PathMatch::Prefix("/pkg.Svc".into()), (7, 0), 1),
            grpc("exact", PathMatch::Exact("/pkg.Svc/Get".into()), (7, 3), 0),
            rule("any", vec![]),
        ]);
        let r = |path: &str, h: &[(&str, &str)]| req("POST", path, h);
        assert_eq!(picked(&t, &r("/pkg.Svc/Get", &[])).as_deref(), Some("exact"));
        assert_eq!(picked(&t, &r("/pkg.Svc/Put", &[("x-h0", "1")])).as_deref(), Some("service-only-header"));
        assert_eq!(picked(&t, &r("/pkg.Svc/Put", &[])).as_deref(), Some("service-only"));
        // A matching service outranks a matching method.
        assert_eq!(picked(&t, &r("/other.Svc/Get", &[])).as_deref(), Some("method-only"));
        assert_eq!(picked(&t, &r("/other.Svc/Put", &[])).as_deref(), Some("any"), "a rule without matches comes last");
    }

    #[test]
    fn no_match_is_none() {
        let t = RouteTable::new(vec![rule(
            "only",
            vec![RouteMatch { path: Some(PathMatch::Exact("/x".into())), ..Default::default() }],
        )]);
        assert!(t.select(&req("GET", "/y", &[])).is_none());
    }

    #[test]
    fn weighted_backends_split() {
        let r = Rule {
            backends: vec![
                Backend { authority: "a".into(), weight: 90, ..Backend::default() },
                Backend { authority: "b".into(), weight: 10, ..Backend::default() },
                Backend { authority: "never".into(), weight: 0, ..Backend::default() },
            ],
            ..Rule::default()
        };
        let n = 20_000;
        let a = (0..n).filter(|_| r.pick_backend().unwrap().authority == "a").count();
        let share = a as f64 / n as f64;
        assert!((0.88..=0.92).contains(&share), "{share}");
        assert!((0..1000).all(|_| r.pick_backend().unwrap().authority != "never"));
        assert!(Rule::default().pick_backend().is_none());
    }

    #[test]
    fn path_modifiers_and_redirects() {
        let m = RouteMatch { path: Some(PathMatch::Prefix("/old".into())), ..Default::default() };
        assert_eq!(PathModifier::Prefix("/new".into()).apply("/old/x", Some(&m)), "/new/x");
        assert_eq!(PathModifier::Prefix("/".into()).apply("/old/x", Some(&m)), "/x");
        assert_eq!(PathModifier::Prefix("/".into()).apply("/old", Some(&m)), "/");
        assert_eq!(PathModifier::Full("/z".into()).apply("/old/x", Some(&m)), "/z");

        let r = Redirect {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathModifier::Prefix("/new".into())),
            port: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let q = req("GET", "/old/x?a=1", &[]);
        assert_eq!(redirect_location(&r, &q, "web.ns:80", Some(&m)), "https://web.ns/new/x?a=1");
        let r2 = Redirect { scheme: None, hostname: Some("other".into()), path: None, port: None, status: StatusCode::FOUND };
        assert_eq!(redirect_location(&r2, &q, "web.ns:8080", Some(&m)), "http://other:8080/old/x?a=1");

        // No hostname: the request's Host, not the address it was sent to
        // (transparent mode routes by the ClusterIP); the Service's port.
        let keep = |scheme: Option<&str>, port: Option<u16>| Redirect {
            scheme: scheme.map(Into::into),
            hostname: None,
            path: None,
            port,
            status: StatusCode::FOUND,
        };
        let q = req("GET", "/p", &[("host", "echo.gamma.svc.cluster.local:80")]);
        assert_eq!(redirect_location(&keep(Some("https"), None), &q, "198.19.0.1:80", None), "https://echo.gamma.svc.cluster.local/p");
        assert_eq!(redirect_location(&keep(None, Some(8083)), &q, "198.19.0.1:80", None), "http://echo.gamma.svc.cluster.local:8083/p");
        assert_eq!(redirect_location(&keep(None, None), &q, "198.19.0.1:8080", None), "http://echo.gamma.svc.cluster.local:8080/p");
        // Default ports are left out; a non-default one with a scheme stays.
        assert_eq!(redirect_location(&keep(Some("http"), Some(80)), &q, "198.19.0.1:80", None), "http://echo.gamma.svc.cluster.local/p");
        assert_eq!(redirect_location(&keep(Some("https"), Some(443)), &q, "198.19.0.1:80", None), "https://echo.gamma.svc.cluster.local/p");
        assert_eq!(redirect_location(&keep(Some("https"), Some(8443)), &q, "198.19.0.1:80", None), "https://echo.gamma.svc.cluster.local:8443/p");
        assert_eq!(redirect_location(&keep(Some("http"), None), &q, "198.19.0.1:8080", None), "http://echo.gamma.svc.cluster.local/p");
        // No Host at all: the authority's host.
        let bare = req("GET", "/p", &[]);
        assert_eq!(redirect_location(&keep(None, None), &bare, "web.ns:80", None), "http://web.ns/p");
    }

    #[test]
    fn header_modifier_and_rewrite() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        HeaderModifier {
            set: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("new"))],
            add: vec![(HeaderName::from_static("x-b"), HeaderValue::from_static("1"))],
            remove: vec![HeaderName::from_static("x-gone")],
        }
        .apply(&mut h);
        assert_eq!(h["x-a"], "new");
        assert_eq!(h["x-b"], "1");
        assert!(h.get("x-gone").is_none());

        let m = RouteMatch { path: Some(PathMatch::Prefix("/api".into())), ..Default::default() };
        let (mut parts, ()) = req("GET", "/api/v1?q=2", &[("host", "web")]).into_parts();
        apply_rewrite(
            &Rewrite { hostname: Some("internal".into()), path: Some(PathModifier::Prefix("/".into())) },
            &mut parts,
            Some(&m),
        );
        assert_eq!(parts.uri, "/v1?q=2");
        assert_eq!(parts.headers["host"], "internal");
    }
}
