//! Policy in the proxy's own terms, independent of how it was delivered
//! (gRPC from mesh-control, or an in-memory source in tests).
//!
//! ```text
//!  OutboundPolicy (per target authority)     InboundPolicy (per inbound port)
//!   ├ RouteTable: rules by precedence          ├ default: allow | deny
//!   │   matches, filters, weighted backends,   ├ authorizations: identities,
//!   │   timeouts, retries (+ budget)           │   namespaces, any meshed
//!   └ failure accrual parameters               └ unauthenticated (plaintext) allowed?
//! ```

pub mod route;

use std::{collections::HashSet, time::Duration};

use mesh_identity::SpiffeId;

pub use self::route::RouteTable;
use crate::config::{DefaultInboundPolicy, Disabled};

/// When an endpoint is taken out of balancing, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccrualConfig {
    /// Consecutive failures (connect errors, upstream errors, timeouts, 5xx)
    /// that take an endpoint out.
    pub consecutive_failures: u32,
    /// First time out; doubles per failed probe.
    pub min_backoff: Duration,
    /// Longest time out.
    pub max_backoff: Duration,
    /// Random extra added to each backoff, as a fraction of it.
    pub jitter: f64,
}

impl AccrualConfig {
    /// `consecutive_failures: 0` turns accrual off.
    pub fn enabled(&self) -> bool {
        self.consecutive_failures > 0
    }
}

impl Default for AccrualConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 7,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter: 0.25,
        }
    }
}

/// What an outbound target's policy says.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Its HTTP routes (a single default rule to the target itself when it
    /// has none).
    pub routes: RouteTable,
    /// Its gRPC routes, when it has any: they govern gRPC requests
    /// (`content-type: application/grpc*`), `routes` the rest.
    pub grpc_routes: Option<RouteTable>,
    /// Failure accrual for the target's endpoints.
    pub accrual: AccrualConfig,
    /// The target is an opaque TCP port (Service port `appProtocol` or the
    /// `config.weft.io/opaque-ports` annotation; a pod address: the port it
    /// backs): connections to it skip protocol detection.
    pub opaque: bool,
}

impl OutboundPolicy {
    /// Everything to `authority`'s own endpoints, default accrual.
    pub fn default_for(authority: &str) -> Self {
        Self { routes: RouteTable::default_for(authority), grpc_routes: None, accrual: AccrualConfig::default(), opaque: false }
    }

    /// This policy with the `--disable`d features taken out (conformance
    /// testing only): without routes, every request goes to `authority`
    /// itself; without retries or timeouts, rules keep their matches,
    /// filters and backends but lose those. `None`: nothing to change.
    pub fn without(&self, disabled: Disabled, authority: &str) -> Option<Self> {
        if disabled.routes {
            return Some(Self { routes: RouteTable::default_for(authority), grpc_routes: None, ..self.clone() });
        }
        if !disabled.retries && !disabled.timeouts {
            return None;
        }
        let strip = |t: &RouteTable| {
            RouteTable::new(
                t.rules()
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        if disabled.retries {
                            r.retry = None;
                        }
                        if disabled.timeouts {
                            r.timeouts = route::Timeouts::default();
                        }
                        r
                    })
                    .collect(),
            )
        };
        Some(Self { routes: strip(&self.routes), grpc_routes: self.grpc_routes.as_ref().map(strip), ..self.clone() })
    }
}

/// Whether a client is let in, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// A meshed client that no authorization names.
    Unauthorized,
    /// A plaintext (unauthenticated) client that no authorization allows.
    Unauthenticated,
}

impl Verdict {
    /// The `reason` metric label (and log words).
    pub fn as_label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Unauthorized => "unauthorized",
            Verdict::Unauthenticated => "unauthenticated",
        }
    }
}

/// Clients one authorization (an AuthorizationPolicy, or the default) allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// Exact SPIFFE IDs.
    pub identities: HashSet<String>,
    /// Namespaces of client identities (`spiffe://td/ns/<ns>/sa/...`).
    pub namespaces: HashSet<String>,
    /// Every meshed client.
    pub any_meshed: bool,
    /// Plaintext (unauthenticated) clients.
    pub allow_plaintext: bool,
    /// `kind namespace/name` of where it came from, for logs.
    pub name: String,
}

impl Authorization {
    fn allows(&self, client: Option<&SpiffeId>) -> bool {
        match client {
            None => self.allow_plaintext,
            Some(id) => {
                self.any_meshed
                    || self.identities.contains(id.as_str())
                    || id.namespace_and_service_account().is_some_and(|(ns, _)| self.namespaces.contains(ns))
            }
        }
    }
}

/// Who may reach one inbound port: a client is allowed if and only if at
/// least one authorization matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundPolicy {
    /// The allowing authorizations; empty denies everyone.
    pub authorizations: Vec<Authorization>,
    /// The default in force (`allow`, `all-authenticated`, `deny`), for logs.
    pub default: String,
    /// The port is opaque TCP (every Service port it backs says so): a
    /// plaintext client's bytes are relayed without HTTP detection.
    pub opaque: bool,
}

