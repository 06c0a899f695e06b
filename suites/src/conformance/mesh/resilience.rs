//! Retries within a budget (attempts counted at the server's sidecar) and
//! failure accrual (a failing replica leaves the balancer and comes back).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{fail, op_verdict, settled_metric, under_traffic};
use crate::conformance::expect;
use crate::conformance::routing::test;
use crate::conformance::topology::{self, svc, CLIENT, HTTP, NS};
use crate::conformance::{run, Test, Verdict};
use crate::substrate::cluster::{Cluster, ClusterSpec, Req};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshRetryBudget",
            None,
            "a route retrying 503 twice: the server sees 3 attempts per failing request and 1 per good one; under a budget of 0.5 retries per request (no floor) retries stop there",
            retry_topology,
            retries
        ),
        test!(
            "MeshFailureAccrual",
            None,
            "a replica whose app is down (its sidecar answers 5xx) is taken out of balancing, so traffic stops failing; restarted, it gets traffic again",
            topology::base,
            accrual
        ),
    ]
}

/// Failing requests through the route with room in its budget.
const LIMITED: usize = 5;
/// Failing requests through the route with the tight budget.
const BUDGETED: usize = 20;
const RETRIES: usize = 2;
/// Requests the warm-up may have sent through the tight budget's route.
const WARM_DEPOSITS: usize = 10;

/// An HTTPRoute for Service `parent` retrying 503 [`RETRIES`] times, with
/// the budget annotations `budget`.
fn retry_route(name: &str, parent: &str, budget: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: {NS}
  annotations:
    retry.weft.io/http: \"503\"
    retry.weft.io/limit: \"{RETRIES}\"
{budget}spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: {parent}
    namespace: {NS}
    port: {HTTP}
  rules:
  - backendRefs:
    - name: {parent}
      port: {HTTP}
"
    )
}

fn retry_topology() -> ClusterSpec {
    // Each route has its own budget: the default one (a floor of 10/s over
    // 10 s) never runs out here; the tight one allows 0.5 retries per request.
    topology::with(&(retry_route("retry-limit", "echo-v1", "")
        + &retry_route(
            "retry-budget",
            "echo-v2",
            "    retry.weft.io/budget-ratio: \"0.5\"\n    retry.weft.io/budget-min-per-second: \"0\"\n    retry.weft.io/budget-ttl: \"60s\"\n",
        )))
}

/// Responses of `class` (`2xx`, `5xx`) pod `pod`'s sidecar sent inbound.
async fn inbound(c: &Cluster, pod: &str, class: &str) -> Result<f64, crate::substrate::cluster::OpError> {
    let class = format!("status_class=\"{class}\"");
    settled_metric(c, pod, "weft_requests", &["direction=\"inbound\"", &class]).await
}

/// `n` times a good request then a failing one; the statuses each got.
async fn alternate(
    c: &Cluster,
    to: &str,
    good: &Req,
    failing: &Req,
    n: usize,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (mut g, mut f) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..n {
        for (k, v) in send_n(c, to, good, 1).await {
            *g.entry(k).or_insert(0) += v;
        }
        for (k, v) in send_n(c, to, failing, 1).await {
            *f.entry(k).or_insert(0) += v;
        }
    }
    (g, f)
}

