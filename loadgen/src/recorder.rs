//! Per-task statistics: each sender task owns one [`Recorder`] (no locks on the hot path);
//! they are merged once at the end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::timing::{Window, LATE_SEND};
use crate::{LoadConfig, Mode, Progress};

/// Lowest recordable value: 1 µs (a zero-µs sample is recorded as 1).
pub const HISTOGRAM_LOWEST_US: u64 = 1;
/// Highest recordable value: 60 s (longer samples are clamped to it).
pub const HISTOGRAM_HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept: values are exact to 0.1 %.
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// A histogram with the crate's fixed bounds: 1 µs to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HISTOGRAM_LOWEST_US, HISTOGRAM_HIGHEST_US, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// A growable histogram for one task: it only allocates buckets up to the largest value seen,
/// so hundreds of connections do not each hold a 60 s-wide histogram.
fn task_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(
        HISTOGRAM_LOWEST_US,
        2 * HISTOGRAM_LOWEST_US,
        HISTOGRAM_SIGFIG,
    )
    .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

fn micros(d: Duration) -> u64 {
    (d.as_micros().min(u128::from(HISTOGRAM_HIGHEST_US)) as u64).max(HISTOGRAM_LOWEST_US)
}

/// Records `d` in µs, clamped to the fixed bounds. `record` (not `saturating_record`, which
/// would clamp to the current size) grows the task histogram as needed.
fn record(h: &mut Histogram<u64>, d: Duration) {
    let v = micros(d);
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A complete response arrived; the status decides whether it is an error.
    Response(http::StatusCode),
    /// A complete response the proxy answered itself because it was
    /// overloaded (`weft-proxy-error-kind: overloaded`): shed, error class `shed`.
    Shed(http::StatusCode),
    /// No response; the value is an [`error_class`](crate::error_class) key.
    Failed(&'static str),
}

pub(crate) struct Recorder {
    window: Window,
    timeline: Option<TimelineAcc>,
    progress: Arc<Progress>,
    latency: Histogram<u64>,
    service: Histogram<u64>,
    requests: u64,
    errors: u64,
    by_class: BTreeMap<&'static str, u64>,
    late_sends: u64,
    /// Requests of the window never written to a connection (`sent` None).
    not_sent: u64,
    /// Requests outside the window (its warm-up) written to a connection.
    sent_outside: u64,
    completed_in_window: u64,
    connections_opened: u64,
}

impl Recorder {
    pub fn new(window: Window, progress: Arc<Progress>) -> Self {
        Self {
            window,
            timeline: None,
            progress,
            latency: task_histogram(),
            service: task_histogram(),
            requests: 0,
            errors: 0,
            by_class: BTreeMap::new(),
            late_sends: 0,
            not_sent: 0,
            sent_outside: 0,
            completed_in_window: 0,
            connections_opened: 0,
        }
    }

    /// Also keep per-slice statistics, slices of `slice` from the start of
    /// the measured window (by scheduled time, like everything else).
    pub fn with_timeline(mut self, slice: Option<Duration>) -> Self {
        self.timeline = slice.map(|slice| TimelineAcc {
            slice,
            slices: Vec::new(),
            shed: task_histogram(),
            admitted: task_histogram(),
        });
        self
    }

    pub fn connection_opened(&mut self) {
        self.connections_opened += 1;
    }

    /// Records one finished request. `sent` is `None` when it never reached the wire.
    pub fn record(
        &mut self,
        scheduled: Instant,
        sent: Option<Instant>,
        done: Instant,
        outcome: Outcome,
    ) {
        if let Outcome::Response(_) | Outcome::Shed(_) = outcome {
            // Throughput counts completions inside the window whatever their schedule, so a
            // backlog draining after a stall is not credited to the window twice or never.
            if self.window.contains_completion(done) {
                self.completed_in_window += 1;
            }
        }
        if !self.window.measures(scheduled) {
            self.sent_outside += u64::from(sent.is_some());
            return;
        }
        self.requests += 1;
        match sent {
            Some(sent) if sent.saturating_duration_since(scheduled) > LATE_SEND => self.late_sends += 1,
            Some(_) => {}
            None => self.not_sent += 1,
        }
        let class = match outcome {
            Outcome::Response(status) => {
                record(&mut self.latency, done.saturating_duration_since(scheduled));
                record(
                    &mut self.service,
                    done.saturating_duration_since(sent.unwrap_or(scheduled)),
                );
                if status.is_client_error() {
                    Some(crate::error_class::STATUS_4XX)
                } else if status.is_server_error() {
                    Some(crate::error_class::STATUS_5XX)
                } else {
                    None
                }
            }
            Outcome::Shed(_) => {
                record(&mut self.latency, done.saturating_duration_since(scheduled));
                record(
                    &mut self.service,
                    done.saturating_duration_since(sent.unwrap_or(scheduled)),
                );
                Some(crate::error_class::SHED)
            }
            Outcome::Failed(class) => Some(class),
        };
        if let Some(t) = &mut self.timeline {
            t.record(self.window.warm_end, scheduled, done, outcome, class.is_some());
        }
        if let Some(class) = class {
            self.errors += 1;
            *self.by_class.entry(class).or_default() += 1;
            self.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-slice statistics of one task.
struct TimelineAcc {
    slice: Duration,
    slices: Vec<SliceStats>,
    shed: Histogram<u64>,
    /// Responses that were not shed (any status).
    admitted: Histogram<u64>,
}

impl TimelineAcc {
    fn record(&mut self, origin: Instant, scheduled: Instant, done: Instant, outcome: Outcome, error: bool) {
        let at = scheduled.saturating_duration_since(origin);
        let i = (at.as_nanos() / self.slice.as_nanos().max(1)) as usize;
        while self.slices.len() <= i {
            self.slices.push(SliceStats::new());
        }
        let s = &mut self.slices[i];
        s.requests += 1;
        s.errors += u64::from(error);
        let latency = done.saturating_duration_since(scheduled);
        match outcome {
            Outcome::Response(_) => {
                record(&mut s.latency, latency);
                record(&mut self.admitted, latency);
            }
            Outcome::Shed(_) => {
                s.shed += 1;
                record(&mut s.latency, latency);
                record(&mut self.shed, latency);
            }
            Outcome::Failed(_) => {}
        }
    }
}

/// What was scheduled in one slice of the measured window.
#[derive(Debug, Clone)]
pub struct SliceStats {
    /// Requests scheduled in the slice that finished (responses and failures).
    pub requests: u64,
    /// Of those, failed (any class, shed included).
    pub errors: u64,
    /// Of the errors, answered by an overloaded proxy (`shed`).
    pub shed: u64,
    /// Corrected latency of every response (shed ones included), µs.
    pub latency: Histogram<u64>,
}

impl SliceStats {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            shed: 0,
            latency: task_histogram(),
        }
    }

    fn add(&mut self, o: &SliceStats) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.shed += o.shed;
        self.latency
            .add(&o.latency)
            .expect("task histograms never exceed the merged bounds");
    }
}

/// The measured window in slices (see [`crate::run_with_timeline`]).
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Width of one slice.
    pub slice: Duration,
    /// Slice `i` covers scheduled times `[i * slice, (i + 1) * slice)` from
    /// the start of the measured window.
    pub slices: Vec<SliceStats>,
    /// Corrected latency of every shed response in the window, µs.
    pub shed_latency: Histogram<u64>,
    /// Corrected latency of every response in the window that was not
    /// shed (the requests the proxies admitted, whatever their status), µs.
    pub admitted_latency: Histogram<u64>,
}

