//! Inbound authorization: the policy for this workload's port, kept current
//! from a [`PolicySource`], and what a refusal looks like.
//!
//! ```text
//!  meshed HTTP request    ─ verdict(client id) ─ deny: 403 + weft-proxy-error
//!  meshed TCP connection  ─ verdict(client id) ─ deny: connection closed
//!  plaintext HTTP / TCP   ─ verdict(None)      ─ deny: 403 / closed
//! ```
//!
//! Every refusal increments `weft_inbound_authz_denied_total{protocol,reason}`
//! and logs one line naming the client, the port and the reason (HTTP: once
//! per connection, so a client hammering a closed door does not flood the
//! log). Until a port's first policy arrives, and for every port without
//! `--policy`, the proxy's default applies (`--default-inbound-policy`,
//! strict by default: meshed clients only): a control plane that is slow,
//! or unreachable when the pod starts, must not open the door the policy
//! may keep shut. `/ready` is 503 until every watched port has its policy.
//! Once a policy arrived it stays in force through control-plane outages.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use mesh_identity::SpiffeId;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tracing::warn;

use crate::{
    http::body::ResponseBody,
    discovery::{InboundWatch, PolicySource},
    discovery::outbound::FIRST_ANSWER_WAIT,
    http::error::PROXY_ERROR_HEADER,
    metrics::Metrics,
    discovery::policy::{InboundPolicy, Verdict},
    config::DefaultInboundPolicy,
};

/// The inbound policy of one port, and its refusal counters.
#[derive(Debug)]
pub struct Authz {
    port: u16,
    current: ArcSwapOption<InboundPolicy>,
    /// `--default-inbound-policy`: the verdict while `current` is empty.
    fallback: InboundPolicy,
    /// [http, tcp] x [unauthorized, unauthenticated].
    denied: [[Counter; 2]; 2],
    /// The watch (from [`Authz::start`]) and until when [`Authz::loaded`]
    /// waits for its first answer.
    first: Option<(InboundWatch, Instant)>,
    /// `false` with `--disable authz` (conformance testing only): the
    /// policy is still watched (it names the port's protocol) but the
    /// default judges, as before any policy arrives.
    enforce: bool,
}

/// Which kind of traffic was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// An HTTP request (answered 403).
    Http = 0,
    /// A TCP connection (closed).
    Tcp = 1,
}

