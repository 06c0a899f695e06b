//! Requests shed at admission, by why, and the shedding state of each
//! listener direction (see `stack::shed` and `stack::limit`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Why a request was shed (answered 503, `weft-proxy-error-kind: overloaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// It waited in the proxy past twice `--shed-target` while the
    /// direction was overloaded (`stack::shed`).
    QueueTime = 0,
    /// Every in-flight slot and queue place was taken
    /// (`--max-concurrent-requests`, `--max-queued-requests`).
    Limit = 1,
}

impl ShedReason {
    /// Every reason, in label order.
    pub const ALL: [ShedReason; 2] = [ShedReason::QueueTime, ShedReason::Limit];

    /// The `reason` label.
    pub fn as_label(self) -> &'static str {
        match self {
            ShedReason::QueueTime => "queue_time",
            ShedReason::Limit => "limit",
        }
    }
}

/// One direction's handles; cloning shares the atomics.
#[derive(Debug, Clone, Default)]
pub struct LoadShedMetrics {
    shed: [Counter; ShedReason::ALL.len()],
    /// 1 while the direction is judged overloaded, else 0.
    pub overloaded: Gauge,
    /// The least queue time of the last judged interval, µs (-1: none).
    pub min_queue_us: Gauge,
}

impl LoadShedMetrics {
    /// Counts one shed request.
    #[inline]
    pub fn record(&self, reason: ShedReason) {
        self.shed[reason as usize].inc();
    }

    /// Requests shed so far for `reason`.
    pub fn shed(&self, reason: ShedReason) -> u64 {
        self.shed[reason as usize].get()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The families, registered once; [`LoadShedFamilies::direction`] resolves
/// one direction's handles.
#[derive(Debug, Default)]
pub(super) struct LoadShedFamilies {
    shed: Family<ShedLabels, Counter>,
    overloaded: Family<DirectionLabels, Gauge>,
    min_queue: Family<DirectionLabels, Gauge>,
}

impl LoadShedFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let f = Self::default();
        registry.register(
            "weft_shed_requests",
            "Requests answered 503 overloaded at admission, by direction and reason (queue_time: \
             waited in the proxy past twice --shed-target while overloaded; limit: every slot and \
             queue place taken); also in weft_proxy_errors_total{kind=\"overloaded\"}",
            f.shed.clone(),
        );
        registry.register(
            "weft_load_shed_overloaded",
            "1 while the direction sheds by queue time (the least queue time of the last \
             --shed-interval was over --shed-target), else 0",
            f.overloaded.clone(),
        );
        registry.register(
            "weft_load_shed_min_queue_microseconds",
            "The least time a request waited in the proxy before admission over the last judged \
             --shed-interval, µs (-1: no request in it)",
            f.min_queue.clone(),
        );
        f
    }

    pub(super) fn direction(&self, direction: &'static str) -> LoadShedMetrics {
        let labels = DirectionLabels { direction };
        let m = LoadShedMetrics {
            shed: ShedReason::ALL.map(|r| self.shed.get_or_create(&ShedLabels { direction, reason: r.as_label() }).clone()),
            overloaded: self.overloaded.get_or_create(&labels).clone(),
            min_queue_us: self.min_queue.get_or_create(&labels).clone(),
        };
        m.min_queue_us.set(-1);
        m
    }
}
