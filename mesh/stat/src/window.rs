//! Golden figures over a window: the difference of two scrapes of one
//! proxy's `/metrics`, grouped by direction and one label (route, peer or
//! authority, or none per workload), as success rate, request rate and
//! latency quantiles. Quantiles come from the latency histogram's bucket
//! deltas, interpolated as Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::expo::Exposition;

/// Responses, counted once the last byte went out (METRICS-SCHEMA.md).
pub const RESPONSES: &str = "weft_http_responses_total";
/// Request head to response last byte, by classification.
pub const DURATION_BUCKETS: &str = "weft_http_response_duration_seconds_bucket";
/// Every connection the proxy accepts or relays (HTTP included), by direction, peer and TLS.
pub const TCP_OPENED: &str = "weft_tcp_connections_opened_total";
pub const TCP_CLOSED: &str = "weft_tcp_connections_closed_total";
/// Bytes read from / written to the downstream side.
pub const TCP_READ: &str = "weft_tcp_read_bytes_total";
pub const TCP_WRITE: &str = "weft_tcp_write_bytes_total";

/// What rows are grouped by, beside workload and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// One row per workload and direction.
    #[default]
    Workload,
    /// The matched HTTPRoute/GRPCRoute rule (`route` label).
    Route,
    /// The peer's mesh identity (`peer` label).
    Peer,
    /// The request's authority (`authority` label).
    Authority,
}

impl By {
    /// The label grouped by, if any.
    pub fn label(self) -> Option<&'static str> {
        match self {
            By::Workload => None,
            By::Route => Some("route"),
            By::Peer => Some("peer"),
            By::Authority => Some("authority"),
        }
    }

    /// Whether the TCP families (labelled by direction and peer only) fit this grouping.
    pub fn has_tcp(self) -> bool {
        matches!(self, By::Workload | By::Peer)
    }
}

/// One line of `weft stat`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub workload: String,
    pub direction: String,
    /// The grouping label's value (absent when grouped by workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Responses completed in the window.
    pub requests: u64,
    /// Of which classified `success`.
    pub successes: u64,
    /// successes / requests; None without requests.
    pub success_rate: Option<f64>,
    /// requests per second of the window.
    pub rps: f64,
    /// Latency quantiles in seconds; None without observations.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// TCP connections open at the window's end (opened minus closed);
    /// None when grouped by route or authority, or without TCP figures.
    pub tcp_open: Option<u64>,
    /// TCP connections opened in the window.
    pub tcp_opened: Option<u64>,
    /// Bytes per second read from / written to the downstream side.
    pub read_bytes_per_second: Option<f64>,
    pub write_bytes_per_second: Option<f64>,
}

#[derive(Default)]
struct Acc {
    requests: f64,
    successes: f64,
    tcp: Option<Tcp>,
    /// le -> cumulative count delta, summed over the group's series.
    buckets: BTreeMap<OrderedLe, f64>,
}

#[derive(Default)]
struct Tcp {
    open: f64,
    opened: f64,
    read: f64,
    written: f64,
}

