//! How many downstream connections a direction holds, and what happens at
//! the cap: an idle connection is closed to make room, so a flood of idle
//! connections costs a bounded amount of memory and never locks out a
//! client with work to do. Which one: the oldest that never sent a request
//! (silent, still in detection or the TLS handshake: nothing is lost with
//! it), else the one whose last request ended longest ago, but never one
//! with a request in flight or one that finished a request within
//! [`IN_USE`] (a keep-alive client between two requests would lose the
//! next one). With no such connection, the new one is closed at accept.
//! Both are counted in `weft_shed_connections_total{reason="idle_evicted|limit"}`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};
use tracing::{debug, warn};

use crate::{
    http::idle::Activity,
    metrics::{DirectionMetrics, Shed},
};

/// A connection that finished a request this recently is in use: never
/// closed to make room (a client on it is likely to send the next one).
pub const IN_USE: Duration = Duration::from_secs(1);

/// The connections one direction holds (shared by its listeners).
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    /// Names the direction in log lines.
    name: &'static str,
    metrics: Option<DirectionMetrics>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// Held and not told to close.
    live: usize,
    /// By age: the smallest key is the oldest connection.
    by_age: BTreeMap<u64, Arc<Slot>>,
}

#[derive(Debug)]
struct Slot {
    activity: Activity,
    evicted: AtomicBool,
    evict: Notify,
}

/// One admitted connection: its activity (requests in flight) and the
/// signal that it was closed to make room. Leaves the count when dropped.
#[derive(Debug)]
pub struct Admitted {
    limit: Arc<ConnLimit>,
    id: u64,
    slot: Arc<Slot>,
}

impl ConnLimit {
    /// At most `max` connections (at least 1); `metrics` counts what is
    /// shed (the admin listener has none).
    pub fn new(max: usize, name: &'static str, metrics: Option<DirectionMetrics>) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), name, metrics, open: Mutex::new(Open::default()) })
    }

    /// Admits a new connection, closing an idle one (see the module doc)
    /// if the cap is reached; `None`: none may go, close the new one.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Connections already told to close hold their slot until their
        // task ends (at once: it is dropped) but are not counted as live.
        if open.live >= self.max {
            match open.victim(Instant::now()) {
                Some(slot) => {
                    slot.evicted.store(true, Ordering::Relaxed);
                    // A permit is kept if the task is not waiting yet.
                    slot.evict.notify_one();
                    open.live -= 1;
                    self.count(Shed::IdleEvicted);
                    debug!(direction = self.name, max = self.max, "connection cap reached; closed an idle connection");
                }
                None => {
                    drop(open);
                    self.count(Shed::Limit);
                    warn!(
                        direction = self.name,
                        max = self.max,
                        "connection cap reached with every connection busy or in use; closing a new connection at accept"
                    );
                    return None;
                }
            }
        }
        let id = open.next;
        open.next += 1;
        open.live += 1;
        let slot = Arc::new(Slot { activity: Activity::new(), evicted: AtomicBool::new(false), evict: Notify::new() });
        open.by_age.insert(id, Arc::clone(&slot));
        Some(Admitted { limit: Arc::clone(self), id, slot })
    }

    /// Where this direction's sheds are counted.
    pub fn metrics(&self) -> Option<&DirectionMetrics> {
        self.metrics.as_ref()
    }

    fn count(&self, reason: Shed) {
        if let Some(m) = &self.metrics {
            m.record_shed(reason);
        }
    }

    /// Connections held now (those being closed included).
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).by_age.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Open {
    /// The connection to close for room: the oldest that never sent a
    /// request, else the one idle longest (not within [`IN_USE`]); never
    /// one with a request in flight. One pass, stopping at the first
    /// never-used connection, which is usually near the front: at the cap
    /// under a flood, the flood's own connections.
    fn victim(&self, now: Instant) -> Option<Arc<Slot>> {
        let mut idle_longest: Option<(&Arc<Slot>, Instant)> = None;
        for slot in self.by_age.values() {
            let a = &slot.activity;
            if slot.evicted.load(Ordering::Relaxed) || a.in_flight() > 0 {
                continue;
            }
            if !a.seen_request() {
                return Some(Arc::clone(slot));
            }
            let last = a.last_active();
            if now.saturating_duration_since(last) >= IN_USE && idle_longest.is_none_or(|(_, l)| last < l) {
                idle_longest = Some((slot, last));
            }
        }
        idle_longest.map(|(s, _)| Arc::clone(s))
    }
}

impl Admitted {
    /// What the connection is doing: HTTP requests in flight, or a relay
    /// (held busy with [`Activity::request`] for its whole life).
    pub fn activity(&self) -> &Activity {
        &self.slot.activity
    }

    /// Resolves when the connection was chosen to make room.
    pub async fn evicted(&self) {
        self.slot.evict.notified().await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if !self.slot.evicted.load(Ordering::Relaxed) {
            open.live -= 1;
        }
        open.by_age.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_never_used_connection_makes_room_and_busy_ones_are_kept() {
        let limit = ConnLimit::new(2, "test", None);
        let a = limit.admit().unwrap();
        let b = limit.admit().unwrap();
        let _busy = a.activity().request();
        // a is older but busy: b goes.
        let c = limit.admit().expect("b is idle and makes room");
        tokio::time::timeout(Duration::from_secs(5), b.evicted()).await.expect("b told to close");
        drop(b);
        let _busy_c = c.activity().request();
        assert!(limit.admit().is_none(), "every connection busy: the new one is refused");
        assert_eq!(limit.len(), 2);
        drop(c);
        assert!(limit.admit().is_some());
    }

    #[test]
    fn keep_alive_connections_in_use_are_spared_and_the_one_idle_longest_goes() {
        let limit = ConnLimit::new(8, "test", None);
        let served = |c: &Admitted| drop(c.activity().request());
        let (older, silent, newer) = (limit.admit().unwrap(), limit.admit().unwrap(), limit.admit().unwrap());
        served(&older);
        served(&newer);
        let victim = |now| limit.open.lock().unwrap().victim(now).map(|s| Arc::as_ptr(&s));
        let now = Instant::now();
        assert_eq!(victim(now), Some(Arc::as_ptr(&silent.slot)), "never used: goes first, though younger than a keep-alive one");
        drop(silent);
        assert_eq!(victim(now), None, "both finished a request just now: in use, spared");
        let later = now + IN_USE * 2;
        assert_eq!(victim(later), Some(Arc::as_ptr(&older.slot)), "idle longest (ties: the older)");
        // Milliseconds are the clock's grain: let one pass.
        std::thread::sleep(Duration::from_millis(5));
        served(&older);
        assert_eq!(victim(Instant::now() + IN_USE * 2), Some(Arc::as_ptr(&newer.slot)));
    }
}
