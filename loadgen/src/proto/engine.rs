//! The run loop of the protocols in [`super`]: the same window, sequencer, recorders and
//! record as HTTP (`crate::engine`), with two shapes of connection.
//!
//! - **Lanes** (TCP, TCP churn, WebSocket): one exchange in flight per connection, like
//!   HTTP/1; open-loop slots wait in one shared FIFO for a free lane (that wait is in the
//!   corrected latency).
//! - **Multiplexed** (gRPC): slots go round robin to the h2c connections and become calls at
//!   once, like HTTP/2, capped at [`crate::engine::H2_MAX_IN_FLIGHT`] in flight (error class
//!   `overflow` past it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::JoinSet;

use super::{grpc, tcp, ws, Proto};
use crate::client::Target;
use crate::engine::{LaneSource, MuxSource, H2_MAX_IN_FLIGHT, RECONNECT_PAUSE, START_LEAD};
use crate::error_class;
use crate::recorder::{merge, Outcome, Recorder};
use crate::sequencer::{self, Sink, Slot, SlotQueue};
use crate::timing::Window;
use crate::{LoadConfig, LoadError, Mode, Progress, Timeline};

/// Where and what to send, prepared once for every connection of a run.
#[derive(Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// For error messages.
    pub display: String,
    /// Host header / `:authority` (explicit-mode proxies route on it).
    pub authority: String,
    /// WebSocket: the request path of the upgrade.
    pub path: String,
    /// What one exchange sends: `body_size` bytes.
    pub payload: Bytes,
    pub timeout: Duration,
    pub proto: Proto,
}

/// Why a connection could not be opened (error class `connect`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("TCP connect: {0}")]
    Tcp(#[from] std::io::Error),
    #[error("{what} handshake: {detail}")]
    Handshake { what: &'static str, detail: String },
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// A connection that carries one exchange at a time.
pub(crate) trait Lane: Sized + Send + 'static {
    /// Each exchange opens (and closes) its own connection: counted as opened per exchange.
    const CHURN: bool = false;
    fn open(peer: &Peer) -> impl Future<Output = Result<Self, OpenError>> + Send;
    /// One exchange; `Err` is its error class, and the connection is dropped after it.
    fn exchange(&mut self, peer: &Peer) -> impl Future<Output = Result<(), &'static str>> + Send;
}

/// Opens `peer`'s TCP connection with TCP_NODELAY: exchanges are small writes that must
/// leave at once.
pub(crate) async fn tcp_connect(peer: &Peer) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect(peer.addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

pub(crate) async fn run(
    cfg: LoadConfig,
    proto: Proto,
    progress: Arc<Progress>,
    slice: Option<Duration>,
) -> Result<(record::Load, Option<Timeline>), LoadError> {
    let peer = Arc::new(Peer::resolve(&cfg, proto).await?);
    let recorders = match proto {
        Proto::Grpc | Proto::GrpcStream { .. } => multiplexed(&cfg, peer, &progress, slice).await?,
        Proto::Tcp => lanes::<tcp::Steady>(&cfg, peer, &progress, slice).await?,
        Proto::TcpChurn => lanes::<tcp::Churn>(&cfg, peer, &progress, slice).await?,
        Proto::WebSocket => lanes::<ws::WsLane>(&cfg, peer, &progress, slice).await?,
    };
    let mut merged = merge(recorders);
    let timeline = merged.timeline.take();
    Ok((merged.into_load(&cfg)?, timeline))
}

/// One exchange of `cfg`'s protocol (`cfg.proto` must be set) over a fresh connection,
/// within `cfg.timeout`: a readiness check that the whole chain answers in this protocol.
pub async fn probe(cfg: &LoadConfig) -> Result<(), String> {
    let Some(proto) = cfg.proto else {
        return Err("probe: no protocol other than HTTP given".into());
    };
    let peer = Arc::new(Peer::resolve(cfg, proto).await.map_err(|e| e.to_string())?);
    async fn once<C: Lane>(peer: &Peer) -> Result<(), String> {
        let mut c = C::open(peer).await.map_err(|e| e.to_string())?;
        c.exchange(peer)
            .await
            .map_err(|class| format!("{} exchange failed: {class}", peer.proto))
    }
    let attempt = async {
        match proto {
            Proto::Grpc | Proto::GrpcStream { .. } => {
                let c = grpc::Conn::open(&peer).await.map_err(|e| e.to_string())?;
                c.call(peer.clone())
                    .await
                    .map_err(|class| format!("{proto} call failed: {class}"))
            }
            Proto::Tcp => once::<tcp::Steady>(&peer).await,
            Proto::TcpChurn => once::<tcp::Churn>(&peer).await,
            Proto::WebSocket => once::<ws::WsLane>(&peer).await,
        }
    };
    tokio::time::timeout(cfg.timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no {proto} answer from {} within {:?}",
                peer.addr, cfg.timeout
            ))
        })
}

