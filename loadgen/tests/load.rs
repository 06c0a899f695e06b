//! Acceptance tests of the load engine against the real `loadgen serve`: numbers that can be
//! known (a fixed delay, a stall, an exact error share) must come back.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, exclusive, run_binary, Server};
use loadgen::{LoadConfig, Mode, Progress};
use nix::sys::signal::{kill, Signal};

fn config(
    server: &Server,
    mode: Mode,
    warmup: Duration,
    duration: Duration,
    connections: usize,
) -> LoadConfig {
    LoadConfig {
        target: server.url("/").parse().unwrap(),
        host: None,
        mode,
        duration,
        warmup,
        connections,
        http2: false,
        proto: None,
        body_size: 0,
        timeout: Duration::from_secs(10),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 1. A 5 ms target comes back as that delay: never faster (the corrected p50 is at least
///    the injected 5 ms, the service time within the corrected latency), every scheduled
///    request sent and answered. How much the tool adds on top is its overhead, a figure
///    docs/FIGURES.md measures side by side with wrk; it is printed here, not asserted: an
///    upper bound on latency fails whenever anything else runs on the machine (it failed at
///    p50 8.8-9.8 ms with 461 of 1000 sends late on a saturated 2-core VM, and with 233 of
///    1000 late beside a nice-10 build).
#[test]
fn fixed_delay_comes_back_as_that_delay() {
    let _x = exclusive();
    let server = Server::start(&["--delay", "5ms"]);
    let url = server.url("/");
    let s = run_binary(&[
        "--target",
        &url,
        "--rate",
        "200",
        "--duration",
        "5s",
        "--warmup",
        "1s",
        "--connections",
        "4",
    ]);
    assert_eq!(s.errors, 0, "{:?}", s.errors_by_class);
    assert_eq!(s.requests, 1000, "every slot of 5 s at 200 rps sent and answered");
    let p50 = s.latency_us.p50;
    assert!(p50 >= 5_000.0, "corrected p50 {p50} µs is below the injected 5 ms");
    assert!(
        s.service_time_us.p50 >= 5_000.0 && s.service_time_us.p50 <= p50,
        "service time p50 {} µs must be at least the delay and at most the corrected p50 {p50} µs",
        s.service_time_us.p50
    );
    eprintln!(
        "fixed 5 ms delay: corrected p50 {p50} µs, service p50 {} µs, {} of {} sends late, {:.2} rps (not judged)",
        s.service_time_us.p50, s.late_sends, s.requests, s.achieved_rps
    );
}

/// 2. A stalled target shows in the corrected latency, not in the service time, and the
///    backlog is sent afterwards rather than dropped.
#[test]
fn stall_shows_in_corrected_latency_not_service_time() {
    let _x = exclusive();
    let server = Server::start(&["--delay", "1ms"]);
    let progress = Arc::new(Progress::default());
    let cfg = config(
        &server,
        Mode::Open { rate: 200.0 },
        Duration::from_secs(1),
        Duration::from_secs(6),
        4,
    );
    let rt = runtime();
    let run = rt.spawn(loadgen::run(cfg, progress.clone()));
    eventually("the warm-up to end", || {
        (!progress.in_warmup.load(Ordering::Relaxed)).then_some(())
    });
    // Stall once ~2 s of the measured window (400 requests at 200 rps) are done.
    eventually("400 measured requests before the stall", || {
        (progress.completed.load(Ordering::Relaxed) >= 400).then_some(())
    });
    // This sleep is the experiment (how long the target stalls), not synchronisation.
    kill(server.pid(), Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    kill(server.pid(), Signal::SIGCONT).unwrap();
    let s = rt.block_on(run).unwrap().unwrap();
    println!("{}", loadgen::table(&s));
    assert_eq!(s.errors, 0, "{:?}", s.errors_by_class);
    assert_eq!(s.requests, 1200);
    assert!(
        s.latency_us.p99 >= 500_000.0,
        "corrected p99 {} µs does not show the 1 s stall",
        s.latency_us.p99
    );
    assert!(
        s.service_time_us.p99 < 100_000.0,
        "service p99 {} µs should not show the stall",
        s.service_time_us.p99
    );
    // the slots queued during the stall were sent late, and counted as such
    assert!(s.late_sends >= 150, "late sends {}", s.late_sends);
}

/// 2b. The same above the rate where the sequencer stops spinning and releases due slots in
///     batches: a stall's slots are still sent late and counted as late sends, and their
///     latency still counts from their scheduled time.
#[test]
fn stall_at_a_batched_rate_is_still_late_and_timed_from_the_schedule() {
    let _x = exclusive();
    let server = Server::start(&[]);
    let progress = Arc::new(Progress::default());
    let cfg = config(
        &server,
        Mode::Open { rate: 5_000.0 },
        Duration::from_millis(500),
        Duration::from_secs(2),
        16,
    );
    let rt = runtime();
    let run = rt.spawn(loadgen::run(cfg, progress.clone()));
    eventually("the warm-up to end", || {
        (!progress.in_warmup.load(Ordering::Relaxed)).then_some(())
    });
    eventually("2,500 measured requests before the stall", || {
        (progress.completed.load(Ordering::Relaxed) >= 2_500).then_some(())
    });
    // The experiment: the target stalls for 500 ms (2,500 slots).
    kill(server.pid(), Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill(server.pid(), Signal::SIGCONT).unwrap();
    let s = rt.block_on(run).unwrap().unwrap();
    println!("{}", loadgen::table(&s));
    assert_eq!(s.errors, 0, "{:?}", s.errors_by_class);
    assert_eq!(s.requests, 10_000);
    assert!(s.late_sends >= 2_000, "late sends {}", s.late_sends);
    assert!(
        s.latency_us.p99 >= 250_000.0,
        "corrected p99 {} µs does not show the 500 ms stall",
        s.latency_us.p99
    );
    assert!(
        s.service_time_us.p99 < s.latency_us.p99 / 2.0,
        "service p99 {} µs should not show the stall (corrected p99 {} µs)",
        s.service_time_us.p99,
        s.latency_us.p99
    );
}

/// 3. Closed loop: no schedule, so latency and service time are the same distribution.
#[test]
fn closed_loop_latency_equals_service_time() {
    let _x = exclusive();
    let server = Server::start(&["--delay", "2ms"]);
    let url = server.url("/");
    let s = run_binary(&[
        "--target",
        &url,
        "--concurrency",
        "4",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
    ]);
    assert_eq!(s.mode, "closed");
    assert_eq!(s.concurrency, Some(4));
    assert_eq!(s.connections, 4);
    assert_eq!(s.errors, 0, "{:?}", s.errors_by_class);
    assert!(s.requests > 100, "only {} requests", s.requests);
    assert_eq!(s.late_sends, 0);
    assert_eq!(s.latency_us, s.service_time_us);
    let latency = s.latency_histogram().unwrap();
    let service = s.service_time_histogram().unwrap();
    assert_eq!(latency.len(), s.requests);
    assert!(latency == service, "latency and service histograms differ");
    // 4 in flight, each ≥ 2 ms: at most 2000 per second
    assert!(
        s.achieved_rps > 0.0 && s.achieved_rps <= 2_000.0,
        "achieved {}",
        s.achieved_rps
    );
}

/// 4. `--error-rate 0.1` is every 10th response: the 5xx count is exact to one.
#[test]
fn injected_error_rate_is_counted_as_status_5xx() {
    let _x = exclusive();
    let server = Server::start(&["--error-rate", "0.1"]);
    let url = server.url("/");
    let s = run_binary(&[
        "--target",
        &url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--connections",
        "4",
    ]);
    assert_eq!(s.requests, 400);
    let fivexx = s.errors_by_class.get("status_5xx").copied().unwrap_or(0);
    assert!(
        fivexx.abs_diff(s.requests / 10) <= 1,
        "{fivexx} status_5xx of {} requests",
        s.requests
    );
    assert_eq!(
        s.errors, fivexx,
        "only 5xx errors expected: {:?}",
        s.errors_by_class
    );
    // error responses are still responses: they are in the latency histogram
    assert_eq!(s.latency_histogram().unwrap().len(), s.requests);
}

/// 5. HTTP/2: one connection carries many concurrent streams. 500 rps of 20 ms requests need
///    ~10 in flight; one request at a time could not do more than 50 rps.
#[test]
fn http2_open_loop_multiplexes_one_connection() {
    let _x = exclusive();
    let server = Server::start(&["--delay", "20ms"]);
    let mut cfg = config(
        &server,
        Mode::Open { rate: 500.0 },
        Duration::from_millis(500),
        Duration::from_secs(2),
        1,
    );
    cfg.http2 = true;
    cfg.body_size = 100;
    let s = runtime()
        .block_on(loadgen::run(cfg, Arc::new(Progress::default())))
        .unwrap();
    println!("{}", loadgen::table(&s));
    assert_eq!(s.protocol, "http2");
    assert_eq!(s.connections_opened, 1);
    assert_eq!(s.errors, 0, "{:?}", s.errors_by_class);
    assert_eq!(s.requests, 1000);
    assert!(
        (s.achieved_rps - 500.0).abs() <= 10.0,
        "achieved {}",
        s.achieved_rps
    );
    assert!(
        s.latency_us.p50 >= 20_000.0 && s.latency_us.p50 < 100_000.0,
        "p50 {}",
        s.latency_us.p50
    );
}

/// 6. The JSON record round-trips and its histograms decode to the recorded counts.
#[test]
fn record_json_round_trips_with_histograms() {
    let _x = exclusive();
    let server = Server::start(&["--body-size", "512"]);
    let cfg = config(
        &server,
        Mode::Open { rate: 300.0 },
        Duration::ZERO,
        Duration::from_secs(1),
        2,
    );
    let s = runtime()
        .block_on(loadgen::run(cfg, Arc::new(Progress::default())))
        .unwrap();
    let text = serde_json::to_string(&s).unwrap();
    let back: loadgen::Load = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    let latency = back.latency_histogram().unwrap();
    assert_eq!(latency.len(), 300);
    assert_eq!(s.requests, 300);
    // The percentiles are the histogram's, so the two cannot disagree.
    assert_eq!(back.latency_us, loadgen::Percentiles::from_histogram(&latency));
    let service = back.service_time_histogram().unwrap();
    assert_eq!(service.len(), 300);
    assert_eq!(back.service_time_us, loadgen::Percentiles::from_histogram(&service));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    record::io::write_json(&s, &path).unwrap();
    let from_file: loadgen::Load =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(from_file, s);
    // only the final file is left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A target that never answers: every request ends as `timeout` (sent ones after the timeout,
/// still-queued ones `timeout` after the end), none is dropped, and the run ends on time.
#[test]
fn dead_target_times_out_every_request_and_the_run_still_ends() {
    let _x = exclusive();
    let server = Server::start(&[]);
    kill(server.pid(), Signal::SIGSTOP).unwrap();
    let mut cfg = config(
        &server,
        Mode::Open { rate: 50.0 },
        Duration::ZERO,
        Duration::from_secs(1),
        1,
    );
    cfg.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let result = runtime()
        .block_on(loadgen::run(cfg, Arc::new(Progress::default())))
        .unwrap();
    let elapsed = started.elapsed();
    kill(server.pid(), Signal::SIGCONT).unwrap();
    assert_eq!(result.requests, 50);
    assert_eq!(result.errors, 50);
    assert_eq!(
        result.errors_by_class.get("timeout"),
        Some(&50),
        "{:?}",
        result.errors_by_class
    );
    assert_eq!(result.latency_histogram().unwrap().len(), 0);
    assert_eq!(result.achieved_rps, 0.0);
    // window 1 s + drain 0.3 s + the last sent request's 0.3 s, with generous slack
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}
