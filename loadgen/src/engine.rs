//! Wires a run together: connections, sequencer (open loop), connection tasks, recorders.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::client::{H1Conn, H2Conn, Target};
use crate::error_class;
use crate::recorder::{merge, Outcome, Recorder};
use crate::sequencer::{self, Sink, Slot, SlotQueue};
use crate::timing::Window;
use crate::{LoadConfig, LoadError, Mode, Progress};

/// Sanity cap on HTTP/2 streams in flight over all connections (open loop). A healthy target
/// never gets near it; past it, slots are counted as error class `overflow` rather than piling
/// up without bound.
pub(crate) const H2_MAX_IN_FLIGHT: usize = 16_384;

/// Lead time between opening the connections and the first slot, so every task is waiting.
pub(crate) const START_LEAD: Duration = Duration::from_millis(10);

/// Closed loop only: pause after a failed connect so a dead target is not hammered in a spin.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

pub(crate) async fn run(
    cfg: LoadConfig,
    progress: Arc<Progress>,
    slice: Option<Duration>,
) -> Result<(record::Load, Option<crate::Timeline>), LoadError> {
    cfg.validate()?;
    let target = Arc::new(Target::resolve(&cfg).await?);
    let n = cfg.connections;

    // Open everything before the clock starts: a target that is down is a configuration
    // problem, not a run full of connect errors.
    let mut opening = JoinSet::new();
    for i in 0..n {
        let target = target.clone();
        let http2 = cfg.http2;
        opening.spawn(async move {
            let conn = if http2 {
                H2Conn::connect(&target).await.map(Conn::H2)
            } else {
                H1Conn::connect(&target).await.map(Conn::H1)
            };
            (i, conn)
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (i, conn) = joined.map_err(|e| LoadError::Task(e.to_string()))?;
        let conn = conn.map_err(|e| LoadError::Unreachable {
            target: format!("{} ({})", target.display, target.addr),
            what: format!("connection {} of {n}: {e}", i + 1),
        })?;
        conns[i] = Some(conn);
    }

    progress
        .in_warmup
        .store(!cfg.warmup.is_zero(), Ordering::Relaxed);
    let window = Window::new(Instant::now() + START_LEAD, cfg.warmup, cfg.duration);
    // Slots still queued this long after the end are given up as timeouts.
    let drain_deadline = window.end + cfg.timeout;
    let mut tasks: JoinSet<Recorder> = JoinSet::new();
    let mut sequencer = None;
    let new_recorder = || {
        let mut r = Recorder::new(window, progress.clone()).with_timeline(slice);
        r.connection_opened();
        r
    };

    match cfg.mode {
        Mode::Open { rate } => {
            if cfg.http2 {
                let mut txs = Vec::with_capacity(n);
                let cap = H2_MAX_IN_FLIGHT.div_ceil(n);
                for conn in conns {
                    let (tx, rx) = unbounded_channel();
                    txs.push(tx);
                    let Some(Conn::H2(conn)) = conn else {
                        unreachable!("opened as HTTP/2")
                    };
                    let src = MuxSource::Open {
                        rx,
                        cap,
                        drain_deadline,
                    };
                    tasks.spawn(h2_task(target.clone(), conn, src, new_recorder()));
                }
                sequencer = Some(sequencer::spawn(
                    rate,
                    window,
                    Sink::RoundRobin(txs),
                    progress.clone(),
                ));
            } else {
                let queue = Arc::new(SlotQueue::new(window.start, rate));
                for conn in conns {
                    let Some(Conn::H1(conn)) = conn else {
                        unreachable!("opened as HTTP/1")
                    };
                    let src = LaneSource::Shared {
                        queue: queue.clone(),
                        drain_deadline,
                    };
                    tasks.spawn(h1_task(target.clone(), conn, src, new_recorder()));
                }
                sequencer = Some(sequencer::spawn(
                    rate,
                    window,
                    Sink::Shared(queue),
                    progress.clone(),
                ));
            }
        }
        Mode::Closed { concurrency } => {
            let p = progress.clone();
            tasks.spawn(async move {
                tokio::time::sleep_until(window.warm_end.into()).await;
                p.in_warmup.store(false, Ordering::Relaxed);
                // This task records nothing; an empty recorder merges as a no-op.
                Recorder::new(window, p)
            });
            for (i, conn) in conns.into_iter().enumerate() {
                // Spread `concurrency` as evenly as possible over the connections.
                let depth = concurrency / n + usize::from(i < concurrency % n);
                match conn.expect("opened") {
                    Conn::H1(conn) => {
                        // HTTP/1 carries one request at a time: a connection with any share
                        // of the concurrency just runs back to back.
                        let src = LaneSource::Closed {
                            active: depth > 0,
                            end: window.end,
                        };
                        tasks.spawn(h1_task(target.clone(), conn, src, new_recorder()));
                    }
                    Conn::H2(conn) => {
                        let src = MuxSource::Closed { depth, end: window.end };
                        tasks.spawn(h2_task(target.clone(), conn, src, new_recorder()));
                    }
                }
            }
        }
    }
    let sequencer = sequencer
        .transpose()
        .map_err(|e| LoadError::Task(format!("cannot start the sequencer thread: {e}")))?;

    let mut recorders = Vec::with_capacity(n + 1);
    while let Some(joined) = tasks.join_next().await {
        recorders.push(joined.map_err(|e| LoadError::Task(e.to_string()))?);
    }
    if let Some(handle) = sequencer {
        // All senders are finished, so the sequencer has already dropped its queues and ended.
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| LoadError::Task(e.to_string()))?
            .map_err(|_| LoadError::Task("the sequencer thread panicked".into()))?;
    }
    let mut merged = merge(recorders);
    let timeline = merged.timeline.take();
    Ok((merged.into_load(&cfg)?, timeline))
}

enum Conn {
    H1(H1Conn),
    H2(H2Conn),
}

/// Where a one-at-a-time connection (HTTP/1, and the protocol lanes of
/// [`crate::proto`]) gets its next slot.
pub(crate) enum LaneSource {
    /// Open loop: slots from the sequencer, first free connection takes the oldest.
    Shared {
        queue: Arc<SlotQueue>,
        drain_deadline: Instant,
    },
    /// Closed loop: a new exchange as soon as the previous one is done, until `end` (the
    /// window's end).
    Closed { active: bool, end: Instant },
}

impl LaneSource {
    pub(crate) async fn next(&self) -> Option<Slot> {
        match self {
            LaneSource::Shared { queue, .. } => queue.next().await,
            LaneSource::Closed { active, end } => {
                let now = Instant::now();
                (*active && now < *end).then_some(Slot { scheduled: now })
            }
        }
    }

    /// An open-loop slot taken past the drain deadline: counted as a timeout, not sent.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        matches!(self, LaneSource::Shared { drain_deadline, .. } if now > *drain_deadline)
    }

    pub(crate) fn is_closed_loop(&self) -> bool {
        matches!(self, LaneSource::Closed { .. })
    }
}

