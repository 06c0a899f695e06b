//! `weft check`: the installed control plane, webhook, CRDs, trust anchor and data plane.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod, Secret},
    discovery::v1::EndpointSlice,
};
use kube::{api::ListParams, Api};

use super::{proxy, trust, Check, Verdict};
use crate::names;

/// Every post-install check, in order; later groups run even when earlier ones fail.
pub(crate) async fn run(client: &kube::Client, ns: &str, expiry_warning: Duration) -> Vec<Check> {
    let mut checks = Vec::new();
    if !super::api_reachable(client, &mut checks).await {
        return checks;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    checks.push(control_plane(client, ns).await);
    checks.extend(webhook(client, ns, now, expiry_warning).await);
    // The CRDs this build of `weft install` renders, so the two cannot drift apart.
    let weft_crds: Vec<String> = crate::crds::all().into_iter().filter_map(|crd| crd.metadata.name).collect();
    let weft_crds: Vec<&str> = weft_crds.iter().map(String::as_str).collect();
    checks.push(
        super::crds_established(
            client,
            "crds",
            "Weft CRDs installed",
            &weft_crds,
            "`weft install | kubectl apply -f -` installs them",
        )
        .await,
    );
    checks.push(super::gateway_api_crds(client).await);
    let (anchor_check, anchor) = trust_anchor(client, ns, now, expiry_warning).await;
    checks.push(anchor_check);
    match proxy::all_pods(client).await {
        Ok(pods) => {
            checks.push(proxy::anchors(&pods, ns, anchor.as_deref()));
            checks.extend(proxy::run(client, &pods, ns, now).await);
        }
        Err(failed) => checks.push(failed),
    }
    checks
}

fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Deployment has all its replicas available, and every pod it selects is Ready.
async fn control_plane(client: &kube::Client, ns: &str) -> Check {
    const GROUP: &str = "control-plane";
    let name = format!("control plane Deployment {ns}/{} ready", names::CONTROL);
    let hint = format!(
        "kubectl -n {ns} describe deployment {control}; kubectl -n {ns} logs deploy/{control}",
        control = names::CONTROL
    );
    let deployment = match Api::<Deployment>::namespaced(client.clone(), ns).get_opt(names::CONTROL).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Check::fail(
                GROUP,
                name,
                format!("no Deployment {} in namespace {ns}", names::CONTROL),
                "install Weft: `weft install | kubectl apply -f -` (or pass --namespace if it lives elsewhere)",
            )
        }
        Err(e) => return Check::api_error(GROUP, name, "the control plane Deployment", &e),
    };
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);

    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let pods = match Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(e) => return Check::api_error(GROUP, name, "the control plane's pods", &e),
    };
    let pods: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let unready: Vec<&str> =
        pods.iter().filter(|p| !is_pod_ready(p)).map(|p| p.metadata.name.as_deref().unwrap_or("?")).collect();

    let mut problems = Vec::new();
    if available < desired {
        problems.push(format!("{available} of {desired} replicas available"));
    }
    if updated < desired {
        problems.push(format!("{updated} of {desired} replicas updated (a rollout is in progress or stuck)"));
    }
    if !unready.is_empty() {
        problems.push(format!("pods not ready: {}", unready.join(", ")));
    }
    if pods.is_empty() && desired > 0 {
        problems.push(format!("no pods match the Deployment's selector {selector}"));
    }
    if problems.is_empty() {
        Check::pass(GROUP, name, format!("{available}/{desired} replicas available, {} pods ready", pods.len()))
    } else {
        Check::fail(GROUP, name, format!("not ready: {}", problems.join("; ")), hint)
    }
}

