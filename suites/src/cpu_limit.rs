//! A scenario's `proxy_cpu`: every proxy of a deployed variant held to a
//! CPU limit, the way a Kubernetes sidecar's `resources.limits.cpu` holds
//! it: a CFS quota per proxy process (cgroup v2 `cpu.max`, or cgroup v1's
//! `cpu.cfs_quota_us`) with a 10 ms period.
//!
//! Why: on a small machine the load generator, the app and the proxies
//! share the same cores, so "3x the capacity of one proxy core" is 3x the
//! capacity of the whole machine, and the load generator runs out of CPU
//! before the proxy does. Held to a fraction of a core, the proxy is the
//! part that saturates, as it is in a pod with a CPU limit, and what it
//! does with the excess is what gets measured.
//!
//! Each proxy (and every process it forked: nginx and HAProxy workers) goes
//! into its own group `weft-bench-<bench pid>-<proxy pid>` under the cpu
//! hierarchy's root, created after the proxy is ready (its start-up is not
//! limited) and removed after teardown. Each group is registered with the
//! cleanup registry as an `rmdir`, so a run that dies leaves none behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::substrate::cleanup::{self, Action};
use crate::substrate::{Deployment, Role};

/// The CFS period: short, so a throttled proxy stalls for at most
/// `period - quota` (7 ms at 0.3 CPU) rather than Linux's default 100 ms.
pub const PERIOD: Duration = Duration::from_millis(10);

/// Which cgroup interface holds the cpu controller here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2 (unified): `cpu.max` under this root.
    V2(PathBuf),
    /// cgroup v1: `cpu.cfs_*` under this mount of the cpu controller.
    V1(PathBuf),
}

impl Hierarchy {
    /// The hierarchy with the cpu controller, from `/proc/self/mounts`.
    pub fn find() -> Result<Hierarchy, String> {
        let mounts = fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("proxy_cpu: cannot read /proc/self/mounts: {e}"))?;
        Self::from_mounts(&mounts, |p| fs::read_to_string(p).ok())
    }

    /// `read` reads a file of a v2 root (its `cgroup.controllers`).
    fn from_mounts(mounts: &str, read: impl Fn(&Path) -> Option<String>) -> Result<Hierarchy, String> {
        let mut v2 = None;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [_, dir, kind, opts, ..] = f[..] else { continue };
            match kind {
                "cgroup" if opts.split(',').any(|o| o == "cpu") => return Ok(Hierarchy::V1(dir.into())),
                "cgroup2" => {
                    let has_cpu = read(&Path::new(dir).join("cgroup.controllers"))
                        .is_some_and(|c| c.split_whitespace().any(|c| c == "cpu"));
                    if has_cpu && v2.is_none() {
                        v2 = Some(Hierarchy::V2(dir.into()));
                    }
                }
                _ => {}
            }
        }
        v2.ok_or_else(|| {
            "proxy_cpu: no cgroup hierarchy with the cpu controller is mounted (need cgroup v2 with `cpu` \
             in cgroup.controllers, or a cgroup v1 `cpu` mount); run without proxy_cpu"
                .to_string()
        })
    }

    /// Where the groups are made.
    pub fn root(&self) -> &Path {
        match self {
            Hierarchy::V2(p) | Hierarchy::V1(p) => p,
        }
    }
}

/// The groups of one deployed variant; [`CpuLimits::release`] (or drop)
/// removes them once the processes in them are gone.
#[derive(Debug)]
pub struct CpuLimits {
    hierarchy: Hierarchy,
    groups: Vec<PathBuf>,
}

/// Quota per [`PERIOD`] for `cores` (e.g. 0.3 -> 3000 µs per 10,000 µs).
pub fn quota_us(cores: f64) -> u64 {
    ((cores * PERIOD.as_micros() as f64).round() as u64).max(1000)
}

/// The limits of one cell: `None` without `proxy_cpu`; an error on a
/// substrate whose proxies are not processes of this machine.
pub fn for_cell(proxy_cpu: Option<f64>, dep: &Deployment, substrate: &str) -> Result<Option<CpuLimits>, String> {
    let Some(cores) = proxy_cpu else { return Ok(None) };
    match substrate {
        "local" | "netns" => CpuLimits::apply(cores, dep).map(Some),
        other => Err(format!(
            "proxy_cpu = {cores} applies to the local and netns substrates, not {other} \
             (on Kubernetes the sidecar's CPU limit is its container's resources.limits.cpu)"
        )),
    }
}

impl CpuLimits {
    /// Puts every proxy of `dep`, and its descendants, under `cores` CPUs each.
    pub fn apply(cores: f64, dep: &Deployment) -> Result<CpuLimits, String> {
        let pids: Vec<u32> = dep.components.iter().filter(|c| c.role == Role::Proxy).map(|c| c.pid).collect();
        if pids.is_empty() {
            return Ok(CpuLimits { hierarchy: Hierarchy::V1(PathBuf::new()), groups: Vec::new() });
        }
        Self::apply_to(Hierarchy::find()?, cores, &pids)
    }

