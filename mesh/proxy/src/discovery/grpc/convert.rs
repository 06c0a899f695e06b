//! `weft.policy.v1` messages -> the proxy's policy types.
//!
//! Conversion never fails as a whole: a part that cannot be used (a bad
//! regex, an invalid header name) is left out and reported, and the rest of
//! the policy applies. A match left out makes its rule narrower, never wider:
//! a rule whose every match was bad is dropped.

use std::{collections::HashSet, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Method, StatusCode};
use mesh_api::policy::v1 as pol;

use crate::{
    discovery::policy::{
        route::{
            Backend, Filter, HeaderModifier, PathMatch, PathModifier, Redirect, Rewrite, RouteMatch, Rule, Timeouts,
            ValueMatch,
        },
        AccrualConfig, Authorization, InboundPolicy, OutboundPolicy, RouteTable,
    },
    discovery::retry::{BudgetConfig, RetryPolicy},
};

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

/// The outbound policy of `authority`, and what had to be left out.
pub fn outbound(authority: &str, msg: pol::OutboundPolicy) -> (OutboundPolicy, Vec<String>) {
    let mut problems = Vec::new();
    let opaque = msg.protocol == pol::Protocol::Opaque as i32;
    if !msg.exists {
        // A pod address may still name its port's protocol.
        return (OutboundPolicy { opaque, ..OutboundPolicy::default_for(authority) }, problems);
    }
    // The Service's canonical authority, resolved through Destination.
    let service = msg
        .service
        .as_ref()
        .map(|b| b.authority.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| authority.to_owned());
    let accrual = msg.failure_accrual.map_or_else(AccrualConfig::default, |f| AccrualConfig {
        consecutive_failures: f.consecutive_failures,
        min_backoff: ms(f.min_backoff_ms).unwrap_or(Duration::from_secs(1)),
        max_backoff: ms(f.max_backoff_ms).unwrap_or(Duration::from_secs(60)),
        jitter: f.jitter_ratio,
    });
    let mut rules = Vec::new();
    for route in msg.http_routes {
        let name = meta_name(route.meta.as_ref());
        for (i, r) in route.rules.into_iter().enumerate() {
            let rule_name = if r.name.is_empty() { format!("{name} rule {i}") } else { format!("{name} rule {}", r.name) };
            let label = rule_label(route.meta.as_ref(), &r.name, i);
            let mut matches = Vec::new();
            let given = r.matches.len();
            for m in r.matches {
                match http_match(m) {
                    Ok(m) => matches.push(m),
                    Err(e) => problems.push(format!("{rule_name}: match left out: {e}")),
                }
            }
            if given > 0 && matches.is_empty() {
                problems.push(format!("{rule_name}: dropped (no usable match)"));
                continue;
            }
            let filters = filters(&rule_name, r.filters, &mut problems);
            rules.push(Rule {
                matches,
                filters,
                backends: backends(&rule_name, &service, r.backends, &mut problems),
                timeouts: timeouts(r.timeouts),
                retry: retry(r.retry),
                name: rule_name,
                label: Some(label),
            });
        }
    }
    let routes = if rules.is_empty() { RouteTable::default_for(&service) } else { RouteTable::new(rules) };
    let mut grpc_rules = Vec::new();
    for route in msg.grpc_routes {
        let name = meta_name(route.meta.as_ref());
        for (i, r) in route.rules.into_iter().enumerate() {
            let rule_name = if r.name.is_empty() { format!("{name} rule {i}") } else { format!("{name} rule {}", r.name) };
            let label = rule_label(route.meta.as_ref(), &r.name, i);
            let given = r.matches.len();
            let mut matches = Vec::new();
            for m in r.matches {
                match grpc_match(m) {
                    Ok(m) => matches.push(m),
                    Err(e) => problems.push(format!("{rule_name}: match left out: {e}")),
                }
            }
            if given > 0 && matches.is_empty() {
                problems.push(format!("{rule_name}: dropped (no usable match)"));
                continue;
            }
            let filters = filters(&rule_name, r.filters, &mut problems);
            grpc_rules.push(Rule {
                matches,
                filters,
                backends: backends(&rule_name, &service, r.backends, &mut problems),
                timeouts: timeouts(r.timeouts),
                retry: retry(r.retry),
                name: rule_name,
                label: Some(label),
            });
        }
    }
    let grpc_routes = (!grpc_rules.is_empty()).then(|| RouteTable::new(grpc_rules));
    (OutboundPolicy { routes, grpc_routes, accrual, opaque }, problems)
}

