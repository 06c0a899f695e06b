//! The index through its public API: synthetic objects in, views out.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use mesh_index::model::*;
use mesh_index::views::Client;
use mesh_index::{Config, DefaultPolicy, DiscoverDestination, DiscoverPolicy, Index, ProtocolHint, Workload};

const TD: &str = "cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16, Protocol)]) -> Resource {
    Resource::Service(Service {
        key: ObjectKey::new(ns, name),
        cluster_ips: vec![ip(cluster_ip)],
        ports: ports
            .iter()
            .map(|(n, p, proto)| ServicePort { name: (*n).into(), port: *p, protocol: *proto })
            .collect(),
        failure_accrual: FailureAccrual::default(),
    })
}

/// A slice of `service` whose endpoints are (ip, pod name, ready).
fn slice(ns: &str, name: &str, service: &str, ports: &[(&str, u16)], eps: &[(&str, &str, bool)]) -> Resource {
    Resource::EndpointSlice(EndpointSlice {
        key: ObjectKey::new(ns, name),
        service: service.into(),
        ports: ports.iter().map(|(n, p)| SlicePort { name: (*n).into(), port: *p }).collect(),
        endpoints: eps
            .iter()
            .map(|(a, pod, ready)| SliceEndpoint {
                addresses: vec![ip(a)],
                ready: *ready,
                pod: (!pod.is_empty()).then(|| ObjectKey::new(ns, *pod)),
                node: Some("node-1".into()),
                zone: None,
            })
            .collect(),
    })
}

fn pod(ns: &str, name: &str, sa: &str, addr: &str, inject: Option<bool>) -> Resource {
    Resource::Pod(Pod {
        key: ObjectKey::new(ns, name),
        service_account: sa.into(),
        inject,
        has_proxy: false,
        ips: vec![ip(addr)],
        opaque_ports: Vec::new(),
    })
}

fn up(r: Resource) -> Change {
    Change::Upsert(r)
}

