//! The bench cross-checks itself (issue 15): every Weft proxy of a cell is
//! scraped right before and right after the measured window, and what it
//! counted in between is recorded beside loadgen's count.
//!
//! ```text
//!  Window::open ── warm-up ends ──> scrape (before) ── window ── loadgen drained ──> scrape (after)
//!                                                                     Window::close ──> CrossCheck
//! ```
//!
//! The window's edges: the "before" scrape is taken as soon as loadgen
//! leaves its warm-up (polled every millisecond; with no warm-up, before the
//! first request is sent), the "after" one once loadgen has returned, so
//! every request of the window has been answered or given up by then and no
//! request after it exists. Only the start edge can differ: requests in
//! flight at it, plus those sent while the scrape itself runs; both are
//! bounded by rate x (scrape delay) + in-flight requests, see
//! reports/SCHEMA.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use record::{CrossCheck, ProxyWindow};

use crate::substrate::cluster::ops_sum as sum_samples;
use crate::substrate::{enter, probe, ProxyAdmin};
use crate::suite::Protocol;

/// The issue-15 families, read when the proxy exports them.
const HTTP_REQUESTS: &str = "weft_http_requests";
const HTTP_RESPONSES: &str = "weft_http_responses";
const HTTP_DURATION: &str = "weft_http_response_duration_seconds";
/// The older families (`weft_requests{direction,status_class}` counts at
/// the response, its histogram times the response head).
const LEGACY_REQUESTS: &str = "weft_requests";
const LEGACY_LATENCY: &str = "weft_response_latency_seconds";

/// How long the "after" scrape waits for a proxy to finish its bookkeeping:
/// a response is counted just after its last byte is written, which can be
/// a moment after loadgen has read it.
const SETTLE_ATTEMPTS: u32 = 20;
const SETTLE_STEP: Duration = Duration::from_millis(10);

/// The "before" scrape of one cell, taken or on its way.
pub struct Window {
    admins: Vec<ProxyAdmin>,
    /// Taken by [`Window::close`]; aborted when the window is dropped
    /// unclosed (loadgen failed), so no task waits for a warm-up's end that
    /// never comes.
    before: Option<tokio::task::JoinHandle<Result<Vec<String>, String>>>,
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(task) = &self.before {
            task.abort();
        }
    }
}

/// How long [`Window::close`] waits for a "before" scrape still running.
const BEFORE_PATIENCE: Duration = Duration::from_secs(5);

impl Window {
    /// Start watching a cell whose load is about to start with `progress`;
    /// `None` when the variant has no Weft proxy. With no warm-up the
    /// "before" scrape is taken now, before any request of the window.
    pub async fn open(
        admins: &[ProxyAdmin],
        progress: Arc<loadgen::Progress>,
        warmup: Duration,
    ) -> Option<Window> {
        if admins.is_empty() {
            return None;
        }
        // The compared (outbound) proxy first: its scrape is the one whose delay matters.
        let mut admins = admins.to_vec();
        admins.sort_by_key(|a| !a.outbound);
        let before = if warmup.is_zero() {
            let texts = scrape_all(&admins).await;
            tokio::spawn(async move { texts })
        } else {
            let started = Instant::now();
            let to_scrape = admins.clone();
            tokio::spawn(async move {
                // `in_warmup` is false until loadgen starts, so wait out the
                // warm-up's length first, as the sampler does.
                while started.elapsed() < warmup || progress.in_warmup.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                scrape_all(&to_scrape).await
            })
        };
        Some(Window { admins, before: Some(before) })
    }

    /// Take the "after" scrape (loadgen has returned) and compare with
    /// loadgen's `requests`.
    pub async fn close(mut self, loadgen_requests: u64) -> Result<CrossCheck, String> {
        let task = self.before.take().expect("closed once");
        let abort = task.abort_handle();
        let before = match tokio::time::timeout(BEFORE_PATIENCE, task).await {
            Ok(joined) => joined.map_err(|e| e.to_string())??,
            Err(_) => {
                abort.abort();
                return Err("the scrape at the window's start did not finish".into());
            }
        };
        let mut after = scrape_all(&self.admins).await?;
        let families = Families::of(&after[0]);
        for _ in 0..SETTLE_ATTEMPTS {
            let settled = self.admins.iter().zip(&after).zip(&before).all(|((a, now), then)| {
                let d = direction(a);
                families.requests_in(now, then, d) <= families.responses_in(now, then, d).values().sum()
            });
            if settled {
                break;
            }
            tokio::time::sleep(SETTLE_STEP).await;
            after = scrape_all(&self.admins).await?;
        }
        let proxies: Vec<ProxyWindow> = self
            .admins
            .iter()
            .zip(&after)
            .zip(&before)
            .map(|((a, now), then)| families.window(a, now, then))
            .collect();
        let compared = self
            .admins
            .iter()
            .find(|a| a.outbound)
            .unwrap_or(&self.admins[0])
            .component
            .clone();
        Ok(CrossCheck::new(
            families.requests_total(),
            families.latency,
            proxies,
            &compared,
            loadgen_requests,
        ))
    }
}

