//! The calibrated target server: HTTP/1.1 keep-alive and h2c (prior knowledge) on one port,
//! a fixed response body, a precise injected delay and a deterministic share of 503s.
//!
//! `GET /healthz` answers 200 at once (no delay, never an error, not counted) for readiness
//! checks; `GET /headers` answers at once with the request's headers, one `name: value` per
//! line (what reached the app through the hops in front of it). Every other request is read to the end and answered after `delay`.
//!
//! With [`ServeConfig::echo`] (`loadgen serve --echo --name ...`) every request but `/healthz`
//! is answered by [`crate::echo`] instead: a JSON account of what arrived and which replica
//! answered, with per-request status, delay and response-header knobs.
//!
//! gRPC requests (`content-type: application/grpc*`) are answered by `weft.bench.v1.Bench`
//! ([`crate::proto::grpc`]), paced the same way. With [`ServeConfig::websocket`] connections
//! also take WebSocket upgrades, whose messages are echoed ([`crate::proto::ws`]); with
//! [`ServeConfig::tcp_echo`] the port is no HTTP server at all but an opaque TCP echo
//! ([`crate::proto::tcp`]).
//!
//! Error spread: request n (counting from 1, per server) is answered 503 exactly when
//! `floor(n·P) > floor((n−1)·P)`. With P = 0.1 that is every 10th request; any run of N
//! consecutive requests holds floor(N·P) or ceil(N·P) errors — no randomness to average out.

use std::collections::BinaryHeap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::echo::{self, EchoBody, Replica};
use crate::timing::{precise_timer_slack, SPIN};

/// How long open connections get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// HTTP/2 streams allowed per connection: well above what a delay-bound benchmark needs.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Added to every response (not `/healthz`), timed from the arrival of the request head.
    pub delay: Duration,
    /// Bytes in every response body.
    pub body_size: usize,
    /// Fraction in [0, 1] of responses answered 503, spread evenly (see the module docs).
    pub error_rate: f64,
    /// Runtime worker threads; used by whoever builds the runtime (the `loadgen` binary),
    /// [`serve`] itself runs on the current one.
    pub threads: usize,
    /// Echo mode: answer with what arrived (see [`crate::echo`]), naming this replica;
    /// `delay`, `body_size` and `error_rate` then do not apply.
    pub echo: Option<Replica>,
    /// Also accept WebSocket upgrades (any path): each message is echoed back. Upgraded
    /// connections are not part of the graceful shutdown (hyper's graceful watch does not
    /// take upgradeable connections): open WebSockets are cut at exit.
    pub websocket: bool,
    /// Serve opaque TCP instead of HTTP: every byte of every connection is echoed back.
    pub tcp_echo: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            body_size: 0,
            error_rate: 0.0,
            threads: 1,
            echo: None,
            websocket: false,
            tcp_echo: false,
        }
    }
}

