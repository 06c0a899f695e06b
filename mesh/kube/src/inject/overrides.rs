//! The per-pod annotations the injector honours, read and checked together
//! so one injection reports every bad value at once.

use std::collections::BTreeMap;

use crate::lists::{CidrList, PortList};
use crate::names;

/// The proxy's resources: Kubernetes quantities (`100m`, `64Mi`); `None`
/// leaves that request or limit unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    /// A request the scheduler can count on and a memory limit that stops a
    /// leaking proxy before it takes the node's memory; no CPU limit, so a
    /// busy proxy is not throttled into adding latency (set one with
    /// `weft.io/proxy-cpu-limit`).
    fn default() -> Self {
        Self {
            cpu_request: Some("100m".to_owned()),
            memory_request: Some("64Mi".to_owned()),
            cpu_limit: None,
            memory_limit: Some("256Mi".to_owned()),
        }
    }
}

/// What a pod's annotations change in its injection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub resources: Resources,
    pub skip_inbound_ports: Option<PortList>,
    pub skip_outbound_ports: Option<PortList>,
    pub skip_outbound_cidrs: Option<CidrList>,
    pub opaque_ports: Option<PortList>,
}

impl Overrides {
    /// Reads the annotations over `defaults`; every bad value is one problem
    /// naming the annotation and the value.
    pub fn read(annotations: &BTreeMap<String, String>, defaults: &Resources) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut resources = defaults.clone();
        for (key, slot) in [
            (names::PROXY_CPU_REQUEST_ANNOTATION, &mut resources.cpu_request),
            (names::PROXY_MEMORY_REQUEST_ANNOTATION, &mut resources.memory_request),
            (names::PROXY_CPU_LIMIT_ANNOTATION, &mut resources.cpu_limit),
            (names::PROXY_MEMORY_LIMIT_ANNOTATION, &mut resources.memory_limit),
        ] {
            if let Some(value) = annotations.get(key) {
                match quantity(value) {
                    Some(_) => *slot = Some(value.trim().to_owned()),
                    None => problems.push(format!(
                        "annotation {key}: {value:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 64Mi, 1Gi)"
                    )),
                }
            }
        }
        for (what, request, limit, request_key, limit_key) in [
            (
                "CPU",
                &resources.cpu_request,
                &resources.cpu_limit,
                names::PROXY_CPU_REQUEST_ANNOTATION,
                names::PROXY_CPU_LIMIT_ANNOTATION,
            ),
            (
                "memory",
                &resources.memory_request,
                &resources.memory_limit,
                names::PROXY_MEMORY_REQUEST_ANNOTATION,
                names::PROXY_MEMORY_LIMIT_ANNOTATION,
            ),
        ] {
            let (Some(r), Some(l)) = (request, limit) else { continue };
            if let (Some(rv), Some(lv)) = (quantity(r), quantity(l)) {
                if rv > lv {
                    problems.push(format!(
                        "the proxy's {what} request {r} is more than its limit {l}: the API server would refuse \
                         the pod; raise {limit_key} or lower {request_key}"
                    ));
                }
            }
        }
        let list = |key: &str| -> Option<String> { annotations.get(key).cloned() };
        let ports = |key: &str, value: Option<String>, problems: &mut Vec<String>| {
            value.and_then(|v| {
                v.parse::<PortList>()
                    .map_err(|e| problems.push(format!("annotation {key}: {v:?}: {e} (e.g. 3306,8000-8100)")))
                    .ok()
            })
        };
        let skip_inbound_ports =
            ports(names::SKIP_INBOUND_PORTS_ANNOTATION, list(names::SKIP_INBOUND_PORTS_ANNOTATION), &mut problems);
        let skip_outbound_ports =
            ports(names::SKIP_OUTBOUND_PORTS_ANNOTATION, list(names::SKIP_OUTBOUND_PORTS_ANNOTATION), &mut problems);
        let opaque_ports = ports(names::OPAQUE_PORTS_ANNOTATION, list(names::OPAQUE_PORTS_ANNOTATION), &mut problems);
        let skip_outbound_cidrs = list(names::SKIP_OUTBOUND_CIDRS_ANNOTATION).and_then(|v| {
            v.parse::<CidrList>()
                .map_err(|e| {
                    problems.push(format!(
                        "annotation {}: {v:?}: {e} (e.g. 10.0.0.0/8,192.0.2.7)",
                        names::SKIP_OUTBOUND_CIDRS_ANNOTATION
                    ))
                })
                .ok()
        });
        if problems.is_empty() {
            Ok(Self { resources, skip_inbound_ports, skip_outbound_ports, skip_outbound_cidrs, opaque_ports })
        } else {
            Err(problems)
        }
    }
}

/// A Kubernetes quantity's value (only to compare a request with its
/// limit), or `None` when `text` is not one: a decimal number with an
/// optional SI (`m`, `k`, `M`, ...), binary (`Ki`, `Mi`, ...) or exponent
/// (`e3`) suffix, as the API server's `resource.Quantity` accepts.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let number_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let e = exp.strip_prefix(['e', 'E'])?;
            let digits = e.trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(e.parse().ok()?)
        }
    };
    (value >= 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_the_api_server_writes_them() {
        for (text, value) in
            [("100m", 0.1), ("0.5", 0.5), ("1", 1.0), ("64Mi", 67_108_864.0), ("1Gi", 1_073_741_824.0), ("2k", 2000.0), ("1e3", 1000.0), (".5", 0.5)]
        {
            assert_eq!(quantity(text), Some(value), "{text}");
        }
        for bad in ["", "m", "100 m", "1.2.3", "64MB", "abc", "-1", "1e", "1ee3", "Mi"] {
            assert_eq!(quantity(bad), None, "{bad:?}");
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_bad_annotation_is_reported_at_once() {
        let problems = Overrides::read(
            &annotations(&[
                (names::PROXY_CPU_REQUEST_ANNOTATION, "lots"),
                (names::SKIP_INBOUND_PORTS_ANNOTATION, "80,http"),
                (names::SKIP_OUTBOUND_CIDRS_ANNOTATION, "10.1.2.3/8"),
                (names::OPAQUE_PORTS_ANNOTATION, "0"),
                (names::PROXY_MEMORY_REQUEST_ANNOTATION, "1Gi"),
            ]),
            &Resources::default(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let all = problems.join("\n");
        for needle in ["\"lots\"", "`http`", "host bits", "config.weft.io/opaque-ports", "1Gi is more than its limit 256Mi"] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
    }

    #[test]
    fn good_annotations_override_the_defaults() {
        let o = Overrides::read(
            &annotations(&[
                (names::PROXY_CPU_LIMIT_ANNOTATION, "1"),
                (names::PROXY_MEMORY_LIMIT_ANNOTATION, "512Mi"),
                (names::SKIP_OUTBOUND_PORTS_ANNOTATION, "5432,6000-6010"),
            ]),
            &Resources::default(),
        )
        .unwrap();
        assert_eq!(o.resources.cpu_limit.as_deref(), Some("1"));
        assert_eq!(o.resources.memory_limit.as_deref(), Some("512Mi"));
        assert_eq!(o.resources.cpu_request.as_deref(), Some("100m"));
        assert_eq!(o.skip_outbound_ports.unwrap().to_string(), "5432,6000-6010");
        assert!(o.skip_inbound_ports.is_none() && o.opaque_ports.is_none());
    }
}
