//! Injection on the samples in tests/samples/in (golden outputs in
//! tests/samples/injected; `WEFT_BLESS=1 cargo test -p mesh-kube` rewrites
//! them), and the webhook's answers compared byte for byte with them.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::manifests::{inject_stream, Report};
use super::{decide, inject, sidecar, Config, Outcome, Skip, Trigger};
use crate::webhook::{review, Verdict};
use crate::{names, yaml};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples")
}

fn inputs() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(samples().join("in"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "samples missing: {files:?}");
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The fixture trust anchor, as `weft inject --trust-anchor` reads it.
fn anchor() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/trust-anchor.pem")).unwrap()
}

fn config() -> Config {
    Config {
        proxy_image: "ghcr.io/weft/mesh-proxy:test".into(),
        init_image: "ghcr.io/weft/weft:test".into(),
        trust_anchor_pem: anchor(),
        ..Config::default()
    }
}

/// Every pod template of a parsed document (or List item), with the path to it.
fn templates(doc: &Value) -> Vec<Value> {
    if let Some(items) = doc.get("items").and_then(Value::as_array) {
        return items.iter().flat_map(templates).collect();
    }
    let template = match doc["kind"].as_str() {
        Some("Pod") => Some(json!({"metadata": doc["metadata"], "spec": doc["spec"]})),
        Some("CronJob") => doc.pointer("/spec/jobTemplate/spec/template").cloned(),
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => doc.pointer("/spec/template").cloned(),
        _ => None,
    };
    template.into_iter().collect()
}

fn parse_all(text: &str) -> Vec<Value> {
    yaml::documents(text).iter().map(|(_, d)| serde_saphyr::from_str(d).unwrap()).collect()
}

#[test]
fn samples_inject_as_the_golden_files_say() {
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, text) in inputs() {
        let injected = inject_stream(&text, &config()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let golden = samples().join("injected").join(&name);
        if bless {
            std::fs::write(&golden, &injected.yaml).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != injected.yaml {
            stale.push(name);
        }
    }
    assert!(stale.is_empty(), "{stale:?} differ from tests/samples/injected; if the change is meant, WEFT_BLESS=1 cargo test -p mesh-kube");
}

#[test]
fn every_workload_is_injected_once_and_its_app_is_untouched() {
    let mut injected_templates = 0;
    for (name, text) in inputs() {
        let out = inject_stream(&text, &config()).unwrap();
        let (before, after) = (parse_all(&text), parse_all(&out.yaml));
        assert_eq!(before.len(), after.len(), "{name}: one document out per document in");
        for (b, a) in before.iter().zip(&after) {
            for (tb, ta) in templates(b).iter().zip(templates(a)) {
                let b: PodSpec = serde_json::from_value(tb["spec"].clone()).unwrap();
                let a: PodSpec = serde_json::from_value(ta["spec"].clone()).unwrap();
                if b.host_network == Some(true) || tb.pointer("/metadata/annotations/weft.io~1inject") == Some(&json!("disabled")) {
                    assert_eq!(a, b, "{name}: skipped template changed");
                    continue;
                }
                injected_templates += 1;
                let proxies: Vec<&Container> = a.containers.iter().filter(|c| c.name == names::PROXY_CONTAINER).collect();
                let inits = a.init_containers.iter().flatten().filter(|c| c.name == names::INIT_CONTAINER).count();
                assert_eq!((proxies.len(), inits), (1, 1), "{name}: one proxy, one init container");
                assert_eq!(a.init_containers.as_ref().unwrap()[0].name, names::INIT_CONTAINER, "{name}: weft-init runs first");
                // The app's containers (ports included) and init containers are
                // exactly as they were, in their order, after ours.
                assert_eq!(&a.containers[1..], &b.containers[..], "{name}: app containers changed");
                assert_eq!(&a.init_containers.as_ref().unwrap()[1..], b.init_containers.as_deref().unwrap_or_default());
                let mut volumes: Vec<&str> = a.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
                volumes.sort_unstable();
                volumes.dedup();
                assert_eq!(volumes.len(), a.volumes.as_ref().unwrap().len(), "{name}: volume names unique");
                assert_eq!(
                    ta.pointer("/metadata/annotations/weft.io~1injected"),
                    Some(&json!("ghcr.io/weft/mesh-proxy:test"))
                );
            }
        }
    }
    // deployment, statefulset, pod, ReplicaSet, Job, CronJob, the List's Deployment.
    assert_eq!(injected_templates, 7);
}

#[test]
fn injecting_the_injected_output_changes_nothing() {
    for (name, text) in inputs() {
        let once = inject_stream(&text, &config()).unwrap();
        let twice = inject_stream(&once.yaml, &config()).unwrap();
        assert_eq!(twice.yaml, once.yaml, "{name}: not idempotent");
        for Report { outcome, object, .. } in &twice.reports {
            assert!(!matches!(outcome, Some(Outcome::Injected)), "{name}: {object} injected twice");
        }
    }
}

#[test]
fn the_stream_report_says_what_happened_to_each_object() {
    let text = std::fs::read_to_string(samples().join("in/workloads.yaml")).unwrap();
    let reports: Vec<String> = inject_stream(&text, &config()).unwrap().reports.iter().map(ToString::to_string).collect();
    assert_eq!(
        reports,
        [
            "document 1: Namespace shop: not a workload, passed through",
            "document 2: Service shop/web: not a workload, passed through",
            "document 3: Deployment shop/legacy: not injected: annotated weft.io/inject: disabled",
            "document 4: DaemonSet shop/node-agent: not injected: hostNetwork pod (the proxy's iptables rules would capture the node's traffic)",
            "document 5: ReplicaSet shop/worker: injected",
            "document 6: Job shop/report: injected",
            "document 7: CronJob shop/cleanup: injected",
        ]
    );
}

fn template(name: &str) -> (ObjectMeta, PodSpec) {
    let text = std::fs::read_to_string(samples().join("in").join(name)).unwrap();
    let doc = parse_all(&text).remove(0);
    let t = templates(&doc).remove(0);
    (serde_json::from_value(t["metadata"].clone()).unwrap(), serde_json::from_value(t["spec"].clone()).unwrap())
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str())
}

