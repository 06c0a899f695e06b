//! Load shedding by queue time: a proxy past its capacity answers the
//! excess at once with `503` and `weft-proxy-error-kind: overloaded`
//! instead of letting every request's latency grow.
//!
//! A request's queue time is from its head being parsed (stamped by
//! `serve::serve_http`, [`Arrived`]) to its admission here. On a proxy
//! within its capacity that is microseconds. When the proxy's own run
//! queue is saturated, each HTTP/2 stream's task waits behind the others
//! before it first runs, and that wait is what is measured. A slow app or
//! upstream does not show in it: the request is admitted before it reaches
//! the upstream, and a request waiting for its response is not in the run
//! queue.
//!
//! The rule is CoDel's (RFC 8289) as wangle applies it to request queues
//! (Facebook, "Fail at scale", 2015): per listener direction, the least
//! queue time over each `--shed-interval` (100 ms) is compared with
//! `--shed-target` (5 ms). Above it means a standing queue, not a burst:
//! the direction is overloaded for the next interval, and a request that
//! waited more than twice the target is shed. The fraction shed follows
//! the excess by itself: shedding empties the queue (a shed costs a small
//! part of a forwarded request), requests that then wait less are
//! admitted, so the admitted ones see at most twice the target and the
//! proxy keeps forwarding near its capacity. CoDel's own control law
//! (drops spaced `interval / sqrt(count)`) is for TCP senders that halve
//! their rate on one drop; open-loop clients do not back off, and it would
//! take minutes to reach the tens of thousands of sheds per second an
//! overload at 3x needs.
//!
//! **Off by default** (`--shed-target 0s`), because that last claim did
//! not hold when measured: in `bench run --suite hardening` (release
//! build of df80c12, quiet machine, h2c over 16 connections, capacity
//! 22,582 rps closed loop) at 3x (67,745 rps offered) the proxy shed
//! 607,895 requests and admitted 15,196 in 15 s: about 1,000 rps of
//! goodput. The offered rate stays above what the proxy can even shed,
//! so its run queue never empties and nearly every request has waited
//! past twice the target by the time it runs. Shedding must happen before
//! the wait (refusing streams, LIFO admission, or a limit on streams per
//! connection that adapts) for this to keep goodput; until then it is
//! opt-in (`--shed-target 5ms`).
//!
//! Refusing on arrival was then tried and measured (fifth session, branch
//! `shed-inflight-tried`, docs/FIGURES.md "Overload, fifth session"): an
//! in-flight limit per direction, checked as the head is parsed, cut to
//! 3/4 of what was in flight for each interval judged overloaded. Side by
//! side with shedding off it kept 6-13 % of the goodput, and after the
//! load dropped refused 650-5,300 requests of the recovery phase. Two
//! things defeat any fast answer here: every answer frees an HTTP/2
//! stream that an open-loop client with a backlog fills again at once, so
//! at 3x the proxy answers about twice its capacity in 503s and the client
//! sends as many more requests, on the cores the forwarded ones need (the
//! proxy itself was not the saturated part: unshed, the outbound proxy
//! used 0.59 of its core); and on a machine with more runnable threads
//! than cores, queue time is mostly the OS's scheduling, so a limit driven
//! by it falls to its floor. What bounded the proxy without costing
//! goodput was pushing back before a request is sent: fewer streams per
//! connection (`--http2-max-concurrent-streams`, 100 by default), the
//! excess held by the client.
//!
//! Measured again with the proxies held to a CPU limit, so that they and
//! not the load generator were what saturated (sixth session, `bench`'s
//! `proxy_cpu = 0.25`, docs/FIGURES.md "Overload with each proxy held to a
//! CPU limit"): answering the excess from an in-flight limit
//! (`--max-concurrent-requests 256 --max-queued-requests 0`) kept 0.2 of
//! the goodput that pushing back kept, because a 503 costs about a third
//! of a forward on the outbound side (inferred from the rates, not
//! profiled). Pushing back stays the default.
//!
//! Profiled in the seventh session: most of a 503's cost was copying the
//! request path's 16 KiB future (each layer moves its inner future into
//! place, and the server copies the whole into each stream's task). With
//! the forwarding part boxed (`stack::forward`) the future is 3 KiB and a
//! shed costs half what it did; with the same CPU limit the answered
//! excess is then answered in tens of milliseconds in most runs, and
//! `suites/hardening.toml` measures both configurations side by side
//! (`overload` pushes back, `overload-shed` answers; docs/FIGURES.md
//! "Overload after the boxing"). Pushing back still keeps more goodput,
//! so it stays the default.
//!
//! HTTP/1 requests carry no queue time of their own: hyper reads and
//! admits them in their connection's task, so their wait is in the socket,
//! before the head is parsed. They are neither measured (a zero would hide
//! the HTTP/2 streams' queue) nor shed by queue time; their number is
//! bounded by the connection caps and `stack::limit`.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Response, Version};
use tokio::time::Instant;

