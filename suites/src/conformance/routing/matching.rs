//! Matching: which rule of a route a request takes (path exact, prefix and
//! regex, method, headers, query parameters, and the precedence between
//! rules), and named rules. Each rule marks the request (`x-route-rule`),
//! so the echo server shows the rule as well as the backend.

use super::test;
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::run::patience;
use crate::conformance::topology::{
    self as topo, backends, http_route, mark, svc, CLIENT, HTTP, NS,
};
use crate::conformance::{Test, Verdict};
use crate::substrate::cluster::{Cluster, ClusterSpec, Req};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshHTTPRouteMatching",
            Some("Mesh"),
            "path exact, prefix (by path element) and regex, method and header matches, and matches ORed within a rule, pick the rule with Gateway API precedence; no match: 404",
            matching_topology,
            matching
        ),
        test!(
            "MeshHTTPRouteQueryParamMatching",
            Some("MeshHTTPRouteQueryParamMatching"),
            "query parameter matches (exact and regex) pick the rule; more matched parameters win",
            query_topology,
            query
        ),
        test!(
            "MeshHTTPRouteNamedRouteRule",
            Some("MeshHTTPRouteNamedRouteRule"),
            "rules with a name are accepted and routed like unnamed ones",
            named_topology,
            named
        ),
    ]
}

/// One rule: `matches` (YAML list items at rule level, or "" for none),
/// marked `rule`, to `backend` port 80.
fn rule(matches: &str, name: &str, backend: &str) -> String {
    let matches = match matches {
        "" => String::new(),
        m => format!("    matches:\n{m}"),
    };
    format!(
        "  - {}{}{}",
        matches.trim_start(),
        mark(name),
        backends(&[(backend, HTTP, None)])
    )
}

fn matching_topology() -> ClusterSpec {
    let rules = [
        rule("    - path:\n        type: Exact\n        value: /exact\n", "exact", "echo-v1"),
        rule("    - path:\n        type: PathPrefix\n        value: /prefix\n", "prefix", "echo-v2"),
        // Longer prefix: wins over /prefix for what it covers.
        rule("    - path:\n        type: PathPrefix\n        value: /prefix/longer\n", "longer-prefix", "echo-v1"),
        // Exact beats any prefix, even one declared earlier.
        rule("    - path:\n        type: Exact\n        value: /prefix/exact\n", "exact-over-prefix", "echo-v1"),
        rule("    - path:\n        type: RegularExpression\n        value: /regex/[0-9]+\n", "regex", "echo-v2"),
        rule("    - path:\n        type: PathPrefix\n        value: /method\n      method: POST\n", "post", "echo-v2"),
        rule("    - path:\n        type: PathPrefix\n        value: /method\n", "any-method", "echo-v1"),
        rule(
            "    - path:\n        type: PathPrefix\n        value: /headers\n      headers:\n      - name: version\n        value: two\n      - name: color\n        value: blue\n",
            "two-headers",
            "echo-v2",
        ),
        rule(
            "    - path:\n        type: PathPrefix\n        value: /headers\n      headers:\n      - name: version\n        value: two\n",
            "one-header",
            "echo-v1",
        ),
        // Two matches in one rule: either one selects it.
        rule(
            "    - path:\n        type: PathPrefix\n        value: /v2\n    - headers:\n      - name: lane\n        value: fast\n",
            "either",
            "echo-v2",
        ),
        rule(
            "    - headers:\n      - name: version\n        type: RegularExpression\n        value: \"^v[0-9]+$\"\n",
            "header-regex",
            "echo-v2",
        ),
    ]
    .concat();
    topo::with(&http_route("matching", NS, "echo", Some(HTTP), &rules))
}