/// One HTTP/1 connection: one request in flight, reconnecting after failures.
async fn h1_task(target: Arc<Target>, conn: H1Conn, src: LaneSource, mut rec: Recorder) -> Recorder {
    let mut conn = Some(conn);
    let mut timer = pin!(tokio::time::sleep(target.timeout()));
    loop {
        // While idle, keep polling the connection so a close by the server is noticed now,
        // not as a failed request later.
        let slot = match conn.as_mut() {
            Some(c) => tokio::select! {
                biased;
                slot = src.next() => slot,
                () = c.closed() => { conn = None; continue; }
            },
            None => src.next().await,
        };
        let Some(slot) = slot else { break };
        if src.expired(Instant::now()) {
            rec.record(
                slot.scheduled,
                None,
                Instant::now(),
                Outcome::Failed(error_class::TIMEOUT),
            );
            continue;
        }
        let c = match conn.take() {
            Some(c) => c,
            None => match H1Conn::connect(&target).await {
                Ok(c) => {
                    rec.connection_opened();
                    c
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    rec.record(
                        slot.scheduled,
                        None,
                        Instant::now(),
                        Outcome::Failed(error_class::CONNECT),
                    );
                    if src.is_closed_loop() {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let sent = Instant::now();
        // In the closed loop there is no schedule: the send is the start.
        let scheduled = if src.is_closed_loop() {
            sent
        } else {
            slot.scheduled
        };
        let exchange = c.exchange(target.h1_request());
        let (next, outcome) = match within(timer.as_mut(), sent + target.timeout(), exchange).await
        {
            Some(r) => r,
            // The connection's state is unknown after a timeout: drop it.
            None => (None, Outcome::Failed(error_class::TIMEOUT)),
        };
        rec.record(scheduled, Some(sent), Instant::now(), outcome);
        conn = next;
    }
    rec
}

/// `fut`, or `None` at `deadline`. `timer` is the task's one timer, re-armed lazily: it is
/// only ever armed for an earlier request's deadline, which cannot be later than this one, so
/// when it fires too early it is moved to `deadline` and otherwise left alone. That is one
/// timer-wheel update per timeout period instead of one per request (`tokio::time::timeout`),
/// and a request still times out at `deadline`.
async fn within<T>(
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline.into());
            }
        }
    }
}

