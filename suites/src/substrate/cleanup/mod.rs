//! The cleanup registry: what a run must undo if it dies, whoever made it.
//!
//! ```text
//!  substrate / runner ──register(Action)──> registry (in bench) ──"+<json>" line──> watchdog
//!                     ──forget(Action)────>                     ──"-<json>" line──>  (bench __watchdog)
//!  bench dies (any way) ──> the pipe closes ──> the watchdog runs what is still registered:
//!                           KillGroup (all), then Run (newest first), then RemoveDir
//! ```
//!
//! Substrates register what they create the moment it exists: every child's
//! process group (done by [`super::proc_guard`] at spawn), a command that
//! deletes a network namespace (`netns`) or a Kubernetes namespace, a
//! directory of half-written results. The watchdog knows only these three
//! kinds of action, never what a namespace or a cluster is.
//!
//! Four layers, because each covers a way of dying the others miss:
//!
//! 1. Normal exit, errors, panics, Ctrl-C/SIGTERM: [`Proc`](super::process::Proc)
//!    guards kill their process group on drop, substrates' own guards
//!    (e.g. the netns `Network`) undo the rest, and [`kill_groups`] kills every
//!    group still registered (called from the signal path).
//! 2. `bench` SIGKILLed: each child gets `PR_SET_PDEATHSIG(SIGKILL)`
//!    ([`super::proc_guard`]), so the kernel kills it when its parent goes.
//! 3. Grandchildren (nginx/HAProxy workers) do not inherit the death signal,
//!    and namespaces or clusters have no parent at all: the watchdog
//!    ([`watchdog`]) runs every registered action when `bench` dies.
//! 4. If even that failed, the run's work dir holds a `pids` file and the
//!    next run's [`strays::sweep_strays`] kills what is left; substrates
//!    sweep their own leftovers by name (`bench clean`).

pub mod strays;
pub mod watchdog;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use strays::{is_running, run_work_dir, start_time, sweep_strays, WorkDir};

/// One thing to undo if `bench` dies before it is undone (and forgotten).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL process group `pgid` (every child leads its own).
    KillGroup(u32),
    /// Run `argv` to completion (at most [`watchdog::COMMAND_PATIENCE`]),
    /// after every group is killed: deleting a network namespace, a
    /// Kubernetes namespace, a kind cluster. `what` names it in messages.
    Run { what: String, argv: Vec<String> },
    /// Remove a directory tree (a work dir, half-written results).
    RemoveDir(PathBuf),
}

impl Action {
    /// The watchdog's line for registering (`+`) or forgetting (`-`) it.
    fn line(&self, sign: char) -> String {
        // Plain data (numbers, strings, paths): serializing cannot fail,
        // and JSON keeps spaces and newlines in arguments on one line.
        format!(
            "{sign}{}",
            serde_json::to_string(self).expect("an action serializes")
        )
    }

    /// A line written by [`Action::line`]: (registered?, action).
    fn parse(line: &str) -> Option<(bool, Action)> {
        let (sign, json) = (line.get(..1)?, line.get(1..)?);
        let add = match sign {
            "+" => true,
            "-" => false,
            _ => return None,
        };
        Some((add, serde_json::from_str(json).ok()?))
    }
}

struct Registry {
    /// Everything registered and not forgotten, oldest first (replayed to
    /// a watchdog that starts late).
    actions: Vec<Action>,
    watchdog: Option<(Child, ChildStdin)>,
}

fn registry() -> &'static Mutex<Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(|| {
        Mutex::new(Registry {
            actions: Vec::new(),
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
            tracing::warn!("the orphan watchdog is gone; what this run made may outlive a SIGKILLed bench");
            reg.watchdog = None;
        }
    }
}

/// Undo `action` if `bench` dies before [`forget`] is called with it.
pub fn register(action: Action) {
    with_registry(|r| {
        tell_watchdog(r, &action.line('+'));
        r.actions.push(action);
    });
}

/// `action` was done (or is no longer needed) by `bench` itself.
pub fn forget(action: &Action) {
    with_registry(|r| {
        if let Some(i) = r.actions.iter().rposition(|a| a == action) {
            r.actions.remove(i);
            tell_watchdog(r, &action.line('-'));
        }
    });
}

/// Send `sig` to every member of process group `pgid`; a group that no
/// longer exists is not an error.
pub fn signal_group(pgid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), sig);
}

/// SIGKILL every registered process group (the Ctrl-C / fatal-error path;
/// the groups stay registered until their `Proc`s reap them).
pub fn kill_groups() {
    let groups: Vec<u32> = with_registry(|r| {
        r.actions
            .iter()
            .filter_map(|a| match a {
                Action::KillGroup(g) => Some(*g),
                _ => None,
            })
            .collect()
    });
    for g in groups {
        signal_group(g, Signal::SIGKILL);
    }
}

/// Start the watchdog (`<exe> __watchdog`) and hand it what is registered
/// so far. Failing to start it only weakens the SIGKILL guarantee, so it is
/// a warning, not an error.
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
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    match cmd.spawn() {
        Ok(mut child) => {
            let stdin = child.stdin.take().expect("piped stdin");
            with_registry(|r| {
                r.watchdog = Some((child, stdin));
                let lines: Vec<String> = r.actions.iter().map(|a| a.line('+')).collect();
                for l in lines {
                    tell_watchdog(r, &l);
                }
            });
        }
        Err(e) => tracing::warn!("cannot start the orphan watchdog: {e}"),
    }
}

/// Close the pipe and reap the watchdog (normal end of a run). What is
/// still registered then is the caller's to undo.
pub fn stop_watchdog() {
    if let Some((mut child, stdin)) = with_registry(|r| r.watchdog.take()) {
        drop(stdin);
        let _ = child.wait();
    }
}

/// What a command that runs children holds: the watchdog running and
/// earlier runs' strays swept from the start, the watchdog stopped when
/// it is dropped (after the results are committed).
pub struct Session(());

impl Session {
    pub fn start() -> Session {
        start_watchdog();
        sweep_strays(&std::env::temp_dir());
        Session(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        stop_watchdog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_one_line() {
        let actions = [
            Action::KillGroup(4242),
            Action::Run {
                what: "network namespace weft-1-2-node".into(),
                argv: vec!["sh".into(), "-c".into(), "a \"$0\"\nb".into(), "x y".into()],
            },
            Action::RemoveDir("/tmp/weft bench/x".into()),
        ];
        for a in actions {
            for sign in ['+', '-'] {
                let line = a.line(sign);
                assert!(!line.contains('\n'), "{line}");
                assert_eq!(Action::parse(&line), Some((sign == '+', a.clone())));
            }
        }
        assert_eq!(Action::parse("+pg 12"), None);
        assert_eq!(Action::parse(""), None);
    }

    #[test]
    fn forget_removes_the_newest_equal_registration_only() {
        let a = Action::RemoveDir("/nonexistent/weft-registry-test".into());
        register(a.clone());
        register(a.clone());
        forget(&a);
        let left = with_registry(|r| r.actions.iter().filter(|x| **x == a).count());
        assert_eq!(left, 1);
        forget(&a);
        forget(&a);
        let left = with_registry(|r| r.actions.iter().filter(|x| **x == a).count());
        assert_eq!(left, 0);
    }
}
