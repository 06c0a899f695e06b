//! `weft install` / `weft uninstall` output: golden files (fixed input
//! certificates in tests/fixtures/, so the output is byte-for-byte
//! deterministic; `WEFT_BLESS=1` rewrites the golden files, and creates the
//! fixtures when missing), every rendered object round-tripping through its
//! k8s-openapi type, and the semantics the cluster relies on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mesh_kube::install::{self, IdentityPki, InstallArgs, UninstallArgs, WebhookPki};
use mesh_kube::names;
use serde_json::Value;
use time::OffsetDateTime;

#[derive(Parser)]
struct Install {
    #[command(flatten)]
    args: InstallArgs,
}

#[derive(Parser)]
struct Uninstall {
    #[command(flatten)]
    args: UninstallArgs,
}

/// The instant the golden renders are checked at (inside the fixtures' validity).
fn golden_now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() // 2027-01-15
}

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(sub)
}

fn blessing() -> bool {
    std::env::var_os("WEFT_BLESS").is_some_and(|v| v == "1")
}

/// Fixed certificates (valid 2026-2126): made once with `WEFT_BLESS=1`
/// when missing, committed after.
fn fixtures() -> PathBuf {
    // Tests run in parallel: one of them makes the fixtures, the others wait.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let fixtures = dir("fixtures");
    let files = ["trust-anchor.pem", "issuer.pem", "issuer-key.pem", "webhook-ca.pem", "webhook.pem", "webhook-key.pem"];
    if blessing() && !files.iter().all(|f| fixtures.join(f).exists()) {
        std::fs::create_dir_all(&fixtures).unwrap();
        let (start, century) = (OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap(), Duration::from_secs(100 * 365 * 86_400));
        let identity = IdentityPki::generate("cluster.local", century, century, start).unwrap();
        let webhook = WebhookPki::generate(&install::webhook_dns_name("weft"), century, start).unwrap();
        for (file, pem) in files.iter().zip([
            &identity.trust_anchor_pem,
            &identity.issuer.cert_pem,
            &identity.issuer.key_pem,
            &webhook.ca_pem,
            &webhook.serving.cert_pem,
            &webhook.serving.key_pem,
        ]) {
            std::fs::write(fixtures.join(file), pem).unwrap();
        }
    }
    fixtures
}

/// `weft install <args>` with the fixture certificates, at `golden_now()`.
fn render(extra: &[&str]) -> (install::Options, String) {
    let f = fixtures();
    let file = |name: &str| f.join(name).to_str().unwrap().to_owned();
    let mut argv: Vec<String> = vec!["weft-install".into()];
    for (flag, name) in [
        ("--trust-anchor", "trust-anchor.pem"),
        ("--issuer-cert", "issuer.pem"),
        ("--issuer-key", "issuer-key.pem"),
        ("--webhook-ca", "webhook-ca.pem"),
        ("--webhook-cert", "webhook.pem"),
        ("--webhook-key", "webhook-key.pem"),
    ] {
        argv.extend([flag.to_owned(), file(name)]);
    }
    argv.extend(["--tag".to_owned(), "0.0.0-golden".to_owned()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let options = Install::try_parse_from(argv).unwrap().args.options(golden_now()).unwrap();
    let text = install::yaml(&install::install_header(&options), &install::objects(&options).unwrap()).unwrap();
    (options, text)
}

/// Compares `actual` with the golden file (or rewrites it under WEFT_BLESS=1),
/// failing with a line diff.
fn golden(name: &str, actual: &str) {
    let path = dir("golden").join(name);
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with WEFT_BLESS=1 to create it)", path.display()));
    if expected == actual {
        return;
    }
    let (exp, act): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut diff = String::new();
    for i in 0..exp.len().max(act.len()) {
        let (e, a) = (exp.get(i), act.get(i));
        if e != a {
            diff.push_str(&format!("line {}:\n  - {}\n  + {}\n", i + 1, e.unwrap_or(&"<none>"), a.unwrap_or(&"<none>")));
            if diff.lines().count() > 60 {
                diff.push_str("  ...\n");
                break;
            }
        }
    }
    panic!(
        "{} differs from `weft install`'s output (if the change is intended: WEFT_BLESS=1 cargo test -p mesh-kube --test kube install, and review the diff):\n{diff}",
        path.display()
    );
}

fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"))
}