impl ServeConfig {
    /// Every problem at once, each naming the bad value.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.error_rate) {
            problems.push(format!(
                "error rate {}: must be a fraction between 0 and 1",
                self.error_rate
            ));
        }
        if self.threads == 0 {
            problems.push("threads 0: must be at least 1".into());
        }
        if self.tcp_echo {
            let http_only = [
                (!self.delay.is_zero(), "--delay"),
                (self.body_size != 0, "--body-size"),
                (self.error_rate != 0.0, "--error-rate"),
                (self.echo.is_some(), "--echo"),
                (self.websocket, "--websocket"),
            ];
            for (_, flag) in http_only.iter().filter(|(set, _)| *set) {
                problems.push(format!(
                    "--tcp-echo with {flag}: a TCP echo answers with the client's own bytes at once; drop {flag}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Whether request `n` (1-based) is one of the injected errors for `rate`.
pub fn is_injected_error(n: u64, rate: f64) -> bool {
    n > 0 && (n as f64 * rate).floor() > ((n - 1) as f64 * rate).floor()
}

/// What every protocol of the server answers with, and how fast.
pub(crate) struct State {
    body: Bytes,
    delay: Duration,
    error_rate: f64,
    served: AtomicU64,
    timer: Option<DelayTimer>,
    echo: Option<Replica>,
    /// Connections are served with upgrades: WebSocket requests are accepted.
    websocket: bool,
}

/// Serves until `shutdown` resolves, then stops accepting and gives open connections
/// [`SHUTDOWN_GRACE`] to finish their requests.
pub async fn serve(
    listener: TcpListener,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if let Err(problems) = cfg.validate() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            problems.join("; "),
        ));
    }
    if cfg.tcp_echo {
        return crate::proto::tcp::serve_echo(listener, shutdown).await;
    }
    let state = Arc::new(State {
        body: Bytes::from(vec![b'x'; cfg.body_size]),
        delay: cfg.delay,
        error_rate: cfg.error_rate,
        served: AtomicU64::new(0),
        timer: (!cfg.delay.is_zero() && cfg.echo.is_none())
            .then(DelayTimer::start)
            .transpose()?,
        echo: cfg.echo,
        websocket: cfg.websocket,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let graceful = GracefulShutdown::new();
    let websocket = state.websocket;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE under a connection storm: keep serving the open ones.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let state = state.clone();
        let service = service_fn(move |req| handle(req, state.clone()));
        if websocket {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
            continue;
        }
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

/// Every answer's body: HTTP and echo answers, or tonic's for gRPC.
type ServeBody = Either<EchoBody, tonic::body::Body>;

fn whole(body: Bytes) -> Response<ServeBody> {
    Response::new(Either::Left(EchoBody::Left(Full::new(body))))
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<ServeBody>, Infallible> {
    // Any path: a WebSocket client's readiness check may well ask for /healthz.
    if state.websocket && crate::proto::ws::is_upgrade(&req) {
        return Ok(crate::proto::ws::accept(req).map(|()| Either::Left(EchoBody::Left(Full::default()))));
    }
    if req.uri().path() == "/healthz" {
        return Ok(whole(Bytes::from_static(b"ok\n")));
    }
    if let Some(replica) = &state.echo {
        return Ok(echo::respond(req, replica).await.map(Either::Left));
    }
    if is_grpc(&req) {
        let arrived = Instant::now();
        return Ok(crate::proto::grpc::Service::call(state, req, arrived).await.map(Either::Right));
    }
    if req.uri().path() == "/headers" {
        return Ok(whole(echo_headers(&req)));
    }
    let arrived = Instant::now();
    let n = state.served.fetch_add(1, Ordering::Relaxed) + 1;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            // The client went away mid-body; the answer would go nowhere.
            break;
        }
    }
    if let Some(timer) = &state.timer {
        timer.sleep_until(arrived + state.delay).await;
    }
    let mut resp = whole(state.body.clone());
    if is_injected_error(n, state.error_rate) {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(resp)
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl State {
    /// Counts one request and waits out the delay from `arrived`; true when it is one of
    /// the injected errors (as `handle` does for HTTP).
    pub(crate) async fn pace(&self, arrived: Instant) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(timer) = &self.timer {
            timer.sleep_until(arrived + self.delay).await;
        }
        is_injected_error(n, self.error_rate)
    }

    /// The response body every answer carries.
    pub(crate) fn body(&self) -> Bytes {
        self.body.clone()
    }
}

/// The request's headers as `name: value` lines: what reached the app
/// after every hop in front of it (e.g. a mesh's client-identity header).
fn echo_headers<B>(req: &Request<B>) -> Bytes {
    let mut out = String::new();
    for (name, value) in req.headers() {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        out.push('\n');
    }
    Bytes::from(out)
}

/// A timer with µs precision for many concurrent waits: one OS thread sleeps (with a 1 µs
/// timer slack, then a short spin) until the earliest deadline and completes it. tokio's own
/// timer would round every delay up to the next millisecond.
struct DelayTimer {
    shared: Arc<(Mutex<Deadlines>, Condvar)>,
}

#[derive(Default)]
struct Deadlines {
    heap: BinaryHeap<Waiter>,
    seq: u64,
    stop: bool,
}

struct Waiter {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    // Reversed: BinaryHeap is a max-heap and the earliest deadline must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl DelayTimer {
    fn start() -> io::Result<Self> {
        let shared = Arc::new((Mutex::new(Deadlines::default()), Condvar::new()));
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("serve-delay-timer".into())
            .spawn(move || {
                precise_timer_slack();
                let (lock, cvar) = &*worker;
                let mut d = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !d.stop {
                    let Some(first) = d.heap.peek().map(|w| w.at) else {
                        d = cvar.wait(d).unwrap_or_else(|e| e.into_inner());
                        continue;
                    };
                    let now = Instant::now();
                    if first <= now {
                        while d.heap.peek().is_some_and(|w| w.at <= now) {
                            let w = d.heap.pop().expect("peeked");
                            let _ = w.tx.send(());
                        }
                    } else if first - now > SPIN {
                        // Woken early when a sooner deadline arrives (never with a fixed delay).
                        d = cvar
                            .wait_timeout(d, first - now - SPIN)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    } else {
                        drop(d);
                        crate::timing::wait_until(first);
                        d = lock.lock().unwrap_or_else(|e| e.into_inner());
                    }
                }
            })?;
        Ok(Self { shared })
    }

    async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let (lock, cvar) = &*self.shared;
            let mut d = lock.lock().unwrap_or_else(|e| e.into_inner());
            d.seq += 1;
            let seq = d.seq;
            let sooner = d.heap.peek().is_none_or(|w| at < w.at);
            d.heap.push(Waiter { at, seq, tx });
            if sooner {
                cvar.notify_one();
            }
        }
        // An error means the timer is gone (shutdown): answer now rather than never.
        let _ = rx.await;
    }
}

impl Drop for DelayTimer {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cvar.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_echoed_one_per_line() {
        let req = Request::get("/headers")
            .header("host", "svc")
            .header("weft-client-id", "spiffe://td/ns/a/sa/b")
            .body(())
            .unwrap();
        assert_eq!(
            echo_headers(&req),
            Bytes::from("host: svc\nweft-client-id: spiffe://td/ns/a/sa/b\n")
        );
    }

    #[test]
    fn injected_errors_are_evenly_spread() {
        let errors: Vec<u64> = (1..=50).filter(|&n| is_injected_error(n, 0.1)).collect();
        assert_eq!(errors, vec![10, 20, 30, 40, 50]);
        assert!((1..=1000).all(|n| !is_injected_error(n, 0.0)));
        assert!((1..=1000).all(|n| is_injected_error(n, 1.0)));
        // any window of N consecutive requests holds floor or ceil of N*P errors
        for p in [0.1, 0.25, 0.333, 0.01] {
            for start in 1..200u64 {
                let n = 137u64;
                let count = (start..start + n)
                    .filter(|&k| is_injected_error(k, p))
                    .count() as f64;
                assert!(
                    (count - n as f64 * p).abs() <= 1.0,
                    "p={p} start={start} count={count}"
                );
            }
        }
    }

    #[tokio::test]
    async fn delay_timer_fires_in_deadline_order_and_never_early() {
        let timer = Arc::new(DelayTimer::start().unwrap());
        let base = Instant::now() + Duration::from_millis(20);
        let mut tasks = Vec::new();
        for k in [5u64, 1, 3, 2, 4] {
            let timer = timer.clone();
            let at = base + Duration::from_millis(k);
            tasks.push(tokio::spawn(async move {
                timer.sleep_until(at).await;
                (at, Instant::now())
            }));
        }
        for t in tasks {
            let (at, woke) = t.await.unwrap();
            assert!(woke >= at);
        }
    }
}
