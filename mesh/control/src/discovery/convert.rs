//! Kubernetes core objects (k8s-openapi types) -> index model, with Weft's
//! annotations parsed. Both backends use these, so a manifest and a live
//! cluster produce the same index.
//!
//! Annotations read here:
//! - Namespace `weft.io/default-inbound-policy`: allow | all-unauthenticated |
//!   all-authenticated | deny; `weft.io/inject`: enabled | disabled.
//! - Pod `weft.io/inject`: enabled | disabled. A pod is meshed when it runs a
//!   `weft-proxy` container (the injector's), or when its annotation (else its
//!   namespace's) says `enabled`. Pod `config.weft.io/opaque-ports`:
//!   "3306,5000-5010" (its container ports, i.e. the Services' target ports).
//! - Service `config.weft.io/opaque-ports`: "3306,5000-5010" (Service ports);
//!   `balancer.weft.io/failure-accrual`: consecutive | disabled, with
//!   `...-consecutive-max-failures`, `...-consecutive-min-penalty`,
//!   `...-consecutive-max-penalty` (Gateway API durations: 1s, 500ms, 1m),
//!   `...-consecutive-jitter-ratio` (0.0..=1.0).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_index::model::{
    self, DefaultPolicy, EndpointSlice, FailureAccrual, ObjectKey, Protocol, Resource, ServicePort, SliceEndpoint,
    SlicePort,
};

/// The container the injector adds; its presence means "meshed".
pub const PROXY_CONTAINER: &str = mesh_kube::names::PROXY_CONTAINER;
pub const INJECT: &str = mesh_kube::names::INJECT_ANNOTATION;
pub const DEFAULT_INBOUND_POLICY: &str = "weft.io/default-inbound-policy";
pub const OPAQUE_PORTS: &str = mesh_kube::names::OPAQUE_PORTS_ANNOTATION;
const ACCRUAL: &str = "balancer.weft.io/failure-accrual";

/// An object that cannot be turned into index entries; every problem listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object}: {}", .problems.join("; "))]
pub struct ConvertError {
    pub kind: &'static str,
    pub object: String,
    pub problems: Vec<String>,
}

/// Collects problems while converting one object.
pub(crate) struct Problems {
    kind: &'static str,
    object: String,
    list: Vec<String>,
}

impl Problems {
    pub fn new(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self { kind, object: key(meta).to_string(), list: Vec::new() }
    }

    pub fn push(&mut self, problem: impl Into<String>) {
        self.list.push(problem.into());
    }

    /// `Ok(value)` when nothing was wrong.
    pub fn finish<T>(self, value: T) -> Result<T, ConvertError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConvertError { kind: self.kind, object: self.object, problems: self.list })
        }
    }
}

/// namespace/name; a namespaced object without a namespace is in "default",
/// as `kubectl apply` would put it.
pub fn key(meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(meta.namespace.as_deref().unwrap_or("default"), meta.name.as_deref().unwrap_or(""))
}

pub(crate) fn annotation<'m>(meta: &'m ObjectMeta, name: &str) -> Option<&'m str> {
    meta.annotations.as_ref()?.get(name).map(|s| s.trim())
}

fn require_name(meta: &ObjectMeta, problems: &mut Problems) {
    if meta.name.as_deref().unwrap_or("").is_empty() {
        problems.push("metadata.name is required");
    }
}

fn inject(value: Option<&str>, field: &str, problems: &mut Problems) -> Option<bool> {
    match value? {
        "enabled" => Some(true),
        "disabled" => Some(false),
        other => {
            problems.push(format!("annotation {field}: {other:?} is not enabled or disabled"));
            None
        }
    }
}

pub fn namespace(ns: &core::Namespace) -> Result<Resource, ConvertError> {
    let meta = &ns.metadata;
    let mut problems = Problems::new("Namespace", meta);
    require_name(meta, &mut problems);
    let default_inbound_policy = annotation(meta, DEFAULT_INBOUND_POLICY).and_then(|v| {
        v.parse::<DefaultPolicy>().map_err(|e| problems.push(format!("annotation {DEFAULT_INBOUND_POLICY}: {e}"))).ok()
    });
    let inject = inject(annotation(meta, INJECT), INJECT, &mut problems);
    let ns = model::Namespace {
        key: ObjectKey::new("", meta.name.clone().unwrap_or_default()),
        default_inbound_policy,
        inject,
    };
    problems.finish(Resource::Namespace(ns))
}