impl Authz {
    /// Watches `port`'s policy in `source`, `default` judging until it
    /// arrives; `enforce: false` (`--disable authz`) leaves it to `default`.
    pub fn start(source: &dyn PolicySource, port: u16, metrics: &Metrics, enforce: bool, default: DefaultInboundPolicy) -> Arc<Self> {
        let mut rx = source.inbound(port);
        let this = Arc::new(Self {
            first: Some((rx.clone(), Instant::now() + FIRST_ANSWER_WAIT)),
            enforce,
            ..Self::new(port, metrics, default)
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            loop {
                let current = rx.borrow_and_update().clone();
                let Some(this) = weak.upgrade() else { return };
                if current.is_some() {
                    this.current.store(current);
                }
                drop(this);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        this
    }

    /// Without a source (no `--policy`): `default` judges, unless `set`
    /// installs a policy (tests, embedding).
    pub fn new(port: u16, metrics: &Metrics, default: DefaultInboundPolicy) -> Self {
        let c = |p, r| metrics.authz_denied(p, r);
        Self {
            port,
            current: ArcSwapOption::empty(),
            fallback: InboundPolicy::from_default(default),
            denied: [
                [c("http", "unauthorized"), c("http", "unauthenticated")],
                [c("tcp", "unauthorized"), c("tcp", "unauthenticated")],
            ],
            first: None,
            enforce: true,
        }
    }

    /// Waits for the first policy, at most until [`FIRST_ANSWER_WAIT`]
    /// after the watch started (then the default keeps judging).
    /// A transparent proxy starts a port's watch on that port's first
    /// connection, which must not slip in before the policy is known.
    pub async fn loaded(&self) {
        if self.current.load().is_some() {
            return;
        }
        let Some((rx, deadline)) = &self.first else { return };
        let mut rx = rx.clone();
        let _ = tokio::time::timeout_at(*deadline, rx.wait_for(Option::is_some)).await;
        // The watch task may be a step behind the channel: install here.
        let got = rx.borrow().clone();
        if let Some(policy) = got {
            self.current.compare_and_swap(&None::<Arc<InboundPolicy>>, Some(policy));
        }
    }

    /// Installs a policy.
    pub fn set(&self, policy: InboundPolicy) {
        self.current.store(Some(Arc::new(policy)));
    }

    /// The verdict for `client` (`None`: plaintext): the port's policy's,
    /// or the default's before it arrives (and always when not enforced).
    #[inline]
    pub fn verdict(&self, client: Option<&SpiffeId>) -> Verdict {
        match (self.enforce, &*self.current.load()) {
            (true, Some(policy)) => policy.authorize(client),
            _ => self.fallback.authorize(client),
        }
    }

    /// Whether the port's own policy judges (else the default does).
    pub fn judged_by_policy(&self) -> bool {
        self.enforce && self.current.load().is_some()
    }

    /// Whether this port's policy is watched and has not arrived yet
    /// (`/ready` waits for it).
    pub fn awaiting_policy(&self) -> bool {
        self.first.is_some() && self.current.load().is_none()
    }

    /// The port judged.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The default in force until the policy arrives, by name.
    pub fn default_name(&self) -> &str {
        &self.fallback.default
    }

    /// The port's current policy, enforced or not.
    pub fn policy(&self) -> Option<Arc<InboundPolicy>> {
        self.current.load_full()
    }

    /// Counts a refusal, and logs it when `log` (once per connection).
    pub fn refused(&self, traffic: Traffic, verdict: Verdict, client: Option<&SpiffeId>, peer: SocketAddr, log: bool) {
        let reason = match verdict {
            Verdict::Allow => return,
            Verdict::Unauthorized => 0,
            Verdict::Unauthenticated => 1,
        };
        self.denied[traffic as usize][reason].inc();
        if log {
            let who = client.map_or_else(|| "plaintext client".to_owned(), |id| id.to_string());
            let what = match traffic {
                Traffic::Http => "request(s) answered 403",
                Traffic::Tcp => "connection closed",
            };
            warn!(
                "denied inbound {} from {who} at {peer} to port {}: {}; {what}",
                match traffic {
                    Traffic::Http => "http",
                    Traffic::Tcp => "tcp",
                },
                self.port,
                verdict.as_label()
            );
        }
    }

    /// The 403 an unauthorized HTTP request gets.
    pub fn forbidden(&self, verdict: Verdict, client: Option<&SpiffeId>) -> Response<ResponseBody> {
        let who = client.map_or("a plaintext client", SpiffeId::as_str);
        let reason = format!("{}: {who} may not reach port {} (authorization policy)", verdict.as_label(), self.port);
        let mut resp = Response::new(ResponseBody::full(Bytes::from(format!("{reason}\n"))));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        if let Ok(v) = HeaderValue::from_str(&reason) {
            resp.headers_mut().insert(PROXY_ERROR_HEADER.clone(), v);
        }
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    }
}

/// `--transparent` inbound: connections arrive for any application port,
/// so the policy is watched per port, from the first connection to that
/// port on, and kept (a connection costs one map lookup under a lock).
pub struct AuthzByPort {
    /// `None` without `--policy`: every port is judged by `default`.
    source: Option<Arc<dyn PolicySource>>,
    metrics: Arc<Metrics>,
    ports: Mutex<HashMap<u16, Arc<Authz>>>,
    enforce: bool,
    default: DefaultInboundPolicy,
}

impl std::fmt::Debug for AuthzByPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports = self.ports.lock().map(|p| p.len()).unwrap_or_default();
        f.debug_struct("AuthzByPort").field("ports", &ports).finish_non_exhaustive()
    }
}

impl AuthzByPort {
    /// Watches nothing yet; [`AuthzByPort::port`] starts the watches;
    /// `enforce: false` (`--disable authz`) watches, `default` judging.
    pub fn new(source: Option<Arc<dyn PolicySource>>, metrics: Arc<Metrics>, enforce: bool, default: DefaultInboundPolicy) -> Self {
        Self { source, metrics, ports: Mutex::new(HashMap::new()), enforce, default }
    }

