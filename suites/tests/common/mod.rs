//! Helpers shared by the `bench` integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod wire;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `bench` binary under test.
pub fn bench_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench"))
}

/// The directory holding `loadgen`, `mesh-proxy` and `mesh-control` for this `bench`, built
/// through the same module `bench` uses when they are missing or stale.
/// Panics with the reason when they cannot be had.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let bins = suites::bins::ensure_siblings(&bench_exe()).unwrap_or_else(|e| {
            panic!("the integration tests need the loadgen, mesh-proxy and mesh-control binaries: {e} (run `cargo build --workspace` first)")
        });
        bins.loadgen.parent().expect("binary has a dir").to_path_buf()
    })
    .clone()
}

/// A `bench` command that finds its sibling binaries without rebuilding.
pub fn bench() -> Command {
    let mut c = Command::new(bench_exe());
    c.env("WEFT_BIN_DIR", bin_dir());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("bench runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[allow(unused_imports)] // each test binary uses a different subset
pub use weft_testkit::{eventually_for, patience};

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}
