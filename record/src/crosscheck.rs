//! The bench's cross-check of itself: what the proxies of a cell counted
//! during the measured window, beside what loadgen counted.
//!
//! ```text
//!   scrape every proxy's /metrics ── measured window ── loadgen drained ── scrape again
//!        before                                                              after
//!   after - before, per proxy ──> ProxyWindow ─┐
//!   loadgen's `requests` - `not_sent` ────────┴─> CrossCheck { disagreement, flagged }
//! ```
//!
//! A proxy that restarted inside the window (its counters began again) or
//! could not be scraped after it (a fault killed it) has its window marked
//! `incomplete`; when that proxy is the compared one the cell is `not
//! comparable` rather than flagged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A cell is flagged when the compared proxy's request count differs from
/// loadgen's by more than this fraction of loadgen's (0.1 %).
pub const DISAGREEMENT_LIMIT: f64 = 0.001;

/// One cell's proxy-side counts and their comparison with loadgen's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CrossCheck {
    /// The request counter family read: `weft_http_requests_total` (the
    /// issue-15 schema) or `weft_requests_total` (older proxies).
    pub requests_family: String,
    /// The latency histogram family read: `weft_http_response_duration_seconds`
    /// or `weft_response_latency_seconds` (older proxies).
    pub latency_family: String,
    /// One entry per Weft proxy of the deployed variant.
    pub proxies: Vec<ProxyWindow>,
    /// The proxy whose request delta is compared: the client-side
    /// (outbound) one, or the server-side one when it is the only proxy.
    pub compared: String,
    /// That proxy's request delta in its own direction.
    pub proxy_requests: u64,
    /// The window's requests loadgen put on the wire: its `requests`
    /// (scheduled in the window, finished) minus `loadgen_not_sent`.
    pub loadgen_requests: u64,
    /// loadgen's `not_sent`: requests of the window it never wrote to a
    /// connection (its own queue full, no connection), which no proxy can
    /// have counted; left out of `loadgen_requests`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loadgen_not_sent: u64,
    /// Requests loadgen sent outside its measured window (its warm-up),
    /// included in `loadgen_requests` when the proxies' window covered them
    /// too (kind/kube cells: the Job's own sidecar counts from its start).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loadgen_outside_window: u64,
    /// `|proxy_requests - loadgen_requests| / loadgen_requests` (1 when
    /// loadgen counted none and the proxy some, 0 when both are 0).
    pub disagreement: f64,
    /// `disagreement > DISAGREEMENT_LIMIT`, and the cell is comparable.
    pub flagged: bool,
    /// Why the counts cannot be compared, when they cannot: the compared
    /// proxy's window is incomplete (`proxy restarted: ...`, `not scraped
    /// after the window: ...`). Never flagged then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_comparable: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one proxy counted between the two scrapes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyWindow {
    /// Component name, as in `resources` (`proxy-outbound`, `proxy-inbound`, ...).
    pub component: String,
    /// `outbound` (client side) or `inbound` (server side).
    pub role: String,
    /// Request delta by `direction` label.
    pub requests: BTreeMap<String, u64>,
    /// Response delta in the proxy's own direction, by `classification`
    /// (`success` | `failure`) or, from older proxies, by `status_class`.
    pub responses: BTreeMap<String, u64>,
    /// Observations added to the latency histogram (own direction).
    pub latency_count: u64,
    /// Median of the histogram delta, µs, interpolated inside its bucket
    /// as Prometheus' `histogram_quantile` does; `None` when it is empty.
    #[serde(default)]
    pub latency_p50_us: Option<f64>,
    /// 99th percentile of the histogram delta, µs (as `latency_p50_us`).
    #[serde(default)]
    pub latency_p99_us: Option<f64>,
    /// Why these counts are not the whole window, when they are not:
    /// `proxy restarted: ...` (counted from the restart on) or `not scraped
    /// after the window: ...` (all zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

impl CrossCheck {
    /// Compare `proxies` with what loadgen sent; `compared` names the entry
    /// of `proxies` whose own-direction request delta is compared.
    pub fn new(
        requests_family: impl Into<String>,
        latency_family: impl Into<String>,
        proxies: Vec<ProxyWindow>,
        compared: &str,
        sent: Sent,
    ) -> CrossCheck {
        let Sent { requests: loadgen_requests, not_sent: loadgen_not_sent, outside_window } = sent;
        let own = proxies.iter().find(|p| p.component == compared);
        let proxy_requests = own.map_or(0, ProxyWindow::own_requests);
        let not_comparable = own.and_then(|p| Some(format!("{}: {}", p.component, p.incomplete.as_ref()?)));
        let sent = loadgen_requests.saturating_sub(loadgen_not_sent) + outside_window;
        let disagreement = disagreement(proxy_requests, sent);
        CrossCheck {
            requests_family: requests_family.into(),
            latency_family: latency_family.into(),
            proxies,
            compared: compared.to_string(),
            proxy_requests,
            loadgen_requests: sent,
            loadgen_not_sent,
            loadgen_outside_window: outside_window,
            disagreement,
            flagged: not_comparable.is_none() && disagreement > DISAGREEMENT_LIMIT,
            not_comparable,
        }
    }
}