    /// The authorization of `port`, its watch started on first use. Until
    /// its first policy arrives `default` judges, as in [`Authz`].
    pub fn port(&self, port: u16) -> Arc<Authz> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let start = || match &self.source {
            Some(source) => Authz::start(source.as_ref(), port, &self.metrics, self.enforce, self.default),
            None => Arc::new(Authz::new(port, &self.metrics, self.default)),
        };
        Arc::clone(ports.entry(port).or_insert_with(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::policy::Authorization;

    #[test]
    fn verdicts_and_counters() {
        let metrics = Metrics::new();
        let a = Authz::new(8080, &metrics, DefaultInboundPolicy::AllAuthenticated);
        let web = SpiffeId::parse("spiffe://td/ns/a/sa/web").unwrap();
        assert_eq!(a.verdict(Some(&web)), Verdict::Allow, "no policy yet: the default, any meshed client");
        assert_eq!(a.verdict(None), Verdict::Unauthenticated, "no policy yet: the default refuses plaintext");
        assert!(!a.awaiting_policy(), "nothing watched");
        a.set(InboundPolicy {
            authorizations: vec![Authorization { identities: [web.to_string()].into(), ..Default::default() }],
            default: "deny".into(),
            ..Default::default()
        });
        assert_eq!(a.verdict(Some(&web)), Verdict::Allow);
        let other = SpiffeId::parse("spiffe://td/ns/a/sa/other").unwrap();
        let v = a.verdict(Some(&other));
        assert_eq!(v, Verdict::Unauthorized);
        a.refused(Traffic::Http, v, Some(&other), "127.0.0.1:1".parse().unwrap(), true);
        let resp = a.forbidden(v, Some(&other));
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers()[&PROXY_ERROR_HEADER].to_str().unwrap().contains("sa/other"));
        let text = metrics.encode();
        assert!(
            text.contains(r#"weft_inbound_authz_denied_total{protocol="http",reason="unauthorized"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn per_port_authorizations_are_watched_lazily_and_kept() {
        use crate::discovery::memory::MemorySource;
        let source = MemorySource::new();
        let metrics = Arc::new(Metrics::new());
        let by_port = AuthzByPort::new(Some(source.clone()), Arc::clone(&metrics), true, DefaultInboundPolicy::Deny);
        let web = SpiffeId::parse("spiffe://td/ns/a/sa/web").unwrap();
        let a = by_port.port(8080);
        assert!(Arc::ptr_eq(&a, &by_port.port(8080)), "one watch per port");
        assert!(a.awaiting_policy() && !a.judged_by_policy());
        assert_eq!(a.verdict(Some(&web)), Verdict::Unauthorized, "no policy yet: the default (deny)");
        let waiting = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.loaded().await })
        };
        source.set_inbound(9090, InboundPolicy { authorizations: vec![], default: "deny".into(), ..Default::default() });
        source.set_inbound(
            8080,
            InboundPolicy {
                authorizations: vec![Authorization { identities: [web.to_string()].into(), ..Default::default() }],
                default: "deny".into(),
                ..Default::default()
            },
        );
        tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .expect("loaded() returns once the first policy arrives")
            .unwrap();
        assert!(a.judged_by_policy() && !a.awaiting_policy(), "loaded");
        let b = by_port.port(9090);
        b.loaded().await;
        for _ in 0..100 {
            if a.judged_by_policy() && b.judged_by_policy() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(a.verdict(Some(&web)), Verdict::Allow, "port 8080's policy");
        assert_eq!(b.verdict(Some(&web)), Verdict::Unauthorized, "port 9090's policy");
        assert!(b.forbidden(Verdict::Unauthorized, Some(&web)).headers()[&PROXY_ERROR_HEADER]
            .to_str()
            .unwrap()
            .contains("port 9090"));
    }

    #[tokio::test]
    async fn disabled_authz_watches_but_never_refuses() {
        use crate::discovery::memory::MemorySource;
        let source = MemorySource::new();
        let metrics = Metrics::new();
        source.set_inbound(8080, InboundPolicy { authorizations: vec![], default: "deny".into(), ..Default::default() });
        let strict = DefaultInboundPolicy::AllAuthenticated;
        let on = Authz::start(source.as_ref(), 8080, &metrics, true, strict);
        let off = Authz::start(source.as_ref(), 8080, &metrics, false, strict);
        on.loaded().await;
        off.loaded().await;
        let web = SpiffeId::parse("spiffe://td/ns/a/sa/web").unwrap();
        assert_eq!(on.verdict(Some(&web)), Verdict::Unauthorized);
        assert_eq!(on.verdict(None), Verdict::Unauthenticated);
        assert!(off.policy().is_some() && !off.awaiting_policy(), "still watched");
        assert_eq!(off.verdict(Some(&web)), Verdict::Allow, "the default judges, as before any policy");
        assert_eq!(off.verdict(None), Verdict::Unauthenticated);
    }

    #[tokio::test]
    async fn without_a_source_the_default_judges_every_port() {
        let metrics = Arc::new(Metrics::new());
        let by_port = AuthzByPort::new(None, metrics, true, DefaultInboundPolicy::AllUnauthenticated);
        let p = by_port.port(8080);
        assert_eq!(p.verdict(None), Verdict::Allow);
        assert!(!p.awaiting_policy());
        p.loaded().await;
        assert_eq!(p.default_name(), "all-unauthenticated");
    }
}