/// Deserializes `doc` into the k8s-openapi type its kind names and
/// serializes it back: anything the type does not know would be lost.
fn round_trip(doc: &Value) -> Value {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Value {
        let typed: T = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{} {}: not a {}: {e}", doc["kind"], doc["metadata"]["name"], std::any::type_name::<T>()));
        serde_json::to_value(typed).unwrap()
    }
    match (doc["apiVersion"].as_str().unwrap(), doc["kind"].as_str().unwrap()) {
        ("v1", "Namespace") => through::<Namespace>(doc),
        ("v1", "ServiceAccount") => through::<ServiceAccount>(doc),
        ("v1", "ConfigMap") => through::<ConfigMap>(doc),
        ("v1", "Secret") => through::<Secret>(doc),
        ("v1", "Service") => through::<Service>(doc),
        ("apps/v1", "Deployment") => through::<Deployment>(doc),
        ("policy/v1", "PodDisruptionBudget") => through::<PodDisruptionBudget>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => through::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => through::<ClusterRoleBinding>(doc),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => through::<CustomResourceDefinition>(doc),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            through::<MutatingWebhookConfiguration>(doc)
        }
        (api, kind) => panic!("{api} {kind}: rendered, but this test has no type for it; add it"),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "{kind}: {found:?}");
    serde_json::from_value(found[0].clone()).unwrap()
}

#[test]
fn install_output_matches_the_golden_files() {
    golden("install.yaml", &render(&[]).1);
    golden(
        "install-ha.yaml",
        &render(&[
            "--replicas",
            "3",
            "--registry",
            "registry.example/weft",
            "--proxy-image",
            "registry.example/custom-proxy:1",
            "--webhook-failure-policy",
            "fail",
            "--control-cpu-limit",
            "2",
            "--control-memory-request",
            "128Mi",
            "--cert-lifetime",
            "12h",
        ])
        .1,
    );
    let uninstall = Uninstall::try_parse_from(["weft-uninstall"]).unwrap().args.render().unwrap();
    golden("uninstall.yaml", &uninstall);
}

#[test]
fn every_object_round_trips_through_its_k8s_openapi_type() {
    for extra in [&[][..], &["--replicas", "2"][..]] {
        let (options, text) = render(extra);
        let docs = documents(&text);
        // What was printed is what was built: the YAML lost nothing.
        assert_eq!(docs, install::objects(&options).unwrap(), "YAML text vs objects");
        for doc in &docs {
            assert_eq!(&round_trip(doc), doc, "{} {} lost fields in its type", doc["kind"], doc["metadata"]["name"]);
        }
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let mut expected = vec![
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "Secret",
            "Secret",
            "Service",
            "Deployment",
            "MutatingWebhookConfiguration",
        ];
        if options.replicas > 1 {
            expected.insert(11, "PodDisruptionBudget");
        }
        assert_eq!(kinds, expected);
    }
    let uninstall = Uninstall::try_parse_from(["weft-uninstall"]).unwrap().args.render().unwrap();
    for doc in documents(&uninstall) {
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata"], "{doc}");
        round_trip(&doc);
    }
}

#[test]
fn the_rendered_control_plane_is_wired_together() {
    let (options, text) = render(&["--replicas", "2", "--webhook-timeout", "5"]);
    let docs = documents(&text);
    let ns: Namespace = one(&docs, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some("weft"));

    // The certificates are the inputs, byte for byte.
    let anchor: ConfigMap = one(&docs, "ConfigMap");
    assert_eq!(anchor.data.unwrap()[names::TRUST_ANCHOR_KEY], options.identity.trust_anchor_pem);
    let secrets: Vec<Secret> = find(&docs, "Secret").into_iter().map(|d| serde_json::from_value(d.clone()).unwrap()).collect();
    let secret = |name: &str| secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap().clone();
    let issuer = secret(names::ISSUER_SECRET).data.unwrap();
    assert_eq!(issuer["tls.key"].0, options.identity.issuer.key_pem.as_bytes());
    let webhook_tls = secret(names::WEBHOOK_SECRET).data.unwrap();
    assert_eq!(webhook_tls["tls.crt"].0, options.webhook.serving.cert_pem.as_bytes());

    // The webhook: the Service's 443 reaches the container's webhook port,
    // the CA bundle is the webhook CA, the excluded namespaces are ours.
    let config: MutatingWebhookConfiguration = one(&docs, "MutatingWebhookConfiguration");
    let hook = &config.webhooks.unwrap()[0];
    assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, options.webhook.ca_pem.as_bytes());
    let target = hook.client_config.service.as_ref().unwrap();
    assert_eq!((target.name.as_str(), target.namespace.as_str(), target.path.as_deref()), (names::CONTROL, "weft", Some(names::WEBHOOK_PATH)));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.timeout_seconds, Some(5));
    let excluded = &hook.namespace_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
    assert_eq!(excluded.values.as_deref().unwrap(), ["kube-system", "weft"]);
    let svc: Service = one(&docs, "Service");
    let ports = svc.spec.unwrap().ports.unwrap();
    let https = ports.iter().find(|p| Some(p.port) == target.port).expect("the webhook's Service port");
    let deployment: Deployment = one(&docs, "Deployment");
    let spec = deployment.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let named_port = |name: &str| container.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some(name)).unwrap().container_port;
    let k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(target_name) = https.target_port.clone().unwrap() else {
        panic!("target port by name")
    };
    assert_eq!(named_port(&target_name), i32::from(names::WEBHOOK_PORT));
    assert_eq!(named_port("admin"), i32::from(names::CONTROL_ADMIN_PORT));

    // The Service selects the Deployment's pods, which run as its ServiceAccount.
    let selector = svc_selector(&docs);
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{selector:?} vs {pod_labels:?}");
    assert_eq!(spec.selector.match_labels.unwrap(), pod_labels);
    assert_eq!(pod.service_account_name.as_deref(), Some(names::CONTROL));
    let args = container.args.clone().unwrap();
    for flag in ["--backend=kubernetes", "--identity-verifier=kubernetes", "--token-audience=weft", "--admin-listen=0.0.0.0:9990"] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let security = container.security_context.clone().unwrap();
    assert_eq!((security.run_as_non_root, security.read_only_root_filesystem), (Some(true), Some(true)));
    assert_ne!(security.run_as_user, Some(names::PROXY_UID), "mesh-control must not run as the uid weft init exempts");
    let ready = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(ready.path.as_deref(), Some("/ready"));

    // Two replicas: a budget over the same pods and a spread over nodes.
    assert_eq!(spec.replicas, Some(2));
    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb.spec.unwrap().selector.unwrap().match_labels.unwrap(), pod_labels);
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());

    // RBAC: what the Kubernetes backend watches, read-only; TokenReview via auth-delegator.
    let role: ClusterRole = one(&docs, "ClusterRole");
    let rules = role.rules.unwrap();
    for resource in ["namespaces", "services", "pods", "endpointslices", "httproutes", "grpcroutes", "authorizationpolicies"] {
        assert!(rules.iter().any(|r| r.resources.as_ref().unwrap().iter().any(|x| x == resource)), "{resource}");
    }
    assert!(rules.iter().all(|r| r.verbs == ["get", "list", "watch"]));
    let bindings: Vec<ClusterRoleBinding> =
        find(&docs, "ClusterRoleBinding").into_iter().map(|d| serde_json::from_value(d.clone()).unwrap()).collect();
    assert!(bindings.iter().any(|b| b.role_ref.name == "system:auth-delegator"));
    for b in &bindings {
        let subject = &b.subjects.as_ref().unwrap()[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), (names::CONTROL, Some("weft")));
    }
}