/// The task recorders merged, histograms still in memory.
pub(crate) struct Merged {
    pub timeline: Option<Timeline>,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_class: BTreeMap<String, u64>,
    pub late_sends: u64,
    pub not_sent: u64,
    pub sent_outside: u64,
    /// Responses completed inside the window, whatever their schedule.
    pub completed: u64,
    pub connections_opened: u64,
    pub latency: Histogram<u64>,
    pub service_time: Histogram<u64>,
}

/// Merges the task recorders.
pub(crate) fn merge(recorders: Vec<Recorder>) -> Merged {
    let mut m = Merged {
        timeline: None,
        requests: 0,
        errors: 0,
        errors_by_class: BTreeMap::new(),
        late_sends: 0,
        not_sent: 0,
        sent_outside: 0,
        completed: 0,
        connections_opened: 0,
        latency: new_histogram(),
        service_time: new_histogram(),
    };
    for r in recorders {
        if let Some(t) = &r.timeline {
            let into = m.timeline.get_or_insert_with(|| Timeline {
                slice: t.slice,
                slices: Vec::new(),
                shed_latency: new_histogram(),
                admitted_latency: new_histogram(),
            });
            while into.slices.len() < t.slices.len() {
                into.slices.push(SliceStats::new());
            }
            for (a, b) in into.slices.iter_mut().zip(&t.slices) {
                a.add(b);
            }
            into.shed_latency
                .add(&t.shed)
                .expect("task histograms never exceed the merged bounds");
            into.admitted_latency
                .add(&t.admitted)
                .expect("task histograms never exceed the merged bounds");
        }
        m.latency.add(&r.latency).expect("task histograms never exceed the merged bounds");
        m.service_time.add(&r.service).expect("task histograms never exceed the merged bounds");
        m.requests += r.requests;
        m.errors += r.errors;
        m.late_sends += r.late_sends;
        m.not_sent += r.not_sent;
        m.sent_outside += r.sent_outside;
        m.completed += r.completed_in_window;
        m.connections_opened += r.connections_opened;
        for (class, n) in r.by_class {
            *m.errors_by_class.entry(class.to_string()).or_default() += n;
        }
    }
    m
}

