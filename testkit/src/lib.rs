//! Test-only helpers shared by Weft's crates: a network namespace that a
//! root test creates, works in, and always removes; and waiting for
//! something that should happen ([`eventually`]).
#![forbid(unsafe_code)]

mod wait;
pub use wait::{eventually, eventually_async, eventually_for, patience};

/// What the criterion benches share.
#[cfg(feature = "bench")]
pub mod bench {
    use criterion::Criterion;

    /// `calibrate/sort_1000`: fixed work (sorting 1,000 pseudo-random
    /// `u64`s) that `ci/microbench` divides every other figure of the same
    /// bench executable by, so a stored baseline holds across machines of
    /// different speed and across a busy or quiet moment.
    pub fn calibrate(c: &mut Criterion) {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u64> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect();
        c.bench_function("calibrate/sort_1000", |b| {
            b.iter_batched_ref(|| data.clone(), |v| v.sort_unstable(), criterion::BatchSize::SmallInput)
        });
    }
}

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Fail a root-only test at once, saying why (never pass silently).
#[track_caller]
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root: it creates network namespaces and iptables rules (CI runs as root)"
    );
}

/// A network namespace `weft-t<pid>-<what>`, removed with every process in
/// it when dropped (also when the test panics). Names never parse as a
/// bench run's (`weft-<pid>-<start>-...`), so `bench clean` leaves them be.
#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    /// Create it (replacing one a crashed earlier run with the same pid
    /// left) with loopback up.
    pub fn new(what: &str) -> TestNetns {
        let name = format!("weft-t{}-{what}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ok("ip", &["netns", "add", &name]);
        let ns = TestNetns { name };
        run_ok("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`: what `setns` opens.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread inside this namespace; sockets it makes stay in
    /// the namespace after it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns into the test namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip netns exec <name> program args`, to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Run a tool, panicking with its stderr unless it succeeds; its stdout.
#[track_caller]
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
