//! Conformance results in reports: the Markdown matrix, the HTML section,
//! rendering a record that has nothing else, and the gate rule that
//! requires every test to pass.

mod common;

use std::fs;

use common::{conformance_only, healthy, test_result};
use reports::compare::Comparison;
use reports::gate::{evaluate, Policy};
use reports::render::{html, markdown, write_all};
use reports::Status;

#[test]
fn markdown_matrix_has_tests_substrates_and_the_reasons_under_it() {
    let r = conformance_only();
    let md = markdown(&Comparison::of(&r));
    assert!(md.contains("## Conformance\n\n| test | GAMMA feature | local | netns |\n| --- | --- | :---: | :---: |\n"), "{md}");
    assert!(md.contains("| `MeshBasic` | MeshBasic | pass | pass |"), "{md}");
    assert!(md.contains("| `MeshClusterIPMatching` | MeshClusterIPMatching | n/a | **FAIL** |"), "{md}");
    assert!(md.contains("| `MtlsByDefault` |  | pass | skipped |"), "{md}");
    assert!(md.contains("- **local**: 2 pass, 0 fail, 1 n/a, 0 skipped (3 tests)"), "{md}");
    assert!(md.contains("- **netns**: 1 pass, 1 FAIL, 0 n/a, 1 skipped (3 tests)"), "{md}");
    assert!(
        md.contains(
            "### Failures (expected vs observed)\n\n- `MeshClusterIPMatching` on netns: wrong backend; \
             expected: backend v2 for path /v2; observed: backend v1 \\| 200\n"
        ),
        "{md}"
    );
    assert!(md.contains("### Not applicable\n\n- `MeshClusterIPMatching` on local: local has no ClusterIP interception\n"), "{md}");
    assert!(md.contains("### Skipped\n\n- `MtlsByDefault` on netns: filtered out by --only\n"), "{md}");
    // No load, so no load legend and a clear note instead of tables.
    assert!(md.starts_with("# Weft conformance report: "), "{md}");
    assert!(md.contains("No load runs in this record"), "{md}");
    assert!(!md.contains("**Added latency**"), "{md}");
    assert!(md.contains("- **Conformance**:"), "{md}");
    assert!(md.contains("- **Substrate:** local, netns"), "{md}");
}

#[test]
fn other_variants_get_their_own_columns() {
    let mut r = conformance_only();
    r.conformance.push(test_result("MeshBasic", "local", "baseline", Status::Fail));
    let md = markdown(&Comparison::of(&r));
    assert!(md.contains("| test | GAMMA feature | local / weft | local / baseline | netns / weft |"), "{md}");
    assert!(md.contains("| `MeshBasic` | MeshBasic | pass | **FAIL** | pass |"), "{md}");
    assert!(md.contains("| `MtlsByDefault` |  | pass | — | skipped |"), "not run there: {md}");
}

#[test]
fn html_has_a_conformance_section() {
    let mut r = conformance_only();
    r.conformance[4].observed = Some("<script>alert(1)</script>".into());
    let page = html(&Comparison::of(&r));
    assert!(page.contains("<h2>Conformance</h2>\n<table class=\"conformance\">"), "{page}");
    assert!(page.contains("<th>local</th><th>netns</th>"), "{page}");
    assert!(page.contains("<tr><td><code>MeshClusterIPMatching</code></td><td>MeshClusterIPMatching</td><td class=\"na\">n/a</td><td class=\"fail\">FAIL</td></tr>"), "{page}");
    assert!(page.contains("<li><strong>netns</strong>: 1 pass, 1 FAIL, 0 n/a, 1 skipped (3 tests)</li>"), "{page}");
    assert!(page.contains("observed: &lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>"));
    assert!(!page.contains("<svg"), "no chart without load runs");
}

/// `bench conformance` writes a record with conformance results only.
#[test]
fn write_all_renders_a_conformance_only_record_without_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_all(&conformance_only(), dir.path()).unwrap();
    assert_eq!(written.latency_png, None);
    let mut names: Vec<String> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["report.html", "report.md"]);
    assert!(written.markdown.contains("| `MeshBasic` | MeshBasic | pass | pass |"));
}

#[test]
fn loads_and_conformance_render_together() {
    let mut r = healthy();
    r.conformance = conformance_only().conformance;
    let md = markdown(&Comparison::of(&r));
    assert!(md.contains("| `weft` |") && md.contains("## Conformance"), "{md}");
    assert!(md.find("## Scenario").unwrap() < md.find("## Conformance").unwrap());
    assert!(md.contains("**Added latency**") && md.contains("**Conformance**"), "both legends: {md}");
}

const REQUIRE_ALL_PASS: &str = r#"
[[rule]]
name = "all conformance tests pass"
metric = "conformance_failures"
max = 0
variants = ["weft"]
"#;

