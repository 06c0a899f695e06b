//! `bench conformance` through the real binaries: the suite passes on
//! `local` (or is not applicable, with the reason), the same tests fail
//! against the no-mesh baseline and with the feature they test switched off
//! in the proxies, and unusable substrates are refused.

mod common;

use std::collections::BTreeMap;

use common::*;
use record::{Status, TestResult};

/// Tests that fail today because of a mesh defect (logged in the team's
/// mesh-defects list with what was sent, expected and observed). Each must
/// still fail: once the mesh is fixed, this test says so and the entry goes.
/// Tests that fail today because of a mesh defect (logged in the team's
/// mesh-defects list with what was sent, expected and observed), as
/// `(test, defect)`. Each must still fail: once the mesh is fixed, this
/// test says so and the entry goes. (MeshConsumerRoute was here until
/// 8c8690d.)
const KNOWN_MESH_DEFECTS: &[(&str, &str)] = &[];

/// Tests `local` cannot express: explicit proxies see no ClusterIP.
const NOT_APPLICABLE_ON_LOCAL: &[&str] = &["MeshFrontendHostname", "MeshClusterIPMatching"];

fn conformance(args: &[&str]) -> (Option<i32>, Vec<TestResult>, String, String) {
    let out = tempfile::tempdir().unwrap();
    let o = run(bench()
        .arg("conformance")
        .args(args)
        .arg("--out")
        .arg(out.path()));
    let results = match out.path().join("report.json").exists() {
        true => {
            let report = reports::io::read_report(&out.path().join("report.json"))
                .expect("a schema-2 report");
            assert_eq!(report.suite, "conformance");
            assert!(report.runs.is_empty());
            for f in ["report.md", "report.html"] {
                assert!(out.path().join(f).is_file(), "{f} written");
            }
            report.conformance
        }
        false => Vec::new(),
    };
    (o.status.code(), results, text(&o.stdout), text(&o.stderr))
}

fn by_name(results: &[TestResult]) -> BTreeMap<&str, &TestResult> {
    results.iter().map(|r| (r.name.as_str(), r)).collect()
}

