//! A run's private work dir, and the sweep of what dead runs left in theirs
//! (the last layer of cleanup, for when even the watchdog died).

use std::io;
use std::path::Path;

use nix::sys::signal::Signal;

use super::{forget, kill_groups, register, signal_group, Action};

/// A run's private work directory (`weft-bench-*` in the temp dir): the
/// substrates' configs, logs and `pids` file. Registered for removal from
/// the moment it exists; dropping it kills every registered process group
/// (nothing may run from a removed directory) and removes it.
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        kill_groups();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            drop(dir);
            forget(&Action::RemoveDir(path));
        }
    }
}

/// Create the run's [`WorkDir`], stamped with an `owner` file (pid and start
/// time) so [`sweep_strays`] of a later run can tell a dead owner's.
pub fn run_work_dir() -> io::Result<WorkDir> {
    let work = tempfile::Builder::new().prefix("weft-bench-").tempdir()?;
    register(Action::RemoveDir(work.path().to_path_buf()));
    let work = WorkDir { dir: Some(work) };
    let me = std::process::id();
    let owner = format!("{me} {}\n", start_time(me).unwrap_or(0));
    std::fs::write(work.path().join("owner"), owner)?;
    Ok(work)
}

/// Start time (clock ticks since boot) of `pid`, to tell a process from a
/// later one that reused its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    procfs::process::Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}

/// Whether the process `pid` that started at `start` still runs: a later
/// process that reused the pid does not count, nor does a zombie (killed,
/// not yet reaped by its parent).
pub fn is_running(pid: u32, start: u64) -> bool {
    procfs::process::Process::new(pid as i32)
        .ok()
        .and_then(|p| p.stat().ok())
        .is_some_and(|s| s.starttime == start && s.state != 'Z')
}

/// Kill what earlier runs left behind: for every `weft-bench-*` work dir in
/// `tmp` whose owning bench is dead, SIGKILL the process groups listed in its
/// `pids` file (only if the leader's start time still matches) and remove it.
pub fn sweep_strays(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let is_ours = e.file_name().to_string_lossy().starts_with("weft-bench-");
        if !is_ours || !dir.is_dir() {
            continue;
        }
        let Some((owner, owner_start)) = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|s| parse_pid_line(&s))
        else {
            continue;
        };
        if is_running(owner, owner_start) {
            continue; // a live run (maybe a parallel one): not ours to touch
        }
        let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
        let mut killed = 0;
        for line in pids.lines() {
            if let Some((pgid, start)) = parse_pid_line(line) {
                if start_time(pgid) == Some(start) {
                    signal_group(pgid, Signal::SIGKILL);
                    killed += 1;
                }
            }
        }
        if killed > 0 {
            eprintln!(
                "warning: killed {killed} process group(s) left over by an earlier bench run ({})",
                dir.display()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `"<pid> <starttime> [name]"`.
fn parse_pid_line(s: &str) -> Option<(u32, u64)> {
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use nix::unistd::Pid;

    use super::*;
    use crate::substrate::proc_guard::spawn;

    #[test]
    fn sweep_kills_what_a_dead_run_left_and_spares_live_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut stray = spawn({
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        })
        .unwrap();
        let pid = stray.id();
        let line = format!("{pid} {} server\n", start_time(pid).unwrap());
        // A run whose owner is gone (a start time no live process has) ...
        let dead = tmp.path().join("weft-bench-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("owner"), format!("{} 1\n", std::process::id())).unwrap();
        std::fs::write(dead.join("pids"), &line).unwrap();
        // ... and one whose owner (this test) is alive.
        let live = tmp.path().join("weft-bench-live");
        std::fs::create_dir(&live).unwrap();
        let me = std::process::id();
        std::fs::write(
            live.join("owner"),
            format!("{me} {}\n", start_time(me).unwrap()),
        )
        .unwrap();
        std::fs::write(live.join("pids"), &line).unwrap();

        sweep_strays(tmp.path());
        let status = stray.wait().unwrap();
        forget(&Action::KillGroup(pid));
        assert!(!status.success(), "the stray was killed");
        assert!(!dead.exists(), "the dead run's dir is removed");
        assert!(live.exists(), "a live run is left alone");
    }

    #[test]
    fn a_killed_unreaped_process_is_not_running() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        assert!(is_running(pid, start));
        assert!(!is_running(pid, start + 1), "another process with the same pid");
        nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        // Not reaped yet: a zombie, with its stat still there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_running(pid, start) {
            assert!(std::time::Instant::now() < deadline, "still running after SIGKILL");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(start_time(pid), Some(start), "a zombie until reaped");
        child.wait().unwrap();
    }

    #[test]
    fn pid_lines_parse() {
        assert_eq!(parse_pid_line("123 456 nginx"), Some((123, 456)));
        assert_eq!(parse_pid_line("x"), None);
    }
}
