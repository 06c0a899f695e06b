//! Failure accrual: an endpoint failing `consecutive_failures` times in a
//! row is taken out of balancing for a backoff (doubling per failed probe,
//! up to a maximum); when the backoff ends ONE request (the probe) is let
//! through, and its success brings the endpoint back.
//!
//! ```text
//!   Available ──N failures──> Ejected(until) ──time──> Probing ──success──> Available
//!                               ^                          │
//!                               └──failure: backoff x 2 ───┘
//! ```
//!
//! Failures are connect errors, upstream connection errors, timeouts and
//! 5xx responses; any other response is a success. Lock-free: one state
//! word and a deadline, changed with compare-and-swap so exactly one caller
//! wins the probe.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering},
    time::{Duration, Instant},
};

use crate::discovery::policy::AccrualConfig;

const AVAILABLE: u8 = 0;
const EJECTED: u8 = 1;
const PROBING: u8 = 2;

/// One endpoint's failure accrual state.
#[derive(Debug)]
pub struct Accrual {
    state: AtomicU8,
    failures: AtomicU32,
    /// Nanoseconds since `base` until which the endpoint stays out.
    until: AtomicU64,
    /// Consecutive ejections without a successful probe.
    ejections: AtomicU32,
    base: Instant,
}

/// Whether the caller may use the endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// In rotation.
    Yes,
    /// The caller's request is the probe.
    Probe,
    /// Out of rotation.
    No,
}

impl Default for Accrual {
    fn default() -> Self {
        Self::new()
    }
}

impl Accrual {
    /// An available endpoint.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(AVAILABLE),
            failures: AtomicU32::new(0),
            until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            base: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the endpoint is in rotation, without claiming a probe.
    pub fn is_available(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            AVAILABLE => true,
            EJECTED => self.now() >= self.until.load(Ordering::Acquire),
            _ => false,
        }
    }

    /// Admits a request; after the backoff, the first caller gets the probe.
    pub fn admit(&self) -> Admit {
        match self.state.load(Ordering::Acquire) {
            AVAILABLE => Admit::Yes,
            EJECTED if self.now() >= self.until.load(Ordering::Acquire) => {
                match self.state.compare_exchange(EJECTED, PROBING, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => Admit::Probe,
                    Err(AVAILABLE) => Admit::Yes,
                    Err(_) => Admit::No,
                }
            }
            _ => Admit::No,
        }
    }

    /// Records an outcome; returns the backoff when this failure took the
    /// endpoint out.
    pub fn record(&self, success: bool, config: &AccrualConfig) -> Option<Duration> {
        if success || !config.enabled() {
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
            self.state.store(AVAILABLE, Ordering::Release);
            return None;
        }
        let state = self.state.load(Ordering::Acquire);
        let eject = match state {
            PROBING => true,
            AVAILABLE => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                n >= config.consecutive_failures.max(1)
            }
            _ => false,
        };
        if !eject || self.state.compare_exchange(state, EJECTED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return None;
        }
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = config.min_backoff.saturating_mul(1u32 << k).min(config.max_backoff.max(config.min_backoff));
        // Jitter keeps replicas' probes apart.
        let backoff = backoff.mul_f64(1.0 + config.jitter.clamp(0.0, 1.0) * fastrand::f64());
        let until = self.now().saturating_add(u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX));
        self.until.store(until, Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        Some(backoff)
    }

    /// A probe that ended without an outcome (the client went away): let the
    /// next request probe instead.
    pub fn abandon_probe(&self) {
        if self.state.compare_exchange(PROBING, EJECTED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.until.store(self.now(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccrualConfig {
        AccrualConfig {
            consecutive_failures: 3,
            min_backoff: Duration::from_millis(40),
            max_backoff: Duration::from_secs(1),
            jitter: 0.0,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_probes_back() {
        let a = Accrual::new();
        let c = cfg();
        assert!(a.record(false, &c).is_none());
        assert!(a.record(true, &c).is_none(), "a success resets the count");
        assert!(a.record(false, &c).is_none());
        assert!(a.record(false, &c).is_none());
        assert!(a.record(false, &c).is_some(), "third consecutive failure ejects");
        assert_eq!(a.admit(), Admit::No);
        assert!(!a.is_available());
        std::thread::sleep(Duration::from_millis(60));
        assert!(a.is_available());
        assert_eq!(a.admit(), Admit::Probe);
        assert_eq!(a.admit(), Admit::No, "only one probe at a time");
        a.record(true, &c);
        assert_eq!(a.admit(), Admit::Yes);
    }

    #[test]
    fn failed_probe_doubles_backoff() {
        let a = Accrual::new();
        let c = AccrualConfig { consecutive_failures: 1, ..cfg() };
        let first = a.record(false, &c).unwrap();
        std::thread::sleep(first + Duration::from_millis(5));
        assert_eq!(a.admit(), Admit::Probe);
        let second = a.record(false, &c).unwrap();
        assert_eq!(second, first * 2);
        assert_eq!(a.admit(), Admit::No);
    }

    #[test]
    fn abandoned_probe_lets_the_next_one_probe() {
        let a = Accrual::new();
        let c = AccrualConfig { consecutive_failures: 1, ..cfg() };
        let b = a.record(false, &c).unwrap();
        std::thread::sleep(b + Duration::from_millis(5));
        assert_eq!(a.admit(), Admit::Probe);
        a.abandon_probe();
        assert_eq!(a.admit(), Admit::Probe);
    }
}
