//! `bench __watchdog`: the process that outlives `bench` to undo what it
//! registered. It reads registry lines from its stdin (a pipe from `bench`)
//! until EOF, which comes however `bench` ends, and then runs every action
//! still registered. It knows the three kinds of [`Action`], nothing of
//! what substrates make with them.

use std::io::{self, BufRead, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{signal_group, Action};

/// How long one cleanup command may run before it is killed.
pub const COMMAND_PATIENCE: Duration = Duration::from_secs(60);

/// Body of `bench __watchdog`. Returns its exit status.
pub fn watchdog_main() -> i32 {
    // A Ctrl-C meant for bench must not stop the cleanup.
    if let Err(e) = super::super::proc_guard::ignore_sigint() {
        eprintln!("bench watchdog: cannot ignore SIGINT: {e}");
    }
    let mut actions: Vec<Action> = Vec::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match Action::parse(&line) {
            Some((true, a)) => actions.push(a),
            Some((false, a)) => {
                if let Some(i) = actions.iter().rposition(|x| *x == a) {
                    actions.remove(i);
                }
            }
            None => eprintln!("bench watchdog: ignoring an unreadable line: {line}"),
        }
    }
    let done = run_all(&actions);
    if !actions.is_empty() {
        eprintln!(
            "bench watchdog: bench exited without cleaning up; killed {} process group(s), ran {} cleanup command(s) ({} failed), removed {} dir(s)",
            done.groups, done.commands, done.failed, done.dirs
        );
    }
    0
}

/// What [`run_all`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub groups: usize,
    pub commands: usize,
    pub failed: usize,
    pub dirs: usize,
}

/// Undo `actions` (oldest first as registered): kill every group first (a
/// namespace or directory is only safe to remove once nothing runs in it),
/// then the commands newest first (what was made last may depend on what
/// was made first), then the directories.
pub fn run_all(actions: &[Action]) -> Done {
    let mut done = Done::default();
    for a in actions {
        if let Action::KillGroup(g) = a {
            signal_group(*g, Signal::SIGKILL);
            done.groups += 1;
        }
    }
    for a in actions.iter().rev() {
        if let Action::Run { what, argv } = a {
            done.commands += 1;
            if let Err(e) = run_command(argv, COMMAND_PATIENCE) {
                done.failed += 1;
                eprintln!("bench watchdog: {what}: {e}");
            }
        }
    }
    for a in actions {
        if let Action::RemoveDir(d) = a {
            let _ = std::fs::remove_dir_all(d);
            done.dirs += 1;
        }
    }
    done
}

/// Run `argv` with no stdin, failing on a non-zero status (with its stderr)
/// or once it has run `patience` (it is killed then).
pub fn run_command(argv: &[String], patience: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + patience;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} still running after {patience:?}; killed it"));
            }
            // No runtime here, and nothing else to do: poll.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Err(format!("{program} failed ({status}): {}", stderr.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_newest_first_after_groups_and_before_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let dir = tmp.path().join("results");
        std::fs::create_dir(&dir).unwrap();
        let append = |word: &str| Action::Run {
            what: word.into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                // The directory must still be there when commands run.
                "test -d \"$2\" && echo \"$1\" >> \"$0\"".into(),
                log.display().to_string(),
                word.into(),
                dir.display().to_string(),
            ],
        };
        let actions = [
            Action::RemoveDir(dir.clone()),
            append("first"),
            append("second"),
            Action::Run {
                what: "a failing one".into(),
                argv: vec!["false".into()],
            },
        ];
        let done = run_all(&actions);
        assert_eq!(
            done,
            Done {
                groups: 0,
                commands: 3,
                failed: 1,
                dirs: 1
            }
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "second\nfirst\n");
        assert!(!dir.exists());
    }

    #[test]
    fn a_hung_command_is_killed() {
        let argv = vec!["sleep".to_string(), "30".to_string()];
        let err = run_command(&argv, Duration::from_millis(100)).unwrap_err();
        assert!(err.contains("killed"), "{err}");
        let err = run_command(&["sh".into(), "-c".into(), "echo no >&2; exit 3".into()], COMMAND_PATIENCE)
            .unwrap_err();
        assert!(err.contains("no") && err.contains('3'), "{err}");
    }
}