/// Send `n` requests; the statuses seen.
async fn send_n(c: &Cluster, to: &str, req: &Req, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let key = match c.send(CLIENT, &svc(to, HTTP), req).await {
            Ok(r) if r.error.is_none() => r.status.to_string(),
            Ok(r) => r.describe(),
            Err(e) => e.to_string(),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

async fn retries(c: &Cluster) -> Verdict {
    for s in ["echo-v1", "echo-v2"] {
        if let Err(v) = super::warm(c, CLIENT, &svc(s, HTTP)).await {
            return v;
        }
    }
    // The route is in place once a failing request is retried at all.
    let failing = Req::get("/retry").header(loadgen::echo::STATUS, "503");
    let good = Req::get("/retry");
    let deadline = Instant::now() + run::patience();
    loop {
        let before = match inbound(c, "echo-v1-0", "5xx").await {
            Ok(v) => v,
            Err(e) => return op_verdict(c, "read echo-v1-0's sidecar metrics", e),
        };
        send_n(c, "echo-v1", &failing, 1).await;
        // Failure accrual takes an endpoint out after 7 failures in a row
        // (5xx included): a good request between failing ones keeps it in.
        send_n(c, "echo-v1", &good, 1).await;
        let after = inbound(c, "echo-v1-0", "5xx").await.unwrap_or(before);
        if after - before > 1.0 {
            break;
        }
        if Instant::now() >= deadline {
            return fail(
                "a request answered 503 by echo-v1 through route retry-limit (retry 503, limit 2)",
                "the server's sidecar sees it retried (3 attempts)",
                format!("{} attempt(s) after {:?}", after - before, run::patience()),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Good requests are never retried; failing ones get exactly 1 + RETRIES attempts.
    let (ok0, bad0) = match (inbound(c, "echo-v1-0", "2xx").await, inbound(c, "echo-v1-0", "5xx").await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return op_verdict(c, "read echo-v1-0's sidecar metrics", e),
    };
    let (seen_good, seen_bad) = alternate(c, "echo-v1", &good, &failing, LIMITED).await;
    let (ok1, bad1) = match (inbound(c, "echo-v1-0", "2xx").await, inbound(c, "echo-v1-0", "5xx").await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return op_verdict(c, "read echo-v1-0's sidecar metrics", e),
    };
    let want_bad = (LIMITED * (1 + RETRIES)) as f64;
    if ok1 - ok0 != LIMITED as f64 || bad1 - bad0 != want_bad {
        return fail(
            format!("{LIMITED} good and {LIMITED} failing (x-echo-status: 503) GETs to echo-v1 through route retry-limit (retry 503, limit {RETRIES}), counted by echo-v1-0's sidecar"),
            format!("{LIMITED} attempts answered 2xx, {want_bad} answered 5xx"),
            format!(
                "{} answered 2xx, {} answered 5xx (client saw {} and {})",
                ok1 - ok0,
                bad1 - bad0,
                expect::show(&seen_good),
                expect::show(&seen_bad)
            ),
        );
    }

    // The tight budget: at most 0.5 retries per request, and some retries.
    let b0 = match inbound(c, "echo-v2-0", "5xx").await {
        Ok(v) => v,
        Err(e) => return op_verdict(c, "read echo-v2-0's sidecar metrics", e),
    };
    let (_, seen) = alternate(c, "echo-v2", &good, &failing, BUDGETED).await;
    let b1 = match inbound(c, "echo-v2-0", "5xx").await {
        Ok(v) => v,
        Err(e) => return op_verdict(c, "read echo-v2-0's sidecar metrics", e),
    };
    let attempts = b1 - b0;
    // Every request through the route deposits: 2 x BUDGETED here and the
    // warm-up's (3 when the first ones succeed; at most WARM_DEPOSITS
    // counted), so the budget allows at most half of that in retries, well
    // under the RETRIES x BUDGETED asked for.
    let cap = (BUDGETED + (2 * BUDGETED + WARM_DEPOSITS) / 2) as f64;
    let unbudgeted = (BUDGETED * (1 + RETRIES)) as f64;
    if attempts <= BUDGETED as f64 || attempts > cap {
        return fail(
            format!("{BUDGETED} failing GETs to echo-v2, each after a good one, through route retry-budget (retry 503, limit {RETRIES}, budget ratio 0.5, no floor), counted by echo-v2-0's sidecar"),
            format!("more than {BUDGETED} attempts answered 5xx (retried) and at most {cap} (the budget; {unbudgeted} without one)"),
            format!("{attempts} attempts answered 5xx (client saw {})", expect::show(&seen)),
        );
    }
    Verdict::Pass
}

/// How long after the fault the balancer may still send to the replica
/// (7 failures in a row take it out).
const SETTLE: Duration = Duration::from_secs(1);
/// How long traffic runs after [`SETTLE`] with the replica down.
const DOWN: Duration = Duration::from_millis(1500);
/// Failures allowed once settled: accrual's probes (one request when a
/// backoff of 1 s, then 2 s, ends).
const PROBES: usize = 2;

async fn accrual(c: &Cluster) -> Verdict {
    let to = svc("echo", HTTP);
    let req = Req::get("/accrual");
    if let Err(v) = super::warm(c, CLIENT, &to).await {
        return v;
    }
    // Three senders at once, so the balancer spreads over both replicas.
    let (killed, tally) = under_traffic(c, CLIENT, &to, &req, Duration::from_secs(1), SETTLE + DOWN, async {
        let at = Instant::now();
        c.kill_app("echo-v2-0").await.map(|()| at)
    })
    .await;
    let killed = match killed {
        Ok(at) => at,
        Err(e) => return op_verdict(c, "crash echo-v2-0's app", e),
    };
    let before_v2 = tally
        .log
        .iter()
        .filter(|(t, b)| *t < killed && b.as_deref() == Some("echo-v2"))
        .count();
    let late: Vec<&(Instant, Option<String>)> =
        tally.log.iter().filter(|(t, _)| *t >= killed + SETTLE).collect();
    let late_failed = late.iter().filter(|(_, b)| b.is_none()).count();
    if before_v2 == 0 || late.is_empty() || late_failed > PROBES {
        return fail(
            format!("GETs to echo:80 from 3 senders; echo-v2-0's app killed 1 s in (its sidecar then answers 5xx), traffic for {:?} more", SETTLE + DOWN),
            format!("echo-v2 answering before the fault; from {SETTLE:?} after it at most {PROBES} failed (accrual probes)"),
            format!(
                "echo-v2 answered {before_v2} before the fault; {late_failed} of {} failed after {SETTLE:?}; in all {}",
                late.len(),
                tally.show()
            ),
        );
    }
    if let Err(e) = c.restart_app("echo-v2-0").await {
        return op_verdict(c, "restart echo-v2-0's app", e);
    }
    // Back after its backoff (1 s, doubling per failed probe while it was
    // down: 8 s or 16 s on a loaded machine) and a good probe.
    let patience = (run::patience() * 2).max(Duration::from_secs(40));
    let back = async {
        let deadline = Instant::now() + patience;
        loop {
            let r = c.send(CLIENT, &to, &req).await;
            if matches!(&r, Ok(r) if r.backend() == Some("echo-v2")) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // The watcher's own request may be the first one echo-v2 answers: the
    // senders stop as soon as it returns, before they reach echo-v2 too.
    let (watcher_saw_v2, tally) = under_traffic(c, CLIENT, &to, &req, Duration::ZERO, Duration::ZERO, back).await;
    if !watcher_saw_v2 && !tally.ok.contains_key("echo-v2") {
        return fail(
            "GETs to echo:80 from 3 senders after echo-v2-0's app was restarted",
            format!("echo-v2-0 answers again within {patience:?}"),
            tally.show(),
        );
    }
    Verdict::Pass
}
