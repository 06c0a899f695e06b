mod common;

use common::{report, run, MIB};
use reports::compare::{Cell, Comparison};
use reports::Report;

fn cells(r: &Report) -> Vec<Cell> {
    Comparison::of(r).cells
}

#[test]
fn medians_over_repetitions_and_totals() {
    let mut runs = vec![
        run("s", "weft", 1000.0, 0, 100),
        run("s", "weft", 1000.0, 1, 300),
        run("s", "weft", 1000.0, 2, 200),
    ];
    runs[1].resources[1].rss_peak_bytes = 30 * MIB;
    runs[2].load.errors = 7;
    let expected_p50 = runs[2].load.latency_us.p50;
    let expected_requests: u64 = runs.iter().map(|r| r.load.requests).sum();
    let c = cells(&report(runs));
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!(c.repetitions, 3);
    assert_eq!(c.latency_us.p50, expected_p50, "median repetition is the one with p50 ≈ 200 µs");
    assert_eq!(c.requests, expected_requests);
    assert_eq!(c.errors, 7);
    assert_eq!(c.proxy_rss_peak, Some(30 * MIB), "peak RSS is the worst repetition");
    let cpu = c.proxy_cpu_per_krps.unwrap();
    assert!((cpu - 0.2).abs() < 1e-9, "cpu per krps {cpu}");
    assert_eq!(c.run_indices, vec![0, 1, 2]);
}

#[test]
fn added_latency_is_against_the_same_groups_baseline() {
    let runs = vec![
        run("s", "weft", 1000.0, 0, 250),
        run("s", "baseline", 1000.0, 0, 200),
        run("s", "weft", 2000.0, 0, 400), // no baseline at 2000 rps
        run("s", "baseline", 500.0, 0, 100),
    ];
    let (weft_p50, base_p50) = (runs[0].load.latency_us.p50, runs[1].load.latency_us.p50);
    let (weft_p99, base_p99) = (runs[0].load.latency_us.p99, runs[1].load.latency_us.p99);
    let c = cells(&report(runs));
    let at = |v: &str, rate: f64| c.iter().find(|c| c.variant == v && c.rate == Some(rate)).unwrap();
    let w = at("weft", 1000.0);
    assert_eq!(w.added_p50_us, Some(weft_p50 - base_p50));
    assert_eq!(w.added_p99_us, Some(weft_p99 - base_p99));
    assert!((w.ratio_p50.unwrap() - weft_p50 / base_p50).abs() < 1e-12);
    assert!(w.added_p50_us.unwrap() > 30.0 && w.added_p50_us.unwrap() < 70.0);
    assert_eq!(at("baseline", 1000.0).added_p50_us, None, "the baseline adds nothing to itself");
    assert_eq!(at("weft", 2000.0).added_p50_us, None, "no baseline in that group");
    assert_eq!(at("weft", 2000.0).ratio_p99, None);
}

#[test]
fn order_is_baseline_then_weft_then_peers_and_rising_rate() {
    let runs = vec![
        run("s", "nginx", 1000.0, 0, 300),
        run("s", "weft-client-only", 1000.0, 0, 230),
        run("s", "baseline", 1000.0, 0, 200),
        run("s", "weft", 1000.0, 0, 250),
        run("s", "baseline", 500.0, 0, 200),
    ];
    let order: Vec<(String, f64)> = cells(&report(runs)).iter().map(|c| (c.variant.clone(), c.rate.unwrap())).collect();
    let expect = [("baseline", 500.0), ("baseline", 1000.0), ("weft-client-only", 1000.0), ("weft", 1000.0), ("nginx", 1000.0)];
    assert_eq!(order, expect.iter().map(|(v, r)| (v.to_string(), *r)).collect::<Vec<_>>());
}

#[test]
fn versus_stored_reports_percent_changes_for_matching_cells() {
    let stored = report(vec![run("s", "weft", 1000.0, 0, 200), run("s", "weft", 3000.0, 0, 200)]);
    let mut slower = run("s", "weft", 1000.0, 0, 300);
    slower.resources[1].rss_peak_bytes = 15 * MIB;
    let current = report(vec![slower, run("s", "nginx", 1000.0, 0, 200)]);
    let regs = Comparison::of(&current).versus(&Comparison::of(&stored));
    assert_eq!(regs.len(), 1, "only weft@1000 is in both records");
    let r = &regs[0];
    assert_eq!(reports::compare::subject(&r.id), "s/weft/1000 rps");
    let p50 = r.p50_us.pct().unwrap();
    assert!(p50 > 40.0 && p50 < 60.0, "p50 change {p50}");
    assert!((r.proxy_rss_bytes.unwrap().pct().unwrap() - 50.0).abs() < 1e-9);
    assert!(r.proxy_cpu_per_krps.unwrap().pct().unwrap().abs() < 1e-9);
}

#[test]
fn groups_hold_each_load_once_in_display_order() {
    let r = report(vec![
        run("s", "weft", 1000.0, 0, 250),
        run("s", "baseline", 1000.0, 0, 200),
        run("s", "weft", 500.0, 0, 240),
        run("s", "weft", 1000.0, 1, 260),
    ]);
    let cmp = Comparison::of(&r);
    let groups = cmp.groups();
    let shape: Vec<(Option<f64>, Vec<&str>)> =
        groups.iter().map(|(k, cells)| (k.rate, cells.iter().map(|c| c.variant.as_str()).collect())).collect();
    assert_eq!(shape, vec![(Some(500.0), vec!["weft"]), (Some(1000.0), vec!["baseline", "weft"])]);
    let weft = groups[1].1[1];
    let reps: Vec<u32> = cmp.runs_of(weft).map(|run| run.repetition).collect();
    assert_eq!(reps, [0, 1]);
}

