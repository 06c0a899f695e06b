//! Running `iptables-save` and `iptables-restore` in the current network
//! namespace, and turning their failures into messages an init container
//! log can be acted on.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::rules::{Family, Installed, Rules};

const NOT_ROOT: &str =
    "weft init must run as root (CAP_NET_ADMIN) inside the pod's network namespace";

/// Why installing or removing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The rules themselves are wrong; nothing was run.
    #[error("invalid settings: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("`{binary}` was not found: weft init needs the iptables package ({tool}-save and {tool}-restore) in its image, or --iptables naming an installed iptables{hint}", tool = .family.tool(), hint = ipv6_hint(*.family))]
    NotFound { binary: String, family: Family },
    #[error("{NOT_ROOT} ({binary}: {stderr})")]
    NotPermitted { binary: String, stderr: String },
    #[error("running `{binary}`: {source}")]
    Run { binary: String, source: io::Error },
    #[error("`{binary} -t nat` failed ({status}): {stderr}")]
    Save {
        binary: String,
        status: String,
        stderr: String,
    },
    #[error("`{binary} --noflush` refused the rules ({status}): {stderr}{}", failed_line(.line))]
    Restore {
        binary: String,
        status: String,
        stderr: String,
        /// The input line iptables-restore named, with its number.
        line: Option<(usize, String)>,
    },
}

fn ipv6_hint(family: Family) -> &'static str {
    match family {
        Family::V4 => "",
        Family::V6 => " (for the IPv6 rules, which keep a dual-stack pod's IPv6 TCP from bypassing the proxy; --ipv6 off skips them where the pod has no IPv6 traffic)",
    }
}

fn failed_line(line: &Option<(usize, String)>) -> String {
    match line {
        Some((number, text)) => format!("; line {number} was: {text}"),
        None => String::new(),
    }
}

impl InitError {
    /// The process exit status for this error (sysexits.h): 64 for bad
    /// settings, 69 when iptables is missing, 77 without the privilege, 1
    /// for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::Config(_) => 64,
            InitError::NotFound { .. } => 69,
            InitError::NotPermitted { .. } => 77,
            _ => 1,
        }
    }
}

/// The `iptables-save` and `iptables-restore` that go with an `iptables`
/// (a name looked up on PATH, or a path) for one address family:
/// `iptables-legacy` gives `iptables-legacy-save` (IPv4) and
/// `ip6tables-legacy-save` (IPv6), `/sbin/iptables` gives `/sbin/iptables-save`
/// and `/sbin/ip6tables-save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iptables {
    pub save: PathBuf,
    pub restore: PathBuf,
    pub family: Family,
}

impl Iptables {
    /// `None` when `iptables` is not named `iptables...`, so its IPv6
    /// sibling cannot be told.
    pub fn new(iptables: &Path, family: Family) -> Option<Self> {
        let name = iptables
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "iptables".into());
        let name = match family {
            Family::V4 => name,
            Family::V6 => format!("ip6tables{}", name.strip_prefix("iptables")?),
        };
        Some(Self {
            save: iptables.with_file_name(format!("{name}-save")),
            restore: iptables.with_file_name(format!("{name}-restore")),
            family,
        })
    }

    fn for_family(iptables: &Path, family: Family) -> Result<Self, InitError> {
        Self::new(iptables, family).ok_or_else(|| {
            InitError::Config(vec![format!(
                "--iptables {}: the IPv6 rules need its ip6tables sibling, which only an iptables named `iptables...` has; name one, or pass --ipv6 off",
                iptables.display()
            )])
        })
    }

    /// The Weft parts of the nat table as it is now.
    fn installed(&self) -> Result<Installed, InitError> {
        let output = run(&self.save, self.family, &["-t", "nat"], None)?;
        if !output.status.success() {
            return Err(classify(&self.save, &output, |binary, status, stderr| {
                InitError::Save {
                    binary,
                    status,
                    stderr,
                }
            }));
        }
        Ok(Installed::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    fn restore(&self, script: &str) -> Result<(), InitError> {
        tracing::debug!(restore = %self.restore.display(), "iptables-restore input:\n{script}");
        // --wait: iptables-legacy holds a lock that a concurrent iptables
        // call (a CNI plugin, kube-proxy) may have; nft ignores it.
        let output = run(&self.restore, self.family, &["--noflush", "--wait"], Some(script))?;
        if output.status.success() {
            return Ok(());
        }
        Err(classify(
            &self.restore,
            &output,
            |binary, status, stderr| {
                let line = named_line(&stderr)
                    .and_then(|n| Some((n, script.lines().nth(n.checked_sub(1)?)?.to_owned())));
                InitError::Restore {
                    binary,
                    status,
                    stderr,
                    line,
                }
            },
        ))
    }
}

fn run(
    binary: &Path,
    family: Family,
    args: &[&str],
    input: Option<&str>,
) -> Result<std::process::Output, InitError> {
    let shown = binary.display().to_string();
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => InitError::NotFound {
                binary: shown.clone(),
                family,
            },
            _ => InitError::Run {
                binary: shown.clone(),
                source,
            },
        })?;
    // Write on another thread: iptables-restore may fail and exit before it
    // reads everything, and a large script must not deadlock on full pipes.
    let writer = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => {
            let input = input.to_owned();
            Some(std::thread::spawn(move || {
                stdin.write_all(input.as_bytes())
            }))
        }
        _ => None,
    };
    let output = child.wait_with_output().map_err(|source| InitError::Run {
        binary: shown.clone(),
        source,
    })?;
    if let Some(writer) = writer {
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("stdin writer panicked")));
        // A broken pipe after a failure is explained by the failure itself.
        if let (Err(source), true) = (written, output.status.success()) {
            return Err(InitError::Run {
                binary: shown,
                source,
            });
        }
    }
    Ok(output)
}

