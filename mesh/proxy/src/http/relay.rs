//! The byte relay opaque TCP (both directions) and upgraded HTTP
//! connections (WebSocket) share, closed when no byte has crossed it
//! either way for `--tcp-idle-timeout` (Envoy's `tcp_proxy` idle timeout):
//! a peer that vanished, or a client that opened a relay and went silent,
//! does not hold two sockets forever.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// Copies bytes both ways until both sides are done, or until neither side
/// moved a byte for `idle` (then `TimedOut`); returns (a->b, b->a).
pub async fn relay_with_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let clock = Clock::new();
    let mut a = Active { io: a, clock: clock.clone() };
    let mut b = Active { io: b, clock: clock.clone() };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, &mut b) => copied,
        () = clock.idle_for(idle) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no bytes either way for {}; closed (--tcp-idle-timeout)", humantime::format_duration(idle)),
        )),
    }
}

/// When bytes last moved, in milliseconds after `start`.
#[derive(Clone)]
struct Clock {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Clock {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One side of the relay, touching the clock whenever bytes move.
struct Active<'a, T: ?Sized> {
    io: &'a mut T,
    clock: Clock,
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_silent_relay_is_cut_and_a_busy_one_is_not() {
        let (mut a, mut a_peer) = tokio::io::duplex(64);
        let (mut b, _b_peer) = tokio::io::duplex(1 << 16);
        let idle = Duration::from_millis(300);
        let relay = tokio::spawn(async move { relay_with_idle(&mut a, &mut b, idle).await });
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            a_peer.write_all(b"x").await.unwrap();
        }
        assert!(!relay.is_finished(), "a byte every 100 ms keeps a 300 ms relay open");
        let err = tokio::time::timeout(Duration::from_secs(10), relay).await.expect("cut when silent").unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
