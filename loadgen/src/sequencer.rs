//! The open-loop sequencer: one OS thread that releases slot i at exactly `t0 + i / rate`.
//!
//! It never waits for the senders: a slot that finds no free sender waits in a queue and that
//! wait shows up in the corrected latency, which is the point of an open loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

use crate::timing::{precise_timer_slack, slot_offset, wait_until, wait_until_coarse, Window};
use crate::Progress;

/// Above this rate the sequencer no longer spins out the last [`crate::timing::SPIN`] of each
/// wait (that would take more than a quarter of a core): it sleeps, at most once per
/// [`BATCH_GAP`], and releases every slot that is due when it wakes. Slots then go out up to
/// that gap plus a sleep's overshoot (tens of µs) after their time, which their corrected
/// latency shows.
pub(crate) const SPIN_MAX_RATE: f64 = 4_000.0;

/// Above [`SPIN_MAX_RATE`] the sequencer wakes at most once per this gap and releases every
/// slot due by then. Each wake costs the load thread a context switch (the sequencer shares
/// its core); at 50k rps, waking for each slot spent ~44 % of a core switching. A slot then
/// goes out up to this much (plus a sleep's overshoot) after its time when every connection
/// is idle, which its corrected latency shows; a connection that comes free takes due slots
/// without waiting for a release ([`SlotQueue`]). Measured at 50k rps, one thread, 3 alternating
/// rounds (docs/FIGURES.md): waking per slot achieved 79-93 % of the rate with every send
/// late; a 100 µs gap 97-100 % with 11-70 % late; 250 µs 100 % with 1.7-8 % late.
pub(crate) const BATCH_GAP: std::time::Duration = std::time::Duration::from_micros(250);

/// A unit of work: send one request, whose latency counts from `scheduled`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub scheduled: Instant,
}

/// HTTP/1's one FIFO shared by all connections: slot `i` is due at `start + i / rate`, and
/// the queue only counts how many slots were released and how many taken, so a release is
/// one atomic store and a free connection takes the oldest slot with one compare-and-swap.
///
/// A connection that comes free does not wait for the sequencer either: it takes the oldest
/// slot whose time has come even if the sequencer has not released it yet (up to the bound
/// the sequencer allows, [`SlotQueue::allow_through`]). The sequencer's wakes are then only
/// needed for idle connections; a busy load thread, which is when the sequencer thread (on
/// the same core) is woken late, takes due slots as its connections free up. Measured at
/// 50k rps on one thread: docs/FIGURES.md, "Connections take due slots themselves".
pub(crate) struct SlotQueue {
    start: Instant,
    rate: f64,
    released: AtomicU64,
    /// Slots below this may be taken once due without waiting to be released: the warm-up's
    /// slots first, then the whole window's (the sequencer flips the warm-up flag between).
    pullable: AtomicU64,
    taken: AtomicU64,
    /// The sequencer is done: nothing more will be released.
    closed: AtomicBool,
    notify: Notify,
}

impl SlotQueue {
    pub fn new(start: Instant, rate: f64) -> Self {
        Self {
            start,
            rate,
            released: AtomicU64::new(0),
            pullable: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// The oldest released slot not yet taken, waiting for one; `None` once the sequencer is
    /// done and every slot is taken. Cancel-safe (a slot is taken only in the poll that
    /// returns it).
    pub async fn next(&self) -> Option<Slot> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a release or the close in between is not missed.
            notified.as_mut().enable();
            let closed = self.closed.load(Ordering::Acquire);
            if let Some(slot) = self.try_take() {
                return Some(slot);
            }
            if closed {
                return None;
            }
            notified.await;
        }
    }

