//! The open-loop sequencer: one OS thread that releases slot i at exactly `t0 + i / rate`.
//!
//! It never waits for the senders: a slot that finds no free sender waits in a queue and that
//! wait shows up in the corrected latency, which is the point of an open loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::timing::{precise_timer_slack, slot_offset, wait_until, Window};
use crate::Progress;

/// A unit of work: send one request, whose latency counts from `scheduled`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub scheduled: Instant,
}

/// Where released slots go.
pub(crate) enum Sink {
    /// HTTP/1: one FIFO shared by all connections.
    Shared(UnboundedSender<Slot>),
    /// HTTP/2: one queue per connection, filled round robin.
    RoundRobin(Vec<UnboundedSender<Slot>>),
}

impl Sink {
    /// False once nobody listens any more (the run was dropped).
    fn release(&mut self, i: u64, slot: Slot) -> bool {
        match self {
            Sink::Shared(tx) => tx.send(slot).is_ok(),
            Sink::RoundRobin(txs) => {
                let n = txs.len() as u64;
                txs[(i % n) as usize].send(slot).is_ok()
            }
        }
    }
}

/// Starts the sequencer thread. It ends after the last slot before `window.end` (dropping the
/// senders, which tells the connection tasks that no more work comes) or when the receivers
/// are gone.
pub(crate) fn spawn(
    rate: f64,
    window: Window,
    mut sink: Sink,
    progress: Arc<Progress>,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    std::thread::Builder::new()
        .name("loadgen-sequencer".into())
        .spawn(move || {
            precise_timer_slack();
            let mut warm = window.warm_end > window.start;
            let mut released = 0;
            for i in 0u64.. {
                let scheduled = window.start + slot_offset(i, rate);
                if scheduled >= window.end {
                    break;
                }
                if warm && scheduled >= window.warm_end {
                    wait_until(window.warm_end);
                    progress.in_warmup.store(false, Ordering::Relaxed);
                    warm = false;
                }
                // Overdue slots (the thread was descheduled) go out at once, keeping their
                // scheduled time: the delay is measured, never skipped.
                wait_until(scheduled);
                if !sink.release(i, Slot { scheduled }) {
                    break;
                }
                released += 1;
            }
            progress.in_warmup.store(false, Ordering::Relaxed);
            released
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn releases_every_slot_on_time_and_in_order() {
        let start = Instant::now() + Duration::from_millis(5);
        let window = Window::new(start, Duration::from_millis(50), Duration::from_millis(200));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        progress.in_warmup.store(true, Ordering::Relaxed);
        let h = spawn(1000.0, window, Sink::Shared(tx), progress.clone()).unwrap();
        let released = h.join().unwrap();
        assert_eq!(released, 250);
        assert!(!progress.in_warmup.load(Ordering::Relaxed));
        let mut i = 0;
        while let Ok(slot) = rx.try_recv() {
            assert_eq!(slot.scheduled, start + slot_offset(i, 1000.0));
            i += 1;
        }
        assert_eq!(i, 250);
    }

    #[test]
    fn round_robin_spreads_evenly_and_stops_when_receivers_go() {
        let start = Instant::now();
        let window = Window::new(start, Duration::ZERO, Duration::from_millis(30));
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let h = spawn(
            1000.0,
            window,
            Sink::RoundRobin(txs),
            Arc::new(Progress::default()),
        )
        .unwrap();
        assert_eq!(h.join().unwrap(), 30);
        for rx in &mut rxs {
            let mut n = 0;
            while rx.try_recv().is_ok() {
                n += 1;
            }
            assert_eq!(n, 10);
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        let window = Window::new(Instant::now(), Duration::ZERO, Duration::from_secs(3600));
        let h = spawn(
            1000.0,
            window,
            Sink::Shared(tx),
            Arc::new(Progress::default()),
        )
        .unwrap();
        assert_eq!(h.join().unwrap(), 0);
    }
}
