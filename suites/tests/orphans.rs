//! No child of `bench` survives it: not on Ctrl-C, not even on SIGKILL, and
//! no half-written output is left behind either way.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Long enough that the test always interrupts it mid-cell; nginx first so
/// a master *and* its forked worker exist when we strike, and `weft` so the
/// scenario's control plane (mesh-control) is running too.
const LONG: &str = r#"
name = "long"
[defaults]
duration = "120s"
warmup = "1s"
connections = 2
variants = ["nginx", "weft", "baseline"]
[[scenario]]
name = "h1"
rates = [50]
"#;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProcId {
    pid: i32,
    start: u64,
    comm: String,
}

fn snapshot() -> Vec<(ProcId, i32)> {
    procfs::process::all_processes()
        .unwrap()
        .flatten()
        .filter_map(|p| p.stat().ok())
        .map(|s| {
            (
                ProcId {
                    pid: s.pid,
                    start: s.starttime,
                    comm: s.comm,
                },
                s.ppid,
            )
        })
        .collect()
}

/// Every live process below `root`.
fn descendants(root: i32) -> Vec<ProcId> {
    let all = snapshot();
    let mut kids: HashMap<i32, Vec<ProcId>> = HashMap::new();
    for (p, ppid) in all {
        kids.entry(ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for k in kids.get(&pid).cloned().unwrap_or_default() {
            stack.push(k.pid);
            out.push(k);
        }
    }
    out
}

/// Alive = same process (start time) and not a zombie waiting for init.
fn alive(p: &ProcId) -> bool {
    match procfs::process::Process::new(p.pid).and_then(|x| x.stat()) {
        Ok(s) => s.starttime == p.start && s.state != 'Z',
        Err(_) => false,
    }
}

struct Started {
    child: Child,
    tree: Vec<ProcId>,
    work_dir: PathBuf,
    out: PathBuf,
    _tmp: tempfile::TempDir,
}

/// `bench run` of `suite` (written into `dir`), quiet; its child and the
/// results directory it was given.
fn spawn_run(dir: &Path, suite: &str) -> (Child, PathBuf) {
    let suite = write(dir, "long.toml", suite);
    let out = dir.join("results");
    let child = bench()
        .args(["run", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, out)
}

/// Start the long suite and wait until the server, the control plane, an
/// nginx master with its worker, and the watchdog are all running; record
/// the whole tree.
fn start_long_run() -> Started {
    let tmp = tempfile::tempdir().unwrap();
    let (child, out) = spawn_run(tmp.path(), LONG);
    let root = child.id() as i32;
    let tree = eventually_for(
        "bench to start the server, control plane, nginx master and worker",
        patience(),
        || {
            let tree = descendants(root);
            let nginx = tree.iter().filter(|p| p.comm == "nginx").count();
            let server = tree.iter().any(|p| p.comm == "loadgen");
            let control = tree.iter().any(|p| p.comm == "mesh-control");
            (nginx >= 2 && server && control).then_some(tree)
        },
    );
    // nginx rewrites its title: "nginx: master process /usr/sbin/nginx -p <work dir>/nginx-N ...".
    let cmdline = |p: &ProcId| {
        procfs::process::Process::new(p.pid)
            .and_then(|x| x.cmdline())
            .unwrap_or_default()
            .join(" ")
    };
    let master = tree
        .iter()
        .find(|p| p.comm == "nginx" && cmdline(p).contains("master process"))
        .expect("nginx master");
    let title = cmdline(master);
    let prefix = title
        .split_whitespace()
        .skip_while(|a| *a != "-p")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let work_dir = Path::new(&prefix)
        .parent()
        .unwrap_or_else(|| panic!("nginx -p points into the work dir: {title}"))
        .to_path_buf();
    assert!(
        work_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("weft-bench-"),
        "{work_dir:?}"
    );
    // The pid file lists every direct child of the run.
    let pids = std::fs::read_to_string(work_dir.join("pids")).unwrap();
    for p in tree.iter().filter(|p| {
        p.comm == "loadgen"
            || p.comm == "mesh-control"
            || (p.comm == "nginx" && p.pid == master.pid)
    }) {
        assert!(
            pids.lines().any(|l| l.starts_with(&format!("{} ", p.pid))),
            "{p:?} missing from pid file:\n{pids}"
        );
    }
    Started {
        child,
        tree,
        work_dir,
        out,
        _tmp: tmp,
    }
}

impl Drop for Started {
    /// A failed assertion must not leave a two-minute run behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn assert_nothing_left(s: &Started) {
    eventually_for("every process bench started to be gone", patience(), || {
        let left: Vec<_> = s.tree.iter().filter(|p| alive(p)).collect();
        left.is_empty().then_some(())
    });
    eventually_for("the run's work dir to be removed", patience(), || {
        (!s.work_dir.exists()).then_some(())
    });
    assert!(
        !s.out.exists(),
        "an interrupted run must not leave an output dir"
    );
    let parent = s.out.parent().unwrap();
    let partial: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(partial.is_empty(), "half-written output left: {partial:?}");
}

#[test]
fn sigkill_of_bench_leaves_no_process_and_no_output() {
    let mut s = start_long_run();
    kill(Pid::from_raw(s.child.id() as i32), Signal::SIGKILL).unwrap();
    s.child.wait().unwrap();
    assert_nothing_left(&s);
}

#[test]
fn sigint_stops_every_child_and_writes_nothing() {
    let mut s = start_long_run();
    kill(Pid::from_raw(s.child.id() as i32), Signal::SIGINT).unwrap();
    let status = eventually_for("bench to exit after SIGINT", patience(), || {
        s.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(130), "Ctrl-C exits 130");
    assert_nothing_left(&s);
}

#[test]
fn sigterm_stops_every_child_and_writes_nothing() {
    let mut s = start_long_run();
    kill(Pid::from_raw(s.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = eventually_for("bench to exit after SIGTERM", patience(), || {
        s.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(143), "SIGTERM exits 143");
    assert_nothing_left(&s);
}

/// So many edits that the test always strikes mid-measurement.
const LONG_PROPAGATION: &str = r#"
name = "long-propagation"
[[scenario]]
name = "p"
mode = "propagation"
services = 2000
endpoints = 2000
changes = 2000
"#;

/// A propagation cell's harness runs in a `bench __propagation` child with
/// its own mesh-control and scratch manifests: SIGKILL of bench takes both.
#[test]
fn sigkill_during_propagation_leaves_no_control_plane_and_no_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, out) = spawn_run(tmp.path(), LONG_PROPAGATION);
    let root = child.id() as i32;
    let (tree, control) = eventually_for(
        "bench to start the propagation harness and its mesh-control",
        patience(),
        || {
            let tree = descendants(root);
            let control = tree.iter().find(|p| p.comm == "mesh-control")?.clone();
            Some((tree, control))
        },
    );
    let cmdline = procfs::process::Process::new(control.pid)
        .and_then(|x| x.cmdline())
        .unwrap_or_default();
    let manifests = cmdline
        .iter()
        .skip_while(|a| *a != "--manifests")
        .nth(1)
        .unwrap_or_else(|| panic!("mesh-control runs with --manifests: {cmdline:?}"));
    // <work dir>/propagation-N/<harness scratch>/manifests
    let work_dir = Path::new(manifests)
        .ancestors()
        .find(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("weft-bench-"))
        })
        .unwrap_or_else(|| {
            panic!("the harness's scratch is inside the run's work dir: {manifests}")
        })
        .to_path_buf();
    let mut s = Started {
        child,
        tree,
        work_dir,
        out,
        _tmp: tmp,
    };
    kill(Pid::from_raw(root), Signal::SIGKILL).unwrap();
    s.child.wait().unwrap();
    assert_nothing_left(&s);
    assert!(!alive(&control), "{control:?}");
}
