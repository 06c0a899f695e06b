//! Request-level load balancing: power of two choices over peak-EWMA
//! latency, with failure accrual, over a live endpoint set.
//!
//! ```text
//!  pick: two distinct random endpoints in rotation -> the lower cost
//!        cost = rtt_estimate x (in_flight + 1) / weight
//!  rtt_estimate: a slower response replaces it at once (peak); faster ones
//!        pull it down with an exponential moving average; idle, it decays
//!        towards zero so a once-slow endpoint is tried again
//! ```
//!
//! The endpoint list sits behind an `ArcSwap` (an update builds a new list,
//! keeping each surviving endpoint's connections and statistics), and the
//! statistics are atomics: a pick takes no lock and allocates nothing.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use mesh_identity::SpiffeId;

use crate::{
    discovery::accrual::{Accrual, Admit},
    discovery::Endpoint,
    discovery::policy::AccrualConfig,
    http::upstream::Upstream,
};

/// How fast an idle estimate decays (time constant).
const DECAY: Duration = Duration::from_secs(10);
/// Floor of an estimate, so a fresh endpoint (no sample yet) is attractive
/// but still feels its own in-flight requests.
const MIN_RTT_NANOS: f64 = 1_000.0;

/// One endpoint in a balancer: its connections and its statistics.
#[derive(Debug)]
pub struct EndpointHandle {
    endpoint: Endpoint,
    upstream: Arc<Upstream>,
    /// f64 bits of the RTT estimate, in nanoseconds.
    rtt: AtomicU64,
    /// Nanoseconds since `base` of the last sample.
    stamp: AtomicU64,
    pending: AtomicU32,
    accrual: Accrual,
    base: Instant,
}

impl EndpointHandle {
    fn new(endpoint: Endpoint, upstream: Arc<Upstream>) -> Self {
        Self {
            endpoint,
            upstream,
            rtt: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
            pending: AtomicU32::new(0),
            accrual: Accrual::new(),
            base: Instant::now(),
        }
    }