/// Registered (pointing at the control plane's Service and path), with a caBundle, and reachable.
async fn webhook(client: &kube::Client, ns: &str, now: i64, expiry_warning: Duration) -> Vec<Check> {
    const GROUP: &str = "webhook";
    let registered = format!("injector webhook {} registered", names::INJECTOR);
    let ca_bundle = format!("injector webhook {} has a caBundle", names::INJECTOR);
    let reachable = format!("injector webhook reachable (Service {ns}/{})", names::CONTROL);
    let config = match Api::<MutatingWebhookConfiguration>::all(client.clone()).get_opt(names::INJECTOR).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            let missing = Check::fail(
                GROUP,
                registered,
                format!("no MutatingWebhookConfiguration {}", names::INJECTOR),
                "`weft install | kubectl apply -f -` registers it",
            );
            return vec![missing, reachable_check(client, ns, &reachable).await];
        }
        Err(e) => return vec![Check::api_error(GROUP, registered, "mutatingwebhookconfigurations", &e)],
    };
    let hooks = config.webhooks.unwrap_or_default();

    let mut wrong = Vec::new();
    if hooks.is_empty() {
        wrong.push("it has no webhooks".to_owned());
    }
    for hook in &hooks {
        match &hook.client_config.service {
            None => wrong.push(format!("{} calls a URL, not Service {ns}/{}", hook.name, names::CONTROL)),
            Some(s) => {
                let port = s.port.unwrap_or(443);
                let path = s.path.as_deref().unwrap_or("/");
                if s.namespace != ns || s.name != names::CONTROL || path != names::WEBHOOK_PATH || port != 443 {
                    wrong.push(format!(
                        "{} calls {}/{}:{port}{path}, expected {ns}/{}:443{}",
                        hook.name,
                        s.namespace,
                        s.name,
                        names::CONTROL,
                        names::WEBHOOK_PATH
                    ));
                }
            }
        }
    }
    let registered_check = if wrong.is_empty() {
        Check::pass(GROUP, registered, format!("{} webhook(s) calling {ns}/{}:443{}", hooks.len(), names::CONTROL, names::WEBHOOK_PATH))
    } else {
        Check::fail(GROUP, registered, wrong.join("; "), "re-apply `weft install` with this --namespace")
    };

    let mut bad_bundle = Vec::new();
    for hook in &hooks {
        match hook.client_config.ca_bundle.as_ref().filter(|b| !b.0.is_empty()) {
            None => bad_bundle.push(format!("{}: no caBundle", hook.name)),
            Some(bundle) => {
                if let Err(e) = trust::parse_bundle(&bundle.0, now) {
                    bad_bundle.push(format!("{}: caBundle unusable: {e}", hook.name));
                }
            }
        }
    }
    let bundle_check = if bad_bundle.is_empty() {
        Check::pass(GROUP, ca_bundle, "a PEM CA certificate the API server verifies the webhook with")
    } else {
        Check::fail(
            GROUP,
            ca_bundle,
            bad_bundle.join("; "),
            format!(
                "the API server cannot call the webhook over TLS without it: re-apply `weft install` (it sets the caBundle to \
                 the CA of Secret {ns}/{})",
                names::WEBHOOK_SECRET
            ),
        )
    };
    let mut checks = vec![registered_check, bundle_check];
    // Without a caBundle (failed above) there is nothing to check the certificate against.
    if let Some(bundle) = hooks.iter().find_map(|h| h.client_config.ca_bundle.as_ref().filter(|b| !b.0.is_empty())) {
        checks.push(serving_certificate(client, ns, &bundle.0, now, expiry_warning).await);
    }
    checks.push(reachable_check(client, ns, &reachable).await);
    checks
}

/// The certificate mesh-control serves the webhook with (Secret
/// `weft-webhook-tls`) is one the API server accepts: signed by the
/// caBundle, naming the Service, not expired.
async fn serving_certificate(client: &kube::Client, ns: &str, bundle: &[u8], now: i64, warning: Duration) -> Check {
    const GROUP: &str = "webhook";
    let name = format!("injector webhook certificate (Secret {ns}/{}) matches its caBundle", names::WEBHOOK_SECRET);
    let reissue = format!(
        "re-render and apply `weft install` (it issues the webhook certificate and the caBundle together); mesh-control \
         re-reads a renewed Secret {} by itself",
        names::WEBHOOK_SECRET
    );
    let secret = match Api::<Secret>::namespaced(client.clone(), ns).get_opt(names::WEBHOOK_SECRET).await {
        Ok(Some(s)) => s,
        Ok(None) => return Check::fail(GROUP, name, format!("no Secret {} in namespace {ns}", names::WEBHOOK_SECRET), reissue),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Check::warn(
                GROUP,
                name,
                "not checked: your user may not read Secrets in the control plane's namespace",
                "run weft check as a cluster admin to check the webhook's certificate",
            )
        }
        Err(e) => return Check::api_error(GROUP, name, "the webhook's Secret", &e),
    };
    let Some(chain) = secret.data.as_ref().and_then(|d| d.get("tls.crt")) else {
        return Check::fail(GROUP, name, "the Secret has no tls.crt", reissue);
    };
    let dns_name = format!("{}.{ns}.svc", names::CONTROL);
    let (verdict, detail, _) = trust::serving_verdict(&chain.0, bundle, &dns_name, now, warning);
    match verdict {
        Verdict::Pass => Check::pass(GROUP, name, detail),
        Verdict::Warn => Check::warn(GROUP, name, detail, reissue),
        Verdict::Fail => Check::fail(GROUP, name, detail, reissue),
    }
}

