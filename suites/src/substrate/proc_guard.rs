//! Child processes that cannot outlive `bench`.
//!
//! Four layers, because each covers a way of dying the others miss:
//!
//! 1. Normal exit, errors, panics, Ctrl-C/SIGTERM: [`Child`](super::process)
//!    guards kill their process group on drop, and [`kill_all`] kills every
//!    group still registered (called from the signal path).
//! 2. `bench` SIGKILLed: each child gets `PR_SET_PDEATHSIG(SIGKILL)` in a
//!    `pre_exec` hook, so the kernel kills it when its parent goes away.
//! 3. Grandchildren (nginx/HAProxy workers forked by a master) do not inherit
//!    the death signal. Every child leads its own process group, and a small
//!    watchdog process (`bench __watchdog`) holds the read end of a pipe from
//!    `bench`: when `bench` dies for any reason the pipe closes and the
//!    watchdog SIGKILLs every registered group and removes registered
//!    half-written directories.
//! 4. If even that failed, the run's work dir holds a `pids` file and the next
//!    run's [`sweep_strays`] kills what is left.
//!
//! This is the one module allowed `unsafe`: `Command::pre_exec` is unsafe
//! because the closure runs between fork and exec, where only
//! async-signal-safe calls are allowed. Ours makes two syscalls (`prctl`,
//! `getppid`) and allocates nothing.
//!
//! PITFALL: the death signal fires when the *thread* that forked the child
//! exits, not the process. Tokio's blocking-pool threads exit when idle, which
//! would kill our servers mid-run. All children are therefore forked by one
//! dedicated spawner thread that lives as long as `bench` ([`spawn`]).
//!
//! The same thread starts processes inside network namespaces
//! ([`spawn_in`]): it enters the namespace with `setns(2)` (per thread),
//! forks, and returns to the host namespace. The child inherits the
//! namespace at fork, so `Command::uid` still works (a `pre_exec` setns would
//! run after the uid change, without the privilege to enter). Namespaces the
//! run creates are registered too ([`guard_netns`]): the watchdog deletes
//! them if `bench` dies.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A command, the network namespace to start it in (`None`: bench's own),
/// and where to send the result.
type SpawnRequest = (Command, Option<PathBuf>, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // Never joined: it must live until the process exits (see PITFALL above).
        std::thread::Builder::new()
            .name("weft-spawner".into())
            .spawn(move || {
                // Where to come back to after starting a child in a namespace.
                let home = std::fs::File::open("/proc/thread-self/ns/net");
                for (mut cmd, netns, reply) in rx {
                    let result = match (&netns, &home) {
                        (None, _) => spawn_here(&mut cmd),
                        (Some(ns), Ok(home)) => spawn_in_netns(&mut cmd, ns, home),
                        (Some(_), Err(e)) => Err(io::Error::new(
                            e.kind(),
                            format!("cannot open this thread's network namespace: {e}"),
                        )),
                    };
                    let _ = reply.send(result);
                }
            })
            .expect("cannot start the child-spawner thread");
        Mutex::new(tx)
    })
}

fn spawn_here(cmd: &mut Command) -> io::Result<Child> {
    let parent = nix::unistd::getpid();
    cmd.process_group(0);
    // SAFETY: the closure only makes the async-signal-safe syscalls prctl(2)
    // and getppid(2) and does not allocate or take locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl: then the
            // signal will never come, so give up now.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    register(child.id());
    Ok(child)
}

/// Enter `ns` (a `/run/netns/NAME` file), fork `cmd` there, and return to
/// `home` whatever happened: the spawner thread must stay in the host
/// namespace for the next request.
fn spawn_in_netns(cmd: &mut Command, ns: &Path, home: &std::fs::File) -> io::Result<Child> {
    use nix::sched::{setns, CloneFlags};
    let target = std::fs::File::open(ns)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", ns.display())))?;
    setns(&target, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("enter network namespace {}: {e}", ns.display())))?;
    let child = spawn_here(cmd);
    if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
        // Every later child would start in the wrong namespace: stop here.
        panic!("cannot return the spawner thread to the host network namespace: {e}");
    }
    child
}

/// Spawn `cmd` as the leader of a new process group, with the parent-death
/// signal set, from the long-lived spawner thread; the group is registered
/// with the watchdog. Callers must [`unregister`] after reaping it.
pub fn spawn(cmd: Command) -> io::Result<Child> {
    spawn_request(cmd, None)
}

/// [`spawn`], inside the network namespace `netns` (a `/run/netns/NAME` path).
pub fn spawn_in(cmd: Command, netns: &Path) -> io::Result<Child> {
    spawn_request(cmd, Some(netns.to_path_buf()))
}

fn spawn_request(cmd: Command, netns: Option<PathBuf>) -> io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, netns, tx))
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?
}

struct Registry {
    groups: BTreeSet<u32>,
    watchdog: Option<(Child, ChildStdin)>,
}

fn registry() -> &'static Mutex<Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(|| {
        Mutex::new(Registry {
            groups: BTreeSet::new(),
            watchdog: None,
        })
    })
}

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut registry().lock().unwrap_or_else(|p| p.into_inner()))
}

fn tell_watchdog(reg: &mut Registry, line: &str) {
    if let Some((_, stdin)) = reg.watchdog.as_mut() {
        if writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            tracing::warn!("the orphan watchdog is gone; children may outlive a SIGKILLed bench");
            reg.watchdog = None;
        }
    }
}

fn register(pgid: u32) {
    with_registry(|r| {
        r.groups.insert(pgid);
        tell_watchdog(r, &format!("+pg {pgid}"));
    });
}

/// Forget a process group once it is known dead and reaped.
pub fn unregister(pgid: u32) {
    with_registry(|r| {
        r.groups.remove(&pgid);
        tell_watchdog(r, &format!("-pg {pgid}"));
    });
}