impl Merged {
    /// The record of the run: the load `cfg` asked for and what was measured.
    pub fn into_load(self, cfg: &LoadConfig) -> Result<record::Load, record::HistogramError> {
        let (mode, rate, concurrency) = match cfg.mode {
            Mode::Open { rate } => ("open", Some(rate), None),
            Mode::Closed { concurrency } => ("closed", None, Some(u32::try_from(concurrency).unwrap_or(u32::MAX))),
        };
        let mut load = record::Load {
            protocol: cfg.protocol_name().into(),
            mode: mode.into(),
            rate,
            concurrency,
            connections: u32::try_from(cfg.connections).unwrap_or(u32::MAX),
            body_size: cfg.body_size as u64,
            duration_s: cfg.duration.as_secs_f64(),
            warmup_s: cfg.warmup.as_secs_f64(),
            requests: self.requests,
            errors: self.errors,
            errors_by_class: self.errors_by_class,
            late_sends: self.late_sends,
            not_sent: self.not_sent,
            sent_outside_window: self.sent_outside,
            achieved_rps: self.completed as f64 / cfg.duration.as_secs_f64(),
            connections_opened: self.connections_opened,
            latency_us: record::Percentiles::default(),
            service_time_us: record::Percentiles::default(),
            histogram: String::new(),
            service_histogram: String::new(),
        };
        load.set_histograms(&self.latency, &self.service_time)?;
        Ok(load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn window() -> Window {
        Window::new(
            Instant::now(),
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
    }

    #[test]
    fn warmup_and_late_sends_and_classes() {
        let w = window();
        let progress = Arc::new(Progress::default());
        let mut r = Recorder::new(w, progress.clone());
        let ms = Duration::from_millis;
        // warm-up request: executed, not recorded, but its completion in the window counts
        r.record(
            w.start,
            Some(w.start),
            w.warm_end + ms(1),
            Outcome::Response(StatusCode::OK),
        );
        // on time
        let s = w.warm_end + ms(10);
        r.record(
            s,
            Some(s + Duration::from_micros(20)),
            s + ms(5),
            Outcome::Response(StatusCode::OK),
        );
        // late by 3 ms: latency from scheduled, service from sent
        let s2 = w.warm_end + ms(20);
        r.record(
            s2,
            Some(s2 + ms(3)),
            s2 + ms(8),
            Outcome::Response(StatusCode::SERVICE_UNAVAILABLE),
        );
        r.record(
            s2,
            None,
            s2 + ms(8),
            Outcome::Failed(crate::error_class::TIMEOUT),
        );
        r.record(
            s2,
            Some(s2),
            s2 + ms(1),
            Outcome::Response(StatusCode::NOT_FOUND),
        );
        let cfg = LoadConfig {
            duration: Duration::from_secs(2),
            ..LoadConfig::default()
        };
        let res = merge(vec![r]);
        assert_eq!(res.errors_by_class.get("status_5xx"), Some(&1));
        assert_eq!(res.errors_by_class.get("status_4xx"), Some(&1));
        assert_eq!(res.errors_by_class.get("timeout"), Some(&1));
        assert_eq!(res.latency.len(), 3);
        assert_eq!(res.latency.max(), res.latency.highest_equivalent(8_000));
        assert_eq!(
            res.service_time.max(),
            res.service_time.highest_equivalent(5_000)
        );
        assert_eq!(progress.completed.load(Ordering::Relaxed), 4);
        assert_eq!(progress.errors.load(Ordering::Relaxed), 3);
        let (latency, service) = (res.latency.clone(), res.service_time.clone());
        let load = res.into_load(&cfg).unwrap();
        // 4 responses completed inside the window (the timeout is no completion)
        assert!((load.achieved_rps - 2.0).abs() < 1e-9);
        assert_eq!((load.requests, load.errors, load.late_sends), (4, 3, 1));
        assert_eq!(load.not_sent, 1, "the timeout never reached the wire");
        assert_eq!(load.sent_outside_window, 1, "the warm-up's request");
        assert_eq!(load.latency_histogram().unwrap(), latency);
        assert_eq!(load.service_time_histogram().unwrap(), service);
        assert_eq!(load.latency_us, record::Percentiles::from_histogram(&latency));
        assert_eq!((load.mode.as_str(), load.rate, load.duration_s), ("open", Some(100.0), 2.0));
    }

    #[test]
    fn task_histograms_grow_and_merge_within_bounds() {
        let w = window();
        let mut a = Recorder::new(w, Arc::new(Progress::default()));
        let s = w.warm_end;
        a.record(
            s,
            Some(s),
            s + Duration::from_secs(120),
            Outcome::Response(StatusCode::OK),
        );
        a.record(s, Some(s), s, Outcome::Response(StatusCode::OK));
        let res = merge(vec![a]);
        assert_eq!(res.latency.len(), 2);
        assert_eq!(res.latency.min(), 1);
        assert_eq!(
            res.latency.max(),
            res.latency.highest_equivalent(HISTOGRAM_HIGHEST_US)
        );
    }

    #[test]
    fn timeline_slices_by_scheduled_time_and_counts_shed() {
        let w = window();
        let ms = Duration::from_millis;
        let mut a = Recorder::new(w, Arc::new(Progress::default())).with_timeline(Some(ms(100)));
        let mut b = Recorder::new(w, Arc::new(Progress::default())).with_timeline(Some(ms(100)));
        let s = w.warm_end;
        // warm-up: in no slice
        a.record(w.start, Some(w.start), w.start + ms(1), Outcome::Response(StatusCode::OK));
        a.record(s + ms(10), Some(s + ms(10)), s + ms(12), Outcome::Response(StatusCode::OK));
        b.record(s + ms(20), None, s + ms(30), Outcome::Failed(crate::error_class::CONNECT));
        b.record(s + ms(250), Some(s + ms(250)), s + ms(251), Outcome::Shed(StatusCode::SERVICE_UNAVAILABLE));
        let res = merge(vec![a, b]);
        let t = res.timeline.as_ref().unwrap();
        assert_eq!(t.slices.len(), 3);
        assert_eq!((t.slices[0].requests, t.slices[0].errors, t.slices[0].shed), (2, 1, 0));
        assert_eq!(t.slices[0].latency.len(), 1, "a failure has no latency");
        assert_eq!((t.slices[1].requests, t.slices[2].requests), (0, 1));
        assert_eq!((t.slices[2].errors, t.slices[2].shed), (1, 1));
        assert_eq!(t.shed_latency.len(), 1);
        assert_eq!(t.admitted_latency.len(), 1, "the one answered request, not the shed one");
        assert_eq!(t.admitted_latency.max(), t.admitted_latency.highest_equivalent(2_000));
        assert_eq!(res.errors_by_class.get("shed"), Some(&1));
        assert_eq!(res.errors_by_class.get("status_5xx"), None);
    }
}
