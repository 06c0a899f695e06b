mod common;

use std::path::Path;

use common::{healthy, report, run, MIB};
use reports::compare::Comparison;
use reports::gate::{GateOutcome, Policy, PolicyError};
use reports::Report;

/// The gate over a record (and a stored one), each compared once.
fn evaluate(policy: &Policy, current: &Report, stored: Option<&Report>) -> GateOutcome {
    let stored = stored.map(Comparison::of);
    reports::gate::evaluate(policy, &Comparison::of(current), stored.as_ref())
}

const POLICY: &str = r#"
[[rule]]
name = "added p50"
metric = "added_p50_ms"
max = 1.0
variants = ["weft", "weft-client-only"]

[[rule]]
name = "rss"
metric = "proxy_rss_mib"
max = 32

[[rule]]
name = "p50 regression"
metric = "regression_p50_pct"
max = 25.0
variants = ["weft"]
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "test.toml").unwrap()
}

#[test]
fn healthy_record_passes_with_regressions_skipped_without_baseline() {
    let out = evaluate(&policy(), &healthy(), None);
    assert!(out.passed, "{}", out.markdown());
    // 2 rates x 2 variants for added p50; 2 rates x 3 proxied variants for rss.
    assert_eq!(out.rows.iter().filter(|r| r.rule == "added p50" && r.passed).count(), 4);
    assert_eq!(out.rows.iter().filter(|r| r.rule == "rss" && r.passed).count(), 6);
    let reg: Vec<_> = out.rows.iter().filter(|r| r.rule == "p50 regression").collect();
    assert_eq!(reg.len(), 1);
    assert!(reg[0].skipped && !reg[0].passed, "regression rule must be skipped, not passed");
    assert_eq!(reg[0].measured, "skipped (no baseline given)");
    let md = out.markdown();
    assert!(md.contains("**Gate PASSED**"), "{md}");
    assert!(md.contains("skipped (no baseline given)"));
}

#[test]
fn bad_record_fails_exactly_the_bad_rows() {
    let mut r = healthy();
    for run in r.runs.iter_mut().filter(|x| x.variant == "weft" && x.load.rate == Some(1000.0)) {
        // 2.2 ms median: about 2 ms added.
        *run = common::run("http1-small", "weft", 1000.0, run.repetition, 2200);
    }
    for run in r.runs.iter_mut().filter(|x| x.variant == "nginx" && x.load.rate == Some(500.0)) {
        run.resources[1].rss_peak_bytes = 40 * MIB;
    }
    let out = evaluate(&policy(), &r, None);
    assert!(!out.passed);
    let failed: Vec<(String, String)> = out.failed_rows().map(|r| (r.rule.clone(), r.subject.clone())).collect();
    assert_eq!(
        failed,
        vec![
            ("added p50".to_owned(), "http1-small/weft/1000 rps".to_owned()),
            ("rss".to_owned(), "http1-small/nginx/500 rps".to_owned()),
        ]
    );
    let row = out.failed_rows().next().unwrap();
    assert!(row.measured.starts_with("+1.") || row.measured.starts_with("+2."), "{}", row.measured);
    assert_eq!(row.allowed, "≤ +1.000 ms");
    let md = out.markdown();
    assert!(md.contains("**Gate FAILED**: 2 of"), "{md}");
    assert!(md.find("**FAIL**").unwrap() < md.find("| pass |").unwrap(), "failures listed first");
}

#[test]
fn regression_rules_use_the_stored_baseline() {
    let stored = healthy();
    let mut current = healthy();
    for run in current.runs.iter_mut().filter(|x| x.variant == "weft" && x.load.rate == Some(500.0)) {
        *run = common::run("http1-small", "weft", 500.0, run.repetition, 400); // +60 % p50
    }
    let out = evaluate(&policy(), &current, Some(&stored));
    let reg: Vec<_> = out.rows.iter().filter(|r| r.rule == "p50 regression").collect();
    assert_eq!(reg.len(), 2);
    assert!(reg.iter().all(|r| !r.skipped));
    let bad = reg.iter().find(|r| r.subject == "http1-small/weft/500 rps").unwrap();
    assert!(!bad.passed, "{bad:?}");
    let good = reg.iter().find(|r| r.subject == "http1-small/weft/1000 rps").unwrap();
    assert!(good.passed && good.measured == "+0.0%", "{good:?}");
    assert!(!out.passed);
}