/// Ask the watchdog to delete `dir` if `bench` dies before [`forget_dir`].
pub fn guard_dir(dir: &Path) {
    with_registry(|r| tell_watchdog(r, &format!("+dir {}", dir.display())));
}

/// A run's private work directory (`weft-bench-*` in the temp dir), guarded
/// by the watchdog ([`guard_dir`]) and stamped with an `owner` file (pid and
/// start time) so [`sweep_strays`] of a later run can tell a dead owner's.
pub fn run_work_dir() -> io::Result<tempfile::TempDir> {
    let work = tempfile::Builder::new().prefix("weft-bench-").tempdir()?;
    guard_dir(work.path());
    let me = std::process::id();
    let owner = format!("{me} {}\n", start_time(me).unwrap_or(0));
    std::fs::write(work.path().join("owner"), owner)?;
    Ok(work)
}

/// The directory was completed or removed by `bench` itself.
pub fn forget_dir(dir: &Path) {
    with_registry(|r| tell_watchdog(r, &format!("-dir {}", dir.display())));
}

/// Ask the watchdog to delete the network namespace `name` (and kill what
/// runs in it) if `bench` dies before [`forget_netns`].
pub fn guard_netns(name: &str) {
    with_registry(|r| tell_watchdog(r, &format!("+netns {name}")));
}

/// The namespace was deleted by `bench` itself.
pub fn forget_netns(name: &str) {
    with_registry(|r| tell_watchdog(r, &format!("-netns {name}")));
}

/// Send `sig` to every member of process group `pgid`; a group that no
/// longer exists is not an error.
pub fn signal_group(pgid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), sig);
}

/// SIGKILL every registered process group (the Ctrl-C / fatal-error path).
pub fn kill_all() {
    let groups: Vec<u32> = with_registry(|r| r.groups.iter().copied().collect());
    for g in groups {
        signal_group(g, Signal::SIGKILL);
    }
}

/// Start the watchdog (`<exe> __watchdog`). Failing to start it only weakens
/// the SIGKILL guarantee for grandchildren, so it is a warning, not an error.
pub fn start_watchdog() {
    if with_registry(|r| r.watchdog.is_some()) {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("cannot find own executable to start the orphan watchdog: {e}");
            return;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("__watchdog")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Its own group so a terminal Ctrl-C (sent to bench's group) leaves it to
    // do its job; deliberately no death signal: it must outlive bench.
    cmd.process_group(0);
    match cmd.spawn() {
        Ok(mut child) => {
            let stdin = child.stdin.take().expect("piped stdin");
            with_registry(|r| {
                r.watchdog = Some((child, stdin));
                let groups: Vec<u32> = r.groups.iter().copied().collect();
                for g in groups {
                    tell_watchdog(r, &format!("+pg {g}"));
                }
            });
        }
        Err(e) => tracing::warn!("cannot start the orphan watchdog: {e}"),
    }
}

/// Close the pipe and reap the watchdog (normal end of a run).
pub fn stop_watchdog() {
    if let Some((mut child, stdin)) = with_registry(|r| r.watchdog.take()) {
        drop(stdin);
        let _ = child.wait();
    }
}

/// Body of `bench __watchdog`: read commands from stdin until EOF (bench is
/// gone), then kill what is still registered and remove guarded dirs.
pub fn watchdog_main() -> i32 {
    // A Ctrl-C meant for bench must not stop the cleanup.
    let _ = ignore_signal(Signal::SIGINT);
    let mut groups = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut namespaces = BTreeSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.split_once(' ') {
            Some(("+pg", n)) => {
                if let Ok(n) = n.parse::<u32>() {
                    groups.insert(n);
                }
            }
            Some(("-pg", n)) => {
                if let Ok(n) = n.parse::<u32>() {
                    groups.remove(&n);
                }
            }
            Some(("+dir", d)) => {
                dirs.insert(PathBuf::from(d));
            }
            Some(("-dir", d)) => {
                dirs.remove(&PathBuf::from(d));
            }
            Some(("+netns", n)) => {
                namespaces.insert(n.to_string());
            }
            Some(("-netns", n)) => {
                namespaces.remove(n);
            }
            _ => {}
        }
    }
    for g in &groups {
        signal_group(*g, Signal::SIGKILL);
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    for n in &namespaces {
        if let Err(e) = super::netns::net::destroy(n) {
            eprintln!("bench watchdog: {e}");
        }
    }
    if !groups.is_empty() || !dirs.is_empty() || !namespaces.is_empty() {
        eprintln!(
            "bench watchdog: bench exited without cleaning up; killed {} process group(s), removed {} dir(s) and {} network namespace(s)",
            groups.len(),
            dirs.len(),
            namespaces.len()
        );
    }
    0
}

fn ignore_signal(sig: Signal) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let act = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_IGN runs no code in signal context.
    unsafe { sigaction(sig, &act) }.map(|_| ())
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
    use super::*;

    #[test]
    fn children_lead_their_own_group_and_get_killed_with_it() {
        let mut cmd = Command::new("sh");
        // The shell forks a grandchild (sleep) that shares its group.
        cmd.args(["-c", "sleep 30 & wait"]);
        let mut child = spawn(cmd).unwrap();
        let pid = child.id();
        let stat = procfs::process::Process::new(pid as i32)
            .unwrap()
            .stat()
            .unwrap();
        assert_eq!(
            stat.pgrp, pid as i32,
            "child must lead its own process group"
        );
        signal_group(pid, Signal::SIGKILL);
        let status = child.wait().unwrap();
        assert!(!status.success());
        unregister(pid);
    }

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
        unregister(pid);
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
