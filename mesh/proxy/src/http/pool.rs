//! The connections to one upstream. HTTP/1 ([`Pool`]): a bounded queue of
//! parked ones for reuse, each closed once parked unused for
//! `--upstream-idle-timeout`, and a cap on how many are open at once
//! (`--max-connections-per-endpoint`) where a request beyond it waits,
//! bounded, for one to be parked or closed. HTTP/2 ([`H2Pool`]): streams
//! spread over up to `--max-http2-connections-per-endpoint` connections of
//! `--upstream-http2-streams-per-connection` each, a request beyond that
//! waiting, bounded, for a stream to end.
//!
//! ```text
//!  checkout ─> a parked connection (taken: it cannot expire under us)
//!           ─> else a slot free: dial; the connection's task holds the
//!              slot until the connection ends
//!           ─> else wait for a park or a slot, until `within`: PoolFull
//! ```
//!
//! No lock: the parked queue is lock-free, the slots a semaphore, and a
//! connection's idle state one atomic its expiry timer and a checkout race
//! on (exactly one wins).

use std::{
    pin::pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::{http1, http2};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// A pooled HTTP/1 connection: its request half, and whether it is parked.
#[derive(Debug)]
pub struct Conn<B> {
    /// The request half.
    pub sender: http1::SendRequest<B>,
    /// In use or parked since when (its task closes it once parked too long).
    pub idle: PoolIdle,
}

/// The HTTP/1 connections to one upstream (see the module docs).
#[derive(Debug)]
pub struct Pool<B> {
    parked: ArrayQueue<Conn<B>>,
    /// Wakes one request waiting for a connection when one is parked.
    returned: Notify,
    /// One permit per open connection.
    slots: Arc<Semaphore>,
    max_open: usize,
}

/// What a request gets from [`Pool::checkout`].
#[derive(Debug)]
pub enum Checkout<B> {
    /// A parked connection, now in use.
    Parked(Conn<B>),
    /// Room for one more connection: the slot its task holds while it lives.
    Dial(OwnedSemaphorePermit),
}

/// Every connection the pool may open is open and in use, and none came
/// free within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The cap.
    pub max_open: usize,
    /// How long the request waited.
    pub waited: Duration,
}

impl<B> Pool<B> {
    /// A pool parking at most `max_parked` connections and holding at most
    /// `max_open` open (parked or in use).
    pub fn new(max_parked: usize, max_open: usize) -> Arc<Self> {
        let max_open = max_open.max(1);
        Arc::new(Self {
            parked: ArrayQueue::new(max_parked.max(1)),
            returned: Notify::new(),
            slots: Arc::new(Semaphore::new(max_open)),
            max_open,
        })
    }

    /// A parked connection, or a slot to dial one, waiting at most `within`
    /// for either when every slot is taken.
    pub async fn checkout(&self, within: Duration) -> Result<Checkout<B>, Full> {
        let deadline = Instant::now() + within;
        loop {
            // Registered before looking, so a connection parked between the
            // look and the wait is not missed.
            let mut returned = pin!(self.returned.notified());
            returned.as_mut().enable();
            while let Some(conn) = self.parked.pop() {
                if conn.idle.take() && !conn.sender.is_closed() {
                    return Ok(Checkout::Parked(conn));
                }
            }
            if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                return Ok(Checkout::Dial(slot));
            }
            tokio::select! {
                () = returned => {}
                slot = Arc::clone(&self.slots).acquire_owned() => {
                    return Ok(Checkout::Dial(slot.expect("the pool's semaphore is never closed")));
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Full { max_open: self.max_open, waited: within });
                }
            }
        }
    }

    /// Parks `conn` for reuse; a full queue (or a closed connection) drops
    /// it, which closes it and frees its slot.
    pub fn park(&self, conn: Conn<B>) {
        if conn.sender.is_closed() {
            return;
        }
        conn.idle.park();
        if self.parked.push(conn).is_ok() {
            self.returned.notify_one();
        }
    }

    /// Connections parked now (some may have expired and wait to be skipped).
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Connections open now (parked or in use).
    pub fn open(&self) -> usize {
        self.max_open - self.slots.available_permits()
    }
}

/// The HTTP/2 connections to one upstream: each carries at most
/// `per_conn` of this proxy's streams (RFC 9113 asks every peer to allow
/// at least 100 at once, and a peer proxy allows 200), another connection
/// is opened when every one is at that mark, up to `max_conns`, and past
/// `max_conns x per_conn` streams a request waits, bounded, for one to end
/// rather than queueing inside a connection without bound.
#[derive(Debug)]
pub struct H2Pool<B> {
    conns: ArcSwap<Vec<Arc<H2Conn<B>>>>,
    /// One permit per stream the upstream may carry from this proxy.
    streams: Arc<Semaphore>,
    per_conn: usize,
    max_conns: usize,
    /// Held while dialing: a burst finding every connection full opens one
    /// more, not one each.
    dialing: tokio::sync::Mutex<()>,
}

