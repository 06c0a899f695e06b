//! Retries: which responses and requests may be retried, the budget that
//! bounds how many retries a route may add on top of its requests, and the
//! layer that sends a request again ([`RetryLayer`]).
//!
//! ```text
//!  Retry (this file)  body kept for replay (small, complete), then per try:
//!    │                  resend   nothing reached the app, or idempotent and no
//!    │                           response head (a reset, or the meshed peer's
//!    │                           `weft-proxy-error-kind: connect|upstream`):
//!    │                           another endpoint, any policy, outside the
//!    │                           budget (MAX_RESENDS)
//!    │                  retry    the rule's policy: status or error, attempts
//!    │                           left, budget, backoff, the route's deadline
//!    ▼ Attempt            one endpoint picked, per-attempt timeout, balancer
//!                         feedback (discovery::outbound::attempt)
//! ```
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
    future::Future,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tower::Layer;
use tracing::debug;

use crate::{
    http::{
        body::{RequestBody, RequestBodyError, ResponseBody},
        error::{ProxyError, PROXY_ERROR_KIND_HEADER},
    },
    metrics::error_kind::ErrorKind,
};

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

/// How many times one request may go to another endpoint when nothing
/// reached an app or, idempotent, no response head came back (see
/// [`Tried`]); not counted as retries.
pub const MAX_RESENDS: u32 = 2;

/// Whether a failed attempt says something about the endpoint (the
/// client's own body errors do not): the balancer counts it as a failure
/// and the retry policy may try again.
pub fn blames_endpoint(e: &ProxyError) -> bool {
    !matches!(e, ProxyError::BodyTooLarge { .. } | ProxyError::Upgrade(_))
}

/// What one attempt did.
#[derive(Debug)]
pub struct Tried {
    /// The endpoint it went to.
    pub endpoint: SocketAddr,
    /// Its answer.
    pub result: Result<Response<ResponseBody>, ProxyError>,
    /// The endpoint is a meshed peer proxy (its identity verified), whose
    /// own error responses say what became of the request.
    pub meshed: bool,
}

