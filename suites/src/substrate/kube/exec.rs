//! External commands (kind, docker, kubectl, weft, linkerd, istioctl): run
//! as real processes, each with a timeout, failing with the command line and
//! its stderr so the user sees what the cluster said.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// One command line, with what it reads on stdin (a rendered manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Fed to stdin (e.g. YAML for `kubectl apply -f -`).
    pub stdin: Option<String>,
    pub timeout: Duration,
}

impl Cmd {
    pub fn new(program: &str, args: &[&str], timeout: Duration) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
            timeout,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn stdin(mut self, text: String) -> Cmd {
        self.stdin = Some(text);
        self
    }

    /// The command line as a shell would read it (arguments quoted when needed).
    pub fn line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

fn quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Why an external command did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("`{command}`: {program} not found{}", hint(program))]
    NotFound { command: String, program: String },
    #[error("`{command}` could not start: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {}; killed it", humantime::format_duration(*.timeout))]
    Timeout { command: String, timeout: Duration },
}

fn hint(program: &str) -> &'static str {
    if program.ends_with("images/build") {
        "; the image build script is not in this workspace: build the <registry>/<image>:<tag> images (mesh-kube names.rs) yourself and pass --no-build"
    } else if program.contains('/') {
        ""
    } else {
        " on PATH; install it (the kind substrate needs kind, docker and kubectl; kube needs docker and kubectl) or fix PATH"
    }
}

/// Run `cmd` to completion and return its stdout; stderr is kept for the error.
pub async fn run(cmd: &Cmd) -> Result<String, CmdError> {
    let command = cmd.line();
    if which(&cmd.program).is_none() {
        return Err(CmdError::NotFound {
            command,
            program: cmd.program.clone(),
        });
    }
    let mut child = tokio::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CmdError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
        // A program that exits without reading its input reports why on stderr.
        let _ = pipe.write_all(text.as_bytes()).await;
        drop(pipe);
    }
    let out = match tokio::time::timeout(cmd.timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => return Err(CmdError::Spawn { command, source }),
        // Dropping the future dropped the child: kill_on_drop ended it.
        Err(_) => {
            return Err(CmdError::Timeout {
                command,
                timeout: cmd.timeout,
            })
        }
    };
    if !out.status.success() {
        return Err(CmdError::Failed {
            command,
            status: out.status.to_string(),
            stderr: last_lines(&String::from_utf8_lossy(&out.stderr), 20),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `a | b`: `a`'s stdout becomes `b`'s stdin (e.g. `weft install | kubectl apply -f -`).
pub async fn pipe(a: &Cmd, b: &Cmd) -> Result<String, CmdError> {
    let text = run(a).await?;
    run(&b.clone().stdin(text)).await
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if tail.is_empty() {
        "(nothing on stderr)".into()
    } else {
        tail
    }
}

/// The file `program` runs as: a path with a slash as is, else the first
/// match on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_what_a_shell_would_split() {
        let c = Cmd::new("kubectl", &["label", "namespace", "x", "a b", "it's"], Duration::from_secs(1));
        assert_eq!(c.line(), r"kubectl label namespace x 'a b' 'it'\''s'");
    }

    #[tokio::test]
    async fn failures_name_the_command_and_its_stderr() {
        let c = Cmd::new("sh", &["-c", "echo nope >&2; exit 3"], Duration::from_secs(10));
        let e = run(&c).await.unwrap_err().to_string();
        assert!(e.contains("sh -c 'echo nope >&2; exit 3'") && e.contains("nope"), "{e}");
        let missing = Cmd::new("weft-no-such-tool", &[], Duration::from_secs(1));
        assert!(matches!(run(&missing).await, Err(CmdError::NotFound { .. })));
        let slow = Cmd::new("sleep", &["30"], Duration::from_millis(200));
        assert!(matches!(run(&slow).await, Err(CmdError::Timeout { .. })));
        let cat = Cmd::new("cat", &[], Duration::from_secs(10));
        assert_eq!(pipe(&Cmd::new("echo", &["hi"], Duration::from_secs(10)), &cat).await.unwrap(), "hi\n");
    }
}
