//! The objects injection adds: the proxy container, the `weft init` init
//! container and their volumes. Built from k8s-openapi types so what is
//! added is what the API server's schema accepts.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::overrides::{Overrides, Resources};
use super::Config;
use crate::names;

/// The projected ServiceAccount token (audience `weft`) the proxy proves its identity with.
pub const TOKEN_VOLUME: &str = "weft-identity-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/weft.io/serviceaccount";
const TOKEN_FILE: &str = "token";
/// Kubelet refreshes a projected token at 80 % of this; the API server may
/// shorten it (--service-account-max-token-expiration).
const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;
/// iptables takes its lock in /run (xtables.lock); the init container's
/// root filesystem is read-only, so /run is a scratch directory.
pub const INIT_RUN_VOLUME: &str = "weft-init-run";
/// The proxy's container port names (at most 15 characters, IANA service names).
pub const INBOUND_PORT_NAME: &str = "weft-proxy";
pub const ADMIN_PORT_NAME: &str = "weft-admin";
/// Filled from the downward API at runtime, so an offline-injected template
/// (which may not know its namespace) gets the pod's real identity.
const POD_NAMESPACE_ENV: &str = "WEFT_POD_NAMESPACE";
const POD_SERVICE_ACCOUNT_ENV: &str = "WEFT_POD_SERVICE_ACCOUNT";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.to_owned(), api_version: None }),
            ..EnvVarSource::default()
        }),
    }
}

fn http_probe(path: &str, initial_delay_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(names::PROXY_ADMIN_PORT)),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay_seconds),
        period_seconds: Some(10),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn resources(r: &Resources) -> ResourceRequirements {
    let pairs = |cpu: &Option<String>, memory: &Option<String>| {
        let map: std::collections::BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: pairs(&r.cpu_request, &r.memory_request),
        limits: pairs(&r.cpu_limit, &r.memory_limit),
        ..ResourceRequirements::default()
    }
}

/// The proxy: transparent, its listeners where `weft init` redirects, its
/// identity from the pod's namespace and ServiceAccount, mesh-control for
/// identity, destinations and policy.
pub fn proxy(config: &Config, overrides: &Overrides) -> Container {
    let identity = format!(
        "spiffe://{}/ns/$({POD_NAMESPACE_ENV})/sa/$({POD_SERVICE_ACCOUNT_ENV})",
        config.trust_domain
    );
    let control = config.control_address();
    let mut vars = vec![
        field_env(POD_NAMESPACE_ENV, "metadata.namespace"),
        field_env(POD_SERVICE_ACCOUNT_ENV, "spec.serviceAccountName"),
        env("WEFT_PROXY_TRANSPARENT", "true"),
        env("WEFT_PROXY_INBOUND_LISTEN", format!("0.0.0.0:{}", names::PROXY_INBOUND_PORT)),
        env("WEFT_PROXY_OUTBOUND_LISTEN", format!("127.0.0.1:{}", names::PROXY_OUTBOUND_PORT)),
        // The kubelet probes it on the pod's IP (weft init skips this port).
        env("WEFT_PROXY_ADMIN_LISTEN", format!("0.0.0.0:{}", names::PROXY_ADMIN_PORT)),
        env("WEFT_PROXY_IDENTITY", identity),
        env("WEFT_PROXY_CONTROL", control.clone()),
        env("WEFT_PROXY_CONTROL_IDENTITY", config.control_identity.clone()),
        env("WEFT_PROXY_DESTINATION", control.clone()),
        env("WEFT_PROXY_POLICY", control),
        env("WEFT_PROXY_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_FILE}")),
        // Inline, as Linkerd does: a pod can mount only ConfigMaps of its own
        // namespace, and the anchor is public. Rotating it means re-rolling
        // the workloads (`weft check` names the proxies still on the old one).
        env(names::PROXY_TRUST_ANCHOR_ENV, config.trust_anchor_pem.clone()),
    ];
    if let Some(ports) = &overrides.opaque_ports {
        // Added to the proxy's defaults: a pod naming its own server-first
        // port should not lose MySQL's or Redis's as a client.
        let ports = match ports.0.is_empty() {
            true => names::PROXY_DEFAULT_OPAQUE_PORTS.to_owned(),
            false => format!("{},{ports}", names::PROXY_DEFAULT_OPAQUE_PORTS),
        };
        vars.push(env("WEFT_PROXY_OPAQUE_PORTS", ports));
    }
    Container {
        name: names::PROXY_CONTAINER.to_owned(),
        image: Some(config.proxy_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        env: Some(vars),
        ports: Some(vec![
            ContainerPort {
                name: Some(INBOUND_PORT_NAME.to_owned()),
                container_port: i32::from(names::PROXY_INBOUND_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(ADMIN_PORT_NAME.to_owned()),
                container_port: i32::from(names::PROXY_ADMIN_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/ready", 2)),
        liveness_probe: Some(http_probe("/live", 10)),
        resources: Some(resources(&overrides.resources)),
        security_context: Some(SecurityContext {
            run_as_user: Some(names::PROXY_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.to_owned(),
            mount_path: TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// `weft init` with the proxy's ports and uid: root with NET_ADMIN and
/// NET_RAW for iptables, nothing else.
pub fn init(config: &Config, overrides: &Overrides) -> Container {
    // The admin port always reaches the proxy directly (kubelet probes);
    // the pod's own skips come after it.
    let mut skip_inbound = names::PROXY_ADMIN_PORT.to_string();
    if let Some(ports) = overrides.skip_inbound_ports.as_ref().filter(|p| !p.0.is_empty()) {
        skip_inbound = format!("{skip_inbound},{ports}");
    }
    let mut args = vec![
        "init".to_owned(),
        "--outbound-port".to_owned(),
        names::PROXY_OUTBOUND_PORT.to_string(),
        "--inbound-port".to_owned(),
        names::PROXY_INBOUND_PORT.to_string(),
        "--proxy-uid".to_owned(),
        names::PROXY_UID.to_string(),
        "--skip-inbound-ports".to_owned(),
        skip_inbound,
    ];
    if let Some(ports) = overrides.skip_outbound_ports.as_ref().filter(|p| !p.0.is_empty()) {
        args.extend(["--skip-outbound-ports".to_owned(), ports.to_string()]);
    }
    if let Some(cidrs) = overrides.skip_outbound_cidrs.as_ref().filter(|c| !c.0.is_empty()) {
        args.extend(["--skip-outbound-cidrs".to_owned(), cidrs.to_string()]);
    }
    Container {
        name: names::INIT_CONTAINER.to_owned(),
        image: Some(config.init_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec!["weft".to_owned()]),
        args: Some(args),
        resources: Some(resources(&Resources {
            cpu_request: Some("10m".to_owned()),
            memory_request: Some("16Mi".to_owned()),
            cpu_limit: Some("100m".to_owned()),
            memory_limit: Some("64Mi".to_owned()),
        })),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: INIT_RUN_VOLUME.to_owned(),
            mount_path: "/run".to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The volumes both containers mount.
pub fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(names::TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: TOKEN_FILE.to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                default_mode: None,
            }),
            ..Volume::default()
        },
        Volume { name: INIT_RUN_VOLUME.to_owned(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ]
}
