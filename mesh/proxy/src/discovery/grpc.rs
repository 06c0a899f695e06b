//! The gRPC source: mesh-control's `weft.destination.v1.Destination.Get`
//! and `weft.policy.v1.Policy.WatchOutbound` / `WatchInbound` streams,
//! one per watched key, each kept open by its own task while anybody holds
//! a receiver of its watch: when the last one is dropped (the authority was
//! evicted) the task ends and the stream is cancelled, which frees its
//! state at mesh-control too.
//!
//! A stream that breaks (control plane restarted, network gone) is retried
//! with jittered exponential backoff (100 ms doubling to 10 s) and the last
//! value stays in force meanwhile: the first message of a new stream is the
//! full state again and replaces it. A request the control plane refuses
//! (`INVALID_ARGUMENT`) is retried only every 10 s. Protobuf is turned into the proxy's own
//! types ([`crate::discovery::policy`], [`super::Endpoint`]) here and nowhere else.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use mesh_api::{destination::v1 as dst, policy::v1 as pol};
use prometheus_client::metrics::gauge::Gauge;
use mesh_identity::SpiffeId;
use tokio::sync::watch;
use mesh_identity::{ControlEndpoint, TrustAnchors};
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

use crate::config::ControlTrust;
use tracing::{debug, info, warn};

use super::{
    DestinationSource, Endpoint, EndpointSet, InboundWatch, OutboundWatch, PolicySource, ProtocolHint, Resolution,
    DEFAULT_WEIGHT,
};
mod convert;

use crate::discovery::policy::{InboundPolicy, OutboundPolicy};

/// A control-plane address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {addr:?}: {reason} (expected host:port; mesh-control is reached over TLS)")]
pub struct AddressError {
    /// `--destination` or `--policy`.
    pub flag: &'static str,
    /// The value given.
    pub addr: String,
    /// Why it does not parse.
    pub reason: String,
}

/// A lazily connected TLS channel to mesh-control as `trust` describes it
/// (chain to its anchors, exactly its SPIFFE ID); it reconnects by itself
/// after failures.
pub fn channel(flag: &'static str, addr: &str, trust: &ControlTrust) -> Result<Channel, AddressError> {
    let error = |reason: String| AddressError { flag, addr: addr.to_owned(), reason };
    let anchors = TrustAnchors::from_pem(trust.identity.trust_domain(), &trust.trust_anchor_pem)
        .map_err(|e| error(format!("{}: {e}", trust.trust_anchor_source)))?;
    let control = ControlEndpoint::new(addr, anchors, trust.identity.clone()).map_err(|e| error(e.reason))?;
    let endpoint: GrpcEndpoint = control
        .endpoint()
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        // A control plane that vanished without a FIN is noticed within
        // seconds, and the stream retried.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    control.channel(endpoint).map_err(|e| error(e.to_string()))
}

/// Jittered exponential backoff between stream attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn longest(&mut self) {
        self.next = BACKOFF_MAX;
    }

    async fn wait(&mut self) {
        let d = self.next.mul_f64(0.5 + 0.5 * fastrand::f64());
        self.next = (self.next * 2).min(BACKOFF_MAX);
        tokio::time::sleep(d).await;
    }
}

type Watches<K, V> = Arc<Mutex<HashMap<K, watch::Sender<Option<Arc<V>>>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Returns the existing watch for `key`, or creates it and starts `task`,
/// which runs until the watch's last receiver is dropped: then the watch is
/// forgotten and the task (and its stream) dropped.
fn watch_or_start<K, V, F, Fut>(watches: &Watches<K, V>, key: K, task: F) -> watch::Receiver<Option<Arc<V>>>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
    F: FnOnce(watch::Sender<Option<Arc<V>>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut map = lock(watches);
    if let Some(tx) = map.get(&key) {
        return tx.subscribe();
    }
    let tx = watch::Sender::new(None);
    let rx = tx.subscribe();
    map.insert(key.clone(), tx.clone());
    let unwatched = unwatched(Arc::clone(watches), key, tx.clone());
    let work = task(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = unwatched => {}
        }
    });
    rx
}

/// Completes once `tx` has no receivers left, having removed it from
/// `watches`. Receivers are only made under the map's lock, so checking
/// under it cannot race with a new subscriber.
async fn unwatched<K: std::hash::Hash + Eq, V>(watches: Watches<K, V>, key: K, tx: watch::Sender<Option<Arc<V>>>) {
    loop {
        tx.closed().await;
        let mut map = lock(&watches);
        if tx.receiver_count() == 0 {
            // Only this task removes `key`, and only its own watch is there.
            map.remove(&key);
            return;
        }
    }
}