#[test]
fn annotations_override_ports_cidrs_and_resources() {
    let (mut meta, mut spec) = template("statefulset.yaml");
    assert_eq!(inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap(), Outcome::Injected);
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let args = init.args.as_deref().unwrap();
    assert_eq!(arg_after(args, "--skip-inbound-ports"), Some("4191,4567,4568"));
    assert_eq!(arg_after(args, "--skip-outbound-ports"), Some("4567-4568"));
    assert_eq!(arg_after(args, "--skip-outbound-cidrs"), Some("169.254.169.254/32,10.96.0.0/12"));
    assert_eq!(arg_after(args, "--proxy-uid"), Some("2102"));
    let proxy = &spec.containers[0];
    let env = |name: &str| proxy.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env("WEFT_PROXY_OPAQUE_PORTS").as_deref(), Some("25,587,3306,4444,5432,6379,9300,11211,7000-7001"));
    let r = proxy.resources.as_ref().unwrap();
    let q = |m: &Option<std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(
        (q(&r.requests, "cpu"), q(&r.requests, "memory"), q(&r.limits, "cpu"), q(&r.limits, "memory")),
        (Some("250m".into()), Some("128Mi".into()), Some("1".into()), Some("512Mi".into()))
    );
    // The pod's own default-container choice is kept.
    assert_eq!(meta.annotations.unwrap()[names::DEFAULT_CONTAINER_ANNOTATION], "postgres");

    // Without annotations: the defaults, and no optional flags.
    let (mut meta, mut spec) = template("deployment.yaml");
    inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap();
    let args = spec.init_containers.as_ref().unwrap()[0].args.clone().unwrap();
    assert_eq!(arg_after(&args, "--skip-inbound-ports"), Some("4191"));
    assert!(arg_after(&args, "--skip-outbound-ports").is_none() && arg_after(&args, "--skip-outbound-cidrs").is_none());
    assert!(!spec.containers[0].env.iter().flatten().any(|e| e.name == "WEFT_PROXY_OPAQUE_PORTS"));
    assert_eq!(meta.annotations.unwrap()[names::DEFAULT_CONTAINER_ANNOTATION], "web");
}

