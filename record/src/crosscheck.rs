//! The bench's cross-check of itself: what the proxies of a cell counted
//! during the measured window, beside what loadgen counted.
//!
//! ```text
//!   scrape every proxy's /metrics ── measured window ── loadgen drained ── scrape again
//!        before                                                              after
//!   after - before, per proxy ──> ProxyWindow ─┐
//!   loadgen's `requests` ─────────────────────┴─> CrossCheck { disagreement, flagged }
//! ```

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
    /// loadgen's `requests` for the window (scheduled in it, finished).
    pub loadgen_requests: u64,
    /// `|proxy_requests - loadgen_requests| / loadgen_requests` (1 when
    /// loadgen counted none and the proxy some, 0 when both are 0).
    pub disagreement: f64,
    /// `disagreement > DISAGREEMENT_LIMIT`.
    pub flagged: bool,
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
}

impl CrossCheck {
    /// Compare `proxies` with loadgen's count; `compared` names the entry
    /// of `proxies` whose own-direction request delta is compared.
    pub fn new(
        requests_family: impl Into<String>,
        latency_family: impl Into<String>,
        proxies: Vec<ProxyWindow>,
        compared: &str,
        loadgen_requests: u64,
    ) -> CrossCheck {
        let proxy_requests = proxies
            .iter()
            .find(|p| p.component == compared)
            .map_or(0, ProxyWindow::own_requests);
        let disagreement = disagreement(proxy_requests, loadgen_requests);
        CrossCheck {
            requests_family: requests_family.into(),
            latency_family: latency_family.into(),
            proxies,
            compared: compared.to_string(),
            proxy_requests,
            loadgen_requests,
            disagreement,
            flagged: disagreement > DISAGREEMENT_LIMIT,
        }
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
        let off = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 1010)], "proxy-outbound", 1000);
        assert!(off.flagged, "{off:?}");
        assert!((off.disagreement - 0.01).abs() < 1e-12);
        let under = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 990)], "proxy-outbound", 1000);
        assert!(under.flagged);
        let edge = CrossCheck::new("f", "h", vec![proxy("proxy-outbound", "outbound", 1001)], "proxy-outbound", 1000);
        assert!(!edge.flagged, "exactly 0.1 % is within the limit: {edge:?}");
        // The inbound proxy's count is recorded, not compared.
        let both = CrossCheck::new(
            "f",
            "h",
            vec![proxy("proxy-inbound", "inbound", 5), proxy("proxy-outbound", "outbound", 1000)],
            "proxy-outbound",
            1000,
        );
        assert!(!both.flagged && both.proxy_requests == 1000);
    }

    #[test]
    fn empty_counts() {
        assert_eq!(disagreement(0, 0), 0.0);
        assert_eq!(disagreement(3, 0), 1.0);
        assert_eq!(disagreement(0, 3), 1.0);
    }
}