impl Peer {
    async fn resolve(cfg: &LoadConfig, proto: Proto) -> Result<Peer, LoadError> {
        cfg.validate()?;
        let base = Target::resolve(cfg).await?;
        let authority = cfg.target.authority().expect("validated").to_string();
        Ok(Peer {
            addr: base.addr,
            display: base.display,
            authority: cfg.host.clone().unwrap_or(authority),
            path: cfg
                .target
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            // Every byte value in turn, from 0: binary as a real opaque protocol is, and
            // told apart from HTTP by a proxy's detection from the first byte (a run of
            // letters could be an HTTP method still arriving, and be waited on).
            payload: (0..cfg.body_size).map(|i| i as u8).collect::<Vec<u8>>().into(),
            timeout: cfg.timeout,
            proto,
        })
    }
}

/// Opens every connection before the clock starts: a target that is down is a configuration
/// problem, not a run full of connect errors.
async fn open_all<C, F, Fut>(peer: &Arc<Peer>, n: usize, open: F) -> Result<Vec<C>, LoadError>
where
    C: Send + 'static,
    F: Fn(Arc<Peer>) -> Fut,
    Fut: Future<Output = Result<C, OpenError>> + Send + 'static,
{
    let mut opening = JoinSet::new();
    for i in 0..n {
        let limit = peer.timeout;
        let fut = open(peer.clone());
        opening.spawn(async move {
            let c = tokio::time::timeout(limit, fut)
                .await
                .unwrap_or(Err(OpenError::Timeout(limit)));
            (i, c)
        });
    }
    let mut conns: Vec<Option<C>> = (0..n).map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (i, c) = joined.map_err(|e| LoadError::Task(e.to_string()))?;
        conns[i] = Some(c.map_err(|e| LoadError::Unreachable {
            target: format!("{} ({}, {})", peer.display, peer.addr, peer.proto),
            what: format!("connection {} of {n}: {e}", i + 1),
        })?);
    }
    Ok(conns
        .into_iter()
        .map(|c| c.expect("every index joined"))
        .collect())
}

/// The run's window and a recorder factory; the closed loop's warm-up flag is cleared by a
/// task of its own (as in `crate::engine`).
struct Clock {
    window: Window,
    progress: Arc<Progress>,
    slice: Option<Duration>,
}

impl Clock {
    fn start(cfg: &LoadConfig, progress: &Arc<Progress>, slice: Option<Duration>) -> Clock {
        progress.in_warmup.store(!cfg.warmup.is_zero(), Ordering::Relaxed);
        Clock {
            window: Window::new(Instant::now() + START_LEAD, cfg.warmup, cfg.duration),
            progress: progress.clone(),
            slice,
        }
    }

    fn recorder(&self) -> Recorder {
        let mut r = Recorder::new(self.window, self.progress.clone()).with_timeline(self.slice);
        r.connection_opened();
        r
    }

    /// Closed loop: nothing else ends the warm-up for a progress display.
    fn end_warmup_later(&self, tasks: &mut JoinSet<Recorder>) {
        let (window, p) = (self.window, self.progress.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(window.warm_end.into()).await;
            p.in_warmup.store(false, Ordering::Relaxed);
            // Records nothing; an empty recorder merges as a no-op.
            Recorder::new(window, p)
        });
    }
}

