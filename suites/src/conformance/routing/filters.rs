//! Filters: redirects (scheme, host, port, path; every 3xx the API allows),
//! path rewrites, request and response header modifiers, and header
//! modifiers on one backendRef.

use std::collections::BTreeMap;

use super::test;
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::run::patience;
use crate::conformance::topology::{
    self as topo, backends, http_route, mark, svc, CLIENT, HTTP, NS,
};
use crate::conformance::{Failure, Test, Verdict};
use crate::substrate::cluster::{Cluster, ClusterSpec, Req};
use loadgen::echo;

/// The host a redirect keeps: the Service's name as the client sent it.
const HOST: &str = "echo.gamma.svc.cluster.local";

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshHTTPRouteRedirectScheme",
            Some("MeshHTTPRouteSchemeRedirect"),
            "RequestRedirect to https answers 301 / 302 (the default) with Location https://<host>/<path> (no port: 443 is https's)",
            || redirect_topology(SCHEME),
            scheme
        ),
        test!(
            "MeshHTTPRouteRedirectHost",
            Some("Mesh"),
            "RequestRedirect to another hostname answers 302 / 303 with Location http://example.org/<path>",
            || redirect_topology(HOSTNAME),
            hostname
        ),
        test!(
            "MeshHTTPRouteRedirectPort",
            Some("MeshHTTPRouteRedirectPort"),
            "RequestRedirect to another port (with and without a scheme) answers 302 / 307 with the port in Location",
            || redirect_topology(PORT),
            port
        ),
        test!(
            "MeshHTTPRouteRedirectPath",
            Some("MeshHTTPRouteRedirectPath"),
            "RequestRedirect replacing the full path or a prefix answers 308 / 301 with the new path in Location",
            || redirect_topology(PATH),
            path
        ),
        test!(
            "MeshHTTPRouteRewritePath",
            Some("MeshHTTPRouteRewritePath"),
            "URLRewrite replaces a path prefix (also with /) or the full path before the backend sees it, keeping the query",
            rewrite_topology,
            rewrite
        ),
        test!(
            "MeshHTTPRouteRequestHeaderModifier",
            Some("Mesh"),
            "RequestHeaderModifier sets (overwriting), adds (appending) and removes request headers",
            request_headers_topology,
            request_headers
        ),
        test!(
            "MeshHTTPRouteResponseHeaderModifier",
            Some("HTTPRouteResponseHeaderModification"),
            "ResponseHeaderModifier sets (overwriting), adds (appending) and removes the app's response headers",
            response_headers_topology,
            response_headers
        ),
        test!(
            "MeshHTTPRouteBackendRequestHeaderModification",
            Some("MeshHTTPRouteBackendRequestHeaderModification"),
            "a RequestHeaderModifier on one backendRef applies to the requests sent to that backend only",
            backend_headers_topology,
            backend_headers
        ),
    ]
}

/// One redirect rule: path prefix, the `requestRedirect` body (YAML lines
/// indented for it), and the status code (None: the default).
struct Redirect {
    prefix: &'static str,
    body: &'static str,
    status: Option<u16>,
}

const SCHEME: &[Redirect] = &[
    Redirect {
        prefix: "/scheme-default",
        body: "scheme: https",
        status: None,
    },
    Redirect {
        prefix: "/scheme-301",
        body: "scheme: https",
        status: Some(301),
    },
];
const HOSTNAME: &[Redirect] = &[
    Redirect {
        prefix: "/host-default",
        body: "hostname: example.org",
        status: None,
    },
    Redirect {
        prefix: "/host-303",
        body: "hostname: example.org",
        status: Some(303),
    },
];
const PORT: &[Redirect] = &[
    Redirect {
        prefix: "/port-default",
        body: "port: 8083",
        status: None,
    },
    Redirect {
        prefix: "/port-307",
        body: "port: 8083",
        status: Some(307),
    },
    Redirect {
        prefix: "/port-https",
        body: "scheme: https\n        port: 8443",
        status: Some(302),
    },
];
const PATH: &[Redirect] = &[
    Redirect { prefix: "/full", body: "path:\n          type: ReplaceFullPath\n          replaceFullPath: /new-path", status: Some(308) },
    Redirect {
        prefix: "/original-prefix",
        body: "path:\n          type: ReplacePrefixMatch\n          replacePrefixMatch: /replacement-prefix",
        status: Some(301),
    },
];

fn redirect_topology(redirects: &[Redirect]) -> ClusterSpec {
    let mut rules = String::new();
    for r in redirects {
        let status = r
            .status
            .map(|s| format!("\n        statusCode: {s}"))
            .unwrap_or_default();
        rules.push_str(&format!(
            "  - matches:
    - path:
        type: PathPrefix
        value: {}
    filters:
    - type: RequestRedirect
      requestRedirect:
        {}{status}
",
            r.prefix, r.body
        ));
    }
    // Everything else goes to echo-v1, so the route is visibly in force.
    rules.push_str(&format!(
        "  -\n{}{}",
        mark("rest"),
        backends(&[("echo-v1", HTTP, None)])
    ));
    topo::with(&http_route("redirect", NS, "echo", Some(HTTP), &rules))
}

