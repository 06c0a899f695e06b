//! Finding the `loadgen`, `mesh-proxy`, `mesh-control` and `weft` binaries `bench` starts.
//!
//! They are siblings of `bench` in the cargo target dir. `cargo run --bin
//! bench` builds only `bench`, so when run under cargo (env `CARGO` set) and
//! a sibling is missing or older than `bench`, we build them with the same
//! profile and the same feature unification (see [`TARGETS`]), so a cold
//! first run compiles each dependency once. `WEFT_BIN_DIR` overrides the directory and disables building.
//! Tests use [`ensure_siblings`] to get the same binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The binaries the local substrate runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    pub loadgen: PathBuf,
    pub mesh_proxy: PathBuf,
    pub mesh_control: PathBuf,
    /// `weft init` installs the netns substrate's interception rules.
    pub weft: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("cannot find the bench executable: {0}")]
    CurrentExe(std::io::Error),
    #[error("WEFT_BIN_DIR={dir}: {missing} not found there; build with `cargo build --release --workspace` or fix WEFT_BIN_DIR")]
    MissingInOverride { dir: PathBuf, missing: String },
    #[error("{missing} not found next to bench in {dir}; run `cargo build --release --workspace` (or `cargo run --release --bin bench`, which builds them)")]
    Missing { dir: PathBuf, missing: String },
    #[error("building {what} with `{command}` failed ({status}); see cargo's output above")]
    Build {
        what: String,
        command: String,
        status: String,
    },
    #[error("cannot run cargo ({command}): {source}")]
    Cargo {
        command: String,
        source: std::io::Error,
    },
}

const NAMES: [&str; 4] = ["loadgen", "mesh-proxy", "mesh-control", "weft"];
/// The `cargo build` arguments that produce [`NAMES`]: the whole workspace
/// selected, so cargo unifies every dependency's features exactly as for
/// the `cargo run --bin bench` that built bench (which selects every member
/// too), and only the four binaries' own crates are compiled. Selecting the
/// four packages alone (`-p loadgen -p mesh-proxy ...`) unifies fewer
/// features (rustix, getrandom, crc32fast, ...) and rebuilt a good part of
/// the dependency graph a second time: about 4 minutes of a cold first run.
const TARGETS: [&str; 9] = [
    "--workspace",
    "--bin",
    "loadgen",
    "--bin",
    "mesh-proxy",
    "--bin",
    "mesh-control",
    "--bin",
    "weft",
];

/// Locate the binaries for the running `bench`.
pub fn locate() -> Result<Binaries, BinError> {
    if let Some(dir) = std::env::var_os("WEFT_BIN_DIR") {
        let dir = PathBuf::from(dir);
        let bins = in_dir(&dir);
        if let Some(missing) = missing(&bins) {
            return Err(BinError::MissingInOverride { dir, missing });
        }
        return Ok(bins);
    }
    let exe = std::env::current_exe().map_err(BinError::CurrentExe)?;
    ensure_siblings(&exe)
}

/// The binaries next to `exe`, building them through `$CARGO` when they are
/// missing or older than `exe`.
pub fn ensure_siblings(exe: &Path) -> Result<Binaries, BinError> {
    let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let bins = in_dir(&dir);
    let exe_time = mtime(exe);
    let stale: Vec<&str> = NAMES
        .iter()
        .zip(bins.paths())
        .filter(|(_, p)| match (mtime(p), exe_time) {
            (None, _) => true,
            (Some(t), Some(e)) => t < e,
            (Some(_), None) => false,
        })
        .map(|(n, _)| *n)
        .collect();
    if stale.is_empty() {
        return Ok(bins);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return match missing(&bins) {
            Some(missing) => Err(BinError::Missing { dir, missing }),
            None => {
                eprintln!(
                    "warning: {} older than bench in {}; results may not match the source (run `cargo build --release --workspace`)",
                    stale.join(", "),
                    dir.display()
                );
                Ok(bins)
            }
        };
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build").args(TARGETS);
    if release {
        cmd.arg("--release");
    }
    // Build the workspace bench belongs to, wherever the user's cwd is.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    if manifest.is_file() {
        cmd.arg("--manifest-path").arg(&manifest);
    }
    let command = format!(
        "cargo build {}{}",
        TARGETS.join(" "),
        if release { " --release" } else { "" }
    );
    eprintln!(
        "bench: {} missing or older than bench; running `{command}`",
        stale.join(", ")
    );
    let status = cmd.status().map_err(|source| BinError::Cargo {
        command: command.clone(),
        source,
    })?;
    if !status.success() {
        return Err(BinError::Build {
            what: stale.join(", "),
            command,
            status: status.to_string(),
        });
    }
    match missing(&bins) {
        Some(missing) => Err(BinError::Missing { dir, missing }),
        None => Ok(bins),
    }
}

impl Binaries {
    /// In the order of [`NAMES`].
    fn paths(&self) -> [&PathBuf; 4] {
        [
            &self.loadgen,
            &self.mesh_proxy,
            &self.mesh_control,
            &self.weft,
        ]
    }
}

/// The binaries a build directory holds (or would hold).
pub fn in_dir(dir: &Path) -> Binaries {
    Binaries {
        loadgen: dir.join("loadgen"),
        mesh_proxy: dir.join("mesh-proxy"),
        mesh_control: dir.join("mesh-control"),
        weft: dir.join("weft"),
    }
}

/// The names of those not there, comma separated; `None` when all are.
pub fn missing(b: &Binaries) -> Option<String> {
    let m: Vec<&str> = NAMES
        .iter()
        .zip(b.paths())
        .filter(|(_, p)| !p.is_file())
        .map(|(n, _)| *n)
        .collect();
    (!m.is_empty()).then(|| m.join(", "))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    p.metadata().and_then(|m| m.modified()).ok()
}