#[test]
fn prometheus_scrapes_the_proxy_unless_the_pod_scrapes_its_app() {
    let scrape = |meta: &ObjectMeta| {
        let a = meta.annotations.clone().unwrap_or_default();
        [names::PROMETHEUS_SCRAPE_ANNOTATION, names::PROMETHEUS_PORT_ANNOTATION, names::PROMETHEUS_PATH_ANNOTATION]
            .map(|k| a.get(k).cloned())
    };
    let (mut meta, mut spec) = template("deployment.yaml");
    assert_eq!(scrape(&meta), [None, None, None]);
    inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap();
    assert_eq!(scrape(&meta), [Some("true".into()), Some("4191".into()), Some("/metrics".into())]);
    // The port the annotation names is the proxy's admin listener, which iptables leaves alone.
    let proxy = &spec.containers[0];
    assert!(proxy.ports.iter().flatten().any(|p| p.container_port == 4191 && p.name.as_deref() == Some(sidecar::ADMIN_PORT_NAME)));
    let args = spec.init_containers.as_ref().unwrap()[0].args.clone().unwrap();
    assert_eq!(arg_after(&args, "--skip-inbound-ports"), Some("4191"));

    // An app that already asks to be scraped keeps its port and path.
    let (mut meta, mut spec) = template("deployment.yaml");
    let own = [("prometheus.io/scrape", "true"), ("prometheus.io/port", "9102")];
    meta.annotations.get_or_insert_with(Default::default).extend(own.map(|(k, v)| (k.to_owned(), v.to_owned())));
    inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap();
    assert_eq!(scrape(&meta), [Some("true".into()), Some("9102".into()), None]);
}

#[test]
fn the_proxy_runs_transparent_with_its_identity_token_and_trust_anchor() {
    let (mut meta, mut spec) = template("pod.yaml");
    inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap();
    let proxy = &spec.containers[0];
    let env = |name: &str| proxy.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone()).unwrap_or_default();
    assert_eq!(env("WEFT_PROXY_TRANSPARENT"), "true");
    assert_eq!(env("WEFT_PROXY_INBOUND_LISTEN"), "0.0.0.0:4143");
    assert_eq!(env("WEFT_PROXY_OUTBOUND_LISTEN"), "127.0.0.1:4140");
    assert_eq!(env("WEFT_PROXY_ADMIN_LISTEN"), "0.0.0.0:4191");
    assert_eq!(env("WEFT_PROXY_IDENTITY"), "spiffe://cluster.local/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_POD_SERVICE_ACCOUNT)");
    assert_eq!(env("WEFT_PROXY_CONTROL"), "weft-control.weft.svc.cluster.local:8086");
    assert_eq!(env("WEFT_PROXY_CONTROL_IDENTITY"), "spiffe://cluster.local/ns/weft/sa/mesh-control");
    assert_eq!(env("WEFT_PROXY_TOKEN_FILE"), "/var/run/secrets/weft.io/serviceaccount/token");
    // Inline: a pod can mount ConfigMaps of its own namespace only.
    assert_eq!(env(names::PROXY_TRUST_ANCHOR_ENV), anchor());
    assert!(proxy.env.iter().flatten().all(|e| e.name != "WEFT_PROXY_TRUST_ANCHOR"));
    // $(VAR) is expanded only from variables defined before it.
    let position = |name: &str| proxy.env.iter().flatten().position(|e| e.name == name).unwrap();
    assert!(position("WEFT_POD_NAMESPACE") < position("WEFT_PROXY_IDENTITY"));
    assert!(position("WEFT_POD_SERVICE_ACCOUNT") < position("WEFT_PROXY_IDENTITY"));
    let token = spec.volumes.iter().flatten().find(|v| v.name == super::sidecar::TOKEN_VOLUME).unwrap();
    let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0].service_account_token.as_ref().unwrap();
    assert_eq!(projection.audience.as_deref(), Some(names::TOKEN_AUDIENCE));
    assert!(spec.volumes.iter().flatten().all(|v| v.config_map.is_none()), "nothing mounted from a ConfigMap");
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_non_root, sc.allow_privilege_escalation, sc.read_only_root_filesystem),
        (Some(names::PROXY_UID), Some(true), Some(false), Some(true))
    );
    let probe = proxy.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((probe.path.as_deref(), &probe.port), (Some("/ready"), &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4191)));
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let caps = init.security_context.as_ref().unwrap().capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..]));
    assert_eq!(init.security_context.as_ref().unwrap().run_as_user, Some(0));
}

