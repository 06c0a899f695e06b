//! Retries: which responses and requests may be retried, and the budget that
//! bounds how many retries a route may add on top of its requests.
//!
//! The budget is a sliding window of `ttl` split into ten buckets of atomic
//! counters: every original request deposits, every retry withdraws, and a
//! retry is allowed while
//!
//! ```text
//!   withdrawals < ratio x deposits + min_per_sec x ttl      (within the window)
//! ```
//!
//! so a failing backend sees at most `(1 + ratio)` times its requests plus
//! the floor, never a retry storm. Updates are relaxed atomics (a bucket
//! turning over may lose a count under contention, which only makes the
//! window a little shorter); no lock on the request path.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use http::{Method, StatusCode};

/// Retried request bodies are buffered in memory; larger (or unknown-length)
/// bodies are streamed once and never retried.
pub const MAX_RETRY_BODY_BYTES: u64 = 64 * 1024;

/// Budget parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per original request (0.2 = 20 %).
    pub ratio: f32,
    /// Retries always allowed per second, whatever the traffic.
    pub min_per_sec: u32,
    /// Length of the sliding window.
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { ratio: 0.2, min_per_sec: 10, ttl: Duration::from_secs(10) }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    deposits: AtomicU64,
    withdrawals: AtomicU64,
}

/// A route's retry budget (see the module docs).
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    start: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

impl RetryBudget {
    /// An empty budget (only the floor is available).
    pub fn new(config: BudgetConfig) -> Self {
        let ttl = config.ttl.max(Duration::from_millis(10));
        let bucket_nanos = u64::try_from(ttl.as_nanos() / BUCKETS as u128).unwrap_or(u64::MAX).max(1);
        Self { config, start: Instant::now(), bucket_nanos, buckets: Default::default() }
    }

    /// The parameters.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Epochs start at 1 so a zeroed bucket is never "current".
    fn epoch(&self) -> u64 {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        nanos / self.bucket_nanos + 1
    }

    fn current(&self) -> &Bucket {
        let epoch = self.epoch();
        let b = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let seen = b.epoch.load(Ordering::Relaxed);
        if seen != epoch && b.epoch.compare_exchange(seen, epoch, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            b.deposits.store(0, Ordering::Relaxed);
            b.withdrawals.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Counts an original request.
    pub fn deposit(&self) {
        self.current().deposits.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_withdraw(&self) -> bool {
        let cur = self.current();
        let epoch = self.epoch();
        let (mut deposits, mut withdrawals) = (0u64, 0u64);
        for b in &self.buckets {
            let e = b.epoch.load(Ordering::Relaxed);
            if e + BUCKETS as u64 > epoch && e <= epoch {
                deposits += b.deposits.load(Ordering::Relaxed);
                withdrawals += b.withdrawals.load(Ordering::Relaxed);
            }
        }
        let floor = f64::from(self.config.min_per_sec) * self.config.ttl.as_secs_f64();
        let allowed = f64::from(self.config.ratio) * deposits as f64 + floor;
        if (withdrawals as f64) < allowed.floor() {
            cur.withdrawals.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// A rule's retry policy.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Retries per request at most (on top of the first attempt).
    pub max_retries: u32,
    /// Response statuses that are retried, as inclusive ranges.
    pub statuses: Vec<(u16, u16)>,
    /// gRPC status codes (`grpc-status` in a trailers-only response) retried.
    pub grpc_codes: Vec<u32>,
    /// Wait before each retry.
    pub backoff: Duration,
    /// Shared by every request of the rule.
    pub budget: RetryBudget,
}

impl RetryPolicy {
    /// A policy retrying `statuses` up to `max_retries` times within `budget`.
    pub fn new(max_retries: u32, statuses: Vec<(u16, u16)>, budget: BudgetConfig) -> Self {
        Self { max_retries, statuses, grpc_codes: Vec::new(), backoff: Duration::ZERO, budget: RetryBudget::new(budget) }
    }

    /// Whether a response with `status` is worth another attempt.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        self.statuses.iter().any(|&(lo, hi)| (lo..=hi).contains(&s))
    }

    /// Whether a response head is worth another attempt: a listed status,
    /// or a listed `grpc-status` in a trailers-only gRPC response.
    pub fn retries_response(&self, status: StatusCode, headers: &http::HeaderMap) -> bool {
        if self.retries_status(status) {
            return true;
        }
        !self.grpc_codes.is_empty()
            && headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
                .is_some_and(|c| self.grpc_codes.contains(&c))
    }
}

/// RFC 9110 §9.2.2: repeating these has the same effect as sending once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_ratio_plus_floor() {
        let b = RetryBudget::new(BudgetConfig { ratio: 0.2, min_per_sec: 1, ttl: Duration::from_secs(10) });
        // Floor only: 1/s x 10 s.
        let floor = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(floor, 10);
        for _ in 0..100 {
            b.deposit();
        }
        let more = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(more, 20, "20 % of 100 requests");
    }

    #[test]
    fn budget_window_slides() {
        let b = RetryBudget::new(BudgetConfig { ratio: 0.0, min_per_sec: 10, ttl: Duration::from_millis(100) });
        let first = (0..10).filter(|_| b.try_withdraw()).count();
        assert_eq!(first, 1);
        std::thread::sleep(Duration::from_millis(150));
        assert!(b.try_withdraw(), "old withdrawals left the window");
    }

    #[test]
    fn statuses_and_methods() {
        let p = RetryPolicy::new(2, vec![(502, 504)], BudgetConfig::default());
        assert!(p.retries_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!p.retries_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(is_idempotent(&Method::GET) && is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
    }
}
