//! Weft's own CustomResourceDefinitions: the types (kube derive + schemars,
//! so the OpenAPI v3 schema comes from the same structs mesh-control
//! deserializes) and the CRD objects `weft install` renders.
//!
//! Gateway API HTTPRoute/GRPCRoute are upstream CRDs, installed from the
//! Gateway API release, never by Weft; mesh-control keeps its own partial
//! types for them.
//!
//! AuthorizationPolicy (policy.weft.io/v1alpha1): which clients may reach
//! which Service ports. Ports no policy targets follow the default
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

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "policy.weft.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    doc = "Which clients may reach which Service ports (Weft). Ports no policy targets follow the namespace's default; once a policy targets a port, only policies allow.",
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

/// Every CRD Weft owns, in the order `weft install` renders them, labelled
/// as part of Weft like everything it installs.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![AuthorizationPolicy::crd()];
    for crd in &mut crds {
        crd.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(crate::names::PART_OF_LABEL.to_owned(), crate::names::PART_OF.to_owned());
    }
    crds
}

/// The CRDs as multi-document YAML, for `kubectl apply -f -`.
pub fn yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
