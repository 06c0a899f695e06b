//! `weft check` (the real binary) against a fake API server serving
//! recorded responses of a healthy install, a broken one, a cluster before
//! install and one that install cannot go on.

mod fake_api;

use std::process::Output;

use base64::Engine as _;
use fake_api::FakeApi;

const DAY: i64 = 86_400;

/// A self-signed CA valid until an hour short of `days` from now, and its
/// issuer (certificates are made at test time, so fixtures never expire;
/// the hour keeps the whole days left the same whichever second the check
/// runs in).
fn ca(days: i64) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "root.identity.weft.cluster.local");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days) - time::Duration::hours(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, rcgen::Issuer::new(params, key))
}

fn ca_pem(days: i64) -> String {
    ca(days).0
}

/// The values the fixtures leave open: the trust anchor (expiring in
/// `anchor_days`), the webhook's caBundle and the certificate it signed for
/// the webhook's Service, a proxy certificate's expiry.
fn vars(anchor_days: i64) -> Vec<(&'static str, String)> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (webhook_ca, issuer) = ca(365);
    let webhook_key = rcgen::KeyPair::generate().unwrap();
    let webhook_cert = rcgen::CertificateParams::new(vec!["weft-control.weft.svc".to_owned()])
        .unwrap()
        .signed_by(&webhook_key, &issuer)
        .unwrap()
        .pem();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    vec![
        ("TRUST_ANCHOR_PEM", json_string(&ca_pem(anchor_days))),
        // The anchor a proxy was injected with before a rotation (broken/).
        ("STALE_ANCHOR_PEM", json_string(&ca_pem(365))),
        ("CA_BUNDLE_BASE64", b64(&webhook_ca)),
        ("WEBHOOK_TLS_CRT_BASE64", b64(&webhook_cert)),
        ("WEBHOOK_TLS_KEY_BASE64", b64(&webhook_key.serialize_pem())),
        ("CERT_EXPIRY", (now + DAY).to_string()),
    ]
}

/// A JSON string's contents: the PEM's newlines escaped.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap().trim_matches('"').to_owned()
}

fn weft_check(api: &FakeApi, args: &[&str]) -> (Output, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("check")
        .args(["--context", "fake", "--timeout", "20s"])
        .args(args)
        .env("KUBECONFIG", api.kubeconfig())
        .env_remove("RUST_LOG")
        .env_remove("WEFT_NAMESPACE")
        .env_remove("WEFT_CONTEXT")
        .output()
        .expect("running weft check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Shown with --nocapture or on a failure.
    println!("$ weft check {}\n{stdout}", args.join(" "));
    (out, stdout)
}

/// The line of the check whose name contains `name`; panics showing the whole report if none.
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no check {name:?} in\n{report}"))
}

fn assert_verdict(report: &str, verdict: &str, name: &str, details: &[&str]) {
    let l = line(report, name);
    assert!(l.trim_start().starts_with(verdict), "{name}: expected {verdict}, got {l:?} in\n{report}");
    for d in details {
        assert!(l.contains(d), "{name}: {d:?} missing from {l:?}");
    }
}

