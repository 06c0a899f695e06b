//! Weft's AuthorizationPolicy CRD (policy.weft.io/v1alpha1): which clients
//! may reach which Service ports. Ports no policy targets follow the default
//! (namespace annotation `weft.io/default-inbound-policy`, else the control
//! plane's `--default-inbound-policy`); once a policy targets a port, only
//! policies allow.
//!
//! ```yaml
//! apiVersion: policy.weft.io/v1alpha1
//! kind: AuthorizationPolicy
//! metadata: { name: front-to-web, namespace: shop }
//! spec:
//!   targetRef: { kind: Service, name: web }   # or { kind: Namespace }: every Service here
//!   ports: [80, http]                          # Service ports by number or name; empty = all
//!   from:
//!     identities: [spiffe://cluster.local/ns/front/sa/ui]
//!     namespaces: [ops]                        # any identity in these namespaces
//!     anyMeshed: false                         # any client with a mesh identity
//!     unauthenticated: false                   # plaintext clients too
//! ```

use kube::{CustomResource, CustomResourceExt};
use mesh_index::model::{self, Clients, PolicyTarget, PortRef, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::convert::{key, ConvertError, Problems};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "policy.weft.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    namespaced,
    shortname = "authzpolicy",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// What is protected: a Service in this namespace, or every Service in it.
    pub target_ref: PolicyTargetRef,
    /// Service ports (numbers or names) protected; empty means all.
    #[serde(default)]
    #[schemars(schema_with = "int_or_string_list")]
    pub ports: Vec<PortSpec>,
    /// Who is allowed.
    #[serde(default)]
    pub from: AllowedClients,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PolicyTargetRef {
    /// "" or "core" (default).
    #[serde(default)]
    pub group: Option<String>,
    /// Service or Namespace.
    pub kind: String,
    /// The Service's name (ignored for Namespace).
    #[serde(default)]
    pub name: Option<String>,
}

/// A port by number or by name.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum PortSpec {
    Number(i64),
    Name(String),
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedClients {
    /// Exact SPIFFE IDs.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Namespaces of client identities.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Any client with a mesh identity.
    #[serde(default)]
    pub any_meshed: bool,
    /// Plaintext (unauthenticated) clients.
    #[serde(default)]
    pub unauthenticated: bool,
}

/// Kubernetes' structural schema for a list of int-or-string.
fn int_or_string_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "x-kubernetes-int-or-string": true }
    })
}

/// The CRD, as YAML for `kubectl apply -f`.
pub fn crd_yaml() -> Result<String, String> {
    serde_saphyr::to_string(&AuthorizationPolicy::crd()).map_err(|e| e.to_string())
}

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