pub fn pod(pod: &core::Pod) -> Result<Resource, ConvertError> {
    let meta = &pod.metadata;
    let mut problems = Problems::new("Pod", meta);
    require_name(meta, &mut problems);
    let spec = pod.spec.as_ref();
    #[allow(deprecated)] // `serviceAccount` is what old manifests still carry
    let service_account = spec
        .and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
        .unwrap_or_else(|| "default".to_owned());
    let has_proxy = spec.is_some_and(|s| s.containers.iter().any(|c| c.name == PROXY_CONTAINER));
    let status = pod.status.as_ref();
    let mut ips = Vec::new();
    let listed = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.as_str());
    for ip in listed.chain(status.and_then(|s| s.pod_ip.as_deref())) {
        match ip.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => problems.push(format!("status.podIPs: {ip:?} is not an IP address")),
        }
    }
    let inject = inject(annotation(meta, INJECT), INJECT, &mut problems);
    let opaque_ports = annotation(meta, OPAQUE_PORTS).map(|v| port_ranges(v, &mut problems)).unwrap_or_default();
    problems.finish(Resource::Pod(model::Pod { key: key(meta), service_account, inject, has_proxy, ips, opaque_ports }))
}

pub fn service(svc: &core::Service) -> Result<Resource, ConvertError> {
    let meta = &svc.metadata;
    let mut problems = Problems::new("Service", meta);
    require_name(meta, &mut problems);
    let spec = svc.spec.clone().unwrap_or_default();
    let mut cluster_ips = Vec::new();
    for ip in spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()) {
        if ip == "None" || ip.is_empty() {
            continue; // headless
        }
        match ip.parse::<IpAddr>() {
            Ok(ip) if !cluster_ips.contains(&ip) => cluster_ips.push(ip),
            Ok(_) => {}
            Err(_) => problems.push(format!("spec.clusterIPs: {ip:?} is not an IP address")),
        }
    }
    let opaque = annotation(meta, OPAQUE_PORTS).map(|v| port_ranges(v, &mut problems)).unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let Ok(port) = u16::try_from(p.port).map_err(|_| ()).and_then(|n| if n == 0 { Err(()) } else { Ok(n) }) else {
            problems.push(format!("spec.ports[{i}].port: {} is not in 1..=65535", p.port));
            continue;
        };
        let protocol = if opaque.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port)) {
            Protocol::Opaque
        } else {
            app_protocol(p.app_protocol.as_deref())
        };
        ports.push(ServicePort { name: p.name.clone().unwrap_or_default(), port, protocol });
    }
    let failure_accrual = failure_accrual(meta, &mut problems);
    problems.finish(Resource::Service(model::Service { key: key(meta), cluster_ips, ports, failure_accrual }))
}

/// appProtocol -> how proxies treat the port.
pub fn app_protocol(app_protocol: Option<&str>) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "http/1.1" | "kubernetes.io/http") => Protocol::Http1,
        Some("kubernetes.io/h2c" | "h2c" | "http2") => Protocol::Http2,
        Some("grpc") => Protocol::Grpc,
        Some("weft.io/opaque" | "tcp" | "opaque") => Protocol::Opaque,
        _ => Protocol::Detect,
    }
}

/// "3306,5000-5010" -> inclusive ranges.
fn port_ranges(value: &str, problems: &mut Problems) -> Vec<(u16, u16)> {
    let mut ranges = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = match part.split_once('-') {
            Some((lo, hi)) => lo.trim().parse::<u16>().ok().zip(hi.trim().parse::<u16>().ok()),
            None => part.parse::<u16>().ok().map(|p| (p, p)),
        };
        match parsed {
            Some((lo, hi)) if lo >= 1 && lo <= hi => ranges.push((lo, hi)),
            _ => problems
                .push(format!("annotation {OPAQUE_PORTS}: {part:?} is not a port or a range lo-hi in 1..=65535")),
        }
    }
    ranges
}