    /// What discovery said about it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its connections.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current load cost (lower is better).
    fn cost(&self) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let idle = self.now().saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        let decayed = rtt * (-idle / DECAY.as_nanos() as f64).exp();
        let pending = f64::from(self.pending.load(Ordering::Relaxed)) + 1.0;
        decayed.max(MIN_RTT_NANOS) * pending / f64::from(self.endpoint.weight.max(1))
    }

    fn observe(&self, rtt: Duration) {
        let now = self.now();
        let sample = rtt.as_nanos() as f64;
        let old = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let next = if sample > old {
            sample
        } else {
            let w = (-(now.saturating_sub(last) as f64) / DECAY.as_nanos() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// The identity of an endpoint across updates: same address and identity
/// keep their connections and statistics.
type Key = (SocketAddr, Option<SpiffeId>);

/// A balancer over one authority's endpoints.
#[derive(Debug)]
pub struct Balancer {
    endpoints: ArcSwap<Vec<Arc<EndpointHandle>>>,
    accrual: ArcSwap<AccrualConfig>,
}

/// Why no endpoint could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// The set is empty.
    NoEndpoints,
    /// Every endpoint is out of rotation (failure accrual).
    AllEjected {
        /// How many there are.
        endpoints: usize,
    },
}

impl Default for Balancer {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer {
    /// An empty balancer.
    pub fn new() -> Self {
        Self { endpoints: ArcSwap::from_pointee(Vec::new()), accrual: ArcSwap::from_pointee(AccrualConfig::default()) }
    }

    /// Replaces the endpoint set. Endpoints already present keep their
    /// handle (connections, RTT, accrual); `connect` makes the rest.
    pub fn update(&self, endpoints: &[Endpoint], mut connect: impl FnMut(&Endpoint) -> Option<Arc<Upstream>>) {
        let old = self.endpoints.load();
        let mut by_key: HashMap<Key, &Arc<EndpointHandle>> =
            old.iter().map(|h| ((h.endpoint.addr, h.endpoint.identity.clone()), h)).collect();
        let mut next = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let key = (ep.addr, ep.identity.clone());
            match by_key.remove(&key) {
                Some(h) if h.endpoint == *ep => next.push(Arc::clone(h)),
                // Same address and identity, new weight or hint: keep the
                // connections, start fresh statistics.
                Some(h) if h.endpoint.hint == ep.hint => {
                    next.push(Arc::new(EndpointHandle::new(ep.clone(), Arc::clone(&h.upstream))))
                }
                _ => {
                    if let Some(up) = connect(ep) {
                        next.push(Arc::new(EndpointHandle::new(ep.clone(), up)));
                    }
                }
            }
        }
        self.endpoints.store(Arc::new(next));
    }

    /// Sets the failure accrual parameters.
    pub fn set_accrual(&self, config: AccrualConfig) {
        if **self.accrual.load() != config {
            self.accrual.store(Arc::new(config));
        }
    }

    /// The endpoints now in the set.
    pub fn endpoints(&self) -> Arc<Vec<Arc<EndpointHandle>>> {
        self.endpoints.load_full()
    }

    /// Endpoints (in rotation, taken out by failure accrual) now.
    pub fn states(&self) -> (usize, usize) {
        let eps = self.endpoints.load();
        let ready = eps.iter().filter(|h| h.accrual.is_available()).count();
        (ready, eps.len() - ready)
    }

    /// Picks an endpoint for one request; `avoid` (the endpoint a retried
    /// request just failed on) loses any comparison it takes part in.
    pub fn pick(&self, avoid: Option<SocketAddr>) -> Result<Pick, PickError> {
        let eps = self.endpoints.load();
        let n = eps.len();
        let chosen = match n {
            0 => return Err(PickError::NoEndpoints),
            1 => 0,
            _ => {
                let a = fastrand::usize(0..n);
                let b = (a + 1 + fastrand::usize(0..n - 1)) % n;
                match (eps[a].accrual.is_available(), eps[b].accrual.is_available()) {
                    (true, true) => {
                        let avoided = |i: usize| Some(eps[i].endpoint.addr) == avoid;
                        match (avoided(a), avoided(b)) {
                            (true, false) => b,
                            (false, true) => a,
                            _ if eps[b].cost() < eps[a].cost() => b,
                            _ => a,
                        }
                    }
                    (true, false) => a,
                    (false, true) => b,
                    (false, false) => {
                        // Both out: any endpoint still in rotation, from a random start.
                        (0..n).map(|i| (a + i) % n).find(|&i| eps[i].accrual.is_available()).unwrap_or(a)
                    }
                }
            }
        };
        if let Some(pick) = Pick::admit(&eps[chosen]) {
            return Ok(pick);
        }
        // Lost a probe race, or everything is out: one sweep for anything admitted.
        let start = fastrand::usize(0..n);
        (0..n)
            .find_map(|i| Pick::admit(&eps[(start + i) % n]))
            .ok_or(PickError::AllEjected { endpoints: n })
    }

    /// Records an outcome without ending the pick (a TCP connection keeps
    /// counting as in flight until it closes); see [`Balancer::finish`].
    pub fn observe(&self, pick: &Pick, rtt: Option<Duration>, success: bool) -> Option<Duration> {
        if let Some(rtt) = rtt {
            pick.handle.observe(rtt);
        }
        let ejected = pick.handle.accrual.record(success, &self.accrual.load());
        pick.done.store(true, Ordering::Relaxed);
        ejected
    }

    /// Records the outcome of `pick`: the response head's arrival (`rtt`,
    /// `None` for a failure without response) and whether it counts as a
    /// success for failure accrual. Returns the backoff when this outcome
    /// took the endpoint out of rotation.
    pub fn finish(&self, pick: Pick, rtt: Option<Duration>, success: bool) -> Option<Duration> {
        self.observe(&pick, rtt, success)
    }
}

/// One request's use of an endpoint; the in-flight count drops with it.
#[derive(Debug)]
pub struct Pick {
    handle: Arc<EndpointHandle>,
    probe: bool,
    done: AtomicBool,
}

impl Pick {
    fn admit(h: &Arc<EndpointHandle>) -> Option<Self> {
        let probe = match h.accrual.admit() {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No => return None,
        };
        h.pending.fetch_add(1, Ordering::Relaxed);
        Some(Self { handle: Arc::clone(h), probe, done: AtomicBool::new(false) })
    }

    /// The chosen endpoint.
    pub fn handle(&self) -> &Arc<EndpointHandle> {
        &self.handle
    }

    /// Whether this request is the probe of an ejected endpoint.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.handle.pending.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.done.load(Ordering::Relaxed) {
            self.handle.accrual.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<Endpoint> {
        (1..=n).map(|p| Endpoint::plain(SocketAddr::from(([127, 0, 0, 1], p)))).collect()
    }

    fn balancer(n: u16) -> Balancer {
        let b = Balancer::new();
        b.update(&eps(n), |e| Some(Upstream::new(e.addr)));
        b
    }

    fn port(p: &Pick) -> u16 {
        p.handle().endpoint().addr.port()
    }

    #[test]
    fn p2c_prefers_the_fast_endpoints() {
        let b = balancer(3);
        let mut counts = [0usize; 4];
        for _ in 0..3000 {
            let p = b.pick(None).unwrap();
            let port = port(&p);
            counts[port as usize] += 1;
            let rtt = if port == 3 { Duration::from_millis(50) } else { Duration::from_millis(1) };
            b.finish(p, Some(rtt), true);
        }
        let fast = counts[1] + counts[2];
        assert!(fast as f64 / 3000.0 >= 0.9, "{counts:?}");
        assert!(counts[1] > 500 && counts[2] > 500, "both fast ones used: {counts:?}");
    }

    #[test]
    fn in_flight_requests_spread_load() {
        let b = balancer(2);
        let held: Vec<Pick> = (0..10).map(|_| b.pick(None).unwrap()).collect();
        let on_1 = held.iter().filter(|p| port(p) == 1).count();
        assert!((3..=7).contains(&on_1), "{on_1} of 10 on one endpoint");
    }

    #[test]
    fn updates_keep_surviving_endpoints_and_drop_removed_ones() {
        let b = balancer(3);
        let before = b.endpoints();
        let kept = Arc::clone(&before[1]);
        let mut next = eps(3);
        next.remove(0);
        next.push(Endpoint::plain(SocketAddr::from(([127, 0, 0, 1], 9))));
        let mut made = 0;
        b.update(&next, |e| {
            made += 1;
            Some(Upstream::new(e.addr))
        });
        assert_eq!(made, 1, "only the new endpoint is connected");
        let after = b.endpoints();
        assert!(Arc::ptr_eq(&after[0], &kept));
        for _ in 0..200 {
            assert_ne!(port(&b.pick(None).unwrap()), 1, "removed endpoint picked");
        }
        b.update(&[], |_| None);
        assert_eq!(b.pick(None).unwrap_err(), PickError::NoEndpoints);
    }

    #[test]
    fn failing_endpoint_is_ejected_then_probed_back() {
        let b = balancer(2);
        b.set_accrual(AccrualConfig {
            consecutive_failures: 2,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            jitter: 0.0,
        });
        // Fail endpoint 1 until it is out.
        let mut ejected = false;
        for _ in 0..100 {
            let p = b.pick(None).unwrap();
            let bad = port(&p) == 1;
            ejected |= b.finish(p, Some(Duration::from_millis(1)), !bad).is_some();
            if ejected {
                break;
            }
        }
        assert!(ejected);
        for _ in 0..100 {
            let p = b.pick(None).unwrap();
            assert_eq!(port(&p), 2, "ejected endpoint picked");
            b.finish(p, Some(Duration::from_millis(1)), true);
        }
        std::thread::sleep(Duration::from_millis(60));
        // The probe goes out once; succeeding, the endpoint is back.
        let mut probed = false;
        for _ in 0..200 {
            let p = b.pick(None).unwrap();
            probed |= p.is_probe();
            b.finish(p, Some(Duration::from_micros(10)), true);
        }
        assert!(probed);
        let back = (0..200)
            .filter(|_| {
                let p = b.pick(None).unwrap();
                let one = port(&p) == 1;
                b.finish(p, Some(Duration::from_millis(1)), true);
                one
            })
            .count();
        assert!(back > 20, "endpoint 1 back in rotation: {back}");
    }

    #[test]
    fn all_ejected_is_an_error() {
        let b = balancer(1);
        b.set_accrual(AccrualConfig { consecutive_failures: 1, ..AccrualConfig::default() });
        let p = b.pick(None).unwrap();
        assert!(b.finish(p, None, false).is_some());
        assert_eq!(b.pick(None).unwrap_err(), PickError::AllEjected { endpoints: 1 });
    }
}
