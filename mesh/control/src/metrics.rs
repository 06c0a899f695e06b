//! mesh-control's Prometheus metrics (the `weft_control_*` families of
//! METRICS-SCHEMA.md, plus `process_*`), served on the admin listener's
//! `/metrics`. One [`ControlMetrics`] handle is shared by the gRPC layer
//! ([`grpc_layer`]), the watch streams, Certify and TokenReview; index sizes
//! and process figures are read at scrape time.

pub mod grpc_layer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_index::model::Kind;
use mesh_index::Index;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The gRPC methods mesh-control serves, as `package.Service/Method`; any
/// other path is counted as `other` so callers cannot grow the label set.
pub const METHODS: [&str; 4] = [
    "weft.identity.v1.Identity/Certify",
    "weft.destination.v1.Destination/Get",
    "weft.policy.v1.Policy/WatchOutbound",
    "weft.policy.v1.Policy/WatchInbound",
];

/// Propagation buckets (seconds): an index write to a stream's message is
/// sub-millisecond when quiet, seconds under a relist of a large cluster.
const PROPAGATION_BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0];
/// TokenReview round trips (seconds); the review times out at 5 s by default.
const TOKENREVIEW_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The metrics handle: cheap to clone, every clone the same registry.
#[derive(Debug, Clone)]
pub struct ControlMetrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_streams: Family<MethodLabels, Gauge>,
    propagation: Histogram,
    issued: Counter,
    refused: Family<ReasonLabels, Counter>,
    tokenreview: Family<ResultLabels, Histogram>,
    index: Option<Index>,
}

impl Default for ControlMetrics {
    /// Metrics without an index (no index gauges, no propagation samples).
    fn default() -> Self {
        Self::new(None)
    }
}

impl ControlMetrics {
    /// `index`: the one the gRPC servers answer from; its sizes are read at
    /// every scrape and its last write times propagation.
    pub fn new(index: Option<Index>) -> Self {
        let mut registry = Registry::default();
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "weft_control_grpc_requests",
            "gRPC calls finished, by method and gRPC status code (streams count when they end)",
            grpc_requests.clone(),
        );
        let grpc_streams = Family::<MethodLabels, Gauge>::default();
        registry.register("weft_control_grpc_streams", "Watch streams open, by method", grpc_streams.clone());
        let propagation = Histogram::new(PROPAGATION_BUCKETS);
        registry.register(
            "weft_control_propagation_seconds",
            "Index write that changed a watched view to that view's message on a watching stream (one sample per stream and write)",
            propagation.clone(),
        );
        let issued = Counter::default();
        registry.register("weft_control_certificates_issued", "Workload certificates signed", issued.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "weft_control_certificates_refused",
            "Certify requests refused, by reason",
            refused.clone(),
        );
        let tokenreview = Family::<ResultLabels, Histogram>::new_with_constructor(tokenreview_histogram as fn() -> Histogram);
        registry.register(
            "weft_control_tokenreview_duration_seconds",
            "Kubernetes TokenReview round trips, by result (proven, refused, error)",
            tokenreview.clone(),
        );
        if let Some(index) = &index {
            registry.register_collector(Box::new(IndexSizes(index.clone())));
        }
        registry.register_collector(Box::new(mesh_process::ProcessCollector));
        Self(Arc::new(Inner { registry, grpc_requests, grpc_streams, propagation, issued, refused, tokenreview, index }))
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// A finished call of `path` (`/package.Service/Method`) with gRPC status `code`.
    pub fn grpc_request(&self, path: &str, code: i32) {
        self.0.grpc_requests.get_or_create(&GrpcLabels { method: method(path), code: code_name(code) }).inc();
    }

    /// A watch stream of `method` (one of [`METHODS`]) opened: counted
    /// until the guard is dropped; [`StreamMetrics::sent`] times propagation.
    pub fn stream_opened(&self, method: &'static str) -> StreamMetrics {
        let gauge = self.0.grpc_streams.get_or_create(&MethodLabels { method }).clone();
        gauge.inc();
        let seen = self.last_update();
        StreamMetrics { metrics: self.clone(), gauge, seen, first: true }
    }

    pub fn certificate_issued(&self) {
        self.0.issued.inc();
    }

