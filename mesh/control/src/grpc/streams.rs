//! Watch streams held open by proxies, counted, and one log line whenever
//! their number or the index's watched lookups change: how an operator (or
//! a test) sees that closed streams free their state. Each stream also
//! carries its [`StreamMetrics`] (the open-streams gauge, propagation time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_index::Index;

use crate::metrics::{ControlMetrics, StreamMetrics};

/// How many Destination and Policy streams are open. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OpenStreams {
    open: Arc<AtomicUsize>,
    metrics: ControlMetrics,
}

/// Counts one stream until dropped (with the stream).
#[derive(Debug)]
pub struct StreamGuard {
    open: Arc<AtomicUsize>,
    metrics: StreamMetrics,
}

impl OpenStreams {
    /// Streams counted in `metrics` too.
    pub fn new(metrics: ControlMetrics) -> Self {
        Self { open: Arc::default(), metrics }
    }

    /// `method`: one of [`crate::metrics::METHODS`].
    pub fn open(&self, method: &'static str) -> StreamGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        StreamGuard { open: Arc::clone(&self.open), metrics: self.metrics.stream_opened(method) }
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl StreamGuard {
    /// The stream yields a message (see [`StreamMetrics::sent`]).
    pub fn sent(&mut self) {
        self.metrics.sent();
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
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
