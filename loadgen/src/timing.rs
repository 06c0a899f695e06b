//! Precise waiting on a dedicated OS thread, and the schedule arithmetic.
//!
//! tokio's timer wheel rounds deadlines up to whole milliseconds, which would add up to 1 ms of
//! fake latency to every corrected sample. A plain OS thread can do much better: with the
//! thread's timer slack reduced to 1 µs a `nanosleep` wakes within a few tens of µs, and a
//! short spin covers the rest.

use std::time::{Duration, Instant};

/// The last part of a wait is spun rather than slept. Measured on the 2-core CI VM with a 1 µs
/// timer slack, a 200 µs `nanosleep` overshoots by 26 µs (p50), 36 µs (p90), 54 µs (p99)
/// (50 µs default slack: 71 / 89 / 412 µs). Spinning costs CPU only for that tail; at rates
/// above 1 / SPIN (~16k rps) the sequencer thread spins continuously.
pub(crate) const SPIN: Duration = Duration::from_micros(60);

/// A send later than this after its scheduled time counts as a late send.
pub(crate) const LATE_SEND: Duration = Duration::from_millis(1);

/// Shrinks the calling thread's timer slack (default 50 µs) so sleeps end when asked.
/// Best effort: on failure or on other systems, waits are only less precise.
pub(crate) fn precise_timer_slack() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
        tracing::debug!(error = %e, "could not reduce the timer slack; waits will be less precise");
    }
}

/// Blocks the calling OS thread until `deadline` (never returns early).
pub(crate) fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            // Yield rather than pure spin: if a sender thread is waiting for this core it runs
            // now (a ~1 µs syscall), instead of the sequencer starving the senders at high rates.
            std::thread::yield_now();
        }
    }
}

/// Blocks the calling OS thread until `deadline` by sleeping only (never returns early). With
/// the 1 µs timer slack it overshoots by tens of µs (see [`SPIN`]) and costs no CPU meanwhile.
pub(crate) fn wait_until_coarse(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(deadline - now);
    }
}

/// Offset of slot `i` from the start of an open-loop schedule at `rate` requests per second.
/// Computed from `i` each time (never accumulated) so rounding cannot drift the rate.
pub(crate) fn slot_offset(i: u64, rate: f64) -> Duration {
    Duration::from_nanos((i as f64 * 1e9 / rate).round() as u64)
}

/// The time frame of one run: `[start, warm_end)` is warm-up, `[warm_end, end)` is measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start: Instant,
    pub warm_end: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Self {
        let warm_end = start + warmup;
        Self {
            start,
            warm_end,
            end: warm_end + duration,
        }
    }

    /// Whether a request scheduled at `t` is measured (true) or warm-up / past the end (false).
    pub fn measures(&self, t: Instant) -> bool {
        t >= self.warm_end && t < self.end
    }

    /// Whether a completion at `t` counts towards the achieved rate.
    pub fn contains_completion(&self, t: Instant) -> bool {
        t >= self.warm_end && t <= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_offsets_follow_the_rate_without_drift() {
        assert_eq!(slot_offset(0, 200.0), Duration::ZERO);
        assert_eq!(slot_offset(1, 200.0), Duration::from_millis(5));
        assert_eq!(slot_offset(200, 200.0), Duration::from_secs(1));
        // a rate whose period is not a whole number of nanoseconds
        assert_eq!(slot_offset(3_000_000, 3.0), Duration::from_secs(1_000_000));
        assert_eq!(slot_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(slot_offset(2, 3.0), Duration::from_nanos(666_666_667));
    }

    #[test]
    fn window_counts_exactly_rate_times_duration_slots() {
        let start = Instant::now();
        let w = Window::new(start, Duration::from_secs(1), Duration::from_secs(5));
        let mut measured = 0;
        let mut warm = 0;
        let mut i = 0;
        loop {
            let t = start + slot_offset(i, 200.0);
            if t >= w.end {
                break;
            }
            if w.measures(t) {
                measured += 1;
            } else {
                warm += 1;
            }
            i += 1;
        }
        assert_eq!(warm, 200);
        assert_eq!(measured, 1000);
    }

    #[test]
    fn wait_until_never_returns_early_and_is_close() {
        precise_timer_slack();
        let mut worst = Duration::ZERO;
        for k in 0..20u64 {
            let deadline = Instant::now() + Duration::from_micros(300 + 50 * k);
            wait_until(deadline);
            let now = Instant::now();
            assert!(now >= deadline);
            worst = worst.max(now - deadline);
        }
        // Behavioural bound only (noisy machine): far below tokio's 1 ms tick.
        assert!(worst < Duration::from_millis(20), "overshoot {worst:?}");
    }
}