fn gate(policy: &str, r: &reports::Report) -> reports::gate::GateOutcome {
    let policy = Policy::parse(policy, "p.toml").unwrap_or_else(|e| panic!("{e}"));
    evaluate(&policy, &Comparison::of(r), None)
}

#[test]
fn the_gate_passes_when_every_test_passes() {
    let mut r = conformance_only();
    for t in &mut r.conformance {
        if t.status == Status::Fail {
            t.status = Status::Pass;
        }
    }
    let out = gate(REQUIRE_ALL_PASS, &r);
    assert!(out.passed, "{}", out.markdown());
    let rows: Vec<(&str, &str)> = out.rows.iter().map(|r| (r.subject.as_str(), r.measured.as_str())).collect();
    assert_eq!(
        rows,
        [
            ("conformance/local/weft", "0 (2 pass, 0 fail, 1 n/a, 0 skipped)"),
            ("conformance/netns/weft", "0 (2 pass, 0 fail, 0 n/a, 1 skipped)"),
        ]
    );
    assert_eq!(out.rows[0].allowed, "≤ 0");
}

#[test]
fn the_gate_fails_on_a_failed_test_and_names_it() {
    let mut r = conformance_only();
    // A failing `baseline` column is the suite showing it can fail; the rule
    // selects `weft` only.
    r.conformance.push(test_result("MeshBasic", "local", "baseline", Status::Fail));
    let out = gate(REQUIRE_ALL_PASS, &r);
    assert!(!out.passed);
    let failed: Vec<(&str, &str)> = out.failed_rows().map(|r| (r.subject.as_str(), r.measured.as_str())).collect();
    assert_eq!(failed, [("conformance/netns/weft", "1 (1 pass, 1 FAIL, 0 n/a, 1 skipped): MeshClusterIPMatching")]);
    assert!(out.markdown().contains("**Gate FAILED**: 1 of 2 checks failed"), "{}", out.markdown());
}

#[test]
fn the_gate_fails_clearly_without_conformance_results() {
    let out = gate(REQUIRE_ALL_PASS, &healthy());
    assert!(!out.passed);
    assert_eq!(out.rows.len(), 1);
    assert_eq!(
        out.rows[0].measured,
        "no conformance results in this record (run `bench conformance` to make some)"
    );
    // A column where nothing was checked is no pass either.
    let mut r = conformance_only();
    for t in &mut r.conformance {
        t.status = Status::Skipped;
    }
    let out = gate(REQUIRE_ALL_PASS, &r);
    assert!(!out.passed);
    assert!(out.rows.iter().all(|r| !r.passed && r.measured.starts_with("no test passed or failed (0 pass, 0 fail, 0 n/a, 3 skipped)")), "{:?}", out.rows);
    // A variant filter that selects no column says which columns there are.
    let out = gate(&REQUIRE_ALL_PASS.replace("[\"weft\"]", "[\"wfet\"]"), &conformance_only());
    assert!(!out.passed);
    assert_eq!(out.rows[0].measured, "matched nothing (conformance columns: local/weft, netns/weft)");
}

#[test]
fn skipped_tests_can_be_gated_too() {
    let policy = "[[rule]]\nname = \"nothing skipped\"\nmetric = \"conformance_skipped\"\nmax = 0\n";
    let out = gate(policy, &conformance_only());
    let failed: Vec<(&str, &str)> = out.failed_rows().map(|r| (r.subject.as_str(), r.measured.as_str())).collect();
    assert_eq!(failed, [("conformance/netns/weft", "1 (1 pass, 1 FAIL, 0 n/a, 1 skipped): MtlsByDefault")]);
}

#[test]
fn load_filters_on_a_conformance_rule_are_refused_with_their_line() {
    let text = "[[rule]]\nname = \"c\"\nmetric = \"conformance_failures\"\nmax = 0\nrates = [1000]\nmodes = [\"open\"]\n";
    let err = Policy::parse(text, "p.toml").unwrap_err();
    let problems: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        problems,
        [
            "p.toml:5: rule `c`: `rates` does not apply to metric `conformance_failures`; only `variants` selects conformance results",
            "p.toml:6: rule `c`: `modes` does not apply to metric `conformance_failures`; only `variants` selects conformance results",
        ]
    );
}

#[test]
fn the_projects_conformance_gate_loads_and_requires_every_test_to_pass() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/conformance-gate.toml");
    let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&path).unwrap();
    let out = evaluate(&policy, &Comparison::of(&conformance_only()), None);
    assert!(!out.passed, "netns has a failure");
    let mut all_pass = conformance_only();
    all_pass.conformance.retain(|t| t.status != Status::Fail);
    assert!(evaluate(&policy, &Comparison::of(&all_pass), None).passed, "{text}");
    // The release gate (load rules) still loads with its documented metrics.
    assert!(Policy::load(&path.with_file_name("gates.toml")).is_ok());
}