    fn try_take(&self) -> Option<Slot> {
        let mut i = self.taken.load(Ordering::Relaxed);
        // Read once, and only when a slot is not released yet: a due slot counts as released.
        let mut now = None;
        let mut due = |j: u64| {
            j < self.pullable.load(Ordering::Acquire) && self.at(j) <= *now.get_or_insert_with(Instant::now)
        };
        loop {
            let released = self.released.load(Ordering::Acquire);
            if i >= released && !due(i) {
                return None;
            }
            match self.taken.compare_exchange_weak(i, i + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    // A batch wakes one waiter; each taker passes the wake on while slots
                    // are left, so no due slot waits for the next release.
                    if i + 1 < released || due(i + 1) {
                        self.notify.notify_one();
                    }
                    return Some(Slot { scheduled: self.at(i) });
                }
                Err(taken) => i = taken,
            }
        }
    }

    fn at(&self, i: u64) -> Instant {
        self.start + slot_offset(i, self.rate)
    }

    /// Lets connections take slots below `count` as soon as each is due.
    fn allow_through(&self, count: u64) {
        self.pullable.store(count, Ordering::Release);
    }

    fn release_through(&self, count: u64) {
        self.released.store(count, Ordering::Release);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Where released slots go.
pub(crate) enum Sink {
    /// HTTP/1: one queue shared by all connections.
    Shared(Arc<SlotQueue>),
    /// HTTP/2: one queue per connection, filled round robin.
    RoundRobin(Vec<UnboundedSender<Slot>>),
}

impl Sink {
    /// Lets the takers take slots below `count` once due, without a release (HTTP/1's queue;
    /// the per-connection channels of HTTP/2 only get what is released).
    fn allow_through(&self, count: u64) {
        if let Sink::Shared(queue) = self {
            queue.allow_through(count);
        }
    }

    /// Releases slots `from..to`. False once nobody listens any more (the run was dropped).
    fn release(&mut self, from: u64, to: u64, slot: impl Fn(u64) -> Slot) -> bool {
        match self {
            Sink::Shared(queue) => {
                queue.release_through(to);
                Arc::strong_count(queue) > 1
            }
            Sink::RoundRobin(txs) => {
                let n = txs.len() as u64;
                (from..to).all(|i| txs[(i % n) as usize].send(slot(i)).is_ok())
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Sink::Shared(queue) = self {
            queue.close();
        }
    }
}

/// Starts the sequencer thread. It ends after the last slot before `window.end` (closing the
/// queues, which tells the connection tasks that no more work comes) or when the receivers
/// are gone. Slot `i` is released at `window.start + i / rate`, never before.
pub(crate) fn spawn(
    rate: f64,
    window: Window,
    mut sink: Sink,
    progress: Arc<Progress>,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    let precise = rate <= SPIN_MAX_RATE;
    std::thread::Builder::new()
        .name("loadgen-sequencer".into())
        .spawn(move || {
            precise_timer_slack();
            let at = |i: u64| window.start + slot_offset(i, rate);
            let slot = |i: u64| Slot { scheduled: at(i) };
            let mut warm = window.warm_end > window.start;
            // The number of slots due before `t`.
            let before = |t: Instant| {
                let mut n = ((t - window.start).as_secs_f64() * rate).ceil() as u64;
                while n > 0 && at(n - 1) >= t {
                    n -= 1;
                }
                while at(n) < t {
                    n += 1;
                }
                n
            };
            sink.allow_through(before(if warm { window.warm_end } else { window.end }));
            let mut released = 0;
            let mut woke = window.start;
            while at(released) < window.end {
                let scheduled = at(released);
                if warm && scheduled >= window.warm_end {
                    wait_until(window.warm_end);
                    progress.in_warmup.store(false, Ordering::Relaxed);
                    sink.allow_through(before(window.end));
                    warm = false;
                }
                if precise {
                    wait_until(scheduled);
                } else {
                    wait_until_coarse(scheduled.max(woke + BATCH_GAP));
                }
                // Every slot whose time has come goes now: overdue ones (the thread slept
                // long, or was descheduled) keep their scheduled time, so the delay is
                // measured, never skipped. A batch stops at the warm-up's end so the flag
                // above flips before the first measured slot goes out.
                let now = Instant::now();
                woke = now;
                let mut to = released + 1;
                while at(to) <= now && at(to) < window.end && !(warm && at(to) >= window.warm_end) {
                    to += 1;
                }
                if !sink.release(released, to, slot) {
                    break;
                }
                released = to;
            }
            progress.in_warmup.store(false, Ordering::Relaxed);
            drop(sink);
            released
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Takes slots as fast as it can on its own thread until the queue closes, noting when.
    fn drain(queue: Arc<SlotQueue>) -> std::thread::JoinHandle<Vec<(Instant, Instant)>> {
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            loop {
                let closed = queue.closed.load(Ordering::Acquire);
                match queue.try_take() {
                    Some(slot) => taken.push((slot.scheduled, Instant::now())),
                    None if closed => return taken,
                    None => std::thread::yield_now(),
                }
            }
        })
    }

    #[test]
    fn releases_every_slot_in_order_and_never_early() {
        // One rate that spins (exact releases) and one that sleeps and releases in batches.
        for rate in [1_000.0, 50_000.0] {
            let start = Instant::now() + Duration::from_millis(5);
            let window = Window::new(start, Duration::from_millis(50), Duration::from_millis(200));
            let queue = Arc::new(SlotQueue::new(start, rate));
            let taker = drain(queue.clone());
            let progress = Arc::new(Progress::default());
            progress.in_warmup.store(true, Ordering::Relaxed);
            let h = spawn(rate, window, Sink::Shared(queue), progress.clone()).unwrap();
            let released = h.join().unwrap();
            let expected = (rate * 0.25) as u64;
            assert_eq!(released, expected, "rate {rate}");
            assert!(!progress.in_warmup.load(Ordering::Relaxed));
            let taken = taker.join().unwrap();
            assert_eq!(taken.len() as u64, expected, "rate {rate}");
            for (i, (scheduled, at)) in taken.into_iter().enumerate() {
                assert_eq!(scheduled, start + slot_offset(i as u64, rate), "rate {rate}");
                assert!(at >= scheduled, "rate {rate}: slot {i} taken before its time");
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queue_wakes_a_waiter_per_slot_and_ends_when_closed() {
        let queue = Arc::new(SlotQueue::new(Instant::now(), 1_000.0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let q = queue.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while q.next().await.is_some() {
                        n += 1;
                        tokio::task::yield_now().await;
                    }
                    n
                })
            })
            .collect();
        tokio::task::yield_now().await;
        // One batch of five while all three wait: every slot is taken, none waits for more.
        queue.release_through(5);
        weft_testkit::eventually_async("five slots taken", || async {
            (queue.taken.load(Ordering::Relaxed) == 5).then_some(())
        })
        .await;
        queue.close();
        let mut total = 0;
        for w in waiters {
            total += w.await.unwrap();
        }
        assert_eq!(total, 5);
    }

    #[test]
    fn a_free_taker_takes_due_slots_unreleased_but_never_early_nor_past_the_bound() {
        let start = Instant::now() + Duration::from_millis(2);
        let queue = SlotQueue::new(start, 2_000.0);
        // Nothing allowed yet: a due slot still waits for its release.
        std::thread::sleep(Duration::from_millis(4));
        assert!(queue.try_take().is_none());
        queue.allow_through(20);
        let mut taken = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while taken.len() < 20 && Instant::now() < deadline {
            match queue.try_take() {
                Some(slot) => taken.push((slot.scheduled, Instant::now())),
                None => std::thread::yield_now(),
            }
        }
        assert_eq!(taken.len(), 20, "every allowed slot is taken once due");
        for (i, (scheduled, at)) in taken.iter().enumerate() {
            assert_eq!(*scheduled, start + slot_offset(i as u64, 2_000.0));
            assert!(at >= scheduled, "slot {i} taken before its time");
        }
        // The bound holds even long after the next slot's time.
        std::thread::sleep(Duration::from_millis(5));
        assert!(queue.try_take().is_none());
    }

    #[test]
    fn round_robin_spreads_evenly_and_stops_when_receivers_go() {
        let start = Instant::now();
        let window = Window::new(start, Duration::ZERO, Duration::from_millis(30));
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let h = spawn(
            1000.0,
            window,
            Sink::RoundRobin(txs),
            Arc::new(Progress::default()),
        )
        .unwrap();
        assert_eq!(h.join().unwrap(), 30);
        for rx in &mut rxs {
            let mut n = 0;
            while rx.try_recv().is_ok() {
                n += 1;
            }
            assert_eq!(n, 10);
        }
        let queue = Arc::new(SlotQueue::new(Instant::now(), 1000.0));
        let window = Window::new(Instant::now(), Duration::ZERO, Duration::from_secs(3600));
        let h = spawn(
            1000.0,
            window,
            Sink::Shared(queue),
            Arc::new(Progress::default()),
        )
        .unwrap();
        assert_eq!(h.join().unwrap(), 0, "stops at the first release once nobody takes slots");
    }
}