    /// Each of `pids` (with its descendants) in a group of its own.
    pub fn apply_to(hierarchy: Hierarchy, cores: f64, pids: &[u32]) -> Result<CpuLimits, String> {
        let mut limits = CpuLimits { hierarchy, groups: Vec::new() };
        if let Hierarchy::V2(root) = &limits.hierarchy {
            enable_cpu_controller(root)?;
        }
        let quota = quota_us(cores);
        for &pid in pids {
            // 0 in cgroup.procs would move bench itself.
            if pid == 0 {
                return Err("proxy_cpu: a proxy without a process id cannot be limited".into());
            }
            let group = limits.hierarchy.root().join(format!("weft-bench-{}-{pid}", std::process::id()));
            fs::create_dir(&group).map_err(|e| {
                format!("proxy_cpu: create cgroup {}: {e} (bench needs root to limit proxies' CPU)", group.display())
            })?;
            cleanup::register(rmdir(&group));
            limits.groups.push(group.clone());
            let period = PERIOD.as_micros();
            match limits.hierarchy {
                Hierarchy::V2(_) => write(&group.join("cpu.max"), &format!("{quota} {period}"))?,
                Hierarchy::V1(_) => {
                    write(&group.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&group.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            for p in std::iter::once(pid).chain(descendants(pid)) {
                // A process that exited in between is no longer there to limit.
                if let Err(e) = fs::write(group.join("cgroup.procs"), p.to_string()) {
                    if e.raw_os_error() != Some(nix::libc::ESRCH) {
                        return Err(format!("proxy_cpu: move pid {p} into {}: {e}", group.display()));
                    }
                }
            }
        }
        Ok(limits)
    }

    /// How often each group was throttled: (periods, throttled periods),
    /// summed over the groups (from their `cpu.stat`).
    pub fn throttled(&self) -> (u64, u64) {
        let mut sum = (0, 0);
        for g in &self.groups {
            let stat = fs::read_to_string(g.join("cpu.stat")).unwrap_or_default();
            let field = |name: &str| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            sum.0 += field("nr_periods");
            sum.1 += field("nr_throttled");
        }
        sum
    }

    /// The share of CFS periods in which a proxy was throttled (0..1), or
    /// `None` with no period seen.
    pub fn throttled_share(&self) -> Option<f64> {
        let (periods, throttled) = self.throttled();
        (periods > 0).then(|| throttled as f64 / periods as f64)
    }

    /// Removes the groups; a process still in one (teardown not finished)
    /// is moved back to the root first.
    pub fn release(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        for g in self.groups.drain(..) {
            if fs::remove_dir(&g).is_err() {
                let procs = fs::read_to_string(g.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines() {
                    let _ = fs::write(self.hierarchy.root().join("cgroup.procs"), p);
                }
                if let Err(e) = fs::remove_dir(&g) {
                    tracing::warn!("proxy_cpu: could not remove cgroup {}: {e}", g.display());
                    continue;
                }
            }
            cleanup::forget(&rmdir(&g));
        }
    }
}

impl Drop for CpuLimits {
    fn drop(&mut self) {
        self.remove();
    }
}

fn rmdir(group: &Path) -> Action {
    Action::Run { what: format!("remove cgroup {}", group.display()), argv: vec!["rmdir".into(), group.display().to_string()] }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("proxy_cpu: write {value:?} to {}: {e}", path.display()))
}

/// cgroup v2 hands a controller to children only when the parent's
/// `cgroup.subtree_control` lists it.
fn enable_cpu_controller(root: &Path) -> Result<(), String> {
    let control = root.join("cgroup.subtree_control");
    let now = fs::read_to_string(&control).unwrap_or_default();
    if now.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    write(&control, "+cpu")
}

/// Every live process whose parent chain reaches `pid` (read from /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let parents = match parent_table() {
        Ok(t) => t,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// (pid, parent pid) of every process.
fn parent_table() -> io::Result<Vec<(u32, u32)>> {
    let mut table = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            table.push((pid, ppid));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_is_cores_times_the_period_with_a_floor() {
        assert_eq!(quota_us(0.3), 3000);
        assert_eq!(quota_us(1.0), 10_000);
        assert_eq!(quota_us(2.5), 25_000);
        // The kernel refuses quotas under 1 ms.
        assert_eq!(quota_us(0.01), 1000);
    }

    #[test]
    fn v1_cpu_mount_wins_and_v2_needs_the_cpu_controller() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(Hierarchy::from_mounts(hybrid, |_| None), Ok(Hierarchy::V1("/sys/fs/cgroup/cpu".into())));
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            Hierarchy::from_mounts(v2, |_| Some("cpuset cpu io memory pids".into())),
            Ok(Hierarchy::V2("/sys/fs/cgroup".into()))
        );
        let e = Hierarchy::from_mounts(v2, |_| Some("memory pids".into())).unwrap_err();
        assert!(e.contains("no cgroup hierarchy with the cpu controller"), "{e}");
        // `cpuacct` alone is not `cpu`.
        let acct = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n";
        assert!(Hierarchy::from_mounts(acct, |_| None).is_err());
    }

    /// Kills the busy loop however the test ends.
    struct Busy(std::process::Child);

    impl Drop for Busy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Through the real kernel: a busy child held to 0.1 CPU is throttled,
    /// and its group is gone after release.
    #[test]
    fn a_busy_process_is_throttled_and_the_group_removed() {
        let hierarchy = Hierarchy::find().expect("bench's tests run as root on a machine with a cgroup cpu controller");
        let busy = Busy(std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("spawn sh"));
        let pid = busy.0.id();
        let limits = CpuLimits::apply_to(hierarchy, 0.1, &[pid]).expect("limit the busy loop");
        let group = limits.groups[0].clone();
        let procs = fs::read_to_string(group.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
        let (periods, throttled) = weft_testkit::eventually_for("a busy loop at 0.1 CPU throttled", Duration::from_secs(20), || {
            let (periods, throttled) = limits.throttled();
            (throttled >= 5).then_some((periods, throttled))
        });
        assert!(periods >= throttled);
        drop(busy);
        limits.release();
        assert!(!group.exists(), "{} removed", group.display());
    }
}