/// One HTTP/2 connection of an [`H2Pool`].
#[derive(Debug)]
pub struct H2Conn<B> {
    /// The request half.
    pub sender: http2::SendRequest<B>,
    /// This proxy's streams open on it.
    open: Arc<AtomicUsize>,
}

/// A stream on one connection: held by the response body until it ends.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<AtomicUsize>,
    _upstream: OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The upstream-wide stream permit a request holds while it finds (or
/// dials) a connection with room.
#[derive(Debug)]
pub struct StreamPermit(OwnedSemaphorePermit);

impl<B> H2Pool<B> {
    /// At most `max_conns` connections of `per_conn` streams each.
    pub fn new(max_conns: usize, per_conn: usize) -> Self {
        let (max_conns, per_conn) = (max_conns.max(1), per_conn.max(1));
        Self {
            conns: ArcSwap::from_pointee(Vec::new()),
            streams: Arc::new(Semaphore::new(max_conns.saturating_mul(per_conn).min(Semaphore::MAX_PERMITS))),
            per_conn,
            max_conns,
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    /// A stream permit, waiting at most `within` for one when the upstream
    /// carries all it may.
    pub async fn reserve(&self, within: Duration) -> Result<StreamPermit, Full> {
        match tokio::time::timeout(within, Arc::clone(&self.streams).acquire_owned()).await {
            Ok(permit) => Ok(StreamPermit(permit.expect("the pool's semaphore is never closed"))),
            Err(_) => Err(Full { max_open: self.max_conns, waited: within }),
        }
    }

    /// A live connection with room for one more stream (the least loaded),
    /// or the permit back.
    pub fn claim(&self, permit: StreamPermit) -> Result<(Arc<H2Conn<B>>, StreamSlot), StreamPermit> {
        let conns = self.conns.load();
        loop {
            let mut best: Option<(&Arc<H2Conn<B>>, usize)> = None;
            for c in conns.iter().filter(|c| !c.sender.is_closed()) {
                let open = c.open.load(Ordering::Acquire);
                if open < self.per_conn && best.is_none_or(|(_, o)| open < o) {
                    best = Some((c, open));
                }
            }
            let Some((c, open)) = best else { return Err(permit) };
            // Lost to a racing claim: look again (someone got a stream).
            if c.open.compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Ok((Arc::clone(c), StreamSlot { open: Arc::clone(&c.open), _upstream: permit.0 }));
            }
        }
    }

    /// Serializes dialing (see the field).
    pub async fn dialing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.dialing.lock().await
    }

    /// Whether another connection may be opened (closed ones are dropped first).
    pub fn may_dial(&self) -> bool {
        self.prune();
        self.conns.load().len() < self.max_conns
    }

    /// Adds a new connection and claims a stream on it.
    pub fn add(&self, sender: http2::SendRequest<B>, permit: StreamPermit) -> (Arc<H2Conn<B>>, StreamSlot) {
        let conn = Arc::new(H2Conn { sender, open: Arc::new(AtomicUsize::new(0)) });
        let slot = conn.slot(permit);
        self.conns.rcu(|v| {
            let mut next: Vec<_> = v.iter().filter(|c| !c.sender.is_closed()).cloned().collect();
            next.push(Arc::clone(&conn));
            next
        });
        (conn, slot)
    }

    /// The least loaded live connection whatever its load (every one full
    /// and no more may be opened: rare, as the permits bound the streams).
    pub fn least_loaded(&self, permit: StreamPermit) -> Result<(Arc<H2Conn<B>>, StreamSlot), StreamPermit> {
        let conns = self.conns.load();
        match conns.iter().filter(|c| !c.sender.is_closed()).min_by_key(|c| c.open.load(Ordering::Acquire)) {
            Some(c) => Ok((Arc::clone(c), c.slot(permit))),
            None => Err(permit),
        }
    }

    /// The cap on connections.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// This proxy's streams per connection before another is opened.
    pub fn per_conn(&self) -> usize {
        self.per_conn
    }

    /// Drops `conn` (it refused a stream: going away).
    pub fn remove(&self, conn: &Arc<H2Conn<B>>) {
        self.conns.rcu(|v| v.iter().filter(|c| !Arc::ptr_eq(c, conn)).cloned().collect::<Vec<_>>());
    }

    fn prune(&self) {
        if self.conns.load().iter().any(|c| c.sender.is_closed()) {
            self.conns.rcu(|v| v.iter().filter(|c| !c.sender.is_closed()).cloned().collect::<Vec<_>>());
        }
    }

    /// Live connections now.
    pub fn connections(&self) -> usize {
        self.conns.load().iter().filter(|c| !c.sender.is_closed()).count()
    }
}

impl<B> H2Conn<B> {
    fn slot(&self, permit: StreamPermit) -> StreamSlot {
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamSlot { open: Arc::clone(&self.open), _upstream: permit.0 }
    }
}

/// An HTTP/1 connection on loan to one response body, and the pool it goes
/// back to when the body has been read to the end.
#[derive(Debug)]
pub struct PooledSender<B> {
    pool: Arc<Pool<B>>,
    conn: Conn<B>,
}

impl<B> PooledSender<B> {
    /// `conn`, to go back to `pool` when its response body ends.
    pub fn new(pool: Arc<Pool<B>>, conn: Conn<B>) -> Self {
        Self { pool, conn }
    }

    /// Parks the connection for reuse (see [`Pool::park`]).
    pub fn release(self) {
        self.pool.park(self.conn);
    }
}

/// Whether a pooled upstream HTTP/1 connection is in use or parked, and
/// since when: its connection task closes it once parked for the pool idle
/// timeout (`--upstream-idle-timeout`), so an upstream is not held open by
/// connections nobody uses. Taking it from the pool and expiring race on
/// one atomic: exactly one wins.
#[derive(Debug, Clone)]
pub struct PoolIdle {
    inner: Arc<IdleInner>,
}

#[derive(Debug)]
struct IdleInner {
    epoch: Instant,
    /// Milliseconds after `epoch` when parked, or [`IN_USE`] / [`EXPIRED`].
    state: AtomicU64,
    /// Wakes the expiry timer when the connection is parked (a stored
    /// permit if it was not waiting yet: no park is missed).
    parked: Notify,
}

const IN_USE: u64 = u64::MAX;
const EXPIRED: u64 = u64::MAX - 1;

impl PoolIdle {
    /// A connection just dialed for a request: in use.
    pub fn in_use() -> Self {
        let inner = IdleInner { epoch: Instant::now(), state: AtomicU64::new(IN_USE), parked: Notify::new() };
        Self { inner: Arc::new(inner) }
    }

    /// Back in the pool, idle from now.
    pub fn park(&self) {
        let ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(EXPIRED - 1).min(EXPIRED - 1);
        self.inner.state.store(ms, Ordering::Release);
        self.inner.parked.notify_one();
    }

    /// Takes a parked connection for a request; `false`: it expired (its
    /// task is closing it), use another.
    pub fn take(&self) -> bool {
        let state = &self.inner.state;
        let mut seen = state.load(Ordering::Acquire);
        loop {
            if seen == EXPIRED {
                return false;
            }
            match state.compare_exchange(seen, IN_USE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// Resolves once the connection has been parked for `timeout` (and is
    /// then marked expired, so no request takes it).
    pub async fn expired(&self, timeout: Duration) {
        let state = &self.inner.state;
        loop {
            let seen = state.load(Ordering::Acquire);
            if seen == EXPIRED {
                return;
            }
            if seen == IN_USE {
                self.inner.parked.notified().await;
                continue;
            }
            let deadline = self.inner.epoch + Duration::from_millis(seen) + timeout;
            if Instant::now() < deadline {
                tokio::time::sleep_until(deadline).await;
                continue;
            }
            if state.compare_exchange(seen, EXPIRED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_parked_connection_expires_unless_taken_and_never_both() {
        let p = PoolIdle::in_use();
        let timeout = Duration::from_millis(50);
        let expiring = tokio::spawn({
            let p = p.clone();
            async move { p.expired(timeout).await }
        });
        p.park();
        assert!(p.take(), "parked, not yet expired: taken");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!expiring.is_finished(), "in use: never expires");
        p.park();
        tokio::time::timeout(Duration::from_secs(10), expiring).await.expect("expired once parked").unwrap();
        assert!(!p.take(), "expired: no request may take it");
    }

    #[tokio::test]
    async fn at_the_cap_a_checkout_waits_for_a_freed_slot_and_gives_up_in_time() {
        let pool: Arc<Pool<()>> = Pool::new(4, 2);
        let Ok(Checkout::Dial(a)) = pool.checkout(Duration::ZERO).await else { panic!("a free slot") };
        let Ok(Checkout::Dial(_b)) = pool.checkout(Duration::ZERO).await else { panic!("a free slot") };
        assert_eq!(pool.open(), 2);
        let full = pool.checkout(Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(full, Full { max_open: 2, waited: Duration::from_millis(20) });
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { matches!(pool.checkout(Duration::from_secs(30)).await, Ok(Checkout::Dial(_))) }
        });
        drop(a);
        assert!(tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("woken by the freed slot").unwrap());
    }
}
