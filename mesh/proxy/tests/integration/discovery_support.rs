//! Harness for the discovery tests: an in-test gRPC control plane serving
//! `weft.destination.v1.Destination` and `weft.policy.v1.Policy` from
//! values the test sets, a relay in front of it that can be cut (the
//! control plane "dies"), and replicas with a fixed delay and status.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_api::{destination::v1 as dst, policy::v1 as pol};

use crate::control_support::{control_id, control_tls, serve_tls, TestCa};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// What the fake control plane serves; change it with the setters.
#[derive(Default)]
pub struct State {
    endpoints: Mutex<HashMap<String, watch::Sender<Option<Vec<SocketAddr>>>>>,
    /// SPIFFE IDs of meshed endpoint addresses (served with hint H2).
    identities: Mutex<HashMap<SocketAddr, String>>,
    outbound: Mutex<HashMap<String, watch::Sender<Option<pol::OutboundPolicy>>>>,
    inbound: Mutex<HashMap<String, watch::Sender<Option<pol::InboundPolicy>>>>,
    /// Destination.Get calls received.
    pub gets: AtomicUsize,
}

fn slot<V: Clone>(m: &Mutex<HashMap<String, watch::Sender<Option<V>>>>, key: &str) -> watch::Sender<Option<V>> {
    m.lock().unwrap().entry(key.to_owned()).or_insert_with(|| watch::Sender::new(None)).clone()
}

impl State {
    /// The (unmeshed) endpoints of `authority`; unset authorities are unknown.
    pub fn set_endpoints(&self, authority: &str, addrs: &[SocketAddr]) {
        slot(&self.endpoints, authority).send_replace(Some(addrs.to_vec()));
    }

    /// Marks `addr` as a meshed endpoint (a peer proxy's inbound) with `identity`.
    pub fn set_identity(&self, addr: SocketAddr, identity: &str) {
        self.identities.lock().unwrap().insert(addr, identity.to_owned());
    }

    pub fn set_outbound(&self, authority: &str, p: pol::OutboundPolicy) {
        slot(&self.outbound, authority).send_replace(Some(p));
    }

    /// The inbound policy of workload `identity` (any port).
    pub fn set_inbound(&self, identity: &str, p: pol::InboundPolicy) {
        slot(&self.inbound, identity).send_replace(Some(p));
    }
}

fn pb_addr(a: SocketAddr) -> dst::SocketAddr {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    dst::SocketAddr { ip, port: u32::from(a.port()) }
}

fn add(addrs: &[SocketAddr], ids: &HashMap<SocketAddr, String>) -> dst::Update {
    dst::Update {
        update: Some(dst::update::Update::Add(dst::Add {
            endpoints: addrs
                .iter()
                .map(|a| {
                    let identity = ids.get(a).cloned().unwrap_or_default();
                    let hint = if identity.is_empty() { dst::ProtocolHint::Unknown } else { dst::ProtocolHint::H2 };
                    dst::Endpoint {
                        addr: Some(pb_addr(*a)),
                        weight: 10_000,
                        identity,
                        protocol_hint: hint as i32,
                        ..Default::default()
                    }
                })
                .collect(),
        })),
    }
}

#[derive(Clone)]
struct Svc(Arc<State>);

#[tonic::async_trait]
impl dst::destination_server::Destination for Svc {
    type GetStream = Boxed<dst::Update>;

