//! One attempt of a discovered request: an endpoint picked by the
//! balancer (avoiding the one a resend or retry just failed on), the
//! per-attempt timeout, and the outcome fed back to the balancer (latency,
//! failure accrual). [`discovery::retry`](crate::discovery::retry) decides
//! whether to make another.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::Request;
use tokio::time::Instant;
use tracing::warn;

use super::BackendSet;
use crate::{
    discovery::retry::{blames_endpoint, Attempt, Tried},
    http::{body::RequestBody, error::ProxyError},
};

/// Attempts at one backend's endpoints.
#[derive(Debug)]
pub(super) struct Endpoints<'a> {
    pub(super) set: &'a BackendSet,
    /// The rule's `backendRequest` timeout, else `--request-timeout`.
    pub(super) per_attempt: Duration,
    /// The rule's `request` timeout, counted from the request head: no
    /// attempt runs past it.
    pub(super) deadline: Option<Instant>,
}

impl Attempt for Endpoints<'_> {
    fn attempt(&self, req: Request<RequestBody>, avoid: Option<SocketAddr>) -> impl Future<Output = Result<Tried, ProxyError>> + Send {
        async move {
            let set = self.set;
            let pick = set.pick(avoid).await?;
            let upstream = Arc::clone(pick.handle().upstream());
            let limit = match self.deadline {
                Some(d) => self.per_attempt.min(d.saturating_duration_since(Instant::now())),
                None => self.per_attempt,
            };
            let started = Instant::now();
            let outcome = tokio::time::timeout(limit, upstream.send(req)).await;
            let rtt = started.elapsed();
            let result = match outcome {
                Ok(Ok(resp)) => {
                    let failed = resp.status().is_server_error();
                    let ejected = set.balancer.finish(pick, Some(rtt), !failed);
                    log_ejection(set, upstream.addr(), ejected);
                    Ok(resp)
                }
                Ok(Err(e)) => {
                    if blames_endpoint(&e) {
                        let ejected = set.balancer.finish(pick, None, false);
                        log_ejection(set, upstream.addr(), ejected);
                    }
                    Err(e)
                }
                Err(_) => {
                    let ejected = set.balancer.finish(pick, None, false);
                    log_ejection(set, upstream.addr(), ejected);
                    Err(ProxyError::Timeout { addr: upstream.addr(), after: limit })
                }
            };
            Ok(Tried { endpoint: upstream.addr(), result, meshed: upstream.peer_identity().is_some() })
        }
    }

    fn has_other_than(&self, addr: SocketAddr) -> bool {
        // Not "more than one": the failed endpoint may have left the set
        // already (its removal racing its connection's end).
        self.set.balancer.endpoints().iter().any(|h| h.endpoint().addr != addr)
    }
}

fn log_ejection(set: &BackendSet, addr: SocketAddr, ejected: Option<Duration>) {
    if let Some(backoff) = ejected {
        set.count_ejection();
        let authority = &set.authority;
        warn!(
            "endpoint {addr} of {authority} taken out of rotation for {} after consecutive failures",
            humantime::format_duration(Duration::from_millis(backoff.as_millis() as u64))
        );
    }
}