use super::{Layer, Service};
use crate::{
    config::Shedding,
    http::{body::ResponseBody, error::ProxyError},
    metrics::{LoadShedMetrics, ShedReason},
};

/// When a request's head was parsed: a request extension set as hyper
/// hands the request over, before its task first runs.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

impl Arrived {
    /// Now.
    pub fn now() -> Self {
        Self(Instant::now())
    }
}

/// No queue time seen yet in the current interval.
const NONE: u64 = u64::MAX;

/// The overload judgement of one listener direction, shared by every
/// connection of that direction. Lock-free: a request costs an atomic min
/// and a load; the one request that finds an interval ended judges it.
#[derive(Debug)]
pub struct Shedder {
    cfg: Shedding,
    origin: Instant,
    /// End of the current interval, ns since `origin`.
    interval_end: AtomicU64,
    /// Least queue time in the current interval, ns.
    min: AtomicU64,
    overloaded: AtomicBool,
    metrics: LoadShedMetrics,
}

/// What [`Shedder::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Admit,
    /// Answer 503 overloaded.
    Shed,
}

impl Shedder {
    /// Judging by `cfg`, reporting to `metrics`.
    pub fn new(cfg: Shedding, metrics: LoadShedMetrics) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            origin: Instant::now(),
            interval_end: AtomicU64::new(nanos(cfg.interval)),
            min: AtomicU64::new(NONE),
            overloaded: AtomicBool::new(false),
            metrics,
        })
    }

    /// Decides for one request that waited `waited` and is admitted (or
    /// not) `now`; its queue time counts in the current interval.
    pub fn admit(&self, waited: Duration, now: Instant) -> Verdict {
        if !self.cfg.enabled() {
            return Verdict::Admit;
        }
        self.tick(now);
        let w = nanos(waited);
        self.min.fetch_min(w, Ordering::AcqRel);
        if self.overloaded.load(Ordering::Acquire) && waited > 2 * self.cfg.target {
            self.metrics.record(ShedReason::QueueTime);
            return Verdict::Shed;
        }
        Verdict::Admit
    }

    /// Judges the interval if it ended by `now`: every request calls this,
    /// the ones without a queue time of their own too, so the state (and
    /// its gauge) follows the load even when only HTTP/1 requests come.
    pub fn tick(&self, now: Instant) {
        if !self.cfg.enabled() {
            return;
        }
        let at = nanos(now.saturating_duration_since(self.origin));
        let end = self.interval_end.load(Ordering::Acquire);
        if at >= end
            && self
                .interval_end
                .compare_exchange(end, at + nanos(self.cfg.interval), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.judge(at, end);
        }
    }

    /// The interval that ended at `end` is over (`at` is now): overloaded
    /// for the next one if none of its requests waited less than the
    /// target. An interval followed by a silence longer than itself says
    /// nothing of now: no requests came, so none are queued.
    fn judge(&self, at: u64, end: u64) {
        let min = self.min.swap(NONE, Ordering::AcqRel);
        let recent = at - end < nanos(self.cfg.interval);
        let overloaded = recent && min != NONE && min > nanos(self.cfg.target);
        self.overloaded.store(overloaded, Ordering::Release);
        self.metrics.overloaded.set(i64::from(overloaded));
        self.metrics.min_queue_us.set(if min == NONE { -1 } else { i64::try_from(min / 1_000).unwrap_or(i64::MAX) });
    }

    /// Whether the direction is judged overloaded now.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Acquire)
    }

    fn shed_error(&self, waited: Duration) -> ProxyError {
        ProxyError::QueueTime { waited, target: self.cfg.target, interval: self.cfg.interval }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sheds requests through a [`Shedder`].
#[derive(Debug, Clone)]
pub struct ShedLayer {
    shedder: Arc<Shedder>,
}

impl ShedLayer {
    /// Requests judged by `shedder`.
    pub fn new(shedder: Arc<Shedder>) -> Self {
        Self { shedder }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, shedder: Arc::clone(&self.shedder) }
    }
}