/// Where a multiplexed connection (HTTP/2, and gRPC in [`crate::proto`]) gets its slots.
pub(crate) enum MuxSource {
    /// Open loop: this connection's share of the sequencer's slots, at most `cap` in flight.
    Open {
        rx: UnboundedReceiver<Slot>,
        cap: usize,
        drain_deadline: Instant,
    },
    /// Closed loop: `depth` exchanges in flight until `end` (the window's end).
    Closed { depth: usize, end: Instant },
}

/// One HTTP/2 connection: every slot becomes a stream at once.
async fn h2_task(
    target: Arc<Target>,
    conn: H2Conn,
    mut src: MuxSource,
    mut rec: Recorder,
) -> Recorder {
    let mut conn = Some(conn);
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        let slot = match &mut src {
            MuxSource::Open { rx, .. } => tokio::select! {
                slot = rx.recv(), if open => match slot {
                    Some(slot) => slot,
                    None => { open = false; continue; }
                },
                Some((slot, sent, outcome, done)) = in_flight.next() => {
                    rec.record(slot, Some(sent), done, outcome);
                    continue;
                }
                else => break,
            },
            MuxSource::Closed { depth, end } => {
                if in_flight.len() < *depth && Instant::now() < *end {
                    Slot {
                        scheduled: Instant::now(),
                    }
                } else if let Some((slot, sent, outcome, done)) = in_flight.next().await {
                    rec.record(slot, Some(sent), done, outcome);
                    continue;
                } else {
                    break;
                }
            }
        };
        let now = Instant::now();
        if let MuxSource::Open {
            cap,
            drain_deadline,
            ..
        } = &src
        {
            if now > *drain_deadline {
                rec.record(
                    slot.scheduled,
                    None,
                    now,
                    Outcome::Failed(error_class::TIMEOUT),
                );
                continue;
            }
            if in_flight.len() >= *cap {
                rec.record(
                    slot.scheduled,
                    None,
                    now,
                    Outcome::Failed(error_class::OVERFLOW),
                );
                continue;
            }
        }
        if conn.as_ref().is_none_or(H2Conn::is_closed) {
            match H2Conn::connect(&target).await {
                Ok(c) => {
                    rec.connection_opened();
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    conn = None;
                    rec.record(
                        slot.scheduled,
                        None,
                        Instant::now(),
                        Outcome::Failed(error_class::CONNECT),
                    );
                    if matches!(src, MuxSource::Closed { .. }) {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let req = target.request();
        let sent = Instant::now();
        let scheduled = if matches!(src, MuxSource::Closed { .. }) {
            sent
        } else {
            slot.scheduled
        };
        in_flight.push(stream(c.start(req, target.timeout()), scheduled, sent));
    }
    rec
}

/// One stream with its times; a single fn so all in-flight futures share one type.
async fn stream(
    response: impl Future<Output = (Outcome, Instant)>,
    scheduled: Instant,
    sent: Instant,
) -> (Instant, Instant, Outcome, Instant) {
    let (outcome, done) = response.await;
    (scheduled, sent, outcome, done)
}
