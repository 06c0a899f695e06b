//! Open-loop HTTP load generator with coordinated-omission-corrected HDR histograms, and the
//! target server (`serve`) it is calibrated against.
//!
//! ```text
//!  sequencer (OS thread, precise sleep)          closed loop: no sequencer,
//!    slot i at t0 + i/rate                       each connection re-sends on completion
//!        │
//!        ├─ HTTP/1: one shared FIFO ──> N connection tasks, one request in flight each
//!        └─ HTTP/2: round robin     ──> N connection tasks, many streams each (capped)
//!                                              │
//!                     per-task Recorder (HDR: latency from the *scheduled* time,
//!                     service time from the actual send) ──> merged ──> record::Load
//! ```
//!
//! `proto` adds gRPC, opaque TCP (steady and churn) and WebSocket load on the same
//! sequencer, recorders and record, and what `serve` answers them with.
//!
//! A request belongs to the warm-up or the measured window by its scheduled time; warm-up
//! requests are sent at the same rate but recorded nowhere.
#![forbid(unsafe_code)]

mod client;
pub mod echo;
mod engine;
mod h1;
pub mod proto;
mod recorder;
mod sequencer;
pub mod serve;
mod summary;
mod timing;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

pub use recorder::{SliceStats, Timeline};
pub use recorder::{new_histogram, HISTOGRAM_HIGHEST_US, HISTOGRAM_LOWEST_US, HISTOGRAM_SIGFIG};
/// What a run produces and `--json` writes: the record crate's [`Load`].
pub use record::{Load, Percentiles};
pub use summary::table;

/// `loadgen run --json -` prints the record as one line of JSON starting
/// with this, after the table: a reader of a pod's log (the kind substrate)
/// finds it among the other lines.
pub const RECORD_LINE_PREFIX: &str = "loadgen-record: ";

/// The `--json -` line for `load` (without its newline).
pub fn record_line(load: &Load) -> String {
    let json = serde_json::to_string(load).expect("a Load serializes to JSON");
    format!("{RECORD_LINE_PREFIX}{json}")
}

/// The record of the last `--json -` line in `text` (`None`: there is none).
pub fn find_record_line(text: &str) -> Option<Result<Load, serde_json::Error>> {
    text.lines()
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(RECORD_LINE_PREFIX))
        .map(serde_json::from_str)
}

/// Error class keys used in [`Load::errors_by_class`].
pub mod error_class {
    /// The target answered 4xx.
    pub const STATUS_4XX: &str = "status_4xx";
    /// The target answered 5xx.
    pub const STATUS_5XX: &str = "status_5xx";
    /// A TCP connect or HTTP handshake failed (or timed out) while (re)connecting.
    pub const CONNECT: &str = "connect";
    /// No complete response within [`LoadConfig::timeout`](crate::LoadConfig::timeout) of the
    /// send, or the slot was still queued `timeout` after the end of the run.
    pub const TIMEOUT: &str = "timeout";
    /// The connection failed under the request: reset, protocol error, early close.
    pub const IO: &str = "io";
    /// HTTP/2 open loop only: the slot found the in-flight stream cap full and was not sent.
    pub const OVERFLOW: &str = "overflow";
    /// A proxy on the way shed the request: a response carrying
    /// `weft-proxy-error-kind: overloaded` (counted here, not as `status_5xx`).
    pub const SHED: &str = "shed";
    /// gRPC: the call ended with a non-OK `grpc-status` (sent by the server or a proxy
    /// answering for it). Not timed, like a failure.
    pub const GRPC_STATUS: &str = "grpc_status";
}

/// What to load, how hard and for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://HOST:PORT/path?query`: the address connected to and the path requested.
    pub target: http::Uri,
    /// Host header (HTTP/1) or `:authority` (HTTP/2) override; explicit-mode proxies route on it.
    pub host: Option<String>,
    pub mode: Mode,
    /// Length of the measured window.
    pub duration: Duration,
    /// Run at the same rate first; nothing scheduled in it is recorded.
    pub warmup: Duration,
    pub connections: usize,
    /// h2c with prior knowledge; many streams per connection.
    pub http2: bool,
    /// A protocol other than plain HTTP requests (gRPC, TCP, WebSocket); `None`: HTTP/1.1,
    /// or h2c with `http2`.
    pub proto: Option<proto::Proto>,
    /// 0 = GET without a body; otherwise POST with this many bytes.
    pub body_size: usize,
    /// Per request (and per connect); expiry counts as error class `timeout`.
    pub timeout: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            target: http::Uri::from_static("http://127.0.0.1:8080/"),
            host: None,
            mode: Mode::Open { rate: 100.0 },
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connections: 16,
            http2: false,
            proto: None,
            body_size: 0,
            timeout: Duration::from_secs(5),
        }
    }
}