fn listed_tests() -> Vec<String> {
    let o = run(bench().args(["conformance", "--dry-run"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    text(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("| Mesh"))
        .map(|l| format!("Mesh{}", l.split(' ').next().unwrap()))
        .collect()
}

#[test]
fn every_test_passes_on_local_or_says_why_not() {
    let (code, results, stdout, stderr) = conformance(&["--substrate", "local"]);
    let all = listed_tests();
    assert!(all.len() >= 23, "{all:?}");
    assert_eq!(
        results.len(),
        all.len(),
        "one result per test\n{stdout}{stderr}"
    );
    let results = by_name(&results);
    let mut problems = Vec::new();
    for name in &all {
        let r = results[name.as_str()];
        assert_eq!(
            (r.substrate.as_str(), r.variant.as_str()),
            ("local", "weft")
        );
        let known = KNOWN_MESH_DEFECTS.iter().find(|(n, _)| n == name);
        match (r.status, known) {
            (Status::Pass, None) if !NOT_APPLICABLE_ON_LOCAL.contains(&name.as_str()) => {}
            (Status::NotApplicable, None) if NOT_APPLICABLE_ON_LOCAL.contains(&name.as_str()) => {
                assert!(r.reason.as_deref().is_some_and(|x| x.contains("ClusterIP")), "{r:?}");
            }
            (Status::Fail, Some(_)) => {
                assert!(r.expected.is_some() && r.observed.is_some(), "a failure says what and why: {r:?}");
            }
            (Status::Pass, Some((_, defect))) => problems.push(format!(
                "{name} passes now: the mesh defect ({defect}) is fixed; remove it from KNOWN_MESH_DEFECTS"
            )),
            _ => problems.push(format!(
                "{name}: {} — {}\n  expected: {}\n  observed: {}",
                r.status.as_str(),
                r.reason.as_deref().unwrap_or(""),
                r.expected.as_deref().unwrap_or(""),
                r.observed.as_deref().unwrap_or("")
            )),
        }
        assert!(r.duration_s > 0.0, "{r:?}");
    }
    assert!(problems.is_empty(), "{}\n\n{stdout}", problems.join("\n"));
    let want = if KNOWN_MESH_DEFECTS.is_empty() { 0 } else { 1 };
    assert_eq!(
        code,
        Some(want),
        "exit status 1 exactly when a test fails\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("| MeshHTTPRouteMatching |"),
        "the table is printed: {stdout}"
    );
}

#[test]
fn without_a_mesh_every_routing_test_fails() {
    // Short patience: in baseline nothing will ever become true.
    let (code, results, stdout, stderr) =
        conformance(&["--variant", "baseline", "--patience", "2s"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(results.len(), listed_tests().len(), "{stdout}{stderr}");
    for r in &results {
        assert_eq!(r.variant, "baseline");
        match r.status {
            Status::Fail => assert!(r.expected.is_some() && r.observed.is_some(), "{r:?}"),
            Status::NotApplicable => {
                assert!(NOT_APPLICABLE_ON_LOCAL.contains(&r.name.as_str()), "{r:?}")
            }
            _ => panic!("{} must fail without a mesh: {r:?}", r.name),
        }
    }
}

/// Run the suite with `variant` and require that exactly the tests in
/// `still_pass` pass; every other one fails (or is not applicable on local).
fn only_these_pass(variant: &str, still_pass: &[&str]) {
    let (code, results, stdout, stderr) = conformance(&["--variant", variant, "--patience", "2s"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(results.len(), listed_tests().len(), "{stdout}{stderr}");
    for r in &results {
        assert_eq!(r.variant, variant);
        let want = if still_pass.contains(&r.name.as_str()) {
            Status::Pass
        } else if NOT_APPLICABLE_ON_LOCAL.contains(&r.name.as_str()) {
            Status::NotApplicable
        } else {
            Status::Fail
        };
        assert_eq!(r.status, want, "{} with {variant}: {r:?}", r.name);
    }
}

#[test]
fn with_routes_ignored_every_route_test_fails() {
    // MeshBasic needs no route: delivery and identity still work.
    only_these_pass("weft-no-routes", &["MeshBasic"]);
}

#[test]
fn with_route_timeouts_ignored_the_timeouts_test_fails() {
    let mut others: Vec<String> = listed_tests();
    others
        .retain(|n| n != "MeshHTTPRouteTimeouts" && !NOT_APPLICABLE_ON_LOCAL.contains(&n.as_str()));
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    only_these_pass("weft-no-timeouts", &others);
}

#[test]
fn kind_is_refused_but_lists_its_tests() {
    let o = run(bench().args(["conformance", "--substrate", "kind"]));
    assert_eq!(o.status.code(), Some(64));
    assert!(
        text(&o.stderr).contains("the kind substrate does not exist yet"),
        "{}",
        text(&o.stderr)
    );
    let o = run(bench().args([
        "conformance",
        "--substrate",
        "kind",
        "--dry-run",
        "--only",
        "Redirect",
    ]));
    assert_eq!(o.status.code(), Some(0));
    let listed = text(&o.stdout);
    assert!(
        listed.contains("MeshHTTPRouteRedirectPath") && !listed.contains("MeshBasic"),
        "{listed}"
    );
    assert!(listed.contains("does not exist yet"), "{listed}");
    let o = run(bench().args(["conformance", "--only", "NoSuchTest"]));
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o.stderr).contains("NoSuchTest"));
}

/// Direct children of `pid`: (pid, start time, command name).
fn children(pid: u32) -> Vec<(i32, u64, String)> {
    procfs::process::all_processes()
        .unwrap()
        .flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.ppid == pid as i32)
        .map(|s| (s.pid, s.starttime, s.comm))
        .collect()
}

#[test]
fn sigint_mid_test_stops_every_process_and_writes_nothing() {
    use nix::sys::signal::{kill, Signal};
    let out = tempfile::tempdir().unwrap();
    let results = out.path().join("results");
    let mut child = bench()
        .args(["conformance", "--only", "MeshHTTPRouteTimeouts", "--out"])
        .arg(&results)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = eventually_for(
        "bench conformance to start a control plane and sidecars",
        patience(),
        || {
            let kids = children(child.id());
            let has = |c: &str| kids.iter().any(|(_, _, comm)| comm == c);
            (has("mesh-control") && has("mesh-proxy") && has("loadgen")).then_some(kids)
        },
    );
    kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = eventually_for("bench to exit after SIGINT", patience(), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(130), "Ctrl-C exits 130");
    eventually_for("every process of the test to be gone", patience(), || {
        let alive: Vec<_> = started
            .iter()
            .filter(|(pid, start, _)| {
                procfs::process::Process::new(*pid)
                    .and_then(|p| p.stat())
                    .is_ok_and(|s| s.starttime == *start && s.state != 'Z')
            })
            .collect();
        alive.is_empty().then_some(())
    });
    assert!(
        !results.join("report.json").exists(),
        "an interrupted run writes no results"
    );
}

#[test]
fn netns_needs_root() {
    let o = run(bench().args(["conformance", "--substrate", "netns", "--only", "MeshBasic"]));
    if nix::unistd::geteuid().is_root() {
        // Until the netns substrate deploys conformance topologies, it says
        // so and fails; when it does, this becomes the netns suite run.
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("does not implement conformance topologies yet"),
            "{}",
            text(&o.stderr)
        );
        return;
    }
    assert_eq!(o.status.code(), Some(77), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("needs root"),
        "{}",
        text(&o.stderr)
    );
}