    async fn get(&self, req: tonic::Request<dst::GetDestination>) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        self.0.gets.fetch_add(1, Ordering::SeqCst);
        let rx = slot(&self.0.endpoints, &req.into_inner().authority).subscribe();
        let ids = self.0.identities.lock().unwrap().clone();
        // Deltas against what this stream has sent, as the real one does.
        type St = (watch::Receiver<Option<Vec<SocketAddr>>>, Option<Vec<SocketAddr>>, VecDeque<dst::Update>);
        let init: St = (rx, None, VecDeque::new());
        let stream = futures_util::stream::unfold(init, move |(mut rx, mut sent, mut queue)| {
            let ids = ids.clone();
            async move {
            loop {
                if let Some(u) = queue.pop_front() {
                    return Some((Ok(u), (rx, sent, queue)));
                }
                if sent.is_some() && rx.changed().await.is_err() {
                    return None;
                }
                let now = rx.borrow_and_update().clone();
                let no_endpoints = |exists| dst::Update {
                    update: Some(dst::update::Update::NoEndpoints(dst::NoEndpoints { exists })),
                };
                match (&sent, &now) {
                    (None, None) => queue.push_back(no_endpoints(false)),
                    (_, Some(v)) if v.is_empty() => queue.push_back(no_endpoints(true)),
                    (None, Some(new)) => queue.push_back(add(new, &ids)),
                    (Some(old), Some(new)) => {
                        let gone: Vec<_> = old.iter().filter(|a| !new.contains(a)).map(|a| pb_addr(*a)).collect();
                        if !gone.is_empty() {
                            queue.push_back(dst::Update { update: Some(dst::update::Update::Remove(dst::Remove { addrs: gone })) });
                        }
                        let fresh: Vec<_> = new.iter().filter(|a| !old.contains(a)).copied().collect();
                        if !fresh.is_empty() {
                            queue.push_back(add(&fresh, &ids));
                        }
                    }
                    (Some(_), None) => {}
                }
                sent = Some(now.unwrap_or_default());
            }
            }
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl pol::policy_server::Policy for Svc {
    type WatchOutboundStream = Boxed<pol::OutboundPolicy>;
    type WatchInboundStream = Boxed<pol::InboundPolicy>;

    async fn watch_outbound(
        &self,
        req: tonic::Request<pol::OutboundTarget>,
    ) -> Result<tonic::Response<Self::WatchOutboundStream>, tonic::Status> {
        let rx = slot(&self.0.outbound, &req.into_inner().authority).subscribe();
        Ok(tonic::Response::new(Box::pin(whole_values(rx, pol::OutboundPolicy::default()))))
    }

    async fn watch_inbound(
        &self,
        req: tonic::Request<pol::InboundPort>,
    ) -> Result<tonic::Response<Self::WatchInboundStream>, tonic::Status> {
        let key = match req.into_inner().workload {
            Some(pol::inbound_port::Workload::Identity(id)) => id,
            _ => return Err(tonic::Status::invalid_argument("identity required in these tests")),
        };
        let rx = slot(&self.0.inbound, &key).subscribe();
        // Unset: everyone allowed, like mesh-control's default.
        let default = pol::InboundPolicy {
            authorizations: vec![pol::Authorization { any_meshed: true, allow_plaintext: true, ..Default::default() }],
            ..Default::default()
        };
        Ok(tonic::Response::new(Box::pin(whole_values(rx, default))))
    }
}

/// Streams the current value (or `default`) and then every change whole.
fn whole_values<T: Clone + Send + Sync + 'static>(
    rx: watch::Receiver<Option<T>>,
    default: T,
) -> impl Stream<Item = Result<T, tonic::Status>> + Send {
    futures_util::stream::unfold((rx, true), move |(mut rx, first)| {
        let default = default.clone();
        async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let v = rx.borrow_and_update().clone().unwrap_or(default);
            Some((Ok(v), (rx, false)))
        }
    })
}

/// The fake control plane (TLS like mesh-control, with mesh-control's
/// identity), reachable through a relay that can be cut.
pub struct FakeControl {
    pub state: Arc<State>,
    relay: Cuttable,
    server: JoinHandle<()>,
    /// Its own CA, when not signed by a mesh-control's.
    ca: Option<TestCa>,
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeControl {
    /// With a CA of its own: proxies need [`Self::trust_args`].
    pub async fn start() -> Self {
        let ca = TestCa::new("fake control plane CA");
        let mut ctl = Self::start_signed_by(ca.data()).await;
        ctl.ca = Some(ca);
        ctl
    }

    /// Certified by the issuer in `data` (a mesh-control data dir): meshed
    /// proxies of that mesh trust it with their own `--trust-anchor`.
    pub async fn start_signed_by(data: &std::path::Path) -> Self {
        let state = Arc::new(State::default());
        let svc = Svc(Arc::clone(&state));
        let router = tonic::transport::Server::builder()
            .add_service(dst::destination_server::DestinationServer::new(svc.clone()))
            .add_service(pol::policy_server::PolicyServer::new(svc));
        let (grpc, server) = serve_tls(router, control_tls(data, &control_id())).await;
        let relay = Cuttable::start(grpc).await;
        Self { state, relay, server, ca: None }
    }

    /// `--trust-anchor` for a proxy that is not meshed with another CA.
    pub fn trust_args(&self) -> Vec<String> {
        let ca = self.ca.as_ref().expect("started with its own CA (FakeControl::start)");
        vec!["--trust-anchor".to_owned(), ca.anchor().to_str().unwrap().to_owned()]
    }

    /// The address proxies are given (the relay's).
    pub fn addr(&self) -> SocketAddr {
        self.relay.addr
    }

    /// The control plane goes away: every stream is cut and new
    /// connections are refused.
    pub fn kill(&self) {
        self.relay.cut();
    }
}

/// A TCP relay whose listener and connections can all be dropped at once.
struct Cuttable {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Cuttable {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A backend replica: answers `status` after `delay`, counts requests.
pub struct Replica {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub status: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replica {
    pub async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(200));
        let (h, s) = (hits.clone(), status.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, s) = (h.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let code = s.load(Ordering::SeqCst);
                        async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut r = Response::new(Full::new(Bytes::from(addr.to_string())));
                            *r.status_mut() = StatusCode::from_u16(code).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, hits, status, task }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A weighted backend of a rule.
pub fn backend(authority: &str, weight: u32) -> pol::WeightedBackend {
    pol::WeightedBackend {
        backend: Some(pol::Backend { authority: authority.into(), ..Default::default() }),
        weight,
        filters: vec![],
    }
}

/// An inbound policy letting in `identity` only (AuthorizationPolicy, default deny).
pub fn only(identity: &str) -> pol::InboundPolicy {
    pol::InboundPolicy {
        default_policy: pol::DefaultPolicy::Deny as i32,
        explicit: true,
        authorizations: vec![pol::Authorization { identities: vec![identity.to_owned()], ..Default::default() }],
        ..Default::default()
    }
}

/// An outbound policy with one rule.
pub fn one_rule(rule: pol::HttpRule, consecutive_failures: u32) -> pol::OutboundPolicy {
    pol::OutboundPolicy {
        exists: true,
        failure_accrual: Some(pol::FailureAccrual {
            consecutive_failures,
            min_backoff_ms: 1000,
            max_backoff_ms: 10_000,
            jitter_ratio: 0.0,
        }),
        http_routes: vec![pol::HttpRoute {
            meta: Some(pol::Meta { kind: "HTTPRoute".into(), namespace: "test".into(), name: "r".into() }),
            rules: vec![rule],
        }],
        ..Default::default()
    }
}
