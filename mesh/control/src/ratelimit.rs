//! Token buckets for Certify: one for the whole control plane and one per
//! client IP address, so one noisy (or hostile) caller cannot starve the
//! others nor make mesh-control sign (or ask Kubernetes) without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refill rate and size of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens held (the largest burst).
    pub burst: u32,
}

/// Certify's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CertifyLimits {
    pub global: Rate,
    pub per_peer: Rate,
    /// Peers tracked at once; beyond, idle (full) buckets are forgotten and,
    /// if none is idle, new peers wait for the global bucket's next refill.
    pub max_peers: usize,
}

impl Default for CertifyLimits {
    /// Every proxy certifies once per 70 % of a certificate lifetime (24 h by
    /// default), plus once at start: 100/s for the mesh and bursts of 50
    /// from one address (a node starting many pods) are far above that.
    fn default() -> Self {
        Self {
            global: Rate { per_second: 100.0, burst: 200 },
            per_peer: Rate { per_second: 10.0, burst: 50 },
            max_peers: 10_000,
        }
    }
}

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Global,
    Peer,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self { tokens: f64::from(rate.burst), at: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.at = now;
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.burst)
    }
}

/// The limiter; cheap to call on every request (one short lock).
#[derive(Debug)]
pub struct CertifyLimiter {
    limits: CertifyLimits,
    state: Mutex<(Bucket, HashMap<IpAddr, Bucket>)>,
}

impl CertifyLimiter {
    pub fn new(limits: CertifyLimits) -> Self {
        let now = Instant::now();
        Self { limits, state: Mutex::new((Bucket::full(limits.global, now), HashMap::new())) }
    }

    pub fn limits(&self) -> CertifyLimits {
        self.limits
    }

    /// Takes one token from `peer`'s bucket and the global one, or neither.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), Limited> {
        self.check_at(peer, Instant::now())
    }

    fn check_at(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        let CertifyLimits { global, per_peer, max_peers } = self.limits;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (all, peers) = &mut *state;
        all.refill(global, now);
        if let Some(ip) = peer {
            if !peers.contains_key(&ip) && peers.len() >= max_peers {
                peers.retain(|_, b| {
                    b.refill(per_peer, now);
                    !b.is_full(per_peer)
                });
                if peers.len() >= max_peers {
                    return Err(Limited::Global);
                }
            }
            let bucket = peers.entry(ip).or_insert_with(|| Bucket::full(per_peer, now));
            bucket.refill(per_peer, now);
            if bucket.tokens < 1.0 {
                return Err(Limited::Peer);
            }
            if all.tokens < 1.0 {
                return Err(Limited::Global);
            }
            bucket.tokens -= 1.0;
        } else if all.tokens < 1.0 {
            return Err(Limited::Global);
        }
        all.tokens -= 1.0;
        Ok(())
    }
}

/// How long until a token is back at `rate` (for the error message).
pub fn retry_after(rate: Rate) -> Duration {
    Duration::from_secs_f64(if rate.per_second > 0.0 { 1.0 / rate.per_second } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(global: (f64, u32), peer: (f64, u32), max_peers: usize) -> CertifyLimiter {
        CertifyLimiter::new(CertifyLimits {
            global: Rate { per_second: global.0, burst: global.1 },
            per_peer: Rate { per_second: peer.0, burst: peer.1 },
            max_peers,
        })
    }

    #[test]
    fn a_peer_gets_its_burst_then_waits_for_refill() {
        let l = limiter((1000.0, 1000), (1.0, 3), 10);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at(a, t), Ok(()));
        }
        assert_eq!(l.check_at(a, t), Err(Limited::Peer));
        // Another address is not affected.
        assert_eq!(l.check_at(b, t), Ok(()));
        assert_eq!(l.check_at(a, t + Duration::from_millis(1100)), Ok(()));
        assert_eq!(l.check_at(a, t + Duration::from_millis(1100)), Err(Limited::Peer));
    }

    #[test]
    fn the_global_bucket_bounds_everyone_and_refused_requests_cost_nothing() {
        let l = limiter((1.0, 2), (100.0, 100), 10);
        let t = Instant::now();
        assert_eq!(l.check_at(Some(IpAddr::from([10, 0, 0, 1])), t), Ok(()));
        assert_eq!(l.check_at(Some(IpAddr::from([10, 0, 0, 2])), t), Ok(()));
        assert_eq!(l.check_at(Some(IpAddr::from([10, 0, 0, 3])), t), Err(Limited::Global));
        assert_eq!(l.check_at(None, t), Err(Limited::Global));
        assert_eq!(l.check_at(None, t + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn peers_are_bounded_and_idle_ones_forgotten() {
        let l = limiter((1000.0, 1000), (1.0, 1), 2);
        let t = Instant::now();
        let ip = |n: u8| Some(IpAddr::from([10, 0, 0, n]));
        assert_eq!(l.check_at(ip(1), t), Ok(()));
        assert_eq!(l.check_at(ip(2), t), Ok(()));
        // Both buckets are empty (busy): a third peer is refused.
        assert_eq!(l.check_at(ip(3), t), Err(Limited::Global));
        // Once they refill (idle), they are forgotten and make room.
        assert_eq!(l.check_at(ip(3), t + Duration::from_secs(2)), Ok(()));
        assert!(l.state.lock().unwrap().1.len() <= 2);
    }
}
