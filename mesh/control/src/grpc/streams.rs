//! Watch streams held open by proxies, counted, and one log line whenever
//! their number or the index's watched lookups change: how an operator (or
//! a test) sees that closed streams free their state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_index::Index;

/// How many Destination and Policy streams are open. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OpenStreams(Arc<AtomicUsize>);

/// Counts one stream until dropped (with the stream).
#[derive(Debug)]
pub struct StreamGuard(Arc<AtomicUsize>);

impl OpenStreams {
    pub fn open(&self) -> StreamGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(&self.0))
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every `every`: forgets the lookups no stream watches any more, and logs
/// `discovery: N open watch streams, M watched lookups` when either changed.
pub async fn report(index: Index, streams: OpenStreams, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tick.tick().await;
        let pruned = index.prune_unwatched();
        let now = (streams.count(), index.stats().watches);
        if last != Some(now) {
            let (open, watches) = now;
            tracing::info!(pruned, "discovery: {open} open watch streams, {watches} watched lookups");
            last = Some(now);
        }
    }
}
