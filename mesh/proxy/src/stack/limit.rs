//! A cap on the requests in flight on one listener direction, with a short
//! bounded queue: when both are full, the request is shed at once with
//! `503` and `weft-proxy-error: overloaded ...` (counted as
//! `weft_proxy_errors_total{kind="overloaded"}`), so an overloaded proxy
//! answers fast from bounded memory instead of queueing without end. A
//! request holds its slot until its response body ends. This is the
//! ceiling; below it `shed` sheds by queue time when the proxy itself is
//! saturated, long before the count is reached.

use std::{future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use tokio::sync::Semaphore;

use super::{Layer, Service};
use crate::{
    http::{body::ResponseBody, error::ProxyError},
    metrics::{LoadShedMetrics, ShedReason},
};

/// The in-flight slots and queue places of one listener direction; shared
/// by every connection of that direction.
#[derive(Debug)]
pub struct Limiter {
    in_flight: Arc<Semaphore>,
    queue: Semaphore,
    max_in_flight: usize,
    max_queued: usize,
    max_wait: Duration,
    metrics: LoadShedMetrics,
}

impl Limiter {
    /// At most `max_in_flight` requests in flight and `max_queued` waiting
    /// for a slot, each for at most `max_wait`; sheds counted in `metrics`.
    pub fn new(max_in_flight: usize, max_queued: usize, max_wait: Duration, metrics: LoadShedMetrics) -> Arc<Self> {
        Arc::new(Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            queue: Semaphore::new(max_queued),
            max_in_flight,
            max_queued,
            max_wait,
            metrics,
        })
    }

    fn overloaded(&self) -> ProxyError {
        self.metrics.record(ShedReason::Limit);
        ProxyError::Overloaded { in_flight: self.max_in_flight, queued: self.max_queued }
    }
}

/// Admits requests through a [`Limiter`].
#[derive(Debug, Clone)]
pub struct LimitLayer {
    limiter: Arc<Limiter>,
}

impl LimitLayer {
    /// Requests admitted by `limiter`.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit { inner, limiter: Arc::clone(&self.limiter) }
    }
}

/// See [`LimitLayer`].
#[derive(Debug)]
pub struct Limit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, B> Service<Request<B>> for Limit<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        async move {
            let limiter = &self.limiter;
            let slot = match Arc::clone(&limiter.in_flight).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    // Shed at once when the queue is full too.
                    let Ok(_place) = limiter.queue.try_acquire() else {
                        return Err(limiter.overloaded());
                    };
                    match tokio::time::timeout(limiter.max_wait, Arc::clone(&limiter.in_flight).acquire_owned()).await {
                        Ok(Ok(slot)) => slot,
                        // Waited its turn in vain (or the semaphore closed).
                        _ => return Err(limiter.overloaded()),
                    }
                }
            };
            let resp = self.inner.call(req).await?;
            Ok(resp.map(|body| body.hold(slot)))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;

    /// Holds every request until `open` turns true, then answers 200.
    struct Held(watch::Receiver<bool>);

    impl Service<Request<()>> for Held {
        type Response = Result<Response<ResponseBody>, ProxyError>;

        fn call(&self, _req: Request<()>) -> impl Future<Output = Self::Response> + Send {
            let mut open = self.0.clone();
            async move {
                let _ = open.wait_for(|o| *o).await;
                Ok(Response::new(ResponseBody::empty()))
            }
        }
    }

    #[tokio::test]
    async fn a_full_limit_and_queue_shed_at_once_and_a_slot_lasts_until_the_body_is_gone() {
        let (open_tx, open) = watch::channel(false);
        let limiter = Limiter::new(1, 1, Duration::from_secs(3600), LoadShedMetrics::default());
        let svc = Arc::new(LimitLayer::new(Arc::clone(&limiter)).layer(Held(open)));
        let call = |svc: &Arc<Limit<Held>>| {
            let svc = Arc::clone(svc);
            tokio::spawn(async move { svc.call(Request::new(())).await })
        };
        let first = call(&svc);
        let queued = call(&svc);
        while limiter.queue.available_permits() > 0 || limiter.in_flight.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // One in flight, one waiting: the next is shed without waiting.
        let shed = svc.call(Request::new(())).await;
        assert!(matches!(shed, Err(ProxyError::Overloaded { in_flight: 1, queued: 1 })), "{shed:?}");
        assert_eq!(limiter.metrics.shed(ShedReason::Limit), 1);

        open_tx.send_replace(true);
        let body = first.await.unwrap().unwrap().into_body();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!queued.is_finished(), "the first response's body still holds the only slot");
        drop(body);
        assert!(queued.await.unwrap().is_ok());
        assert_eq!(limiter.in_flight.available_permits(), 1, "every slot back once the bodies are gone");
    }
}