/// What loadgen put on the wire over the proxies' window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Its `requests` (scheduled in the measured window, finished).
    pub requests: u64,
    /// Its `not_sent`: of those, never written to a connection.
    pub not_sent: u64,
    /// Its `sent_outside_window`, when the proxies' window covered the warm-up too; else 0.
    pub outside_window: u64,
}

impl Sent {
    /// The measured window only (the proxies were scraped at its edges).
    pub fn window(load: &crate::Load) -> Sent {
        Sent { requests: load.requests, not_sent: load.not_sent, outside_window: 0 }
    }

    /// Everything loadgen sent, warm-up included (the compared proxy
    /// started with the load generator, its counters at zero).
    pub fn whole_run(load: &crate::Load) -> Sent {
        Sent { outside_window: load.sent_outside_window, ..Sent::window(load) }
    }

    /// `requests` of a window with nothing left unsent (tests, synthetic records).
    pub fn requests(requests: u64) -> Sent {
        Sent { requests, ..Sent::default() }
    }
}

impl ProxyWindow {
    /// Requests counted in the proxy's own direction.
    pub fn own_requests(&self) -> u64 {
        self.requests.get(&self.role).copied().unwrap_or(0)
    }
}

/// Relative difference of `proxy` from `loadgen`.
pub fn disagreement(proxy: u64, loadgen: u64) -> f64 {
    match (proxy, loadgen) {
        (0, 0) => 0.0,
        (_, 0) => 1.0,
        (p, l) => (p as f64 - l as f64).abs() / l as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(component: &str, role: &str, n: u64) -> ProxyWindow {
        ProxyWindow {
            component: component.into(),
            role: role.into(),
            requests: BTreeMap::from([(role.to_string(), n)]),
            ..ProxyWindow::default()
        }
    }

    #[test]
    fn one_percent_is_flagged_and_a_tenth_of_a_percent_is_not() {
        let off = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 1010)], "proxy-outbound", Sent::requests(1000));
        assert!(off.flagged, "{off:?}");
        assert!((off.disagreement - 0.01).abs() < 1e-12);
        let under = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 990)], "proxy-outbound", Sent::requests(1000));
        assert!(under.flagged);
        let edge = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 1001)], "proxy-outbound", Sent::requests(1000));
        assert!(!edge.flagged, "exactly 0.1 % is within the limit: {edge:?}");
        // The inbound proxy's count is recorded, not compared.
        let both = CrossCheck::new(
            "f",
            "h",
            vec![proxy("proxy-inbound", "inbound", 5), proxy("proxy-outbound", "outbound", 1000)],
            "proxy-outbound",
            Sent::requests(1000),
        );
        assert!(!both.flagged && both.proxy_requests == 1000);
    }

    #[test]
    fn requests_loadgen_never_sent_are_not_compared() {
        // 1,200 in the window, 200 of them overflowed loadgen's own queue.
        let c = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 1000)], "proxy-outbound", Sent { requests: 1200, not_sent: 200, outside_window: 0 });
        assert_eq!((c.loadgen_requests, c.loadgen_not_sent), (1000, 200));
        assert!(!c.flagged && c.disagreement == 0.0, "{c:?}");
    }

    #[test]
    fn a_restarted_compared_proxy_makes_the_cell_not_comparable() {
        let mut restarted = proxy("proxy-outbound", "outbound", 10);
        restarted.incomplete = Some("proxy restarted: process_start_time_seconds 100 -> 200".into());
        let c = CrossCheck::new("f", "h", vec![restarted], "proxy-outbound", Sent::requests(1000));
        assert!(!c.flagged, "{c:?}");
        assert_eq!(c.not_comparable.as_deref(), Some("proxy-outbound: proxy restarted: process_start_time_seconds 100 -> 200"));
        // Only the compared proxy decides: a killed server-side one is noted, not judged.
        let mut killed = proxy("proxy-inbound-1", "inbound", 0);
        killed.incomplete = Some("not scraped after the window: connection refused".into());
        let c = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 1000), killed], "proxy-outbound", Sent::requests(1000));
        assert!(c.not_comparable.is_none() && !c.flagged, "{c:?}");
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains("not_comparable") && !text.contains("loadgen_not_sent"), "{text}");
        assert_eq!(serde_json::from_str::<CrossCheck>(&text).unwrap(), c);
    }

    #[test]
    fn empty_counts() {
        assert_eq!(disagreement(0, 0), 0.0);
        assert_eq!(disagreement(3, 0), 1.0);
        assert_eq!(disagreement(0, 3), 1.0);
    }
}