#[test]
fn a_rule_matching_nothing_fails() {
    let p = Policy::parse(
        "[[rule]]\nname = \"typo\"\nmetric = \"p50_ms\"\nmax = 10\nvariants = [\"wfet\"]\n",
        "p.toml",
    )
    .unwrap();
    let out = evaluate(&p, &healthy(), None);
    assert!(!out.passed);
    assert_eq!(out.rows.len(), 1);
    assert_eq!(out.rows[0].measured, "matched nothing");
    assert_eq!(out.rows[0].subject, "variants wfet");
}

#[test]
fn only_skipped_rows_is_not_a_pass() {
    let p = Policy::parse("[[rule]]\nname = \"r\"\nmetric = \"regression_p99_pct\"\nmax = 10\n", "p.toml").unwrap();
    let out = evaluate(&p, &healthy(), None);
    assert!(out.rows.iter().all(|r| r.skipped));
    assert!(!out.passed, "a gate that checked nothing must not pass");
}

#[test]
fn missing_baseline_in_group_and_missing_proxy_fail_loudly() {
    let mut no_proxy = run("s", "weft", 1000.0, 0, 300);
    no_proxy.resources.truncate(1);
    let r = report(vec![no_proxy]);
    let p = Policy::parse(
        "[[rule]]\nname = \"a\"\nmetric = \"added_p50_ms\"\nmax = 1\n[[rule]]\nname = \"m\"\nmetric = \"proxy_rss_mib\"\nmax = 1\n",
        "p.toml",
    )
    .unwrap();
    let out = evaluate(&p, &r, None);
    let measured: Vec<&str> = out.rows.iter().map(|r| r.measured.as_str()).collect();
    assert_eq!(measured, vec!["no baseline variant in this group", "no proxy resources sampled"]);
    assert!(!out.passed);
}

fn problems(text: &str) -> Vec<String> {
    match Policy::parse(text, "gates.toml") {
        Err(e @ PolicyError::Invalid { .. }) => e.to_string().lines().map(str::to_owned).collect(),
        other => panic!("expected a policy error, got {other:?}"),
    }
}

