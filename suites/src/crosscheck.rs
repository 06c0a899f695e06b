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
const HTTP_ABANDONED: &str = "weft_http_requests_abandoned";
/// The older families (`weft_requests{direction,status_class}` counts at
/// the response, its histogram times the response head).
const LEGACY_REQUESTS: &str = "weft_requests";
const LEGACY_LATENCY: &str = "weft_response_latency_seconds";
/// Changes when the proxy process is a new one.
const PROCESS_START: &str = "process_start_time_seconds";

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
    /// what loadgen sent in the window (`load`'s `requests - not_sent`).
    pub async fn close(mut self, load: &record::Load) -> Result<CrossCheck, String> {
        let task = self.before.take().expect("closed once");
        let abort = task.abort_handle();
        let before = match tokio::time::timeout(BEFORE_PATIENCE, task).await {
            Ok(joined) => joined.map_err(|e| e.to_string())??,
            Err(_) => {
                abort.abort();
                return Err("the scrape at the window's start did not finish".into());
            }
        };
        let families = Families::of(&before[0]);
        let sides: Vec<Side> = self.admins.iter().map(Side::of).collect();
        let admins = &self.admins;
        let after = families.settle(&sides, &before, || scrape_each(admins)).await;
        Ok(families.compare(&sides, &before, &after, record::Sent::window(load)))
    }
}

/// One scraped proxy: its component name, and whether it is the
/// client-side (outbound) sidecar, the one compared with loadgen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    pub component: String,
    pub outbound: bool,
}

impl Side {
    fn of(a: &ProxyAdmin) -> Side {
        Side { component: a.component.clone(), outbound: a.outbound }
    }
}

/// The cross-check of scrapes a substrate takes itself (kind/kube: through
/// the API server's pod proxy): `before` in `sides`' order (`""` for a
/// proxy that started with the load, its counters at zero), `scrape` takes
/// every proxy's `/metrics` in that order once loadgen is done, and `sent`
/// is what loadgen sent over the proxies' window.
pub async fn of_scrapes<F, Fut>(sides: &[Side], before: &[String], mut scrape: F, sent: record::Sent) -> Result<CrossCheck, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Result<String, String>>>,
{
    if sides.is_empty() {
        return Err("no proxy to scrape".into());
    }
    let first = scrape().await;
    let text = first.iter().flatten().chain(before).find(|t| !t.is_empty()).ok_or_else(|| {
        let why: Vec<&str> = first.iter().filter_map(|r| r.as_ref().err()).map(String::as_str).collect();
        format!("no proxy could be scraped after the window: {}", why.join("; "))
    })?;
    let families = Families::of(text);
    let mut pending = Some(first);
    let after = families
        .settle(sides, before, || {
            let ready = pending.take();
            let again = scrape();
            async move {
                match ready {
                    Some(r) => r,
                    None => again.await,
                }
            }
        })
        .await;
    Ok(families.compare(sides, before, &after, sent))
}

/// [`Window::close`] for the runner: a failed scrape is said on stderr and
/// leaves the cell without proxy counts (never a made-up figure).
pub async fn close(window: Option<Window>, label: &str, load: &record::Load) -> Option<CrossCheck> {
    match window?.close(load).await {
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
    let mark = match (&c.not_comparable, c.flagged) {
        (Some(why), _) => format!(" (not comparable: {why})"),
        (None, true) => format!(" DISAGREE {:.2} %", c.disagreement * 100.0),
        (None, false) => String::new(),
    };
    format!(", proxy {} vs loadgen {}{mark}", c.proxy_requests, c.loadgen_requests)
}

fn direction(outbound: bool) -> &'static str {
    match outbound {
        true => "outbound",
        false => "inbound",
    }
}

async fn scrape_all(admins: &[ProxyAdmin]) -> Result<Vec<String>, String> {
    scrape_each(admins).await.into_iter().collect()
}