impl LoadConfig {
    /// Checks every field and reports every problem at once, each naming the bad value.
    pub fn validate(&self) -> Result<(), LoadError> {
        let mut problems = Vec::new();
        match self.target.scheme_str() {
            Some("http") => {}
            Some(other) => problems.push(format!(
                "target {}: scheme {other:?} is not supported, use http:// (h2c with --http2)",
                self.target
            )),
            None => problems.push(format!(
                "target {}: missing scheme, use http://HOST:PORT/path",
                self.target
            )),
        }
        if self.target.authority().is_none() {
            problems.push(format!(
                "target {}: missing host, use http://HOST:PORT/path",
                self.target
            ));
        }
        if let Some(host) = &self.host {
            if http::HeaderValue::from_str(host).is_err()
                || host.parse::<http::uri::Authority>().is_err()
            {
                problems.push(format!(
                    "host {host:?}: not a valid Host header / authority"
                ));
            }
        }
        match self.mode {
            Mode::Open { rate } if !(rate.is_finite() && rate > 0.0) => problems.push(format!(
                "rate {rate}: must be a finite number of requests per second > 0"
            )),
            Mode::Closed { concurrency: 0 } => {
                problems.push("concurrency 0: must be at least 1".into())
            }
            _ => {}
        }
        if self.duration.is_zero() {
            problems.push("duration 0s: the measured window must be longer than zero".into());
        }
        if self.connections == 0 {
            problems.push("connections 0: must be at least 1".into());
        }
        if self.timeout.is_zero() {
            problems.push("timeout 0s: must be longer than zero".into());
        }
        if let Some(p) = self.proto {
            problems.extend(p.problems(self.http2, self.body_size));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Config(problems))
        }
    }
}

impl LoadConfig {
    /// The record's `protocol`: `http1`, `http2`, or the [`proto::Proto`]'s name.
    pub fn protocol_name(&self) -> &'static str {
        match (self.proto, self.http2) {
            (Some(p), _) => p.name(),
            (None, true) => "http2",
            (None, false) => "http1",
        }
    }
}

/// Open loop (fixed arrival rate, latency corrected for coordinated omission) or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Request i is scheduled at `t0 + i / rate`, whether or not earlier ones have finished.
    Open { rate: f64 },
    /// `concurrency` requests in flight, each re-sent as soon as it completes: measures capacity.
    Closed { concurrency: usize },
}

/// Live counters for a progress display. Counts only requests scheduled in the measured window.
#[derive(Debug, Default)]
pub struct Progress {
    /// Finished requests (responses and errors).
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    /// True from the start of [`run`] until the warm-up ends.
    pub in_warmup: AtomicBool,
}

/// Failures that stop a run before or while it runs (request failures are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot resolve target host {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("target {target} is unreachable before the start ({what}); is the server running?")]
    Unreachable { target: String, what: String },
    #[error("load task failed: {0}")]
    Task(String),
    #[error("cannot record the run's histograms: {0}")]
    Histogram(#[from] record::HistogramError),
}

/// Runs the load described by `cfg` and returns the record of its measured window: the
/// load asked for, counts, rates, and the latency (µs from the *scheduled* send time to the
/// end of the response, for every response of any status to a request scheduled in the
/// window; transport failures are counted, not timed) and service-time (from the *actual*
/// send) histograms with their percentiles.
///
/// All connections are opened before the clock starts; if the target cannot be reached then,
/// this fails with [`LoadError::Unreachable`] instead of reporting a run full of errors.
pub async fn run(cfg: LoadConfig, progress: Arc<Progress>) -> Result<Load, LoadError> {
    Ok(dispatch(cfg, progress, None).await?.0)
}

/// [`run`], and the measured window cut into slices of `slice` (by
/// scheduled time): requests, errors, shed responses and a latency
/// histogram per slice, for runs whose load changes under them (faults,
/// overload, soak).
pub async fn run_with_timeline(
    cfg: LoadConfig,
    progress: Arc<Progress>,
    slice: Duration,
) -> Result<(Load, Timeline), LoadError> {
    if slice.is_zero() {
        return Err(LoadError::Config(vec!["timeline slice 0s: must be longer than zero".into()]));
    }
    let (load, timeline) = dispatch(cfg, progress, Some(slice)).await?;
    let timeline = timeline.unwrap_or_else(|| Timeline {
        slice,
        slices: Vec::new(),
        shed_latency: new_histogram(),
        admitted_latency: new_histogram(),
    });
    Ok((load, timeline))
}

/// HTTP goes to `engine`, every other protocol to `proto`'s engine.
async fn dispatch(
    cfg: LoadConfig,
    progress: Arc<Progress>,
    slice: Option<Duration>,
) -> Result<(Load, Option<Timeline>), LoadError> {
    match cfg.proto {
        Some(p) => proto::run(cfg, p, progress, slice).await,
        None => engine::run(cfg, progress, slice).await,
    }
}