fn shop() -> Index {
    let index = Index::new(Config::default());
    index.apply([
        up(service("shop", "web", "10.96.0.10", &[("http", 80, Protocol::Http1), ("db", 5432, Protocol::Opaque)])),
        up(slice(
            "shop",
            "web-abc",
            "web",
            &[("http", 8080), ("db", 15432)],
            &[("10.0.0.1", "web-1", true), ("10.0.0.2", "web-2", true), ("10.0.0.3", "web-3", false)],
        )),
        up(pod("shop", "web-1", "web", "10.0.0.1", Some(true))),
        up(pod("shop", "web-2", "", "10.0.0.2", None)),
    ]);
    index
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn every_authority_form_finds_the_same_ready_endpoints() {
    let index = shop();
    for authority in ["web.shop.svc.cluster.local:80", "web.shop.svc:80", "web.shop:80", "10.96.0.10:80"] {
        let view = index.watch_destination(authority).unwrap().borrow().clone();
        assert!(view.exists, "{authority}");
        let addrs: Vec<_> = view.endpoints.keys().copied().collect();
        // 10.0.0.3 is not ready.
        assert_eq!(addrs, [addr("10.0.0.1:8080"), addr("10.0.0.2:8080")], "{authority}");
    }
}

#[test]
fn endpoints_carry_pod_identity_only_when_meshed() {
    let index = shop();
    let view = index.watch_destination("web.shop:80").unwrap().borrow().clone();
    let meshed = &view.endpoints[&addr("10.0.0.1:8080")];
    assert_eq!(meshed.identity.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/web"));
    assert_eq!(meshed.hint, ProtocolHint::H2);
    assert_eq!(meshed.labels["pod"], "web-1");
    assert_eq!(meshed.labels["serviceaccount"], "web");
    assert_eq!(meshed.labels["node"], "node-1");
    let unmeshed = &view.endpoints[&addr("10.0.0.2:8080")];
    assert_eq!(unmeshed.identity, None);
    assert_eq!(unmeshed.hint, ProtocolHint::Unknown);

    // Opaque port: meshed endpoints are hinted opaque.
    let db = index.watch_destination("web.shop:5432").unwrap().borrow().clone();
    assert_eq!(db.endpoints[&addr("10.0.0.1:15432")].hint, ProtocolHint::Opaque);

    // Namespace-wide injection meshes web-2 (default service account).
    index.apply([up(Resource::Namespace(Namespace {
        key: ObjectKey::new("", "shop"),
        inject: Some(true),
        ..Namespace::default()
    }))]);
    let view = index.watch_destination("web.shop:80").unwrap().borrow().clone();
    assert_eq!(
        view.endpoints[&addr("10.0.0.2:8080")].identity.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/default")
    );
    // ...but a pod that opts out stays out.
    index.apply([up(pod("shop", "web-2", "", "10.0.0.2", Some(false)))]);
    assert_eq!(
        index.watch_destination("web.shop:80").unwrap().borrow().endpoints[&addr("10.0.0.2:8080")].identity,
        None
    );
}

#[test]
fn unknown_services_ports_and_addresses() {
    let index = shop();
    for authority in ["nope.shop:80", "web.shop:81", "10.9.9.9:80", "example.com:443", "www.example.com:443"] {
        let view = index.watch_destination(authority).unwrap().borrow().clone();
        assert!(!view.exists && view.endpoints.is_empty(), "{authority}");
    }
    assert!(index.watch_destination("web.shop").is_err());
    // A pod address resolves to that one endpoint.
    let view = index.watch_destination("10.0.0.1:8080").unwrap().borrow().clone();
    assert!(view.exists);
    assert_eq!(view.endpoints.keys().copied().collect::<Vec<_>>(), [addr("10.0.0.1:8080")]);
    assert!(view.endpoints[&addr("10.0.0.1:8080")].identity.is_some());
}

#[tokio::test]
async fn watchers_wake_on_changes_and_see_a_service_appear() {
    let index = shop();
    let mut web = index.watch_destination("web.shop:80").unwrap();
    let mut later = index.watch_destination("api.shop:80").unwrap();
    assert!(!later.borrow_and_update().exists);
    web.borrow_and_update();

    // An unrelated write does not wake the web watcher.
    index.apply([up(service("shop", "api", "10.96.0.11", &[("", 80, Protocol::Detect)]))]);
    assert!(!web.has_changed().unwrap());
    assert!(later.has_changed().unwrap());
    let api = later.borrow_and_update().clone();
    assert!(api.exists && api.endpoints.is_empty());

    // The not-ready endpoint becomes ready.
    index.apply([up(slice(
        "shop",
        "web-abc",
        "web",
        &[("http", 8080), ("db", 15432)],
        &[("10.0.0.1", "web-1", true), ("10.0.0.2", "web-2", true), ("10.0.0.3", "web-3", true)],
    ))]);
    web.changed().await.unwrap();
    assert_eq!(web.borrow_and_update().endpoints.len(), 3);

    // Deleting the slice empties the set; deleting the Service makes it unknown.
    index.apply([Change::Delete(Kind::EndpointSlice, ObjectKey::new("shop", "web-abc"))]);
    web.changed().await.unwrap();
    let v = web.borrow_and_update().clone();
    assert!(v.exists && v.endpoints.is_empty());
    index.apply([Change::Delete(Kind::Service, ObjectKey::new("shop", "web"))]);
    web.changed().await.unwrap();
    assert!(!web.borrow_and_update().exists);
    // The ClusterIP no longer resolves either.
    assert!(!index.watch_destination("10.96.0.10:80").unwrap().borrow().exists);
}

#[test]
fn replace_kind_deletes_what_a_relist_does_not_hold() {
    let index = shop();
    let n = index.replace_kind(Kind::Pod, vec![pod("shop", "web-1", "web", "10.0.0.1", Some(true))]);
    assert_eq!(n, 1, "only web-2 is deleted; web-1 is unchanged");
    let stats = index.stats();
    assert!(stats.objects.contains(&(Kind::Pod, 1)));
    assert!(stats.objects.contains(&(Kind::Service, 1)));
}

fn backend(ns: &str, name: &str, port: Option<u16>, weight: u32) -> BackendRef {
    BackendRef { service: ObjectKey::new(ns, name), port, weight, unsupported: None, filters: Vec::new() }
}

fn http_route(
    ns: &str,
    name: &str,
    created: i64,
    parent: (&str, &str, Option<u16>),
    backends: Vec<BackendRef>,
) -> Resource {
    Resource::HttpRoute(HttpRoute {
        key: ObjectKey::new(ns, name),
        created,
        parents: vec![ParentRef { service: ObjectKey::new(parent.0, parent.1), port: parent.2, port_name: None }],
        rules: vec![HttpRule {
            name: None,
            matches: vec![HttpMatch { path: Some(PathMatch::Prefix("/api".into())), ..HttpMatch::default() }],
            filters: Vec::new(),
            backends,
            timeouts: Timeouts { request_ms: Some(10_000), backend_request_ms: Some(2_000) },
            retry: Some(Retry {
                http_statuses: vec![(500, 599)],
                grpc_codes: Vec::new(),
                max_retries: 2,
                backoff_ms: None,
                budget: RetryBudget::default(),
            }),
        }],
    })
}

#[test]
fn outbound_routes_resolve_backends_and_order_oldest_first() {
    let index = shop();
    index.apply([
        up(service("shop", "web-v2", "10.96.0.12", &[("http", 80, Protocol::Http1)])),
        up(http_route(
            "shop",
            "split",
            200,
            ("shop", "web", Some(80)),
            vec![
                backend("shop", "web", Some(80), 90),
                backend("shop", "web-v2", Some(80), 10),
                backend("shop", "ghost", Some(80), 1),
                backend("shop", "web-v2", None, 1),
                backend("shop", "web-v2", Some(81), 1),
            ],
        )),
        up(http_route("shop", "older", 100, ("shop", "web", None), vec![])),
        // Attached to another port: not ours.
        up(http_route("shop", "db-only", 50, ("shop", "web", Some(5432)), vec![])),
    ]);
    let policy = index.watch_outbound("web.shop.svc.cluster.local:80", None).unwrap().borrow().clone();
    assert!(policy.exists);
    assert_eq!(policy.service.authority, "web.shop.svc.cluster.local:80");
    assert_eq!(policy.protocol, Protocol::Http1);
    assert_eq!(policy.failure_accrual.consecutive_failures, 7);
    let names: Vec<_> = policy.http_routes.iter().map(|r| r.meta.key.name.as_str()).collect();
    assert_eq!(names, ["older", "split"]);
    let rule = &policy.http_routes[1].rules[0];
    assert_eq!(rule.timeouts.backend_request_ms, Some(2_000));
    assert_eq!(rule.retry.as_ref().unwrap().max_retries, 2);
    let backends: Vec<_> =
        rule.backends.iter().map(|b| (b.backend.authority.as_str(), b.weight, b.backend.invalid.is_some())).collect();
    assert_eq!(
        backends,
        [
            ("web.shop.svc.cluster.local:80", 90, false),
            ("web-v2.shop.svc.cluster.local:80", 10, false),
            ("ghost.shop.svc.cluster.local:80", 1, true),
            ("web-v2.shop.svc.cluster.local:0", 1, true),
            ("web-v2.shop.svc.cluster.local:81", 1, true),
        ]
    );
    // By ClusterIP, same policy.
    assert_eq!(*index.watch_outbound("10.96.0.10:80", None).unwrap().borrow().clone(), *policy);
    // Unknown target.
    assert!(!index.watch_outbound("nope.shop:80", None).unwrap().borrow().exists);
}

#[tokio::test]
async fn consumer_routes_apply_to_their_namespace_only_and_backends_heal() {
    let index = shop();
    index.apply([
        up(http_route("shop", "producer", 1, ("shop", "web", None), vec![backend("shop", "web-v2", Some(80), 1)])),
        up(http_route("client", "consumer", 2, ("shop", "web", None), vec![])),
    ]);
    let names = |ns: Option<&str>| -> Vec<String> {
        index
            .watch_outbound("web.shop:80", ns)
            .unwrap()
            .borrow()
            .http_routes
            .iter()
            .map(|r| r.meta.key.name.clone())
            .collect()
    };
    assert_eq!(names(None), ["producer"]);
    assert_eq!(names(Some("other")), ["producer"]);
    assert_eq!(names(Some("client")), ["consumer"]);

    // The backend Service appears: the watched policy turns valid.
    let mut rx = index.watch_outbound("web.shop:80", None).unwrap();
    assert!(rx.borrow_and_update().http_routes[0].rules[0].backends[0].backend.invalid.is_some());
    index.apply([up(service("shop", "web-v2", "10.96.0.12", &[("http", 80, Protocol::Http1)]))]);
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().http_routes[0].rules[0].backends[0].backend.invalid, None);
}

fn authz(ns: &str, name: &str, target: PolicyTarget, ports: Vec<PortRef>, clients: Clients) -> Resource {
    Resource::AuthorizationPolicy(AuthorizationPolicy { key: ObjectKey::new(ns, name), target, ports, clients })
}

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const FRONT: &str = "spiffe://cluster.local/ns/front/sa/ui";
const OTHER: &str = "spiffe://cluster.local/ns/other/sa/x";

#[test]
fn inbound_default_allow_then_namespace_default_deny() {
    let index = shop();
    let by_id = || index.watch_inbound(Workload::Identity(WEB.into()), 8080).unwrap().borrow().clone();
    let p = by_id();
    assert!(!p.explicit);
    assert_eq!(p.default_policy, DefaultPolicy::AllUnauthenticated);
    assert_eq!(p.protocol, Protocol::Http1);
    assert_eq!(p.services, BTreeSet::from(["web.shop.svc.cluster.local:80".to_owned()]));
    assert!(p.allows(Client::Plaintext, TD) && p.allows(Client::Meshed(OTHER), TD));

    index.apply([up(Resource::Namespace(Namespace {
        key: ObjectKey::new("", "shop"),
        default_inbound_policy: Some(DefaultPolicy::Deny),
        inject: None,
    }))]);
    let p = by_id();
    assert_eq!(p.default_policy, DefaultPolicy::Deny);
    assert!(!p.allows(Client::Plaintext, TD) && !p.allows(Client::Meshed(FRONT), TD));

    // Same answer by pod IP.
    let p = index.watch_inbound(Workload::Ip(ip("10.0.0.1")), 8080).unwrap().borrow().clone();
    assert_eq!(p.default_policy, DefaultPolicy::Deny);
    assert!(p.authorizations.is_empty());

    // A mesh-wide default from the control plane's flag.
    let strict = Index::new(Config { default_inbound_policy: DefaultPolicy::AllAuthenticated, ..Config::default() });
    let p = strict.watch_inbound(Workload::Identity(WEB.into()), 8080).unwrap().borrow().clone();
    assert!(!p.allows(Client::Plaintext, TD) && p.allows(Client::Meshed(OTHER), TD));
}

#[test]
fn inbound_policies_allow_identities_and_namespaces_on_their_ports() {
    let index = shop();
    index.apply([
        up(authz(
            "shop",
            "front-to-web",
            PolicyTarget::Service("web".into()),
            vec![PortRef::Name("http".into())],
            Clients { identities: BTreeSet::from([FRONT.to_owned()]), ..Clients::default() },
        )),
        up(authz(
            "shop",
            "ops-anything",
            PolicyTarget::Namespace,
            vec![],
            Clients { namespaces: BTreeSet::from(["ops".to_owned()]), ..Clients::default() },
        )),
        up(authz(
            "shop",
            "db-plaintext",
            PolicyTarget::Service("web".into()),
            vec![PortRef::Number(5432)],
            Clients { unauthenticated: true, ..Clients::default() },
        )),
    ]);
    let http = index.watch_inbound(Workload::Identity(WEB.into()), 8080).unwrap().borrow().clone();
    assert!(http.explicit);
    let names: Vec<_> = http.authorizations.iter().map(|a| a.meta.key.name.as_str()).collect();
    assert_eq!(names, ["front-to-web", "ops-anything"]);
    assert!(http.allows(Client::Meshed(FRONT), TD));
    assert!(http.allows(Client::Meshed("spiffe://cluster.local/ns/ops/sa/any"), TD));
    assert!(!http.allows(Client::Meshed(OTHER), TD), "explicit policies replace the default allow");
    assert!(!http.allows(Client::Meshed("spiffe://elsewhere/ns/ops/sa/any"), TD), "foreign trust domain");
    assert!(!http.allows(Client::Plaintext, TD));

    let db = index.watch_inbound(Workload::Identity(WEB.into()), 15432).unwrap().borrow().clone();
    assert_eq!(db.protocol, Protocol::Opaque);
    assert!(db.allows(Client::Plaintext, TD));
    assert!(!db.allows(Client::Meshed(FRONT), TD));

    // A port no Service backs keeps the default.
    let other = index.watch_inbound(Workload::Identity(WEB.into()), 9999).unwrap().borrow().clone();
    assert!(!other.explicit && other.allows(Client::Plaintext, TD));
    assert!(index.watch_inbound(Workload::Identity("web".into()), 80).is_err());
}

#[test]
fn a_pod_address_has_no_routes_but_the_protocol_of_its_port() {
    let index = shop();
    // By pod IP and target port: not a Service (no routes), but opaque.
    let db = index.watch_outbound("10.0.0.1:15432", None).unwrap().borrow().clone();
    assert!(!db.exists);
    assert_eq!(db.protocol, Protocol::Opaque);
    assert!(db.http_routes.is_empty());
    let web = index.watch_outbound("10.0.0.3:8080", None).unwrap().borrow().clone();
    assert_eq!(web.protocol, Protocol::Http1, "readiness does not matter");
    let unknown = index.watch_outbound("10.0.0.9:15432", None).unwrap().borrow().clone();
    assert_eq!(unknown.protocol, Protocol::Detect);
    // Through the ClusterIP it is the Service port itself.
    let svc = index.watch_outbound("10.96.0.10:5432", None).unwrap().borrow().clone();
    assert!(svc.exists && svc.protocol == Protocol::Opaque);
}

#[test]
fn a_parent_ref_section_name_is_a_service_port_name() {
    let index = shop();
    let by_name = |name: &str, section: &str| {
        let Resource::HttpRoute(mut r) = http_route("shop", name, 1, ("shop", "web", None), vec![]) else { unreachable!() };
        r.parents[0].port_name = Some(section.to_owned());
        up(Resource::HttpRoute(r))
    };
    index.apply([by_name("http-only", "http"), by_name("db-only", "db"), by_name("nothing", "nope")]);
    let names = |authority: &str| -> Vec<String> {
        index.watch_outbound(authority, None).unwrap().borrow().http_routes.iter().map(|r| r.meta.key.name.clone()).collect()
    };
    assert_eq!(names("web.shop:80"), ["http-only"]);
    assert_eq!(names("web.shop:5432"), ["db-only"]);
}

#[test]
fn a_pod_annotation_makes_its_port_opaque() {
    let index = shop();
    // web-1's own annotation marks its target port 8080 opaque (the Service
    // port says http).
    let Resource::Pod(mut web1) = pod("shop", "web-1", "web", "10.0.0.1", Some(true)) else { unreachable!() };
    web1.opaque_ports = vec![(8080, 8080)];
    index.apply([up(Resource::Pod(web1))]);
    let view = index.watch_destination("web.shop:80").unwrap().borrow().clone();
    assert_eq!(view.endpoints[&addr("10.0.0.1:8080")].hint, ProtocolHint::Opaque);
    assert_eq!(view.endpoints[&addr("10.0.0.2:8080")].hint, ProtocolHint::Unknown, "unmeshed web-2 unaffected");
    let by_pod_ip = index.watch_outbound("10.0.0.1:8080", None).unwrap().borrow().clone();
    assert_eq!(by_pod_ip.protocol, Protocol::Opaque);
    let inbound = index.watch_inbound(Workload::Ip(ip("10.0.0.1")), 8080).unwrap().borrow().clone();
    assert_eq!(inbound.protocol, Protocol::Opaque);
    let other = index.watch_inbound(Workload::Ip(ip("10.0.0.2")), 8080).unwrap().borrow().clone();
    assert_eq!(other.protocol, Protocol::Http1);
}

/// A write recomputes only the views it may change: a Service's endpoints
/// when its namespace changed, never a name outside the cluster; and a
/// lookup whose watchers are gone is forgotten.
#[test]
fn writes_recompute_only_views_they_may_change_and_closed_watches_are_forgotten() {
    let index = shop();
    let mut web = index.watch_destination("web.shop:80").unwrap();
    let external: Vec<_> = (0..100).map(|i| index.watch_destination(&format!("host-{i}.example.com:80")).unwrap()).collect();
    let before = index.stats();
    assert_eq!(before.watches, 101);
    // Another namespace: neither the shop Service nor the external names.
    index.apply([up(service("other", "api", "10.96.0.20", &[("http", 80, Protocol::Http1)]))]);
    assert_eq!(index.stats().views_computed, before.views_computed);
    // Its own namespace: recomputed, and the watcher woken.
    index.apply([up(pod("shop", "web-2", "", "10.0.0.2", Some(true)))]);
    assert_eq!(index.stats().views_computed, before.views_computed + 1);
    assert!(web.has_changed().unwrap());
    assert!(web.borrow_and_update().endpoints[&addr("10.0.0.2:8080")].identity.is_some());
    // Dropped watches: forgotten without any write.
    drop(external);
    assert_eq!(index.prune_unwatched(), 100);
    assert_eq!(index.stats().watches, 1);
}

/// `n` namespaces `ns-<i>`, each with Service `web` (port 80 -> 8080), one
/// slice and its meshed pod; every Service's endpoints, outbound policy and
/// its workload's inbound policy watched.
fn many(n: usize) -> (Index, Vec<Box<dyn std::any::Any>>) {
    let index = Index::new(Config::default());
    let mut changes = Vec::new();
    for i in 0..n {
        let ns = format!("ns-{i}");
        let (hi, lo) = (i / 250, i % 250);
        changes.push(up(service(&ns, "web", &format!("10.96.{hi}.{lo}"), &[("http", 80, Protocol::Http1)])));
        changes.push(up(slice(&ns, "web-abc", "web", &[("http", 8080)], &[(&format!("10.1.{hi}.{lo}"), "web-1", true)])));
        changes.push(up(pod(&ns, "web-1", "web", &format!("10.1.{hi}.{lo}"), Some(true))));
    }
    index.apply(changes);
    let mut watches: Vec<Box<dyn std::any::Any>> = Vec::new();
    for i in 0..n {
        let authority = format!("web.ns-{i}:80");
        watches.push(Box::new(index.watch_destination(&authority).unwrap()));
        watches.push(Box::new(index.watch_outbound(&authority, None).unwrap()));
        let id = format!("spiffe://cluster.local/ns/ns-{i}/sa/web");
        watches.push(Box::new(index.watch_inbound(Workload::Identity(id), 8080).unwrap()));
    }
    (index, watches)
}

/// Views recomputed by `write`.
fn recomputed(index: &Index, write: impl IntoIterator<Item = Change>) -> u64 {
    let before = index.stats().views_computed;
    assert!(index.apply(write) > 0, "the write changes something");
    index.stats().views_computed - before
}

/// A write recomputes the views that read what it changed, whatever else
/// is watched: a route, its Service's outbound policy (before and after
/// it moves); a policy, the inbound policies of the workloads it may
/// target; a slice or a pod, its Service's endpoints and its workload; a
/// Service, also the outbound policies whose routes name it as a backend.
#[test]
fn a_write_recomputes_only_the_views_that_read_what_it_changed() {
    let (index, _watches) = many(20);
    let web = |i: usize| format!("web.ns-{i}:80");
    let route = |i: usize, parent: usize, backend_ns: usize| {
        http_route(
            &format!("ns-{i}"),
            "split",
            1,
            (&format!("ns-{parent}"), "web", Some(80)),
            vec![backend(&format!("ns-{backend_ns}"), "web", Some(80), 1)],
        )
    };
    assert_eq!(recomputed(&index, [up(route(3, 3, 2))]), 1, "the outbound policy of web.ns-3");
    let mut out3 = index.watch_outbound(&web(3), None).unwrap();
    assert_eq!(out3.borrow_and_update().http_routes.len(), 1);
    // A Service a route names as its backend: its own views and that route's Service's.
    let grown = service("ns-2", "web", "10.96.0.2", &[("http", 80, Protocol::Http1), ("admin", 9090, Protocol::Http1)]);
    assert_eq!(recomputed(&index, [up(grown)]), 4, "endpoints, outbound, inbound of ns-2 and the outbound of ns-3");
    // The route moves to another parent: both Services' outbound policies
    // (in ns-3, it is now a consumer route of ns-3's clients of ns-4).
    assert_eq!(recomputed(&index, [up(route(3, 4, 2))]), 2);
    assert!(out3.borrow_and_update().http_routes.is_empty());
    assert_eq!(index.watch_outbound(&web(4), Some("ns-3")).unwrap().borrow().http_routes.len(), 1);
    assert_eq!(recomputed(&index, [Change::Delete(Kind::HttpRoute, ObjectKey::new("ns-3", "split"))]), 1);
    // A policy: the workloads backing Services of its namespace.
    let only_web = Clients { identities: BTreeSet::from([WEB.to_owned()]), ..Clients::default() };
    let policy = authz("ns-5", "allow-web", PolicyTarget::Service("web".into()), Vec::new(), only_web);
    assert_eq!(recomputed(&index, [up(policy)]), 1, "the inbound policy of ns-5's workload");
    let inbound5 = Workload::Identity("spiffe://cluster.local/ns/ns-5/sa/web".into());
    assert!(index.watch_inbound(inbound5, 8080).unwrap().borrow().explicit);
    // Endpoints and pods: the Service's endpoints and its namespace's workload.
    let more = slice("ns-6", "web-abc", "web", &[("http", 8080)], &[("10.1.0.6", "web-1", true), ("10.1.9.9", "web-2", true)]);
    assert_eq!(recomputed(&index, [up(more)]), 2);
    assert_eq!(recomputed(&index, [up(pod("ns-7", "web-1", "other", "10.1.0.7", Some(true)))]), 2);
    // A Namespace: what reads its objects (endpoints' identities, its workloads' default).
    let deny = Resource::Namespace(Namespace {
        key: ObjectKey::new("", "ns-8"),
        inject: None,
        default_inbound_policy: Some(DefaultPolicy::Deny),
    });
    assert_eq!(recomputed(&index, [up(deny)]), 2);
    let stats = index.stats();
    assert!(stats.views_updated <= stats.views_computed);
}

/// One write with 1000 Services watched (endpoints, outbound and inbound
/// policy each: 3000 views) recomputes a handful of views, not thousands.
/// The views per write are asserted; the time per write is printed, never
/// asserted (`cargo test -p mesh-index --test index -- --nocapture
/// write_cost`).
#[test]
fn write_cost_with_1000_services_watched() {
    let (index, _watches) = many(1000);
    let rounds = 5u32;
    let time = |what: &str, write: &mut dyn FnMut(u32) -> Vec<Change>| {
        let before = index.stats().views_computed;
        let start = std::time::Instant::now();
        for r in 0..rounds {
            index.apply(write(r));
        }
        let per = start.elapsed() / rounds;
        let views = (index.stats().views_computed - before) / u64::from(rounds);
        println!("{what:<28} {per:>12?} per write, {views} views recomputed per write");
        assert!(views <= 4, "{what}: {views} of 3000 views recomputed per write");
    };
    time("route (ns-1)", &mut |r| {
        vec![up(http_route("ns-1", "r", i64::from(r), ("ns-1", "web", Some(80)), vec![backend("ns-2", "web", Some(80), r + 1)]))]
    });
    time("authorization policy (ns-3)", &mut |r| {
        let clients = Clients { namespaces: BTreeSet::from([format!("team-{r}")]), ..Clients::default() };
        vec![up(authz("ns-3", "p", PolicyTarget::Namespace, Vec::new(), clients))]
    });
    time("endpoint slice (ns-4)", &mut |r| {
        vec![up(slice("ns-4", "web-abc", "web", &[("http", 8080)], &[("10.1.0.4", "web-1", r % 2 == 0)]))]
    });
}

/// Services of one namespace are independent: a write to one recomputes
/// and wakes its own views, and no other Service's, whatever the
/// namespace holds.
#[test]
fn a_write_to_one_service_does_not_wake_the_watchers_of_another() {
    let index = Index::new(Config::default());
    let n = 300;
    let mut changes = Vec::new();
    for i in 0..n {
        let (name, pod_name) = (format!("svc-{i}"), format!("svc-{i}-pod"));
        let (cluster_ip, pod_ip) = (format!("10.96.{}.{}", i / 250, i % 250), format!("10.1.{}.{}", i / 250, i % 250));
        changes.push(up(service("shop", &name, &cluster_ip, &[("http", 80, Protocol::Http1)])));
        changes.push(up(slice("shop", &format!("{name}-1"), &name, &[("http", 8080)], &[(&pod_ip, &pod_name, true)])));
        changes.push(up(pod("shop", &pod_name, &name, &pod_ip, Some(true))));
    }
    index.apply(changes);
    let id = |i: usize| Workload::Identity(format!("spiffe://cluster.local/ns/shop/sa/svc-{i}"));
    let mut endpoints: Vec<_> = (0..n).map(|i| index.watch_destination(&format!("svc-{i}.shop:80")).unwrap()).collect();
    let mut outbound: Vec<_> = (0..n).map(|i| index.watch_outbound(&format!("svc-{i}.shop:80"), None).unwrap()).collect();
    let mut inbound: Vec<_> = (0..n).map(|i| index.watch_inbound(id(i), 8080).unwrap()).collect();
    let mut woken = || {
        let mut woken = Vec::new();
        for (what, i, changed) in endpoints
            .iter_mut()
            .enumerate()
            .map(|(i, rx)| ("endpoints", i, rx.has_changed().unwrap() && { rx.borrow_and_update(); true }))
            .chain(outbound.iter_mut().enumerate().map(|(i, rx)| ("outbound", i, rx.has_changed().unwrap() && { rx.borrow_and_update(); true })))
            .chain(inbound.iter_mut().enumerate().map(|(i, rx)| ("inbound", i, rx.has_changed().unwrap() && { rx.borrow_and_update(); true })))
        {
            if changed {
                woken.push(format!("{what} {i}"));
            }
        }
        woken
    };

    // A second endpoint for svc-7: its endpoint set; its workload's inbound
    // policy is recomputed (the slice names its pod) but unchanged.
    let grown = slice("shop", "svc-7-1", "svc-7", &[("http", 8080)], &[("10.1.0.7", "svc-7-pod", true), ("10.1.9.9", "", true)]);
    assert_eq!(recomputed(&index, [up(grown)]), 2);
    assert_eq!(woken(), ["endpoints 7"]);
    assert_eq!(index.watch_destination("svc-7.shop:80").unwrap().borrow().endpoints.len(), 2);
    // svc-8's pod stops being meshed: svc-8's endpoint set and workload.
    assert_eq!(recomputed(&index, [up(pod("shop", "svc-8-pod", "svc-8", "10.1.0.8", Some(false)))]), 2);
    assert_eq!(woken(), ["endpoints 8", "inbound 8"], "no longer meshed: it backs nothing by identity");
    // svc-9 gets a gRPC port: its endpoints (unchanged: the slice names
    // no such port), outbound policy and workload.
    let grpc = service("shop", "svc-9", "10.96.0.9", &[("http", 80, Protocol::Http1), ("grpc", 90, Protocol::Grpc)]);
    assert_eq!(recomputed(&index, [up(grpc)]), 3);
    assert_eq!(woken(), Vec::<String>::new(), "port 80's views are as they were");
    // svc-10's protocol changes: its outbound and inbound policies.
    assert_eq!(recomputed(&index, [up(service("shop", "svc-10", "10.96.0.10", &[("http", 80, Protocol::Http2)]))]), 3);
    assert_eq!(woken(), ["outbound 10", "inbound 10"]);
}