/// Every proxy's `/metrics`, or why it could not be had (a fault may
/// have killed it).
async fn scrape_each(admins: &[ProxyAdmin]) -> Vec<Result<String, String>> {
    let mut out = Vec::with_capacity(admins.len());
    for a in admins {
        out.push(scrape(a).await);
    }
    out
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

    /// Scrape again (up to [`SETTLE_ATTEMPTS`] times, [`SETTLE_STEP`]
    /// apart) until each live proxy's responses have caught up with its
    /// requests; the last scrapes.
    async fn settle<F, Fut>(&self, sides: &[Side], before: &[String], mut scrape: F) -> Vec<Result<String, String>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Vec<Result<String, String>>>,
    {
        let mut after = scrape().await;
        for _ in 0..SETTLE_ATTEMPTS {
            let settled = sides.iter().zip(&after).zip(before).all(|((side, now), then)| match now {
                Ok(now) if self.restart(now, then).is_none() => {
                    let d = direction(side.outbound);
                    self.requests_in(now, then, d) <= self.responses_in(now, then, d).values().sum()
                }
                // Nothing to wait for from a proxy that is gone or began again.
                _ => true,
            });
            if settled {
                break;
            }
            tokio::time::sleep(SETTLE_STEP).await;
            after = scrape().await;
        }
        after
    }

    /// The comparison of one cell: each proxy's window from its two
    /// scrapes (`after` per proxy: it may be gone), the compared one beside
    /// what loadgen sent. `sides`, `before` and `after` are in one order.
    pub(crate) fn compare(
        &self,
        sides: &[Side],
        before: &[String],
        after: &[Result<String, String>],
        sent: record::Sent,
    ) -> CrossCheck {
        let proxies: Vec<ProxyWindow> = sides
            .iter()
            .zip(after)
            .zip(before)
            .map(|((side, now), then)| match now {
                Err(e) => ProxyWindow {
                    component: side.component.clone(),
                    role: direction(side.outbound).to_string(),
                    requests: BTreeMap::from([(direction(side.outbound).to_string(), 0)]),
                    incomplete: Some(format!("not scraped after the window: {e}")),
                    ..ProxyWindow::default()
                },
                Ok(now) => match self.restart(now, then) {
                    // Its counters began again: what it counted since, from zero.
                    Some(why) => ProxyWindow { incomplete: Some(why), ..self.window(side, now, "") },
                    None => self.window(side, now, then),
                },
            })
            .collect();
        let compared = sides.iter().find(|s| s.outbound).unwrap_or(&sides[0]).component.clone();
        CrossCheck::new(self.requests_total(), self.latency, proxies, &compared, sent)
    }

    /// Why `now` is not a continuation of `then`, when the proxy restarted
    /// between them: a new `process_start_time_seconds`, or (from proxies
    /// without it) a request counter that went down.
    fn restart(&self, now: &str, then: &str) -> Option<String> {
        let start = |t| sum_samples(t, PROCESS_START, &[]);
        let (was, is) = (start(then), start(now));
        if was > 0.0 && is > 0.0 && (is - was).abs() > 1e-3 {
            return Some(format!("proxy restarted: {PROCESS_START} {was} -> {is}"));
        }
        let (was, is) = (sum_samples(then, self.requests, &[]), sum_samples(now, self.requests, &[]));
        (is < was).then(|| format!("proxy restarted: {} went down from {was} to {is}", self.requests_total()))
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

    fn window(&self, side: &Side, now: &str, then: &str) -> ProxyWindow {
        let own = direction(side.outbound);
        // A request whose client left before its head is counted only as
        // abandoned (loadgen gave up on it: one of its sent requests).
        let abandoned = |d: &str| delta(now, then, HTTP_ABANDONED, &[&format!("direction=\"{d}\"")]);
        let requests = ["inbound", "outbound"]
            .into_iter()
            .map(|d| (d.to_string(), self.requests_in(now, then, d) + abandoned(d)))
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
            component: side.component.clone(),
            role: own.to_string(),
            requests,
            responses: self.responses_in(now, then, own),
            latency_count: delta(now, then, &format!("{}_count", self.latency), &[&d]),
            latency_p50_us: us(0.5),
            latency_p99_us: us(0.99),
            incomplete: None,
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
        let a = Side { component: "proxy-outbound".into(), outbound: true };
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

    fn load(requests: u64, not_sent: u64) -> record::Load {
        let p = r#"{"p50":0,"p90":0,"p99":0,"p999":0,"p9999":0,"max":0,"mean":0}"#;
        serde_json::from_str(&format!(
            r#"{{"protocol":"http1","mode":"open","rate":100.0,"connections":1,"body_size":0,"duration_s":1.0,
            "requests":{requests},"errors":{not_sent},"not_sent":{not_sent},"achieved_rps":100.0,
            "latency_us":{p},"service_time_us":{p},"histogram":""}}"#
        ))
        .unwrap()
    }

    fn admin(component: &str, outbound: bool) -> Side {
        Side { component: component.into(), outbound }
    }

    #[test]
    fn a_restart_or_a_lost_proxy_is_marked_not_compared() {
        let f = Families::of(BEFORE);
        let started = |t: &str, at: f64| format!("{t}# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {at}\n");
        let admins = [admin("proxy-outbound", true), admin("proxy-inbound-1", false)];
        let before = [started(BEFORE, 100.0), started(BEFORE, 100.0)];
        // The inbound proxy was killed: noted, the outbound one still compared.
        let got = [Ok(started(&after(), 100.0)), Err("connection refused".to_string())];
        let c = f.compare(&admins, &before, &got, record::Sent::window(&load(100, 0)));
        assert!(c.not_comparable.is_none() && !c.flagged && c.proxy_requests == 100, "{c:?}");
        assert_eq!(c.proxies[1].incomplete.as_deref(), Some("not scraped after the window: connection refused"));
        // The outbound proxy is a new process: its counts start at its
        // restart, and the cell is not comparable rather than flagged.
        let got = [Ok(started(&after(), 250.5)), Ok(started(BEFORE, 100.0))];
        let c = f.compare(&admins, &before, &got, record::Sent::window(&load(100, 0)));
        assert!(!c.flagged, "{c:?}");
        assert_eq!(c.proxy_requests, 111, "counted from zero: {c:?}");
        let why = c.not_comparable.as_deref().unwrap();
        assert!(why.starts_with("proxy-outbound: proxy restarted: process_start_time_seconds 100 -> 250.5"), "{why}");
        // Without a start time, a counter that went down says the same.
        let c = f.compare(&admins[..1], &[after()], &[Ok(BEFORE.to_string())], record::Sent::window(&load(100, 0)));
        assert!(c.not_comparable.as_deref().is_some_and(|w| w.contains("went down from 111 to 11")), "{c:?}");
        // Requests whose client left before the head count as received.
        let gave_up = format!("{}weft_http_requests_abandoned_total{{direction=\"outbound\",authority=\"web.test:80\"}} 4\n", after());
        let c = f.compare(&admins[..1], &[BEFORE.to_string()], &[Ok(gave_up)], record::Sent::window(&load(104, 0)));
        assert!(c.proxy_requests == 104 && !c.flagged, "{c:?}");
        // What loadgen never sent is not expected at the proxy.
        let c = f.compare(&admins[..1], &[BEFORE.to_string()], &[Ok(after())], record::Sent::window(&load(130, 30)));
        assert!(!c.flagged && c.loadgen_requests == 100 && c.loadgen_not_sent == 30, "{c:?}");
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
