//! The stored baselines in ci/baselines/ (schema 1) still load, migrate and
//! gate with the project's policy: CI compares every change against them.

use std::path::{Path, PathBuf};

use reports::compare::Comparison;
use reports::gate::{evaluate, Policy};
use reports::io::read_report;

fn baselines() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/baselines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no stored baselines in {}", dir.display());
    files
}

#[test]
fn every_stored_baseline_loads_and_gates_against_itself() {
    let policy = Policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/gates.toml")).unwrap();
    for path in baselines() {
        let report = read_report(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.schema, reports::SCHEMA_VERSION, "{}: migrated", path.display());
        assert!(!report.runs.is_empty(), "{}: no runs", path.display());
        let cmp = Comparison::of(&report);
        let out = evaluate(&policy, &cmp, Some(&cmp));
        // Every regression rule is checked (a baseline against itself: +0 %),
        // nothing matches nothing, and the gate passes.
        assert!(out.passed, "{}:\n{}", path.display(), out.markdown());
        assert!(out.rows.iter().all(|r| !r.skipped), "{}:\n{}", path.display(), out.markdown());
        for r in out.rows.iter().filter(|r| r.rule.contains("regression")) {
            assert!(r.measured == "+0.0%" || r.measured == "-0.0%", "{}: {r:?}", path.display());
        }
        // And it renders.
        let md = reports::render::markdown(&cmp);
        assert!(md.contains("| `weft` |"), "{}:\n{md}", path.display());
    }
}