    /// `reason`: a short snake_case word (see `authority::Refusal::reason`).
    pub fn certificate_refused(&self, reason: &'static str) {
        self.0.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A TokenReview round trip that took `took`; `result` is `proven`,
    /// `refused` or `error`.
    pub fn tokenreview(&self, result: &'static str, took: Duration) {
        self.0.tokenreview.get_or_create(&ResultLabels { result }).observe(took.as_secs_f64());
    }

    fn last_update(&self) -> Option<Instant> {
        self.0.index.as_ref().and_then(Index::last_update)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlMetrics").field("index", &self.index.is_some()).finish_non_exhaustive()
    }
}

fn tokenreview_histogram() -> Histogram {
    Histogram::new(TOKENREVIEW_BUCKETS)
}

/// One open watch stream: the gauge goes down when it is dropped.
#[derive(Debug)]
pub struct StreamMetrics {
    metrics: ControlMetrics,
    gauge: Gauge,
    /// The index write this stream has answered last.
    seen: Option<Instant>,
    first: bool,
}

impl StreamMetrics {
    /// The stream yields a message: after the first (the current view), a
    /// message for a newer index write is one propagation sample, timed
    /// from that write. Writes that changed other views only, or several
    /// writes coalesced into one message, make this a lower bound.
    pub fn sent(&mut self) {
        let update = self.metrics.last_update();
        if std::mem::take(&mut self.first) {
            self.seen = update;
            return;
        }
        if let Some(at) = update.filter(|at| Some(*at) != self.seen) {
            self.metrics.0.propagation.observe(at.elapsed().as_secs_f64());
            self.seen = Some(at);
        }
    }
}

impl Drop for StreamMetrics {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// `path`'s method when it is one of ours, else `other`.
fn method(path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    METHODS.iter().find(|m| **m == path).copied().unwrap_or("other")
}

/// The canonical name of a gRPC status code (`OK`, `PermissionDenied`, ...).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Cancelled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// The index gauges, read from [`Index::stats`] at scrape time.
struct IndexSizes(Index);

impl std::fmt::Debug for IndexSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexSizes")
    }
}

impl prometheus_client::collector::Collector for IndexSizes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let objects = |kinds: &[Kind]| -> i64 {
            stats.objects.iter().filter(|(k, _)| kinds.contains(k)).map(|(_, n)| *n as i64).sum()
        };
        let gauges = [
            ("weft_control_index_services", "Services in the discovery index", objects(&[Kind::Service])),
            ("weft_control_index_endpoints", "Endpoint addresses over every EndpointSlice in the index", stats.endpoints as i64),
            (
                "weft_control_index_policies",
                "HTTPRoutes, GRPCRoutes and AuthorizationPolicies in the index",
                objects(&[Kind::HttpRoute, Kind::GrpcRoute, Kind::AuthorizationPolicy]),
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_labels_are_the_schema_s() {
        let metrics = ControlMetrics::default();
        metrics.grpc_request("/weft.identity.v1.Identity/Certify", 0);
        metrics.grpc_request("/weft.identity.v1.Identity/Certify", 7);
        metrics.grpc_request("/weft.identity.v1.Identity/Nope", 12);
        metrics.certificate_issued();
        metrics.certificate_refused("token_mismatch");
        metrics.tokenreview("proven", Duration::from_millis(3));
        let text = metrics.encode();
        for line in [
            r#"weft_control_grpc_requests_total{method="weft.identity.v1.Identity/Certify",code="OK"} 1"#,
            r#"weft_control_grpc_requests_total{method="weft.identity.v1.Identity/Certify",code="PermissionDenied"} 1"#,
            r#"weft_control_grpc_requests_total{method="other",code="Unimplemented"} 1"#,
            "weft_control_certificates_issued_total 1",
            r#"weft_control_certificates_refused_total{reason="token_mismatch"} 1"#,
            r#"weft_control_tokenreview_duration_seconds_count{result="proven"} 1"#,
            r#"weft_control_tokenreview_duration_seconds_bucket{le="0.005",result="proven"} 1"#,
            "weft_control_propagation_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }

    #[test]
    fn streams_count_while_open_and_time_newer_writes_only() {
        use mesh_index::model::{Change, ObjectKey, Resource, Service, ServicePort};
        use mesh_index::{Config, DiscoverDestination};
        let index = Index::new(Config::default());
        let metrics = ControlMetrics::new(Some(index.clone()));
        let _rx = index.watch_destination("web.shop.svc.cluster.local:80").unwrap();
        let mut stream = metrics.stream_opened(METHODS[1]);
        stream.sent(); // the current view: no sample
        stream.sent(); // no write since: no sample
        let port = ServicePort { port: 80, ..ServicePort::default() };
        let service = Service { key: ObjectKey::new("shop", "web"), ports: vec![port], ..Service::default() };
        assert_eq!(index.apply([Change::Upsert(Resource::Service(service))]), 1);
        assert!(index.last_update().is_some(), "the write changed a watched view");
        stream.sent();
        stream.sent();
        let text = metrics.encode();
        assert!(text.contains("weft_control_propagation_seconds_count 1\n"), "{text}");
        assert!(text.contains(r#"weft_control_grpc_streams{method="weft.destination.v1.Destination/Get"} 1"#), "{text}");
        assert!(text.contains("weft_control_index_services 1\n"), "{text}");
        drop(stream);
        assert!(metrics.encode().contains(r#"weft_control_grpc_streams{method="weft.destination.v1.Destination/Get"} 0"#));
    }
}