/// Counts one open stream in a gauge while it lives.
struct OpenStream(Gauge);

impl OpenStream {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Keeps one stream alive until dropped: `open` makes a new stream,
/// `apply` is called per message with `first` set on each stream's first
/// message; `streams` counts it while open.
async fn follow<M, Fut>(what: String, streams: Gauge, mut open: impl FnMut() -> Fut, mut apply: impl FnMut(M, bool))
where
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
{
    let mut backoff = Backoff::new();
    let mut healthy = true;
    loop {
        let ended = match open().await {
            Ok(resp) => {
                let _open = OpenStream::new(&streams);
                let mut stream = resp.into_inner();
                let mut first = true;
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            if first && !healthy {
                                info!("{what}: stream re-established");
                            }
                            apply(msg, first);
                            if first {
                                backoff.reset();
                                healthy = true;
                            }
                            first = false;
                        }
                        Ok(None) => break "the control plane closed the stream".to_owned(),
                        Err(status) => break status_text(&status),
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                // Asking again soon gets the same answer.
                backoff.longest();
                status_text(&status)
            }
            Err(status) => status_text(&status),
        };
        if healthy {
            warn!("{what}: {ended}; keeping the last known state, reconnecting with backoff");
            healthy = false;
        } else {
            debug!("{what}: {ended}");
        }
        backoff.wait().await;
    }
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

/// `weft.destination.v1.Destination` as a [`DestinationSource`].
#[derive(Debug)]
pub struct GrpcDestination {
    client: dst::destination_client::DestinationClient<Channel>,
    context_token: String,
    watches: Watches<String, EndpointSet>,
    streams: Gauge,
}

impl GrpcDestination {
    /// A source resolving through `addr` (connected on first use);
    /// `streams` counts its open streams.
    pub fn new(addr: &str, trust: &ControlTrust, context_token: String, streams: Gauge) -> Result<Arc<Self>, AddressError> {
        let client = dst::destination_client::DestinationClient::new(channel("--destination", addr, trust)?);
        Ok(Arc::new(Self { client, context_token, watches: Watches::default(), streams }))
    }
}

impl DestinationSource for GrpcDestination {
    fn resolve(&self, authority: &str) -> Resolution {
        let client = self.client.clone();
        let req = dst::GetDestination { authority: authority.to_owned(), context_token: self.context_token.clone() };
        let what = format!("destination {authority}");
        let streams = self.streams.clone();
        watch_or_start(&self.watches, authority.to_owned(), move |tx| async move {
            let mut state: HashMap<SocketAddr, Endpoint> = HashMap::new();
            let mut exists = false;
            follow(
                what.clone(),
                streams,
                || {
                    let mut c = client.clone();
                    let r = req.clone();
                    async move { c.get(r).await }
                },
                |update, first| {
                    if first {
                        state.clear();
                    }
                    apply_update(&what, &mut state, &mut exists, update);
                    let set = EndpointSet { exists, endpoints: state.values().cloned().collect() };
                    tx.send_replace(Some(Arc::new(set)));
                },
            )
            .await;
        })
    }
}

fn apply_update(what: &str, state: &mut HashMap<SocketAddr, Endpoint>, exists: &mut bool, update: dst::Update) {
    use dst::update::Update as U;
    match update.update {
        Some(U::Add(add)) => {
            *exists = true;
            for ep in add.endpoints {
                match endpoint(&ep) {
                    Ok(e) => {
                        state.insert(e.addr, e);
                    }
                    Err(e) => warn!("{what}: ignoring endpoint: {e}"),
                }
            }
        }
        Some(U::Remove(rm)) => {
            for a in rm.addrs {
                if let Some(addr) = socket_addr(Some(&a)) {
                    state.remove(&addr);
                }
            }
        }
        Some(U::NoEndpoints(n)) => {
            state.clear();
            *exists = n.exists;
        }
        None => {}
    }
}

/// A proto socket address; `None` when the IP is not 4 or 16 bytes.
pub fn socket_addr(a: Option<&dst::SocketAddr>) -> Option<SocketAddr> {
    let a = a?;
    let ip = match a.ip.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(&a.ip[..]).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(&a.ip[..]).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::try_from(a.port).ok()?))
}