/// Waits for every task and the sequencer thread.
async fn finish(
    mut tasks: JoinSet<Recorder>,
    sequencer: Option<std::io::Result<std::thread::JoinHandle<u64>>>,
) -> Result<Vec<Recorder>, LoadError> {
    let sequencer = sequencer
        .transpose()
        .map_err(|e| LoadError::Task(format!("cannot start the sequencer thread: {e}")))?;
    let mut recorders = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        recorders.push(joined.map_err(|e| LoadError::Task(e.to_string()))?);
    }
    if let Some(handle) = sequencer {
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| LoadError::Task(e.to_string()))?
            .map_err(|_| LoadError::Task("the sequencer thread panicked".into()))?;
    }
    Ok(recorders)
}

async fn lanes<C: Lane>(
    cfg: &LoadConfig,
    peer: Arc<Peer>,
    progress: &Arc<Progress>,
    slice: Option<Duration>,
) -> Result<Vec<Recorder>, LoadError> {
    let n = cfg.connections;
    let conns = open_all(&peer, n, |p| async move { C::open(&p).await }).await?;
    let clock = Clock::start(cfg, progress, slice);
    let mut tasks = JoinSet::new();
    let mut sequencer = None;
    match cfg.mode {
        Mode::Open { rate } => {
            let queue = Arc::new(SlotQueue::new(clock.window.start, rate));
            for c in conns {
                let src = LaneSource::Shared {
                    queue: queue.clone(),
                    drain_deadline: clock.window.end + cfg.timeout,
                };
                tasks.spawn(lane(peer.clone(), c, src, clock.recorder()));
            }
            sequencer = Some(sequencer::spawn(
                rate,
                clock.window,
                Sink::Shared(queue),
                progress.clone(),
            ));
        }
        Mode::Closed { concurrency } => {
            clock.end_warmup_later(&mut tasks);
            for (i, c) in conns.into_iter().enumerate() {
                // One exchange at a time per lane: any share of the concurrency keeps it busy.
                let src = LaneSource::Closed {
                    active: i < concurrency,
                    end: clock.window.end,
                };
                tasks.spawn(lane(peer.clone(), c, src, clock.recorder()));
            }
        }
    }
    finish(tasks, sequencer).await
}