async fn matching(c: &Cluster) -> Verdict {
    let case = |name, req: Req, backend, rule: &str, path: &str| Case {
        name,
        from: CLIENT,
        to: svc("echo", HTTP),
        req,
        expect: Expect::ok(backend).saw("x-route-rule", &[rule]).path(path),
    };
    let cases = [
        case(
            "exact path",
            Req::get("/exact"),
            "echo-v1",
            "exact",
            "/exact",
        ),
        case(
            "prefix, the prefix itself",
            Req::get("/prefix"),
            "echo-v2",
            "prefix",
            "/prefix",
        ),
        case(
            "prefix, a sub-path",
            Req::get("/prefix/one"),
            "echo-v2",
            "prefix",
            "/prefix/one",
        ),
        case(
            "the longest prefix wins",
            Req::get("/prefix/longer/x"),
            "echo-v1",
            "longer-prefix",
            "/prefix/longer/x",
        ),
        case(
            "exact beats prefix",
            Req::get("/prefix/exact"),
            "echo-v1",
            "exact-over-prefix",
            "/prefix/exact",
        ),
        case(
            "regex, whole path",
            Req::get("/regex/123"),
            "echo-v2",
            "regex",
            "/regex/123",
        ),
        case(
            "method POST",
            Req::get("/method").method("POST"),
            "echo-v2",
            "post",
            "/method",
        ),
        case(
            "another method",
            Req::get("/method").method("GET"),
            "echo-v1",
            "any-method",
            "/method",
        ),
        case(
            "more header matches win",
            Req::get("/headers")
                .header("version", "two")
                .header("color", "blue"),
            "echo-v2",
            "two-headers",
            "/headers",
        ),
        case(
            "one header match",
            Req::get("/headers").header("version", "two"),
            "echo-v1",
            "one-header",
            "/headers",
        ),
        case(
            "one of two matches: the path",
            Req::get("/v2"),
            "echo-v2",
            "either",
            "/v2",
        ),
        case(
            "a prefix with a trailing slash",
            Req::get("/v2/"),
            "echo-v2",
            "either",
            "/v2/",
        ),
        case(
            "a prefix's sub-path",
            Req::get("/v2/example"),
            "echo-v2",
            "either",
            "/v2/example",
        ),
        case(
            "one of two matches: the header",
            Req::get("/").header("lane", "fast"),
            "echo-v2",
            "either",
            "/",
        ),
        case(
            "header regex",
            Req::get("/anything").header("version", "v42"),
            "echo-v2",
            "header-regex",
            "/anything",
        ),
    ];
    let unmatched = [
        // Element-wise prefix: /prefixes is not under /prefix; /exact/ is not /exact.
        ("a prefix is matched by path element", Req::get("/prefixes")),
        ("exact is exact", Req::get("/exact/")),
        ("/v2example is not under /v2", Req::get("/v2example")),
        (
            "a prefix matches from the start",
            Req::get("/foo/v2/example"),
        ),
        ("a regex must match the whole path", Req::get("/regex/12a")),
        (
            "a header regex must match the whole value",
            Req::get("/anything").header("version", "v4x"),
        ),
    ];
    match expect::all(c, &cases, patience()).await {
        Verdict::Pass => {}
        other => return other,
    }
    // No rule matches: a route that covers nothing there answers 404.
    let no_rule: Vec<Case> = unmatched
        .into_iter()
        .map(|(name, req)| Case {
            name,
            from: CLIENT,
            to: svc("echo", HTTP),
            req,
            expect: Expect::status(404),
        })
        .collect();
    expect::all(c, &no_rule, patience()).await
}

fn query_topology() -> ClusterSpec {
    let rules = [
        rule(
            "    - queryParams:\n      - name: animal\n        value: dolphin\n      - name: color\n        value: blue\n",
            "dolphin-blue",
            "echo-v1",
        ),
        rule("    - queryParams:\n      - name: animal\n        value: whale\n", "whale", "echo-v1"),
        rule("    - queryParams:\n      - name: animal\n        value: dolphin\n", "dolphin", "echo-v2"),
        rule(
            "    - queryParams:\n      - name: id\n        type: RegularExpression\n        value: \"^[0-9]{3}$\"\n",
            "id-regex",
            "echo-v2",
        ),
    ]
    .concat();
    topo::with(&http_route("query", NS, "echo", Some(HTTP), &rules))
}

async fn query(c: &Cluster) -> Verdict {
    let case = |name, path: &str, backend, rule: &str| Case {
        name,
        from: CLIENT,
        to: svc("echo", HTTP),
        req: Req::get(path),
        expect: Expect::ok(backend)
            .saw("x-route-rule", &[rule])
            .query(path.split_once('?').map(|(_, q)| q)),
    };
    let cases = [
        case("exact value", "/?animal=whale", "echo-v1", "whale"),
        case(
            "another exact value",
            "/?animal=dolphin",
            "echo-v2",
            "dolphin",
        ),
        case(
            "two matched parameters beat one",
            "/?animal=dolphin&color=blue",
            "echo-v1",
            "dolphin-blue",
        ),
        case(
            "order of parameters does not matter",
            "/?color=blue&animal=dolphin",
            "echo-v1",
            "dolphin-blue",
        ),
        case(
            "extra parameters are ignored",
            "/?animal=whale&size=big",
            "echo-v1",
            "whale",
        ),
        case("regex value", "/?id=123", "echo-v2", "id-regex"),
    ];
    match expect::all(c, &cases, patience()).await {
        Verdict::Pass => {}
        other => return other,
    }
    let none: Vec<Case> = [
        ("no parameter", "/"),
        ("another value", "/?animal=shark"),
        ("regex is whole-value", "/?id=1234"),
    ]
    .into_iter()
    .map(|(name, path)| Case {
        name,
        from: CLIENT,
        to: svc("echo", HTTP),
        req: Req::get(path),
        expect: Expect::status(404),
    })
    .collect();
    expect::all(c, &none, patience()).await
}

fn named_topology() -> ClusterSpec {
    let rules = format!(
        "  - name: named-rule\n    matches:\n    - path:\n        type: PathPrefix\n        value: /named\n{}{}{}",
        mark("named"),
        backends(&[("echo-v1", HTTP, None)]),
        rule("    - path:\n        type: PathPrefix\n        value: /unnamed\n", "unnamed", "echo-v2"),
    );
    topo::with(&http_route("named", NS, "echo", Some(HTTP), &rules))
}

async fn named(c: &Cluster) -> Verdict {
    let cases = [
        Case {
            name: "the named rule",
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/named"),
            expect: Expect::ok("echo-v1").saw("x-route-rule", &["named"]),
        },
        Case {
            name: "the unnamed rule beside it",
            from: CLIENT,
            to: svc("echo", HTTP),
            req: Req::get("/unnamed"),
            expect: Expect::ok("echo-v2").saw("x-route-rule", &["unnamed"]),
        },
    ];
    expect::all(c, &cases, patience()).await
}
