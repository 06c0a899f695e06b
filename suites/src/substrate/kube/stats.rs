//! CPU and memory per container from the kubelet's stats summary
//! (`GET /api/v1/nodes/NODE/proxy/stats/summary` through the API server),
//! sampled over a cell's measured window like the local sampler samples
//! `/proc`.
//!
//! The kubelet refreshes these figures on its housekeeping period (about
//! 10 s), not on every read, so samples are de-duplicated by their own
//! timestamps. CPU seconds over the window are the cumulative counter's rate
//! between the first and the last distinct sample times the window (or, with
//! a single distinct sample, its `usageNanoCores` times the window); memory
//! is `rssBytes` (`workingSetBytes` where a runtime reports no RSS), summed
//! over a component's containers at each round, peak and mean.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use record::Resource;
use serde::Deserialize;

use crate::substrate::Role;

/// The parts of the kubelet's `stats/v1alpha1` Summary the sampler reads;
/// everything else in it is ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
}

/// A container that has just started may have no figures yet.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ContainerStats {
    pub name: String,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: Option<String>,
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub working_set_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("node {node}: the kubelet's stats summary is not what bench reads: {source}")]
    Parse {
        node: String,
        source: serde_json::Error,
    },
    #[error("node {node}: GET /api/v1/nodes/{node}/proxy/stats/summary: {detail}")]
    Fetch { node: String, detail: String },
}

pub fn parse(node: &str, json: &str) -> Result<Summary, StatsError> {
    serde_json::from_str(json).map_err(|source| StatsError::Parse {
        node: node.to_string(),
        source,
    })
}

/// What to sample: the containers of pods in `namespace` whose name starts
/// with `pod_prefix` (any pod when empty), named `container` (any when
/// `None`). With `container: None` each container name is its own
/// component, `<name>/<container>` (a control plane's parts apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub name: String,
    pub role: Role,
    pub namespace: String,
    pub pod_prefix: String,
    pub container: Option<String>,
}

impl Watch {
    fn component(&self, pod: &PodRef, container: &str) -> Option<String> {
        if pod.namespace != self.namespace || !pod.name.starts_with(&self.pod_prefix) {
            return None;
        }
        match &self.container {
            Some(c) if c == container => Some(self.name.clone()),
            Some(_) => None,
            None => Some(format!("{}/{container}", self.name)),
        }
    }
}

#[derive(Default)]
struct CpuAcc {
    first: Option<(SystemTime, u64)>,
    last: Option<(SystemTime, u64)>,
    nano_cores: Vec<u64>,
}

#[derive(Default)]
struct ComponentAcc {
    role: Option<Role>,
    peak: u64,
    mem_sum: u128,
    rounds: u32,
    /// (pod, container) -> its CPU counter's distinct samples.
    cpu: BTreeMap<(String, String), CpuAcc>,
}

/// Accumulates rounds of summaries (one per node per round) into one
/// [`Resource`] per component.
#[derive(Default)]
pub struct Accumulator {
    watches: Vec<Watch>,
    components: BTreeMap<String, ComponentAcc>,
}

impl Accumulator {
    pub fn new(watches: Vec<Watch>) -> Accumulator {
        let mut components = BTreeMap::new();
        // Fixed-name components are reported even when never seen (0
        // samples says the sampler missed them, rather than hiding it).
        for w in watches.iter().filter(|w| w.container.is_some()) {
            components.insert(
                w.name.clone(),
                ComponentAcc {
                    role: Some(w.role),
                    ..ComponentAcc::default()
                },
            );
        }
        Accumulator {
            watches,
            components,
        }
    }

    /// One round: every node's summary read at about the same time.
    pub fn add_round(&mut self, summaries: &[Summary]) {
        let mut mem: BTreeMap<String, u64> = BTreeMap::new();
        for s in summaries {
            for pod in &s.pods {
                for c in &pod.containers {
                    let Some((name, role)) = self
                        .watches
                        .iter()
                        .find_map(|w| w.component(&pod.pod_ref, &c.name).map(|n| (n, w.role)))
                    else {
                        continue;
                    };
                    let acc = self.components.entry(name.clone()).or_default();
                    acc.role = Some(role);
                    if let Some(m) = &c.memory {
                        if let Some(b) = m.rss_bytes.filter(|b| *b > 0).or(m.working_set_bytes) {
                            *mem.entry(name.clone()).or_default() += b;
                        }
                    }
                    if let Some(cpu) = &c.cpu {
                        let key = (pod.pod_ref.name.clone(), c.name.clone());
                        let a = acc.cpu.entry(key).or_default();
                        let time = cpu.time.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
                        if let (Some(t), Some(total)) = (time, cpu.usage_core_nano_seconds) {
                            // The kubelet answers with its last figures until it refreshes them.
                            if a.last.is_none_or(|(lt, _)| t > lt) {
                                a.first.get_or_insert((t, total));
                                a.last = Some((t, total));
                                a.nano_cores.extend(cpu.usage_nano_cores);
                            }
                        } else {
                            a.nano_cores.extend(cpu.usage_nano_cores);
                        }
                    }
                }
            }
        }
        for (name, bytes) in mem {
            let acc = self.components.entry(name).or_default();
            acc.peak = acc.peak.max(bytes);
            acc.mem_sum += bytes as u128;
            acc.rounds += 1;
        }
    }