fn endpoint(ep: &dst::Endpoint) -> Result<Endpoint, String> {
    let addr = socket_addr(ep.addr.as_ref()).ok_or_else(|| format!("bad address {:?}", ep.addr))?;
    let identity = match ep.identity.as_str() {
        "" => None,
        id => Some(SpiffeId::parse(id).map_err(|e| format!("{addr}: identity {id:?}: {e}"))?),
    };
    let hint = match dst::ProtocolHint::try_from(ep.protocol_hint) {
        Ok(dst::ProtocolHint::H2) if identity.is_some() => ProtocolHint::H2,
        Ok(dst::ProtocolHint::Opaque) if identity.is_some() => ProtocolHint::Opaque,
        _ => ProtocolHint::Unknown,
    };
    let weight = if ep.weight == 0 { DEFAULT_WEIGHT } else { ep.weight };
    Ok(Endpoint { addr, weight, identity: if hint == ProtocolHint::Unknown { None } else { identity }, hint })
}

/// Which workload's inbound policy to watch.
#[derive(Debug, Clone)]
pub enum Workload {
    /// By SPIFFE ID (local substrates, where workloads share an IP).
    Identity(String),
    /// By pod IP.
    Ip(IpAddr),
}

/// `weft.policy.v1.Policy` as a [`PolicySource`].
#[derive(Debug)]
pub struct GrpcPolicy {
    client: pol::policy_client::PolicyClient<Channel>,
    context_token: String,
    workload: Option<Workload>,
    outbound: Watches<String, OutboundPolicy>,
    inbound: Watches<u16, InboundPolicy>,
    streams: Gauge,
}

impl GrpcPolicy {
    /// A source watching through `addr`; inbound policy needs `workload`;
    /// `streams` counts its open streams.
    pub fn new(
        addr: &str,
        trust: &ControlTrust,
        context_token: String,
        workload: Option<Workload>,
        streams: Gauge,
    ) -> Result<Arc<Self>, AddressError> {
        let client = pol::policy_client::PolicyClient::new(channel("--policy", addr, trust)?);
        Ok(Arc::new(Self {
            client,
            context_token,
            workload,
            outbound: Watches::default(),
            inbound: Watches::default(),
            streams,
        }))
    }
}

impl PolicySource for GrpcPolicy {
    fn outbound(&self, authority: &str) -> OutboundWatch {
        let client = self.client.clone();
        let req = pol::OutboundTarget { authority: authority.to_owned(), context_token: self.context_token.clone() };
        let what = format!("outbound policy {authority}");
        let authority = authority.to_owned();
        let streams = self.streams.clone();
        watch_or_start(&self.outbound, authority.clone(), move |tx| async move {
            follow(
                what.clone(),
                streams,
                || {
                    let mut c = client.clone();
                    let r = req.clone();
                    async move { c.watch_outbound(r).await }
                },
                |msg, _| {
                    let (policy, problems) = convert::outbound(&authority, msg);
                    for p in problems {
                        warn!("{what}: {p}");
                    }
                    tx.send_replace(Some(Arc::new(policy)));
                },
            )
            .await;
        })
    }

    fn inbound(&self, port: u16) -> InboundWatch {
        let Some(workload) = self.workload.clone() else {
            // Nothing to ask with: the watch stays unknown.
            return watch::Sender::new(None).subscribe();
        };
        let client = self.client.clone();
        let req = pol::InboundPort {
            workload: Some(match workload {
                Workload::Identity(id) => pol::inbound_port::Workload::Identity(id),
                Workload::Ip(IpAddr::V4(ip)) => pol::inbound_port::Workload::PodIp(ip.octets().to_vec()),
                Workload::Ip(IpAddr::V6(ip)) => pol::inbound_port::Workload::PodIp(ip.octets().to_vec()),
            }),
            port: u32::from(port),
        };
        let what = format!("inbound policy port {port}");
        let streams = self.streams.clone();
        watch_or_start(&self.inbound, port, move |tx| async move {
            follow(
                what.clone(),
                streams,
                || {
                    let mut c = client.clone();
                    let r = req.clone();
                    async move { c.watch_inbound(r).await }
                },
                |msg, _| {
                    let policy = convert::inbound(msg);
                    info!(
                        "{what}: {} authorization(s), default {}",
                        policy.authorizations.len(),
                        policy.default
                    );
                    tx.send_replace(Some(Arc::new(policy)));
                },
            )
            .await;
        })
    }
}