fn failure_accrual(meta: &ObjectMeta, problems: &mut Problems) -> FailureAccrual {
    let mut accrual = FailureAccrual::default();
    match annotation(meta, ACCRUAL) {
        None | Some("consecutive") => {}
        Some("disabled") => {
            accrual.consecutive_failures = 0;
            return accrual;
        }
        Some(other) => problems.push(format!("annotation {ACCRUAL}: {other:?} is not consecutive or disabled")),
    }
    let name = |suffix: &str| format!("{ACCRUAL}-consecutive-{suffix}");
    if let Some(v) = annotation(meta, &name("max-failures")) {
        match v.parse::<u32>() {
            Ok(n) if n > 0 => accrual.consecutive_failures = n,
            _ => problems.push(format!("annotation {}: {v:?} is not a positive integer", name("max-failures"))),
        }
    }
    for (suffix, slot) in [("min-penalty", &mut accrual.min_backoff_ms), ("max-penalty", &mut accrual.max_backoff_ms)] {
        if let Some(v) = annotation(meta, &name(suffix)) {
            match parse_duration_ms(v) {
                Ok(ms) => *slot = ms,
                Err(e) => problems.push(format!("annotation {}: {e}", name(suffix))),
            }
        }
    }
    if let Some(v) = annotation(meta, &name("jitter-ratio")) {
        match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => accrual.jitter_ratio = r,
            _ => problems.push(format!("annotation {}: {v:?} is not a number in 0.0..=1.0", name("jitter-ratio"))),
        }
    }
    if accrual.min_backoff_ms > accrual.max_backoff_ms {
        problems.push(format!(
            "annotations {}/{}: the minimum penalty ({} ms) exceeds the maximum ({} ms)",
            name("min-penalty"),
            name("max-penalty"),
            accrual.min_backoff_ms,
            accrual.max_backoff_ms
        ));
    }
    accrual
}

/// Gateway API duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`, e.g. "1h30m",
/// "500ms", "0s") in milliseconds.
pub fn parse_duration_ms(value: &str) -> Result<u64, String> {
    let bad = || format!("{value:?} is not a duration like 10s, 500ms, 1m30s");
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += n * unit_ms;
        parts += 1;
        if parts > 4 {
            return Err(bad());
        }
    }
    Ok(total)
}

pub fn endpoint_slice(slice: &discovery::EndpointSlice) -> Result<Resource, ConvertError> {
    let meta = &slice.metadata;
    let mut problems = Problems::new("EndpointSlice", meta);
    require_name(meta, &mut problems);
    let service = meta.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned().unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        match p.port.map(u16::try_from) {
            // No port: "all ports", which Services never produce; skip.
            None => {}
            Some(Ok(port)) if port > 0 => ports.push(SlicePort { name: p.name.clone().unwrap_or_default(), port }),
            Some(_) => problems.push(format!("ports[{i}].port: {:?} is not in 1..=65535", p.port)),
        }
    }
    let mut endpoints = Vec::new();
    // FQDN slices name hosts, not addresses: nothing a proxy can dial directly.
    if slice.address_type != "FQDN" {
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let mut addresses = Vec::new();
            for a in &ep.addresses {
                match a.parse::<IpAddr>() {
                    Ok(ip) => addresses.push(ip),
                    Err(_) => problems.push(format!("endpoints[{i}].addresses: {a:?} is not an IP address")),
                }
            }
            let pod = ep.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).map(|r| {
                ObjectKey::new(
                    r.namespace.clone().unwrap_or_else(|| key(meta).namespace),
                    r.name.clone().unwrap_or_default(),
                )
            });
            endpoints.push(SliceEndpoint {
                addresses,
                // Kubernetes: an absent ready condition means ready.
                ready: ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                pod,
                node: ep.node_name.clone(),
                zone: ep.zone.clone(),
            });
        }
    }
    problems.finish(Resource::EndpointSlice(EndpointSlice { key: key(meta), service, ports, endpoints }))
}

/// Unix seconds of metadata.creationTimestamp (0 when absent, as in manifests).
pub(crate) fn created(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0)
}

/// Route annotations, for the route converters.
pub(crate) fn annotations(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_durations() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1m1s1ms"), Ok(61_001));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        for bad in ["", "10", "1.5s", "s", "123456s", "1s1s1s1s1s", "10 s", "1d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_protocols() {
        assert_eq!(app_protocol(Some("HTTP")), Protocol::Http1);
        assert_eq!(app_protocol(Some("kubernetes.io/h2c")), Protocol::Http2);
        assert_eq!(app_protocol(Some("grpc")), Protocol::Grpc);
        assert_eq!(app_protocol(Some("weft.io/opaque")), Protocol::Opaque);
        assert_eq!(app_protocol(Some("mysql")), Protocol::Detect);
        assert_eq!(app_protocol(None), Protocol::Detect);
    }
}