impl InboundPolicy {
    /// The policy a port has before its own is known: `--default-inbound-policy`.
    pub fn from_default(default: DefaultInboundPolicy) -> Self {
        let all = |allow_plaintext| vec![Authorization { any_meshed: true, allow_plaintext, ..Default::default() }];
        let authorizations = match default {
            DefaultInboundPolicy::AllUnauthenticated => all(true),
            DefaultInboundPolicy::AllAuthenticated => all(false),
            DefaultInboundPolicy::Deny => Vec::new(),
        };
        Self { authorizations, default: default.to_string(), opaque: false }
    }

    /// Judges a client: `None` is a plaintext one.
    pub fn authorize(&self, client: Option<&SpiffeId>) -> Verdict {
        if self.authorizations.iter().any(|a| a.allows(client)) {
            Verdict::Allow
        } else if client.is_some() {
            Verdict::Unauthorized
        } else {
            Verdict::Unauthenticated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_features_leave_the_policy() {
        use route::{Backend, Filter, HeaderModifier, Rule, Timeouts};
        use std::sync::Arc;
        let rule = Rule {
            filters: vec![Filter::RequestHeaders(HeaderModifier::default())],
            backends: vec![Backend { authority: "other:80".into(), weight: 1, ..Default::default() }],
            timeouts: Timeouts { request: Some(Duration::from_millis(5)), backend_request: Some(Duration::from_millis(1)) },
            retry: Some(Arc::new(crate::discovery::retry::RetryPolicy::new(2, vec![(503, 503)], Default::default()))),
            ..Rule::default()
        };
        let p = OutboundPolicy {
            routes: RouteTable::new(vec![rule.clone()]),
            grpc_routes: Some(RouteTable::new(vec![rule])),
            accrual: AccrualConfig { consecutive_failures: 3, ..Default::default() },
            opaque: false,
        };
        assert!(p.without(Disabled::default(), "web:80").is_none());

        let off = p.without(Disabled { routes: true, ..Default::default() }, "web:80").unwrap();
        let only = &off.routes.rules()[0];
        assert_eq!(off.routes.rules().len(), 1);
        assert_eq!(only.backends[0].authority, "web:80", "straight to the Service");
        assert!(only.filters.is_empty() && only.retry.is_none() && only.timeouts == Timeouts::default());
        assert!(off.grpc_routes.is_none());
        assert_eq!(off.accrual.consecutive_failures, 3, "balancing settings stay");

        let off = p.without(Disabled { retries: true, ..Default::default() }, "web:80").unwrap();
        for t in [&off.routes, off.grpc_routes.as_ref().unwrap()] {
            let r = &t.rules()[0];
            assert!(r.retry.is_none());
            assert_eq!(r.timeouts.request, Some(Duration::from_millis(5)), "timeouts kept");
            assert_eq!(r.backends[0].authority, "other:80", "routes kept");
            assert_eq!(r.filters.len(), 1);
        }
        let off = p.without(Disabled { timeouts: true, ..Default::default() }, "web:80").unwrap();
        let r = &off.routes.rules()[0];
        assert_eq!(r.timeouts, Timeouts::default());
        assert!(r.retry.is_some(), "retries kept");
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn inbound_authorization() {
        let named = InboundPolicy {
            authorizations: vec![Authorization {
                identities: ["spiffe://td/ns/a/sa/web".to_owned()].into(),
                namespaces: ["ops".to_owned()].into(),
                ..Authorization::default()
            }],
            default: "deny".into(),
            ..Default::default()
        };
        assert_eq!(named.authorize(Some(&id("spiffe://td/ns/a/sa/web"))), Verdict::Allow);
        assert_eq!(named.authorize(Some(&id("spiffe://td/ns/ops/sa/anything"))), Verdict::Allow);
        assert_eq!(named.authorize(Some(&id("spiffe://td/ns/a/sa/other"))), Verdict::Unauthorized);
        assert_eq!(named.authorize(None), Verdict::Unauthenticated);

        let all = InboundPolicy {
            authorizations: vec![Authorization { any_meshed: true, allow_plaintext: true, ..Default::default() }],
            default: "allow".into(),
            ..Default::default()
        };
        assert_eq!(all.authorize(Some(&id("spiffe://td/ns/a/sa/other"))), Verdict::Allow);
        assert_eq!(all.authorize(None), Verdict::Allow);

        let meshed = InboundPolicy {
            authorizations: vec![Authorization { any_meshed: true, ..Default::default() }],
            default: "all-authenticated".into(),
            ..Default::default()
        };
        assert_eq!(meshed.authorize(Some(&id("spiffe://td/ns/x/sa/y"))), Verdict::Allow);
        assert_eq!(meshed.authorize(None), Verdict::Unauthenticated);
        assert_eq!(InboundPolicy::default().authorize(Some(&id("spiffe://td/ns/x/sa/y"))), Verdict::Unauthorized);

        let meshed = Some(id("spiffe://td/ns/x/sa/y"));
        for (default, mesh, plain) in [
            (DefaultInboundPolicy::AllUnauthenticated, Verdict::Allow, Verdict::Allow),
            (DefaultInboundPolicy::AllAuthenticated, Verdict::Allow, Verdict::Unauthenticated),
            (DefaultInboundPolicy::Deny, Verdict::Unauthorized, Verdict::Unauthenticated),
        ] {
            let p = InboundPolicy::from_default(default);
            assert_eq!((p.authorize(meshed.as_ref()), p.authorize(None)), (mesh, plain), "{default}");
            assert_eq!(p.default, default.to_string());
        }
    }
}
