//! What the index serves: per-lookup views, compared by value so watchers are
//! only woken by real changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::model::{Clients, DefaultPolicy, FailureAccrual, GrpcRule, HttpRule, Kind, Labels, ObjectKey, Protocol};
use crate::route::{Backend, WeightedBackend};

/// Weight of every endpoint: relative, so any constant works; the proto
/// documents 10000 so a future weighting has room on both sides.
pub const DEFAULT_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolHint {
    /// Unmeshed: speak the request's own protocol in plaintext.
    #[default]
    Unknown,
    /// Meshed: mTLS + HTTP/2 between proxies.
    H2,
    /// Meshed opaque TCP port.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    /// SPIFFE ID; None when unmeshed.
    pub identity: Option<String>,
    pub hint: ProtocolHint,
    pub labels: Labels,
}

/// The endpoint set of one authority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestinationView {
    /// False: the authority is unknown (no such Service or address).
    pub exists: bool,
    /// Ready endpoints, by address.
    pub endpoints: BTreeMap<SocketAddr, Endpoint>,
}

/// Where a route or authorization came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Meta {
    /// None for authorizations derived from the default policy.
    pub kind: Option<Kind>,
    pub key: ObjectKey,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundHttpRoute {
    pub meta: Meta,
    pub rules: Vec<HttpRule<WeightedBackend>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundGrpcRoute {
    pub meta: Meta,
    pub rules: Vec<GrpcRule<WeightedBackend>>,
}

/// The outbound policy of one Service port.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboundPolicy {
    /// False: not a known Service port; every other field is empty but
    /// `protocol` for a pod address (the protocol of the port it backs).
    pub exists: bool,
    pub service: Backend,
    pub protocol: Protocol,
    pub failure_accrual: FailureAccrual,
    /// Oldest first (creation time, then namespace/name).
    pub http_routes: Vec<OutboundHttpRoute>,
    pub grpc_routes: Vec<OutboundGrpcRoute>,
}

/// A workload asking for its inbound policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Workload {
    /// By SPIFFE ID (local substrates: everyone is 127.0.0.1).
    Identity(String),
    /// By pod IP.
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub meta: Meta,
    pub clients: Clients,
}

/// Who may connect to one workload port: allowed iff one authorization matches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InboundPolicy {
    pub default_policy: DefaultPolicy,
    /// AuthorizationPolicies target this port (the default does not apply).
    pub explicit: bool,
    pub authorizations: Vec<Authorization>,
    pub protocol: Protocol,
    /// Canonical authorities of the Service ports this workload port backs.
    pub services: BTreeSet<String>,
}

/// A connecting client as the inbound proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client<'a> {
    /// mTLS with a verified SPIFFE ID.
    Meshed(&'a str),
    Plaintext,
}

impl InboundPolicy {
    /// The proxy's rule, kept here so the index's tests (and `weft check`)
    /// evaluate exactly what the proto documents.
    pub fn allows(&self, client: Client<'_>, trust_domain: &str) -> bool {
        self.authorizations.iter().any(|a| a.clients.matches(client, trust_domain))
    }
}

impl Clients {
    pub fn matches(&self, client: Client<'_>, trust_domain: &str) -> bool {
        match client {
            Client::Plaintext => self.unauthenticated,
            Client::Meshed(id) => {
                self.any_meshed
                    || self.identities.contains(id)
                    || spiffe_namespace(id, trust_domain).is_some_and(|ns| self.namespaces.contains(ns))
            }
        }
    }
}

/// `spiffe://<trust_domain>/ns/<ns>/sa/<sa>` -> `<ns>`.
pub fn spiffe_namespace<'a>(id: &'a str, trust_domain: &str) -> Option<&'a str> {
    let path = id.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?.strip_prefix("/ns/")?;
    let (ns, rest) = path.split_once('/')?;
    (!ns.is_empty() && rest.strip_prefix("sa/").is_some_and(|sa| !sa.is_empty() && !sa.contains('/'))).then_some(ns)
}

/// The workload identity of a pod's service account.
pub fn workload_identity(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    let sa = if service_account.is_empty() { "default" } else { service_account };
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_namespaces() {
        assert_eq!(spiffe_namespace("spiffe://cluster.local/ns/shop/sa/web", "cluster.local"), Some("shop"));
        assert_eq!(spiffe_namespace("spiffe://other.td/ns/shop/sa/web", "cluster.local"), None);
        assert_eq!(spiffe_namespace("spiffe://cluster.local/ns/shop/sa/", "cluster.local"), None);
        assert_eq!(spiffe_namespace("spiffe://cluster.localx/ns/shop/sa/web", "cluster.local"), None);
        assert_eq!(workload_identity("td", "ns", ""), "spiffe://td/ns/ns/sa/default");
    }
}