/// The `route` metric label of rule `index` (named `rule`, or not).
fn rule_label(m: Option<&pol::Meta>, rule: &str, index: usize) -> std::sync::Arc<str> {
    let route = m.map_or("route", |m| m.name.as_str());
    match rule.is_empty() {
        true => format!("{route}/{index}").into(),
        false => format!("{route}/{rule}").into(),
    }
}

fn meta_name(m: Option<&pol::Meta>) -> String {
    match m {
        Some(m) => format!("{} {}/{}", m.kind, m.namespace, m.name),
        None => "route".to_owned(),
    }
}

fn value_match(name: &str, exact: Option<String>, regex: Option<String>) -> Result<ValueMatch, String> {
    match (exact, regex) {
        (Some(e), _) => Ok(ValueMatch::Exact(e)),
        (None, Some(r)) => ValueMatch::regex(&r).map_err(|e| format!("{name}: regex {r:?}: {e}")),
        (None, None) => Err(format!("{name}: no value to match")),
    }
}

fn header_matches(headers: Vec<pol::HeaderMatch>) -> Result<Vec<(HeaderName, ValueMatch)>, String> {
    use pol::header_match::Value;
    headers
        .into_iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("bad header name {:?}", h.name))?;
            let (exact, regex) = match h.value {
                Some(Value::Exact(e)) => (Some(e), None),
                Some(Value::Regex(r)) => (None, Some(r)),
                None => (None, None),
            };
            Ok((name, value_match(&h.name, exact, regex)?))
        })
        .collect()
}

