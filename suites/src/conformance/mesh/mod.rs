//! Mesh-behaviour tests: what a mesh promises beyond routing (mTLS on the
//! wire, identity, authorization, retries, failure accrual, protocols,
//! graceful shutdown, control-plane outage, certificate rotation). Each
//! deploys its own topology (the routing base, [`super::topology::base`],
//! plus what it needs) and asserts on real traffic, never on a substrate's
//! internals: what it does to the cluster goes through [`Cluster`]'s
//! operations (`capture`, `metric`, `stop_control`, `terminate_pod`, ...).
//!
//! Each must fail with its feature off (`--variant weft-no-*`, `baseline`);
//! the suite's closing notes list which does.

mod authz;
mod lifecycle;
mod mtls;
mod protocols;
mod resilience;

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::{Failure, Test, Verdict};
use crate::substrate::cluster::{Cluster, OpError, Req, To};

/// The mesh-behaviour tests, in the order they run.
pub fn tests() -> Vec<Test> {
    let mut t = Vec::new();
    t.extend(mtls::tests());
    t.extend(authz::tests());
    t.extend(resilience::tests());
    t.extend(protocols::tests());
    t.extend(lifecycle::tests());
    t
}

/// A failure with what was expected and observed.
pub(crate) fn fail(reason: impl Into<String>, expected: impl Into<String>, observed: impl Into<String>) -> Verdict {
    Verdict::Fail(Failure {
        reason: reason.into(),
        expected: expected.into(),
        observed: observed.into(),
    })
}

/// An operation on the cluster that did not happen: not applicable where
/// the substrate cannot express it, a failure otherwise (without a mesh
/// there is nothing to stop, read or restart: the test fails there).
pub(crate) fn op_verdict(c: &Cluster, what: &str, e: OpError) -> Verdict {
    match e {
        OpError::NotExpressible(why) if c.mode.meshed() => {
            Verdict::NotApplicable(format!("{what}: {why}"))
        }
        other => fail(
            format!("{what}: {other}"),
            format!("{what} works"),
            other.to_string(),
        ),
    }
}

/// Wait until pod `from` gets 200 from `to` three times in a row (the
/// sidecar learns a Service on its first request for it); the failure
/// otherwise.
pub(crate) async fn warm(c: &Cluster, from: &'static str, to: &To) -> Result<(), Verdict> {
    let case = super::expect::Case {
        name: "warm-up",
        from,
        to: to.clone(),
        req: Req::get("/warm-up"),
        expect: super::expect::Expect::status(200),
    };
    match super::expect::eventually(c, &case, super::run::patience()).await {
        Verdict::Pass => Ok(()),
        other => Err(other),
    }
}

/// A meshed sidecar counter: `metric` with `labels` on pod `pod`, polled
/// until two reads 200 ms apart agree (responses are counted as they end,
/// a moment after the client has its answer).
pub(crate) async fn settled_metric(
    c: &Cluster,
    pod: &str,
    metric: &str,
    labels: &[&str],
) -> Result<f64, OpError> {
    let mut last = c.metric(pod, metric, labels).await?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = c.metric(pod, metric, labels).await?;
        if now == last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// What steady traffic saw: answers by backend, and every failure.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub ok: std::collections::BTreeMap<String, usize>,
    pub failures: Vec<String>,
    /// Every answer in order: when it came and which backend (`None`: failed).
    pub log: Vec<(Instant, Option<String>)>,
}

impl Tally {
    pub fn sent(&self) -> usize {
        self.ok.values().sum::<usize>() + self.failures.len()
    }

    pub fn show(&self) -> String {
        let mut s = format!(
            "{} requests: {}",
            self.sent(),
            super::expect::show(&self.ok.iter().map(|(k, v)| (k.clone(), *v)).collect())
        );
        if !self.failures.is_empty() {
            s.push_str(&format!(
                "; {} failed, first: {}",
                self.failures.len(),
                self.failures[0]
            ));
        }
        s
    }
}

/// Requests per sender at most: steady traffic is bounded in count as in time.
const MAX_PER_SENDER: usize = 5_000;
/// How long steady traffic may run at most, whatever the action does.
const MAX_TRAFFIC: Duration = Duration::from_secs(60);

/// Run `action` while `senders` concurrent request loops send `req` from
/// `from` to `to` (each: one request at a time, 10 ms apart); traffic
/// starts `lead` before the action and stops `tail` after it. Returns the
/// action's result and what the traffic saw.
pub(crate) async fn under_traffic<T>(
    c: &Cluster,
    from: &str,
    to: &To,
    req: &Req,
    lead: Duration,
    tail: Duration,
    action: impl std::future::Future<Output = T>,
) -> (T, Tally) {
    let stop = Cell::new(false);
    let tally = std::cell::RefCell::new(Tally::default());
    let started = Instant::now();
    let sender = || async {
        for _ in 0..MAX_PER_SENDER {
            if stop.get() || started.elapsed() > MAX_TRAFFIC {
                break;
            }
            match c.send(from, to, req).await {
                Ok(r) => {
                    let mut t = tally.borrow_mut();
                    match (&r.error, r.status, r.backend()) {
                        (None, 200, Some(b)) => {
                            *t.ok.entry(b.to_string()).or_insert(0) += 1;
                            t.log.push((Instant::now(), Some(b.to_string())));
                        }
                        _ => {
                            let at = started.elapsed();
                            t.failures.push(format!("at {at:.1?}: {}", r.describe()));
                            t.log.push((Instant::now(), None));
                        }
                    }
                }
                Err(e) => tally.borrow_mut().failures.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let act = async {
        tokio::time::sleep(lead).await;
        let out = action.await;
        tokio::time::sleep(tail).await;
        stop.set(true);
        out
    };
    let (out, (), (), ()) = tokio::join!(act, sender(), sender(), sender());
    (out, tally.into_inner())
}