fn redirect_case(name: &'static str, path: &str, status: u16, location: &str) -> Case {
    Case {
        name,
        from: CLIENT,
        to: svc("echo", HTTP),
        req: Req::get(path),
        expect: Expect::status(status).location(location),
    }
}

async fn scheme(c: &Cluster) -> Verdict {
    let cases = [
        redirect_case(
            "scheme, default status",
            "/scheme-default",
            302,
            &format!("https://{HOST}/scheme-default"),
        ),
        redirect_case(
            "scheme, 301",
            "/scheme-301/x",
            301,
            &format!("https://{HOST}/scheme-301/x"),
        ),
    ];
    expect::all(c, &cases, patience()).await
}

async fn hostname(c: &Cluster) -> Verdict {
    let cases = [
        redirect_case(
            "hostname, default status",
            "/host-default",
            302,
            "http://example.org/host-default",
        ),
        redirect_case(
            "hostname, 303",
            "/host-303",
            303,
            "http://example.org/host-303",
        ),
    ];
    expect::all(c, &cases, patience()).await
}

async fn port(c: &Cluster) -> Verdict {
    let cases = [
        redirect_case(
            "port, default status",
            "/port-default",
            302,
            &format!("http://{HOST}:8083/port-default"),
        ),
        redirect_case(
            "port, 307",
            "/port-307",
            307,
            &format!("http://{HOST}:8083/port-307"),
        ),
        redirect_case(
            "scheme and port",
            "/port-https",
            302,
            &format!("https://{HOST}:8443/port-https"),
        ),
    ];
    expect::all(c, &cases, patience()).await
}

async fn path(c: &Cluster) -> Verdict {
    let cases = [
        redirect_case(
            "full path, 308",
            "/full/one/two",
            308,
            &format!("http://{HOST}/new-path"),
        ),
        redirect_case(
            "prefix, 301",
            "/original-prefix/lemon",
            301,
            &format!("http://{HOST}/replacement-prefix/lemon"),
        ),
    ];
    expect::all(c, &cases, patience()).await
}

fn rewrite_topology() -> ClusterSpec {
    let rule = |prefix: &str, modifier: &str| {
        format!(
            "  - matches:
    - path:
        type: PathPrefix
        value: {prefix}
    filters:
    - type: URLRewrite
      urlRewrite:
        path:
          {modifier}
{}",
            backends(&[("echo-v1", HTTP, None)])
        )
    };
    let rules = [
        rule(
            "/prefix/one",
            "type: ReplacePrefixMatch\n          replacePrefixMatch: /one",
        ),
        rule(
            "/strip",
            "type: ReplacePrefixMatch\n          replacePrefixMatch: /",
        ),
        rule(
            "/full",
            "type: ReplaceFullPath\n          replaceFullPath: /one",
        ),
    ]
    .concat();
    topo::with(&http_route("rewrite", NS, "echo", Some(HTTP), &rules))
}

async fn rewrite(c: &Cluster) -> Verdict {
    let case = |name, path: &str, seen: &str, query: Option<&str>| Case {
        name,
        from: CLIENT,
        to: svc("echo", HTTP),
        req: Req::get(path),
        expect: Expect::ok("echo-v1").path(seen).query(query),
    };
    let cases = [
        case("prefix replaced", "/prefix/one/two", "/one/two", None),
        case("the prefix alone", "/prefix/one", "/one", None),
        case("prefix replaced by /", "/strip/three", "/three", None),
        case("full path replaced", "/full/one/two", "/one", None),
        case("the query is kept", "/full/x?a=b", "/one", Some("a=b")),
    ];
    expect::all(c, &cases, patience()).await
}

/// A header modifier filter of `kind` (YAML at rule level).
fn modifier(kind: &str, field: &str) -> String {
    format!(
        "    filters:
    - type: {kind}
      {field}:
        set:
        - name: x-header-set
          value: set-overwrites-values
        add:
        - name: x-header-add
          value: add-appends-values
        remove:
        - x-header-remove
"
    )
}

fn request_headers_topology() -> ClusterSpec {
    let rules = format!(
        "  -\n{}{}",
        modifier("RequestHeaderModifier", "requestHeaderModifier"),
        backends(&[("echo-v1", HTTP, None)])
    );
    topo::with(&http_route(
        "request-headers",
        NS,
        "echo",
        Some(HTTP),
        &rules,
    ))
}

async fn request_headers(c: &Cluster) -> Verdict {
    let cases = [
        Case {
            name: "the request has none of the headers",
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v1")
                .saw("x-header-set", &["set-overwrites-values"])
                .saw("x-header-add", &["add-appends-values"]),
        },
        Case {
            name: "the request has each of them",
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/")
                .header("x-header-set", "some-other-value")
                .header("x-header-add", "add-value")
                .header("x-header-remove", "remove-me"),
            expect: Expect::ok("echo-v1")
                .saw("x-header-set", &["set-overwrites-values"])
                .saw("x-header-add", &["add-value", "add-appends-values"])
                .not_saw("x-header-remove"),
        },
    ];
    expect::all(c, &cases, patience()).await
}

