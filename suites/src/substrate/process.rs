//! One supervised child process: its printed lines, its stderr tail, and a
//! guard that kills its whole process group.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::cleanup::{self, Action};
use super::proc_guard;
use super::DeployError;

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 30;

/// A running child. Dropping it SIGKILLs its process group; [`Proc::stop`]
/// asks politely first.
pub struct Proc {
    name: String,
    child: Option<std::process::Child>,
    pid: u32,
    stdout: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Spawn `cmd` (stdout and stderr piped and drained) and append
    /// `<pid> <starttime> <name>` to `pids_file`.
    pub fn spawn(name: &str, cmd: Command, pids_file: &Path) -> Result<Proc, DeployError> {
        Proc::spawn_in(name, cmd, pids_file, None)
    }

    /// [`Proc::spawn`] inside the network namespace `netns` (a
    /// `/run/netns/NAME` path) when given.
    pub fn spawn_in(
        name: &str,
        mut cmd: Command,
        pids_file: &Path,
        netns: Option<&Path>,
    ) -> Result<Proc, DeployError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let spawned = match netns {
            Some(ns) => proc_guard::spawn_in(cmd, ns),
            None => proc_guard::spawn(cmd),
        };
        let mut child = spawned.map_err(|e| DeployError::Start {
            component: name.to_string(),
            detail: format!("cannot run {program}: {e}"),
        })?;
        let pid = child.id();
        if let Some(start) = cleanup::start_time(pid) {
            let line = format!("{pid} {start} {name}\n");
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(pids_file)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("piped stdout");
        // Plain threads, not tokio tasks: they block on pipes and end at EOF
        // when the child (and any worker holding the pipe) is gone.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more, but keep draining so the child
                    // never blocks on a full pipe.
                    continue;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let err = child.stderr.take().expect("piped stderr");
        let tail = stderr.clone();
        std::thread::spawn(move || drain_tail(err, &tail));
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            pid,
            stdout: rx,
            seen: Vec::new(),
            stderr,
        })
    }

    /// What follows `prefix` on every stdout line read so far (by
    /// [`Proc::wait_line`]), in order: for a prefix printed several times.
    pub fn seen_lines(&self, prefix: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.trim().to_string())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait for a stdout line starting with `prefix` and return the rest,
    /// trimmed. Fails early if the child exits.
    pub async fn wait_line(
        &mut self,
        prefix: &str,
        patience: Duration,
    ) -> Result<String, DeployError> {
        if let Some(rest) = self.seen.iter().find_map(|l| l.strip_prefix(prefix)) {
            return Ok(rest.trim().to_string());
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        let rest = rest.trim().to_string();
                        self.seen.push(line);
                        return Ok(rest);
                    }
                    self.seen.push(line);
                }
                Ok(None) => {
                    // stdout closed: the child has exited (or closed it); give
                    // it a moment so the exit status and stderr are complete.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Err(self.failure(&format!("exited before printing `{prefix}...`")));
                }
                Err(_) => {
                    return Err(
                        self.failure(&format!("did not print `{prefix}...` within {patience:?}"))
                    );
                }
            }
        }
    }

    /// An error naming this component, its exit status if it died, and the
    /// tail of its stderr.
    pub fn failure(&mut self, what: &str) -> DeployError {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        let mut detail = what.to_string();
        if let Some(s) = status {
            detail.push_str(&format!(" ({s})"));
        }
        let tail = self.stderr_tail();
        if !tail.is_empty() {
            detail.push_str(&format!("; stderr tail:\n{tail}"));
        }
        DeployError::Start {
            component: self.name.clone(),
            detail,
        }
    }

    pub fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        t.iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `Some(status)` if the child has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM the group, wait up to `grace` for the leader, then SIGKILL the
    /// group (which also catches workers a master left behind) and reap.
    pub async fn stop(mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        cleanup::signal_group(self.pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cleanup::signal_group(self.pid, Signal::SIGKILL);
        let _ = child.wait();
        cleanup::forget(&Action::KillGroup(self.pid));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            cleanup::signal_group(self.pid, Signal::SIGKILL);
            let _ = child.wait();
            cleanup::forget(&Action::KillGroup(self.pid));
        }
    }
}

fn drain_tail(r: impl Read, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}