#[test]
fn each_skip_reason_is_honoured() {
    let (meta, spec) = template("deployment.yaml");
    let with = |key: &str, value: &str| {
        let mut m = meta.clone();
        m.annotations.get_or_insert_with(Default::default).insert(key.into(), value.into());
        m
    };
    let admission = |ns| Trigger::Admission { namespace: ns };
    // Opt-in: the pod's annotation wins over its namespace's.
    assert_eq!(decide(&meta, &spec, Trigger::Manual).unwrap(), None);
    assert_eq!(decide(&meta, &spec, admission(None)).unwrap(), Some(Skip::NotOptedIn { namespace: None }));
    assert_eq!(decide(&meta, &spec, admission(Some(false))).unwrap(), Some(Skip::NotOptedIn { namespace: Some(false) }));
    assert_eq!(decide(&meta, &spec, admission(Some(true))).unwrap(), None);
    let enabled = with(names::INJECT_ANNOTATION, "enabled");
    assert_eq!(decide(&enabled, &spec, admission(Some(false))).unwrap(), None);
    let disabled = with(names::INJECT_ANNOTATION, "disabled");
    for trigger in [Trigger::Manual, admission(Some(true))] {
        assert_eq!(decide(&disabled, &spec, trigger).unwrap(), Some(Skip::AnnotatedOut));
    }
    let mut host = spec.clone();
    host.host_network = Some(true);
    assert_eq!(decide(&enabled, &host, Trigger::Manual).unwrap(), Some(Skip::HostNetwork));
    let injected = with(names::INJECTED_ANNOTATION, "x");
    assert_eq!(decide(&injected, &spec, Trigger::Manual).unwrap(), Some(Skip::AlreadyInjected));
    let mut with_proxy = spec.clone();
    with_proxy.containers.push(Container { name: names::PROXY_CONTAINER.into(), ..Container::default() });
    assert_eq!(decide(&meta, &with_proxy, Trigger::Manual).unwrap(), Some(Skip::AlreadyInjected));
    let typo = with(names::INJECT_ANNOTATION, "yes");
    assert!(decide(&typo, &spec, Trigger::Manual).unwrap_err().to_string().contains("\"yes\" is neither enabled nor disabled"));
}

#[test]
fn a_bad_annotation_or_a_clashing_volume_changes_nothing_and_says_why() {
    let (mut meta, mut spec) = template("deployment.yaml");
    meta.annotations = Some([(names::SKIP_OUTBOUND_CIDRS_ANNOTATION.to_owned(), "10.0.0.1/8".to_owned())].into());
    let before = (meta.clone(), spec.clone());
    let err = inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap_err();
    assert!(err.to_string().contains("weft.io/skip-outbound-cidrs"), "{err}");
    assert_eq!((meta, spec), before);

    let (mut meta, mut spec) = template("deployment.yaml");
    spec.volumes.as_mut().unwrap()[0].name = super::sidecar::TOKEN_VOLUME.to_owned();
    let err = inject(&mut meta, &mut spec, Trigger::Manual, &config()).unwrap_err();
    assert!(err.to_string().contains("already has a volume named \"weft-identity-token\""), "{err}");

    // No trust anchor: the proxy could never verify anyone.
    let (mut meta, mut spec) = template("deployment.yaml");
    let before = (meta.clone(), spec.clone());
    let err = inject(&mut meta, &mut spec, Trigger::Manual, &Config { trust_anchor_pem: " \n".into(), ..config() }).unwrap_err();
    assert!(err.to_string().contains("no trust anchor"), "{err}");
    assert_eq!((meta, spec), before);
}

#[test]
fn a_custom_kind_ending_in_list_is_not_a_list() {
    let text = "apiVersion: net.example/v1\nkind: IPAllowList\nmetadata: {name: a}\nspec: {cidrs: [10.0.0.0/8]}\n";
    let out = inject_stream(text, &config()).unwrap();
    assert_eq!(out.yaml, text);
    assert_eq!(out.reports[0].to_string(), "document 1: IPAllowList a: not a workload, passed through");
}

#[test]
fn malformed_streams_name_the_document_the_line_and_the_problem() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: b}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: c\nspec:\n  replicas: many\n---\napiVersion: v1\nkind: Pod\nmetadata: [unclosed\n";
    let err = inject_stream(text, &config()).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with("line 5: document 2: not a Kubernetes object: apiVersion and kind are required"), "{}", lines[0]);
    assert!(lines[1].starts_with("line 8: document 3: Deployment c: not a valid object of its kind: "), "{}", lines[1]);
    assert!(lines[1].contains("invalid type") || lines[1].contains("many"), "{}", lines[1]);
    assert!(lines[2].starts_with("line 17: document 4: invalid YAML"), "{}", lines[2]);
}