fn svc_selector(docs: &[Value]) -> std::collections::BTreeMap<String, String> {
    let svc: Service = one(docs, "Service");
    svc.spec.unwrap().selector.unwrap()
}

#[test]
fn a_webhook_certificate_for_another_namespace_is_refused() {
    let f = fixtures();
    let file = |name: &str| f.join(name).to_str().unwrap().to_owned();
    let argv = [
        "weft-install".to_owned(),
        "--namespace".to_owned(),
        "mesh".to_owned(),
        "--webhook-ca".to_owned(),
        file("webhook-ca.pem"),
        "--webhook-cert".to_owned(),
        file("webhook.pem"),
        "--webhook-key".to_owned(),
        file("issuer-key.pem"),
    ];
    let err = Install::try_parse_from(argv).unwrap().args.options(golden_now()).unwrap_err().to_string();
    assert!(err.contains("not weft-control.mesh.svc"), "{err}");
    assert!(err.contains("--webhook-key: does not match the public key of --webhook-cert"), "{err}");
}

#[test]
fn bad_options_are_reported_together() {
    let argv = [
        "weft-install",
        "--namespace",
        "Weft_NS",
        "--replicas",
        "0",
        "--control-memory-limit",
        "lots",
        "--webhook-timeout",
        "31",
        "--issuer-lifetime",
        "1m",
    ];
    let err = Install::try_parse_from(argv).unwrap().args.options(golden_now()).unwrap_err();
    assert!(err.is_usage());
    let text = err.to_string();
    for part in [
        "--namespace \"Weft_NS\"",
        "--replicas 0",
        "--control-memory-limit \"lots\"",
        "--webhook-timeout 31",
        "--issuer-lifetime 1m",
    ] {
        assert!(text.contains(part), "{part} not in {text}");
    }
}

#[test]
fn generated_certificates_are_fresh_and_valid_for_the_namespace() {
    let options = Install::try_parse_from(["weft-install", "--namespace", "mesh"]).unwrap().args.options(OffsetDateTime::now_utc()).unwrap();
    let now = OffsetDateTime::now_utc();
    // The generated material passes the same checks as operator input.
    let w = &options.webhook;
    WebhookPki::from_pem(
        ("ca", w.ca_pem.clone()),
        ("crt", w.serving.cert_pem.clone()),
        ("key", w.serving.key_pem.clone()),
        "weft-control.mesh.svc",
        now,
    )
    .unwrap();
    let i = &options.identity;
    IdentityPki::from_pem(
        ("anchor", i.trust_anchor_pem.clone()),
        ("issuer", i.issuer.cert_pem.clone()),
        ("key", i.issuer.key_pem.clone()),
        now,
    )
    .unwrap();
    let again = Install::try_parse_from(["weft-install"]).unwrap().args.options(now).unwrap();
    assert_ne!(again.identity.trust_anchor_pem, i.trust_anchor_pem, "each install makes its own root");
}