/// [`Window::close`] for the runner: a failed scrape is said on stderr and
/// leaves the cell without proxy counts (never a made-up figure).
pub async fn close(window: Option<Window>, label: &str, loadgen_requests: u64) -> Option<CrossCheck> {
    match window?.close(loadgen_requests).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("WARNING: {label}: no proxy counts for the cross-check: {e}");
            None
        }
    }
}

/// `, proxy 300 vs loadgen 300` for a cell's one-line summary, with a
/// marker when the counts disagree.
pub fn one_line(c: &CrossCheck) -> String {
    let mark = match c.flagged {
        true => format!(" DISAGREE {:.2} %", c.disagreement * 100.0),
        false => String::new(),
    };
    format!(", proxy {} vs loadgen {}{mark}", c.proxy_requests, c.loadgen_requests)
}

fn direction(a: &ProxyAdmin) -> &'static str {
    match a.outbound {
        true => "outbound",
        false => "inbound",
    }
}

async fn scrape_all(admins: &[ProxyAdmin]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(admins.len());
    for a in admins {
        out.push(scrape(a).await?);
    }
    Ok(out)
}

/// GET `/metrics` from one proxy's admin listener, from inside its pod.
async fn scrape(a: &ProxyAdmin) -> Result<String, String> {
    let addr = a.addr;
    let got = enter::maybe_in(a.netns.as_deref(), 1, move || async move {
        probe::fetch(addr, None, "/metrics", Protocol::Http1).await
    })
    .await
    .map_err(|e| e.to_string())?;
    match got {
        Ok((200, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Ok((status, _)) => Err(format!("GET /metrics from {} ({addr}): status {status}", a.component)),
        Err(e) => Err(format!("GET /metrics from {} ({addr}): {e}", a.component)),
    }
}

/// Which families a proxy exports: the issue-15 ones or the older ones.
struct Families {
    requests: &'static str,
    responses: &'static str,
    /// The label `responses` are classified by.
    class: &'static str,
    latency: &'static str,
}

impl Families {
    fn of(text: &str) -> Families {
        // prometheus-client writes `# TYPE` for every registered family.
        match text.contains(&format!("# TYPE {HTTP_REQUESTS} counter")) {
            true => Families {
                requests: HTTP_REQUESTS,
                responses: HTTP_RESPONSES,
                class: "classification",
                latency: HTTP_DURATION,
            },
            false => Families {
                requests: LEGACY_REQUESTS,
                responses: LEGACY_REQUESTS,
                class: "status_class",
                latency: LEGACY_LATENCY,
            },
        }
    }

    fn requests_total(&self) -> String {
        format!("{}_total", self.requests)
    }

    fn requests_in(&self, now: &str, then: &str, direction: &str) -> u64 {
        let d = format!("direction=\"{direction}\"");
        delta(now, then, self.requests, &[&d])
    }

    fn responses_in(&self, now: &str, then: &str, direction: &str) -> BTreeMap<String, u64> {
        let d = format!("direction=\"{direction}\"");
        label_values(now, &format!("{}_total", self.responses), self.class)
            .into_iter()
            .filter_map(|v| {
                let class = format!("{}=\"{v}\"", self.class);
                let n = delta(now, then, self.responses, &[&d, &class]);
                (n > 0).then_some((v, n))
            })
            .collect()
    }

    fn window(&self, a: &ProxyAdmin, now: &str, then: &str) -> ProxyWindow {
        let own = direction(a);
        let requests = ["inbound", "outbound"]
            .into_iter()
            .map(|d| (d.to_string(), self.requests_in(now, then, d)))
            .filter(|(d, n)| *n > 0 || d == own)
            .collect();
        let d = format!("direction=\"{own}\"");
        let bucket = format!("{}_bucket", self.latency);
        let mut buckets: Vec<(f64, u64)> = label_values(now, &bucket, "le")
            .into_iter()
            .filter_map(|le| {
                let bound = match le.as_str() {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                let le = format!("le=\"{le}\"");
                Some((bound, delta(now, then, &bucket, &[&d, &le])))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let us = |q| quantile(q, &buckets).map(|s| s * 1e6);
        ProxyWindow {
            component: a.component.clone(),
            role: own.to_string(),
            requests,
            responses: self.responses_in(now, then, own),
            latency_count: delta(now, then, &format!("{}_count", self.latency), &[&d]),
            latency_p50_us: us(0.5),
            latency_p99_us: us(0.99),
        }
    }
}

/// `metric`'s samples matching `labels`, summed, `now` minus `then`.
fn delta(now: &str, then: &str, metric: &str, labels: &[&str]) -> u64 {
    (sum_samples(now, metric, labels) - sum_samples(then, metric, labels)).max(0.0) as u64
}

/// Every value `label` takes on the samples named exactly `sample`.
fn label_values(text: &str, sample: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(sample)?.strip_prefix('{'))
        .filter_map(|rest| {
            let at = rest.find(&key)? + key.len();
            let v = &rest[at..];
            Some(v[..v.find('"')?].to_string())
        })
        .collect()
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets, linear
/// inside the bucket it falls in (Prometheus' `histogram_quantile`); the
/// largest finite bound when it falls in `+Inf`.
fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, count) in buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = (count - below) as f64;
            let frac = if inside > 0.0 { (rank - below as f64) / inside } else { 1.0 };
            return Some(lower + (le - lower) * frac);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE weft_requests counter\n\
        weft_requests_total{direction=\"outbound\",status_class=\"2xx\"} 10\n\
        weft_requests_total{direction=\"outbound\",status_class=\"5xx\"} 1\n\
        weft_requests_total{direction=\"inbound\",status_class=\"2xx\"} 0\n\
        # TYPE weft_response_latency_seconds histogram\n\
        weft_response_latency_seconds_bucket{direction=\"outbound\",le=\"0.001\"} 5\n\
        weft_response_latency_seconds_bucket{direction=\"outbound\",le=\"0.01\"} 11\n\
        weft_response_latency_seconds_bucket{direction=\"outbound\",le=\"+Inf\"} 11\n\
        weft_response_latency_seconds_count{direction=\"outbound\"} 11\n";

    fn after() -> String {
        BEFORE
            .replace("status_class=\"2xx\"} 10", "status_class=\"2xx\"} 110")
            .replace("le=\"0.001\"} 5", "le=\"0.001\"} 55")
            .replace("le=\"0.01\"} 11", "le=\"0.01\"} 111")
            .replace("le=\"+Inf\"} 11", "le=\"+Inf\"} 111")
            .replace("_count{direction=\"outbound\"} 11", "_count{direction=\"outbound\"} 111")
    }

    #[test]
    fn a_window_is_the_delta_of_two_scrapes() {
        let f = Families::of(BEFORE);
        assert_eq!(f.requests, LEGACY_REQUESTS);
        let a = ProxyAdmin {
            component: "proxy-outbound".into(),
            outbound: true,
            addr: "127.0.0.1:1".parse().unwrap(),
            netns: None,
        };
        let w = f.window(&a, &after(), BEFORE);
        assert_eq!(w.own_requests(), 100);
        assert_eq!(w.requests.get("inbound"), None, "no inbound traffic, not listed");
        assert_eq!(w.responses, BTreeMap::from([("2xx".to_string(), 100)]));
        assert_eq!(w.latency_count, 100);
        // 50 of the 100 below 1 ms, 50 in (1 ms, 10 ms].
        assert_eq!(w.latency_p50_us, Some(1000.0));
        let p99 = w.latency_p99_us.unwrap();
        assert!((p99 - 9820.0).abs() < 1e-6, "{p99}");
    }

    #[test]
    fn the_new_families_are_preferred() {
        let text = "# TYPE weft_http_requests counter\n# TYPE weft_requests counter\n";
        let f = Families::of(text);
        assert_eq!((f.requests_total(), f.latency), ("weft_http_requests_total".to_string(), HTTP_DURATION));
        assert_eq!(f.class, "classification");
    }

    #[test]
    fn quantiles_of_buckets() {
        assert_eq!(quantile(0.5, &[(1.0, 0), (f64::INFINITY, 0)]), None);
        assert_eq!(quantile(0.99, &[(1.0, 1), (f64::INFINITY, 100)]), Some(1.0));
        assert_eq!(quantile(0.5, &[(2.0, 4)]), Some(1.0));
    }
}
