//! `bench report` and `bench gate` on records `bench run` did not just make:
//! a conformance-only record (what `bench conformance` writes) and a stored
//! schema-1 record, through the real binary.

mod common;

use std::path::Path;

use common::*;
use record::{Env, Report, Status, TestResult};

fn result(name: &str, substrate: &str, status: Status) -> TestResult {
    TestResult {
        name: name.into(),
        feature: Some(name.into()),
        substrate: substrate.into(),
        variant: "weft".into(),
        status,
        duration_s: 0.8,
        reason: (status != Status::Pass).then(|| "the weighted split was 70/30".into()),
        expected: (status == Status::Fail).then(|| "90/10 within 5 %".into()),
        observed: (status == Status::Fail).then(|| "70/30".into()),
    }
}

fn conformance_record(dir: &Path, statuses: [Status; 2]) {
    let env = Env { host: "h".into(), cores: 2, kernel: "k".into(), git_rev: "r".into(), ..Env::default() };
    let mut report = Report::new("conformance", "2026-12-06T17:00:00Z", env);
    report.conformance = vec![
        result("MeshBasic", "local", statuses[0]),
        result("MeshHTTPRouteWeight", "local", statuses[1]),
    ];
    reports::io::write_report_json(&report, &dir.join("report.json")).unwrap();
}

const REQUIRE_ALL_PASS: &str =
    "[[rule]]\nname = \"conformance\"\nmetric = \"conformance_failures\"\nmax = 0\nvariants = [\"weft\"]\n";

fn gate(results: &Path, policy: &Path) -> (Option<i32>, String) {
    let o = run(bench().arg("gate").arg("--policy").arg(policy).arg(results));
    (o.status.code(), format!("{}{}", text(&o.stdout), text(&o.stderr)))
}

#[test]
fn a_conformance_only_record_renders_and_gates() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", REQUIRE_ALL_PASS);
    let out = dir.path().join("results");
    std::fs::create_dir(&out).unwrap();

    conformance_record(&out, [Status::Pass, Status::Fail]);
    let o = run(bench().arg("report").arg(&out));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(text(&o.stdout).trim_end(), md.trim_end(), "prints what it wrote");
    assert!(md.contains("| `MeshHTTPRouteWeight` | MeshHTTPRouteWeight | **FAIL** |"), "{md}");
    assert!(md.contains("expected: 90/10 within 5 %; observed: 70/30"), "{md}");
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("<h2>Conformance</h2>"));
    assert!(!out.join("latency.png").exists(), "no chart without load runs");

    let (code, said) = gate(&out, &policy);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("| **FAIL** | conformance | conformance/local/weft | 1 (1 pass, 1 FAIL, 0 n/a, 0 skipped): MeshHTTPRouteWeight | ≤ 0 |"), "{said}");

    conformance_record(&out, [Status::Pass, Status::Pass]);
    let (code, said) = gate(&out, &policy);
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn the_conformance_rule_fails_a_record_without_conformance_results() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", REQUIRE_ALL_PASS);
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/baselines/ci-local.json");
    let (code, said) = gate(&baseline, &policy);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("no conformance results in this record"), "{said}");
}

/// The stored baselines are schema 1: `bench report` renders one (migrated
/// in memory; the file itself is left as it is) and `bench gate` checks it.
#[test]
fn a_stored_schema_1_record_renders_and_gates() {
    let stored = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/baselines/ci-local.json");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("report.json");
    std::fs::copy(&stored, &copy).unwrap();
    let o = run(bench().arg("report").arg(dir.path()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("| `weft` |"), "{}", text(&o.stdout));
    assert!(dir.path().join("latency.png").exists());
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&stored).unwrap(), "the record is not rewritten");

    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/gates.toml");
    let o = run(bench().arg("gate").arg("--policy").arg(&policy).arg("--baseline").arg(&stored).arg(&copy));
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("**Gate PASSED**"), "{}", text(&o.stdout));
}
