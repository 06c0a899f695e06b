//! Starting child processes that cannot outlive `bench`: the one module of
//! `suites` allowed `unsafe`.
//!
//! Every child leads its own process group, registered with the cleanup
//! registry ([`super::cleanup`]) the moment it exists, and gets
//! `PR_SET_PDEATHSIG(SIGKILL)` so the kernel kills it if `bench` dies.
//!
//! Why `unsafe` (and only here): `Command::pre_exec` is unsafe because the
//! closure runs between fork and exec, where only async-signal-safe calls
//! are allowed. Ours makes two syscalls (`prctl`, `getppid`) and allocates
//! nothing. [`ignore_sigint`] installs `SIG_IGN` with `sigaction`, which nix
//! marks unsafe because a handler would run in signal context (SIG_IGN runs
//! none). The crate denies `unsafe_code`, this module allows it, and every
//! other module forbids it (see `lib.rs` and `substrate/mod.rs`).
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
//! run after the uid change, without the privilege to enter).
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::Signal;

use super::cleanup::{self, Action};

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
    cleanup::register(Action::KillGroup(child.id()));
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
/// for cleanup ([`Action::KillGroup`]). Callers must [`cleanup::forget`] it
/// after reaping it.
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

/// Ignore SIGINT in this process (the watchdog: a Ctrl-C meant for bench
/// must not stop the cleanup).
pub fn ignore_sigint() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let act = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_IGN runs no code in signal context.
    unsafe { sigaction(Signal::SIGINT, &act) }.map(|_| ())
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
        cleanup::signal_group(pid, Signal::SIGKILL);
        let status = child.wait().unwrap();
        assert!(!status.success());
        cleanup::forget(&Action::KillGroup(pid));
    }
}
