//! mesh-control itself: its Deployment, its Service (gRPC for proxies,
//! HTTPS for the API server's admission calls) and, with more than one
//! replica, a PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{labels, meta, Options, IDENTITY_DIR, TRUST_ANCHOR_DIR, WEBHOOK_DIR};
use crate::names;

/// The uid/gid mesh-control runs as: not root, not the proxy's uid (which
/// `weft init` exempts from interception), the distroless "nonroot" user.
pub const CONTROL_UID: i64 = 65532;

const GRPC: &str = "grpc";
const WEBHOOK: &str = "webhook";
const ADMIN: &str = "admin";

/// mesh-control's command line in the cluster, with the admission webhook
/// it serves (its flags as mesh-control defines them; mesh-control's unit
/// test parses these with its own command line).
fn args(options: &Options) -> Vec<String> {
    vec![
        format!("--listen=0.0.0.0:{}", names::CONTROL_GRPC_PORT),
        format!("--admin-listen=0.0.0.0:{}", names::CONTROL_ADMIN_PORT),
        "--backend=kubernetes".to_owned(),
        "--identity-verifier=kubernetes".to_owned(),
        format!("--token-audience={}", names::TOKEN_AUDIENCE),
        format!("--trust-domain={}", options.trust_domain),
        format!("--cluster-domain={}", options.cluster_domain),
        format!("--trust-anchor={TRUST_ANCHOR_DIR}/{}", names::TRUST_ANCHOR_KEY),
        format!("--issuer-cert={IDENTITY_DIR}/tls.crt"),
        format!("--issuer-key={IDENTITY_DIR}/tls.key"),
        format!("--cert-lifetime={}", humantime::format_duration(options.cert_lifetime)),
        format!("--webhook-listen=0.0.0.0:{}", names::WEBHOOK_PORT),
        format!("--webhook-cert={WEBHOOK_DIR}/tls.crt"),
        format!("--webhook-key={WEBHOOK_DIR}/tls.key"),
        format!("--proxy-image={}", options.proxy_image),
        format!("--init-image={}", options.init_image),
        // Injected proxies reach mesh-control at weft-control.<namespace>.svc.
        format!("--namespace={}", options.namespace),
    ]
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ADMIN.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn resources(options: &Options) -> ResourceRequirements {
    let r = &options.resources;
    let map = |cpu: &Option<String>, memory: &Option<String>| {
        let m: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    ResourceRequirements {
        requests: map(&r.cpu_request, &r.memory_request),
        limits: map(&r.cpu_limit, &r.memory_limit),
        ..ResourceRequirements::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.to_owned(), mount_path: path.to_owned(), read_only: Some(true), ..VolumeMount::default() }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            // Owner and group (fsGroup) read only: the issuer key signs every identity.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn selector() -> LabelSelector {
    LabelSelector { match_labels: Some(labels(names::CONTROL)), ..LabelSelector::default() }
}

pub fn deployment(options: &Options) -> Deployment {
    let container = Container {
        name: "mesh-control".to_owned(),
        image: Some(options.control_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args(options)),
        env: Some(vec![EnvVar {
            name: "RUST_LOG".to_owned(),
            value: Some("info".to_owned()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            port(GRPC, names::CONTROL_GRPC_PORT),
            port(WEBHOOK, names::WEBHOOK_PORT),
            port(ADMIN, names::CONTROL_ADMIN_PORT),
        ]),
        // Ready = CA loaded, every watched kind listed once, gRPC bound.
        readiness_probe: Some(probe("/ready", 5, 3)),
        liveness_probe: Some(probe("/live", 10, 3)),
        resources: Some(resources(options)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(CONTROL_UID),
            run_as_group: Some(CONTROL_UID),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("trust-anchor", TRUST_ANCHOR_DIR),
            mount("identity-issuer", IDENTITY_DIR),
            mount("webhook-tls", WEBHOOK_DIR),
        ]),
        ..Container::default()
    };
    let affinity = (options.replicas > 1).then(|| Affinity {
        // Preferred, not required: a one-node cluster (kind's default) still
        // schedules every replica.
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(selector()),
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });
    let pod = PodSpec {
        service_account_name: Some(names::CONTROL.to_owned()),
        containers: vec![container],
        affinity,
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(CONTROL_UID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "trust-anchor".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::TRUST_ANCHOR_CONFIGMAP.to_owned(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            secret_volume("identity-issuer", names::ISSUER_SECRET),
            secret_volume("webhook-tls", names::WEBHOOK_SECRET),
        ]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: meta(names::CONTROL, Some(&options.namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(options.replicas),
            selector: selector(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                // Never fewer ready replicas than asked for during a rollout.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(names::CONTROL)),
                    // Prometheus' stock pod job scrapes mesh-control's admin /metrics.
                    annotations: Some(
                        names::scrape_annotations(names::CONTROL_ADMIN_PORT)
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// gRPC for proxies on 8086; the webhook as 443, the port the API server
/// calls (the registration names the Service, not a port number in the pod).
pub fn service(options: &Options) -> Service {
    let port = |name: &str, port: u16, target: &str, app_protocol: &str| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(target.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some(app_protocol.to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(names::CONTROL, Some(&options.namespace)),
        spec: Some(ServiceSpec {
            selector: Some(labels(names::CONTROL)),
            ports: Some(vec![
                port(GRPC, names::CONTROL_GRPC_PORT, GRPC, "grpc"),
                port("https", 443, WEBHOOK, "https"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// With more than one replica, voluntary disruptions (node drains) take at
/// most one at a time.
pub fn disruption_budget(options: &Options) -> Option<PodDisruptionBudget> {
    (options.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(names::CONTROL, Some(&options.namespace)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
