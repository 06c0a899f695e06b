//! `weft check --pre`: can `weft install` succeed on this cluster?

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    rbac::v1::ClusterRole,
};
use kube::{api::PostParams, Api};

use super::Check;
use crate::names;

/// (group, plural, namespaced): every kind of object `weft install` creates.
const CREATES: &[(&str, &str, bool)] = &[
    ("", "namespaces", false),
    ("rbac.authorization.k8s.io", "clusterroles", false),
    ("rbac.authorization.k8s.io", "clusterrolebindings", false),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", false),
    ("apiextensions.k8s.io", "customresourcedefinitions", false),
    ("", "serviceaccounts", true),
    ("", "services", true),
    ("", "configmaps", true),
    ("", "secrets", true),
    ("apps", "deployments", true),
];

pub(crate) async fn run(client: &kube::Client, ns: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    if !super::api_reachable(client, &mut checks).await {
        return checks;
    }
    checks.extend(permissions(client, ns).await);
    checks.push(no_existing_install(client, ns).await);
    checks.push(super::gateway_api_crds(client).await);
    checks
}

/// One SelfSubjectAccessReview per kind: cluster-scoped kinds one line each
/// (each needs its own grant), namespaced ones together.
async fn permissions(client: &kube::Client, ns: &str) -> Vec<Check> {
    const GROUP: &str = "permissions";
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let mut checks = Vec::new();
    let mut namespaced_denied = Vec::new();
    let mut namespaced_errors = Vec::new();
    for &(group, resource, namespaced) in CREATES {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    verb: Some("create".to_owned()),
                    namespace: namespaced.then(|| ns.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let qualified = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
        let answer = api.create(&PostParams::default(), &review).await;
        if namespaced {
            match answer {
                Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
                Ok(_) => namespaced_denied.push(qualified),
                Err(e) => namespaced_errors.push(format!("{qualified}: {e}")),
            }
            continue;
        }
        let name = format!("can create {qualified}");
        checks.push(match answer {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Check::pass(GROUP, name, "allowed"),
            Ok(r) => Check::fail(
                GROUP,
                name,
                format!("denied{}", r.status.and_then(|s| s.reason).map(|r| format!(": {r}")).unwrap_or_default()),
                "weft install creates cluster-wide objects: run it as a cluster admin",
            ),
            Err(e) => Check::api_error(GROUP, name, "selfsubjectaccessreviews", &e),
        });
    }
    let name = format!("can create the control plane's objects in namespace {ns}");
    checks.push(if !namespaced_errors.is_empty() {
        Check::fail(GROUP, name, namespaced_errors.join("; "), "is the API server reachable? `kubectl auth can-i --list`")
    } else if !namespaced_denied.is_empty() {
        Check::fail(
            GROUP,
            name,
            format!("denied: {}", namespaced_denied.join(", ")),
            format!("grant your user create in {ns} (or run as a cluster admin)"),
        )
    } else {
        Check::pass(GROUP, name, "serviceaccounts, services, configmaps, secrets, deployments allowed")
    });
    checks
}

/// No Weft control plane, cluster role or webhook is there already: install
/// would overwrite it. `weft check` (without --pre) is for a cluster that has one.
async fn no_existing_install(client: &kube::Client, ns: &str) -> Check {
    const GROUP: &str = "install";
    let name = "no Weft install present";
    let mut found = Vec::new();
    match Api::<MutatingWebhookConfiguration>::all(client.clone()).get_opt(names::INJECTOR).await {
        Ok(Some(_)) => found.push(format!("MutatingWebhookConfiguration {}", names::INJECTOR)),
        Ok(None) => {}
        Err(e) => return Check::api_error(GROUP, name, "mutatingwebhookconfigurations", &e),
    }
    match Api::<ClusterRole>::all(client.clone()).get_opt(names::CONTROL).await {
        Ok(Some(_)) => found.push(format!("ClusterRole {}", names::CONTROL)),
        Ok(None) => {}
        Err(e) => return Check::api_error(GROUP, name, "clusterroles", &e),
    }
    match Api::<Deployment>::namespaced(client.clone(), ns).get_opt(names::CONTROL).await {
        Ok(Some(_)) => found.push(format!("Deployment {ns}/{}", names::CONTROL)),
        Ok(None) => {}
        Err(e) => return Check::api_error(GROUP, name, "deployments", &e),
    }
    if found.is_empty() {
        Check::pass(GROUP, name, format!("no {} webhook, cluster role or control plane in {ns}", names::INJECTOR))
    } else {
        Check::fail(
            GROUP,
            name,
            format!("found {}", found.join(", ")),
            "Weft is already installed: run `weft check` for its health, or `weft uninstall | kubectl delete -f -` first",
        )
    }
}
