//! Resource sampler: CPU and RSS of each component over the measured window.
//!
//! Every 250 ms it reads `/proc/<pid>/stat` (utime + stime) and
//! `/proc/<pid>/status` (VmRSS, RssAnon) for each component's whole process
//! tree, so a master/worker peer (nginx) counts its workers. CPU seconds are
//! the difference between the last and the first sample; RSS is the peak and
//! the mean of the per-sample tree sums, and the anonymous part of it (the
//! memory the process allocated, not the binary's code pages it shares with
//! every process of the same executable) its peak.
//!
//! For soak runs ([`Sampler::start_series`]) it also keeps every sample's
//! RSS and open fds (the entries of `/proc/<pid>/fd`, summed over the tree)
//! with its time, at a slower interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use record::soak::ProcessSeries;
use record::HostCpu;
use reports::Resource;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::substrate::Component;

pub const INTERVAL: Duration = Duration::from_millis(250);

/// CPU ticks and RSS bytes of one tree at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    ticks: u64,
    rss: u64,
    /// `RssAnon`: heap, stacks, the process's own data.
    rss_anon: u64,
    fds: u64,
}

#[derive(Default)]
struct Acc {
    first: Option<Sample>,
    last: Sample,
    peak: u64,
    peak_anon: u64,
    rss_sum: u128,
    samples: u32,
    series: ProcessSeries,
}

/// A running sampler; [`Sampler::finish`] stops it and returns the records.
pub struct Sampler {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<(Vec<Resource>, Vec<ProcessSeries>)>,
}

impl Sampler {
    /// Start sampling now (call at the start of the measured window).
    pub fn start(components: Vec<Component>) -> Sampler {
        Sampler::spawn(components, INTERVAL, None)
    }

    /// Start sampling every `interval`, keeping each sample's RSS and open
    /// fds with its time from `origin` (the start of the measured window).
    pub fn start_series(components: Vec<Component>, interval: Duration, origin: Instant) -> Sampler {
        Sampler::spawn(components, interval, Some(origin))
    }

    fn spawn(components: Vec<Component>, interval: Duration, origin: Option<Instant>) -> Sampler {
        let (tx, mut rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut accs: Vec<Acc> = components
                .iter()
                .map(|c| Acc {
                    series: ProcessSeries {
                        component: c.name.clone(),
                        role: c.role.as_str().to_string(),
                        ..ProcessSeries::default()
                    },
                    ..Acc::default()
                })
                .collect();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => sample_all(&components, &mut accs, origin),
                    _ = &mut rx => break,
                }
            }
            // A closing sample so the CPU delta spans the whole window.
            sample_all(&components, &mut accs, origin);
            let hz = procfs::ticks_per_second() as f64;
            let resources = components
                .iter()
                .zip(&accs)
                .map(|(c, a)| resource(c, a, hz))
                .collect();
            let series = match origin {
                Some(_) => accs.into_iter().map(|a| a.series).collect(),
                None => Vec::new(),
            };
            (resources, series)
        });
        Sampler {
            stop: Some(tx),
            task,
        }
    }

    /// Stop (with one final sample) and return one [`Resource`] per component.
    pub async fn finish(self) -> Vec<Resource> {
        self.finish_series().await.0
    }

    /// [`Sampler::finish`], and the per-sample series of a
    /// [`Sampler::start_series`] sampler (empty otherwise).
    pub async fn finish_series(mut self) -> (Vec<Resource>, Vec<ProcessSeries>) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resource(c: &Component, a: &Acc, hz: f64) -> Resource {
    let first = a.first.unwrap_or_default();
    Resource {
        component: c.name.clone(),
        role: c.role.as_str().to_string(),
        rss_peak_bytes: a.peak,
        rss_anon_peak_bytes: (a.samples > 0).then_some(a.peak_anon),
        rss_mean_bytes: if a.samples == 0 {
            0
        } else {
            (a.rss_sum / a.samples as u128) as u64
        },
        cpu_seconds: a.last.ticks.saturating_sub(first.ticks) as f64 / hz,
        samples: a.samples,
    }
}

fn sample_all(components: &[Component], accs: &mut [Acc], origin: Option<Instant>) {
    let tree = children_map();
    for (c, acc) in components.iter().zip(accs.iter_mut()) {
        let Some(s) = sample_tree(c.pid, &tree, origin.is_some()) else {
            continue;
        };
        if let Some(origin) = origin {
            acc.series.t_s.push(origin.elapsed().as_secs_f64());
            acc.series.rss_bytes.push(s.rss);
            acc.series.fds.push(s.fds);
        }
        acc.first.get_or_insert(s);
        acc.last = s;
        acc.peak = acc.peak.max(s.rss);
        acc.peak_anon = acc.peak_anon.max(s.rss_anon);
        acc.rss_sum += s.rss as u128;
        acc.samples += 1;
    }
}

/// parent pid -> child pids, for every process visible in /proc.
fn children_map() -> HashMap<i32, Vec<i32>> {
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.flatten() {
            if let Ok(stat) = p.stat() {
                map.entry(stat.ppid).or_default().push(stat.pid);
            }
        }
    }
    map
}

/// Sum over `root` and its descendants; `None` if `root` is gone.
fn sample_tree(root: u32, tree: &HashMap<i32, Vec<i32>>, fds: bool) -> Option<Sample> {
    let mut total = sample_one(root as i32, fds)?;
    let mut stack: Vec<i32> = tree.get(&(root as i32)).cloned().unwrap_or_default();
    while let Some(pid) = stack.pop() {
        if let Some(s) = sample_one(pid, fds) {
            total.ticks += s.ticks;
            total.rss += s.rss;
            total.rss_anon += s.rss_anon;
            total.fds += s.fds;
        }
        if let Some(kids) = tree.get(&pid) {
            stack.extend(kids);
        }
    }
    Some(total)
}

