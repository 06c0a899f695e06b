//! `weft.policy.v1.Policy` over tonic, generic over any [`DiscoverPolicy`]:
//! every change of a watched policy is sent whole.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use mesh_api::policy::v1 as api;
use mesh_api::policy::v1::policy_server::{Policy, PolicyServer};
use mesh_index::model::{self, DefaultPolicy, Kind, Protocol};
use mesh_index::route::{self as r, Backend, HttpFilter, WeightedBackend};
use mesh_index::views::{Authorization, Meta};
use mesh_index::{DiscoverPolicy, InboundPolicy, OutboundPolicy, Workload};
use tokio::sync::watch;

use super::destination::changed;
use super::streams::OpenStreams;
use crate::metrics::METHODS;
use tonic::{Request, Response, Status};

/// The gRPC face of a [`DiscoverPolicy`].
#[derive(Debug, Clone)]
pub struct PolicyService<P> {
    discover: P,
    closing: watch::Receiver<bool>,
    streams: OpenStreams,
}

impl<P: DiscoverPolicy> PolicyService<P> {
    /// Streams end once `closing` turns true (see `DestinationService::new`).
    pub fn new(discover: P, closing: watch::Receiver<bool>, streams: OpenStreams) -> PolicyServer<Self> {
        PolicyServer::new(Self { discover, closing, streams })
    }
}

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<P: DiscoverPolicy> Policy for PolicyService<P> {
    type WatchOutboundStream = Messages<api::OutboundPolicy>;
    type WatchInboundStream = Messages<api::InboundPolicy>;

    async fn watch_outbound(
        &self,
        request: Request<api::OutboundTarget>,
    ) -> Result<Response<Self::WatchOutboundStream>, Status> {
        let api::OutboundTarget { authority, context_token } = request.into_inner();
        let ns = client_namespace(&context_token);
        let rx = self
            .discover
            .watch_outbound(&authority, ns.as_deref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(%authority, client_ns = ?ns, "Policy.WatchOutbound");
        Ok(Response::new(counted(&self.streams, METHODS[2], follow(rx, self.closing.clone(), outbound))))
    }

    async fn watch_inbound(
        &self,
        request: Request<api::InboundPort>,
    ) -> Result<Response<Self::WatchInboundStream>, Status> {
        let api::InboundPort { workload, port } = request.into_inner();
        use api::inbound_port::Workload as W;
        let workload = match workload {
            Some(W::Identity(id)) => Workload::Identity(id),
            Some(W::PodIp(bytes)) => Workload::Ip(ip(&bytes).ok_or_else(|| {
                Status::invalid_argument(format!("pod_ip: {} bytes is neither IPv4 (4) nor IPv6 (16)", bytes.len()))
            })?),
            None => return Err(Status::invalid_argument("workload: give identity or pod_ip")),
        };
        let port =
            u16::try_from(port).map_err(|_| Status::invalid_argument(format!("port {port} is not in 0..=65535")))?;
        let rx = self.discover.watch_inbound(workload, port).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(counted(&self.streams, METHODS[3], follow(rx, self.closing.clone(), inbound))))
    }
}

/// The client's namespace from a context token like `{"ns":"shop"}`; tokens
/// are free-form, so anything else means "unknown".
/// The client's namespace (for consumer routes): the token's `"ns"`, else
/// the namespace of its `"identity"` (`spiffe://<td>/ns/<ns>/sa/<sa>`).
fn client_namespace(token: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(token).ok()?;
    if let Some(ns) = value.get("ns").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
        return Some(ns.to_owned());
    }
    let id = value.get("identity")?.as_str()?;
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["ns", ns, "sa", _] if !ns.is_empty() => Some((*ns).to_owned()),
        _ => None,
    }
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// `stream`, counted in `streams` until dropped.
fn counted<T: Send + 'static>(
    streams: &OpenStreams,
    method: &'static str,
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> Messages<T> {
    let mut open = streams.open(method);
    Box::pin(stream.map(move |m| {
        open.sent();
        m
    }))
}

/// The current value first, then one message per change.
fn follow<V, T>(
    rx: watch::Receiver<Arc<V>>,
    closing: watch::Receiver<bool>,
    convert: fn(&V) -> T,
) -> impl Stream<Item = Result<T, Status>> + Send
where
    V: Send + Sync + 'static,
    T: Send + 'static,
{
    futures_util::stream::unfold((rx, closing, true), move |(mut rx, mut closing, first)| async move {
        if *closing.borrow() || (!first && !changed(&mut rx, &mut closing).await) {
            return None;
        }
        let msg = convert(&rx.borrow_and_update());
        Some((Ok(msg), (rx, closing, false)))
    })
}