    /// One record per component, its CPU scaled to the measured `window`.
    pub fn finish(self, window: Duration) -> Vec<Resource> {
        self.components
            .into_iter()
            .map(|(name, a)| Resource {
                component: name,
                role: a.role.unwrap_or(Role::Proxy).as_str().to_string(),
                rss_peak_bytes: a.peak,
                rss_mean_bytes: if a.rounds == 0 {
                    0
                } else {
                    (a.mem_sum / a.rounds as u128) as u64
                },
                // The kubelet's figures do not split file-backed pages from
                // anonymous ones the way /proc's RssAnon does.
                rss_anon_peak_bytes: None,
                cpu_seconds: a.cpu.values().map(|c| cpu_seconds(c, window)).sum(),
                samples: a.rounds,
            })
            .collect()
    }
}

fn cpu_seconds(c: &CpuAcc, window: Duration) -> f64 {
    if let (Some((t0, n0)), Some((t1, n1))) = (c.first, c.last) {
        if let Ok(span) = t1.duration_since(t0) {
            if !span.is_zero() {
                let rate = n1.saturating_sub(n0) as f64 / 1e9 / span.as_secs_f64();
                return rate * window.as_secs_f64();
            }
        }
    }
    if c.nano_cores.is_empty() {
        return 0.0;
    }
    let mean = c.nano_cores.iter().sum::<u64>() as f64 / c.nano_cores.len() as f64;
    mean / 1e9 * window.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = include_str!("testdata/stats-summary-0.json");
    const T1: &str = include_str!("testdata/stats-summary-1.json");

    fn watches() -> Vec<Watch> {
        vec![
            Watch { name: "server".into(), role: Role::Server, namespace: "weft-bench-r1".into(), pod_prefix: "server-".into(), container: Some("server".into()) },
            Watch { name: "proxy-inbound".into(), role: Role::Proxy, namespace: "weft-bench-r1".into(), pod_prefix: "server-".into(), container: Some("weft-proxy".into()) },
            Watch { name: "proxy-outbound".into(), role: Role::Proxy, namespace: "weft-bench-r1".into(), pod_prefix: "load-".into(), container: Some("weft-proxy".into()) },
            Watch { name: "control".into(), role: Role::Control, namespace: "weft".into(), pod_prefix: String::new(), container: None },
        ]
    }

    #[test]
    fn parses_a_summary_and_tolerates_containers_without_figures() {
        let s = parse("weft-bench-worker2", T0).unwrap();
        assert_eq!(s.node.node_name, "weft-bench-worker2");
        assert_eq!(s.pods.len(), 4);
        let fresh = &s.pods[3].containers[0];
        assert_eq!((fresh.cpu.as_ref(), fresh.memory.as_ref()), (None, None));
        let e = parse("n1", "{\"pods\": []}").unwrap_err().to_string();
        assert!(e.starts_with("node n1:") && e.contains("node"), "{e}");
    }

    #[test]
    fn cpu_is_the_counter_rate_over_the_window_and_memory_peaks_per_round() {
        let mut acc = Accumulator::new(watches());
        let s0 = parse("w", T0).unwrap();
        let s1 = parse("w", T1).unwrap();
        // The kubelet repeats t0's figures until it refreshes: not a second sample.
        acc.add_round(std::slice::from_ref(&s0));
        acc.add_round(std::slice::from_ref(&s0));
        acc.add_round(std::slice::from_ref(&s1));
        let r: BTreeMap<String, Resource> = acc
            .finish(Duration::from_secs(6))
            .into_iter()
            .map(|r| (r.component.clone(), r))
            .collect();
        let names: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(names, ["control/mesh-control", "proxy-inbound", "proxy-outbound", "server"]);
        // weft-proxy: 0.9 s of CPU over 10 s between samples = 0.09 cores, x 6 s.
        let p = &r["proxy-inbound"];
        assert!((p.cpu_seconds - 0.54).abs() < 1e-9, "{p:?}");
        assert_eq!((p.role.as_str(), p.samples), ("proxy", 3));
        assert_eq!(p.rss_peak_bytes, 10_000_000);
        assert_eq!(p.rss_mean_bytes, (8_000_000 * 2 + 10_000_000) / 3);
        assert!((r["server"].cpu_seconds - 0.9).abs() < 1e-9);
        assert_eq!(r["control/mesh-control"].role, "control");
        // Never seen (no client pod on this node): reported with 0 samples.
        assert_eq!(r["proxy-outbound"].samples, 0);
    }

    #[test]
    fn one_distinct_sample_falls_back_to_its_instant_rate() {
        let mut acc = Accumulator::new(watches());
        acc.add_round(&[parse("w", T0).unwrap()]);
        let r = acc.finish(Duration::from_secs(10));
        let p = r.iter().find(|r| r.component == "proxy-inbound").unwrap();
        // usageNanoCores 90,000,000 = 0.09 cores, x 10 s.
        assert!((p.cpu_seconds - 0.9).abs() < 1e-9, "{p:?}");
    }
}
