//! What backends write into the index: Kubernetes objects reduced to the
//! fields discovery uses, with annotations already parsed. Backends (the
//! manifests directory, the Kubernetes API) convert their objects into these;
//! the index never sees a kube or YAML type.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use crate::route::*;

/// Identifies one object of one kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    /// Empty for cluster-scoped objects (Namespace).
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The kinds the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    HttpRoute,
    GrpcRoute,
    AuthorizationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::AuthorizationPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }
}

/// One object of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    AuthorizationPolicy(AuthorizationPolicy),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Service(_) => Kind::Service,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Pod(_) => Kind::Pod,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::GrpcRoute(_) => Kind::GrpcRoute,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    pub fn key(&self) -> &ObjectKey {
        match self {
            Resource::Namespace(o) => &o.key,
            Resource::Service(o) => &o.key,
            Resource::EndpointSlice(o) => &o.key,
            Resource::Pod(o) => &o.key,
            Resource::HttpRoute(o) => &o.key,
            Resource::GrpcRoute(o) => &o.key,
            Resource::AuthorizationPolicy(o) => &o.key,
        }
    }
}

/// One write to the index.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace.
    Upsert(Resource),
    Delete(Kind, ObjectKey),
}

/// The default authorization of ports no AuthorizationPolicy targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPolicy {
    /// Everyone, plaintext included (`allow`, `all-unauthenticated`).
    #[default]
    AllUnauthenticated,
    /// Any meshed client (`all-authenticated`).
    AllAuthenticated,
    /// Nobody (`deny`).
    Deny,
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" | "all-unauthenticated" => Ok(Self::AllUnauthenticated),
            "all-authenticated" => Ok(Self::AllAuthenticated),
            "deny" => Ok(Self::Deny),
            other => Err(format!("{other:?} is not one of allow, all-unauthenticated, all-authenticated, deny")),
        }
    }
}

impl std::fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::Deny => "deny",
        })
    }
}

/// A Namespace's discovery-relevant annotations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Namespace {
    /// `name` only; `namespace` is empty.
    pub key: ObjectKey,
    /// `weft.io/default-inbound-policy`.
    pub default_inbound_policy: Option<DefaultPolicy>,
    /// `weft.io/inject`: `Some(true)` for "enabled", `Some(false)` for "disabled".
    pub inject: Option<bool>,
}

/// Protocol of a Service port, from its appProtocol (and opaque-ports annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub enum Protocol {
    #[default]
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServicePort {
    /// Empty when the Service has a single unnamed port.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// Consecutive-failures accrual of a Service's balancer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureAccrual {
    /// 0 disables accrual.
    pub consecutive_failures: u32,
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub jitter_ratio: f64,
}

impl Default for FailureAccrual {
    /// Linkerd's defaults, proven in production: 7 failures, 1 s .. 1 min, 50% jitter.
    fn default() -> Self {
        Self { consecutive_failures: 7, min_backoff_ms: 1_000, max_backoff_ms: 60_000, jitter_ratio: 0.5 }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub key: ObjectKey,
    /// ClusterIPs; empty for headless Services.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub failure_accrual: FailureAccrual,
}

/// One port of an EndpointSlice: its name matches the Service port's name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; Kubernetes treats an absent condition as ready.
    pub ready: bool,
    /// `targetRef` when it names a Pod: (namespace, name).
    pub pod: Option<ObjectKey>,
    pub node: Option<String>,
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    /// Label `kubernetes.io/service-name`; slices without it are ignored.
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pod {
    pub key: ObjectKey,
    pub service_account: String,
    /// Pod annotation `weft.io/inject`: `Some(true)` "enabled", `Some(false)` "disabled".
    pub inject: Option<bool>,
    /// Whether a `weft-proxy` container is present (the injector added it).
    pub has_proxy: bool,
    pub ips: Vec<IpAddr>,
    /// Pod annotation `config.weft.io/opaque-ports`: container ports (the
    /// Services' target ports) that carry opaque TCP, inclusive ranges.
    pub opaque_ports: Vec<(u16, u16)>,
}

impl Pod {
    /// Whether the pod's annotation marks `port` opaque.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.opaque_ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }
}

/// Who an AuthorizationPolicy lets in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Clients {
    pub identities: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
    pub any_meshed: bool,
    pub unauthenticated: bool,
}

/// A Service port named by number or name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// What an AuthorizationPolicy protects.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyTarget {
    /// A Service in the policy's namespace.
    Service(String),
    /// Every Service in the policy's namespace.
    Namespace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizationPolicy {
    pub key: ObjectKey,
    pub target: PolicyTarget,
    /// Service ports; empty means all.
    pub ports: Vec<PortRef>,
    pub clients: Clients,
}

/// A Service a route attaches to (GAMMA parentRef).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParentRef {
    pub service: ObjectKey,
    /// None: every port of the Service.
    pub port: Option<u16>,
    /// `sectionName`: the Service port's name (GAMMA); None: any.
    pub port_name: Option<String>,
}

/// A route's backendRef before resolution against the index.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRef {
    /// Service (namespace, name).
    pub service: ObjectKey,
    pub port: Option<u16>,
    pub weight: u32,
    /// Set when the ref is unusable whatever the index holds (kind other than
    /// Service): the reason.
    pub unsupported: Option<String>,
    pub filters: Vec<HttpFilter>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub key: ObjectKey,
    /// Unix seconds of metadata.creationTimestamp (ordering; 0 when unknown).
    pub created: i64,
    pub parents: Vec<ParentRef>,
    pub rules: Vec<HttpRule<BackendRef>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrpcRoute {
    pub key: ObjectKey,
    pub created: i64,
    pub parents: Vec<ParentRef>,
    pub rules: Vec<GrpcRule<BackendRef>>,
}

/// Labels put on an endpoint, sorted (stable comparisons of views).
pub type Labels = BTreeMap<String, String>;