fn protocol(p: Protocol) -> i32 {
    (match p {
        Protocol::Detect => api::Protocol::Detect,
        Protocol::Http1 => api::Protocol::Http1,
        Protocol::Http2 => api::Protocol::Http2,
        Protocol::Grpc => api::Protocol::Grpc,
        Protocol::Opaque => api::Protocol::Opaque,
    }) as i32
}

fn meta(m: &Meta) -> api::Meta {
    api::Meta {
        kind: m.kind.map_or("default", Kind::as_str).to_owned(),
        namespace: m.key.namespace.clone(),
        name: m.key.name.clone(),
    }
}

fn backend(b: &Backend) -> api::Backend {
    api::Backend {
        authority: b.authority.clone(),
        name: b.name.clone(),
        namespace: b.namespace.clone(),
        port: u32::from(b.port),
        invalid: b.invalid.clone().unwrap_or_default(),
    }
}

pub fn outbound(p: &OutboundPolicy) -> api::OutboundPolicy {
    if !p.exists {
        return api::OutboundPolicy { exists: false, protocol: protocol(p.protocol), ..api::OutboundPolicy::default() };
    }
    let fa = &p.failure_accrual;
    api::OutboundPolicy {
        exists: true,
        service: Some(backend(&p.service)),
        protocol: protocol(p.protocol),
        failure_accrual: Some(api::FailureAccrual {
            consecutive_failures: fa.consecutive_failures,
            min_backoff_ms: fa.min_backoff_ms,
            max_backoff_ms: fa.max_backoff_ms,
            jitter_ratio: fa.jitter_ratio,
        }),
        http_routes: p
            .http_routes
            .iter()
            .map(|route| api::HttpRoute {
                meta: Some(meta(&route.meta)),
                rules: route
                    .rules
                    .iter()
                    .map(|rule| api::HttpRule {
                        matches: rule.matches.iter().map(http_match).collect(),
                        filters: rule.filters.iter().map(filter).collect(),
                        backends: rule.backends.iter().map(weighted).collect(),
                        timeouts: Some(timeouts(&rule.timeouts)),
                        retry: rule.retry.as_ref().map(retry),
                        name: rule.name.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        grpc_routes: p
            .grpc_routes
            .iter()
            .map(|route| api::GrpcRoute {
                meta: Some(meta(&route.meta)),
                rules: route
                    .rules
                    .iter()
                    .map(|rule| api::GrpcRule {
                        matches: rule
                            .matches
                            .iter()
                            .map(|m| api::GrpcMatch {
                                method: m.method.as_ref().map(|mm| api::GrpcMethodMatch {
                                    service: mm.service.clone().unwrap_or_default(),
                                    method: mm.method.clone().unwrap_or_default(),
                                    regex: mm.regex,
                                }),
                                headers: m.headers.iter().map(header_match).collect(),
                            })
                            .collect(),
                        filters: rule.filters.iter().map(filter).collect(),
                        backends: rule.backends.iter().map(weighted).collect(),
                        timeouts: Some(timeouts(&rule.timeouts)),
                        retry: rule.retry.as_ref().map(retry),
                        name: rule.name.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn http_match(m: &model::HttpMatch) -> api::HttpMatch {
    use api::path_match::Kind as P;
    api::HttpMatch {
        path: m.path.as_ref().map(|p| api::PathMatch {
            kind: Some(match p {
                r::PathMatch::Exact(s) => P::Exact(s.clone()),
                r::PathMatch::Prefix(s) => P::Prefix(s.clone()),
                r::PathMatch::Regex(s) => P::Regex(s.clone()),
            }),
        }),
        headers: m.headers.iter().map(header_match).collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| {
                use api::query_param_match::Value as V;
                api::QueryParamMatch {
                    name: q.name.clone(),
                    value: Some(match &q.value {
                        r::StringMatch::Exact(s) => V::Exact(s.clone()),
                        r::StringMatch::Regex(s) => V::Regex(s.clone()),
                    }),
                }
            })
            .collect(),
        method: m.method.clone().unwrap_or_default(),
    }
}

fn header_match(h: &r::ValueMatch) -> api::HeaderMatch {
    use api::header_match::Value as V;
    api::HeaderMatch {
        name: h.name.clone(),
        value: Some(match &h.value {
            r::StringMatch::Exact(s) => V::Exact(s.clone()),
            r::StringMatch::Regex(s) => V::Regex(s.clone()),
        }),
    }
}

fn header_modifier(m: &r::HeaderModifier) -> api::HeaderModifier {
    let headers =
        |l: &[(String, String)]| l.iter().map(|(n, v)| api::Header { name: n.clone(), value: v.clone() }).collect();
    api::HeaderModifier { set: headers(&m.set), add: headers(&m.add), remove: m.remove.clone() }
}

fn path_modifier(p: &r::PathModifier) -> api::PathModifier {
    use api::path_modifier::Kind as K;
    api::PathModifier {
        kind: Some(match p {
            r::PathModifier::ReplaceFullPath(s) => K::ReplaceFullPath(s.clone()),
            r::PathModifier::ReplacePrefixMatch(s) => K::ReplacePrefixMatch(s.clone()),
        }),
    }
}

fn filter(f: &HttpFilter) -> api::HttpFilter {
    use api::http_filter::Kind as K;
    api::HttpFilter {
        kind: Some(match f {
            HttpFilter::RequestHeaderModifier(m) => K::RequestHeaderModifier(header_modifier(m)),
            HttpFilter::ResponseHeaderModifier(m) => K::ResponseHeaderModifier(header_modifier(m)),
            HttpFilter::RequestRedirect(rr) => K::RequestRedirect(api::RequestRedirect {
                scheme: rr.scheme.clone().unwrap_or_default(),
                hostname: rr.hostname.clone().unwrap_or_default(),
                path: rr.path.as_ref().map(path_modifier),
                port: rr.port.map_or(0, u32::from),
                status_code: rr.status_code.map_or(0, u32::from),
            }),
            HttpFilter::UrlRewrite(rw) => K::UrlRewrite(api::UrlRewrite {
                hostname: rw.hostname.clone().unwrap_or_default(),
                path: rw.path.as_ref().map(path_modifier),
            }),
        }),
    }
}

fn weighted(b: &WeightedBackend) -> api::WeightedBackend {
    api::WeightedBackend {
        backend: Some(backend(&b.backend)),
        weight: b.weight,
        filters: b.filters.iter().map(filter).collect(),
    }
}

fn timeouts(t: &r::Timeouts) -> api::Timeouts {
    api::Timeouts { request_ms: t.request_ms.unwrap_or(0), backend_request_ms: t.backend_request_ms.unwrap_or(0) }
}

fn retry(rt: &r::Retry) -> api::Retry {
    api::Retry {
        http_statuses: rt
            .http_statuses
            .iter()
            .map(|(lo, hi)| api::StatusRange { start: u32::from(*lo), end: u32::from(*hi) })
            .collect(),
        grpc_codes: rt.grpc_codes.clone(),
        max_retries: rt.max_retries,
        backoff_ms: rt.backoff_ms.unwrap_or(0),
        budget: Some(api::RetryBudget {
            retry_ratio: rt.budget.retry_ratio,
            min_retries_per_second: rt.budget.min_retries_per_second,
            ttl_ms: rt.budget.ttl_ms,
        }),
    }
}

pub fn inbound(p: &InboundPolicy) -> api::InboundPolicy {
    api::InboundPolicy {
        default_policy: (match p.default_policy {
            DefaultPolicy::AllUnauthenticated => api::DefaultPolicy::AllUnauthenticated,
            DefaultPolicy::AllAuthenticated => api::DefaultPolicy::AllAuthenticated,
            DefaultPolicy::Deny => api::DefaultPolicy::Deny,
        }) as i32,
        explicit: p.explicit,
        authorizations: p.authorizations.iter().map(authorization).collect(),
        protocol: protocol(p.protocol),
        services: p.services.iter().cloned().collect(),
    }
}

fn authorization(a: &Authorization) -> api::Authorization {
    api::Authorization {
        meta: Some(meta(&a.meta)),
        identities: a.clients.identities.iter().cloned().collect(),
        namespaces: a.clients.namespaces.iter().cloned().collect(),
        any_meshed: a.clients.any_meshed,
        allow_plaintext: a.clients.unauthenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_tokens() {
        assert_eq!(client_namespace(r#"{"ns":"shop","pod":"x"}"#).as_deref(), Some("shop"));
        assert_eq!(client_namespace("ns:shop"), None);
        assert_eq!(client_namespace(""), None);
        assert_eq!(client_namespace(r#"{"ns":""}"#), None);
        // Proxies that only name their identity still get consumer routes.
        assert_eq!(
            client_namespace(r#"{"identity":"spiffe://cluster.local/ns/gamma-consumer/sa/consumer"}"#).as_deref(),
            Some("gamma-consumer")
        );
        assert_eq!(client_namespace(r#"{"identity":"spiffe://cluster.local/other"}"#), None);
    }

    #[test]
    fn pod_ips() {
        assert_eq!(ip(&[10, 0, 0, 1]), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip(&[0; 16]), Some("::".parse().unwrap()));
        assert_eq!(ip(&[1, 2, 3]), None);
    }

    #[test]
    fn unknown_outbound_is_empty() {
        let msg = outbound(&OutboundPolicy::default());
        assert_eq!(msg, api::OutboundPolicy { exists: false, ..Default::default() });
    }
}