/// An AdmissionReview as the API server sends it for `pod` in `namespace`.
fn admission_review(pod: &Value, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d5c6a7e-1f2b-4c3d-9e8f-7a6b5c4d3e2f",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap()
}

/// Applies a webhook response's patch to `object`; the patched pod as
/// `weft inject` writes objects.
fn patched(response: &[u8], object: &Value) -> (Value, String) {
    let response: Value = serde_json::from_slice(response).unwrap();
    let r = &response["response"];
    let mut object = object.clone();
    if let Some(patch) = r.get("patch") {
        assert_eq!(r["patchType"], "JSONPatch");
        // kube-rs writes Go's []byte as an array of numbers (the API
        // server's decoder takes that as well as base64).
        let bytes: Vec<u8> = serde_json::from_value(patch.clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    let pod: Pod = serde_json::from_value(object).unwrap();
    let text = yaml::to_yaml(&serde_json::to_value(&pod).unwrap()).unwrap();
    (response, text)
}

#[test]
fn the_webhook_and_weft_inject_give_byte_identical_pods() {
    let mut compared = 0;
    for (name, text) in inputs() {
        let cli = inject_stream(&text, &config()).unwrap();
        for (input, output) in parse_all(&text).iter().zip(parse_all(&cli.yaml)) {
            for (template, injected) in templates(input).into_iter().zip(templates(&output)) {
                // The API server always sends metadata, if only the namespace.
                let metadata = if template["metadata"].is_null() { json!({}) } else { template["metadata"].clone() };
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]});
                let want = yaml::to_yaml(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": injected["metadata"], "spec": injected["spec"]})).unwrap();
                // The namespace opted in, so the webhook injects what weft inject does.
                let reviewed = review(&admission_review(&pod, "shop"), &config(), |ns| (ns == "shop").then_some(true)).unwrap();
                let (response, got) = patched(&reviewed.body, &pod);
                assert_eq!(response["response"]["allowed"], true, "{name}");
                assert_eq!(got, want, "{name}: the webhook's pod differs from weft inject's");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 9, "every template of the samples");
}

#[test]
fn the_recorded_admission_review_is_answered_with_the_clis_pod() {
    let body = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission-review-v1.json")).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let object = request["request"]["object"].clone();
    let reviewed = review(&body, &config(), |_| None).unwrap();
    assert_eq!(reviewed.verdict, Verdict::Injected);
    let (response, got) = patched(&reviewed.body, &object);
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], "8f2ce1a3-5b7e-4d0c-9f41-2b6c7a9e1d05");
    assert_eq!(response["response"]["allowed"], true);
    // weft inject reads YAML; JSON is YAML.
    let cli = inject_stream(&serde_json::to_string_pretty(&object).unwrap(), &config()).unwrap();
    assert_eq!(got, cli.yaml);
}

#[test]
fn the_webhook_allows_what_it_does_not_inject_and_denies_only_opted_in_pods_it_cannot() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "a"}]}});
    let answer = |pod: &Value, ns: Option<bool>| {
        let r = review(&admission_review(pod, "shop"), &config(), |_| ns).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        (r.verdict, v["response"].clone())
    };
    let (verdict, response) = answer(&pod, None);
    assert_eq!(verdict, Verdict::Skipped(Skip::NotOptedIn { namespace: None }));
    assert_eq!((response["allowed"].clone(), response.get("patch")), (json!(true), None));

    // Opted in (namespace) with a bad override: denied, saying why.
    let mut bad = pod.clone();
    bad["metadata"]["annotations"] = json!({"weft.io/proxy-memory-limit": "lots"});
    let (verdict, response) = answer(&bad, Some(true));
    assert!(matches!(verdict, Verdict::Denied(_)), "{verdict:?}");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("weft.io/proxy-memory-limit") && message.contains("\"lots\""), "{message}");
    // The same pod not opted in is not our business.
    assert_eq!(answer(&bad, None).1["allowed"], true);

    // Not a pod CREATE: allowed, untouched.
    let mut update: Value = serde_json::from_slice(&admission_review(&pod, "shop")).unwrap();
    update["request"]["operation"] = json!("UPDATE");
    let r = review(&serde_json::to_vec(&update).unwrap(), &config(), |_| Some(true)).unwrap();
    assert_eq!(r.verdict, Verdict::Ignored);

    for (body, why) in [
        (&b"{not json"[..], "invalid JSON"),
        (br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#, "admissionReviewVersions"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
    ] {
        let err = review(body, &config(), |_| None).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
}