/// Turns a failed iptables run into NotPermitted when that is the reason
/// (nft: "Permission denied (you must be root)", legacy: "Cannot
/// initialize: Permission denied"), or into the caller's error otherwise.
fn classify(
    binary: &Path,
    output: &std::process::Output,
    otherwise: impl FnOnce(String, String, String) -> InitError,
) -> InitError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let binary = binary.display().to_string();
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("permission denied")
        || lower.contains("must be root")
        || lower.contains("operation not permitted")
    {
        return InitError::NotPermitted { binary, stderr };
    }
    let status = match output.status.code() {
        Some(code) => format!("exit {code}"),
        None => output.status.to_string(),
    };
    otherwise(binary, status, stderr.replace('\n', " | "))
}

/// The input line number in iptables-restore's "Error occurred at line: N"
/// (nft and legacy) or "line N failed" (older legacy).
fn named_line(stderr: &str) -> Option<usize> {
    let number = |s: &str| {
        s.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    if let Some((_, rest)) = stderr.split_once("at line:") {
        return number(rest);
    }
    stderr.match_indices("line ").find_map(|(at, _)| {
        let rest = &stderr[at + "line ".len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        rest[digits..]
            .starts_with(" failed")
            .then(|| number(rest))
            .flatten()
    })
}

/// What [`apply`] did in one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub family: Family,
    pub rules: Rules,
    /// Jumps into the Weft chains added, kept as they were, and removed
    /// (duplicates, or jumps in another form than this weft writes).
    pub jumps_added: usize,
    pub jumps_kept: usize,
    pub jumps_removed: usize,
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rules;
        write!(
            f,
            "weft init: {} nat table: inbound TCP -> :{} (skipped ports: {}); outbound TCP -> :{} (not uid {} or loopback; skipped ports: {}; skipped CIDRs: {}); jumps: {} added, {} already present, {} removed",
            self.family,
            r.inbound_port,
            list(&r.skip_inbound_ports),
            r.outbound_port,
            r.proxy_uid,
            list(&r.skip_outbound_ports),
            list(&self.cidrs()),
            self.jumps_added,
            self.jumps_kept,
            self.jumps_removed,
        )
    }
}

impl Summary {
    /// The skipped CIDRs of this family.
    fn cidrs(&self) -> Vec<ipnet::IpNet> {
        self.rules.skip_outbound_cidrs.iter().filter(|c| self.family.holds(c)).copied().collect()
    }
}

/// What [`cleanup`] removed in one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupSummary {
    pub family: Family,
    pub jumps_removed: usize,
    pub chains_removed: Vec<String>,
}

impl fmt::Display for CleanupSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.jumps_removed == 0 && self.chains_removed.is_empty() {
            return write!(
                f,
                "weft init --cleanup: no weft rules in the {} nat table, nothing to remove",
                self.family
            );
        }
        write!(
            f,
            "weft init --cleanup: removed {} jump(s) and chain(s) {} from the {} nat table",
            self.jumps_removed,
            list(&self.chains_removed),
            self.family,
        )
    }
}

