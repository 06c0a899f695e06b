//! Weft's AuthorizationPolicy (policy.weft.io/v1alpha1) into the index's
//! model. The CRD's types live in `mesh_kube::crds` (with the YAML example
//! and the semantics), shared with `weft install`; this module only checks
//! and converts them.

pub use mesh_kube::crds::{AllowedClients, AuthorizationPolicy, AuthorizationPolicySpec, PolicyTargetRef, PortSpec};
use mesh_index::model::{self, Clients, PolicyTarget, PortRef, Resource};

use super::convert::{key, ConvertError, Problems};

pub fn authorization_policy(policy: &AuthorizationPolicy) -> Result<Resource, ConvertError> {
    let meta = &policy.metadata;
    let mut p = Problems::new("AuthorizationPolicy", meta);
    let spec = &policy.spec;
    if !matches!(spec.target_ref.group.as_deref(), None | Some("" | "core")) {
        p.push(format!(
            "spec.targetRef.group: {:?} is not \"\" or core",
            spec.target_ref.group.as_deref().unwrap_or("")
        ));
    }
    let target = match (spec.target_ref.kind.as_str(), spec.target_ref.name.as_deref()) {
        ("Service", Some(name)) if !name.is_empty() => PolicyTarget::Service(name.to_owned()),
        ("Service", _) => {
            p.push("spec.targetRef.name: required for kind Service");
            PolicyTarget::Service(String::new())
        }
        ("Namespace", _) => PolicyTarget::Namespace,
        (other, _) => {
            p.push(format!("spec.targetRef.kind: {other:?} is not Service or Namespace"));
            PolicyTarget::Namespace
        }
    };
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        match port {
            PortSpec::Number(n) => match u16::try_from(*n) {
                Ok(n) if n > 0 => ports.push(PortRef::Number(n)),
                _ => p.push(format!("spec.ports[{i}]: {n} is not in 1..=65535")),
            },
            PortSpec::Name(s) if s.is_empty() => p.push(format!("spec.ports[{i}]: empty port name")),
            // Numbers written as strings ("80") still mean ports by number.
            PortSpec::Name(s) => {
                ports.push(s.parse::<u16>().map_or_else(|_| PortRef::Name(s.clone()), PortRef::Number))
            }
        }
    }
    let from = &spec.from;
    for (i, id) in from.identities.iter().enumerate() {
        if mesh_identity::SpiffeId::parse(id).is_err() {
            p.push(format!(
                "spec.from.identities[{i}]: {id:?} is not a SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)"
            ));
        }
    }
    for (i, ns) in from.namespaces.iter().enumerate() {
        if ns.is_empty() || ns.contains('/') {
            p.push(format!("spec.from.namespaces[{i}]: {ns:?} is not a namespace name"));
        }
    }
    if from.identities.is_empty() && from.namespaces.is_empty() && !from.any_meshed && !from.unauthenticated {
        p.push("spec.from: allows nobody (give identities, namespaces, anyMeshed or unauthenticated)");
    }
    let clients = Clients {
        identities: from.identities.iter().cloned().collect(),
        namespaces: from.namespaces.iter().cloned().collect(),
        any_meshed: from.any_meshed,
        unauthenticated: from.unauthenticated,
    };
    p.finish(Resource::AuthorizationPolicy(model::AuthorizationPolicy { key: key(meta), target, ports, clients }))
}