/// See [`ShedLayer`].
#[derive(Debug)]
pub struct Shed<S> {
    inner: S,
    shedder: Arc<Shedder>,
}

impl<S, B> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        // Read now, while the request is here; judged when this future
        // first runs, which is the end of the wait being measured.
        let arrived = match req.version() {
            Version::HTTP_2 => req.extensions().get::<Arrived>().copied(),
            _ => None,
        };
        async move {
            let now = Instant::now();
            match arrived {
                Some(Arrived(at)) => {
                    let waited = now.saturating_duration_since(at);
                    if self.shedder.admit(waited, now) == Verdict::Shed {
                        return Err(self.shedder.shed_error(waited));
                    }
                }
                None => self.shedder.tick(now),
            }
            self.inner.call(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Switched on with the values to use (the default is off).

    const ON: Shedding = Shedding { target: Duration::from_millis(5), interval: Duration::from_millis(100) };

    /// A shedder and a synthetic clock from its origin (no paused runtime:
    /// `admit` takes the time it is called at).
    struct Clock {
        s: Arc<Shedder>,
        now: Instant,
    }

    impl Clock {
        fn new(cfg: Shedding) -> Self {
            let s = Shedder::new(cfg, LoadShedMetrics::default());
            let now = s.origin;
            Self { s, now }
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
        }

        fn admit(&self, waited: Duration) -> Verdict {
            self.s.admit(waited, self.now)
        }

        /// `n` requests that each waited `waited`, one every `every`; how many were shed.
        fn feed(&mut self, n: u32, waited: Duration, every: Duration) -> u32 {
            (0..n)
                .map(|_| {
                    self.advance(every);
                    u32::from(self.admit(waited) == Verdict::Shed)
                })
                .sum()
        }
    }

    #[test]
    fn a_standing_queue_over_the_target_for_an_interval_sheds_the_long_waits_only() {
        let mut c = Clock::new(ON);
        // The first interval: every request waited 20 ms (over 5), none shed yet.
        assert_eq!(c.feed(99, 20 * MS, MS), 0);
        assert!(!c.s.overloaded());
        // The first request after it judges the interval: overloaded.
        c.advance(MS);
        assert_eq!(c.admit(20 * MS), Verdict::Shed);
        assert!(c.s.overloaded());
        assert_eq!(c.s.metrics.overloaded.get(), 1);
        assert_eq!(c.s.metrics.min_queue_us.get(), 20_000);
        // While overloaded, waits up to twice the target still pass.
        assert_eq!(c.admit(10 * MS), Verdict::Admit);
        assert_eq!(c.admit(3 * MS), Verdict::Admit);
        assert_eq!(c.admit(11 * MS), Verdict::Shed);
        assert_eq!(c.s.metrics.shed(ShedReason::QueueTime), 2);
    }

    #[test]
    fn one_short_wait_in_an_interval_means_no_standing_queue() {
        let mut c = Clock::new(ON);
        // Bursts: most requests wait long, but the queue empties once an interval.
        for _ in 0..5 {
            assert_eq!(c.feed(50, 40 * MS, MS), 0);
            assert_eq!(c.admit(Duration::from_micros(100)), Verdict::Admit);
            assert_eq!(c.feed(50, 40 * MS, MS), 0);
        }
        assert!(!c.s.overloaded());
        assert_eq!(c.s.metrics.shed(ShedReason::QueueTime), 0);
    }

    #[test]
    fn the_overload_ends_with_the_first_interval_whose_queue_empties() {
        let mut c = Clock::new(ON);
        c.feed(100, 30 * MS, MS);
        assert!(c.feed(100, 30 * MS, MS) > 0);
        assert!(c.s.overloaded());
        // Load drops: waits near zero for one interval, then nothing is shed.
        c.feed(100, Duration::from_micros(50), MS);
        assert_eq!(c.feed(100, 30 * MS, MS), 0, "judged not overloaded for this interval");
        assert!(!c.s.overloaded());
        assert_eq!(c.s.metrics.overloaded.get(), 0);
    }

    #[test]
    fn a_silence_after_an_overloaded_interval_is_no_queue() {
        let mut c = Clock::new(ON);
        c.feed(100, 30 * MS, MS);
        assert!(c.s.overloaded());
        // Nothing for a second; then one late request from the old queue.
        c.advance(Duration::from_secs(1));
        assert_eq!(c.admit(30 * MS), Verdict::Admit);
        assert!(!c.s.overloaded());
        assert_eq!(c.s.metrics.min_queue_us.get(), 30_000, "the last interval's minimum, still reported");
    }

    #[test]
    fn a_zero_target_never_sheds() {
        let mut c = Clock::new(Shedding { target: Duration::ZERO, ..Shedding::default() });
        assert_eq!(c.feed(1000, Duration::from_secs(1), 2 * MS), 0);
    }

    /// Counts the requests that reach it.
    struct Count(AtomicUsize);

    impl Service<Request<()>> for Count {
        type Response = Result<Response<ResponseBody>, ProxyError>;

        fn call(&self, _req: Request<()>) -> impl Future<Output = Self::Response> + Send {
            self.0.fetch_add(1, Ordering::Relaxed);
            async { Ok(Response::new(ResponseBody::empty())) }
        }
    }

    fn req(version: Version, waited: Duration) -> Request<()> {
        let mut req = Request::new(());
        *req.version_mut() = version;
        req.extensions_mut().insert(Arrived(Instant::now() - waited));
        req
    }

    #[tokio::test]
    async fn the_layer_sheds_h2_requests_that_waited_and_never_http1_ones() {
        // A long interval: the real clock stays inside the one judged below.
        let mut c = Clock::new(Shedding { target: 5 * MS, interval: Duration::from_secs(3600) });
        let svc = ShedLayer::new(Arc::clone(&c.s)).layer(Count(AtomicUsize::new(0)));
        assert!(svc.call(req(Version::HTTP_2, 50 * MS)).await.is_ok(), "not judged overloaded yet");
        c.advance(Duration::from_secs(3600));
        assert_eq!(c.admit(50 * MS), Verdict::Shed, "the real request's 50 ms made the interval's minimum");

        let shed = svc.call(req(Version::HTTP_2, 50 * MS)).await;
        let Err(e @ ProxyError::QueueTime { .. }) = shed else { panic!("{shed:?}") };
        let resp = e.into_response();
        assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["weft-proxy-error-kind"], "overloaded");
        let reason = resp.headers()["weft-proxy-error"].to_str().unwrap().to_owned();
        assert!(reason.starts_with("overloaded: this request waited 5") && reason.contains(" ms in the proxy"), "{reason}");
        // A short wait passes; HTTP/1 requests and unstamped ones are not judged.
        assert!(svc.call(req(Version::HTTP_2, MS)).await.is_ok());
        assert!(svc.call(req(Version::HTTP_11, 50 * MS)).await.is_ok());
        let mut bare = Request::new(());
        *bare.version_mut() = Version::HTTP_2;
        assert!(svc.call(bare).await.is_ok());
        assert_eq!(svc.inner.0.load(Ordering::Relaxed), 4);
        assert_eq!(c.s.metrics.shed(ShedReason::QueueTime), 2);
    }
}
