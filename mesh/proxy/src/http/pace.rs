//! How slowly a client may send a request body. Only time spent waiting
//! for the client counts (an upstream that reads slowly is not the client's
//! fault):
//!
//! - any body silent for `--request-body-idle-timeout` while waited for is cut;
//! - a body of known length (a finished upload: the client has every byte)
//!   may be waited for `--request-body-grace` plus one second per
//!   `--min-request-body-rate` bytes received, no longer (Kestrel's
//!   `MinRequestBodyDataRate`). A body trickled at 1 byte/s is cut after
//!   about the grace. Streamed bodies (gRPC client streams, chunked
//!   uploads) have no rate: an interactive stream may be quiet for a while.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

use crate::config::Conns;

/// Why a request body was cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaceError {
    /// Nothing arrived for the idle timeout.
    #[error("the client sent no request body bytes for {} (--request-body-idle-timeout)", humantime::format_duration(*.0))]
    Idle(Duration),
    /// A known-length body arrived slower than the minimum rate.
    #[error("the client sent the request body slower than {rate} bytes/s ({bytes} bytes in {}; --min-request-body-rate)", humantime::format_duration(*.waited))]
    TooSlow {
        /// The configured minimum, bytes per second.
        rate: u64,
        /// Bytes received when cut.
        bytes: u64,
        /// Time spent waiting for them (whole milliseconds).
        waited: Duration,
    },
}

/// The pace bookkeeping of one request body.
#[derive(Debug)]
pub struct Pace {
    /// Bytes per second; 0 when no rate applies (streams, or switched off).
    min_rate: u64,
    grace: Duration,
    idle: Duration,
    bytes: u64,
    waited: Duration,
    /// When the current wait for the client began.
    since: Option<Instant>,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Pace {
    /// The pace for a body; `known_length`: it has a Content-Length.
    pub fn new(conns: &Conns, known_length: bool) -> Self {
        Self {
            min_rate: if known_length { conns.min_request_body_rate } else { 0 },
            grace: conns.request_body_grace,
            idle: conns.request_body_idle_timeout,
            bytes: 0,
            waited: Duration::ZERO,
            since: None,
            timer: None,
        }
    }

    /// The body had nothing for us: keep waiting, or give up.
    pub fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<PaceError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let (allowed, slow) = match self.rate_allowance() {
            Some(left) if left < self.idle => (left, true),
            _ => (self.idle, false),
        };
        let deadline = since + allowed;
        if !matches!(&self.timer, Some((at, _)) if *at == deadline) {
            self.timer = Some((deadline, Box::pin(tokio::time::sleep_until(deadline))));
        }
        let Some((_, timer)) = self.timer.as_mut() else { unreachable!("set above") };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let waited = self.waited + since.elapsed();
        Poll::Ready(match slow {
            true => PaceError::TooSlow { rate: self.min_rate, bytes: self.bytes, waited: Duration::from_millis(waited.as_millis() as u64) },
            false => PaceError::Idle(self.idle),
        })
    }

    /// The body produced a frame carrying `bytes` data bytes.
    pub fn arrived(&mut self, bytes: u64) {
        if let Some(since) = self.since.take() {
            self.waited += since.elapsed();
        }
        self.bytes += bytes;
    }

    /// How much longer the rate allows waiting in this wait, if a rate applies.
    fn rate_allowance(&self) -> Option<Duration> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = self.grace + Duration::from_secs_f64(self.bytes as f64 / self.min_rate as f64);
        Some(earned.saturating_sub(self.waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns() -> Conns {
        Conns {
            min_request_body_rate: 100,
            request_body_grace: Duration::from_millis(200),
            request_body_idle_timeout: Duration::from_millis(300),
            ..Conns::default()
        }
    }

    async fn wait(p: &mut Pace) -> PaceError {
        std::future::poll_fn(|cx| p.poll_waiting(cx)).await
    }

    #[tokio::test]
    async fn a_trickled_known_length_body_is_cut() {
        let mut p = Pace::new(&conns(), true);
        // One byte per 20 ms (50 bytes/s, half the minimum): earns 10 ms per byte.
        for _ in 0..1000 {
            match tokio::time::timeout(Duration::from_millis(20), wait(&mut p)).await {
                Ok(cut) => {
                    assert!(matches!(cut, PaceError::TooSlow { rate: 100, .. }), "{cut:?}");
                    return;
                }
                Err(_) => p.arrived(1),
            }
        }
        panic!("a body at half the minimum rate was never cut");
    }

    #[tokio::test]
    async fn streams_have_no_rate_only_the_idle_bound() {
        let mut p = Pace::new(&conns(), false);
        assert_eq!(wait(&mut p).await, PaceError::Idle(Duration::from_millis(300)));
        // A fast known-length body has earned more than the idle bound.
        let mut p = Pace::new(&conns(), true);
        p.arrived(100_000);
        assert_eq!(wait(&mut p).await, PaceError::Idle(Duration::from_millis(300)));
    }
}
