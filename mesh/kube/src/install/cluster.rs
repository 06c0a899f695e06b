//! The objects around mesh-control: its namespace, identity and RBAC, the
//! certificates it mounts, and the webhook registration the API server reads.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::ByteString;

use super::{meta, Options};
use crate::names;

/// The label every namespace carries with its own name (Kubernetes >= 1.22).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub fn namespace(options: &Options) -> Namespace {
    let mut metadata = meta(&options.namespace, None);
    // mesh-control meets the "restricted" Pod Security Standard; say so, so a
    // change that breaks it is refused by the API server, not shipped.
    metadata.labels.get_or_insert_with(BTreeMap::new).extend([
        ("pod-security.kubernetes.io/enforce".to_owned(), "restricted".to_owned()),
        ("pod-security.kubernetes.io/enforce-version".to_owned(), "latest".to_owned()),
    ]);
    Namespace { metadata, ..Namespace::default() }
}

pub fn service_account(options: &Options) -> ServiceAccount {
    ServiceAccount { metadata: meta(names::CONTROL, Some(&options.namespace)), ..ServiceAccount::default() }
}

/// Read access to what mesh-control's Kubernetes backend watches
/// (mesh-control's discovery/kubernetes.rs: one watcher per kind) and
/// nothing else; TokenReview comes from `system:auth-delegator`.
pub fn cluster_role() -> ClusterRole {
    let read = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: ["get", "list", "watch"].map(str::to_owned).to_vec(),
        ..PolicyRule::default()
    };
    ClusterRole {
        metadata: meta(names::CONTROL, None),
        rules: Some(vec![
            read("", &["namespaces", "services", "pods"]),
            read("discovery.k8s.io", &["endpointslices"]),
            read("gateway.networking.k8s.io", &["httproutes", "grpcroutes"]),
            read("policy.weft.io", &["authorizationpolicies"]),
        ]),
        ..ClusterRole::default()
    }
}

fn control_subject(options: &Options) -> Subject {
    Subject {
        kind: "ServiceAccount".to_owned(),
        name: names::CONTROL.to_owned(),
        namespace: Some(options.namespace.clone()),
        ..Subject::default()
    }
}

fn binding(name: &str, role: &str, options: &Options) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: role.to_owned(),
        },
        subjects: Some(vec![control_subject(options)]),
    }
}

pub fn cluster_role_binding(options: &Options) -> ClusterRoleBinding {
    binding(names::CONTROL, names::CONTROL, options)
}

/// `system:auth-delegator` grants `create` on TokenReviews, which
/// `--identity-verifier kubernetes` posts for every Certify.
pub fn auth_delegator_binding(options: &Options) -> ClusterRoleBinding {
    binding(names::AUTH_DELEGATOR_BINDING, "system:auth-delegator", options)
}

/// Public: every proxy mounts it to verify its peers and mesh-control.
pub fn trust_anchor(options: &Options) -> ConfigMap {
    ConfigMap {
        metadata: meta(names::TRUST_ANCHOR_CONFIGMAP, Some(&options.namespace)),
        data: Some(BTreeMap::from([(names::TRUST_ANCHOR_KEY.to_owned(), options.identity.trust_anchor_pem.clone())])),
        ..ConfigMap::default()
    }
}

fn tls_secret(name: &str, options: &Options, cert_pem: &str, key_pem: &str) -> Secret {
    Secret {
        metadata: meta(name, Some(&options.namespace)),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(cert_pem.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key_pem.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}

pub fn issuer_secret(options: &Options) -> Secret {
    let issuer = &options.identity.issuer;
    tls_secret(names::ISSUER_SECRET, options, &issuer.cert_pem, &issuer.key_pem)
}

pub fn webhook_secret(options: &Options) -> Secret {
    let serving = &options.webhook.serving;
    tls_secret(names::WEBHOOK_SECRET, options, &serving.cert_pem, &serving.key_pem)
}

/// Every pod CREATE outside kube-system and the control plane's namespace
/// goes to the webhook, which decides (opt-in by the namespace's or pod's
/// `weft.io/inject: enabled` annotation; annotations cannot be selected on
/// here, labels only). The control plane's own namespace is excluded so it
/// can always start, even with failurePolicy Fail.
pub fn webhook_configuration(options: &Options) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(names::INJECTOR, None),
        webhooks: Some(vec![MutatingWebhook {
            name: format!("{}.weft.io", names::INJECTOR),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(options.webhook.ca_pem.as_bytes().to_vec())),
                service: Some(ServiceReference {
                    name: names::CONTROL.to_owned(),
                    namespace: options.namespace.clone(),
                    path: Some(names::WEBHOOK_PATH.to_owned()),
                    port: Some(443),
                }),
                url: None,
            },
            failure_policy: Some(options.webhook_failure_policy.as_str().to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: NAMESPACE_NAME_LABEL.to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(vec!["kube-system".to_owned(), options.namespace.clone()]),
                }]),
                match_labels: None,
            }),
            reinvocation_policy: Some("Never".to_owned()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(options.webhook_timeout_seconds),
            ..MutatingWebhook::default()
        }]),
    }
}
