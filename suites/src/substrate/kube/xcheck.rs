//! The kind/kube cross-check: the Weft proxies of a cell are read through
//! the API server's pod proxy (`weft stat --kube`'s client,
//! `mesh_stat::targets::meshed_pods` and `mesh_stat::scrape::fetch`), and
//! compared by `crate::crosscheck` as on the other substrates.
//!
//! ```text
//!  open: meshed pods of the namespace (the server's), scraped ── Job applied ── warm-up ── window
//!  close: the Job's `loadgen-record:` line is in its log (loadgen --linger keeps its pod up):
//!         meshed pods again (the Job's own sidecar now among them), scraped
//! ```
//!
//! Both edges are exact, with no log-line timing: the "before" scrape is
//! taken before the Job exists, and the Job's own sidecar (the compared,
//! client-side proxy) starts with it, its counters at zero. The window is
//! therefore the whole Job, and is compared with everything loadgen sent:
//! its window's requests plus its warm-up's (`record::Sent::whole_run`).

use std::time::Duration;

use mesh_stat::scrape::{fetch, Target};
use mesh_stat::targets::meshed_pods;
use record::{CrossCheck, Load, Sent};

use crate::crosscheck::{of_scrapes, Side};

/// How long a Weft cell's loadgen keeps its pod up after its record line
/// (`loadgen run --linger`): the log is read every 250 ms meanwhile, then
/// the meshed pods are listed and scraped once more.
pub const LINGER: Duration = Duration::from_secs(8);

/// The "before" half of one cell's cross-check.
pub struct PodWindow {
    /// `NS/NAME` of each pod scraped before the Job, and what it said.
    before: Vec<(String, String)>,
}

impl PodWindow {
    /// Scrape every meshed pod of `ns` whose proxy runs, before the
    /// cell's Job is applied.
    pub async fn open(client: &kube::Client, ns: &str) -> Result<PodWindow, String> {
        let pods = meshed_pods(client, Some(ns), None).await.map_err(|e| format!("listing the meshed pods of {ns}: {e}"))?;
        let mut before = Vec::with_capacity(pods.len());
        for t in &pods {
            before.push((t.name.clone(), fetch(t).await.map_err(|e| e.to_string())?));
        }
        Ok(PodWindow { before })
    }

    /// Once loadgen has printed its record (`load`) and while its pod
    /// `job_pod` is still up: scrape the meshed pods again and compare the
    /// Job's own sidecar (`job_meshed`; else the first server-side one)
    /// with everything loadgen sent.
    pub async fn close(self, client: &kube::Client, ns: &str, job_pod: &str, job_meshed: bool, load: &Load) -> Result<CrossCheck, String> {
        let mut pods = meshed_pods(client, Some(ns), None).await.map_err(|e| format!("listing the meshed pods of {ns}: {e}"))?;
        let job = format!("{ns}/{job_pod}");
        // A pod scraped before and gone now, or the Job's sidecar already
        // stopped, is listed as not scraped after (never silently left out).
        let expected = self.before.iter().map(|(n, _)| n.as_str()).chain(job_meshed.then_some(job.as_str()));
        let missing: Vec<String> = expected.filter(|n| !pods.iter().any(|t| t.name == *n)).map(str::to_string).collect();
        pods.extend(missing.iter().filter_map(|n| kube_target(client, n)));
        // The client-side proxy first, as the other substrates order them.
        pods.sort_by_key(|t| t.name != job);
        let sides: Vec<Side> = pods.iter().map(|t| Side { component: t.name.clone(), outbound: t.name == job }).collect();
        // A pod not scraped before started after it: its counters began at zero.
        let before: Vec<String> = pods
            .iter()
            .map(|t| self.before.iter().find(|(n, _)| *n == t.name).map_or(String::new(), |(_, text)| text.clone()))
            .collect();
        let targets = &pods;
        let scrape = || async move {
            let mut out = Vec::with_capacity(targets.len());
            for t in targets {
                out.push(fetch(t).await.map_err(|e| e.to_string()));
            }
            out
        };
        of_scrapes(&sides, &before, scrape, Sent::whole_run(load)).await
    }
}

/// The pod-proxy target of `NS/NAME` (for a pod no longer listed).
fn kube_target(client: &kube::Client, name: &str) -> Option<Target> {
    let (ns, pod) = name.split_once('/')?;
    Some(Target {
        name: name.to_string(),
        source: mesh_stat::scrape::Source::Kube {
            client: client.clone(),
            namespace: ns.to_string(),
            pod: pod.to_string(),
            port: mesh_kube::names::PROXY_ADMIN_PORT,
        },
    })
}
