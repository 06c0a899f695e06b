//! The run state file a `bench` run leaves for `weft stat --run`:
//! `<work dir>/proxies.json`, written by the local and netns substrates
//! each time they deploy a variant (and emptied at teardown). The work dir
//! is the run's `$TMPDIR/weft-bench-*` directory, whose `owner` file names
//! the running `bench` (pid and start time).
//!
//! ```json
//! {"schema": 1, "substrate": "netns", "variant": "weft",
//!  "proxies": [{"name": "server-1", "role": "server", "admin": "http://127.0.0.1:38211",
//!               "netns": "/run/netns/weft-…-server-1"}]}
//! ```
//! `netns`, when present, is the network namespace the admin URL is
//! reached from (netns pods' admin listeners answer on their loopback).

use std::path::{Path, PathBuf};

pub const FILE: &str = "proxies.json";
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub schema: u32,
    pub substrate: String,
    /// The deployed variant (`weft`, `weft-plaintext`, ...).
    pub variant: String,
    pub proxies: Vec<Proxy>,
}

/// One mesh-proxy: one workload of `weft stat`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Proxy {
    pub name: String,
    /// `client` (the load generator's sidecar) or `server`.
    pub role: String,
    /// The admin listener's base URL, `http://host:port`.
    pub admin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source} (not a bench run state file)")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: schema {found}, this weft reads schema {SCHEMA}")]
    Schema { path: PathBuf, found: u32 },
    #[error("no running bench run with a {FILE} under {tmp} (start `bench run --substrate local|netns`, or name the run's work dir with --run DIR)")]
    NoRun { tmp: PathBuf },
    #[error("several running bench runs under {tmp}: {}; name one with --run DIR", .runs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    SeveralRuns { tmp: PathBuf, runs: Vec<PathBuf> },
}

impl RunState {
    /// Writes `<dir>/proxies.json` whole (a temp file renamed into place,
    /// so a reader never sees half of it).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, dir.join(FILE))
    }

    pub fn read(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| StateError::Io { path: path.clone(), source })?;
        let state: RunState =
            serde_json::from_str(&text).map_err(|source| StateError::Json { path: path.clone(), source })?;
        if state.schema != SCHEMA {
            return Err(StateError::Schema { path, found: state.schema });
        }
        Ok(state)
    }
}

/// The work dir of the one running `bench` run under `tmp` that has a
/// state file.
pub fn find_run(tmp: &Path) -> Result<PathBuf, StateError> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(tmp)
        .map_err(|source| StateError::Io { path: tmp.to_path_buf(), source })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("weft-bench-")))
        .filter(|p| p.join(FILE).is_file() && owner_runs(p))
        .collect();
    runs.sort();
    match runs.len() {
        0 => Err(StateError::NoRun { tmp: tmp.to_path_buf() }),
        1 => Ok(runs.remove(0)),
        _ => Err(StateError::SeveralRuns { tmp: tmp.to_path_buf(), runs }),
    }
}

/// Whether the `bench` named in `<dir>/owner` (`pid start-time`) still runs.
fn owner_runs(dir: &Path) -> bool {
    let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else { return false };
    let mut words = owner.split_whitespace();
    let (Some(pid), Some(start)) = (words.next(), words.next()) else { return false };
    // Field 22 of /proc/<pid>/stat (start time in clock ticks), after the
    // parenthesised command which may hold spaces.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let after_comm = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    after_comm.split_whitespace().nth(22 - 3) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_state_reads_back_and_only_live_runs_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let state = RunState {
            schema: SCHEMA,
            substrate: "netns".into(),
            variant: "weft".into(),
            proxies: vec![Proxy {
                name: "server-1".into(),
                role: "server".into(),
                admin: "http://127.0.0.1:4191".into(),
                netns: Some("/run/netns/x".into()),
            }],
        };
        let live = tmp.path().join("weft-bench-live");
        let dead = tmp.path().join("weft-bench-dead");
        for dir in [&live, &dead] {
            std::fs::create_dir(dir).unwrap();
            state.write(dir).unwrap();
        }
        assert_eq!(RunState::read(&live).unwrap(), state);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        let start = me[me.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().to_owned();
        std::fs::write(live.join("owner"), format!("{} {start}\n", std::process::id())).unwrap();
        // A pid that is running, but not since that start time: a reused pid.
        std::fs::write(dead.join("owner"), format!("{} 1\n", std::process::id())).unwrap();
        assert_eq!(find_run(tmp.path()).unwrap(), live);
        std::fs::write(dead.join("owner"), format!("{} {start}\n", std::process::id())).unwrap();
        assert!(matches!(find_run(tmp.path()), Err(StateError::SeveralRuns { .. })));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(find_run(empty.path()), Err(StateError::NoRun { .. })));
        std::fs::write(live.join(FILE), "{\"schema\": 2, \"substrate\": \"x\", \"variant\": \"y\", \"proxies\": []}").unwrap();
        assert!(matches!(RunState::read(&live), Err(StateError::Schema { found: 2, .. })));
    }
}