impl Tried {
    /// Whether the request may go to another endpoint whatever the retry
    /// policy: nothing of it reached an app (a refused connection or
    /// handshake, no connection free under the endpoint's cap, or the peer
    /// proxy could not connect to its app or found its cap full), or,
    /// `idempotent` (RFC 9110 §9.2.2), no response head came back (a
    /// connection reset, or the peer's app failing before answering: a
    /// replica killed mid-request, its app perhaps a moment before its
    /// sidecar).
    fn resendable(&self, idempotent: bool) -> bool {
        match &self.result {
            Err(ProxyError::Connect { .. } | ProxyError::Tls { .. } | ProxyError::PoolFull { .. }) => true,
            Err(ProxyError::Upstream { .. }) => idempotent,
            // Only a verified peer proxy's word is taken for it.
            Ok(resp) if self.meshed => {
                match resp.headers().get(&PROXY_ERROR_KIND_HEADER).and_then(|k| ErrorKind::from_label(k.as_bytes())) {
                    Some(ErrorKind::Connect | ErrorKind::PoolFull) => true,
                    Some(ErrorKind::Upstream) => idempotent,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// One try of a request at one endpoint, which [`Retry`] repeats.
pub trait Attempt: Send + Sync {
    /// Sends `req` to one endpoint, one other than `avoid` when there is a
    /// choice. `Err`: no endpoint could be picked, nothing was sent.
    fn attempt(&self, req: Request<RequestBody>, avoid: Option<SocketAddr>) -> impl Future<Output = Result<Tried, ProxyError>> + Send;

    /// Whether another endpoint than `addr` could take a resend.
    fn has_other_than(&self, addr: SocketAddr) -> bool;
}

/// Sends a request again after a failed attempt: a resend when nothing
/// reached the app (see [`MAX_RESENDS`]), a retry when the rule's policy
/// says so. Built per request: the rule's policy and deadline are the
/// route's.
#[derive(Debug, Clone, Copy)]
pub struct RetryLayer<'p> {
    authority: &'p str,
    policy: Option<&'p RetryPolicy>,
    deadline: Option<tokio::time::Instant>,
}

impl<'p> RetryLayer<'p> {
    /// Requests to `authority` under the matched rule's `policy` (none:
    /// only resends), all attempts and backoffs ending by `deadline`.
    pub fn new(authority: &'p str, policy: Option<&'p RetryPolicy>, deadline: Option<tokio::time::Instant>) -> Self {
        Self { authority, policy, deadline }
    }
}

impl<'p, A> Layer<A> for RetryLayer<'p> {
    type Service = Retry<'p, A>;

    fn layer(&self, inner: A) -> Retry<'p, A> {
        Retry { inner, layer: *self }
    }
}

/// See [`RetryLayer`].
#[derive(Debug)]
pub struct Retry<'p, A> {
    inner: A,
    layer: RetryLayer<'p>,
}

impl<A: Attempt> Retry<'_, A> {
    /// Sends `req` through attempts until one answers or nothing more may be tried.
    pub fn call(&self, req: Request<RequestBody>) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + Send + '_ {
        async move {
            let (parts, body) = req.into_parts();
            let idempotent = is_idempotent(&parts.method);
            let retry = self.layer.policy.filter(|_| idempotent);
            let (replay, mut body) = replay(body, retry.is_some()).await?;
            let retry = retry.filter(|_| replay.is_some());
            if let Some(r) = retry {
                r.budget.deposit();
            }
            let key = self.layer.authority;
            let deadline = self.layer.deadline;
            let mut retries = 0u32;
            let mut resends = 0u32;
            let mut last: Option<SocketAddr> = None;
            loop {
                // A retry goes elsewhere when there is anywhere else to go.
                let attempt_body = match &replay {
                    Some(bytes) => RequestBody::buffered(Bytes::clone(bytes)),
                    None => body.take().expect("a streamed body is sent once"),
                };
                let tried = self.inner.attempt(attempt_request(&parts, attempt_body), last).await?;
                let endpoint = tried.endpoint;
                let retryable = match &tried.result {
                    Ok(resp) => retry.is_some_and(|r| r.retries_response(resp.status(), resp.headers())),
                    Err(e) => blames_endpoint(e),
                };
                // An endpoint going away (a pod terminating before its
                // removal reached us, racing its GOAWAY; a replica killed)
                // fails nothing that can be sent again.
                if tried.resendable(idempotent) && replay.is_some() && resends < MAX_RESENDS && self.inner.has_other_than(endpoint) {
                    resends += 1;
                    last = Some(endpoint);
                    debug!(authority = %key, %endpoint, "no answer from this endpoint; trying another");
                    continue;
                }
                let result = tried.result;
                let again = match retry {
                    Some(r) if retryable && retries < r.max_retries => {
                        let time_left = deadline.is_none_or(|d| tokio::time::Instant::now() + r.backoff < d);
                        let allowed = time_left && r.budget.try_withdraw();
                        if time_left && !allowed {
                            crate::metrics::http::note(|n| n.budget_exhausted = true);
                        }
                        allowed
                    }
                    _ => false,
                };
                if !again {
                    return result;
                }
                retries += 1;
                crate::metrics::http::note(|n| n.retries += 1);
                last = Some(endpoint);
                debug!(authority = %key, retries, "retrying");
                if let Some(r) = retry {
                    if !r.backoff.is_zero() {
                        tokio::time::sleep(r.backoff).await;
                    }
                }
            }
        }
    }
}

/// The body kept for sending again: retried requests (`retried`) keep only
/// small, complete bodies (MAX_RETRY_BODY_BYTES), others go once; an empty
/// body costs nothing to keep, so a refused connection can go elsewhere.
/// The other half is the body to stream once when none is kept.
async fn replay(body: RequestBody, retried: bool) -> Result<(Option<Bytes>, Option<RequestBody>), ProxyError> {
    if retried && body.size_hint().upper().is_some_and(|n| n <= MAX_RETRY_BODY_BYTES) {
        let bytes = body.collect().await.map_err(|e| match e {
            RequestBodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit },
            other => ProxyError::RequestBody(other.to_string()),
        })?;
        return Ok((Some(bytes.to_bytes()), None));
    }
    if body.size_hint().exact() == Some(0) {
        return Ok((Some(Bytes::new()), None));
    }
    Ok((None, Some(body)))
}

/// A fresh request head for one attempt (extensions are not carried: the
/// upstream never reads them).
fn attempt_request(parts: &http::request::Parts, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
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