fn http_match(m: pol::HttpMatch) -> Result<RouteMatch, String> {
    use pol::{path_match::Kind, query_param_match::Value};
    let path = match m.path.and_then(|p| p.kind) {
        None => None,
        Some(Kind::Exact(p)) => Some(PathMatch::Exact(p)),
        Some(Kind::Prefix(p)) => Some(PathMatch::Prefix(p)),
        Some(Kind::Regex(r)) => Some(PathMatch::regex(&r).map_err(|e| format!("path regex {r:?}: {e}"))?),
    };
    let method = match m.method.as_str() {
        "" => None,
        other => Some(Method::from_bytes(other.as_bytes()).map_err(|_| format!("bad method {other:?}"))?),
    };
    let query = m
        .query_params
        .into_iter()
        .map(|q| {
            let (exact, regex) = match q.value {
                Some(Value::Exact(e)) => (Some(e), None),
                Some(Value::Regex(r)) => (None, Some(r)),
                None => (None, None),
            };
            Ok((q.name.clone(), value_match(&q.name, exact, regex)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(RouteMatch { path, method, headers: header_matches(m.headers)?, query, grpc: None })
}

/// gRPC method matches become path matches on `/<service>/<method>`,
/// ranked by the characters of what they name exactly (GRPCRoute precedence).
fn grpc_match(m: pol::GrpcMatch) -> Result<RouteMatch, String> {
    let chars = match &m.method {
        Some(mm) if !mm.regex => (mm.service.len(), mm.method.len()),
        _ => (0, 0),
    };
    let path = match m.method {
        None => None,
        Some(mm) if mm.regex => {
            let svc = if mm.service.is_empty() { "[^/]+".to_owned() } else { mm.service.clone() };
            let method = if mm.method.is_empty() { "[^/]+".to_owned() } else { mm.method.clone() };
            Some(PathMatch::regex(&format!("/(?:{svc})/(?:{method})")).map_err(|e| format!("grpc regex: {e}"))?)
        }
        Some(mm) => match (mm.service.is_empty(), mm.method.is_empty()) {
            (false, false) => Some(PathMatch::Exact(format!("/{}/{}", mm.service, mm.method))),
            (false, true) => Some(PathMatch::Prefix(format!("/{}", mm.service))),
            (true, false) => Some(
                PathMatch::regex(&format!("/[^/]+/{}", regex::escape(&mm.method))).map_err(|e| format!("grpc method: {e}"))?,
            ),
            (true, true) => None,
        },
    };
    Ok(RouteMatch { path, method: None, headers: header_matches(m.headers)?, query: Vec::new(), grpc: Some(chars) })
}

fn header_list(list: Vec<pol::Header>, problems: &mut Vec<String>, rule: &str) -> Vec<(HeaderName, HeaderValue)> {
    list.into_iter()
        .filter_map(|h| match (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                problems.push(format!("{rule}: header {:?}: {:?} left out (invalid)", h.name, h.value));
                None
            }
        })
        .collect()
}

fn modifier(m: pol::HeaderModifier, problems: &mut Vec<String>, rule: &str) -> HeaderModifier {
    HeaderModifier {
        set: header_list(m.set, problems, rule),
        add: header_list(m.add, problems, rule),
        remove: m.remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
    }
}

fn path_modifier(p: Option<pol::PathModifier>) -> Option<PathModifier> {
    use pol::path_modifier::Kind;
    match p?.kind? {
        Kind::ReplaceFullPath(p) => Some(PathModifier::Full(p)),
        Kind::ReplacePrefixMatch(p) => Some(PathModifier::Prefix(p)),
    }
}

fn filters(rule: &str, list: Vec<pol::HttpFilter>, problems: &mut Vec<String>) -> Vec<Filter> {
    use pol::http_filter::Kind;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    list.into_iter()
        .filter_map(|f| {
            Some(match f.kind? {
                Kind::RequestHeaderModifier(m) => Filter::RequestHeaders(modifier(m, problems, rule)),
                Kind::ResponseHeaderModifier(m) => Filter::ResponseHeaders(modifier(m, problems, rule)),
                Kind::RequestRedirect(r) => Filter::Redirect(Redirect {
                    scheme: non_empty(r.scheme),
                    hostname: non_empty(r.hostname),
                    path: path_modifier(r.path),
                    port: u16::try_from(r.port).ok().filter(|p| *p > 0),
                    status: u16::try_from(r.status_code)
                        .ok()
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .filter(StatusCode::is_redirection)
                        .unwrap_or(StatusCode::FOUND),
                }),
                Kind::UrlRewrite(r) => Filter::Rewrite(Rewrite { hostname: non_empty(r.hostname), path: path_modifier(r.path) }),
            })
        })
        .collect()
}

fn backends(rule: &str, service: &str, list: Vec<pol::WeightedBackend>, problems: &mut Vec<String>) -> Vec<Backend> {
    if list.is_empty() {
        return vec![Backend { authority: service.to_owned(), weight: 1, ..Backend::default() }];
    }
    list.into_iter()
        .map(|wb| {
            let b = wb.backend.unwrap_or_default();
            let invalid = if !b.invalid.is_empty() {
                Some(b.invalid.clone())
            } else if b.authority.is_empty() {
                Some("backend without an authority".to_owned())
            } else {
                None
            };
            Backend {
                authority: b.authority.to_ascii_lowercase(),
                weight: wb.weight,
                filters: filters(rule, wb.filters, problems),
                invalid,
            }
        })
        .collect()
}

fn timeouts(t: Option<pol::Timeouts>) -> Timeouts {
    t.map_or_else(Timeouts::default, |t| Timeouts { request: ms(t.request_ms), backend_request: ms(t.backend_request_ms) })
}

fn retry(r: Option<pol::Retry>) -> Option<Arc<RetryPolicy>> {
    let r = r?;
    if r.max_retries == 0 {
        return None;
    }
    let budget = r.budget.map_or_else(BudgetConfig::default, |b| BudgetConfig {
        ratio: b.retry_ratio as f32,
        min_per_sec: b.min_retries_per_second,
        ttl: ms(b.ttl_ms).unwrap_or(Duration::from_secs(10)),
    });
    let statuses = r
        .http_statuses
        .iter()
        .map(|s| (u16::try_from(s.start).unwrap_or(u16::MAX), u16::try_from(s.end).unwrap_or(u16::MAX)))
        .collect();
    let mut p = RetryPolicy::new(r.max_retries, statuses, budget);
    p.grpc_codes = r.grpc_codes;
    p.backoff = Duration::from_millis(r.backoff_ms);
    Some(Arc::new(p))
}

/// The inbound policy of a port.
pub fn inbound(msg: pol::InboundPolicy) -> InboundPolicy {
    let default = match pol::DefaultPolicy::try_from(msg.default_policy) {
        Ok(pol::DefaultPolicy::AllUnauthenticated) => "allow",
        Ok(pol::DefaultPolicy::AllAuthenticated) => "all-authenticated",
        Ok(pol::DefaultPolicy::Deny) => "deny",
        Err(_) => "unknown",
    };
    let default = if msg.explicit { format!("{default} (overridden by AuthorizationPolicy)") } else { default.to_owned() };
    InboundPolicy {
        opaque: msg.protocol == pol::Protocol::Opaque as i32,
        authorizations: msg
            .authorizations
            .into_iter()
            .map(|a| Authorization {
                identities: a.identities.into_iter().collect::<HashSet<_>>(),
                namespaces: a.namespaces.into_iter().collect(),
                any_meshed: a.any_meshed,
                allow_plaintext: a.allow_plaintext,
                name: meta_name(a.meta.as_ref()),
            })
            .collect(),
        default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(authority: &str, weight: u32) -> pol::WeightedBackend {
        pol::WeightedBackend {
            backend: Some(pol::Backend { authority: authority.into(), ..Default::default() }),
            weight,
            filters: vec![],
        }
    }

    #[test]
    fn converts_rules_and_reports_bad_parts() {
        let msg = pol::OutboundPolicy {
            exists: true,
            service: Some(pol::Backend { authority: "web.ns.svc.cluster.local:80".into(), ..Default::default() }),
            http_routes: vec![pol::HttpRoute {
                meta: Some(pol::Meta { kind: "HTTPRoute".into(), namespace: "ns".into(), name: "split".into() }),
                rules: vec![
                    pol::HttpRule {
                        matches: vec![pol::HttpMatch {
                            path: Some(pol::PathMatch { kind: Some(pol::path_match::Kind::Regex("(".into())) }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    pol::HttpRule {
                        backends: vec![backend("a.ns.svc.cluster.local:80", 90), backend("b.ns.svc.cluster.local:80", 10)],
                        timeouts: Some(pol::Timeouts { request_ms: 0, backend_request_ms: 250 }),
                        retry: Some(pol::Retry {
                            http_statuses: vec![pol::StatusRange { start: 503, end: 503 }],
                            max_retries: 2,
                            budget: Some(pol::RetryBudget { retry_ratio: 0.2, min_retries_per_second: 1, ttl_ms: 1000 }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
            }],
            ..Default::default()
        };
        let (p, problems) = outbound("web.ns:80", msg);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let rules = p.routes.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].backends.len(), 2);
        assert_eq!(rules[0].backends[0].weight, 90);
        assert_eq!(rules[0].timeouts.backend_request, Some(Duration::from_millis(250)));
        let retry = rules[0].retry.as_ref().unwrap();
        assert!(retry.retries_status(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(retry.budget.config().ttl, Duration::from_secs(1));
    }

    #[test]
    fn unknown_target_and_empty_routes_go_to_the_service() {
        let (p, _) = outbound("web.ns:80", pol::OutboundPolicy::default());
        assert_eq!(p.routes.rules()[0].backends[0].authority, "web.ns:80");
        let (p, _) = outbound(
            "web.ns:80",
            pol::OutboundPolicy {
                exists: true,
                service: Some(pol::Backend { authority: "web.ns.svc.cluster.local:80".into(), ..Default::default() }),
                ..Default::default()
            },
        );
        assert_eq!(p.routes.rules()[0].backends[0].authority, "web.ns.svc.cluster.local:80");
    }

    #[test]
    fn inbound_authorizations() {
        let p = inbound(pol::InboundPolicy {
            default_policy: pol::DefaultPolicy::Deny as i32,
            explicit: true,
            authorizations: vec![pol::Authorization {
                identities: vec!["spiffe://td/ns/a/sa/web".into()],
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(p.authorizations.len(), 1);
        assert!(p.default.starts_with("deny"));
    }
}