#[test]
fn healthy_install_passes_every_check() {
    let api = FakeApi::start("healthy", &vars(365));
    let (out, report) = weft_check(&api, &[]);
    assert_eq!(out.status.code(), Some(0), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for (name, details) in [
        ("can reach the Kubernetes API", &["v1.34.0"][..]),
        ("Kubernetes version is at least 1.", &["1.34"]),
        ("control plane Deployment weft/weft-control ready", &["2/2 replicas available, 2 pods ready"]),
        ("injector webhook weft-injector registered", &["weft/weft-control:443/inject"]),
        ("injector webhook weft-injector has a caBundle", &[]),
        ("injector webhook certificate (Secret weft/weft-webhook-tls) matches its caBundle", &["weft-control.weft.svc, signed by the caBundle"]),
        ("injector webhook reachable", &["2 ready endpoint(s)", "answered HTTP 405"]),
        ("Weft CRDs installed", &["authorizationpolicies.policy.weft.io"]),
        ("Gateway API CRDs", &["httproutes.gateway.networking.k8s.io"]),
        ("trust anchor weft/weft-trust-anchor", &["root.identity.weft.cluster.local", "expires in 364 days"]),
        ("meshed pods' proxies carry the current trust anchor", &["2 of 2 pods"]),
        ("meshed pods' proxies ready", &["2 of 2 pods"]),
        ("meshed pods' proxies certified", &["2 of 2 running proxies hold a valid certificate"]),
    ] {
        assert_verdict(&report, "ok", name, details);
    }
    assert!(!report.contains("FAIL") && !report.contains("WARN") && !report.contains("hint:"), "{report}");
    assert!(!report.contains('\x1b'), "not a terminal: no colour\n{report}");
    assert!(report.ends_with("status: OK (0 failed, 0 warnings, 13 passed)\n"), "{report}");

    // The certificates were read from each meshed pod's proxy admin through
    // the API server's pod proxy; no other pod was asked.
    let requests = api.requests();
    for pod in ["web-7d9c5b6f4d-abcde", "api-5f6d8c9b7-q8r2t"] {
        let path = format!("GET /api/v1/namespaces/shop/pods/{pod}:4191/proxy/metrics");
        assert!(requests.contains(&path), "{path} not in {requests:#?}");
    }
    assert!(!requests.iter().any(|r| r.contains("coredns")), "{requests:#?}");
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/namespaces/weft/pods?")
            && r.contains("labelSelector=app.kubernetes.io%2Fname%3Dweft-control")),
        "the control plane's pods by the Deployment's selector: {requests:#?}"
    );

    let (out, json) = weft_check(&api, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["ok"].as_bool(), json["failed"].as_u64(), json["passed"].as_u64()), (Some(true), Some(0), Some(13)));
    assert_eq!(json["mode"], "installed");
    assert_eq!(json["context"], "fake");
}