/// One lane: one exchange in flight, reopening its connection after a failure.
async fn lane<C: Lane>(peer: Arc<Peer>, first: C, src: LaneSource, mut rec: Recorder) -> Recorder {
    let closed_loop = src.is_closed_loop();
    let mut conn = Some(first);
    while let Some(slot) = src.next().await {
        let now = Instant::now();
        if src.expired(now) {
            rec.record(slot.scheduled, None, now, Outcome::Failed(error_class::TIMEOUT));
            continue;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => match tokio::time::timeout(peer.timeout, C::open(&peer)).await {
                Ok(Ok(c)) => {
                    rec.connection_opened();
                    c
                }
                failed => {
                    let e = failed.unwrap_or(Err(OpenError::Timeout(peer.timeout))).err();
                    tracing::debug!(error = ?e, "reconnect failed");
                    rec.record(
                        slot.scheduled,
                        None,
                        Instant::now(),
                        Outcome::Failed(error_class::CONNECT),
                    );
                    if closed_loop {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let sent = Instant::now();
        // In the closed loop there is no schedule: the send is the start.
        let scheduled = if closed_loop { sent } else { slot.scheduled };
        let result = tokio::time::timeout(peer.timeout, c.exchange(&peer))
            .await
            .unwrap_or(Err(error_class::TIMEOUT));
        let done = Instant::now();
        match result {
            Ok(()) => {
                if C::CHURN {
                    rec.connection_opened();
                }
                rec.record(scheduled, Some(sent), done, Outcome::Response(StatusCode::OK));
                conn = Some(c);
            }
            // A churn connect that failed never reached the wire.
            Err(class) if C::CHURN && class == error_class::CONNECT => {
                rec.record(scheduled, None, done, Outcome::Failed(class));
                conn = Some(c);
            }
            Err(class) => {
                if C::CHURN {
                    rec.connection_opened();
                    conn = Some(c);
                }
                rec.record(scheduled, Some(sent), done, Outcome::Failed(class));
            }
        }
    }
    rec
}

async fn multiplexed(
    cfg: &LoadConfig,
    peer: Arc<Peer>,
    progress: &Arc<Progress>,
    slice: Option<Duration>,
) -> Result<Vec<Recorder>, LoadError> {
    let n = cfg.connections;
    let conns = open_all(&peer, n, |p| async move { grpc::Conn::open(&p).await }).await?;
    let clock = Clock::start(cfg, progress, slice);
    let mut tasks = JoinSet::new();
    let mut sequencer = None;
    match cfg.mode {
        Mode::Open { rate } => {
            let mut txs = Vec::with_capacity(n);
            for c in conns {
                let (tx, rx) = unbounded_channel();
                txs.push(tx);
                let src = MuxSource::Open {
                    rx,
                    cap: H2_MAX_IN_FLIGHT.div_ceil(n),
                    drain_deadline: clock.window.end + cfg.timeout,
                };
                tasks.spawn(mux(peer.clone(), c, src, clock.recorder()));
            }
            sequencer = Some(sequencer::spawn(
                rate,
                clock.window,
                Sink::RoundRobin(txs),
                progress.clone(),
            ));
        }
        Mode::Closed { concurrency } => {
            clock.end_warmup_later(&mut tasks);
            for (i, c) in conns.into_iter().enumerate() {
                // Spread `concurrency` as evenly as possible over the connections.
                let depth = concurrency / n + usize::from(i < concurrency % n);
                let src = MuxSource::Closed {
                    depth,
                    end: clock.window.end,
                };
                tasks.spawn(mux(peer.clone(), c, src, clock.recorder()));
            }
        }
    }
    finish(tasks, sequencer).await
}

type Done = (Instant, Option<Instant>, Outcome, Instant);

/// One h2c connection: every slot becomes a call (a stream) at once.
async fn mux(peer: Arc<Peer>, first: grpc::Conn, mut src: MuxSource, mut rec: Recorder) -> Recorder {
    let mut conn = Some(first);
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        let slot = match &mut src {
            MuxSource::Open { rx, .. } => tokio::select! {
                slot = rx.recv(), if open => match slot {
                    Some(slot) => slot,
                    None => { open = false; continue; }
                },
                Some((scheduled, sent, outcome, done)) = in_flight.next() => {
                    rec.record(scheduled, sent, done, outcome);
                    continue;
                }
                else => break,
            },
            MuxSource::Closed { depth, end } => {
                if in_flight.len() < *depth && Instant::now() < *end {
                    Slot {
                        scheduled: Instant::now(),
                    }
                } else if let Some((scheduled, sent, outcome, done)) = in_flight.next().await {
                    rec.record(scheduled, sent, done, outcome);
                    continue;
                } else {
                    break;
                }
            }
        };
        let now = Instant::now();
        if let MuxSource::Open {
            cap, drain_deadline, ..
        } = &src
        {
            let class = if now > *drain_deadline {
                Some(error_class::TIMEOUT)
            } else {
                (in_flight.len() >= *cap).then_some(error_class::OVERFLOW)
            };
            if let Some(class) = class {
                rec.record(slot.scheduled, None, now, Outcome::Failed(class));
                continue;
            }
        }
        let closed_loop = matches!(src, MuxSource::Closed { .. });
        if conn.as_ref().is_none_or(grpc::Conn::is_closed) {
            let opened = tokio::time::timeout(peer.timeout, grpc::Conn::open(&peer)).await;
            match opened {
                Ok(Ok(c)) => {
                    rec.connection_opened();
                    conn = Some(c);
                }
                failed => {
                    tracing::debug!(error = ?failed.err(), "gRPC reconnect failed");
                    conn = None;
                    rec.record(
                        slot.scheduled,
                        None,
                        Instant::now(),
                        Outcome::Failed(error_class::CONNECT),
                    );
                    if closed_loop {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                    continue;
                }
            }
        }
        let call = conn.as_ref().expect("connected above").call(peer.clone());
        let sent = Instant::now();
        let scheduled = if closed_loop { sent } else { slot.scheduled };
        let limit = peer.timeout;
        in_flight.push(async move {
            let result = tokio::time::timeout(limit, call)
                .await
                .unwrap_or(Err(error_class::TIMEOUT));
            let outcome = match result {
                Ok(()) => Outcome::Response(StatusCode::OK),
                Err(class) => Outcome::Failed(class),
            };
            let done: Done = (scheduled, Some(sent), outcome, Instant::now());
            done
        });
    }
    rec
}