/// `bench compare`'s difference of two records: the same record is within
/// noise everywhere; a copy with one cell's latency doubled is slower there
/// and only there.
#[test]
fn record_diff_flags_only_the_slowed_cell() {
    use reports::diff::{Metric, RecordDiff};
    use reports::noise::{Bootstrap, Verdict};
    let base = common::healthy();
    let test = Bootstrap::default();
    let same = RecordDiff::of(&base, &base, &test).unwrap();
    assert_eq!(same.cells.len(), 8, "4 variants x 2 rates");
    assert!(!same.any_worse());
    for c in &same.cells {
        for m in &c.metrics {
            match &m.judgement {
                Some(j) => assert_eq!(j.verdict, Verdict::WithinNoise, "{} {:?}", c.subject, m.metric),
                None => assert!(c.id.variant == "baseline" && matches!(m.metric, Metric::ProxyCpuPerKrps | Metric::ProxyRssBytes)),
            }
        }
    }
    // Slightly different repetitions so the spread is not zero.
    let mut slowed = base.clone();
    for (i, r) in slowed.runs.iter_mut().enumerate() {
        r.load.latency_us.p50 += (i % 3) as f64;
        if r.variant == "weft" && r.load.rate == Some(1000.0) {
            r.load.latency_us.p50 *= 2.0;
            r.load.latency_us.p99 *= 2.0;
        }
    }
    let d = RecordDiff::of(&base, &slowed, &test).unwrap();
    assert!(d.any_worse());
    let worse: Vec<(String, Metric)> = d
        .cells
        .iter()
        .flat_map(|c| c.metrics.iter().filter(|m| m.is_worse()).map(move |m| (c.subject.clone(), m.metric)))
        .collect();
    assert_eq!(worse, [("http1-small/weft/1000 rps".to_owned(), Metric::P50Us), ("http1-small/weft/1000 rps".to_owned(), Metric::P99Us)]);
    let text = d.text("a", "b");
    assert!(text.contains("slower") && text.contains("+100.0%"), "{text}");
    // One repetition a side: no verdict, never a pass or a fail.
    let one = common::report(vec![run("s", "weft", 1000.0, 0, 250)]);
    let d = RecordDiff::of(&one, &one, &test).unwrap();
    assert!(d.cells[0].metrics.iter().all(|m| m.verdict == "too few repetitions"), "{d:?}");
    // Nothing in common, and a record without load runs, are errors that say so.
    let other = common::report(vec![run("t", "weft", 1000.0, 0, 250)]);
    let e = RecordDiff::of(&one, &other, &test).unwrap_err().to_string();
    assert!(e.contains("no cell in common") && e.contains("local s/weft/1000 rps") && e.contains("local t/weft/1000 rps"), "{e}");
    let e = RecordDiff::of(&common::conformance_only(), &one, &test).unwrap_err().to_string();
    assert!(e.contains("base record has no load runs"), "{e}");
}

#[test]
fn the_records_cells_section_carries_spread_and_verdicts_and_round_trips() {
    let mut runs = Vec::new();
    for (rep, (b, w)) in [(200, 300), (205, 305), (210, 310)].into_iter().enumerate() {
        runs.push(common::run("http1-small", "baseline", 1000.0, rep as u32, b));
        runs.push(common::run("http1-small", "weft", 1000.0, rep as u32, w));
    }
    let mut r = common::report(runs);
    reports::compare::summarise_into(&mut r);
    assert_eq!(r.cells.len(), 2);
    let weft = r.cells.iter().find(|c| c.id.variant == "weft").unwrap();
    let p50 = weft.figures["p50_us"];
    assert_eq!((p50.n, p50.min, p50.max), (3, 300.0, 310.0), "{p50:?}");
    assert_eq!(p50.value, 305.0);
    let added = &weft.added["p50_us"];
    assert_eq!((added.verdict.as_str(), added.difference), ("worse", 100.0), "{added:?}");
    assert!(added.low.unwrap() > 0.0 && added.high.unwrap() >= added.difference);
    assert!(weft.figures.contains_key("proxy_rss_peak_bytes") && !weft.figures.contains_key("control_rss_peak_bytes"));
    let base = r.cells.iter().find(|c| c.id.variant == "baseline").unwrap();
    assert!(base.added.is_empty() && !base.figures.contains_key("proxy_cpu_per_krps"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    reports::io::write_report_json(&r, &path).unwrap();
    let json = std::fs::read_to_string(&path).unwrap();
    assert!(json.contains("\"verdict\": \"worse\""), "{json}");
    assert_eq!(reports::io::read_report(&path).unwrap().cells, r.cells);
}

/// `bench compare --json` and its table, byte for byte as `bench` printed
/// them before the cell identity became one `record::CellId` (flattened):
/// tests/data/compare-a-b.{json,txt} were written by that build from
/// compare-a.json and compare-b.json.
#[test]
fn compare_output_is_byte_identical_to_the_stored_one() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let read = |name: &str| reports::io::read_report(&data.join(name)).unwrap();
    let (a, b) = (read("compare-a.json"), read("compare-b.json"));
    let diff = reports::diff::RecordDiff::of(&a, &b, &reports::noise::Bootstrap::default()).unwrap();
    let stored = std::fs::read_to_string(data.join("compare-a-b.json")).unwrap();
    // As suites::commands::compare prints it: the diff plus the two paths.
    let mut v = serde_json::to_value(&diff).unwrap();
    v["base"] = "compare-a.json".into();
    v["candidate"] = "compare-b.json".into();
    assert_eq!(serde_json::to_string_pretty(&v).unwrap() + "\n", stored);
    let text = std::fs::read_to_string(data.join("compare-a-b.txt")).unwrap();
    assert_eq!(diff.text("compare-a.json", "compare-b.json"), text);
}