fn response_headers_topology() -> ClusterSpec {
    let rules = format!(
        "  -\n{}{}",
        modifier("ResponseHeaderModifier", "responseHeaderModifier"),
        backends(&[("echo-v1", HTTP, None)])
    );
    topo::with(&http_route(
        "response-headers",
        NS,
        "echo",
        Some(HTTP),
        &rules,
    ))
}

async fn response_headers(c: &Cluster) -> Verdict {
    let cases = [
        Case {
            name: "the app sends none of the headers",
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/"),
            expect: Expect::ok("echo-v1")
                .header("x-header-set", "set-overwrites-values")
                .header("x-header-add", "add-appends-values"),
        },
        Case {
            name: "the app sends each of them",
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/")
                .header(echo::RESPONSE_HEADER, "x-header-set: from-the-app")
                .header(echo::RESPONSE_HEADER, "x-header-add: app-value")
                .header(echo::RESPONSE_HEADER, "x-header-remove: app"),
            expect: Expect::ok("echo-v1")
                .header("x-header-set", "set-overwrites-values")
                .headers("x-header-add", &["app-value", "add-appends-values"])
                .no_header("x-header-remove"),
        },
    ];
    expect::all(c, &cases, patience()).await
}

fn backend_headers_topology() -> ClusterSpec {
    let backend = |name: &str, tag: &str| {
        format!(
            "    - name: {name}
      port: {HTTP}
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set:
          - name: x-backend
            value: {tag}
"
        )
    };
    let rules = format!(
        "  -\n    backendRefs:\n{}{}",
        backend("echo-v1", "v1"),
        backend("echo-v2", "v2")
    );
    topo::with(&http_route(
        "backend-headers",
        NS,
        "echo",
        Some(HTTP),
        &rules,
    ))
}

/// Requests sent once the backend filters apply: enough that both 1:1
/// backends are all but certain to be seen (a miss is 2 × 2⁻⁴⁰).
const BACKEND_REQUESTS: usize = 40;

async fn backend_headers(c: &Cluster) -> Verdict {
    let to = svc("echo", HTTP);
    for (backend, tag) in [("echo-v1", "v1"), ("echo-v2", "v2")] {
        // The split may need a few tries to land on each backend.
        let mut case = Case {
            name: "a request reaches the backend with its header",
            from: CLIENT,
            to: to.clone(),
            req: Req::get("/"),
            expect: Expect::ok(backend).saw("x-backend", &[tag]),
        };
        case.expect.backend = None;
        let deadline = std::time::Instant::now() + patience();
        loop {
            let r = match c.send(CLIENT, &to, &case.req).await {
                Ok(r) => r,
                Err(e) => return expect::dial_verdict(case.name, e),
            };
            if r.backend() == Some(backend) && case.expect.mismatches(&r).is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Verdict::Fail(Failure {
                    reason: format!(
                        "no request to {to} reached {backend} with x-backend: {tag} within {:?}",
                        patience()
                    ),
                    expected: format!("answered by {backend}; backend saw x-backend: {tag}"),
                    observed: r.describe()
                        + &r.echo
                            .map(|e| format!("; x-backend: {:?}", e.headers.get("x-backend")))
                            .unwrap_or_default(),
                });
            }
        }
    }
    // Each backend's header, and only its own, on every request.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..BACKEND_REQUESTS {
        let r = match c.send(CLIENT, &to, &Req::get("/")).await {
            Ok(r) => r,
            Err(e) => return expect::dial_verdict("split with backend filters", e),
        };
        let Some(e) = &r.echo else {
            return Verdict::Fail(Failure {
                reason: format!("a request to {to} got no answer from an echo server"),
                expected: "200 from echo-v1 or echo-v2".into(),
                observed: r.describe(),
            });
        };
        let want = if e.replica.name == "echo-v1" {
            "v1"
        } else {
            "v2"
        };
        let got = e.headers.get("x-backend").cloned().unwrap_or_default();
        if got != [want] {
            return Verdict::Fail(Failure {
                reason: format!(
                    "{} saw x-backend {got:?}: another backend's filter, or none",
                    e.replica.name
                ),
                expected: format!("{} sees x-backend: {want}", e.replica.name),
                observed: format!("x-backend: {got:?}"),
            });
        }
        *seen.entry(e.replica.name.clone()).or_default() += 1;
    }
    if seen.len() < 2 {
        return Verdict::Fail(Failure {
            reason: format!("{BACKEND_REQUESTS} requests to a 1:1 split reached one backend only"),
            expected: "both echo-v1 and echo-v2".into(),
            observed: expect::show(&seen),
        });
    }
    Verdict::Pass
}