#[test]
fn broken_install_names_each_failing_check() {
    let api = FakeApi::start("broken", &vars(10));
    let (out, report) = weft_check(&api, &[]);
    assert_eq!(out.status.code(), Some(1), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_verdict(&report, "ok", "can reach the Kubernetes API", &[]);
    assert_verdict(
        &report,
        "FAIL",
        "control plane Deployment weft/weft-control ready",
        &["1 of 2 replicas available", "pods not ready: weft-control-6c9f8d7b5-t7wzp"],
    );
    assert_verdict(&report, "ok", "injector webhook weft-injector registered", &[]);
    assert_verdict(&report, "FAIL", "injector webhook weft-injector has a caBundle", &["weft-injector.weft.io: no caBundle"]);
    assert_verdict(&report, "FAIL", "injector webhook reachable", &["1 ready endpoint(s)", "cannot reach the webhook", "i/o timeout"]);
    assert_verdict(&report, "FAIL", "Weft CRDs installed", &["missing: authorizationpolicies.policy.weft.io"]);
    assert_verdict(&report, "ok", "Gateway API CRDs", &[]);
    assert_verdict(&report, "WARN", "trust anchor weft/weft-trust-anchor", &["expiring soon", "expires in 9 days"]);
    assert_verdict(
        &report,
        "FAIL",
        "meshed pods' proxies carry the current trust anchor",
        &[
            "2 of 2 not on the current anchor",
            "shop/web-7d9c5b6f4d-abcde: carries another trust anchor than weft/weft-trust-anchor",
            "shop/api-5f6d8c9b7-q8r2t: injected by an older Weft",
        ],
    );
    assert!(
        report.contains("kubectl -n shop rollout restart deployment/web; kubectl -n shop delete pod api-5f6d8c9b7-q8r2t"),
        "the hint re-creates each pod through its workload:\n{report}"
    );
    assert_verdict(
        &report,
        "FAIL",
        "meshed pods' proxies ready",
        &["1 of 2 not ready", "shop/web-7d9c5b6f4d-abcde: waiting: CrashLoopBackOff, 5 restarts"],
    );
    assert_verdict(
        &report,
        "FAIL",
        "meshed pods' proxies certified",
        &["1 of 1 running proxies without a valid certificate", "shop/api-5f6d8c9b7-q8r2t: no workload certificate yet", "1 with the proxy not running"],
    );
    // Every failure and warning carries a hint on the next line.
    let lines: Vec<&str> = report.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("FAIL") || l.trim_start().starts_with("WARN") {
            assert!(lines.get(i + 1).is_some_and(|h| h.trim_start().starts_with("hint: ")), "no hint after {l:?}");
        }
    }
    assert!(report.ends_with("status: FAILED (7 failed, 1 warnings, 4 passed)\n"), "{report}");
    // Hints name the pods to look at.
    for hint in ["kubectl -n shop logs web-7d9c5b6f4d-abcde -c weft-proxy", "kubectl -n shop logs api-5f6d8c9b7-q8r2t -c weft-proxy"] {
        assert!(report.contains(hint), "{hint:?} not in\n{report}");
    }
    // A proxy that is not running has no admin listener to ask.
    assert!(!api.requests().iter().any(|r| r.contains("web-7d9c5b6f4d-abcde:4191")), "{:#?}", api.requests());

    let (out, json) = weft_check(&api, &["--output", "json", "--expiry-warning", "5d"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let anchor = json["checks"].as_array().unwrap().iter().find(|c| c["group"] == "identity").unwrap();
    assert_eq!(anchor["verdict"], "pass", "a 5-day warning window: 10 days left pass: {anchor}");
    assert_eq!(json["failed"], 7);
}

#[test]
fn pre_install_checks() {
    let fresh = FakeApi::start("fresh", &[]);
    let (out, report) = weft_check(&fresh, &["--pre"]);
    assert_eq!(out.status.code(), Some(0), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for name in [
        "can create namespaces",
        "can create clusterroles.rbac.authorization.k8s.io",
        "can create clusterrolebindings.rbac.authorization.k8s.io",
        "can create mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "can create customresourcedefinitions.apiextensions.k8s.io",
        "can create the control plane's objects in namespace weft",
        "no Weft install present",
        "Gateway API CRDs",
    ] {
        assert_verdict(&report, "ok", name, &[]);
    }
    let reviews = fresh.requests().iter().filter(|r| r.contains("selfsubjectaccessreviews")).count();
    assert_eq!(reviews, 10, "one review per kind install creates: {:#?}", fresh.requests());

    let restricted = FakeApi::start("restricted", &vars(365));
    let (out, report) = weft_check(&restricted, &["--pre"]);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_verdict(&report, "FAIL", "Kubernetes version is at least 1.", &["1.27", "v1.27.16-eks-a18cd3a"]);
    assert_verdict(&report, "FAIL", "can create clusterroles.rbac.authorization.k8s.io", &["denied"]);
    assert_verdict(&report, "ok", "can create clusterrolebindings", &[]);
    assert_verdict(&report, "FAIL", "can create the control plane's objects in namespace weft", &["denied: secrets"]);
    assert_verdict(&report, "FAIL", "no Weft install present", &["MutatingWebhookConfiguration weft-injector"]);
    assert_verdict(&report, "FAIL", "Gateway API CRDs", &["missing: httproutes.gateway.networking.k8s.io, grpcroutes"]);

    // An installed mesh is a conflicting install for --pre.
    let installed = FakeApi::start("healthy", &vars(365));
    let (out, report) = weft_check(&installed, &["--pre"]);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_verdict(
        &report,
        "FAIL",
        "no Weft install present",
        &["MutatingWebhookConfiguration weft-injector, ClusterRole weft-control, Deployment weft/weft-control"],
    );
}

/// `weft check ARGS` with `kubeconfig`, for the cases without a fake API server.
fn weft_check_with(kubeconfig: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("check")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unreachable_api_server_fails_the_first_check() {
    // A port nothing listens on: bound, read back, closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kubeconfig = fake_api::kubeconfig(&format!("http://127.0.0.1:{port}"));
    let (code, report, _) = weft_check_with(kubeconfig.path(), &["--timeout", "5s"]);
    assert_eq!(code, Some(1), "{report}");
    assert_verdict(&report, "FAIL", "can reach the Kubernetes API", &["GET /version"]);
    assert!(report.contains("hint: check the kubeconfig's server address"), "{report}");
    assert!(report.ends_with("status: FAILED (1 failed, 0 warnings, 0 passed)\n"), "{report}");

    // No such context: the checks cannot run (exit 2), and the message says what to set.
    let (code, _, stderr) = weft_check_with(kubeconfig.path(), &["--context", "nope"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nope") && stderr.contains("KUBECONFIG"), "{stderr}");

    // A bad flag value: exit 64 naming the flag and the value.
    let (code, _, stderr) = weft_check_with(kubeconfig.path(), &["--expiry-warning", "soon"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--expiry-warning") && stderr.contains("soon"), "{stderr}");
}

/// What `weft install` renders passes the checks it is the subject of:
/// the webhook's Service, path, caBundle and serving certificate, the trust
/// anchor, Weft's CRDs, the Deployment. The objects are the real binary's
/// output, given the status the API server and controllers would add.
#[test]
fn install_output_passes_its_checks() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft")).args(["install", "--replicas", "2"]).output().unwrap();
    assert!(out.status.success(), "weft install: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("weft install renders no {kind} {name}"))
            .clone()
    };
    let mut deployment = find("Deployment", "weft-control");
    deployment["status"] = serde_json::json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
    let anchor = find("ConfigMap", "weft-trust-anchor");
    // The meshed pods as the injector would write them with this anchor.
    let mut pods: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fake_api::fixtures().join("healthy/pods.json")).unwrap()).unwrap();
    let pem = anchor["data"]["ca.crt"].as_str().unwrap();
    for container in pods["items"].as_array_mut().unwrap().iter_mut().flat_map(|p| p["spec"]["containers"].as_array_mut().unwrap()) {
        for var in container["env"].as_array_mut().into_iter().flatten() {
            if var["name"] == "WEFT_PROXY_TRUST_ANCHOR_PEM" {
                var["value"] = pem.into();
            }
        }
    }
    // The rendered CRDs as the API server lists them once established, beside Gateway API's.
    let mut crds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fake_api::fixtures().join("fresh/crds.json")).unwrap()).unwrap();
    for mut crd in objects.iter().filter(|o| o["kind"] == "CustomResourceDefinition").cloned() {
        crd["status"] = serde_json::json!({"conditions": [{"type": "Established", "status": "True", "lastTransitionTime": "2026-12-01T10:00:00Z", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}]});
        crds["items"].as_array_mut().unwrap().push(crd);
    }
    let api = FakeApi::start_with(
        "healthy",
        &vars(365),
        vec![
            ("GET /apis/apps/v1/namespaces/weft/deployments/weft-control".into(), deployment),
            (
                "GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-injector".into(),
                find("MutatingWebhookConfiguration", "weft-injector"),
            ),
            ("GET /api/v1/namespaces/weft/secrets/weft-webhook-tls".into(), find("Secret", "weft-webhook-tls")),
            ("GET /api/v1/namespaces/weft/configmaps/weft-trust-anchor".into(), anchor),
            ("GET /api/v1/pods".into(), pods),
            ("GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions".into(), crds),
        ],
    );
    let (out, report) = weft_check(&api, &[]);
    assert_eq!(out.status.code(), Some(0), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for (name, details) in [
        ("control plane Deployment weft/weft-control ready", &["2/2 replicas available"][..]),
        ("injector webhook weft-injector registered", &["weft/weft-control:443/inject"]),
        ("injector webhook weft-injector has a caBundle", &[]),
        ("injector webhook certificate (Secret weft/weft-webhook-tls) matches its caBundle", &["weft-control.weft.svc, signed by the caBundle"]),
        ("Weft CRDs installed", &["authorizationpolicies.policy.weft.io"]),
        ("trust anchor weft/weft-trust-anchor valid and not near expiry", &["expires in"]),
        ("meshed pods' proxies carry the current trust anchor", &["2 of 2 pods"]),
    ] {
        assert_verdict(&report, "ok", name, details);
    }
}
