//! The environment a record was measured in: host, kernel, build, versions.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use reports::Env;

/// Describe this machine and build. `versions` adds what the substrate runs.
pub fn gather(extra_versions: BTreeMap<String, String>) -> Env {
    let git_rev = git_rev(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut versions = extra_versions;
    versions.insert(
        "weft".into(),
        format!("{} ({git_rev})", env!("CARGO_PKG_VERSION")),
    );
    if let Some(rustc) = command_line("rustc", &["-V"]) {
        versions.insert(
            "rustc".into(),
            rustc.strip_prefix("rustc ").unwrap_or(&rustc).to_string(),
        );
    }
    Env {
        host: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        git_rev,
        versions,
    }
}

/// `git rev-parse --short HEAD` of the tree at `dir`, `-dirty` if it has
/// uncommitted changes, `unknown` outside git.
pub fn git_rev(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let rev = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let s = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Now, UTC, RFC 3339 to the second (`2026-11-26T13:40:00Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A directory-name-safe form of an RFC 3339 time: `20261126T134000Z`.
pub fn compact_timestamp(rfc3339: &str) -> String {
    rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            compact_timestamp("2026-11-26T13:40:00Z"),
            "20261126T134000Z"
        );
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn env_has_weft_version_and_cores() {
        let e = gather(BTreeMap::new());
        assert!(e.cores >= 1);
        assert!(e.versions["weft"].starts_with(env!("CARGO_PKG_VERSION")));
        assert!(!e.kernel.is_empty());
    }
}