/// A bucket bound that sorts numerically (+Inf last).
#[derive(Debug, Clone, Copy)]
struct OrderedLe(f64);
impl PartialEq for OrderedLe {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrderedLe {}
impl PartialOrd for OrderedLe {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedLe {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The growth of a counter from `before` to `after`; a counter that went
/// down was reset (the proxy restarted), so all of `after` is new, as in
/// Prometheus' `increase`.
fn delta(before: Option<f64>, after: f64) -> f64 {
    match before {
        Some(b) if after >= b => after - b,
        _ => after,
    }
}

/// The same series (name and labels) in `before`.
fn index(e: &Exposition, name: &str) -> BTreeMap<Vec<(String, String)>, f64> {
    e.named(name).map(|s| (s.labels.clone().into_iter().collect(), s.value)).collect()
}

/// The rows of one workload for the window between `before` and `after`
/// (`window` long).
pub fn rows(workload: &str, before: &Exposition, after: &Exposition, window: Duration, by: By) -> Vec<Row> {
    let mut groups: BTreeMap<(String, Option<String>), Acc> = BTreeMap::new();
    let key_of = |s: &crate::expo::Sample| {
        (s.label("direction").to_owned(), by.label().map(|l| s.label(l).to_owned()))
    };
    let old = index(before, RESPONSES);
    for s in after.named(RESPONSES) {
        let d = delta(old.get(&s.labels.clone().into_iter().collect::<Vec<_>>()).copied(), s.value);
        let acc = groups.entry(key_of(s)).or_default();
        acc.requests += d;
        if s.label("classification") == "success" {
            acc.successes += d;
        }
    }
    let old = index(before, DURATION_BUCKETS);
    for s in after.named(DURATION_BUCKETS) {
        let Some(le) = crate::expo::number(s.label("le")) else { continue };
        let d = delta(old.get(&s.labels.clone().into_iter().collect::<Vec<_>>()).copied(), s.value);
        *groups.entry(key_of(s)).or_default().buckets.entry(OrderedLe(le)).or_default() += d;
    }
    if by.has_tcp() {
        for (name, field) in [(TCP_OPENED, 0), (TCP_CLOSED, 1), (TCP_READ, 2), (TCP_WRITE, 3)] {
            let old = index(before, name);
            for s in after.named(name) {
                let d = delta(old.get(&s.labels.clone().into_iter().collect::<Vec<_>>()).copied(), s.value);
                let tcp = groups.entry(key_of(s)).or_default().tcp.get_or_insert_with(Tcp::default);
                match field {
                    0 => {
                        tcp.open += s.value;
                        tcp.opened += d;
                    }
                    1 => tcp.open -= s.value,
                    2 => tcp.read += d,
                    _ => tcp.written += d,
                }
            }
        }
    }
    let secs = window.as_secs_f64();
    let per_second = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    groups
        .into_iter()
        .filter(|(_, acc)| {
            let tcp = acc.tcp.as_ref().is_some_and(|t| t.open > 0.0 || t.opened > 0.0 || t.read > 0.0 || t.written > 0.0);
            acc.requests > 0.0 || acc.buckets.values().any(|c| *c > 0.0) || tcp
        })
        .map(|((direction, key), acc)| {
            let buckets: Vec<(f64, f64)> = acc.buckets.iter().map(|(le, c)| (le.0, *c)).collect();
            Row {
                workload: workload.to_owned(),
                direction,
                key,
                requests: acc.requests.round() as u64,
                successes: acc.successes.round() as u64,
                success_rate: (acc.requests > 0.0).then(|| acc.successes / acc.requests),
                rps: per_second(acc.requests),
                p50: histogram_quantile(0.50, &buckets),
                p95: histogram_quantile(0.95, &buckets),
                p99: histogram_quantile(0.99, &buckets),
                tcp_open: acc.tcp.as_ref().map(|t| t.open.max(0.0).round() as u64),
                tcp_opened: acc.tcp.as_ref().map(|t| t.opened.round() as u64),
                read_bytes_per_second: acc.tcp.as_ref().map(|t| per_second(t.read)),
                write_bytes_per_second: acc.tcp.as_ref().map(|t| per_second(t.written)),
            }
        })
        .collect()
}

/// Prometheus' `histogram_quantile` over cumulative `(le, count)` buckets
/// sorted by `le` (promql/quantile.go `bucketQuantile`): None without
/// observations or without the `+Inf` bucket; the rank's bucket
/// interpolated linearly, from 0 for the first bucket; a rank in the `+Inf`
/// bucket answers the highest finite bound.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() < 2 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    // Counts scraped at slightly different instants can dip; Prometheus
    // makes them monotonic the same way.
    let mut monotonic = buckets.to_vec();
    for i in 1..monotonic.len() {
        if monotonic[i].1 < monotonic[i - 1].1 {
            monotonic[i].1 = monotonic[i - 1].1;
        }
    }
    let observations = monotonic.last()?.1;
    if observations <= 0.0 {
        return None;
    }
    let mut rank = q * observations;
    let b = monotonic.iter().position(|(_, c)| *c >= rank)?;
    if b == monotonic.len() - 1 {
        return Some(monotonic[b - 1].0);
    }
    if b == 0 && monotonic[0].0 <= 0.0 {
        return Some(monotonic[0].0);
    }
    let (mut start, end, mut count) = (0.0, monotonic[b].0, monotonic[b].1);
    if b > 0 {
        start = monotonic[b - 1].0;
        count -= monotonic[b - 1].1;
        rank -= monotonic[b - 1].1;
    }
    Some(start + (end - start) * (rank / count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expo::parse;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        // 100 observations: 50 <= 1ms, 40 in (1, 2]ms, 10 in (2, 5]ms.
        let b = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (INF, 100.0)];
        assert_eq!(histogram_quantile(0.5, &b), Some(0.001));
        // rank 95: 5 of the 10 in (2, 5] -> 2 + 3 * 0.5 ms.
        assert!((histogram_quantile(0.95, &b).unwrap() - 0.0035).abs() < 1e-12);
        // rank 25 in the first bucket: interpolated from 0.
        assert!((histogram_quantile(0.25, &b).unwrap() - 0.0005).abs() < 1e-12);
        // A rank in +Inf answers the highest finite bound.
        assert_eq!(histogram_quantile(0.99, &[(0.001, 1.0), (INF, 2.0)]), Some(0.001));
        assert_eq!(histogram_quantile(0.5, &[(0.001, 0.0), (INF, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(0.001, 3.0), (0.002, 3.0)]), None, "no +Inf bucket");
        // Non-monotonic counts are evened out first.
        assert_eq!(histogram_quantile(0.5, &[(0.001, 4.0), (0.002, 3.0), (INF, 4.0)]), Some(0.0005));
    }

    fn scrape(responses: &[(&str, &str, &str, u64)], buckets: &[(&str, &str, f64, u64)]) -> Exposition {
        let mut text = String::from("# TYPE weft_http_responses counter\n");
        for (dir, route, class, n) in responses {
            text.push_str(&format!(
                "weft_http_responses_total{{direction=\"{dir}\",authority=\"web:80\",route=\"{route}\",peer=\"none\",status_code=\"200\",grpc_status=\"\",classification=\"{class}\"}} {n}\n"
            ));
        }
        for (dir, route, le, n) in buckets {
            let le = if le.is_infinite() { "+Inf".to_owned() } else { le.to_string() };
            text.push_str(&format!(
                "weft_http_response_duration_seconds_bucket{{direction=\"{dir}\",authority=\"web:80\",route=\"{route}\",peer=\"none\",classification=\"success\",le=\"{le}\"}} {n}\n"
            ));
        }
        text.push_str("# EOF\n");
        parse(&text).unwrap()
    }

    #[test]
    fn rows_are_deltas_grouped_by_direction_and_label() {
        let before = scrape(
            &[("inbound", "a/0", "success", 100), ("inbound", "a/0", "failure", 1), ("inbound", "b/0", "success", 7)],
            &[("inbound", "a/0", 0.001, 60), ("inbound", "a/0", 0.002, 100), ("inbound", "a/0", INF, 100)],
        );
        let after = scrape(
            &[
                ("inbound", "a/0", "success", 190),
                ("inbound", "a/0", "failure", 11),
                ("inbound", "b/0", "success", 7),
                ("outbound", "default", "success", 20),
            ],
            &[("inbound", "a/0", 0.001, 105), ("inbound", "a/0", 0.002, 190), ("inbound", "a/0", INF, 190)],
        );
        let rows = rows("web", &before, &after, Duration::from_secs(10), By::Route);
        assert_eq!(rows.len(), 2, "b/0 had no traffic in the window: {rows:?}");
        let a = &rows[0];
        assert_eq!((a.direction.as_str(), a.key.as_deref()), ("inbound", Some("a/0")));
        assert_eq!((a.requests, a.successes), (100, 90));
        assert_eq!(a.success_rate, Some(0.9));
        assert_eq!(a.rps, 10.0);
        // Bucket deltas: 45 <= 1ms, 90 <= 2ms, 90 in all.
        assert_eq!(a.p50, Some(0.001));
        assert!((a.p95.unwrap() - 0.0019).abs() < 1e-12, "{a:?}");
        let out = &rows[1];
        assert_eq!((out.direction.as_str(), out.requests, out.p50), ("outbound", 20, None));
        // Grouped by workload, the inbound routes merge.
        let merged = super::rows("web", &before, &after, Duration::from_secs(10), By::Workload);
        assert_eq!(merged.iter().map(|r| (r.direction.as_str(), r.requests)).collect::<Vec<_>>(), [("inbound", 100), ("outbound", 20)]);
        assert!(merged.iter().all(|r| r.key.is_none()));
    }

    #[test]
    fn tcp_figures_per_workload_and_peer_not_per_route() {
        let tcp = |opened: u64, closed: u64, read: u64| {
            let l = "direction=\"inbound\",peer=\"spiffe://td/ns/a/sa/b\",tls=\"mtls\"";
            parse(&format!(
                "weft_tcp_connections_opened_total{{{l}}} {opened}\nweft_tcp_connections_closed_total{{{l},error=\"\"}} {closed}\n\
                 weft_tcp_read_bytes_total{{{l}}} {read}\nweft_tcp_write_bytes_total{{{l}}} {read}\n"
            ))
            .unwrap()
        };
        let (before, after) = (tcp(10, 8, 1000), tcp(15, 12, 6000));
        let rows = rows("db", &before, &after, Duration::from_secs(5), By::Peer);
        assert_eq!(rows.len(), 1, "an opaque TCP workload has a row: {rows:?}");
        let r = &rows[0];
        assert_eq!((r.requests, r.success_rate, r.p50), (0, None, None));
        assert_eq!((r.key.as_deref(), r.tcp_open, r.tcp_opened), (Some("spiffe://td/ns/a/sa/b"), Some(3), Some(5)));
        assert_eq!((r.read_bytes_per_second, r.write_bytes_per_second), (Some(1000.0), Some(1000.0)));
        assert!(super::rows("db", &before, &after, Duration::from_secs(5), By::Route).is_empty());
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero() {
        let before = scrape(&[("inbound", "default", "success", 500)], &[]);
        let after = scrape(&[("inbound", "default", "success", 30)], &[]);
        let rows = rows("web", &before, &after, Duration::from_secs(1), By::Workload);
        assert_eq!(rows[0].requests, 30);
    }
}