/// The webhook's Service has ready endpoints, and (when the user may) a
/// request through the API server's service proxy gets an answer from it.
async fn reachable_check(client: &kube::Client, ns: &str, name: &str) -> Check {
    const GROUP: &str = "webhook";
    let hint = format!(
        "the API server calls Service {ns}/{control} port 443 -> {}: check `kubectl -n {ns} get endpointslices -l \
         kubernetes.io/service-name={control}` and the control plane's pods",
        names::WEBHOOK_PORT,
        control = names::CONTROL
    );
    let selector = format!("kubernetes.io/service-name={}", names::CONTROL);
    let slices = match Api::<EndpointSlice>::namespaced(client.clone(), ns).list(&ListParams::default().labels(&selector)).await
    {
        Ok(list) => list.items,
        Err(e) => return Check::api_error(GROUP, name, "endpointslices", &e),
    };
    let ready = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count();
    if ready == 0 {
        return Check::fail(GROUP, name, format!("Service {ns}/{} has no ready endpoints", names::CONTROL), hint);
    }

    let path = format!("/api/v1/namespaces/{ns}/services/https:{}:443/proxy{}", names::CONTROL, names::WEBHOOK_PATH);
    match service_proxy(client, &path).await {
        Probe::Answered(status) => Check::pass(
            GROUP,
            name,
            format!("{ready} ready endpoint(s); the webhook answered HTTP {status} through the API server's service proxy"),
        ),
        Probe::Forbidden => Check::pass(
            GROUP,
            name,
            format!("{ready} ready endpoint(s) (not probed: no permission for services/proxy)"),
        ),
        Probe::Unreachable(why) => Check::fail(
            GROUP,
            name,
            format!("{ready} ready endpoint(s), but the API server cannot reach the webhook: {why}"),
            hint,
        ),
    }
}

enum Probe {
    /// The webhook's own answer (any status: a GET is not an AdmissionReview).
    Answered(u16),
    Forbidden,
    Unreachable(String),
}

/// A GET through the service proxy. An error status with a Kubernetes
/// `Status` body comes from the API server itself (it could not connect);
/// anything else is the webhook's answer.
async fn service_proxy(client: &kube::Client, path: &str) -> Probe {
    let request = match http::Request::get(path).body(kube::client::Body::empty()) {
        Ok(r) => r,
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let response = match client.send(request).await {
        Ok(r) => r,
        Err(e) => return Probe::Unreachable(format!("GET {path}: {e}")),
    };
    let status = response.status();
    let body = response.into_body().collect_bytes().await.unwrap_or_default();
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
    let from_api_server = serde_json::from_slice::<Status>(&body).ok().filter(|s| s.status.as_deref() == Some("Failure"));
    match from_api_server {
        Some(_) if status == http::StatusCode::FORBIDDEN => Probe::Forbidden,
        Some(s) if status.is_server_error() => Probe::Unreachable(format!("HTTP {status}: {}", s.message.unwrap_or_default())),
        _ => Probe::Answered(status.as_u16()),
    }
}

/// The trust anchor ConfigMap holds a CA certificate that is valid and not
/// near expiry. Also returns its PEM, which every meshed proxy must carry.
async fn trust_anchor(client: &kube::Client, ns: &str, now: i64, warning: Duration) -> (Check, Option<String>) {
    let pem = match trust_anchor_pem(client, ns).await {
        Ok(pem) => pem,
        Err(failed) => return (failed, None),
    };
    let name = format!("trust anchor {ns}/{} valid and not near expiry", names::TRUST_ANCHOR_CONFIGMAP);
    let (verdict, detail, hint) = trust::anchor_verdict(pem.as_bytes(), now, warning);
    (Check { group: "identity", name, verdict, detail, hint }, Some(pem))
}

async fn trust_anchor_pem(client: &kube::Client, ns: &str) -> Result<String, Check> {
    const GROUP: &str = "identity";
    let name = format!("trust anchor {ns}/{} valid and not near expiry", names::TRUST_ANCHOR_CONFIGMAP);
    let cm = match Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(names::TRUST_ANCHOR_CONFIGMAP).await {
        Ok(Some(cm)) => cm,
        Ok(None) => {
            return Err(Check::fail(
                GROUP,
                name,
                format!("no ConfigMap {} in namespace {ns}", names::TRUST_ANCHOR_CONFIGMAP),
                "`weft install | kubectl apply -f -` creates it",
            ))
        }
        Err(e) => return Err(Check::api_error(GROUP, name, "the trust anchor ConfigMap", &e)),
    };
    cm.data.and_then(|mut d| d.remove(names::TRUST_ANCHOR_KEY)).ok_or_else(|| {
        Check::fail(GROUP, name, format!("the ConfigMap has no key {}", names::TRUST_ANCHOR_KEY), "re-create it with `weft install`")
    })
}