/// Installs `rules` in the current network namespace's nat table of one
/// address family (`iptables`, or its `ip6tables` sibling for IPv6) in one
/// `-restore --noflush` transaction: the Weft chains are created or
/// replaced, and each jump into them is added only if it is not already
/// there. Running it again with other rules replaces the old ones.
///
/// The jumps are read before the transaction, so two runs racing in one
/// namespace could both add one; any later run collapses them back to one.
pub fn apply(iptables: &Path, family: Family, rules: &Rules) -> Result<Summary, InitError> {
    let problems = rules.problems();
    if !problems.is_empty() {
        return Err(InitError::Config(problems));
    }
    let iptables = Iptables::for_family(iptables, family)?;
    let installed = iptables.installed()?;
    let rendered = rules.render_for(family, &installed);
    iptables.restore(&rendered.script)?;
    Ok(Summary {
        family,
        rules: rules.clone(),
        jumps_added: rendered.jumps.added,
        jumps_kept: rendered.jumps.kept,
        jumps_removed: rendered.jumps.removed,
    })
}

/// Removes every jump into the Weft chains and the chains themselves from
/// the current network namespace's nat table of one address family;
/// nothing else is touched. Without Weft rules installed it changes nothing
/// and succeeds.
pub fn cleanup(iptables: &Path, family: Family) -> Result<CleanupSummary, InitError> {
    let iptables = Iptables::for_family(iptables, family)?;
    let installed = iptables.installed()?;
    let Some(script) = installed.cleanup_script() else {
        return Ok(CleanupSummary { family, jumps_removed: 0, chains_removed: Vec::new() });
    };
    iptables.restore(&script)?;
    Ok(CleanupSummary {
        family,
        jumps_removed: installed.jumps.len(),
        chains_removed: installed.chains,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_follow_the_iptables_name() {
        let plain = Iptables::new(Path::new("iptables"), Family::V4).unwrap();
        assert_eq!(plain.save, PathBuf::from("iptables-save"));
        assert_eq!(plain.restore, PathBuf::from("iptables-restore"));
        let plain6 = Iptables::new(Path::new("iptables"), Family::V6).unwrap();
        assert_eq!(plain6.save, PathBuf::from("ip6tables-save"));
        let legacy6 = Iptables::new(Path::new("/usr/sbin/iptables-legacy"), Family::V6).unwrap();
        assert_eq!(legacy6.restore, PathBuf::from("/usr/sbin/ip6tables-legacy-restore"));
        assert_eq!(Iptables::new(Path::new("/opt/ipt"), Family::V6), None);
        let err = apply(Path::new("/opt/ipt"), Family::V6, &Rules::default()).unwrap_err();
        assert_eq!(err.exit_code(), 64, "{err}");
        assert!(err.to_string().contains("--ipv6 off"), "{err}");
        let legacy = Iptables::new(Path::new("/usr/sbin/iptables-legacy"), Family::V4).unwrap();
        assert_eq!(legacy.save, PathBuf::from("/usr/sbin/iptables-legacy-save"));
        assert_eq!(
            legacy.restore,
            PathBuf::from("/usr/sbin/iptables-legacy-restore")
        );
    }

    #[test]
    fn restore_errors_name_the_line() {
        let nft = "iptables-restore v1.8.9 (nf_tables): Couldn't load match `bogus':No such file or directory\n\nError occurred at line: 3\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.";
        assert_eq!(named_line(nft), Some(3));
        assert_eq!(named_line("iptables-restore: line 12 failed"), Some(12));
        assert_eq!(named_line("something else on the deadline 7"), None);
    }

    #[test]
    fn a_missing_iptables_says_which_binary_and_what_to_install() {
        let err = apply(
            Path::new("/nonexistent/weft-test/iptables"),
            Family::V4,
            &Rules::default(),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 69);
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/weft-test/iptables-save"),
            "{message}"
        );
        assert!(message.contains("iptables package"), "{message}");
        let err = apply(Path::new("/nonexistent/weft-test/iptables"), Family::V6, &Rules::default())
            .unwrap_err();
        assert_eq!(err.exit_code(), 69);
        let message = err.to_string();
        assert!(message.contains("/nonexistent/weft-test/ip6tables-save"), "{message}");
        assert!(message.contains("--ipv6 off"), "{message}");
    }

    #[test]
    fn bad_rules_are_refused_before_running_anything() {
        let rules = Rules {
            inbound_port: 4140,
            ..Rules::default()
        };
        let err = apply(Path::new("/nonexistent/weft-test/iptables"), Family::V4, &rules).unwrap_err();
        assert_eq!(err.exit_code(), 64, "{err}");
    }
}