fn sample_one(pid: i32, fds: bool) -> Option<Sample> {
    let p = procfs::process::Process::new(pid).ok()?;
    let stat = p.stat().ok()?;
    // VmRSS is in kB; absent for zombies, which hold no memory.
    let status = p.status().ok();
    let rss_kb = status.as_ref().and_then(|s| s.vmrss).unwrap_or(0);
    let rss_anon_kb = status.as_ref().and_then(|s| s.rssanon).unwrap_or(0);
    // Counting /proc/<pid>/fd costs a directory read: only when asked.
    let fds = match fds {
        true => std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        false => 0,
    };
    Some(Sample {
        ticks: stat.utime + stat.stime,
        rss: rss_kb * 1024,
        rss_anon: rss_anon_kb * 1024,
        fds,
    })
}

/// The whole machine's CPU time so far (all CPUs, `/proc/stat`); two of
/// them bracket a window ([`HostClock::since`]).
#[derive(Clone, Copy, Debug)]
pub struct HostClock {
    busy: u64,
    steal: u64,
    total: u64,
}

impl HostClock {
    /// Now; `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<HostClock> {
        use procfs::CurrentSI;
        let t = procfs::KernelStats::current().ok()?.total;
        let (irq, softirq, steal) = (t.irq.unwrap_or(0), t.softirq.unwrap_or(0), t.steal.unwrap_or(0));
        // Guest time is already inside `user`.
        let busy = t.user + t.nice + t.system + irq + softirq;
        Some(HostClock { busy, steal, total: busy + t.idle + t.iowait.unwrap_or(0) + steal })
    }

    /// The window from `from` (a clock read at its start, if it could be)
    /// until now.
    pub fn window_since(from: Option<HostClock>) -> Option<HostCpu> {
        HostClock::now()?.since(&from?)
    }

    /// The window from `earlier` to this one; `None` when no time passed.
    pub fn since(&self, earlier: &HostClock) -> Option<HostCpu> {
        let total = self.total.checked_sub(earlier.total).filter(|t| *t > 0)? as f64;
        Some(HostCpu {
            steal: self.steal.saturating_sub(earlier.steal) as f64 / total,
            busy: self.busy.saturating_sub(earlier.busy) as f64 / total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substrate::Role;

    #[test]
    fn host_clock_shares_are_of_the_window_only() {
        let a = HostClock { busy: 1000, steal: 50, total: 5000 };
        let b = HostClock { busy: 1150, steal: 70, total: 5200 };
        let w = b.since(&a).expect("time passed");
        assert!((w.busy - 0.75).abs() < 1e-9 && (w.steal - 0.10).abs() < 1e-9, "{w:?}");
        assert!(w.disturbed());
        assert!(a.since(&a).is_none(), "an empty window has no shares");
        // The real one reads, and its shares are shares.
        let start = HostClock::now().expect("/proc/stat");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {}
        let w = HostClock::now().unwrap().since(&start).expect("ticks passed");
        assert!((0.0..=1.0).contains(&w.steal) && w.busy > 0.0 && w.busy <= 1.0, "{w:?}");
    }

    #[tokio::test]
    async fn samples_own_process_cpu_and_rss() {
        let me = Component {
            name: "me".into(),
            role: Role::Control,
            pid: std::process::id(),
        };
        let s = Sampler::start(vec![me]);
        // Burn some CPU on another thread so the window has something to show.
        let burn = std::thread::spawn(|| {
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed() < Duration::from_millis(600) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            x
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = burn.join();
        let r = s.finish().await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].role, "control");
        assert!(r[0].samples >= 3, "{:?}", r[0]);
        assert!(
            r[0].rss_peak_bytes > 0 && r[0].rss_mean_bytes <= r[0].rss_peak_bytes,
            "{:?}",
            r[0]
        );
        assert!(r[0].cpu_seconds > 0.0, "{:?}", r[0]);
        // The test binary's heap is anonymous, its code file-backed: the
        // anonymous part is there and smaller than the whole.
        let anon = r[0].rss_anon_peak_bytes.expect("sampled, so RssAnon is known");
        assert!(anon > 0 && anon < r[0].rss_peak_bytes, "{:?}", r[0]);
    }

    #[tokio::test]
    async fn series_keep_rss_and_open_fds_per_sample() {
        let me = Component {
            name: "me".into(),
            role: Role::Proxy,
            pid: std::process::id(),
        };
        let s = Sampler::start_series(vec![me], Duration::from_millis(50), Instant::now());
        let held: Vec<std::fs::File> = (0..20).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (r, series) = s.finish_series().await;
        drop(held);
        assert_eq!((r.len(), series.len()), (1, 1));
        let p = &series[0];
        assert_eq!((p.component.as_str(), p.role.as_str()), ("me", "proxy"));
        assert!(p.t_s.len() >= 3 && p.t_s.len() == p.rss_bytes.len() && p.t_s.len() == p.fds.len(), "{p:?}");
        assert!(p.t_s.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        assert!(p.fds.iter().all(|n| *n >= 20), "the 20 held files are counted: {p:?}");
        assert!(p.rss_bytes.iter().all(|b| *b > 0), "{p:?}");
    }
}
