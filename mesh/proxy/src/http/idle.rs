//! Downstream HTTP connections that do nothing are closed: one that has not
//! sent a complete request head within `--header-read-timeout` (a stalled
//! HTTP/2 preface, an mTLS client silent after its handshake: hyper's own
//! header timer only runs for HTTP/1 once it knows the version), and one
//! with no request in flight for `--http-idle-timeout` (HTTP/2: GOAWAY,
//! requests already received still answered).
//!
//! A request is in flight from its head until its response body is gone
//! ([`Tracked`] holds the count), so a long streaming response is not idle.

use std::{
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::{sync::watch, time::Instant};
use tracing::debug;

use crate::http::phase::Phase;

/// What one connection is doing: requests in flight, and when it last did something.
#[derive(Debug, Clone)]
pub struct Activity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opened: Instant,
    in_flight: AtomicUsize,
    seen_request: AtomicBool,
    /// Milliseconds after `opened` when the last request ended.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A connection opened now, with nothing in flight.
    pub fn new() -> Self {
        let inner = Inner { opened: Instant::now(), in_flight: AtomicUsize::new(0), seen_request: AtomicBool::new(false), last_ms: AtomicU64::new(0) };
        Self { inner: Arc::new(inner) }
    }

    /// A request head arrived; it is in flight until the guard drops.
    pub fn request(&self) -> InFlight {
        self.inner.seen_request.store(true, Ordering::Relaxed);
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { inner: Arc::clone(&self.inner) }
    }

    /// Requests (or a relay) in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Whether any request head has arrived.
    pub fn seen_request(&self) -> bool {
        self.inner.seen_request.load(Ordering::Relaxed)
    }

    /// When the connection last finished a request (its opening if none
    /// has): the connection cap closes the one idle longest.
    pub fn last_active(&self) -> Instant {
        self.inner.opened + Duration::from_millis(self.inner.last_ms.load(Ordering::Acquire))
    }

    /// Resolves once nothing is in flight and the connection has been idle
    /// for `idle` (or, before its first request, open for `first`).
    async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let deadline = if self.inner.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else if !self.seen_request() {
                Some(self.inner.opened + first)
            } else {
                Some(self.inner.opened + Duration::from_millis(self.inner.last_ms.load(Ordering::Acquire)) + idle)
            };
            match deadline {
                Some(d) if d <= Instant::now() && self.inner.in_flight.load(Ordering::Acquire) == 0 => return,
                Some(d) => tokio::time::sleep_until(d).await,
                // Busy: look again after a whole idle period at the earliest.
                None => tokio::time::sleep(idle).await,
            }
        }
    }
}

/// A request in flight on its connection (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight {
    inner: Arc<Inner>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.inner.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_ms.fetch_max(ms, Ordering::AcqRel);
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is gone.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// `body`, holding `in_flight` until dropped.
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self { body, _in_flight: in_flight }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `conn` to its end: gracefully shut down when the phase leaves
/// `Running` or after `idle` with nothing in flight; closed at once when no
/// request head arrived within `first`.
pub async fn drive<C>(conn: C, activity: &Activity, first: Duration, idle: Duration, phase: &mut watch::Receiver<Phase>) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = phase.wait_for(|p| *p != Phase::Running), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.idle(first, idle), if !closing => {
                if !activity.seen_request() {
                    debug!(within = ?first, "no request head on this connection in time; closing");
                    return Ok(());
                }
                debug!(?idle, "connection idle; closing");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_first_request_then_for_the_last_to_end() {
        let a = Activity::new();
        let (first, idle) = (Duration::from_millis(50), Duration::from_millis(100));
        a.idle(first, idle).await;
        assert!(!a.seen_request());

        let req = a.request();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.idle(first, idle).await }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!waiting.is_finished(), "a request in flight is not idle");
        drop(req);
        tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("idle after the request ended").unwrap();
    }
}