#[test]
fn toml_syntax_error_names_its_line() {
    let p = problems("[[rule]]\nname = \"a\"\nmetric = \"p50_ms\"\nmax = = 3\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("gates.toml:4: invalid TOML"), "{p:?}");
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "\
# comment
[[rule]]
name = \"a\"
metric = \"added_p50_msec\"
max = 1.0

[[rule]]
name = \"b\"
metric = \"p99_ms\"
maximum = 3
variants = \"weft\"

[[rule]]
name = \"c\"
metric = \"p50_ms\"
max = \"1ms\"
modes = [\"half-open\"]
";
    let p = problems(text);
    let expect = [
        "gates.toml:4: unknown metric `added_p50_msec`",
        "gates.toml:7: rule `b` is missing `max`",
        "gates.toml:10: unknown key `maximum`",
        "gates.toml:11: `variants` must be an array, got string",
        "gates.toml:16: `max` must be a number, got string",
        "gates.toml:17: unknown mode `half-open`",
    ];
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    for (got, want) in p.iter().zip(expect) {
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
}

#[test]
fn empty_policy_is_refused() {
    let p = problems("# nothing here\n");
    assert!(p[0].contains("no [[rule]] entries"), "{p:?}");
    let p = problems("[limits]\nx = 1\n");
    assert!(p[0].starts_with("gates.toml:1: unknown top-level key `limits`"), "{p:?}");
}

#[test]
fn the_projects_policy_loads_and_passes_a_healthy_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/gates.toml");
    let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(policy.rules.len() >= 6);
    let out = evaluate(&policy, &healthy(), None);
    assert!(out.passed, "{}", out.markdown());
    assert!(out.rows.iter().any(|r| r.skipped), "regression rules are skipped without a baseline");
}

#[test]
fn load_reports_a_missing_file() {
    let err = Policy::load(Path::new("/nonexistent/gates.toml")).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/gates.toml: cannot read"), "{err}");
}

mod same_run {
    use super::common::{report, run};
    use reports::gate::same_run::{judge, GateVerdict, SameRunError, SameRunTest};
    use reports::Report;

    /// Six alternating rounds of `weft@base` and `weft@candidate` with these p50s.
    fn rounds(base: [u64; 6], candidate: [u64; 6]) -> Report {
        let mut runs = Vec::new();
        for (r, (b, c)) in base.into_iter().zip(candidate).enumerate() {
            let (b, c) = (run("h1", "weft@base", 500.0, r as u32, b), run("h1", "weft@candidate", 500.0, r as u32, c));
            if r % 2 == 0 {
                runs.extend([b, c]);
            } else {
                runs.extend([c, b]);
            }
        }
        report(runs)
    }

    #[test]
    fn builds_within_each_others_noise_pass() {
        let r = rounds([300, 310, 305, 298, 302, 307], [303, 299, 309, 301, 300, 306]);
        let o = judge(&r, &SameRunTest::default()).unwrap();
        assert!(o.passed, "{}", o.text());
        let p50 = o.rows.iter().find(|r| r.metric == reports::diff::Metric::P50Us).unwrap();
        assert_eq!((p50.id.variant.as_str(), p50.verdict), ("weft", GateVerdict::WithinNoise));
        assert!(o.text().contains("PASSED"), "{}", o.text());
    }

    #[test]
    fn a_clearly_slower_candidate_fails_and_a_small_sure_one_does_not() {
        // +100 us on ~300 us in every round: beyond the noise and the 5 % margin.
        let slow = rounds([300, 310, 305, 298, 302, 307], [400, 412, 405, 399, 404, 408]);
        let o = judge(&slow, &SameRunTest::default()).unwrap();
        assert!(!o.passed, "{}", o.text());
        let p50 = o.rows.iter().find(|r| r.metric == reports::diff::Metric::P50Us).unwrap();
        assert_eq!(p50.verdict, GateVerdict::Regression, "{}", o.text());
        let (low, _) = p50.judgement.as_ref().unwrap().interval.unwrap();
        assert!(low > p50.margin.unwrap());
        assert!(o.text().contains("REGRESSION") && o.text().contains("FAILED"), "{}", o.text());
        // +3 % in every round: surely worse, but under the 5 % (20 us) margin.
        let small = rounds([300, 301, 302, 300, 301, 302], [309, 310, 311, 309, 310, 311]);
        let o = judge(&small, &SameRunTest::default()).unwrap();
        assert!(o.passed, "{}", o.text());
        assert_eq!(o.rows[0].verdict, GateVerdict::WorseUnderMargin, "{}", o.text());
    }

    #[test]
    fn a_failed_or_unpaired_candidate_fails_and_a_record_without_builds_is_bad_input() {
        let mut r = rounds([300; 6], [300; 6]);
        r.skipped.push(reports::Skipped { scenario: "h1".into(), variant: "weft@candidate".into(), reason: "failed: proxy exited".into() });
        let o = judge(&r, &SameRunTest::default()).unwrap();
        assert!(!o.passed && o.failed.len() == 1, "{}", o.text());

        let mut r = rounds([300; 6], [300; 6]);
        r.runs.extend((0..3).map(|i| run("h1", "weft@base", 1000.0, i, 300)));
        let o = judge(&r, &SameRunTest::default()).unwrap();
        assert!(!o.passed && o.unpaired.len() == 1, "{}", o.text());

        assert!(matches!(judge(&super::common::healthy(), &SameRunTest::default()), Err(SameRunError::NoPairs)));
        let two = report((0..2).flat_map(|i| [run("h1", "weft@base", 500.0, i, 300), run("h1", "weft@candidate", 500.0, i, 300)]).collect());
        assert!(matches!(judge(&two, &SameRunTest::default()), Err(SameRunError::NothingJudged { .. })));
    }
}
