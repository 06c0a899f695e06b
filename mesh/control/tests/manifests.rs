//! The manifests backend: YAML -> index objects (routes, policies, errors
//! with file:line), and hot reload of a directory.

mod support;

use std::path::Path;
use std::time::Duration;

use mesh_control::discovery::manifests::{parse_file, Follow, Manifests};
use mesh_index::model::*;
use mesh_index::{Config, DiscoverDestination, DiscoverPolicy, Index};

const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, annotations: {config.weft.io/opaque-ports: "5432"}}
spec:
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, appProtocol: http}, {name: db, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: db, port: 15432}]
endpoints:
- addresses: [198.18.0.1]
  targetRef: {kind: Pod, name: web-a}
- addresses: [198.18.0.2]
  conditions: {ready: false}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, annotations: {weft.io/inject: enabled, config.weft.io/opaque-ports: "3306,5000-5010"}}
spec: {serviceAccountName: web, containers: [{name: app}]}
status: {podIP: 198.18.0.1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
"#;

fn parse(text: &str) -> Vec<Resource> {
    parse_file(Path::new("test.yaml"), text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(text: &str) -> Vec<String> {
    parse_file(Path::new("bad.yaml"), text).expect_err("should not parse").iter().map(|e| e.to_string()).collect()
}

#[test]
fn core_objects_convert_and_unknown_kinds_are_skipped() {
    let rs = parse(SHOP);
    assert_eq!(rs.len(), 3, "Deployment is ignored");
    let Resource::Service(svc) = &rs[0] else { panic!("{:?}", rs[0]) };
    assert_eq!(svc.cluster_ips, ["198.19.0.10".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(svc.ports[0].protocol, Protocol::Http1);
    assert_eq!(svc.ports[1].protocol, Protocol::Opaque);
    let Resource::EndpointSlice(slice) = &rs[1] else { panic!() };
    assert_eq!(slice.service, "web");
    assert!(slice.endpoints[0].ready && !slice.endpoints[1].ready);
    assert_eq!(slice.endpoints[0].pod, Some(ObjectKey::new("shop", "web-a")));
    let Resource::Pod(pod) = &rs[2] else { panic!() };
    assert_eq!((pod.service_account.as_str(), pod.inject), ("web", Some(true)));
    assert_eq!(pod.opaque_ports, [(3306, 3306), (5000, 5010)]);
}

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: split
  namespace: shop
  annotations:
    retry.weft.io/budget-ratio: "0.1"
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}, {name: some-gateway}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      method: get
      headers: [{name: x-canary, value: "true"}]
      queryParams: [{type: RegularExpression, name: v, value: "[0-9]+"}]
    - path: {value: /status}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: "1"}], add: [{name: x-b, value: "2"}], remove: [x-c]}
    - type: URLRewrite
      urlRewrite: {hostname: web-v2, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs:
    - {name: web, port: 80, weight: 90}
    - {name: web-v2, namespace: canary, port: 80, weight: 10}
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {codes: [502, 503], attempts: 3, backoff: 100ms}
  - matches: [{path: {type: RegularExpression, value: "^/old/.*"}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}
"#;

#[test]
fn http_route_matches_filters_weights_timeouts_retries() {
    let rs = parse(ROUTE);
    let Resource::HttpRoute(route) = &rs[0] else { panic!() };
    assert_eq!(
        route.parents,
        [ParentRef { service: ObjectKey::new("shop", "web"), port: Some(80), port_name: None }],
        "Gateway parents ignored"
    );
    let rule = &route.rules[0];
    assert_eq!(rule.matches.len(), 2);
    let m = &rule.matches[0];
    assert_eq!(m.path, Some(PathMatch::Prefix("/api".into())));
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(m.headers, [ValueMatch { name: "x-canary".into(), value: StringMatch::Exact("true".into()) }]);
    assert_eq!(m.query_params, [ValueMatch { name: "v".into(), value: StringMatch::Regex("[0-9]+".into()) }]);
    assert_eq!(rule.matches[1].path, Some(PathMatch::Prefix("/status".into())), "PathPrefix is the default");
    assert_eq!(
        rule.filters,
        [
            HttpFilter::RequestHeaderModifier(HeaderModifier {
                set: vec![("x-a".into(), "1".into())],
                add: vec![("x-b".into(), "2".into())],
                remove: vec!["x-c".into()],
            }),
            HttpFilter::UrlRewrite(UrlRewrite {
                hostname: Some("web-v2".into()),
                path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
            }),
        ]
    );
    let weights: Vec<_> = rule.backends.iter().map(|b| (b.service.to_string(), b.port, b.weight)).collect();
    assert_eq!(weights, [("shop/web".to_owned(), Some(80), 90), ("canary/web-v2".to_owned(), Some(80), 10)]);
    assert_eq!(rule.timeouts, Timeouts { request_ms: Some(10_000), backend_request_ms: Some(2_000) });
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.http_statuses, [(502, 502), (503, 503)]);
    assert_eq!((retry.max_retries, retry.backoff_ms), (3, Some(100)));
    assert_eq!(retry.budget.retry_ratio, 0.1);
    assert_eq!(retry.budget.min_retries_per_second, 10);

    let redirect = &route.rules[1];
    assert_eq!(redirect.matches[0].path, Some(PathMatch::Regex("^/old/.*".into())));
    assert!(redirect.retry.is_none());
    assert_eq!(
        redirect.filters,
        [HttpFilter::RequestRedirect(RequestRedirect {
            scheme: Some("https".into()),
            status_code: Some(301),
            path: Some(PathModifier::ReplaceFullPath("/new".into())),
            ..RequestRedirect::default()
        })]
    );
}

#[test]
fn grpc_route_with_annotation_retries_and_timeouts() {
    let rs = parse(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: rpc
  namespace: shop
  annotations: {retry.weft.io/grpc: "unavailable,resource-exhausted", retry.weft.io/limit: "2", timeout.weft.io/request: 1s}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - matches: [{method: {service: shop.Cart, method: Add}, headers: [{name: tenant, value: a}]}]
    backendRefs: [{name: api-v2, port: 9090}]
"#,
    );
    let Resource::GrpcRoute(route) = &rs[0] else { panic!() };
    let rule = &route.rules[0];
    assert_eq!(
        rule.matches[0].method,
        Some(GrpcMethodMatch { service: Some("shop.Cart".into()), method: Some("Add".into()), regex: false })
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!((retry.grpc_codes.as_slice(), retry.max_retries), (&[14, 8][..], 2));
    assert_eq!(rule.timeouts.request_ms, Some(1_000));
    assert_eq!(route.parents[0].port, None);
}

#[test]
fn authorization_policy_converts() {
    let rs = parse(
        r#"
apiVersion: policy.weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  targetRef: {kind: Service, name: web}
  ports: [80, http, "5432"]
  from: {identities: ["spiffe://cluster.local/ns/front/sa/ui"], namespaces: [ops]}
"#,
    );
    let Resource::AuthorizationPolicy(p) = &rs[0] else { panic!() };
    assert_eq!(p.target, PolicyTarget::Service("web".into()));
    assert_eq!(p.ports, [PortRef::Number(80), PortRef::Name("http".into()), PortRef::Number(5432)]);
    assert!(p.clients.identities.contains("spiffe://cluster.local/ns/front/sa/ui"));
    assert!(p.clients.namespaces.contains("ops") && !p.clients.any_meshed && !p.clients.unauthenticated);
}

#[test]
fn problems_are_reported_with_file_and_line() {
    // Syntax error on line 4 of the second document (file line 7).
    let e = errors(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: [oops\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("bad.yaml:7: "), "{e:?}");

    // Type error: port is not a number.
    let e = errors("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - port: eighty\n");
    assert!(e[0].starts_with("bad.yaml:6: "), "{e:?}");

    // Semantic problems, all of them, at the document's first line.
    let e = errors(
        "# leading comment\n---\n\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - matches: [{path: {type: RegularExpression, value: \"(\"}}]\n    timeouts: {request: 10 seconds}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("bad.yaml:4: HTTPRoute default/r: "), "{e:?}");
    assert!(e[0].contains("does not compile") && e[0].contains("spec.rules[0].timeouts.request"), "{e:?}");

    // Gateway API: ReplacePrefixMatch only with prefix matches.
    let bad_rewrite = ROUTE.replace("path: {value: /status}", "path: {type: Exact, value: /status}");
    let e = parse_file(Path::new("bad.yaml"), &bad_rewrite).unwrap_err();
    assert!(e[0].message.contains("ReplacePrefixMatch needs every match"), "{e:?}");

    // Not an object at all.
    let e = errors("just a string\n");
    assert!(e[0].starts_with("bad.yaml:1: "), "{e:?}");
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write-and-rename, as editors and kubectl-like tools do: the poller
    // never sees a half-written file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn endpoints(index: &Index, authority: &str) -> Vec<String> {
    index.watch_destination(authority).unwrap().borrow().endpoints.keys().map(|a| a.to_string()).collect()
}

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n"
    )
}

fn slice(service: &str, addrs: &[&str]) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("- addresses: [{a}]")).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}\n",
        eps.join("\n")
    )
}

/// With notifications and an hour's poll: only a notification can apply an edit.
#[tokio::test]
async fn directory_hot_reload_through_notifications_keeps_the_last_good_file() {
    hot_reload(Follow { notify: true, poll: Duration::from_secs(3600) }).await;
}

/// Without notifications (filesystems without inotify): the poll.
#[tokio::test]
async fn directory_hot_reload_by_polling_keeps_the_last_good_file() {
    hot_reload(Follow { notify: false, poll: Duration::from_millis(50) }).await;
}

async fn hot_reload(follow: Follow) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.yaml", &format!("{}---\n{}", service("web", "198.19.0.10"), slice("web", &["198.18.0.1"])));
    let index = Index::new(Config::default());
    let mut manifests = Manifests::new(dir.path(), index.clone());
    let metrics = manifests.metrics();
    let report = manifests.scan().unwrap();
    assert_eq!((report.files, report.changes), (1, 2));
    assert_eq!(endpoints(&index, "web.shop:80"), ["198.18.0.1:8080"]);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(manifests.run(follow, async move {
        let _ = stop_rx.await;
    }));
    support::eventually("following", || async {
        metrics.notifications.load(std::sync::atomic::Ordering::Relaxed).eq(&follow.notify).then_some(())
    })
    .await;

    // Edited file.
    write(
        dir.path(),
        "web.yaml",
        &format!("{}---\n{}", service("web", "198.19.0.10"), slice("web", &["198.18.0.1", "198.18.0.2"])),
    );
    support::eventually("edit applied", || async { (endpoints(&index, "web.shop:80").len() == 2).then_some(()) }).await;

    // New file, in a subdirectory.
    std::fs::create_dir(dir.path().join("more")).unwrap();
    write(&dir.path().join("more"), "api.yml", &service("api", "198.19.0.11"));
    support::eventually("new file applied", || async {
        index.watch_destination("api.shop:80").unwrap().borrow().exists.then_some(())
    })
    .await;

    // Malformed edit: reported, and the file's previous state stays.
    write(dir.path(), "web.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web\n");
    support::eventually("parse error counted", || async {
        (metrics.parse_errors.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    assert_eq!(endpoints(&index, "web.shop:80").len(), 2, "previous good state kept");

    // Removed file: its objects go.
    std::fs::remove_file(dir.path().join("more").join("api.yml")).unwrap();
    support::eventually("removal applied", || async {
        (!index.watch_destination("api.shop:80").unwrap().borrow().exists).then_some(())
    })
    .await;
    // Fixing the broken file applies it.
    write(dir.path(), "web.yaml", &format!("{}---\n{}", service("web", "198.19.0.10"), slice("web", &["198.18.0.3"])));
    support::eventually("fix applied", || async {
        (endpoints(&index, "web.shop:80") == ["198.18.0.3:8080"]).then_some(())
    })
    .await;
    // Routes follow too.
    write(
        dir.path(),
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{group: core, kind: Service, name: web}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n",
    );
    support::eventually("route applied", || async {
        (index.watch_outbound("web.shop:80", None).unwrap().borrow().http_routes.len() == 1).then_some(())
    })
    .await;
    let _ = stop_tx.send(());
    task.await.unwrap();
}
